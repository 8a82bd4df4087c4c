"""Small data: which combination rule never loses to one net? (issue 11)

For every task (at most 1,000 training rows), budget and seed, the default
net (``sksnapshot.default_classifier_net()``, MLP 100) is trained twice with
the same rows, the same ``random_state`` (so the same validation rows and
initial weights) and the same number of epochs: once as a single net
(``n_snapshots=1``, one cosine annealing over the whole budget) and once as a
5-snapshot ensemble. Every combination rule is then applied *offline* to that
one ensemble fit: each snapshot's log-probabilities on the estimator's own
validation rows (10 % of the training rows, recovered from the net's
predefined validation set) and on the test rows are computed once, and a rule
is a pure function of the validation arrays returning member indices,
weights and a temperature.

    python -m benchmarks.small_data              # table + JSON in benchmarks/results/
    python -m benchmarks.small_data --quick      # a smoke run (seconds), no files
    python -m benchmarks.small_data --cache DIR  # keep the fits' arrays in DIR (re-use them)
"""

import argparse
import json
import pathlib
import time
import warnings

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot._calibration import apply_temperature, fit_temperature
from sksnapshot._selection import select_members

from ._data import SMALL_TASKS, scores

RESULTS = pathlib.Path(__file__).parent / "results"
BUDGETS = (50, 150)
SEEDS = (0, 1, 2)
N_SNAPSHOTS = 5
METRICS = ("nll", "accuracy", "ece")


# -- one fit per (task, budget, seed) -------------------------------------------------
def split_task(task, seed, max_rows=None):
    """60 / 40 stratified split of a task (per seed), standardised on the training rows."""
    X, y = SMALL_TASKS[task]()
    if max_rows is not None and len(X) > max_rows:
        X, _, y, _ = train_test_split(X, y, train_size=max_rows, random_state=0, stratify=y)
    X, X_test, y, y_test = train_test_split(X, y, test_size=0.4, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(X)
    return (scaler.transform(X).astype(np.float32), np.asarray(y, dtype=np.int64),
            scaler.transform(X_test).astype(np.float32), np.asarray(y_test, dtype=np.int64))


def validation_rows(clf):
    """The rows the estimator held out: skorch's predefined validation set of ``net_``."""
    dataset = clf.net_.train_split.keywords["valid_ds"]
    return np.asarray(dataset.X), np.asarray(dataset.y)


def log_probas(clf, states, X):
    """Log-softmax of the module's logits on ``X`` for every state, shape (M, n, K)."""
    module = clf.net_.module_
    module.eval()
    X = torch.as_tensor(X)
    out = []
    with torch.inference_mode():
        for state in states:
            logits = torch.func.functional_call(module, state, (X,))
            out.append(torch.log_softmax(logits.double(), dim=1).numpy())
    return np.stack(out)


def fit_arrays(task, epochs, seed, n_snapshots=N_SNAPSHOTS, max_rows=None):
    """Train the single net and the ensemble; return every array the rules need."""
    X, y, X_test, y_test = split_task(task, seed, max_rows)
    out = {"y_test": y_test}
    for name, m in (("single", 1), ("snap", n_snapshots)):
        net = default_classifier_net().set_params(max_epochs=epochs)
        clf = SnapshotEnsembleClassifier(net, n_snapshots=m, validation_fraction=0.1,
                                         selection="all", weighting="uniform",
                                         random_state=seed)
        start = time.perf_counter()
        clf.fit(X, y)
        out[f"{name}_seconds"] = time.perf_counter() - start
        X_val, y_val = validation_rows(clf)
        out[f"{name}_val"] = log_probas(clf, clf.snapshots_, X_val)
        out[f"{name}_test"] = log_probas(clf, clf.snapshots_, X_test)
        out["y_val"] = y_val  # identical for both: same random_state, same split
    out["n_train"] = len(X) - len(out["y_val"])
    return out


def cached_fit(cache, task, epochs, seed, **kwargs):
    if cache is None:
        return fit_arrays(task, epochs, seed, **kwargs)
    path = pathlib.Path(cache) / f"{task}_{epochs}_{seed}.npz"
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    arrays = fit_arrays(task, epochs, seed, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


# -- rules: (log_probas on validation (M, n, K), y_val) -> (indices, weights, temperature) --
def _rule(selection, weighting, calibration=None, n_members=None):
    def rule(val, y_val):
        probas = np.exp(val)
        indices, weights = select_members(probas, y_val, selection, n_members, weighting)
        temperature = 1.0
        if calibration == "temperature":
            temperature = fit_temperature(_combine(val, indices, weights), y_val)
        return indices, weights, temperature
    return rule


def _combine(log_p, indices, weights):
    """Log of the weighted average of the members' probabilities, (n, K)."""
    sub = log_p[indices]
    top = sub.max(axis=0)
    return top + np.log(np.tensordot(weights, np.exp(sub - top), axes=1))


RULES = {
    "all / optimize (old default)": _rule("all", "optimize"),
    "all / uniform": _rule("all", "uniform"),
    "last 1 (last snapshot)": _rule("last", "uniform", n_members=1),
    "last 2 / uniform": _rule("last", "uniform", n_members=2),
    "last 3 / uniform": _rule("last", "uniform", n_members=3),
    "diverse / uniform": _rule("diverse", "uniform"),
    "diverse / optimize": _rule("diverse", "optimize"),
    "greedy / uniform": _rule("greedy", "uniform"),
    "all / optimize + T": _rule("all", "optimize", "temperature"),
    "all / uniform + T": _rule("all", "uniform", "temperature"),
}


def evaluate(arrays, rules):
    """Test scores of the single net and of every rule, from one fit's arrays."""
    y_test = arrays["y_test"]
    single = scores(y_test, np.exp(arrays["single_test"][0]))
    t_single = fit_temperature(arrays["single_val"][0], arrays["y_val"])
    out = {"single net": single,
           "single net + T": scores(y_test, apply_temperature(arrays["single_test"][0],
                                                               t_single))}
    for name, rule in rules.items():
        indices, weights, temperature = rule(arrays["snap_val"], arrays["y_val"])
        log_p = _combine(arrays["snap_test"], indices, weights)
        out[name] = {**scores(y_test, apply_temperature(log_p, temperature)),
                     "max_weight": float(np.max(weights)), "n_members": int(len(indices)),
                     "temperature": float(temperature)}
    return out


def run(tasks, budgets, seeds, rules=RULES, cache=None, max_rows=None, print_fn=print):
    """Evaluate every rule on every (task, budget, seed); return the raw records."""
    records = []
    start = time.perf_counter()
    for task in tasks:
        for epochs in budgets:
            for seed in seeds:
                arrays = cached_fit(cache, task, epochs, seed, max_rows=max_rows)
                for method, result in evaluate(arrays, rules).items():
                    records.append({"task": task, "epochs": epochs, "seed": seed,
                                    "n_train": int(arrays["n_train"]),
                                    "n_valid": len(arrays["y_val"]),
                                    "method": method, **result})
                print_fn(f"  {task}, {epochs} epochs, seed {seed} "
                         f"({time.perf_counter() - start:.0f} s)")
    return records


# -- tables ---------------------------------------------------------------------------
def _mean(records, task, epochs, method, key):
    values = [r[key] for r in records
              if r["task"] == task and r["epochs"] == epochs and r["method"] == method]
    return float(np.mean(values))


def summary(records):
    """Per (task, budget, method): mean test NLL ratio, accuracy and ECE differences."""
    cells = sorted({(r["task"], r["epochs"]) for r in records},
                   key=lambda c: (list(SMALL_TASKS).index(c[0]), c[1]))
    methods = list(dict.fromkeys(r["method"] for r in records))
    out = {}
    for task, epochs in cells:
        ref = {k: _mean(records, task, epochs, "single net", k) for k in METRICS}
        for method in methods:
            m = {k: _mean(records, task, epochs, method, k) for k in METRICS}
            out[(task, epochs, method)] = {
                "nll_ratio": m["nll"] / ref["nll"], "d_acc": m["accuracy"] - ref["accuracy"],
                "d_ece": m["ece"] - ref["ece"], **m}
    return cells, methods, out


def tables(records):
    cells, methods, s = summary(records)
    n_valid = {c: int(np.mean([r["n_valid"] for r in records if (r["task"], r["epochs"]) == c]))
               for c in cells}
    n_train = {c: int(np.mean([r["n_train"] for r in records if (r["task"], r["epochs"]) == c]))
               for c in cells}
    lines = [
        "### Suite summary (mean over the task x budget cells)",
        "",
        "NLL ratio = ensemble test log-loss / single net's (mean over seeds, per cell); "
        "Δacc, ΔECE in points (ensemble − single net). *Cells failing* = cells where the NLL "
        "ratio > 1.01 or Δacc < −0.5 points (the issue's bar).",
        "",
        "| rule | mean NLL ratio | worst NLL ratio | mean Δacc | worst Δacc | mean ΔECE | "
        "cells failing |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        ratios = np.array([s[(*c, method)]["nll_ratio"] for c in cells])
        dacc = np.array([s[(*c, method)]["d_acc"] for c in cells]) * 100
        dece = np.array([s[(*c, method)]["d_ece"] for c in cells]) * 100
        fails = int(np.sum((ratios > 1.01) | (dacc < -0.5)))
        lines.append(f"| {method} | {ratios.mean():.3f} | {ratios.max():.3f} | "
                     f"{dacc.mean():+.2f} | {dacc.min():+.2f} | {dece.mean():+.2f} | "
                     f"{fails} / {len(cells)} |")
    lines += ["", "### Per task and budget: NLL ratio (Δacc in points)", "",
              "| task (train / valid rows) | epochs | single net NLL | "
              + " | ".join(methods[1:]) + " |",
              "|---|---|---|" + "---|" * (len(methods) - 1)]
    for c in cells:
        row = [f"{c[0]} ({n_train[c]} / {n_valid[c]})", str(c[1]),
               f"{s[(*c, 'single net')]['nll']:.3f}"]
        for method in methods[1:]:
            v = s[(*c, method)]
            row.append(f"{v['nll_ratio']:.3f} ({100 * v['d_acc']:+.1f})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 tasks, 4 epochs, one seed, no files")
    parser.add_argument("--cache", default=None, help="directory keeping the fits' arrays")
    parser.add_argument("--tasks", nargs="*", default=list(SMALL_TASKS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.quick:
        records = run(["iris", "moons-400"], (5,), (0,), cache=None)
    else:
        start = time.perf_counter()
        records = run(args.tasks, BUDGETS, SEEDS, cache=args.cache)
        wall = time.perf_counter() - start
    text = tables(records)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "small_data_raw.json").write_text(json.dumps(records, indent=0))
        (RESULTS / "small_data.md").write_text(
            "# Small data: combination rules against one net\n\n"
            f"`python -m benchmarks.small_data` ({wall:.0f} s wall, 1 torch thread)\n\n"
            + text + "\n")


if __name__ == "__main__":
    main()
