"""The loss-agnostic cores of the selection rules, shared by classifiers and regressors.

A rule sees the members only through a :class:`MixtureLoss`: the validation
loss of weighted mixtures of them. Classification builds one on the log-loss
(:mod:`._classification`), regression on the squared error or the Gaussian
NLL (:mod:`._regression`); the rules below never know which.
"""

import functools

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import ThreadpoolController

# weighting="shrink": a Dirichlet prior on the weights worth PRIOR_ROWS validation
# rows, its mean equal weights on the last N_PRIOR_MEMBERS chosen members
# (benchmarks/small_data.py chose both; see benchmarks/results/small_data.md).
PRIOR_ROWS = 10.0
N_PRIOR_MEMBERS = 2


class MixtureLoss:
    """The validation loss of weighted mixtures of ``n_members`` members.

    What a selection rule may ask of it (a subclass builds the loss):

    - ``loss(W)``: the losses of the mixtures whose weights are the rows of
      ``W`` (shape ``(k, n_members)``), shape ``(k,)``; forward selection;
    - ``loss.loss_and_grad(w)``: the loss of one mixture and its gradient in
      ``w``; weights on the simplex ("optimize");
    - ``loss.nats_and_grad(w)``: the same in nats per row, so that a prior
      worth ``PRIOR_ROWS`` rows means the same for every loss ("shrink");
    - ``loss.subset(indices)``: the loss of those members alone;
    - ``n_members``, ``n_rows``, and ``regression`` (whether rules for
      classifiers only must refuse it).
    """

    regression = False

    def nats_and_grad(self, w):
        return self.loss_and_grad(w)


def check_n_members(n_members, n_snapshots):
    """Validate n_members against the number of available members (None passes)."""
    if n_members is None:
        return None
    if not isinstance(n_members, (int, np.integer)) or isinstance(n_members, bool):
        raise ValueError(f"n_members must be an integer or None, got {n_members!r}.")
    if not 1 <= n_members <= n_snapshots:
        raise ValueError(
            f"n_members must be between 1 and the number of snapshots "
            f"({n_snapshots}), got {n_members}."
        )
    return int(n_members)


def _uniform(n):
    """Uniform weights over n members."""
    return np.full(n, 1.0 / n)


def select_last(n_snapshots, n_members=None):
    """The last ``n_members`` snapshots with uniform weights (Huang et al., 2017).

    Parameters
    ----------
    n_snapshots : int
        Number of available snapshots.
    n_members : int, default=None
        How many of the most recent snapshots to keep; all when None.

    Returns
    -------
    indices : ndarray of int
    weights : ndarray of float

    Examples
    --------
    >>> indices, weights = select_last(5, 2)
    >>> indices.tolist(), weights.tolist()
    ([3, 4], [0.5, 0.5])
    """
    if not isinstance(n_snapshots, (int, np.integer)) or n_snapshots < 1:
        raise ValueError(f"n_snapshots must be a positive integer, got {n_snapshots!r}.")
    n_members = check_n_members(n_members, n_snapshots)
    if n_members is None:
        n_members = n_snapshots
    return np.arange(n_snapshots - n_members, n_snapshots), _uniform(n_members)


def forward_selection(mixture_loss, n_snapshots, n_members=None, max_steps=None):
    """Greedy forward selection with replacement for any validation loss.

    ``mixture_loss(W)`` takes candidate weight vectors as the rows of ``W``
    (shape ``(k, n_snapshots)``, each row summing to 1) and returns the
    validation loss of each weighted mixture, shape ``(k,)``. See
    :func:`select_greedy` for the rule; this is its loss-agnostic core, shared
    by classifiers (log-loss) and regressors (squared error, Gaussian NLL).

    Returns
    -------
    indices, weights : ndarray
        The distinct chosen members (ascending) and their draw frequencies.

    Examples
    --------
    >>> losses = np.array([3.0, 1.0, 2.0])
    >>> indices, weights = forward_selection(lambda W: W @ losses, 3)
    >>> indices.tolist(), weights.tolist()
    ([1], [1.0])
    """
    cap = check_n_members(n_members, n_snapshots) or n_snapshots
    if max_steps is None:
        max_steps = 2 * n_snapshots
    if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}.")
    eye = np.eye(n_snapshots)
    single = mixture_loss(eye)

    counts = np.zeros(n_snapshots, dtype=np.int64)
    counts[np.argmin(single)] = 1
    best_loss, best_counts = single.min(), counts.copy()
    for step in range(2, max_steps + 1):
        # Loss of the average after adding each candidate, all at once.
        candidate_loss = mixture_loss((counts + eye) / step)
        if np.count_nonzero(counts) >= cap:
            candidate_loss[counts == 0] = np.inf
        pick = np.argmin(candidate_loss)
        counts[pick] += 1
        if candidate_loss[pick] < best_loss:
            best_loss, best_counts = candidate_loss[pick], counts.copy()
    indices = np.flatnonzero(best_counts)
    return indices, best_counts[indices] / best_counts.sum()


@functools.cache
def _blas_threads():
    """One controller of the BLAS thread pools (building one costs milliseconds)."""
    return ThreadpoolController()


def optimize_simplex(loss_and_grad, n, start=None):
    """Weights on the probability simplex minimising a validation loss.

    ``loss_and_grad(weights)`` returns the loss of the mixture with these
    weights and its gradient with respect to them. The weights are a softmax
    of free parameters optimised with L-BFGS-B from ``start`` (uniform when
    None); the result is never worse than ``start`` (which is returned
    otherwise). This is the loss-agnostic core of :func:`optimize_weights`
    and :func:`shrink_weights`, shared by classifiers and regressors.

    Examples
    --------
    >>> target = np.array([0.2, 0.8])
    >>> w = optimize_simplex(lambda w: (((w - target) ** 2).sum(), 2 * (w - target)), 2)
    >>> w.round(3).tolist()
    [0.2, 0.8]
    """
    start = _uniform(n) if start is None else np.asarray(start, dtype=np.float64)
    if n == 1:
        return _uniform(1)

    def in_z(z):
        weights = np.exp(z - z.max())
        weights /= weights.sum()
        loss, grad_w = loss_and_grad(weights)
        # Chain rule through the softmax: J = diag(w) - w w^T.
        return loss, weights * (grad_w - weights @ grad_w)

    # L-BFGS-B calls LAPACK on matrices of a few members: BLAS threads only add
    # their start-up and spinning (2x the whole select() on two cores, measured).
    with _blas_threads().limit(limits=1, user_api="blas"):
        result = minimize(
            in_z, np.log(start), jac=True, method="L-BFGS-B",
            options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-14},
        )
    weights = np.exp(result.x - result.x.max())
    weights /= weights.sum()
    if not np.all(np.isfinite(weights)) or loss_and_grad(weights)[0] > loss_and_grad(start)[0]:
        return start
    return weights


def prior_weights(n, n_last=N_PRIOR_MEMBERS):
    """Equal weights on the last ``n_last`` of ``n`` members, zero on the others."""
    k = min(n_last, n)
    prior = np.zeros(n)
    prior[n - k:] = 1.0 / k
    return prior


def shrink_penalty(weights, prior, strength):
    """``-strength * sum(prior * log(weights))`` and its gradient (0 * log 0 = 0)."""
    safe = np.maximum(weights, 1e-300)
    on = prior > 0
    penalty = -strength * float(np.sum(prior[on] * np.log(safe[on])))
    return penalty, -strength * prior / safe


def optimized_weights(loss):
    """Weights on the simplex minimising ``loss`` (weighting="optimize")."""
    return optimize_simplex(loss.loss_and_grad, loss.n_members)


def shrunk_weights(loss, prior_rows=PRIOR_ROWS):
    """Weights minimising ``loss`` in nats per row plus the "shrink" prior (weighting="shrink").

    The prior's mean is equal weights on the last two members
    (:func:`prior_weights`), its strength ``prior_rows / n_rows``.
    """
    n = loss.n_members
    prior = prior_weights(n)
    strength = prior_rows / loss.n_rows

    def loss_and_grad(weights):
        value, grad = loss.nats_and_grad(weights)
        penalty, grad_penalty = shrink_penalty(weights, prior, strength)
        return value + penalty, grad + grad_penalty

    # Start between the prior and uniform: every weight positive, near the answer
    # when the prior dominates.
    return optimize_simplex(loss_and_grad, n, start=0.5 * prior + 0.5 * _uniform(n))
