"""Learning-rate schedules as pure functions of the training iteration.

Each schedule can be evaluated (and plotted, and tested) without training
anything: training simply asks it for the learning rate of iteration ``t``.
"""

import math

import numpy as np

__all__ = ["cycle_boundaries", "snapshot_iterations", "cosine_annealing_lr"]


def _round_half_up(x):
    return int(math.floor(x + 0.5))


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
    if n_iter < n_cycles:
        raise ValueError(
            f"Cannot split {n_iter} training iterations into {n_cycles} cycles: "
            "every cycle needs at least one iteration. Train for more epochs, "
            "use a smaller batch size or ask for fewer snapshots."
        )
    return np.array(
        [_round_half_up(k * n_iter / n_cycles) for k in range(n_cycles + 1)],
        dtype=np.int64,
    )


def snapshot_iterations(n_iter, n_cycles):
    """Return the iterations after which a snapshot is taken (cycle ends).

    Examples
    --------
    >>> snapshot_iterations(10, 3).tolist()
    [2, 6, 9]
    """
    return cycle_boundaries(n_iter, n_cycles)[1:] - 1


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
    bounds = cycle_boundaries(n_iter, n_cycles)
    t_arr = np.asarray(t, dtype=np.int64)
    if np.any(t_arr < 0) or np.any(t_arr >= n_iter):
        raise ValueError(f"Iterations must lie in [0, {n_iter}), got {t}.")
    cycle = np.searchsorted(bounds, t_arr, side="right") - 1
    start = bounds[cycle]
    length = bounds[cycle + 1] - start
    out = min_lr + (lr - min_lr) / 2.0 * (1.0 + np.cos(np.pi * (t_arr - start) / length))
    return float(out) if out.ndim == 0 else out
