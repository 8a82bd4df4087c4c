"""Speed and memory: what does the snapshot ensemble cost over one plain skorch net?

Training: sksnapshot (5 cycles) against the same plain skorch net with skorch's
own ``LRScheduler(CosineAnnealingLR)`` stepping every batch, in paired runs
A B A B ... in one process (median of the per-pair time ratios).
Prediction: ``predict_proba`` of m members against m times one member, and of
the weight-averaged model (``combine="weights"``) against one member.
Memory: bytes per snapshot against the module's parameter and buffer bytes, and
the peak RSS of a fit with 10 snapshots against a plain skorch fit (subprocesses).

    python -m benchmarks.speed            # the tables in benchmarks/results/
    python -m benchmarks.speed --quick    # a smoke run (< 1 min), written to a temp dir
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import LRScheduler
from torch.optim.lr_scheduler import CosineAnnealingLR

from sksnapshot import MLPModule, SnapshotEnsembleClassifier

from ._data import LOADERS

RESULTS = pathlib.Path(__file__).parent / "results"
THREADS = 1
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _net(hidden, max_epochs, lr=0.1, callbacks=None, batch_norm=False, **module_kwargs):
    return NeuralNetClassifier(
        MLPModule, module__hidden_layer_sizes=hidden, module__batch_norm=batch_norm,
        criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
        optimizer__momentum=0.9, optimizer__nesterov=True, lr=lr, max_epochs=max_epochs,
        batch_size=128, iterator_train__shuffle=True, train_split=None, verbose=0,
        callbacks=callbacks, **{f"module__{k}": v for k, v in module_kwargs.items()})


def plain_net(hidden, max_epochs, n_rows, n_features, n_classes, lr=0.1, batch_size=128):
    """The plain skorch net: cosine annealing to 0 over all batches with skorch's LRScheduler."""
    n_iter = max_epochs * int(np.ceil(n_rows / batch_size))
    scheduler = LRScheduler(CosineAnnealingLR, T_max=n_iter, step_every="batch")
    return _net(hidden, max_epochs, lr, callbacks=[("lr_scheduler", scheduler)],
                n_features=n_features, n_classes=n_classes)


def snapshot_clf(hidden, max_epochs, n_snapshots=5, lr=0.1, seed=0):
    return SnapshotEnsembleClassifier(
        _net(hidden, max_epochs, lr), n_snapshots=n_snapshots, validation_fraction=0.0,
        selection="all", weighting="uniform", random_state=seed)


def _data(name="mnist1d", max_rows=None):
    X, y, X_test, y_test = LOADERS[name]()
    if max_rows is not None:
        X, y = X[:max_rows], y[:max_rows]
    return X, y.astype(np.int64), X_test, y_test.astype(np.int64)


# -- training -------------------------------------------------------------------------
def time_training(hidden=(512, 512), max_epochs=10, pairs=7, data="mnist1d", max_rows=None):
    """Paired fits A (plain skorch) then B (sksnapshot, 5 cycles), seed for seed.

    One warm-up pair is run first and discarded. Returns ``(times_a, times_b)``.
    """
    X, y, _, _ = _data(data, max_rows)
    n_classes = len(np.unique(y))
    times_a, times_b = [], []
    for pair in range(pairs + 1):
        torch.manual_seed(pair)
        net = plain_net(hidden, max_epochs, len(X), X.shape[1], n_classes)
        start = time.perf_counter()
        net.fit(X, y)
        a = time.perf_counter() - start
        clf = snapshot_clf(hidden, max_epochs, seed=pair)
        start = time.perf_counter()
        clf.fit(X, y)
        b = time.perf_counter() - start
        if pair:  # pair 0 warms up
            times_a.append(a)
            times_b.append(b)
    return np.array(times_a), np.array(times_b)


# -- prediction ------------------------------------------------------------------------
def time_prediction(hidden=(512, 512), max_epochs=10, n_rows=4096, ms=(1, 5, 10),
                    repeats=15, rounds=3, data="mnist1d", max_rows=None, seed=0):
    """predict_proba of m members vs one member, and of combine="weights".

    One 10-snapshot ensemble is fitted once; for each m,
    ``set_params(selection="last", n_members=m, weighting="uniform")`` and
    ``select`` on held-out rows give an m-member ensemble, whose fitted
    ``members_``, ``weights_`` and ``averaged_state_`` are kept. The variants
    (and the bare skorch net's ``predict_proba`` with the same weights) are
    then timed call by call in shuffled round-robin order, ``repeats * rounds``
    calls each, so that load from other processes hits all of them alike.

    Returns
    -------
    times : dict
        ``{"plain skorch": t, 1: t, 5: t, 10: t, "weights": t}``, median
        seconds per call.
    """
    X, y, X_test, y_test = _data(data, max_rows)
    rng = np.random.RandomState(seed)
    X_pred = np.concatenate([X, X_test])[rng.randint(0, len(X) + len(X_test), n_rows)]
    clf = snapshot_clf(hidden, max_epochs, n_snapshots=max(ms), seed=seed).fit(X, y)
    variants = {}
    for key in [*ms, "weights"]:
        if key == "weights":
            params = dict(selection="all", n_members=None, weighting="uniform",
                          combine="weights")
        else:
            params = dict(selection="last", n_members=key, weighting="uniform",
                          combine="proba")
        clf.set_params(**params).select(X_test, y_test)
        variants[key] = (params, {name: getattr(clf, name) for name in
                                  ("members_", "weights_", "averaged_state_")})

    def prepare(key):
        """Put variant ``key`` in place (untimed) and return the call to time."""
        if key == "plain skorch":
            return lambda: clf.net_.predict_proba(X_pred)
        params, fitted = variants[key]
        clf.set_params(**params)
        for name, value in fitted.items():
            setattr(clf, name, value)
        return lambda: clf.predict_proba(X_pred)

    keys = ["plain skorch", *variants]
    for key in keys:  # warm-up
        prepare(key)()
    times = {key: [] for key in keys}
    for _ in range(repeats * rounds):
        for key in rng.permutation(np.array(keys, dtype=object)):
            fn = prepare(key)
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: float(np.median(v)) for key, v in times.items()}


# -- memory ---------------------------------------------------------------------------
def state_bytes(state):
    return sum(t.numel() * t.element_size() for t in state.values())


def module_bytes(module):
    return (sum(p.numel() * p.element_size() for p in module.parameters())
            + sum(b.numel() * b.element_size() for b in module.buffers()))


def snapshot_memory(hidden=(512, 512), batch_norm=False, max_epochs=2, data="mnist1d",
                    max_rows=None):
    """Bytes of one snapshot vs the module's parameters + buffers."""
    X, y, _, _ = _data(data, max_rows)
    clf = SnapshotEnsembleClassifier(
        _net(hidden, max_epochs, batch_norm=batch_norm), n_snapshots=2,
        validation_fraction=0.0, selection="all", weighting="uniform", random_state=0).fit(X, y)
    return state_bytes(clf.snapshots_[0]), module_bytes(clf.net_.module_)


def _rss_child(kind, hidden, max_epochs, n_snapshots, data, max_rows):
    """Run in a subprocess: one fit, then print the peak RSS in bytes as JSON."""
    import resource

    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore")
    X, y, _, _ = _data(data, max_rows)
    if kind == "plain":
        net = plain_net(tuple(hidden), max_epochs, len(X), X.shape[1], len(np.unique(y)))
        net.fit(X, y)
        n_kept = 0
    else:
        clf = snapshot_clf(tuple(hidden), max_epochs, n_snapshots=n_snapshots).fit(X, y)
        n_kept = len(clf.snapshots_)
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    print(json.dumps({"peak_rss": peak, "snapshots": n_kept}))


def peak_rss(kind, hidden=(512, 512), max_epochs=2, n_snapshots=10, data="mnist1d",
             max_rows=None):
    """Peak RSS (bytes) of one fit in a fresh Python process."""
    code = ("import sys, json; from benchmarks.speed import _rss_child; "
            "_rss_child(*json.loads(sys.argv[1]))")
    args = json.dumps([kind, list(hidden), max_epochs, n_snapshots, data, max_rows])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                         check=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_rows(configs, n_snapshots=10, max_epochs=2, rss_repeats=2, data="mnist1d",
                max_rows=None):
    """One row per (hidden, batch_norm): snapshot bytes and the peak RSS of both fits."""
    rows = []
    for hidden, batch_norm in configs:
        snap, mod = snapshot_memory(hidden, batch_norm, data=data, max_rows=max_rows)
        row = {"hidden": hidden, "batch_norm": batch_norm, "snapshot_bytes": snap,
               "module_bytes": mod}
        if not batch_norm:  # the RSS comparison uses the plain MLP
            plain, snaps = [], []
            for _ in range(rss_repeats):  # interleaved
                plain.append(peak_rss("plain", hidden, max_epochs, data=data,
                                      max_rows=max_rows)["peak_rss"])
                snaps.append(peak_rss("snapshots", hidden, max_epochs, n_snapshots, data=data,
                                      max_rows=max_rows)["peak_rss"])
            row.update(plain_rss=float(np.median(plain)), snapshot_rss=float(np.median(snaps)))
        rows.append(row)
    return rows


# -- tables ---------------------------------------------------------------------------
def training_table(results, max_epochs, pairs, data="mnist1d"):
    lines = [
        f"Training: paired fits in one process, A = plain skorch NeuralNetClassifier with "
        f"`LRScheduler(CosineAnnealingLR, step_every='batch')`, B = SnapshotEnsembleClassifier("
        f"n_snapshots=5, validation_fraction=0, selection='all', weighting='uniform') around "
        f"the same net; both train_split=None, SGD (Nesterov momentum 0.9), batches of 128, "
        f"{max_epochs} epochs on the {data} training rows; {pairs} pairs after one warm-up "
        f"pair; torch.set_num_threads({THREADS}). Target: median ratio B / A <= 1.05.",
        "",
        "| module | plain skorch (median s) | sksnapshot (median s) | median ratio B / A "
        "| ratio range | target met |",
        "|---|---|---|---|---|---|",
    ]
    for hidden, (a, b) in results.items():
        ratio = b / a
        lines.append(
            f"| MLP {hidden} | {np.median(a):.2f} | {np.median(b):.2f} | "
            f"{np.median(ratio):.3f} | {ratio.min():.3f} – {ratio.max():.3f} | "
            f"{'yes' if np.median(ratio) <= 1.05 else 'NO'} |")
    return "\n".join(lines)


def prediction_table(results, n_rows, data="mnist1d"):
    lines = [
        f"Prediction: `predict_proba` on {n_rows} {data} rows, one 10-snapshot fit, members chosen "
        f"with `set_params(selection='last', n_members=m, weighting='uniform')` + `select`; "
        f"median ms per call over calls in shuffled round-robin order; "
        f"torch.set_num_threads({THREADS}). Targets: m members <= 1.1 x m x one member; "
        "combine='weights' <= 1.1 x one member.",
        "",
        "| module | predictor | median ms per call | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for hidden, times in results.items():
        one = times[1]
        lines.append(f"| MLP {hidden} | plain skorch net.predict_proba | "
                     f"{1000 * times['plain skorch']:.2f} | one member / plain = "
                     f"{one / times['plain skorch']:.3f} | – | – |")
        for key, t in times.items():
            if key == "plain skorch":
                continue
            if key == "weights":
                ratio, target, name = t / one, 1.1, "combine='weights' (all 10 averaged)"
                label = "/ one member"
            else:
                ratio, target, name = t / (key * one), 1.1, f"{key} member(s)"
                label = f"/ ({key} x one member)"
            lines.append(f"| MLP {hidden} | {name} | {1000 * t:.2f} | {label} = {ratio:.3f} | "
                         f"<= {target} | {'yes' if ratio <= target else 'NO'} |")
    return "\n".join(lines)


def memory_table(rows, n_snapshots, max_epochs, data="mnist1d"):
    mb = 1024 ** 2
    lines = [
        f"Memory: bytes of `clf.snapshots_[0]` (sum of tensor nbytes) vs the module's "
        f"parameter + buffer bytes; peak RSS (`resource.getrusage(...).ru_maxrss`) of one fit "
        f"in a fresh subprocess: plain skorch net vs sksnapshot with M = {n_snapshots}, "
        f"{max_epochs} epochs of {data}, median of the subprocess runs; "
        f"torch.set_num_threads({THREADS}).",
        "",
        "| module | snapshot (MiB) | parameters + buffers (MiB) | ratio | peak RSS plain "
        f"(MiB) | peak RSS M = {n_snapshots} (MiB) | difference (MiB) | "
        f"{n_snapshots} x snapshot (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"MLP {r['hidden']}" + (" + BatchNorm" if r["batch_norm"] else "")
        line = (f"| {name} | {r['snapshot_bytes'] / mb:.2f} | {r['module_bytes'] / mb:.2f} | "
                f"{r['snapshot_bytes'] / r['module_bytes']:.3f} |")
        if "plain_rss" in r:
            line += (f" {r['plain_rss'] / mb:.0f} | {r['snapshot_rss'] / mb:.0f} | "
                     f"{(r['snapshot_rss'] - r['plain_rss']) / mb:.0f} | "
                     f"{n_snapshots * r['snapshot_bytes'] / mb:.1f} |")
        else:
            line += " – | – | – | – |"
        lines.append(line)
    return "\n".join(lines)


def plot_speed(train_results, pred_results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (a, b) in enumerate(train_results.values()):
        ratio = b / a
        ax1.scatter(np.full(len(ratio), i), ratio, color="tab:blue", alpha=0.6)
        ax1.plot([i - 0.2, i + 0.2], [np.median(ratio)] * 2, color="k")
    ax1.axhline(1.05, color="tab:red", ls="--", lw=1, label="target 1.05")
    ax1.axhline(1.0, color="0.5", lw=0.8)
    ax1.set_xticks(range(len(train_results)), [f"MLP {h}" for h in train_results])
    ax1.set_ylabel("fit time sksnapshot / plain skorch (per pair)")
    ax1.set_title("Training cost of 5 snapshots", fontsize=10)
    ax1.legend(fontsize=8)
    for hidden, times in pred_results.items():
        ms = sorted(k for k in times if isinstance(k, int))
        ax2.plot(ms, [1000 * times[m] for m in ms], "o-", label=f"MLP {hidden}: m members")
        ax2.plot(ms, [1000 * m * times[1] for m in ms], ":", color="0.5")
        ax2.scatter([1], [1000 * times["weights"]], marker="s",
                    label=f"MLP {hidden}: combine='weights'")
    ax2.set_xlabel("members m")
    ax2.set_ylabel("predict_proba ms (4096 rows)")
    ax2.set_title("Prediction (dotted: m x one member)", fontsize=10)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg, print_fn=print, start=None):
    """All three measurements; returns (Markdown text, training times, prediction times)."""
    start = time.perf_counter() if start is None else start
    data = cfg["data"]
    train = {}
    for hidden in cfg["hiddens"]:
        train[hidden] = time_training(hidden, cfg["epochs"], cfg["pairs"], data=data)
        print_fn(f"training timed: MLP {hidden} ({time.perf_counter() - start:.0f} s)")
    pred = {}
    for hidden in cfg["hiddens"]:
        pred[hidden] = time_prediction(hidden, max(2, cfg["epochs"] // 2), n_rows=cfg["n_rows"],
                                       ms=cfg["ms"], repeats=cfg["repeats"],
                                       rounds=cfg["rounds"], data=data)
        print_fn(f"prediction timed: MLP {hidden} ({time.perf_counter() - start:.0f} s)")
    mem = memory_rows(cfg["mem_configs"], rss_repeats=cfg["rss_repeats"], data=data)
    print_fn(f"memory measured ({time.perf_counter() - start:.0f} s)")
    text = "\n\n".join([training_table(train, cfg["epochs"], cfg["pairs"], data),
                        prediction_table(pred, cfg["n_rows"], data),
                        memory_table(mem, 10, 2, data)])
    return text, train, pred


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny settings, results to a temp dir")
    parser.add_argument("--pairs", type=int, default=11)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore", category=UserWarning)
    out = args.out or (pathlib.Path(tempfile.mkdtemp(prefix="sksnapshot-speed-"))
                       if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.quick:  # digits: no data generation, tiny nets
        cfg = dict(data="digits", hiddens=[(64,)], epochs=2, pairs=2, n_rows=512, ms=(1, 2, 4),
                   repeats=3, rounds=1, mem_configs=[((64,), False), ((64,), True)],
                   rss_repeats=1)
    else:
        cfg = dict(data="mnist1d", hiddens=[(512, 512), (100,)], epochs=args.epochs,
                   pairs=args.pairs, n_rows=4096, ms=(1, 5, 10), repeats=15, rounds=3,
                   mem_configs=[((512, 512), False), ((512, 512), True), ((2048, 2048), False)],
                   rss_repeats=2)
    text, train, pred = run(cfg, print_fn=print, start=start)
    print(text)
    command = "python -m benchmarks.speed" + (" --quick" if args.quick else "")
    (out / "speed.md").write_text(
        f"# Speed and memory\n\n`{command}` ({time.perf_counter() - start:.0f} s wall, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__})\n\n{text}\n\n"
        "![training and prediction cost](speed.png)\n")
    plot_speed(train, pred, out / "speed.png")
    print(f"\nwrote {out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
