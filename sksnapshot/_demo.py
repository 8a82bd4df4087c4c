"""The demo behind ``python -m sksnapshot``: one net, calibrated, vs its snapshot ensemble."""

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

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


def run(max_epochs=60, lr=0.1, n_snapshots="auto", seeds=(0, 1, 2), print_fn=print):
    """Train one net, calibrate it, and train its snapshot ensemble; print a table.

    All three rows are the same net with the same epochs and peak learning
    rate, the same training rows and, seed for seed, the same initial weights
    and batch order; 10 % of the training rows (stratified, per seed) are the
    validation rows of both fits:

    - the single net: the estimator with ``n_snapshots=1`` (one cosine
      annealing over the whole budget), its raw probabilities;
    - the single net with one temperature fitted on the validation rows (what
      calibration alone gives one net: the fair reference);
    - the snapshot ensemble with its defaults (``n_snapshots="auto"``, all
      snapshots, shrunk weights, temperature), or ``n_snapshots`` cycles.

    Returns
    -------
    rows : dict
        ``{name: [(accuracy, log_loss, seconds, n_snapshots), ...]}``, one tuple per seed.
    """
    X, y, X_test, y_test = load_mnist1d()
    print_fn(
        f"MNIST-1D: {len(X)} training rows ({len(X) // 10} of them validation rows), "
        f"{len(X_test)} test rows, {X.shape[1]} features, {len(np.unique(y))} classes. "
        f"MLP 512-512, {max_epochs} epochs, peak lr {lr}, torch threads "
        f"{torch.get_num_threads()}, seeds {list(seeds)}."
    )
    ensemble = ("snapshot ensemble (defaults)" if n_snapshots == "auto"
                else f"snapshot ensemble ({n_snapshots} cycles)")
    names = ["single net (1 cosine cycle)", "single net + temperature", ensemble]
    rows = {name: [] for name in names}

    def score(clf, seconds):
        proba = clf.predict_proba(X_test)
        return (accuracy_score(y_test, clf.classes_[proba.argmax(axis=1)]),
                log_loss(y_test, proba, labels=clf.classes_), seconds, len(clf.snapshots_))

    for seed in seeds:
        X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.1, stratify=y,
                                                      random_state=seed)
        for name, params in ((names[0], {"n_snapshots": 1, "calibration": None}),
                             (ensemble, {"n_snapshots": n_snapshots})):
            clf = SnapshotEnsembleClassifier(demo_net(max_epochs, lr), random_state=seed,
                                             **params)
            start = time.perf_counter()
            clf.fit(X_fit, y_fit, X_valid=X_val, y_valid=y_val)
            rows[name].append(score(clf, time.perf_counter() - start))
            if name == names[0]:
                clf.set_params(calibration="auto").select(X_val, y_val)
                rows[names[1]].append(score(clf, rows[name][-1][2]))
    print_fn("")
    print_fn("| method | snapshots | test accuracy | test log-loss | fit time (median, s) |")
    print_fn("|---|---|---|---|---|")
    for name, results in rows.items():
        acc, nll, sec, m = np.array(results).T
        print_fn(f"| {name} | {m.mean():.1f} | {acc.mean():.3f} ± {acc.std():.3f} | "
                 f"{nll.mean():.3f} ± {nll.std():.3f} | {np.median(sec):.1f} |")
    single, calibrated, ens = (np.array(rows[name])[:, 1] for name in names)
    diff = ens - calibrated
    print_fn("(mean ± standard deviation over the seeds; the same budget for every row)")
    print_fn(f"Ensemble log-loss − calibrated single net's, paired by seed: "
             f"{diff.mean():+.3f} (raw single net: {(ens - single).mean():+.3f}). "
             "The fair comparison is with the calibrated net: a temperature is free.")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sksnapshot",
        description="Train one net (raw and calibrated) and its snapshot ensemble on "
                    "MNIST-1D and compare them.",
    )
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--snapshots", default="auto",
                        help='the ensemble\'s n_snapshots: "auto" (the default) or a number')
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 5 epochs, one seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds = 5, 1
    snapshots = args.snapshots if args.snapshots == "auto" else int(args.snapshots)
    run(max_epochs=args.epochs, lr=args.lr, n_snapshots=snapshots,
        seeds=tuple(range(args.seeds)))
