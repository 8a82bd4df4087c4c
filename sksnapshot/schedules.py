"""Learning-rate schedules as pure functions of the training iteration.

Each schedule can be evaluated (and plotted, and tested) without training
anything: training simply asks it for the learning rate of iteration ``t``.
"""

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from ._compat import Interval, validate_params

__all__ = [
    "auto_cycle_bounds",
    "auto_lr",
    "cosine_annealing_lr",
    "cosine_warmup_lr",
    "cycle_boundaries",
    "linear_cycles_lr",
    "linear_snapshot_iterations",
    "plateau_epoch",
    "snapshot_iterations",
]


# The share of a restarted cycle that "cosine_warmup" spends ramping up.
RESTART_WARMUP = 0.25

# Parameter constraints of the public functions (sklearn's validate_params).
_N_ITER = Interval(Integral, 0, None, closed="left")
_N_CYCLES = Interval(Integral, 1, None, closed="left")


def _round_half_up(x):
    return int(math.floor(x + 0.5))


def _check_steps(t, n_iter):
    """The steps ``t`` as an int64 array, each in ``[0, n_iter)``."""
    t_arr = np.asarray(t, dtype=np.int64)
    if np.any(t_arr < 0) or np.any(t_arr >= n_iter):
        raise ValueError(f"Iterations must lie in [0, {n_iter}), got {t}.")
    return t_arr


def check_enough_iterations(n_iter, n_cycles, why=None):
    """Refuse a budget of fewer training iterations than cycles: each needs one.

    ``why`` is the sentence that says so where the iterations come from; the
    advice on what to change is the same everywhere.
    """
    if n_iter < n_cycles:
        if why is None:
            why = (f"Cannot split {n_iter} training iterations into {n_cycles} cycles: "
                   "every cycle needs at least one iteration.")
        raise ValueError(f"{why} Train for more epochs, use a smaller batch size or ask "
                         "for fewer snapshots.")


@validate_params(
    {"n_iter": [_N_ITER], "n_cycles": [_N_CYCLES]},
    prefer_skip_nested_validation=True,
)
def cycle_boundaries(n_iter, n_cycles):
    """Return the ``n_cycles + 1`` iteration boundaries of equal cycles.

    Cycle ``k`` (1-based) runs over iterations ``b[k-1] <= t < b[k]`` with
    ``b[k] = round(k * n_iter / n_cycles)``, so there are exactly
    ``n_cycles`` non-empty cycles whenever ``n_iter >= n_cycles``, also when
    the budget does not divide evenly.

    Parameters
    ----------
    n_iter : int
        Total number of training iterations (optimizer steps).
    n_cycles : int
        Number of cycles.

    Returns
    -------
    boundaries : ndarray of shape (n_cycles + 1,)
        ``boundaries[0] == 0`` and ``boundaries[-1] == n_iter``.

    Examples
    --------
    >>> cycle_boundaries(10, 3).tolist()
    [0, 3, 7, 10]
    """
    n_iter, n_cycles = int(n_iter), int(n_cycles)
    if n_cycles < 1:
        raise ValueError(f"n_cycles must be at least 1, got {n_cycles}.")
    check_enough_iterations(n_iter, n_cycles)
    return np.array(
        [_round_half_up(k * n_iter / n_cycles) for k in range(n_cycles + 1)],
        dtype=np.int64,
    )


@validate_params(
    {"n_iter": [_N_ITER], "n_cycles": [_N_CYCLES]},
    prefer_skip_nested_validation=True,
)
def snapshot_iterations(n_iter, n_cycles):
    """Return the iterations after which a snapshot is taken (cycle ends).

    Examples
    --------
    >>> snapshot_iterations(10, 3).tolist()
    [2, 6, 9]
    """
    return cycle_boundaries(n_iter, n_cycles)[1:] - 1


@validate_params(
    {"t": ["array-like", Integral], "n_iter": [_N_ITER],
     "n_cycles": [_N_CYCLES], "lr": [Real], "min_lr": [Real]},
    prefer_skip_nested_validation=True,
)
def cosine_annealing_lr(t, n_iter, n_cycles, lr, min_lr=0.0):
    """Cosine annealing with warm restarts (Huang et al., 2017).

    Inside cycle ``k`` of length ``C_k`` starting at ``b[k-1]``::

        lr(t) = min_lr + (lr - min_lr) / 2 * (1 + cos(pi * (t - b[k-1]) / C_k))

    so every cycle restarts at ``lr`` and ends one step short of ``min_lr``.

    Parameters
    ----------
    t : int or array-like of int
        Training iteration(s), ``0 <= t < n_iter``.
    n_iter : int
        Total number of training iterations.
    n_cycles : int
        Number of cycles (snapshots).
    lr : float
        Peak learning rate, reached at the first iteration of every cycle.
    min_lr : float, default=0.0
        Learning rate the cosine anneals towards.

    Returns
    -------
    lr_t : float or ndarray
        The learning rate of each iteration in ``t``.

    Examples
    --------
    >>> cosine_annealing_lr(range(4), 4, 2, lr=1.0).round(3).tolist()
    [1.0, 0.5, 1.0, 0.5]
    """
    out = _cosine(_cycle_positions(t, n_iter, n_cycles)[1], lr, min_lr)
    return float(out) if out.ndim == 0 else out


def _cycle_positions(t, n_iter, n_cycles):
    """The steps' 0-based cycle and their position ``(t - start) / length`` in it."""
    bounds = cycle_boundaries(n_iter, n_cycles)
    t_arr = _check_steps(t, n_iter)
    cycle = np.searchsorted(bounds, t_arr, side="right") - 1
    start = bounds[cycle]
    return cycle, (t_arr - start) / (bounds[cycle + 1] - start)


def _cosine(u, lr, min_lr):
    """Half a cosine from ``lr`` (position 0) down towards ``min_lr`` (position 1)."""
    return min_lr + (lr - min_lr) / 2.0 * (1.0 + np.cos(np.pi * u))


@validate_params(
    {"t": ["array-like", Integral], "n_iter": [_N_ITER],
     "n_cycles": [_N_CYCLES], "lr": [Real], "min_lr": [Real],
     "warmup": [Interval(Real, 0, 1, closed="left")]},
    prefer_skip_nested_validation=True,
)
def cosine_warmup_lr(t, n_iter, n_cycles, lr, min_lr=0.0, warmup=RESTART_WARMUP):
    """Cosine annealing whose restarts ramp up instead of jumping to ``lr``.

    The first cycle is that of :func:`cosine_annealing_lr` (it starts from
    the initial weights). Every later cycle first raises the learning rate
    linearly from ``min_lr`` to ``lr`` over its first ``warmup`` share, then
    anneals it along the cosine to ``min_lr`` at its end, where the snapshot
    is taken (the same cycles and snapshot steps as the cosine schedule). A
    sudden jump from ``min_lr`` to ``lr`` can throw a net that has no
    normalisation out of its basin; ``benchmarks/budget.py`` measures it.

    Parameters
    ----------
    t : int or array-like of int
        Training iteration(s), ``0 <= t < n_iter``.
    n_iter : int
        Total number of training iterations.
    n_cycles : int
        Number of cycles (snapshots).
    lr : float
        Peak learning rate.
    min_lr : float, default=0.0
        Learning rate at the cycles' ends and at the start of every restart.
    warmup : float in [0, 1), default=0.25
        Share of every cycle after the first spent ramping up; 0 gives
        :func:`cosine_annealing_lr`.

    Returns
    -------
    lr_t : float or ndarray
        The learning rate of each iteration in ``t``.

    Examples
    --------
    >>> cosine_warmup_lr(range(8), 8, 2, lr=1.0, warmup=0.5).round(3).tolist()
    [1.0, 0.854, 0.5, 0.146, 0.0, 0.5, 1.0, 0.5]
    """
    cycle, u = _cycle_positions(t, n_iter, n_cycles)
    out = np.where(cycle > 0, _restart(u, lr, min_lr, warmup), _cosine(u, lr, min_lr))
    return float(out) if out.ndim == 0 else out


def _restart(u, lr, min_lr, warmup):
    """A restarted cycle at positions ``u``: a linear ramp over ``warmup``, then the cosine."""
    if warmup == 0:
        return _cosine(u, lr, min_lr)
    after = _cosine(np.clip((u - warmup) / (1.0 - warmup), 0.0, 1.0), lr, min_lr)
    return np.where(u < warmup, min_lr + (lr - min_lr) * u / warmup, after)


@validate_params(
    {"t": ["array-like", Integral], "n_iter": [_N_ITER],
     "n_cycles": [_N_CYCLES], "lr": [Real], "min_lr": [Real], "warmup": [Real],
     "cycle_peak": [Interval(Real, 0, 1, closed="right")]},
    prefer_skip_nested_validation=True,
)
def linear_cycles_lr(t, n_iter, n_cycles, lr, min_lr=0.0, warmup=0.5, cycle_peak=0.5):
    """Fast geometric ensembling's schedule (Garipov et al., 2018).

    The first ``warmup`` share of the budget trains the net: the learning rate
    falls linearly from ``lr`` to ``min_lr``. The rest is split into
    ``n_cycles`` short triangular cycles between ``min_lr`` and
    ``cycle_peak * lr``: up during the first half of a cycle, down during the
    second, so that every cycle ends at its low point, where the snapshot is
    taken (see :func:`linear_snapshot_iterations`).

    Parameters
    ----------
    t : int or array-like of int
        Training iteration(s), ``0 <= t < n_iter``.
    n_iter : int
        Total number of training iterations.
    n_cycles : int
        Number of short cycles (snapshots) after the warm-up.
    lr : float
        Peak learning rate of the warm-up.
    min_lr : float, default=0.0
        The low learning rate of the cycles and the end of the warm-up.
    warmup : float in [0, 1), default=0.5
        Share of the iterations spent in the warm-up.
    cycle_peak : float in (0, 1], default=0.5
        The cycles' high learning rate, as a share of ``lr``.

    Returns
    -------
    lr_t : float or ndarray

    Examples
    --------
    >>> linear_cycles_lr(range(8), 8, 2, lr=1.0, warmup=0.5).round(3).tolist()
    [1.0, 0.667, 0.333, 0.0, 0.5, 0.0, 0.5, 0.0]
    """
    n_warmup, bounds = _linear_plan(n_iter, n_cycles, warmup)
    t_arr = _check_steps(t, n_iter)
    high = min_lr + cycle_peak * (lr - min_lr)
    # Warm-up: linear from lr (first step) to min_lr (last step).
    ramp = np.clip(t_arr / max(n_warmup - 1, 1), 0.0, 1.0)
    warm = lr + (min_lr - lr) * ramp
    # Cycles: position u in (0, 1]; the triangle peaks at u = 1/2, ends at min_lr.
    s = np.clip(t_arr - n_warmup, 0, None)
    cycle = np.clip(np.searchsorted(bounds, s, side="right") - 1, 0, n_cycles - 1)
    u = (s - bounds[cycle] + 1) / (bounds[cycle + 1] - bounds[cycle])
    cyc = min_lr + (high - min_lr) * (1.0 - np.abs(2.0 * u - 1.0))
    out = np.where(t_arr < n_warmup, warm, cyc)
    return float(out) if out.ndim == 0 else out


def _linear_plan(n_iter, n_cycles, warmup):
    """Warm-up length and the cycle boundaries of the remaining iterations."""
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must lie in [0, 1), got {warmup}.")
    n_warmup = _round_half_up(warmup * n_iter)
    check_enough_iterations(
        n_iter - n_warmup, n_cycles,
        f"After a warm-up of {n_warmup} iterations, {n_iter - n_warmup} remain: too few "
        f"for {n_cycles} cycles.")
    return n_warmup, cycle_boundaries(n_iter - n_warmup, n_cycles)


@validate_params(
    {"n_iter": [_N_ITER], "n_cycles": [_N_CYCLES], "warmup": [Real]},
    prefer_skip_nested_validation=True,
)
def linear_snapshot_iterations(n_iter, n_cycles, warmup=0.5):
    """The low points of :func:`linear_cycles_lr`: the last step of each cycle.

    Examples
    --------
    >>> linear_snapshot_iterations(8, 2).tolist()
    [5, 7]
    """
    n_warmup, bounds = _linear_plan(n_iter, n_cycles, warmup)
    return n_warmup + bounds[1:] - 1


# n_snapshots="auto": the most cycles planned after the cut (Huang et al. found 4-8
# snapshots best), and how the validation curve must look for the cut.
AUTO_MAX_CYCLES = 5
# With a schedule that cannot be cut early ("linear", a callable): the fixed number of
# cycles these schedules had as their default.
AUTO_FIXED_CYCLES = 5
AUTO_PATIENCE = 3  # at least this many epochs without improvement make a plateau...
AUTO_PATIENCE_SHARE = 0.5  # ...and at least this share of the epochs so far (noisy curves)
AUTO_TOLERANCE = 0.01  # improvement below this share of the best loss does not count
# Fewer validation rows than this never cut the budget: on OSULeaf's 26 rows a still-learning
# curve looked level in 3 of 10 fits (benchmarks/budget.py); no false cut was seen on 66+.
AUTO_MIN_VALID_ROWS = 50
# A restart whose snapshot's validation loss exceeds this multiple of the best earlier
# snapshot's left its basin (overfitting alone raised it by up to ~1.3x, collapses 1.3-4.4x
# in benchmarks/budget.py's CNN runs).
AUTO_COLLAPSE_FACTOR = 1.5


def plateau_epoch(valid_losses, n_epochs, patience=AUTO_PATIENCE, tol=AUTO_TOLERANCE,
                  share=AUTO_PATIENCE_SHARE):
    """Whether the validation curve so far says: cut the first cycle here.

    ``valid_losses`` are the validation losses of the epochs so far (one per
    epoch, oldest first). A plateau is a window of recent epochs whose best
    loss is not ``tol`` (a share of its magnitude) below the best loss before
    them; the window is ``patience`` epochs, or ``share`` of the epochs so far
    if that is more, so that a lucky low value on a few noisy validation rows
    does not pass for convergence while the net is still learning. A cut is allowed
    only while at least two cycles as long as the epochs so far still fit in
    the ``n_epochs`` budget, so the restarts that follow have had as long to
    converge as the first cycle had.

    Examples
    --------
    >>> plateau_epoch([1.0, 0.6, 0.5, 0.5, 0.51, 0.52], n_epochs=30)
    True
    >>> plateau_epoch([1.0, 0.6, 0.5, 0.45, 0.4, 0.35], n_epochs=30)
    False
    >>> plateau_epoch([1.0, 0.6, 0.5, 0.5, 0.51, 0.52], n_epochs=15)
    False
    """
    losses = np.asarray(valid_losses, dtype=np.float64)
    epoch = len(losses)
    window = max(patience, math.ceil(share * epoch))
    if epoch <= window or 3 * epoch > n_epochs or not np.all(np.isfinite(losses)):
        return False
    best = losses[:-window].min()
    # The share is of the loss's magnitude: a Gaussian NLL can be negative.
    return bool(losses[-window:].min() > best - tol * abs(best))


def auto_cycle_bounds(n_epochs, cut_epoch, n_batches, max_cycles=AUTO_MAX_CYCLES):
    """The steps that bound the cycles after a cut at the end of ``cut_epoch``.

    The remaining epochs are split into ``min(max_cycles, remaining // cut_epoch)``
    cycles of whole epochs (at least two): cycles at least as long as the
    epochs the first cycle needed to reach its plateau. Returns the steps
    ``[cut, b_1, ..., n_iter]``, ``n_iter = n_epochs * n_batches``.

    Examples
    --------
    >>> auto_cycle_bounds(40, 6, 10).tolist()
    [60, 130, 200, 260, 330, 400]
    """
    remaining = n_epochs - cut_epoch
    n_cycles = max(2, min(max_cycles, remaining // cut_epoch))
    epochs = cut_epoch + cycle_boundaries(remaining, n_cycles)
    return epochs * n_batches


def auto_lr(t, n_iter, bounds, lr, min_lr=0.0, warmup=0.0):
    """The learning rate of ``n_snapshots="auto"`` at the steps ``t``.

    Until the cut (``bounds[0]``) it is the single net's: one cosine from
    ``lr`` to ``min_lr`` over all ``n_iter`` steps. The first cycle then
    anneals, along half a cosine, from the rate it had reached to ``min_lr``
    at ``bounds[1]``; every later cycle ``[bounds[k], bounds[k+1])`` restarts
    as :func:`cosine_warmup_lr` does (``warmup=0``: a jump to ``lr``, as
    :func:`cosine_annealing_lr`). ``bounds`` None: no cut, one cosine.

    Examples
    --------
    >>> auto_lr(range(8), 8, [2, 5, 8], lr=1.0).round(3).tolist()
    [1.0, 0.962, 0.854, 0.64, 0.213, 1.0, 0.75, 0.25]
    """
    t_arr = _check_steps(t, n_iter)
    single = _cosine(t_arr / n_iter, lr, min_lr)
    if bounds is None:
        return single
    bounds = np.asarray(bounds, dtype=np.int64)
    cycle = np.clip(np.searchsorted(bounds, t_arr, side="right") - 1, 0, len(bounds) - 2)
    u = (t_arr - bounds[cycle]) / (bounds[cycle + 1] - bounds[cycle])
    at_cut = _cosine(bounds[0] / n_iter, lr, min_lr)
    first = _cosine(u, at_cut, min_lr)
    later = _restart(u, lr, min_lr, warmup)
    return np.where(t_arr < bounds[0], single, np.where(cycle == 0, first, later))


class Schedule(NamedTuple):
    """A schedule and what it supports, so that training asks it instead of naming it.

    ``lr(t, n_iter, n_cycles, lr, min_lr)`` gives the learning rate of the
    steps ``t``; ``snapshots(n_iter, n_cycles)`` the steps that take a
    snapshot. ``cuttable``: ``n_snapshots="auto"`` may cut its first cycle at a
    plateau of the validation loss (:func:`auto_lr` then plans the cycles);
    ``restart_warmup``: the share of each restart cycle that ``auto_lr`` ramps
    up over (0 jumps to the peak).
    """

    lr: Callable
    snapshots: Callable
    cuttable: bool = False
    restart_warmup: float = 0.0


SCHEDULES = {
    "cosine": Schedule(cosine_annealing_lr, snapshot_iterations, cuttable=True),
    "cosine_warmup": Schedule(cosine_warmup_lr, snapshot_iterations, cuttable=True,
                              restart_warmup=RESTART_WARMUP),
    "linear": Schedule(linear_cycles_lr, linear_snapshot_iterations),
}


def learning_rate_table(schedule, n_iter, n_cycles, lr, min_lr):
    """The learning rate of every step ``0 .. n_iter - 1``, float64, checked.

    ``schedule`` is a name or a callable, as for :func:`resolve_schedule`. The
    one place where a schedule is evaluated over a whole budget: training
    (one table per parameter group) and plotting both ask here.
    """
    lr_fn = resolve_schedule(schedule).lr
    steps = np.arange(n_iter)
    lrs = np.asarray(lr_fn(steps, n_iter, n_cycles, lr=lr, min_lr=min_lr), dtype=np.float64)
    if lrs.shape != steps.shape or not np.all(np.isfinite(lrs)):
        raise ValueError(
            f"The schedule must return one finite learning rate per step, got "
            f"an array of shape {lrs.shape} for {len(steps)} steps."
        )
    return lrs


def resolve_schedule(schedule):
    """The ``Schedule`` ``(lr, snapshots, cuttable, restart_warmup)`` of a name or a callable.

    A callable ``schedule(t, n_iter, n_cycles, lr, min_lr)`` gives the learning
    rate of the steps ``t`` (an array); its snapshots are taken at the ends of
    ``n_cycles`` equal cycles, as for the cosine schedule, and ``"auto"`` does
    not cut it (it cannot be told where to restart).
    """
    if callable(schedule):
        return Schedule(schedule, snapshot_iterations)
    try:
        return SCHEDULES[schedule]
    except KeyError:
        raise ValueError(
            f"schedule must be one of {sorted(SCHEDULES)} or a callable, got {schedule!r}."
        ) from None
