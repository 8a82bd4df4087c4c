"""Serving cost: the exported module's member loop against vmap over stacked members, on CPU.

For a 5-member ensemble of an MLP 512-512 (40 features, 10 classes, the
MNIST-1D shape) and of the 1-D CNN of ``quality.py``, and for a student of
each (one member), the time of one batch of 1-4096 rows through:

- ``predict_proba``: the estimator's own inference path (NumPy in and out);
- ``to_torch()``: the plain module, members in a Python loop (what is shipped);
- vmap: the same members stacked with ``torch.func.stack_module_state`` and
  run with ``torch.vmap`` over ``torch.func.functional_call`` (the alternative
  the library would keep if it were faster);
- onnxruntime: ``torch.onnx.export`` of the module, run by an
  ``InferenceSession`` (CPU provider, one thread).

Median wall time of repeated calls (at least 0.2 s or 5 calls per cell),
``torch.set_num_threads(1)``; every method's output is checked against
``predict_proba`` (1e-4) first. The weights are those of a 2-epoch fit on
random rows: the cost does not depend on them.

    python -m benchmarks.export            # results/export.md
    python -m benchmarks.export --quick    # a smoke run, to a temp dir
"""

import argparse
import copy
import pathlib
import time
import warnings

import numpy as np
import torch

from sksnapshot import SnapshotEnsembleClassifier

from ._common import results_dir, run_note, write_markdown
from ._data import make_net

BATCHES = [1, 16, 256, 4096]
MODELS = ["mlp", "cnn"]
METHODS = ["predict_proba", "to_torch (loop)", "vmap (stacked)", "onnxruntime"]


def vmap_module(ensemble):
    """The ensemble module's computation with stacked members and ``torch.vmap``.

    Same members, weights, nonlinearity and temperature as the
    :class:`~sksnapshot._export.EnsembleClassifierModule` it is built from.
    """
    params, buffers = torch.func.stack_module_state(list(ensemble.members))
    base = copy.deepcopy(ensemble.members[0]).to("meta")
    weights = torch.tensor(ensemble.member_weights, dtype=torch.float32)

    def member(p, b, x):
        return ensemble.nonlinearity(torch.func.functional_call(base, (p, b), (x,)))

    batched = torch.vmap(member, in_dims=(0, 0, None))

    def forward(x):
        proba = torch.einsum("m,mnc->nc", weights, batched(params, buffers, x))
        proba = proba / proba.sum(dim=1, keepdim=True)
        if ensemble.temperature != 1.0:
            proba = torch.softmax(torch.log(proba.clamp_min(1e-15)) / ensemble.temperature, 1)
        return proba

    return forward


def onnx_session(module, X):
    """An onnxruntime session (one thread) of ``module``, exported with a dynamic batch."""
    import onnxruntime

    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (torch.from_numpy(X[:8]),),
                                    dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def median_seconds(fn, min_seconds=0.2, min_calls=5):
    fn()  # warm-up
    times, total = [], 0.0
    while len(times) < min_calls or total < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        total += times[-1]
    return float(np.median(times))


def callables(estimator):
    """``{method: fn(X as float32 NumPy)}`` for the estimator's four paths."""
    module = estimator.to_torch()
    vmapped = vmap_module(module)
    X0 = np.zeros((8, estimator.n_features_in_), np.float32)
    onnx_run = onnx_session(module, X0)

    def run_torch(fn):
        def call(X):
            with torch.inference_mode():
                return fn(torch.from_numpy(X)).numpy()
        return call

    return {"predict_proba": estimator.predict_proba, "to_torch (loop)": run_torch(module),
            "vmap (stacked)": run_torch(vmapped), "onnxruntime": onnx_run}


def fitted(model, n_snapshots, n_features=40, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(512, n_features)).astype(np.float32)
    y = np.arange(512) % n_classes
    est = SnapshotEnsembleClassifier(make_net(model, 2, 0.01), n_snapshots=n_snapshots,
                                     random_state=seed).fit(X, y)
    return est, rng


def run(models=MODELS, batches=BATCHES, members=(5, 1)):
    """``{(model, n_members): {method: {batch: seconds}}}``."""
    rows = {}
    for model in models:
        for n in members:
            est, rng = fitted(model, n)
            fns = callables(est)
            X = rng.normal(size=(max(batches), est.n_features_in_)).astype(np.float32)
            expected = est.predict_proba(X[:64])
            for method, fn in fns.items():
                np.testing.assert_allclose(fn(X[:64]), expected, atol=1e-4, err_msg=method)
            rows[(model, n)] = {method: {b: median_seconds(lambda fn=fn, x=X[:b]: fn(x))
                                         for b in batches}
                                for method, fn in fns.items()}
            print(f"[export] {model}, {n} member(s) done", flush=True)
    return rows


def table(rows, batches):
    lines = [
        "Median milliseconds per call of a batch of rows (CPU, torch.set_num_threads(1), "
        "onnxruntime with one thread); in brackets the time relative to the `to_torch` "
        "member loop. 5 members: the ensemble; 1 member: a student (or `combine=\"weights\"`).",
        "",
        "| model | members | method | " + " | ".join(f"batch {b}" for b in batches) + " |",
        "|---|---|---|" + "---|" * len(batches),
    ]
    for (model, n), methods in rows.items():
        loop = methods["to_torch (loop)"]
        for method, times in methods.items():
            cells = [f"{1000 * times[b]:.3f} ({times[b] / loop[b]:.2f})" for b in batches]
            lines.append(f"| {model} | {n} | {method} | " + " | ".join(cells) + " |")
    vmap_ratios = [m["vmap (stacked)"][b] / m["to_torch (loop)"][b]
                   for (_, n), m in rows.items() if n > 1 for b in batches]
    if vmap_ratios:
        lines += ["", f"vmap over stacked members took {min(vmap_ratios):.2f}-"
                  f"{max(vmap_ratios):.2f}x the member loop's time for the 5-member ensembles "
                  "(median "
                  f"{np.median(vmap_ratios):.2f}x), so `to_torch()` keeps the loop"
                  + ("." if min(vmap_ratios) >= 1 else " (vmap won in some cells: see above)."
                     )]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models, batches = (["mlp"], [1, 16]) if args.quick else (MODELS, BATCHES)
    start = time.perf_counter()
    rows = run(models, batches)
    text = table(rows, batches)
    print(text)
    out = results_dir(args.out, args.quick, "export")
    command = "python -m benchmarks.export" + (" --quick" if args.quick else "")
    write_markdown(out / "export.md", "Serving cost: member loop, vmap and onnxruntime",
                   run_note(command, time.perf_counter() - start), text)
    return rows


if __name__ == "__main__":
    main()
