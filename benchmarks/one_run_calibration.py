"""One run's temperature from a handful of validation rows: its prior and label smoothing.

At one net's cost the temperature is fitted on the default's 10 % validation split:
4-30 rows on the tasks of ``benchmarks/worth.py``. Here the default
``SnapshotEnsembleClassifier(net)`` is fitted once per task, seed and training set-up,
and its combined validation and test probabilities are calibrated again by
``fit_temperature(prior_strength=s, smoothing=a / (n + 2 a))`` for a grid of prior
strengths ``s`` and pseudo-counts ``a`` (``a = 0``: the labels as they are, the
default; ``a = 1``: ``smoothing="auto"``, Laplace's rule of succession, the classifier's
``calibration="smoothed_temperature"``), and
without a temperature. Set-ups: worth's budget on its six tasks; 300 epochs on the four
under 100 rows and 1,500 on ArrowHead (over-trained nets: over-confident); all again with the net's
cross-entropy smoothed by 0.1 (``criterion__label_smoothing``: under-confident nets).
10 seeds; own test log-loss against the default (prior 10, ``a = 0``),
paired 95 % t intervals over seeds; "calibrated": a temperature fitted by test-time
cross-validation (``_data.calibrated_log_loss_cv``), what the best temperature reaches.

    python -m benchmarks.one_run_calibration --jobs 2   # results/one_run_calibration.md
    python -m benchmarks.one_run_calibration --redraw   # the tables from the raw JSON
    python -m benchmarks.one_run_calibration --quick    # a smoke run, to a temp dir
"""

import json
import time

import numpy as np
from sklearn.utils import check_random_state

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot._kernel import log_proba, normalise
from sksnapshot._split import validation_split
from sksnapshot.calibration import apply_temperature, fit_temperature

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
    own_log_loss,
    worth_data,
    worth_net,
)

QUICK_TASK = WORTH_QUICK_TASK
SEEDS = tuple(range(10))
# Over-trained set-ups: 300 epochs on the sets under 100 rows; 1,500 on ArrowHead, the
# budget at which the issue that asked for this saw the default's gap grow to 50 %.
LONG_BUDGETS = {300: tuple(task for task, spec in WORTH_TASKS.items() if spec[3] < 100),
                1500: ("arrowhead-36",)}
LABEL_SMOOTHING = 0.1
STRENGTHS = (2.0, 5.0, 10.0, 20.0)
PSEUDO_COUNTS = (0.0, 0.5, 1.0, 2.0, 4.0)
DEFAULT, SMOOTHED = (10.0, 0.0), (10.0, 1.0)  # (prior strength, pseudo-count)


def fit_once(task, seed, epochs, label_smoothing):
    """The default fitted once; its mixture calibrated by every rule of the grid."""
    X, y, X_test, y_test = worth_data(task)
    net = worth_net(task, epochs)
    if label_smoothing:
        net.set_params(criterion__label_smoothing=label_smoothing)
    clf = SnapshotEnsembleClassifier(net, random_state=seed).fit(X, y)
    # The validation rows fit drew: the split comes first from random_state.
    _, valid = validation_split(y, clf.validation_fraction, check_random_state(seed))

    def log_mixture(rows):  # what fit calibrates: the members' mixture, floored, its log
        return log_proba(normalise(clf._weighted_outputs(rows)))

    log_val, log_test, y_val = log_mixture(X[valid]), log_mixture(X_test), y[valid]
    n = len(y_val)
    grid = {}
    for s in STRENGTHS:
        for a in PSEUDO_COUNTS:
            t = fit_temperature(log_val, y_val, prior_strength=s, smoothing=a / (n + 2 * a))
            grid[_rule_key((s, a))] = (own_log_loss(apply_temperature(log_test, t), y_test), t)
    assert np.isclose(clf.temperature_, grid[_rule_key(DEFAULT)][1], rtol=1e-3), \
        "the grid's default rule is not what fit does"
    floored = apply_temperature(log_test, 1.0)
    calibrated, t_test = calibrated_log_loss_cv(floored, y_test)
    return {"n_valid": n, "grid": grid, "no T": own_log_loss(floored, y_test),
            "calibrated": calibrated,
            "T test": t_test, "accuracy": float(np.mean(log_test.argmax(1) == y_test))}


def setups(tasks, epochs=None):
    """``(task, epochs, label smoothing)`` of every cell."""
    cells = []
    for smoothing in (0.0, LABEL_SMOOTHING):
        for task in tasks:
            cells.append((task, epochs or WORTH_TASKS[task][4], smoothing))
            if epochs is None:
                cells += [(task, long, smoothing) for long, tasks_of in LONG_BUDGETS.items()
                          if task in tasks_of]
    return cells


def _key(task, seed, epochs, smoothing):
    return f"{task}|{seed}|{epochs}|{smoothing:g}"


def run(cells, seeds, jobs, raw_path):
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    work = [(_key(t, seed, e, s), fit_once, (t, seed, e, s)) for seed in seeds
            for t, e, s in cells if _key(t, seed, e, s) not in raw]
    if jobs <= 1:
        quiet_process(1)
    for key, result in run_tasks(work, jobs, 1, "one_run_calibration"):
        raw[key] = result
        raw_path.write_text(json.dumps(raw))
    return raw


def _rule_key(rule):
    """A grid rule ``(prior strength, pseudo-count)``'s key in the raw records."""
    return f"{rule[0]:g}|{rule[1]:g}"


def _own_of(record, rule):
    """Own log-loss of a record under ``rule``: ``(strength, pseudo-count)`` or "no T"."""
    return record["no T"] if rule == "no T" else record["grid"][_rule_key(rule)][0]


def _diff(records, rule, reference=DEFAULT):
    """Mean paired difference of own log-loss, rule - reference, and its 95 % half-width."""
    return paired_interval([_own_of(r, rule) - _own_of(r, reference) for r in records])


def tables(raw, cells, seeds):
    lines = ["## Per set-up: the default and `calibration=\"smoothed_temperature\"` (prior 10)",
             "",
             "| task | epochs | net's label smoothing | validation rows | calibrated | "
             "T (test-fitted, median) | default: own / calibrated, T | smoothed: own / "
             "calibrated, T | smoothed - default [95 %] | no T - default [95 %] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by_cell = {}
    for task, epochs, smoothing in cells:
        records = [raw[k] for k in (_key(task, s, epochs, smoothing) for s in seeds) if k in raw]
        if len(records) < 2:
            continue
        by_cell[task, epochs, smoothing] = records
        cal = np.mean([r["calibrated"] for r in records])

        def gap(rule, records=records, cal=cal):
            own = np.mean([_own_of(r, rule) for r in records])
            t = np.median([r["grid"][_rule_key(rule)][1] for r in records])
            return f"{own:.4f} / {cal:.4f} = {own / cal:.3f}, T {t:.2f}"

        lines.append(
            f"| {task} | {epochs} | {smoothing:g} | {records[0]['n_valid']} | {cal:.4f} | "
            f"{np.median([r['T test'] for r in records]):.2f} | {gap(DEFAULT)} | "
            f"{gap(SMOOTHED)} | {interval_cell(*_diff(records, SMOOTHED))} | "
            f"{interval_cell(*_diff(records, 'no T'))} |")
    lines += ["", "## The grid: own log-loss against the default (prior 10, a = 0), over "
              "the set-ups", "",
              "Mean relative change over set-ups; lower / higher: set-ups whose paired 95 % "
              "interval is below / above 0; worst: the largest relative change.", "",
              "| prior strength | pseudo-count a | plain nets: mean | lower | higher | worst "
              "| label-smoothed nets: mean | lower | higher | worst |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in STRENGTHS:
        for a in PSEUDO_COUNTS:
            cells_of = []
            for smoothed in (False, True):
                rel, lower, higher = [], 0, 0
                for (_, _, smoothing), records in by_cell.items():
                    if bool(smoothing) != smoothed:
                        continue
                    mean, half = _diff(records, (s, a))
                    base = np.mean([_own_of(r, DEFAULT) for r in records])
                    rel.append(mean / base)
                    lower += mean + half < 0
                    higher += mean - half > 0
                cells_of.append(f"{100 * np.mean(rel):+.1f} % | {lower} | {higher} | "
                                f"{100 * max(rel):+.1f} %" if rel else "n/a | | |")
            mark = (" (smoothed_temperature)" if (s, a) == SMOOTHED
                    else " (default)" if (s, a) == DEFAULT else "")
            lines.append(f"| {s:g} | {a:g}{mark} | " + " | ".join(cells_of) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = arg_parser(__doc__, "tiny smoke run (one task, two seeds, 4 epochs), to a temp dir")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--redraw", action="store_true",
                        help="only rebuild the tables from one_run_calibration_raw.json")
    args = parser.parse_args(argv)
    out = results_dir(args.out, args.quick, "one_run_calibration")
    cells, seeds = setups(WORTH_TASKS), SEEDS
    if args.quick:
        cells, seeds = setups([QUICK_TASK], epochs=4), (0, 1)
    raw_path = out / "one_run_calibration_raw.json"
    start = time.perf_counter()
    if args.redraw:
        raw = json.loads(raw_path.read_text())
    else:
        raw = run(cells, seeds, 1 if args.quick else args.jobs, raw_path)
        raw["note"] = run_note("python -m benchmarks.one_run_calibration --jobs 2",
                               time.perf_counter() - start)
        raw_path.write_text(json.dumps(raw))
    text = (f"# One run's temperature from a handful of validation rows\n\n{raw['note']}\n\n"
            + __doc__.split("\n\n")[1].replace("\n", " ") + "\n\n" + tables(raw, cells, seeds))
    (out / "one_run_calibration.md").write_text(text)
    print(text)
    return raw


if __name__ == "__main__":
    main()
