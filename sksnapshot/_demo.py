"""The demo behind ``python -m sksnapshot``: one net vs its snapshot ensemble."""

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import accuracy_score, log_loss

from ._classifier import SnapshotEnsembleClassifier, default_classifier_net


def load_mnist1d():
    """MNIST-1D (Greydanus, 2020), generated locally: 4000 train / 1000 test rows."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "The demo generates MNIST-1D with the 'mnist1d' package: "
            "pip install 'sksnapshot[demo]'"
        ) from exc
    # make_dataset builds the data on this machine; get_dataset would download.
    data = make_dataset(get_dataset_args())
    X, X_test = data["x"].astype(np.float32), data["x_test"].astype(np.float32)
    mean, std = X.mean(axis=0), X.std(axis=0)
    return (X - mean) / std, data["y"], (X_test - mean) / std, data["y_test"]


def demo_net(max_epochs, lr):
    """The net both contenders train: the default net (SGD with Nesterov momentum)
    with an MLP 512-512."""
    return default_classifier_net().set_params(
        module__hidden_layer_sizes=(512, 512), lr=lr, max_epochs=max_epochs)


def run(max_epochs=60, lr=0.3, n_snapshots=5, seeds=(0, 1, 2), print_fn=print):
    """Train a single cosine-annealed net and a snapshot ensemble; print a table.

    Both use the same net, the same epochs and peak learning rate, the same
    training rows and, seed for seed, the same initial weights and batch order:
    the single net is the same estimator with ``n_snapshots=1`` (one cosine
    annealing from ``lr`` to 0 over the whole budget). The ensemble is the
    paper's: every snapshot, equal weights, no rows held out.

    Returns
    -------
    rows : dict
        ``{name: [(accuracy, log_loss, seconds), ...]}``, one tuple per seed.
    """
    X, y, X_test, y_test = load_mnist1d()
    print_fn(
        f"MNIST-1D: {len(X)} training rows, {len(X_test)} test rows, {X.shape[1]} "
        f"features, {len(np.unique(y))} classes. MLP 512-512, {max_epochs} epochs, "
        f"peak lr {lr}, torch threads {torch.get_num_threads()}, seeds {list(seeds)}."
    )
    contenders = {
        "single net (1 cosine cycle)": 1,
        f"snapshot ensemble ({n_snapshots} cycles)": n_snapshots,
    }
    rows = {name: [] for name in contenders}
    for seed in seeds:
        for name, m in contenders.items():
            clf = SnapshotEnsembleClassifier(
                demo_net(max_epochs, lr), n_snapshots=m, validation_fraction=0.0,
                selection="all", weighting="uniform", random_state=seed,
            )
            start = time.perf_counter()
            clf.fit(X, y)
            seconds = time.perf_counter() - start
            proba = clf.predict_proba(X_test)
            rows[name].append((
                accuracy_score(y_test, clf.classes_[proba.argmax(axis=1)]),
                log_loss(y_test, proba, labels=clf.classes_),
                seconds,
            ))
    print_fn("")
    print_fn("| method | test accuracy | test log-loss | fit time (median, s) |")
    print_fn("|---|---|---|---|")
    for name, results in rows.items():
        acc, nll, sec = np.array(results).T
        print_fn(f"| {name} | {acc.mean():.3f} ± {acc.std():.3f} | "
                 f"{nll.mean():.3f} ± {nll.std():.3f} | {np.median(sec):.1f} |")
    print_fn("(mean ± standard deviation over the seeds; same budget for both)")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sksnapshot",
        description="Train one net and its snapshot ensemble on MNIST-1D and compare them.",
    )
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 5 epochs, one seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds = 5, 1
    run(max_epochs=args.epochs, lr=args.lr, n_snapshots=args.snapshots,
        seeds=tuple(range(args.seeds)))
