"""Distillation: one student net against the single net and the snapshot ensemble it learnt from.

On the quality tasks (``benchmarks/quality.py``: MNIST-1D with an MLP 512-512
and a 1-D CNN, digits, the 5k MNIST sample, the noisy synthetic task) and the
digits images (1x8x8) with a small BatchNorm CNN, per seed, on the same 90 %
of the training rows:

- single net: one cosine cycle (``n_snapshots=1``), its temperature fitted on
  the other 10 % (``select``): the calibrated single net;
- ensemble: the sksnapshot default (5 snapshots, members, weights and
  temperature chosen on the 10 %);
- students: ``ensemble.distill(X_fit, X_valid=X_val, y_valid=y_val)``, one
  from scratch and one from the heaviest snapshot (``init``); early stopping
  and the student's temperature on the 10 %.

Test accuracy, log-loss (NLL), calibrated log-loss (CLL: a temperature fitted
by test-time cross-validation, Ashukha et al. 2020), fit time (a student's
includes the ensemble it learnt from) and the time of ``predict_proba`` on the
test rows. "Gain kept" is ``(NLL single - NLL student) / (NLL single - NLL
ensemble)``.

    python -m benchmarks.distill --jobs 1          # 3 seeds, 40 epochs; results/distill.md
    python -m benchmarks.distill --quick           # a smoke run (< 1 min), to a temp dir
    python -m benchmarks.distill --redraw          # the tables again from distill_raw.json
"""

import argparse
import functools
import json
import pathlib
import time

import numpy as np

from sksnapshot import SnapshotEnsembleClassifier

from ._common import (
    RESULTS,
    fit_val_test_split,
    mean_std,
    nanmedian,
    results_dir,
    run_note,
    run_tasks,
    write_markdown,
)
from ._data import (
    IMAGE_LOADERS,
    LOADERS,
    QUALITY_CONFIGS,
    calibrated_log_loss_cv,
    make_net,
    scores,
)

SINGLE = "single net + temperature"
ENSEMBLE = "ensemble (5 equal cycles)"
SCRATCH = "student, init='scratch'"
SNAPSHOT = "student, init='snapshot'"
METHODS = [SINGLE, ENSEMBLE, SCRATCH, SNAPSHOT]
STUDENTS = {SCRATCH: "scratch", SNAPSHOT: "snapshot"}
# (data set, model, peak lr): the quality tasks, then the digits images.
CONFIGS = [*QUALITY_CONFIGS, ("digits-8x8", "cnn2d", 0.1)]
THREADS = 1
TITLE = "Distillation: one student net vs the single net and the ensemble"


def _split(data, seed, max_train):
    return fit_val_test_split({**LOADERS, **IMAGE_LOADERS}[data], seed, max_train)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _predict_seconds(estimator, X, repeats=5):
    """Median wall time of ``predict_proba`` on ``X``."""
    return float(np.median([_timed(lambda: estimator.predict_proba(X))[1]
                            for _ in range(repeats)]))


@functools.cache
def _warm_up():
    """One tiny fit before the first timed one of a process: lazy imports are not training."""
    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    SnapshotEnsembleClassifier(make_net("mlp", 1, 0.1), n_snapshots=1,
                               validation_fraction=0.0).fit(X, np.arange(40) % 2)


def _record(estimator, X_test, y_test, fit_seconds, **extra):
    proba = estimator.predict_proba(X_test)
    s = scores(y_test, proba)
    return {"accuracy": s["accuracy"], "nll": s["nll"],
            "cll": calibrated_log_loss_cv(proba, y_test)[0], "fit_seconds": fit_seconds,
            "predict_seconds": _predict_seconds(estimator, X_test), **extra}


def task(data, model, lr, epochs, seed, max_train):
    """Every method of one (task, seed): the single net, the ensemble, two students."""
    X_fit, y_fit, X_val, y_val, X_test, y_test = _split(data, seed, max_train)
    _warm_up()
    out = {}
    for label, n_snapshots in ((SINGLE, 1), (ENSEMBLE, 5)):
        est = SnapshotEnsembleClassifier(make_net(model, epochs, lr), n_snapshots=n_snapshots,
                                         validation_fraction=0.0, random_state=seed)
        _, seconds = _timed(lambda est=est: est.fit(X_fit, y_fit).select(X_val, y_val))
        out[label] = _record(est, X_test, y_test, seconds, members=len(est.members_))
    ensemble = est
    for label, init in STUDENTS.items():
        student, seconds = _timed(lambda init=init: ensemble.distill(
            X_fit, X_valid=X_val, y_valid=y_val, init=init, random_state=seed))
        out[label] = _record(student, X_test, y_test, out[ENSEMBLE]["fit_seconds"] + seconds,
                             members=1, distill_seconds=seconds,
                             epochs=len(student.net_.history),
                             best_epoch=student.snapshot_epochs_[0])
    return out


def run(configs=CONFIGS, epochs=40, seeds=(0, 1, 2), jobs=1, max_train=None, partial=None,
        fit=True):
    """``{(data, model, lr): {method: [record per seed]}}``.

    With ``partial`` (a path), every finished task is appended to that JSON
    file as it ends, and tasks already in it are not run again: a crash or
    Ctrl-C loses nothing. ``fit=False`` runs nothing: the tasks of the file
    only, configs with every seed done.
    """
    done = {}
    if partial is not None and partial.exists():
        done = {tuple(key): value for key, value in json.loads(partial.read_text())}
    tasks = [((data, model, lr, seed), task, (data, model, lr, epochs, seed, max_train))
             for data, model, lr in configs for seed in seeds
             if (data, model, lr, seed) not in done]
    results = dict(done)
    if not fit:
        configs = [c for c in configs if all((*c, seed) in done for seed in seeds)]
        tasks = []
    for key, value in run_tasks(tasks, jobs, THREADS, "distill"):
        results[key] = value
        if partial is not None:
            partial.write_text(json.dumps([[list(k), v] for k, v in results.items()]))
    return {(data, model, lr): {m: [results[(data, model, lr, s)][m] for s in seeds]
                                for m in METHODS}
            for data, model, lr in configs}


def _gain_kept(single, ensemble, student):
    """The share of the ensemble's NLL gain over the single net the student keeps (NaN: no gain)."""
    gain = single - ensemble
    return (single - student) / gain if gain > 0 else float("nan")


def load_raw(path):
    """The rows of a finished run's ``distill_raw.json``, and its seeds."""
    rows = {}
    raw = json.loads(path.read_text())
    for r in raw:
        methods = rows.setdefault((r["data"], r["model"], r["lr"]), {m: [] for m in METHODS})
        methods[r["method"]].append(r)
    return rows, sorted({r["seed"] for r in raw})


def summary(rows):
    """Per task and student: does it beat the calibrated single net, and keep half the gain?"""
    lines = ["| data | model | student | NLL single | NLL ensemble | NLL student | gain kept "
             "| beats single | keeps half | predict time student / ensemble |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    wins = {label: 0 for label in STUDENTS}
    for (data, model, _), methods in rows.items():
        nll = {m: float(np.mean([r["nll"] for r in methods[m]])) for m in METHODS}
        ens_time = nanmedian([r["predict_seconds"] for r in methods[ENSEMBLE]])
        for label in STUDENTS:
            kept = _gain_kept(nll[SINGLE], nll[ENSEMBLE], nll[label])
            beats = nll[label] < nll[SINGLE]
            wins[label] += beats and kept >= 0.5
            ratio = nanmedian([r["predict_seconds"] for r in methods[label]]) / ens_time
            no_gain = np.isnan(kept)  # the ensemble did not beat the calibrated single net
            lines.append(f"| {data} | {model} | {STUDENTS[label]} | {nll[SINGLE]:.3f} | "
                         f"{nll[ENSEMBLE]:.3f} | {nll[label]:.3f} | "
                         f"{'no gain' if no_gain else f'{kept:.2f}'} | "
                         f"{'yes' if beats else 'no'} | "
                         f"{'n/a' if no_gain else 'yes' if kept >= 0.5 else 'no'} | "
                         f"{ratio:.2f} |")
    lines += ["", "Tasks where the student beats the calibrated single net and keeps at least "
              "half of the ensemble's gain (mean test NLL over seeds): "
              + ", ".join(f"{STUDENTS[k]}: {v} of {len(rows)}" for k, v in wins.items()) + "."]
    return lines


def table(rows, epochs, seeds, jobs):
    lines = [
        f"Test scores, mean ± std over seeds {list(seeds)}. Every net: {epochs} epochs "
        "(students: at most, with early stopping, patience 5), batches of 128, SGD (Nesterov "
        "momentum 0.9), the task's peak lr, the same 90 % of the training rows; the other 10 % "
        "fit the temperatures and the ensemble's weights and stop the students. Fit time: "
        "median wall seconds (students: the ensemble's fit plus the distillation); predict "
        "time: median of 5 `predict_proba` calls on the test rows. MLP = MLPModule 512-512, "
        "cnn = the 1-D CNN of `quality.py`, cnn2d = SmallCNN (BatchNorm) on 1x8x8 images; "
        f"torch.set_num_threads({THREADS}) in each of {jobs} process(es).",
        "",
        "| data | model | method | accuracy | NLL | CLL | fit time (s) | predict time (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (data, model, _), methods in rows.items():
        for method, records in methods.items():
            col = {k: [r[k] for r in records] for k in records[0]}
            lines.append(
                f"| {data} | {model} | {method} | {mean_std(col['accuracy'])} | "
                f"{mean_std(col['nll'])} | {mean_std(col['cll'])} | "
                f"{nanmedian(col['fit_seconds']):.1f} | "
                f"{1000 * nanmedian(col['predict_seconds']):.1f} |")
    lines += ["", "## Does the student keep the ensemble's gain at one net's cost?", ""]
    lines += summary(rows)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (< 1 min)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--partial", action="store_true",
                        help="tables of the tasks an unfinished run saved; fit nothing")
    parser.add_argument("--redraw", action="store_true",
                        help="rebuild distill.md from distill_raw.json; fit nothing")
    args = parser.parse_args(argv)
    if args.redraw:
        out = args.out or RESULTS
        rows, seeds = load_raw(out / "distill_raw.json")
        page = (out / "distill.md").read_text()
        note = page.splitlines()[2]  # the line saying how the run was made
        write_markdown(out / "distill.md", TITLE, note, table(rows, args.epochs, seeds, args.jobs))
        return rows
    configs, seeds, epochs, max_train = CONFIGS, tuple(range(args.seeds)), args.epochs, None
    if args.quick:
        configs, seeds, epochs, max_train = [CONFIGS[2], CONFIGS[5]], (0,), 3, 300
    start = time.perf_counter()
    out = results_dir(args.out, args.quick, "distill")
    partial = out / f"distill_partial_{epochs}_{len(seeds)}.json"
    rows = run(configs, epochs, seeds, args.jobs, max_train, partial, fit=not args.partial)
    text = table(rows, epochs, seeds, args.jobs)
    print(text)
    command = "python -m benchmarks.distill" + (" --quick" if args.quick else "") + \
        f" --jobs {args.jobs}"
    write_markdown(out / "distill.md", TITLE, run_note(command, time.perf_counter() - start),
                   text)
    raw = [{"data": d, "model": m, "lr": lr, "method": method, "seed": s, **r}
           for (d, m, lr), methods in rows.items() for method, records in methods.items()
           for s, r in zip(seeds, records)]
    (out / "distill_raw.json").write_text(json.dumps(raw, indent=1))
    if not args.partial:
        partial.unlink()
    return rows


if __name__ == "__main__":
    main()
