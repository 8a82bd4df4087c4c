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
from scipy.special import logsumexp
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot.calibration import apply_temperature, fit_temperature
from sksnapshot.selection import optimize_weights, select_members, shrink_weights

from ._common import RESULTS, run_tasks
from ._data import (
    QUALITY_CONFIGS,
    REGRESSION_DATASETS,
    SMALL_TASKS,
    make_net,
    regression_scores,
    scores,
    split,
)

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
    for name, m in (("single", 1), ("snap", n_snapshots), ("auto", "auto")):
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


def quality_arrays(data, lr, epochs, seed):
    """The same arrays for a task of ``benchmarks/quality.py``'s main table (MLP 512-512).

    As there: 90 % of the training rows are fitted (``validation_fraction=0``),
    the other 10 % are the validation rows, the single net is ``n_snapshots=1``
    with the same seed.
    """
    X_fit, y_fit, X_val, y_val, X_test, y_test = split(data, seed)
    out = {"y_test": y_test, "y_val": y_val, "n_train": len(X_fit)}
    for name, m in (("single", 1), ("snap", N_SNAPSHOTS)):
        clf = SnapshotEnsembleClassifier(make_net("mlp", epochs, lr), n_snapshots=m,
                                         validation_fraction=0.0, selection="all",
                                         weighting="uniform", random_state=seed)
        start = time.perf_counter()
        clf.fit(X_fit, y_fit)
        out[f"{name}_seconds"] = time.perf_counter() - start
        out[f"{name}_val"] = log_probas(clf, clf.snapshots_, X_val)
        out[f"{name}_test"] = log_probas(clf, clf.snapshots_, X_test)
    return out


def cached_fit(cache, task, epochs, seed, max_rows=None):
    """``fit_arrays`` (or ``quality_arrays`` for a task ``("quality", data, lr)``), cached."""
    if isinstance(task, tuple):
        fit, name = (lambda: quality_arrays(task[1], task[2], epochs, seed)), "_".join(
            map(str, task))
    else:
        fit, name = (lambda: fit_arrays(task, epochs, seed, max_rows=max_rows)), task
    if cache is None:
        return fit()
    path = pathlib.Path(cache) / f"{name}_{epochs}_{seed}.npz"
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    arrays = fit()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


# -- rules: (log_probas on validation (M, n, K), y_val) -> (indices, weights, temperature) --
def _combine(log_p, indices, weights):
    """Log of the weighted average of the members' probabilities, (n, K)."""
    return logsumexp(log_p[indices], axis=0, b=np.asarray(weights)[:, None, None])


def _rule(selection, weighting, calibration=None, n_members=None, prior_strength=None):
    """A rule of the package: ``select_members`` then, optionally, temperature scaling
    (``calibration``: "temperature" or "smoothed_temperature", as the classifier's)."""
    def rule(val, y_val):
        indices, weights = select_members(np.exp(val), y_val, selection, n_members, weighting)
        temperature = 1.0
        if calibration is not None:
            kwargs = {} if prior_strength is None else {"prior_strength": prior_strength}
            if calibration == "smoothed_temperature":
                kwargs["smoothing"] = "auto"
            temperature = fit_temperature(_combine(val, indices, weights), y_val, **kwargs)
        return indices, weights, temperature
    return rule


def _last2(n):
    return np.arange(n - 2, n), np.full(2, 0.5)


def _crossfit_losses(probas, y, k=5):
    """Per-row log-loss of optimised weights fitted on the other folds of the rows."""
    folds = np.arange(len(y)) % min(k, len(y))
    np.random.RandomState(0).shuffle(folds)
    true = probas[:, np.arange(len(y)), y]
    out = np.empty(len(y))
    for f in np.unique(folds):
        w = optimize_weights(probas[:, folds != f], y[folds != f])
        out[folds == f] = -np.log(np.maximum(w @ true[:, folds == f], 1e-15))
    return out


def _bootstrap_fallback(val, y_val):
    """Optimised weights only where they beat the last two snapshots by more than noise.

    The per-row difference of the cross-fitted log-loss of optimised weights and
    the log-loss of the last two snapshots' average is bootstrapped (1,000 draws):
    optimised weights are kept when the 90 % quantile of the mean difference is < 0.
    """
    probas = np.exp(val)
    indices, weights = _last2(len(val))
    fallback = -np.log(np.maximum(weights @ probas[indices][:, np.arange(len(y_val)), y_val],
                                  1e-15))
    diff = _crossfit_losses(probas, y_val) - fallback
    draws = np.random.RandomState(0).randint(0, len(diff), (1000, len(diff)))
    if np.quantile(diff[draws].mean(axis=1), 0.9) < 0:
        return np.arange(len(val)), optimize_weights(probas, y_val), 1.0
    return indices, weights, 1.0


def _crossfit_average(val, y_val):
    """Optimised weights averaged over 5 fits, each leaving out one fold of the rows."""
    probas = np.exp(val)
    folds = np.arange(len(y_val)) % min(5, len(y_val))
    weights = np.mean([optimize_weights(probas[:, folds != f], y_val[folds != f])
                       for f in np.unique(folds)], axis=0)
    return np.arange(len(val)), weights, 1.0


def _min_rows(val, y_val, n_min=50):
    """Optimised weights with at least ``n_min`` validation rows, else the last two."""
    if len(y_val) >= n_min:
        return np.arange(len(val)), optimize_weights(np.exp(val), y_val), 1.0
    return (*_last2(len(val)), 1.0)


DEFAULT = "all / shrink + T (new default)"
AUTO = "n_snapshots='auto', all / shrink + T (default)"
OLD_DEFAULT = "all / optimize (old default)"
SMOOTHED = "all / shrink + T of smoothed labels (calibration='smoothed_temperature')"
RULES = {
    OLD_DEFAULT: _rule("all", "optimize"),
    "all / uniform": _rule("all", "uniform"),
    "last 2 / uniform": _rule("last", "uniform", n_members=2),
    "greedy / uniform": _rule("greedy", "uniform"),
    "diverse / optimize": _rule("diverse", "optimize"),
    "min 50 rows: optimize, else last 2": _min_rows,
    "bootstrap fallback to last 2": _bootstrap_fallback,
    "cross-fit averaged weights": _crossfit_average,
    "all / shrink": _rule("all", "shrink"),
    "diverse / shrink": _rule("diverse", "shrink"),
    "all / optimize + T": _rule("all", "optimize", "temperature"),
    "all / uniform + T": _rule("all", "uniform", "temperature"),
    "all / shrink + T without prior": _rule("all", "shrink", "temperature", prior_strength=0.0),
    "diverse / shrink + T": _rule("diverse", "shrink", "temperature"),
    DEFAULT: _rule("all", "shrink", "temperature"),
    SMOOTHED: _rule("all", "shrink", "smoothed_temperature"),
}


def _grid_rule(prior_rows, prior_strength):
    def rule(val, y_val):
        indices = np.arange(len(val))
        weights = shrink_weights(np.exp(val), y_val, prior_rows=prior_rows)
        log_p = _combine(val, indices, weights)
        return indices, weights, fit_temperature(log_p, y_val, prior_strength=prior_strength)
    return rule


# How much do the two prior strengths matter? (the default is 10 and 10)
SENSITIVITY_RULES = {f"shrink prior_rows={a}, temperature prior_strength={b}": _grid_rule(a, b)
                     for a in (3, 10, 30) for b in (3, 10, 30)}


def evaluate(arrays, rules):
    """Test scores of the single net and of every rule, from one fit's arrays."""
    y_test = arrays["y_test"]
    single = scores(y_test, np.exp(arrays["single_test"][0]))
    t_single = fit_temperature(arrays["single_val"][0], arrays["y_val"])
    out = {"single net": single,
           "single net + T": scores(y_test, apply_temperature(arrays["single_test"][0],
                                                               t_single)),
           "single net + T of smoothed labels": scores(y_test, apply_temperature(
               arrays["single_test"][0],
               fit_temperature(arrays["single_val"][0], arrays["y_val"], smoothing="auto")))}
    fits = [(name, rule, "snap") for name, rule in rules.items()]
    if "auto_val" in arrays:
        fits.insert(0, (AUTO, RULES[DEFAULT], "auto"))
    for name, rule, fit in fits:
        indices, weights, temperature = rule(arrays[f"{fit}_val"], arrays["y_val"])
        log_p = _combine(arrays[f"{fit}_test"], indices, weights)
        out[name] = {**scores(y_test, apply_temperature(log_p, temperature)),
                     "max_weight": float(np.max(weights)), "n_members": int(len(indices)),
                     "temperature": float(temperature)}
    return out


def run(tasks, budgets, seeds, rules=RULES, cache=None, max_rows=None, print_fn=print, jobs=1):
    """Evaluate every rule on every (task, budget, seed); return the raw records.

    A task is a name of ``SMALL_TASKS`` or ``("quality", data, lr)`` for a task of
    the quality benchmark's main table. The fits run in ``jobs`` processes.
    """
    work = [((task, epochs, seed), cached_fit, (cache, task, epochs, seed))
            for task in tasks for epochs in budgets for seed in seeds]
    if max_rows is not None:
        work = [(key, fn, (*args, max_rows)) for key, fn, args in work]
    fitted = dict(run_tasks(work, jobs, 1, "small_data", log=lambda *a, **k: None))
    records = []
    start = time.perf_counter()
    for task in tasks:
        label = task if isinstance(task, str) else f"{task[1]} (MLP 512-512, lr {task[2]})"
        for epochs in budgets:
            for seed in seeds:
                arrays = fitted[(task, epochs, seed)]
                for method, result in evaluate(arrays, rules).items():
                    records.append({"task": label, "epochs": epochs, "seed": seed,
                                    "n_train": int(arrays["n_train"]),
                                    "n_valid": len(arrays["y_val"]),
                                    "method": method, **result})
                print_fn(f"  {label}, {epochs} epochs, seed {seed} "
                         f"({time.perf_counter() - start:.0f} s)")
    return records


# -- tables ---------------------------------------------------------------------------
def _select(records, task, epochs, method, key):
    return [r[key] for r in records
            if r["task"] == task and r["epochs"] == epochs and r["method"] == method]


def _mean(records, task, epochs, method, key):
    return float(np.mean(_select(records, task, epochs, method, key)))


def summary(records):
    """Per (task, budget, method): mean test NLL ratio, accuracy and ECE differences."""
    cells = list(dict.fromkeys((r["task"], r["epochs"]) for r in records))
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


def _fails(v):
    return v["nll_ratio"] > 1.01 or v["d_acc"] < -0.005


def tables(records):
    """Markdown: the suite summary, then NLL ratios and accuracy per task and budget."""
    cells, methods, s = summary(records)
    seeds = sorted({r["seed"] for r in records})
    rows = {c: [r for r in records if (r["task"], r["epochs"]) == c
                and r["method"] == "single net"] for c in cells}
    lines = [
        f"Mean over seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} seeds) per task and budget. "
        "NLL ratio = the rule's mean test log-loss / the single net's; Δacc, ΔECE in points "
        "(rule − single net). A cell *fails* when its NLL ratio > 1.01 or Δacc < −0.5 points "
        "(the issue's bar). T = temperature scaling of the combined probabilities "
        "(`sksnapshot.calibration.fit_temperature`, prior strength 10 unless said).",
        "",
        "### Suite summary (over the task x budget cells)",
        "",
        "| rule | mean NLL ratio | worst NLL ratio | mean Δacc | worst Δacc | mean ΔECE | "
        "cells failing |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        v = [s[(*c, method)] for c in cells]
        ratios = np.array([x["nll_ratio"] for x in v])
        dacc = np.array([x["d_acc"] for x in v]) * 100
        dece = np.array([x["d_ece"] for x in v]) * 100
        lines.append(f"| {method} | {ratios.mean():.3f} | {ratios.max():.3f} | "
                     f"{dacc.mean():+.2f} | {dacc.min():+.2f} | {dece.mean():+.2f} | "
                     f"{sum(map(_fails, v))} / {len(cells)} |")
    lines += ["", "### Per task and budget: NLL ratio (Δacc in points); **bold** = fails", "",
              "| task (fit / valid rows) | epochs | single net NLL | "
              + " | ".join(methods[1:]) + " |",
              "|---|---|---|" + "---|" * (len(methods) - 1)]
    for c in cells:
        n_fit, n_valid = rows[c][0]["n_train"], rows[c][0]["n_valid"]
        row = [f"{c[0]} ({n_fit} / {n_valid})", str(c[1]), f"{s[(*c, 'single net')]['nll']:.3f}"]
        for method in methods[1:]:
            v = s[(*c, method)]
            cell = f"{v['nll_ratio']:.3f} ({100 * v['d_acc']:+.1f})"
            row.append(f"**{cell}**" if _fails(v) else cell)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


QUALITY_RULES = {k: RULES[k] for k in (OLD_DEFAULT, "all / shrink", "all / optimize + T",
                                       DEFAULT)}


def quality_table(records):
    """Markdown: absolute scores per quality task, and the new default minus the old one."""
    seeds = sorted({r["seed"] for r in records})
    methods = list(dict.fromkeys(r["method"] for r in records))
    lines = [f"Test scores, mean ± std over seeds {seeds}. *new − old* = paired difference of "
             "the test NLL (new default minus old default), mean ± std over seeds.", "",
             "| data | epochs | rule | accuracy | NLL | ECE | new − old NLL |",
             "|---|---|---|---|---|---|---|"]
    for task, epochs in dict.fromkeys((r["task"], r["epochs"]) for r in records):
        diff = (np.array(_select(records, task, epochs, DEFAULT, "nll"))
                - np.array(_select(records, task, epochs, OLD_DEFAULT, "nll")))
        for method in methods:
            cols = [np.array(_select(records, task, epochs, method, k)) for k in METRICS]
            nll, acc, ece = cols
            extra = f"{diff.mean():+.4f} ± {diff.std():.4f}" if method == DEFAULT else ""
            lines.append(f"| {task} | {epochs} | {method} | {acc.mean():.3f} ± {acc.std():.3f} "
                         f"| {nll.mean():.3f} ± {nll.std():.3f} | {ece.mean():.3f} ± "
                         f"{ece.std():.3f} | {extra} |")
    return "\n".join(lines)


# -- regression: benchmarks/regression.py's tasks ---------------------------------
REGRESSION_RULES = {  # (weighting, variance scale)
    "all / optimize (old default)": ("optimize", False),
    "all / shrink": ("shrink", False),
    "all / optimize + variance scale (new default)": ("optimize", True),
    "all / shrink + variance scale": ("shrink", True),
}


def _regression_outputs(reg, X):
    """Every snapshot's (means, variances or None) on X, in standardised units."""
    module = reg.net_.module_
    module.eval()
    with torch.inference_mode():
        out = np.stack([torch.func.functional_call(module, state, (torch.as_tensor(X),))
                        .double().numpy().reshape(len(X), -1) for state in reg.snapshots_])
    return reg._split(out)


def _moments(means, variances, indices, weights):
    """Weighted mixture mean and variance (spread of means + mean variance)."""
    w = np.asarray(weights)[:, None, None]
    m = means[indices]
    mean = (w * m).sum(axis=0)
    second = m ** 2 + (0.0 if variances is None else variances[indices])
    return mean, np.maximum((w * second).sum(axis=0) - mean ** 2, 0.0)


def run_regression(seeds, epochs=100, print_fn=print):
    """benchmarks/regression.py's setting; every rule applied to one fit per seed."""
    from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net
    from sksnapshot.calibration import fit_variance_scale
    from sksnapshot.selection import select_regression_members

    records = []
    for name, load in REGRESSION_DATASETS.items():
        X, y = load()
        for gaussian in (False, True):
            for seed in seeds:
                X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3,
                                                          random_state=seed)
                scaler = StandardScaler().fit(X_tr)
                mu, sigma = y_tr.mean(), y_tr.std()
                X_tr, X_te = (scaler.transform(a).astype(np.float32) for a in (X_tr, X_te))
                found = {}
                for m in (1, N_SNAPSHOTS):
                    net = default_regressor_net(gaussian=gaussian).set_params(
                        module__hidden_layer_sizes=(64, 64), lr=0.01, max_epochs=epochs,
                        batch_size=32)
                    reg = SnapshotEnsembleRegressor(net, n_snapshots=m, random_state=seed,
                                                    validation_fraction=0.1,
                                                    weighting="uniform")
                    reg.fit(X_tr, (y_tr - mu) / sigma)
                    X_val, y_val = validation_rows(reg)
                    found[m] = (_regression_outputs(reg, X_val), _regression_outputs(reg, X_te),
                                y_val.reshape(len(y_val), -1))
                (vm, vv), (tm, tv), y_val = found[N_SNAPSHOTS]
                cases = {"single net": ((found[1][1][0], found[1][1][1]), [0], [1.0], 1.0)}
                for label, (weighting, scale) in REGRESSION_RULES.items():
                    idx, w = select_regression_members(vm, y_val, "all", None, weighting, vv)
                    s = fit_variance_scale(*_moments(vm, vv, idx, w), y_val) if scale else 1.0
                    cases[label] = ((tm, tv), idx, w, s)
                for label, ((means, variances), idx, w, s) in cases.items():
                    mean, var = _moments(means, variances, idx, w)
                    std = np.sqrt(s * var)[:, 0] * sigma
                    rmse, nll, cov = regression_scores(mean[:, 0] * sigma + mu, std, y_te)
                    records.append({"task": name, "gaussian": gaussian, "seed": seed,
                                    "method": label, "rmse": rmse, "nll": nll,
                                    "coverage": cov, "scale": s})
                print_fn(f"  {name}, gaussian={gaussian}, seed {seed}")
    return records


def regression_table(records):
    seeds = sorted({r["seed"] for r in records})
    lines = [f"benchmarks/regression.py's setting (MLP 64-64, 100 epochs, peak lr 0.01, batch "
             f"32, 10 % validation rows), mean ± std over seeds {seeds}; NLL and coverage of "
             "mean ± 2σ (nominal 0.954) of `return_std`. *variance scale* = "
             "`fit_variance_scale` on the validation rows.", "",
             "| data | members | rule | RMSE | NLL | coverage ±2σ |", "|---|---|---|---|---|---|"]

    def cell(v):
        v = np.asarray(v, dtype=float)
        return "n/a" if np.all(np.isnan(v)) else f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"

    for key in dict.fromkeys((r["task"], r["gaussian"], r["method"]) for r in records):
        rows = [r for r in records if (r["task"], r["gaussian"], r["method"]) == key]
        kind = "mean-variance (Gaussian NLL)" if key[1] else "squared error"
        lines.append(f"| {key[0]} | {kind} | {key[2]} | {cell([r['rmse'] for r in rows])} | "
                     f"{cell([r['nll'] for r in rows])} | {cell([r['coverage'] for r in rows])} |")
    return "\n".join(lines)


def _suite(records, method):
    cells, _, s = summary(records)
    v = [s[(*c, method)] for c in cells]
    return (np.mean([x["nll_ratio"] for x in v]), max(x["nll_ratio"] for x in v),
            100 * min(x["d_acc"] for x in v), sum(map(_fails, v)), len(cells))


def _against_calibrated(records, method):
    """(cells failing, mean, worst NLL ratio, worst Δacc in points) against the single net + T."""
    cells = list(dict.fromkeys((r["task"], r["epochs"]) for r in records))
    ratios, daccs = [], []
    for task, epochs in cells:
        ref = {k: _mean(records, task, epochs, "single net + T", k) for k in METRICS}
        m = {k: _mean(records, task, epochs, method, k) for k in METRICS}
        ratios.append(m["nll"] / ref["nll"])
        daccs.append(m["accuracy"] - ref["accuracy"])
    fails = sum(_fails({"nll_ratio": r, "d_acc": d}) for r, d in zip(ratios, daccs))
    return fails, float(np.mean(ratios)), max(ratios), 100 * min(daccs), len(cells)


def decision(records):
    """The paragraph that says which rule is the default and why, from the records."""
    auto_text = ""
    if any(r["method"] == AUTO for r in records):
        raw, cal = _suite(records, AUTO), _against_calibrated(records, AUTO)
        auto_text = (
            f" **Training plan: {AUTO}** — the same rule on the snapshots of "
            "`n_snapshots=\"auto\"` (the single net's cosine until the validation loss levels "
            f"off, then restart cycles): {raw[3]} of {raw[4]} cells fail against the raw single "
            f"net (mean ratio {raw[0]:.3f}, worst {raw[1]:.3f}, worst Δacc {raw[2]:+.2f}) and "
            f"{cal[0]} of {cal[4]} against the single net with its temperature (mean ratio "
            f"{cal[1]:.3f}, worst {cal[2]:.3f}, worst Δacc {cal[3]:+.2f} points): on these small "
            "tasks it mostly stays the single net.")
    new, old = _suite(records, DEFAULT), _suite(records, OLD_DEFAULT)
    div, single_t = _suite(records, "diverse / shrink + T"), _suite(records, "single net + T")
    return (
        f"Default: **{DEFAULT}** — every snapshot, weights fitted on the validation rows "
        "under a Dirichlet prior worth 10 rows centred on equal weights for the last two "
        "snapshots (`weighting=\"shrink\"`), then one temperature fitted on the validation "
        "rows to the combined probabilities under a Gaussian prior on log T "
        "(`calibration=\"temperature\"`). It is the only rule measured that passes the bar in "
        f"every cell: {new[3]} of {new[4]} cells fail (mean NLL ratio {new[0]:.3f}, worst "
        f"{new[1]:.3f}, worst Δacc {new[2]:+.2f} points), against {old[3]} failing for the old "
        f"default all / optimize (mean {old[0]:.3f}, worst {old[1]:.3f}, worst Δacc "
        f"{old[2]:+.2f}). `selection=\"diverse\"` with the same weighting and temperature "
        f"fails {div[3]} cells (mean {div[0]:.3f}, worst {div[1]:.3f}, worst Δacc "
        f"{div[2]:+.2f}): on 9–90 validation rows the subset it picks is chosen by noise and "
        "drops snapshots that help on the test rows (accuracy −2 points on MNIST-1D), so it is "
        "not the default. Temperature scaling without its prior is ruinous on the tiny tasks "
        "(a few validation rows, all classified correctly, drive T towards 0). Part of the "
        f"gain is calibration alone: the single net with the same temperature scaling has "
        f"mean ratio {single_t[0]:.3f}; the ensemble's own share is the rest." + auto_text
        + smoothed_text(records))


def smoothed_text(records):
    """What fitting the temperature to labels smoothed by the rule of succession did."""
    if not any(r["method"] == SMOOTHED for r in records):
        return ""
    rule, single = _suite(records, SMOOTHED), _suite(records, "single net + T of smoothed labels")
    cells, _, s = summary(records)
    worse = [f"{task} at {epochs} epochs"
             for task, epochs in cells if s[(task, epochs, SMOOTHED)]["nll_ratio"]
             > s[(task, epochs, DEFAULT)]["nll_ratio"] * 1.01]
    return (f" **Not the default: {SMOOTHED}** — {rule[3]} of {rule[4]} cells fail (mean "
            f"ratio {rule[0]:.3f}, worst {rule[1]:.3f}; the single net with it: mean "
            f"{single[0]:.3f}, worst {single[1]:.3f}); more than 1 % above the default in "
            f"{len(worse)} cells ({', '.join(worse) or 'none'}): on 9-11 validation rows that an "
            "accurate, confident net gets right, the smoothed labels soften it where its test "
            "mistakes are not confident.")


def write_results(wall):
    """Redraw ``small_data.md`` from the raw JSON files that exist."""
    parts = ["# Small data: combination rules against one net\n",
             "`python -m benchmarks.small_data` (tables redrawn from the raw JSON with "
             "`--redraw`). " + wall + "\n"]
    small, qual = RESULTS / "small_data_raw.json", RESULTS / "small_data_quality_raw.json"
    if small.exists():
        records = json.loads(small.read_text())
        main = [r for r in records if r["method"] not in SENSITIVITY_RULES]
        grid = [r for r in records if r["method"] in SENSITIVITY_RULES
                or r["method"] == "single net"]
        parts += ["## Decision\n", decision(main) + "\n",
                  "## The small-data suite\n", tables(main) + "\n"]
        if len(grid) > len(main) // len(RULES):
            parts += ["### Sensitivity of the default to its two prior strengths\n",
                      tables(grid).split("### Per task")[0].split("cells)\n")[1]]
    if qual.exists():
        parts += ["## The quality benchmark's tasks (40 epochs, MLP 512-512)\n",
                  quality_table(json.loads(qual.read_text())) + "\n"]
    reg = RESULTS / "small_data_regression_raw.json"
    if reg.exists():
        parts += ["## Regression: benchmarks/regression.py's tasks\n",
                  "`weighting=\"shrink\"` does not carry over: on diabetes (31 validation rows, "
                  "squared error) it costs ~10 % RMSE against `optimize`, since there the early, "
                  "less over-fitted snapshots are the good ones; the regressor keeps "
                  "`optimize`. The variance scale (`fit_variance_scale`) brings the coverage "
                  "of mean ± 2σ near its nominal 0.954 where it was far off.\n",
                  regression_table(json.loads(reg.read_text())) + "\n"]
    (RESULTS / "small_data.md").write_text("\n".join(parts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 tasks, 5 epochs, one seed, no files")
    parser.add_argument("--part", choices=["small", "quality", "regression", "all"],
                        default="all")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--quality-seeds", type=int, default=3)
    parser.add_argument("--cache", default=None, help="directory keeping the fits' arrays")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for the fits")
    parser.add_argument("--tasks", nargs="*", default=list(SMALL_TASKS))
    parser.add_argument("--redraw", action="store_true", help="only redraw the tables")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.quick:
        print(tables(run(["iris", "moons-400"], (5,), (0,))))
        return
    if args.redraw:
        write_results("")
        return
    start = time.perf_counter()
    RESULTS.mkdir(exist_ok=True)
    if args.part in ("small", "all"):
        records = run(args.tasks, BUDGETS, range(args.seeds), cache=args.cache,
                      rules={**RULES, **SENSITIVITY_RULES}, jobs=args.jobs)
        (RESULTS / "small_data_raw.json").write_text(json.dumps(records))
        print(tables([r for r in records if r["method"] not in SENSITIVITY_RULES]))
    if args.part in ("quality", "all"):
        tasks = [("quality", data, lr) for data, model, lr in QUALITY_CONFIGS if model == "mlp"]
        records = run(tasks, (40,), range(args.quality_seeds), rules=QUALITY_RULES,
                      cache=args.cache)
        (RESULTS / "small_data_quality_raw.json").write_text(json.dumps(records))
        print(quality_table(records))
    if args.part in ("regression", "all"):
        records = run_regression(range(args.quality_seeds))
        (RESULTS / "small_data_regression_raw.json").write_text(json.dumps(records))
        print(regression_table(records))
    write_results(f"Last run: `--part {args.part}`, {time.perf_counter() - start:.0f} s wall, "
                  "1 torch thread.")


if __name__ == "__main__":
    main()
