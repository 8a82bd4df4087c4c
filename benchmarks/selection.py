"""Which members, which weights? Selection strategies compared on held-out test rows.

Each seed trains ONE snapshot ensemble (5 cosine cycles) on 90 % of the
training rows; every strategy is then applied to the same snapshots with
``select`` on the remaining 10 % (the validation rows), and scored on the test
rows. The single net is the same estimator with ``n_snapshots=1`` (one cosine
annealing over the same budget, same rows, same seed).

    python -m benchmarks.selection            # the table in benchmarks/results/
    python -m benchmarks.selection --quick    # a smoke run
"""

import numpy as np
import torch
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

from sksnapshot import SnapshotEnsembleClassifier

from ._common import mean_std, table_main
from ._data import load_digits_split, load_mnist1d, make_net

STRATEGIES = [  # (selection, weighting, combine)
    ("all", "uniform", "proba"),
    ("all", "optimize", "proba"),
    ("diverse", "uniform", "proba"),
    ("diverse", "optimize", "proba"),
    ("greedy", "uniform", "proba"),
    ("all", "uniform", "weights"),
]


DATASETS = {"mnist1d": (load_mnist1d, 0.1), "digits": (load_digits_split, 0.05)}


def _scores(clf, X_test, y_test):
    proba = clf.predict_proba(X_test)
    return accuracy_score(y_test, clf.classes_[proba.argmax(1)]), log_loss(y_test, proba)


def run(epochs_list, seeds, n_snapshots=5):
    rows = {}
    for name, (load, lr) in DATASETS.items():
        X, y, X_test, y_test = load()
        for epochs in epochs_list:
            for seed in seeds:
                X_fit, X_val, y_fit, y_val = train_test_split(
                    X, y, test_size=0.1, random_state=seed, stratify=y)
                common = dict(validation_fraction=0.0, random_state=seed,
                              selection="all", weighting="uniform")
                single = SnapshotEnsembleClassifier(make_net("mlp", epochs, lr), n_snapshots=1,
                                                    **common)
                single.fit(X_fit, y_fit)
                rows.setdefault((name, epochs, "single net"), []).append(
                    (*_scores(single, X_test, y_test), 1))
                clf = SnapshotEnsembleClassifier(make_net("mlp", epochs, lr),
                                                 n_snapshots=n_snapshots, **common)
                clf.fit(X_fit, y_fit)
                for selection, weighting, combine in STRATEGIES:
                    clf.set_params(selection=selection, weighting=weighting, combine=combine)
                    clf.select(X_val, y_val)
                    key = (name, epochs, f"{selection} / {weighting} / {combine}")
                    rows.setdefault(key, []).append(
                        (*_scores(clf, X_test, y_test), len(clf.members_)))
                print(f"done: {name}, {epochs} epochs, seed {seed}", flush=True)
    return rows


def table(rows, seeds):
    lines = [
        f"Test accuracy and log-loss, mean ± std over seeds {list(seeds)}; MLP 512-512, "
        f"SGD (Nesterov momentum 0.9), 5 cycles; peak lr 0.1 (MNIST-1D) and 0.05 (digits); "
        f"torch threads {torch.get_num_threads()}. Strategy = selection / weighting / combine.",
        "",
        "| data | epochs | strategy | accuracy | log-loss | members |",
        "|---|---|---|---|---|---|",
    ]
    for (name, epochs, strategy), results in rows.items():
        acc, nll, members = np.array(results, dtype=float).T
        lines.append(f"| {name} | {epochs} | {strategy} | {mean_std(acc)} | "
                     f"{mean_std(nll)} | {members.mean():.1f} |")
    return "\n".join(lines)


def main(argv=None):
    def compute(args):
        epochs_list, seeds = ([3], [0]) if args.quick else ([20, 60], list(range(args.seeds)))
        return table(run(epochs_list, seeds), seeds)

    table_main(argv, __doc__, "selection", "Selection strategies", compute,
               quick_help="3 epochs, one seed, no file", seeds=3)


if __name__ == "__main__":
    main()
