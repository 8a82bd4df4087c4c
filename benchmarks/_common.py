"""How the benchmarks run: the 90 / 10 split per seed, worker processes, tables, files.

Everything the benchmark scripts share besides data and nets (those are in
:mod:`benchmarks._data`).
"""

import argparse
import functools
import multiprocessing
import os
import pathlib
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import torch
from scipy import stats
from sklearn.model_selection import train_test_split

RESULTS = pathlib.Path(__file__).parent / "results"


# -- rows ------------------------------------------------------------------------------
@functools.cache
def load_capped(loader, max_train=None):
    """``loader()``'s ``X, y, X_test, y_test`` (and anything after them), with at most
    ``max_train`` training rows (drawn stratified, the same for every seed)."""
    X, y, X_test, y_test, *extra = loader()
    if max_train is not None and max_train < len(X):
        X, _, y, _ = train_test_split(X, y, train_size=max_train, random_state=0, stratify=y)
    return X, y, X_test, y_test, *extra


def fit_val_test_split(loader, seed, max_train=None):
    """Training rows split 90 / 10 (per seed) into fit and validation rows, and the test rows.

    Returns ``X_fit, y_fit, X_val, y_val, X_test, y_test`` and whatever ``loader()``
    returns after its four arrays (the OOD sets of ``benchmarks/ood.py``).
    :func:`benchmarks._data.split` calls it by data set name.
    """
    X, y, X_test, y_test, *extra = load_capped(loader, max_train)
    X_fit, X_val, y_fit, y_val = train_test_split(
        X, y, test_size=0.1, random_state=seed, stratify=y)
    return X_fit, y_fit, X_val, y_val, X_test, y_test, *extra


# -- running ---------------------------------------------------------------------------
def quiet_process(threads, ignore=(UserWarning, RuntimeWarning)):
    """Set this process's torch threads and silence the warnings the fits print."""
    torch.set_num_threads(threads)
    for category in ignore:
        warnings.filterwarnings("ignore", category=category)


def config_tasks(configs, epochs, seeds, n_deep, single, others, tail=()):
    """The ``(key, fn, args)`` fits of a table with a deep-ensemble row, per config and seed.

    ``n_deep`` calls ``single(data, model, lr, epochs, seed, member, *tail)``
    (member 0 is also the single-net row), then per ``(name, fn, args)`` of
    ``others`` one call ``fn(data, model, lr, epochs, seed, *args, *tail)``;
    keys are ``(data, model, lr, epochs, seed, "single", member)`` and
    ``(data, model, lr, epochs, seed, name)``.
    """
    tasks = []
    for data, model, lr in configs:
        for seed in seeds:
            common = (data, model, lr, epochs, seed)
            for member in range(n_deep):
                tasks.append(((*common, "single", member), single, (*common, member, *tail)))
            for name, fn, args in others:
                tasks.append(((*common, name), fn, (*common, *args, *tail)))
    return tasks


def run_tasks(tasks, jobs, threads, label, log=print):
    """Run ``(key, fn, args)`` tasks, in ``jobs`` processes; yield ``(key, result)``.

    Every worker process runs ``threads`` torch threads; progress lines start
    with ``[label]``.
    """
    start = time.perf_counter()
    n = len(tasks)

    def progress(i, key):
        log(f"[{label}] {i}/{n} {key} ({time.perf_counter() - start:.0f} s)", flush=True)

    if jobs <= 1:
        for i, (key, fn, args) in enumerate(tasks, 1):
            result = fn(*args)
            progress(i, key)
            yield key, result
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=quiet_process,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(fn, *args): key for key, fn, args in tasks}
        for i, future in enumerate(as_completed(futures), 1):
            key = futures[future]
            progress(i, key)
            yield key, future.result()


# -- tables ----------------------------------------------------------------------------
def paired_interval(differences):
    """The mean of paired differences and the half-width of its 95 % t interval."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return float("nan"), float("nan")
    return float(d.mean()), float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1)
                                  / np.sqrt(len(d)))


def interval_cell(mean, half):
    """``"+0.012 [+0.004, +0.020] higher"``: a paired difference, its interval, the verdict."""
    if not np.isfinite(mean):
        return "n/a"
    verdict = "lower" if mean + half < 0 else "higher" if mean - half > 0 else "tie"
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] {verdict}"


def nanmedian(values):
    """The median of the finite values; NaN when there are none."""
    values = np.asarray(values, dtype=float)
    return float("nan") if np.all(np.isnan(values)) else float(np.nanmedian(values))


def nanmean(values):
    """The mean of the finite values; NaN when there are none."""
    values = np.asarray(values, dtype=float)
    return float("nan") if np.all(np.isnan(values)) else float(np.nanmean(values))


def mean_std(values, fmt="{:.3f}"):
    """``"mean ± std"`` of the values that are not NaN; "n/a" when all are."""
    values = np.asarray(values, dtype=float)
    if np.all(np.isnan(values)):
        return "n/a"
    return f"{fmt.format(np.nanmean(values))} ± {fmt.format(np.nanstd(values))}"


def method_table(rows, errors, metrics, single, cell=mean_std):
    """The rows of a ``| data | model | lr | method | <metrics> | members | fit time (s) |
    time / single |`` table, then a line per method that failed, with its error.

    ``rows`` is ``{(data, model, lr): {method: [record per seed]}}``; the fit time
    is the median over seeds, ``time / single`` relative to the ``single`` method's.
    """
    lines = []
    for (data, model, lr), methods in rows.items():
        single_time = nanmedian([r["seconds"] for r in methods[single]])
        for method, records in methods.items():
            col = {k: [r[k] for r in records] for k in [*metrics, "seconds", "members"]}
            sec, members = nanmedian(col["seconds"]), nanmean(col["members"])
            cells = [data, model, lr, method, *(cell(col[k]) for k in metrics),
                     "n/a" if np.isnan(members) else f"{members:.1f}", f"{sec:.1f}",
                     f"{sec / single_time:.2f}"]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    for method, error in errors.items():
        lines += ["", f"**{method} failed**: `{error}`"]
    return lines


# -- files -----------------------------------------------------------------------------
def results_dir(out, quick, name):
    """Where a run writes: ``out`` if given, else a new temporary folder for a quick
    (smoke) run and ``benchmarks/results`` for a real one; created if need be."""
    out = out or (pathlib.Path(tempfile.mkdtemp(prefix=f"sksnapshot-{name}-"))
                  if quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_note(command, wall, shared=True):
    """``"`command` (N s wall, K CPUs [shared with other work], torch V)"``."""
    cpus = f"{os.cpu_count()} CPUs" + (" shared with other work" if shared else "")
    return f"`{command}` ({wall:.0f} s wall, {cpus}, torch {torch.__version__})"


def write_markdown(path, title, note, text, footer=None):
    """A results page: the title, a line saying how it was made, the tables (and a footer)."""
    page = f"# {title}\n\n{note}\n\n{text}\n"
    if footer:
        page += f"\n{footer}\n"
    path.write_text(page)


def arg_parser(doc, quick_help):
    """A benchmark's command line: its docstring's first line, ``--quick``
    (``quick_help``) and ``--out`` (see :func:`results_dir`); add the rest."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="results folder (default: benchmarks/results, a temporary "
                             "one with --quick)")
    return parser


def table_main(argv, doc, name, title, compute, quick_help, seeds=None, threads=2):
    """The command line of a one-table benchmark (``python -m benchmarks.NAME``).

    ``compute(args)`` returns the table's text; it is printed and, unless
    ``--quick``, written to ``results/NAME.md``. ``seeds``: the default of a
    ``--seeds`` option (None: no such option).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if seeds is not None:
        parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--threads", type=int, default=threads)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    text = compute(args)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        write_markdown(RESULTS / f"{name}.md", title, f"`python -m benchmarks.{name}`", text)
