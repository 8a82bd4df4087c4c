"""Independent runs (``n_runs``): K snapshot runs against a K-net deep ensemble and one net.

On the quality benchmark's tasks (same data, splits, nets and peak learning
rates as ``benchmarks/quality.py``), with a budget of ``E`` epochs for one net:

- ``single net``: one cosine cycle of E epochs (cost 1);
- ``deep ensemble, k nets``: k independently trained single nets, averaged
  (cost k); the first k of 5 nets;
- ``K runs x M snapshots, equal budget``: ``n_runs=K``, each run E/K epochs
  through M cycles (cost 1);
- ``K runs x M snapshots, K x budget``: ``n_runs=K``, each run E epochs
  (cost K), to set against the deep ensemble of K nets.

Snapshot runs are fitted without validation rows and their members chosen on
the 10 % validation rows with ``select``: the package's default (all
snapshots, shrunk weights, temperature) and the plain average (all, uniform,
no calibration; directly comparable with the deep ensemble's plain average).
Scores on the test rows: log-loss (NLL) and accuracy, mean over seeds.

    python -m benchmarks.runs           # results in benchmarks/results/runs.md
    python -m benchmarks.runs --quick   # a smoke run, written to a temp dir
"""

import json
import time
import warnings

import numpy as np

from sksnapshot import SnapshotEnsembleClassifier

from ._common import arg_parser, quiet_process, results_dir, run_tasks
from ._data import make_net, scores, split

TASKS = [("digits", "mlp", 0.05), ("mnist1d", "cnn", 0.1)]
KS = [1, 2, 3, 5]
N_DEEP = 5


def _fit_single(data, model, lr, epochs, seed, member, max_train):
    X_fit, y_fit, _, _, X_test, y_test = split(data, seed, max_train)
    clf = SnapshotEnsembleClassifier(
        make_net(model, epochs, lr), n_snapshots=1, validation_fraction=0.0,
        weighting="uniform", calibration=None, random_state=seed + 1000 * member)
    start = time.perf_counter()
    clf.fit(X_fit, y_fit)
    return {"proba": clf.predict_proba(X_test), "seconds": time.perf_counter() - start}


def _fit_runs(data, model, lr, epochs, seed, n_runs, n_snapshots, max_train):
    X_fit, y_fit, X_val, y_val, X_test, y_test = split(data, seed, max_train)
    clf = SnapshotEnsembleClassifier(
        make_net(model, epochs, lr), n_snapshots=n_snapshots, n_runs=n_runs,
        validation_fraction=0.0, weighting="uniform", calibration=None, random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X_fit, y_fit)
    seconds = time.perf_counter() - start
    out = {"seconds": seconds, "plain": scores(y_test, clf.predict_proba(X_test))}
    clf.set_params(weighting="auto", calibration="auto").select(X_val, y_val)
    out["default"] = scores(y_test, clf.predict_proba(X_test))
    return out


def run(tasks=TASKS, ks=KS, epochs=40, n_snapshots=3, seeds=(0, 1, 2), jobs=2,
        max_train=None):
    """Fit everything; return ``{task: {row label: [scores per seed]}}`` and the costs."""
    work = []
    for data, model, lr in tasks:
        for seed in seeds:
            common = (data, model, lr)
            for member in range(N_DEEP):
                work.append(((*common, seed, "single", member), _fit_single,
                             (*common, epochs, seed, member, max_train)))
            for k in ks:
                if epochs // k >= n_snapshots:
                    work.append(((*common, seed, "equal", k), _fit_runs,
                                 (*common, epochs // k, seed, k, n_snapshots, max_train)))
                if k > 1:
                    work.append(((*common, seed, "times", k), _fit_runs,
                                 (*common, epochs, seed, k, n_snapshots, max_train)))
    work.sort(key=lambda t: t[0][0] != "mnist1d")  # the long ones first
    if jobs <= 1:
        quiet_process(1)
    results = dict(run_tasks(work, jobs, 1, "runs"))

    table = {}
    for data, model, lr in tasks:
        _, _, _, _, _, y_test = split(data, seeds[0], max_train)
        rows = table[f"{data} {model}"] = {}

        def add(label, cost, record, rows=rows):
            rows.setdefault(label, {"cost": cost, "records": []})["records"].append(record)

        for seed in seeds:
            singles = [results[(data, model, lr, seed, "single", m)] for m in range(N_DEEP)]
            add("single net", 1, {**scores(y_test, singles[0]["proba"]),
                                  "seconds": singles[0]["seconds"]})
            for k in sorted(set(ks) | {N_DEEP}):
                if k > 1:
                    proba = np.mean([s["proba"] for s in singles[:k]], axis=0)
                    add(f"deep ensemble, {k} nets", k, {
                        **scores(y_test, proba),
                        "seconds": sum(s["seconds"] for s in singles[:k])})
            for kind, cost_of in (("equal", lambda k: 1), ("times", lambda k: k)):
                for k in ks:
                    key = (data, model, lr, seed, kind, k)
                    if key not in results:
                        continue
                    rec = results[key]
                    epochs_each = epochs // k if kind == "equal" else epochs
                    for variant in ("default", "plain"):
                        label = (f"{k} run{'s' if k > 1 else ''} x {n_snapshots} snapshots "
                                 f"({epochs_each} ep. each), {variant}")
                        add(label, cost_of(k), {**rec[variant], "seconds": rec["seconds"]})
    return table


def _mean(records, key):
    return float(np.mean([r[key] for r in records]))


def markdown(table, epochs, n_snapshots, seeds, jobs, seconds):
    lines = [
        "# Independent runs: K snapshot runs vs a K-net deep ensemble",
        "",
        f"`python -m benchmarks.runs` (sksnapshot `n_runs`). Budget of one net: {epochs} "
        f"epochs; {n_snapshots} snapshots per run; seeds {list(seeds)}; test-set log-loss "
        "(NLL) and accuracy, mean over seeds; cost in units of one net's training. "
        "'default': all snapshots, shrunk weights and temperature chosen on the 10 % "
        "validation rows; 'plain': the uniform average of all snapshots, like the deep "
        "ensemble's. Data, nets and peak learning rates as in `benchmarks/quality.py` "
        f"({epochs} epochs; {jobs} worker processes of 1 torch thread, seconds measured "
        f"while both ran; whole run {seconds / 60:.1f} min).",
        "",
    ]
    for task, rows in table.items():
        lines += [f"## {task}", "", "| method | cost | NLL | accuracy | seconds |",
                  "|---|---|---|---|---|"]
        for label, row in sorted(rows.items(), key=lambda kv: (kv[1]["cost"], kv[0])):
            recs = row["records"]
            lines.append(f"| {label} | {row['cost']} | {_mean(recs, 'nll'):.3f} | "
                         f"{_mean(recs, 'accuracy'):.3f} | {_mean(recs, 'seconds'):.1f} |")
        lines.append("")
    lines += ["## Does K=2 beat the 5-net deep ensemble at 2/5 of its cost?", ""]
    for task, rows in table.items():
        deep = _mean(rows[f"deep ensemble, {N_DEEP} nets"]["records"], "nll")
        for label, row in rows.items():
            if label.startswith("2 runs") and row["cost"] == 2:
                nll = _mean(row["records"], "nll")
                verdict = "yes" if nll < deep else "no"
                lines.append(f"- {task}, {label}: NLL {nll:.3f} vs {deep:.3f} -> **{verdict}**")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = arg_parser(__doc__, "tiny smoke run, to a temp dir")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        settings = dict(tasks=[("digits", "mlp", 0.05)], ks=[1, 2], epochs=4, n_snapshots=2,
                        seeds=(0,), jobs=1, max_train=300)
    else:
        settings = dict(jobs=args.jobs)
    out = results_dir(args.out, args.quick, "runs")
    start = time.perf_counter()
    table = run(**settings)
    seconds = time.perf_counter() - start
    full = {"tasks": TASKS, "ks": KS, "epochs": 40, "n_snapshots": 3, "seeds": (0, 1, 2),
            "jobs": args.jobs}
    full.update(settings)
    text = markdown(table, full["epochs"], full["n_snapshots"], full["seeds"], full["jobs"],
                    seconds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.md").write_text(text)
    (out / "runs_raw.json").write_text(json.dumps(table, indent=1))
    print(text)
    return table


if __name__ == "__main__":
    main()
