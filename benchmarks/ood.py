"""Out-of-distribution detection, selective accuracy and calibrated log-loss of the ensembles.

For four training tasks (scikit-learn's digits; digits with classes 6-9 held
out of training; MNIST-1D generated locally; a synthetic tabular task), each
method is trained on 90 % of the training rows with the same net (MLP
512-512), epochs and peak learning rate:

- a single net (one cosine cycle);
- the snapshot ensemble (5 cosine cycles, the package default: all snapshots,
  shrunk weights fitted on the other 10 %, the validation rows);
- a deep ensemble of 5 independently trained single nets (5x the cost).

Every uncertainty score is then used to tell in-distribution test rows
(label 0) from out-of-distribution rows (label 1); the table gives the AUROC.
OOD sets: digits with their 64 pixels permuted (digits are scaled to [0, 1]
by their pixel range, not standardised, so that permuted images stay in the
training range); the held-out classes 6-9; MNIST-1D time-reversed (the same
values in another order), with a constant offset of +1.5 (raw units, ~1.5
standard deviations) and scaled by 2; tabular test rows scaled by 5 (far
outside the training range). Also: test accuracy when the 10 % most uncertain
in-distribution rows are rejected, and the calibrated log-loss (after
temperature scaling) with the deep-ensemble equivalent of the snapshot
ensemble (Ashukha et al., 2020), both with the temperature fitted on the
validation rows and by test-time cross-validation (their protocol).

    python -m benchmarks.ood           # 3 seeds, results in benchmarks/results/ood.md
    python -m benchmarks.ood --quick   # a smoke run (seconds), written to a temp dir
"""

import functools
import json
import time

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot.metrics import negative_log_likelihood, uncertainty_decomposition

from ._common import arg_parser, quiet_process, results_dir, run_note, run_tasks, write_markdown
from ._data import (
    calibrated_log_loss,
    calibrated_log_loss_cv,
    deep_ensemble_equivalent,
    make_net,
    mnist1d,
    split,
    standardise,
)

THREADS = 1  # torch threads per worker process

# training task -> peak lr (as in benchmarks.quality's main table)
TASKS = {"digits": 0.05, "digits-0to5": 0.05, "mnist1d": 0.1, "synthetic": 0.05}
# (training task, OOD set name)
OOD_SETS = [
    ("digits", "pixels permuted"),
    ("digits-0to5", "held-out classes 6-9"),
    ("mnist1d", "time-reversed"),
    ("mnist1d", "offset +1.5"),
    ("mnist1d", "scaled x2"),
    ("synthetic", "rows scaled x5"),
]
# score label -> (model, which uncertainty); larger = more likely OOD
SCORES = {
    "single: 1 - max p": ("single", "max_softmax"),
    "single: entropy": ("single", "total"),
    "snapshot: entropy": ("snapshot", "total"),
    "snapshot: MI": ("snapshot", "epistemic"),
    "snapshot uniform: entropy": ("snapshot-uniform", "total"),
    "snapshot uniform: MI": ("snapshot-uniform", "epistemic"),
    "deep: entropy": ("deep", "total"),
    "deep: MI": ("deep", "epistemic"),
}
REJECT = 0.1


# -- data (offline) ---------------------------------------------------------------------
@functools.cache
def load_task(name):
    """``X, y, X_test, y_test, {ood name: X_ood}``, standardised with the training rows."""
    if name in ("digits", "digits-0to5"):
        X, y = load_digits(return_X_y=True)
        X, X_test, y, y_test = train_test_split(X, y, test_size=0.5, random_state=0,
                                                stratify=y)
        X, X_test = (X / 16.0).astype(np.float32), (X_test / 16.0).astype(np.float32)
        if name == "digits":
            perm = np.random.RandomState(0).permutation(X.shape[1])
            return X, y, X_test, y_test, {"pixels permuted": X_test[:, perm]}
        seen, seen_test = y <= 5, y_test <= 5
        return (X[seen], y[seen], X_test[seen_test], y_test[seen_test],
                {"held-out classes 6-9": X_test[~seen_test]})
    if name == "mnist1d":
        data = mnist1d()
        X, X_test = data["x"], data["x_test"]
        X, X_test, X_rev, X_off, X_big = standardise(X, X_test, X_test[:, ::-1], X_test + 1.5,
                                                 2.0 * X_test)
        return (X, data["y"], X_test, data["y_test"],
                {"time-reversed": X_rev, "offset +1.5": X_off, "scaled x2": X_big})
    if name == "synthetic":
        X, y = make_classification(
            n_samples=3000, n_features=20, n_informative=10, n_redundant=4, n_classes=4,
            n_clusters_per_class=2, class_sep=1.0, random_state=0)
        X, X_test, y, y_test = train_test_split(X, y, test_size=1000, random_state=0,
                                                stratify=y)
        X, X_test = standardise(X, X_test)
        return X, y, X_test, y_test, {"rows scaled x5": 5.0 * X_test}
    raise ValueError(f"unknown task {name!r}")


# task -> its loader, for :func:`benchmarks._data.split` (fit / validation rows, 90 / 10
# per seed, test rows and the OOD sets).
TASK_LOADERS = {name: functools.partial(load_task, name) for name in TASKS}


# -- one fit per task ---------------------------------------------------------------------
def _fit_task(task, kind, seed, member, epochs, max_train):
    """Fit one model; return its members' probabilities on validation, test and OOD rows.

    ``kind`` "snapshot": the 5-cycle ensemble, members chosen on the validation
    rows; "single": one cosine cycle, ``member`` k of the deep ensemble (k = 0
    is the single-net baseline).
    """
    X_fit, y_fit, X_val, y_val, X_test, _, ood = split(task, seed, max_train, TASK_LOADERS)
    n_snapshots = 5 if kind == "snapshot" else 1
    clf = SnapshotEnsembleClassifier(
        make_net("mlp", epochs, TASKS[task]), n_snapshots=n_snapshots, validation_fraction=0.0,
        selection="all", weighting="uniform", random_state=seed + 1000 * member)
    start = time.perf_counter()
    clf.fit(X_fit, y_fit)
    seconds = time.perf_counter() - start
    if kind == "snapshot":
        clf.set_params(weighting="auto").select(X_val, y_val)  # the default: shrunk weights
    states = [clf.snapshots_[i] for i in clf.members_]

    def members(X):  # (n_members, n_rows, n_classes)
        return clf._member_outputs(clf._validate_X_predict(X), states).astype(np.float64)

    return {"weights": clf.weights_, "val": members(X_val), "test": members(X_test),
            "ood": {name: members(X) for name, X in ood.items()}, "seconds": seconds}


# -- scoring ------------------------------------------------------------------------------
def _uncertainty(probas, weights):
    u = uncertainty_decomposition(probas, weights)
    return {"total": u.total, "epistemic": u.epistemic, "max_softmax": 1 - u.proba.max(axis=1),
            "proba": u.proba}


def evaluate(fits, y_val, y_test, ood_names):
    """Scores of one (task, seed) from its fits: ``{"snapshot": fit, "single": [fits]}``."""
    singles = fits["single"]
    models = {
        "single": (singles[0]["val"], singles[0]["test"],
                   {n: singles[0]["ood"][n] for n in ood_names}, None),
        "snapshot": (fits["snapshot"]["val"], fits["snapshot"]["test"],
                     fits["snapshot"]["ood"], fits["snapshot"]["weights"]),
        # The same snapshots with equal weights (the paper's average).
        "snapshot-uniform": (fits["snapshot"]["val"], fits["snapshot"]["test"],
                             fits["snapshot"]["ood"], None),
        "deep": (np.concatenate([s["val"] for s in singles]),
                 np.concatenate([s["test"] for s in singles]),
                 {n: np.concatenate([s["ood"][n] for s in singles]) for n in ood_names}, None),
    }
    out = {"auroc": {}, "reject_accuracy": {}, "accuracy": {}, "nll": {}, "cll": {},
           "temperature": {}, "cll_cv": {}, "temperature_cv": {}}
    test_u = {m: _uncertainty(v[1], v[3]) for m, v in models.items()}
    for name in ood_names:
        out["auroc"][name] = {}
        for label, (model, what) in SCORES.items():
            ood_u = _uncertainty(models[model][2][name], models[model][3])
            scores = np.r_[test_u[model][what], ood_u[what]]
            truth = np.r_[np.zeros(len(y_test)), np.ones(len(ood_u[what]))]
            out["auroc"][name][label] = float(roc_auc_score(truth, scores))
    keep = len(y_test) - int(round(REJECT * len(y_test)))
    for label, (model, what) in SCORES.items():
        order = np.argsort(test_u[model][what], kind="stable")[:keep]
        proba = test_u[model]["proba"]
        out["reject_accuracy"][label] = float(np.mean(proba[order].argmax(1) == y_test[order]))
    for model, (val, _, _, weights) in models.items():
        p_test, p_val = test_u[model]["proba"], _uncertainty(val, weights)["proba"]
        out["accuracy"][model] = float(np.mean(p_test.argmax(1) == y_test))
        out["nll"][model] = negative_log_likelihood(y_test, p_test)
        out["cll"][model], out["temperature"][model] = calibrated_log_loss(
            p_val, y_val, p_test, y_test)
        out["cll_cv"][model], out["temperature_cv"][model] = calibrated_log_loss_cv(
            p_test, y_test)
    # Deep ensembles of 1..K nets (the first k members) for the deep-ensemble equivalent.
    deep_clls, deep_clls_cv = [], []
    for k in range(1, len(singles) + 1):
        p_val = np.mean([s["val"][0] for s in singles[:k]], axis=0)
        p_test = np.mean([s["test"][0] for s in singles[:k]], axis=0)
        deep_clls.append(calibrated_log_loss(p_val, y_val, p_test, y_test)[0])
        deep_clls_cv.append(calibrated_log_loss_cv(p_test, y_test)[0])
    out["deep_clls"], out["deep_clls_cv"] = deep_clls, deep_clls_cv
    out["dee"] = deep_ensemble_equivalent(out["cll"]["snapshot"], deep_clls)
    out["dee_cv"] = deep_ensemble_equivalent(out["cll_cv"]["snapshot"], deep_clls_cv)
    out["max_weight"] = float(np.max(fits["snapshot"]["weights"]))
    out["seconds"] = {"single": singles[0]["seconds"], "snapshot": fits["snapshot"]["seconds"],
                      "deep": float(sum(s["seconds"] for s in singles))}
    return out


def run(tasks=tuple(TASKS), seeds=(0, 1, 2), epochs=30, n_deep=5, jobs=1, max_train=None):
    """Fit and score everything; returns ``{(task, seed): evaluate(...)}``."""
    jobs_list = []
    for task in tasks:
        for seed in seeds:
            jobs_list.append(((task, seed, "snapshot", 0), _fit_task,
                              (task, "snapshot", seed, 0, epochs, max_train)))
            for member in range(n_deep):
                jobs_list.append(((task, seed, "single", member), _fit_task,
                                  (task, "single", seed, member, epochs, max_train)))
    cost = {"mnist1d": 4, "synthetic": 2}
    jobs_list.sort(key=lambda t: -cost.get(t[0][0], 1))
    fits = dict(run_tasks(jobs_list, jobs, THREADS, "ood"))
    results = {}
    for task in tasks:
        ood_names = [name for t, name in OOD_SETS if t == task]
        for seed in seeds:
            _, _, _, y_val, _, y_test, _ = split(task, seed, max_train, TASK_LOADERS)
            task_fits = {"snapshot": fits[(task, seed, "snapshot", 0)],
                         "single": [fits[(task, seed, "single", m)] for m in range(n_deep)]}
            results[(task, seed)] = evaluate(task_fits, y_val, y_test, ood_names)
    return results


# -- tables -------------------------------------------------------------------------------
def _ms(values, digits=3):
    values = np.asarray(values, dtype=np.float64)
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _dee_text(dees, clls, deep_first, n_deep):
    parts = []
    for dee, cll, first in zip(dees, clls, deep_first):
        if np.isinf(dee):
            parts.append(f">{n_deep}")
        elif dee == 1.0 and cll > first:
            parts.append("<1")
        else:
            parts.append(f"{dee:.2f}")
    return ", ".join(parts)


def tables(results, epochs, n_deep, jobs):
    tasks = list(dict.fromkeys(task for task, _ in results))
    seeds = sorted({seed for _, seed in results})
    lines = [
        f"MLP 512-512, SGD (Nesterov momentum 0.9), {epochs} epochs, batches of 128, peak "
        f"lr {', '.join(f'{t} {TASKS[t]}' for t in tasks)}; trained on 90 % of the training "
        f"rows, the other 10 % are the validation rows (member weights, temperature). "
        f"Mean ± standard deviation over seeds {seeds}; torch.set_num_threads({THREADS}) in "
        f"each of {jobs} process(es). snapshot = 5 cosine cycles in one run (the package "
        f"default: all snapshots, shrunk weights); deep-{n_deep} = {n_deep} independently "
        f"trained single nets ({n_deep}x the cost); snapshot uniform = the same snapshots "
        "with equal weights; MI = mutual information (epistemic). The largest "
        "snapshot weight, mean over seeds: "
        + ", ".join(f"{t} {np.mean([results[(t, s)]['max_weight'] for s in seeds]):.2f}"
                    for t in tasks) + ".",
        "",
        "## OOD detection: AUROC (in-distribution test rows vs OOD rows; 0.5 = chance)",
        "",
        "| train task | OOD set | " + " | ".join(SCORES) + " |",
        "|---|---|" + "---|" * len(SCORES),
    ]
    for task, name in OOD_SETS:
        if task not in tasks:
            continue
        cells = [_ms([results[(task, s)]["auroc"][name][label] for s in seeds])
                 for label in SCORES]
        lines.append(f"| {task} | {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Accuracy on in-distribution test rows after rejecting the {REJECT:.0%} most "
        "uncertain (by each score)",
        "",
        "| train task | single: all rows | snapshot: all rows | deep: all rows | "
        + " | ".join(SCORES) + " |",
        "|---|---|---|---|" + "---|" * len(SCORES),
    ]
    for task in tasks:
        base = [_ms([results[(task, s)]["accuracy"][m] for s in seeds])
                for m in ("single", "snapshot", "deep")]
        cells = [_ms([results[(task, s)]["reject_accuracy"][label] for s in seeds])
                 for label in SCORES]
        lines.append(f"| {task} | " + " | ".join(base + cells) + " |")
    lines += [
        "",
        "## Calibrated log-loss (Ashukha et al., 2020) and the deep-ensemble equivalent",
        "",
        "Test log-loss before temperature scaling (NLL) and after it (calibrated log-loss, "
        "CLL), with the temperature T fitted either by test-time cross-validation (cv: "
        "fitted on one random half of the test rows, measured on the other, both ways, 5 "
        "splits; Ashukha et al.'s protocol) or on the 10 % validation rows (val; for the "
        "snapshot ensemble these also chose its weights). Deep-ensemble equivalent (DEE) of "
        "the snapshot ensemble: how many independently trained nets (each with the whole "
        f"budget) reach its CLL, interpolated from deep ensembles of 1..{n_deep} nets; per "
        f"seed (<1: worse than one net, >{n_deep}: better than all {n_deep}).",
        "",
        "| train task | CLL from | single NLL / CLL (T) | snapshot NLL / CLL (T) | "
        f"deep-{n_deep} NLL / CLL (T) | deep 1..{n_deep} CLL | snapshot DEE (per seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        rs = [results[(task, s)] for s in seeds]
        for how, sfx in (("cv", "_cv"), ("val", "")):
            cells = []
            for m in ("single", "snapshot", "deep"):
                cells.append(f"{np.mean([r['nll'][m] for r in rs]):.3f} / "
                             f"{np.mean([r['cll' + sfx][m] for r in rs]):.3f} "
                             f"({np.mean([r['temperature' + sfx][m] for r in rs]):.2f})")
            curve = np.mean([r["deep_clls" + sfx] for r in rs], axis=0)
            dee = _dee_text([r["dee" + sfx] for r in rs],
                            [r["cll" + sfx]["snapshot"] for r in rs],
                            [r["deep_clls" + sfx][0] for r in rs], n_deep)
            lines.append(f"| {task} | {how} | " + " | ".join(cells) + " | "
                         + ", ".join(f"{c:.3f}" for c in curve) + f" | {dee} |")
    lines += ["", "Median fit time (s): " + "; ".join(
        f"{task} " + " / ".join(
            f"{m} {np.median([results[(task, s)]['seconds'][m] for s in seeds]):.1f}"
            for m in ("single", "snapshot", "deep")) for task in tasks)
        + f" (deep = the {n_deep} nets together)."]
    return "\n".join(lines)


def _jsonable(results):
    return [[list(k), v] for k, v in results.items()]


def main(argv=None):
    parser = arg_parser(__doc__, "smoke run: digits only, 2 epochs, 1 seed, 2 nets; temp dir")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes (each with 1 torch thread)")
    args = parser.parse_args(argv)
    quiet_process(THREADS)
    out = results_dir(args.out, args.quick, "ood")
    if args.quick:
        kw = dict(tasks=("digits",), seeds=(0,), epochs=2, n_deep=2, jobs=1, max_train=300)
    else:
        kw = dict(seeds=tuple(range(args.seeds)), epochs=args.epochs, jobs=args.jobs)
    start = time.perf_counter()
    results = run(**kw)
    wall = time.perf_counter() - start
    text = tables(results, kw["epochs"], kw.get("n_deep", 5), kw["jobs"])
    print(text, flush=True)
    command = "python -m benchmarks.ood" + (" --quick" if args.quick else "")
    write_markdown(out / "ood.md", "Out-of-distribution detection and calibrated log-loss",
                   run_note(command, wall), text)
    (out / "ood_raw.json").write_text(json.dumps({"results": _jsonable(results),
                                                  "wall": wall}, default=float))
    print(f"\nwrote {out} ({wall:.0f} s)")
    return results


if __name__ == "__main__":
    main()
