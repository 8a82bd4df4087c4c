"""Budget: does the default ensemble lose to one net when training is short?

"Never worse than one net" must hold at any budget. For each task, budget of
E epochs and seed, the same net is trained on the same rows:

- ``single net``: one cosine annealing over the E epochs (``n_snapshots=1``),
  its raw probabilities;
- ``single net + temperature``: that net with one temperature fitted on the
  validation rows (what the default's calibration alone would give it);
- ``plain skorch net``: the net as a skorch user fits it (``net.fit``, the
  constant learning rate, no schedule);
- ``default``: ``SnapshotEnsembleClassifier`` with every setting at its
  default (``n_snapshots="auto"``: the single net's cosine until the
  validation loss levels off, then restart cycles; all snapshots, shrunk
  weights, temperature), the validation rows given as ``X_valid``;
- the previous default (5 equal cosine cycles) and 5 restarts that ramp up
  over a quarter of each cycle (``schedule="cosine_warmup"``), with the
  default's member choice and calibration.

Tasks: MNIST-1D with a 1-D CNN (no normalisation layers), digits with the MLP,
and two real time-series sets that ship inside the aeon wheel
(ItalyPowerDemand, OSULeaf) with a fully convolutional net with BatchNorm.

Scores on the test rows: log-loss (NLL) and accuracy, mean over seeds; a
"loss" is a mean NLL more than 1 % above the single net's *with its
temperature* or a mean accuracy more than 0.5 points below (the small-data
benchmark's rule, against the fair reference: the same net, trained once, with
the same temperature fitted on the same validation rows).

    python -m benchmarks.budget           # results in benchmarks/results/budget.md
    python -m benchmarks.budget --quick   # a smoke run, written to a temp dir
"""

import argparse
import json
import pathlib
import time
import warnings

import numpy as np
import torch

from sksnapshot import SnapshotEnsembleClassifier

from ._common import nanmean, quiet_process, results_dir, run_note, run_tasks, write_markdown
from ._data import make_net, scores_or_nan, split

DEFAULT = "default (n_snapshots='auto')"
# label: estimator settings besides the net (validation rows always given).
METHODS = {
    DEFAULT: {},
    "5 cosine cycles (previous default)": {"n_snapshots": 5},
    "5 ramped restarts (cosine_warmup)": {"n_snapshots": 5, "schedule": "cosine_warmup"},
}
REFERENCE = "single net + temperature"
# (data, model, peak lr, batch size, methods besides the single net).
TASKS = [
    ("mnist1d", "cnn", 0.1, 128, ["plain", *METHODS]),
    ("digits", "mlp", 0.05, 128, ["plain", *METHODS]),
    ("italy-power", "fcn", 0.1, 64, [DEFAULT, "5 cosine cycles (previous default)"]),
    ("osu-leaf", "fcn", 0.1, 32, [DEFAULT, "5 cosine cycles (previous default)"]),
]
BUDGETS = (5, 10, 20, 40, 80)


def _failed(method):
    labels = {"single": ["single net", "single net + temperature"],
              "plain": ["plain skorch net"]}.get(method, [method])
    return {**{label: dict.fromkeys(("nll", "accuracy"), float("nan")) for label in labels},
            "seconds": float("nan")}


def _fit(data, model, lr, batch_size, epochs, seed, method, max_train):
    try:
        return _fit_scored(data, model, lr, batch_size, epochs, seed, method, max_train)
    except RuntimeError as exc:
        if "diverged" not in str(exc):
            raise
        return _failed(method)


def _fit_scored(data, model, lr, batch_size, epochs, seed, method, max_train):
    X_fit, y_fit, X_val, y_val, X_test, y_test = split(data, seed, max_train)
    net = make_net(model, epochs, lr, batch_size=batch_size)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "plain":
            torch.manual_seed(seed)  # skorch draws the initial weights from torch's global RNG
            sizes = {"module__n_classes": len(np.unique(y_fit))}
            if X_fit.ndim == 2:
                sizes["module__n_features"] = X_fit.shape[1]
            net.set_params(**sizes).fit(X_fit, y_fit)
            return {"plain skorch net": scores_or_nan(y_test, net.predict_proba(X_test)),
                    "seconds": time.perf_counter() - start}
        if method == "single":
            # Fitted with the validation rows, as the default is: the same batches and
            # validation passes, so both runs are the same until the default cuts its cycle.
            clf = SnapshotEnsembleClassifier(net, n_snapshots=1, weighting="uniform",
                                             calibration=None, random_state=seed)
            clf.fit(X_fit, y_fit, X_valid=X_val, y_valid=y_val)
            raw = scores_or_nan(y_test, clf.predict_proba(X_test))
            clf.set_params(calibration="auto").select(X_val, y_val)
            return {"single net": raw,
                    "single net + temperature": scores_or_nan(y_test, clf.predict_proba(X_test)),
                    "seconds": time.perf_counter() - start}
        clf = SnapshotEnsembleClassifier(net, random_state=seed, **METHODS[method])
        clf.fit(X_fit, y_fit, X_valid=X_val, y_valid=y_val)
    # The snapshots' own validation log-loss, to study what foretells a loss.
    return {method: {**scores_or_nan(y_test, clf.predict_proba(X_test)),
                     "snapshot_valid_nll": clf.validation_scores_["log_loss"].tolist(),
                     "snapshot_epochs": list(clf.snapshot_epochs_)},
            "seconds": time.perf_counter() - start}


def run(tasks=TASKS, budgets=BUDGETS, seeds=(0, 1, 2), jobs=2, max_train=None):
    """``{task: {budget: {method: [scores per seed]}}}``."""
    work = [((data, model, lr, epochs, seed, method), _fit,
             (data, model, lr, batch_size, epochs, seed, method, max_train))
            for data, model, lr, batch_size, methods in tasks for epochs in budgets
            for seed in seeds for method in ["single", *methods]]
    work.sort(key=lambda task: -task[0][3])  # longest first: the workers finish together
    if jobs <= 1:
        quiet_process(1)
    table = {f"{data} {model} (lr {lr})": {} for data, model, lr, _, _ in tasks}
    for (data, model, lr, epochs, _seed, _method), result in run_tasks(work, jobs, 1, "budget"):
        cell = table[f"{data} {model} (lr {lr})"].setdefault(epochs, {})
        for label, record in result.items():
            if label != "seconds":
                cell.setdefault(label, []).append(record)
    return table


def _loses(nll, acc, single_nll, single_acc):
    return nll > 1.01 * single_nll or acc < single_acc - 0.005


def markdown(table, seeds):
    lines = []
    for task, budgets in table.items():
        present = set().union(*(cell for cell in budgets.values()))
        labels = [label for label in ["single net", REFERENCE, "plain skorch net", *METHODS]
                  if label in present]
        lines += [f"## {task}", "",
                  "| epochs | " + " | ".join(labels) + " |",
                  "|---|" + "---|" * len(labels)]
        for epochs in sorted(budgets):
            cell = budgets[epochs]
            mean = {label: {k: nanmean([r[k] for r in cell[label]])
                            for k in ("nll", "accuracy")} for label in labels}
            single = mean[REFERENCE]
            row = []
            for label in labels:
                m = mean[label]
                mark = " **loses**" if label in METHODS and _loses(
                    m["nll"], m["accuracy"], single["nll"], single["accuracy"]) else ""
                failed = sum(not np.isfinite(r["nll"]) for r in cell[label])
                mark += f" ({failed} diverged)" if failed else ""
                row.append(f"{m['nll']:.3f} / {m['accuracy']:.3f}{mark}")
            lines.append(f"| {epochs} | " + " | ".join(row) + " |")
        lines.append("")
    lines.append(f"Cells: test NLL / accuracy, mean over seeds {list(seeds)}; **loses**: mean "
                 "NLL more than 1 % above the single net + temperature's, or accuracy more "
                 "than 0.5 points below; a fit that diverged (no finite probabilities) is "
                 "counted in brackets and left out of its mean.")
    return "\n".join(lines)


def plot_curve(table, path):
    """Test NLL / the calibrated single net's against the epochs per cycle, per task.

    The 5-cycle rows give the curve of equal cycles (budget / 5 epochs each);
    the default's points sit at the budget it was given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for task, budgets in table.items():
        epochs = sorted(budgets)
        ref = [nanmean([r["nll"] for r in budgets[e][REFERENCE]]) for e in epochs]
        for ax, label, per_cycle in ((axes[0], "5 cosine cycles (previous default)", 5),
                                     (axes[1], DEFAULT, 1)):
            ratio = [nanmean([r["nll"] for r in budgets[e][label]]) / ref[i]
                     for i, e in enumerate(epochs)]
            ax.plot(np.array(epochs) / per_cycle, ratio, marker="o", label=task)
    axes[0].set_xlabel("epochs per cycle (5 equal cycles)")
    axes[1].set_xlabel("budget (epochs), n_snapshots='auto'")
    axes[0].set_ylabel("test NLL / single net + temperature")
    for ax, ticks in ((axes[0], (1, 2, 4, 8, 16)), (axes[1], (5, 10, 20, 40, 80))):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(1.01, color="k", lw=0.5, ls=":")
    axes[1].legend(fontsize=7)
    fig.suptitle("Below 1: the ensemble beats the same net trained once, with its temperature")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, to a temp dir")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    out = results_dir(args.out, args.quick, "budget")
    start = time.perf_counter()
    if args.quick:
        seeds, kwargs = (0,), dict(tasks=[("digits", "mlp", 0.05, 128, ["plain", *METHODS])],
                                   budgets=(5,), max_train=300, jobs=1)
    else:
        seeds, kwargs = tuple(range(args.seeds)), dict(jobs=args.jobs)
    table = run(seeds=seeds, **kwargs)
    text = markdown(table, seeds)
    print(text)
    command = "python -m benchmarks.budget" + (" --quick" if args.quick else "")
    write_markdown(out / "budget.md", "Short budgets: the default ensemble against one net",
                   run_note(command, time.perf_counter() - start), text)
    plot_curve(table, out / "budget.png")
    (out / "budget_raw.json").write_text(json.dumps(
        {task: {str(e): cell for e, cell in budgets.items()} for task, budgets in table.items()},
        indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
