"""Speed and memory, measured against the limit: the same work in raw torch.

Training: sksnapshot (5 cycles) against a raw torch loop with the same
schedule and against the same plain skorch net with skorch's own
``LRScheduler(CosineAnnealingLR)`` stepping every batch, interleaved in one
process (medians).
Prediction: ``predict_proba`` of m members against the plain loop over the
same members (``torch.func.functional_call`` + softmax, all rows in one
tensor), and of the weight-averaged model (``combine="weights"``) against one
plain forward pass; the fit's selection step against the plain loop over all
snapshots.
Memory: bytes per snapshot against the module's parameter and buffer bytes, and
the peak RSS of a fit with 10 snapshots against a plain skorch fit (subprocesses).

    python -m benchmarks.speed            # the tables in benchmarks/results/
    python -m benchmarks.speed --quick    # a smoke run (< 1 min), written to a temp dir
"""

import copy
import gc
import json
import os
import pathlib
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from skorch.callbacks import LRScheduler
from torch.func import functional_call
from torch.optim.lr_scheduler import CosineAnnealingLR

from sksnapshot import MLPModule, SnapshotEnsembleClassifier
from sksnapshot._callbacks import copy_state_dict
from sksnapshot._loader import batch_loader
from sksnapshot.schedules import cosine_annealing_lr, snapshot_iterations

from ._common import arg_parser, quiet_process, results_dir, run_note, write_markdown
from ._data import LOADERS, CNN1d, make_net

THREADS = 1
ROOT = pathlib.Path(__file__).resolve().parent.parent


MODULES = {
    # name: (module class, module kwargs); n_features / n_classes filled in by the estimator.
    "MLPModule (100,)": (MLPModule, {"hidden_layer_sizes": (100,)}),
    "MLP 512-512": (MLPModule, {"hidden_layer_sizes": (512, 512)}),
    "CNN1d": (CNN1d, {}),
}


def _net(module_name, max_epochs, lr=0.1, **extra):
    """:func:`benchmarks._data.make_net` with a module of MODULES (``extra``: more
    module settings)."""
    module, kwargs = MODULES[module_name]
    return make_net(module, max_epochs, lr,
                    **{f"module__{k}": v for k, v in {**kwargs, **extra}.items()})


def plain_net(module_name, max_epochs, n_rows, n_features, n_classes, lr=0.1, batch_size=128):
    """The plain skorch net: cosine annealing to 0 over all batches with skorch's LRScheduler."""
    n_iter = max_epochs * int(np.ceil(n_rows / batch_size))
    scheduler = LRScheduler(CosineAnnealingLR, T_max=n_iter, step_every="batch")
    return _net(module_name, max_epochs, lr, n_features=n_features,
                n_classes=n_classes).set_params(callbacks=[("lr_scheduler", scheduler)])


def skorch_floor_net(module_name, max_epochs, n_features, n_classes, lr=0.1):
    """What skorch's own per-batch loop costs: the plain net fed sksnapshot's in-memory
    batches, at a constant learning rate (no scheduler, no snapshots)."""
    return _net(module_name, max_epochs, lr, n_features=n_features,
                n_classes=n_classes).set_params(iterator_train=batch_loader)


def snapshot_clf(module_name, max_epochs, n_snapshots=5, lr=0.1, seed=0, **params):
    settings = dict(n_snapshots=n_snapshots, validation_fraction=0.0, selection="all",
                    weighting="uniform", calibration=None, random_state=seed)
    return SnapshotEnsembleClassifier(_net(module_name, max_epochs, lr), **{**settings, **params})


def raw_torch_fit(module_name, max_epochs, X, y, n_snapshots=5, lr=0.1, batch_size=128, seed=0):
    """The limit: a plain torch loop doing the same work as sksnapshot's fit.

    Tensor indexing per batch of a random permutation, SGD with Nesterov
    momentum, the learning rate of every step from the same cosine-restart
    table, a CPU copy of the state dict at each cycle end.
    """
    torch.manual_seed(seed)
    module_class, kwargs = MODULES[module_name]
    module = module_class(n_features=X.shape[1], n_classes=int(y.max()) + 1, **kwargs)
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9, nesterov=True)
    criterion = torch.nn.CrossEntropyLoss()
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    n_batches = int(np.ceil(len(X) / batch_size))
    n_iter = max_epochs * n_batches
    lrs = cosine_annealing_lr(np.arange(n_iter), n_iter, n_snapshots, lr=lr)
    ends = set(snapshot_iterations(n_iter, n_snapshots).tolist())
    snapshots, step = [], 0
    module.train()
    for _ in range(max_epochs):
        order = torch.randperm(len(X))
        for start in range(0, len(X), batch_size):
            rows = order[start:start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = float(lrs[step])
            optimizer.zero_grad()
            criterion(module(X[rows]), y[rows]).backward()
            optimizer.step()
            if step in ends:
                snapshots.append(copy_state_dict(module))
            step += 1
    return snapshots


def _data(name="mnist1d", max_rows=None):
    X, y, X_test, y_test = LOADERS[name]()
    if max_rows is not None:
        X, y = X[:max_rows], y[:max_rows]
    return X, y.astype(np.int64), X_test, y_test.astype(np.int64)


def _interleaved(fns, rounds, rng, collect=False):
    """Seconds per call of each function, called in shuffled round-robin order.

    ``collect``: collect the garbage of earlier calls before each call (fits
    leave skorch nets, which hold reference cycles), so that no call pays for
    another's.
    """
    keys = list(fns)
    for key in keys:  # warm-up
        fns[key]()
    times = {key: [] for key in keys}
    for _ in range(rounds):
        for index in rng.permutation(len(keys)):
            if collect:
                gc.collect()
            start = time.perf_counter()
            fns[keys[index]]()
            times[keys[index]].append(time.perf_counter() - start)
    return times


# -- training -------------------------------------------------------------------------
def time_training(module_name="MLP 512-512", max_epochs=10, pairs=7, data="mnist1d",
                  max_rows=None):
    """Fits of the raw torch loop, plain skorch and sksnapshot (5 cycles), in shuffled order.

    Returns ``{"raw torch": times, "plain skorch": times, "skorch floor": times,
    "sksnapshot": times}``
    (seconds, one per round, after a warm-up round).
    """
    X, y, _, _ = _data(data, max_rows)
    n_classes = len(np.unique(y))
    rng = np.random.RandomState(0)
    fns = {
        "raw torch": lambda: raw_torch_fit(module_name, max_epochs, X, y),
        "plain skorch": lambda: plain_net(module_name, max_epochs, len(X), X.shape[1],
                                          n_classes).fit(X, y),
        "skorch floor": lambda: skorch_floor_net(module_name, max_epochs, X.shape[1],
                                                 n_classes).fit(X, y),
        "sksnapshot": lambda: snapshot_clf(module_name, max_epochs).fit(X, y),
    }
    return {k: np.array(v) for k, v in _interleaved(fns, pairs, rng, collect=True).items()}


# -- prediction ------------------------------------------------------------------------
def _plain_loop(module, states, weights, X):
    """The limit: the members' raw forward passes on one tensor of all rows, softmax, weighted."""
    with torch.inference_mode():
        total = 0.0
        for weight, state in zip(weights, states):
            total = total + weight * torch.softmax(functional_call(module, state, (X,)), dim=-1)
    return total


def time_prediction(module_name="MLP 512-512", max_epochs=4, rows=(256, 4096), ms=(1, 5, 10),
                    rounds=30, data="mnist1d", max_rows=None, seed=0):
    """``predict_proba`` against the plain member loop on the same members and rows.

    One 10-snapshot ensemble is fitted once (validation rows held out); each
    variant (m members by ``selection="last"``, or ``combine="weights"``) is
    put in place by ``set_params`` + ``select`` before its calls are timed,
    interleaved with the plain loop over the same states and weights. The
    fit's selection step (``select`` with the default settings, on the
    validation rows) is timed against the plain loop over every snapshot.

    Returns
    -------
    times : dict
        ``{(n_rows, variant): (sksnapshot seconds, plain loop seconds)}``,
        medians per call; ``variant`` is m, "weights" or "selection".
    """
    X, y, X_test, y_test = _data(data, max_rows)
    rng = np.random.RandomState(seed)
    pool = np.concatenate([X, X_test])
    X_val, y_val = X_test[:500], y_test[:500]
    clf = snapshot_clf(module_name, max_epochs, n_snapshots=max(ms), seed=seed).fit(X, y)
    module = copy.deepcopy(clf.net_.module_).eval()
    results = {}
    for key in [*ms, "weights", "selection"]:
        if key == "weights":
            params = dict(selection="all", n_members=None, weighting="uniform", combine="weights",
                          calibration=None)
        elif key == "selection":  # the defaults: shrunk weights and a temperature
            params = dict(selection="all", n_members=None, weighting="auto", combine="proba",
                          calibration="auto")
        else:
            params = dict(selection="last", n_members=key, weighting="uniform", combine="proba",
                          calibration=None)
        clf.set_params(**params).select(X_val, y_val)
        states, weights = clf._combined_states()
        for n_rows in rows:
            X_pred = pool[rng.randint(0, len(pool), n_rows)]
            if key == "selection":
                if n_rows != rows[0]:
                    continue
                x_val = torch.as_tensor(X_val)
                fns = {"sksnapshot": lambda: clf.select(X_val, y_val),
                       "plain": lambda x=x_val: [_plain_loop(module, [s], [1.0], x)
                                                 for s in clf.snapshots_]}
                n_rows = len(X_val)
            else:
                x = torch.as_tensor(X_pred)
                fns = {"sksnapshot": lambda X=X_pred: clf.predict_proba(X),
                       "plain": lambda s=states, w=weights, x=x: _plain_loop(module, s, w, x)}
                np.testing.assert_allclose(fns["sksnapshot"](), fns["plain"]().numpy(), atol=1e-5)
            times = _interleaved(fns, rounds, rng)
            results[(n_rows, key)] = (float(np.median(times["sksnapshot"])),
                                      float(np.median(times["plain"])))
    return results


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
    net = _net("MLPModule (100,)", max_epochs, hidden_layer_sizes=hidden, batch_norm=batch_norm)
    clf = SnapshotEnsembleClassifier(
        net, n_snapshots=2, validation_fraction=0.0, selection="all", weighting="uniform",
        random_state=0).fit(X, y)
    return state_bytes(clf.snapshots_[0]), module_bytes(clf.net_.module_)


def _rss_child(kind, hidden, max_epochs, n_snapshots, data, max_rows):
    """Run in a subprocess: one fit, then print the peak RSS in bytes as JSON."""
    import resource

    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore")
    X, y, _, _ = _data(data, max_rows)
    if kind == "plain":
        net = plain_net("MLPModule (100,)", max_epochs, len(X), X.shape[1], len(np.unique(y)))
        net.set_params(module__hidden_layer_sizes=tuple(hidden)).fit(X, y)
        n_kept = 0
    else:
        clf = snapshot_clf("MLPModule (100,)", max_epochs, n_snapshots=n_snapshots)
        clf.set_params(net__module__hidden_layer_sizes=tuple(hidden)).fit(X, y)
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
        f"Training: fits in shuffled round-robin order in one process, {pairs} rounds after a "
        f"warm-up round, {max_epochs} epochs on the {data} training rows, batches of 128, SGD "
        "(Nesterov momentum 0.9), torch.set_num_threads(1). raw torch = `raw_torch_fit` (tensor "
        "indexing of a random permutation per batch, the same cosine-restart lr table, a CPU "
        "state copy per cycle end); plain skorch = the same NeuralNetClassifier with "
        "`LRScheduler(CosineAnnealingLR, step_every='batch')`; sksnapshot = "
        "SnapshotEnsembleClassifier(n_snapshots=5, validation_fraction=0) around that net; "
        "skorch floor = that net with sksnapshot's in-memory batches and a constant learning "
        "rate (no scheduler, no snapshots): the cost of skorch's own per-batch loop "
        "(callbacks notified, history, `module.train()` per batch), under which a library "
        "built on skorch's `fit` cannot go. Target: sksnapshot / raw torch <= 1.25.",
        "",
        "| module | raw torch (median s) | plain skorch (median s) | skorch floor (median s) "
        "| sksnapshot (median s) | skorch floor / raw torch | sksnapshot / skorch floor "
        "| sksnapshot / plain skorch | sksnapshot / raw torch | target met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, times in results.items():
        raw, plain, floor, ours = (np.median(times[k]) for k in (
            "raw torch", "plain skorch", "skorch floor", "sksnapshot"))
        lines.append(f"| {name} | {raw:.3f} | {plain:.3f} | {floor:.3f} | {ours:.3f} | "
                     f"{floor / raw:.3f} | {ours / floor:.3f} | {ours / plain:.3f} | "
                     f"{ours / raw:.3f} | {'yes' if ours / raw <= 1.25 else 'NO'} |")
    return "\n".join(lines)


def prediction_table(results, data="mnist1d"):
    lines = [
        f"Prediction: `predict_proba` against the plain member loop (`torch.func.functional_call`"
        f" on each member's state + softmax under `inference_mode`, all rows in one tensor, "
        f"weighted sum) over the same members and rows ({data}); one 10-snapshot fit, m "
        "members by `selection='last'`; `combine='weights'` against one plain forward pass of "
        "the averaged state; 'selection' is `select()` with the default settings on 500 "
        "validation rows against the plain loop over all 10 snapshots on them. Medians per "
        "call in shuffled round-robin order, torch.set_num_threads(1). Target: ratio <= 1.25.",
        "",
        "| module | rows | predictor | sksnapshot (median ms) | plain loop (median ms) | ratio "
        "| target met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, times in results.items():
        for (n_rows, key), (ours, plain) in times.items():
            what = {"weights": "combine='weights'", "selection": "select() (fit's selection)"}
            label = what.get(key, f"{key} member(s)")
            ratio = ours / plain
            met = "–" if key == "selection" else ("yes" if ratio <= 1.25 else "NO")
            lines.append(f"| {name} | {n_rows} | {label} | {1000 * ours:.2f} | "
                         f"{1000 * plain:.2f} | {ratio:.3f} | {met} |")
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

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(train_results)
    for i, name in enumerate(names):
        times = train_results[name]
        for offset, key, color in ((-0.25, "plain skorch", "tab:gray"),
                                   (0.0, "skorch floor", "tab:olive"),
                                   (0.25, "sksnapshot", "tab:blue")):
            ratio = np.median(times[key]) / np.median(times["raw torch"])
            ax1.bar(i + offset, ratio, width=0.25, color=color, label=key if i == 0 else None)
    ax1.axhline(1.25, color="tab:red", ls="--", lw=1, label="target 1.25")
    ax1.axhline(1.0, color="0.5", lw=0.8)
    ax1.set_xticks(range(len(names)), names, fontsize=8)
    ax1.set_ylabel("fit time / raw torch loop")
    ax1.set_title("Training", fontsize=10)
    ax1.legend(fontsize=8)
    for name, times in pred_results.items():
        keys = [k for k in times if k[1] != "selection"]
        ax2.plot(range(len(keys)), [times[k][0] / times[k][1] for k in keys], "o-", label=name)
        ax2.set_xticks(range(len(keys)), [f"{r} rows\n{k}" for r, k in keys], fontsize=7)
    ax2.axhline(1.25, color="tab:red", ls="--", lw=1)
    ax2.axhline(1.0, color="0.5", lw=0.8)
    ax2.set_ylabel("predict_proba / plain member loop")
    ax2.set_title("Prediction", fontsize=10)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg, print_fn=print, start=None):
    """All three measurements; returns (Markdown text, training times, prediction times)."""
    start = time.perf_counter() if start is None else start
    data = cfg["data"]
    train, pred = {}, {}
    for name in cfg["modules"]:
        train[name] = time_training(name, cfg["epochs"], cfg["pairs"], data=data)
        print_fn(f"training timed: {name} ({time.perf_counter() - start:.0f} s)")
    for name in cfg["modules"]:
        pred[name] = time_prediction(name, max(2, cfg["epochs"] // 2), rows=cfg["rows"],
                                     ms=cfg["ms"], rounds=cfg["rounds"], data=data)
        print_fn(f"prediction timed: {name} ({time.perf_counter() - start:.0f} s)")
    mem = memory_rows(cfg["mem_configs"], rss_repeats=cfg["rss_repeats"], data=data)
    print_fn(f"memory measured ({time.perf_counter() - start:.0f} s)")
    text = "\n\n".join([training_table(train, cfg["epochs"], cfg["pairs"], data),
                        prediction_table(pred, data),
                        memory_table(mem, 10, 2, data)])
    return text, train, pred


def main(argv=None):
    parser = arg_parser(__doc__, "smoke run: tiny settings, results to a temp dir")
    parser.add_argument("--pairs", type=int, default=21)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    quiet_process(THREADS, ignore=(UserWarning,))
    out = results_dir(args.out, args.quick, "speed")
    start = time.perf_counter()
    if args.quick:  # digits: no data generation, tiny nets
        cfg = dict(data="digits", modules=["MLPModule (100,)"], epochs=2, pairs=2, rows=(256,),
                   ms=(1, 2), rounds=3, mem_configs=[((64,), False), ((64,), True)],
                   rss_repeats=1)
    else:
        cfg = dict(data="mnist1d", modules=list(MODULES), epochs=args.epochs,
                   pairs=args.pairs, rows=(256, 4096), ms=(1, 5, 10), rounds=args.rounds,
                   mem_configs=[((512, 512), False), ((512, 512), True), ((2048, 2048), False)],
                   rss_repeats=2)
    text, train, pred = run(cfg, print_fn=print, start=start)
    print(text)
    command = "python -m benchmarks.speed" + (" --quick" if args.quick else "")
    write_markdown(out / "speed.md", "Speed and memory",
                   run_note(command, time.perf_counter() - start, shared=False), text,
                   "![training and prediction cost](speed.png)")
    plot_speed(train, pred, out / "speed.png")
    print(f"\nwrote {out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
