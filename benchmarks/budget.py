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
  default (5 cosine cycles of E/5 epochs, all snapshots, shrunk weights,
  temperature), the validation rows given as ``X_valid``;
- other schedules within the same E epochs: fewer cycles, fast geometric
  ensembling (``schedule="linear"``: half the budget as one decay, then short
  cycles) and restarts that ramp up over a quarter of each cycle
  (``schedule="cosine_warmup"``), with the default's member choice and
  calibration.

Scores on the test rows: log-loss (NLL) and accuracy, mean over seeds; a
"loss" is a mean NLL more than 1 % above the single net's or a mean accuracy
more than 0.5 points below (the small-data benchmark's rule).

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
from ._data import make_net, scores
from .quality import split

TASKS = [("mnist1d", "cnn", 0.1), ("digits", "mlp", 0.05)]
BUDGETS = (5, 10, 20, 40, 80)
# label: estimator settings besides the net (validation rows always given).
METHODS = {
    "default (5 cosine cycles)": {},
    "3 cosine cycles": {"n_snapshots": 3},
    "2 cosine cycles": {"n_snapshots": 2},
    "FGE (linear, 5 cycles)": {"schedule": "linear"},
    "ramped restarts (cosine_warmup, 5 cycles)": {"schedule": "cosine_warmup"},
}


def _failed(method):
    labels = {"single": ["single net", "single net + temperature"],
              "plain": ["plain skorch net"]}.get(method, [method])
    return {**{label: dict.fromkeys(("nll", "accuracy"), float("nan")) for label in labels},
            "seconds": float("nan")}


def _scores(y_test, proba):
    proba = np.asarray(proba, dtype=np.float64)
    if not np.all(np.isfinite(proba)):  # a net that diverged: counted, not averaged
        return dict.fromkeys(("nll", "accuracy"), float("nan"))
    return scores(y_test, proba)


def _fit(data, model, lr, epochs, seed, method, max_train):
    try:
        return _fit_scored(data, model, lr, epochs, seed, method, max_train)
    except RuntimeError as exc:
        if "diverged" not in str(exc):
            raise
        return _failed(method)


def _fit_scored(data, model, lr, epochs, seed, method, max_train):
    X_fit, y_fit, X_val, y_val, X_test, y_test = split(data, seed, max_train)
    net = make_net(model, epochs, lr)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "plain":
            torch.manual_seed(seed)  # skorch draws the initial weights from torch's global RNG
            net.set_params(module__n_features=X_fit.shape[1],
                           module__n_classes=len(np.unique(y_fit))).fit(X_fit, y_fit)
            return {"plain skorch net": _scores(y_test, net.predict_proba(X_test)),
                    "seconds": time.perf_counter() - start}
        if method == "single":
            clf = SnapshotEnsembleClassifier(net, n_snapshots=1, validation_fraction=0.0,
                                             weighting="uniform", calibration=None,
                                             random_state=seed).fit(X_fit, y_fit)
            raw = _scores(y_test, clf.predict_proba(X_test))
            clf.set_params(calibration="auto").select(X_val, y_val)
            return {"single net": raw,
                    "single net + temperature": _scores(y_test, clf.predict_proba(X_test)),
                    "seconds": time.perf_counter() - start}
        clf = SnapshotEnsembleClassifier(net, random_state=seed, **METHODS[method])
        clf.fit(X_fit, y_fit, X_valid=X_val, y_valid=y_val)
    # The snapshots' own validation log-loss, to study what foretells a loss.
    return {method: {**_scores(y_test, clf.predict_proba(X_test)),
                     "snapshot_valid_nll": clf.validation_scores_["log_loss"].tolist()},
            "seconds": time.perf_counter() - start}


def run(tasks=TASKS, budgets=BUDGETS, seeds=(0, 1, 2), jobs=2, max_train=None):
    """``{task: {budget: {method: [scores per seed]}}}``."""
    work = [((data, model, lr, epochs, seed, method), _fit,
             (data, model, lr, epochs, seed, method, max_train))
            for data, model, lr in tasks for epochs in budgets for seed in seeds
            for method in ["single", "plain", *METHODS]]
    if jobs <= 1:
        quiet_process(1)
    table = {}
    for (data, model, lr, epochs, _seed, _method), result in run_tasks(work, jobs, 1, "budget"):
        cell = table.setdefault(f"{data} {model} (lr {lr})", {}).setdefault(epochs, {})
        for label, record in result.items():
            if label != "seconds":
                cell.setdefault(label, []).append(record)
    return table


def _loses(nll, acc, single_nll, single_acc):
    return nll > 1.01 * single_nll or acc < single_acc - 0.005


def markdown(table, seeds):
    labels = ["single net", "single net + temperature", "plain skorch net", *METHODS]
    lines = []
    for task, budgets in table.items():
        lines += [f"## {task}", "",
                  "| epochs | " + " | ".join(labels) + " |",
                  "|---|" + "---|" * len(labels)]
        for epochs in sorted(budgets):
            cell = budgets[epochs]
            mean = {label: {k: nanmean([r[k] for r in cell[label]])
                            for k in ("nll", "accuracy")} for label in labels}
            single = mean["single net"]
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
    lines.append(f"Cells: test NLL / accuracy, mean over seeds {list(seeds)}; a fit that "
                 "diverged (no finite probabilities) is counted in brackets and left out of "
                 "its mean.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, to a temp dir")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    out = results_dir(args.out, args.quick, "budget")
    start = time.perf_counter()
    if args.quick:
        seeds, kwargs = (0,), dict(tasks=[("digits", "mlp", 0.05)], budgets=(5,),
                                   max_train=300, jobs=1)
    else:
        seeds, kwargs = tuple(range(args.seeds)), dict(jobs=args.jobs)
    table = run(seeds=seeds, **kwargs)
    text = markdown(table, seeds)
    print(text)
    command = "python -m benchmarks.budget" + (" --quick" if args.quick else "")
    write_markdown(out / "budget.md", "Short budgets: the default ensemble against one net",
                   run_note(command, time.perf_counter() - start), text)
    (out / "budget_raw.json").write_text(json.dumps(
        {task: {str(e): cell for e, cell in budgets.items()} for task, budgets in table.items()},
        indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
