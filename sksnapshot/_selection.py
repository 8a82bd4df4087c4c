"""Choosing and weighting ensemble members from held-out validation predictions.

Every function takes ``probas``, an array of shape
``(n_members, n_samples, n_classes)`` with each member's predicted class
probabilities on the validation rows (members oldest first), and ``y``, the
encoded labels ``0 .. n_classes - 1`` of those rows. A selection is returned
as ``(indices, weights)``: the chosen members in ascending order and their
weights in the average, which sum to 1.
"""

import functools
from numbers import Integral, Real

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import ThreadpoolController

from ._compat import validate_params
from .metrics import _disagreement_rate, _holds_integers

__all__ = [
    "disagreement_matrix",
    "member_scores",
    "optimize_weights",
    "select_diverse",
    "select_greedy",
    "select_members",
    "shrink_weights",
]

# Same floor as sklearn's historical log_loss, so one confidently wrong row
# costs about 34.5 instead of infinity.
_EPS = 1e-15

SELECTIONS = ("last", "diverse", "greedy", "all")
WEIGHTINGS = ("shrink", "optimize", "uniform")

# weighting="shrink": a Dirichlet prior on the weights worth PRIOR_ROWS validation
# rows, its mean equal weights on the last N_PRIOR_MEMBERS chosen members
# (benchmarks/small_data.py chose both; see benchmarks/results/small_data.md).
PRIOR_ROWS = 10.0
N_PRIOR_MEMBERS = 2


def _check_probas(probas):
    """Validate a finite (n_members, n_samples, n_classes) array of probabilities."""
    probas = np.asarray(probas, dtype=np.float64)
    if probas.ndim != 3:
        raise ValueError(
            "probas must be a 3-D array of shape (n_members, n_samples, n_classes), "
            f"got shape {probas.shape}."
        )
    if min(probas.shape) < 1:
        raise ValueError(f"probas must not be empty, got shape {probas.shape}.")
    if not np.all(np.isfinite(probas)):
        raise ValueError("probas contains NaN or infinity.")
    return probas


def _check_probas_y(probas, y):
    """Validate probas and encoded labels y; return them as arrays."""
    probas = _check_probas(probas)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != probas.shape[1]:
        raise ValueError(
            f"y must be 1-D with one label per validation row ({probas.shape[1]}), "
            f"got shape {y.shape}."
        )
    if not _holds_integers(y):
        raise ValueError(f"y must hold encoded integer labels, got dtype {y.dtype}.")
    n_classes = probas.shape[2]
    if np.any((y < 0) | (y >= n_classes)):
        raise ValueError(
            f"y contains labels outside 0 .. {n_classes - 1}: "
            f"{np.unique(y[(y < 0) | (y >= n_classes)]).tolist()}."
        )
    return probas, y.astype(np.intp)


def _check_n_members(n_members, n_snapshots):
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


def _true_class_proba(probas, y):
    """Probability each member gives the true class of each row, shape (M, n)."""
    return probas[:, np.arange(len(y)), y]


def _nll(true_proba):
    """Mean negative log of true-class probabilities along the last axis."""
    return -np.mean(np.log(np.clip(true_proba, _EPS, 1.0)), axis=-1)


def _mixture_log_loss(true_proba, weights):
    """Log-loss of the weighted average of members given their true-class probabilities."""
    return _nll(weights @ true_proba)


def _mixture_nll_and_grad(weights, true_proba):
    """Log-loss of the weighted average of members and its gradient in the weights."""
    mixture = weights @ true_proba
    clipped = mixture < _EPS
    mixture = np.maximum(mixture, _EPS)
    # d loss / d weights; clipped rows are flat in the weights.
    grad = -np.mean(np.where(clipped, 0.0, true_proba / mixture), axis=1)
    return -np.mean(np.log(mixture)), grad


def _uniform(n):
    """Uniform weights over n members."""
    return np.full(n, 1.0 / n)


@validate_params(
    {"probas": ["array-like"], "y": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def member_scores(probas, y):
    """Validation accuracy and log-loss of every member.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the validation rows.
    y : array-like of int of shape (n_samples,)
        Encoded labels.

    Returns
    -------
    scores : dict
        ``"accuracy"`` and ``"log_loss"``, each an ndarray of shape
        ``(n_members,)``. Probabilities are clipped at 1e-15 in the log-loss.

    Examples
    --------
    >>> probas = [[[0.9, 0.1], [0.2, 0.8]], [[0.4, 0.6], [0.5, 0.5]]]
    >>> scores = member_scores(probas, [0, 1])
    >>> scores["accuracy"].tolist()
    [1.0, 0.0]
    >>> scores["log_loss"].round(4).tolist()
    [0.1643, 0.8047]
    """
    probas, y = _check_probas_y(probas, y)
    accuracy = np.mean(probas.argmax(axis=2) == y, axis=1)
    return {"accuracy": accuracy, "log_loss": _nll(_true_class_proba(probas, y))}


@validate_params(
    {"probas": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def disagreement_matrix(probas):
    """Pairwise disagreement between members' predicted labels.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the same rows.

    Returns
    -------
    matrix : ndarray of shape (n_members, n_members)
        Entry ``(i, j)`` is the fraction of rows on which members ``i`` and
        ``j`` predict different argmax labels; symmetric with a zero diagonal.

    Examples
    --------
    >>> probas = [[[0.9, 0.1], [0.2, 0.8]],
    ...           [[0.6, 0.4], [0.7, 0.3]],
    ...           [[0.3, 0.7], [0.4, 0.6]]]
    >>> disagreement_matrix(probas).tolist()
    [[0.0, 0.5, 0.5], [0.5, 0.0, 1.0], [0.5, 1.0, 0.0]]
    """
    labels = _check_probas(probas).argmax(axis=2)
    return _disagreement_rate(labels[:, None, :], labels[None, :, :])


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
    n_members = _check_n_members(n_members, n_snapshots)
    if n_members is None:
        n_members = n_snapshots
    return np.arange(n_snapshots - n_members, n_snapshots), _uniform(n_members)


@validate_params(
    {"probas": ["array-like"], "y": ["array-like"], "n_members": [Integral, None],
     "max_steps": [Integral, None]},
    prefer_skip_nested_validation=True,
)
def select_greedy(probas, y, n_members=None, max_steps=None):
    """Greedy forward selection with replacement (Caruana et al., 2004).

    Start from the member with the lowest validation log-loss; at each step
    add the member (possibly one already chosen) that most lowers the
    validation log-loss of the uniform average of the chosen multiset, the
    lower index winning ties. After ``max_steps`` draws the multiset of the
    step with the lowest validation log-loss is returned (the earliest on
    ties), so validation decides the ensemble size, which can be one member.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the validation rows.
    y : array-like of int of shape (n_samples,)
        Encoded labels.
    n_members : int, default=None
        Maximum number of distinct members: once reached, only members
        already chosen can be drawn again. None means no cap.
    max_steps : int, default=None
        Number of draws, the first one included; twice the number of members
        in ``probas`` when None.

    Returns
    -------
    indices : ndarray of int
        The distinct chosen members, ascending.
    weights : ndarray of float
        How often each was drawn, divided by the number of draws.

    Examples
    --------
    Each member is confidently right on one row and unsure on the other;
    their average beats both:

    >>> probas = [[[0.95, 0.05], [0.6, 0.4]],
    ...           [[0.4, 0.6], [0.05, 0.95]]]
    >>> indices, weights = select_greedy(probas, [0, 1])
    >>> indices.tolist(), weights.tolist()
    ([0, 1], [0.5, 0.5])
    """
    probas, y = _check_probas_y(probas, y)
    true_proba = _true_class_proba(probas, y)
    return forward_selection(lambda W: _nll(W @ true_proba), probas.shape[0],
                             n_members, max_steps)


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
    cap = _check_n_members(n_members, n_snapshots) or n_snapshots
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


@validate_params(
    {"probas": ["array-like"], "y": ["array-like"], "n_members": [Integral, None]},
    prefer_skip_nested_validation=True,
)
def select_diverse(probas, y, n_members=None):
    """An accurate and mutually disagreeing subset, uniformly weighted.

    Members are ordered greedily. The first is the one with the lowest
    validation log-loss. Then each step adds the not yet chosen member with
    the highest score ``quality * (1 + diversity)``, the lower index winning
    ties, where

    - ``quality = exp(best_log_loss - log_loss)`` is the geometric-mean
      probability it gives the true class relative to the best member: 1 for
      the best, near 1 for members almost as good, near 0 for broken ones;
    - ``diversity`` is its mean :func:`disagreement_matrix` entry with the
      members already chosen: the fraction of rows on which they predict a
      different label, so between 0 and 1.

    Disagreement is thus a bonus of up to 100 % on quality: a member that
    never disagrees with the chosen set (such as a copy) loses to any
    disagreeing member whose relative quality deficit is smaller than its
    disagreement rate, while a member that disagrees only because it is bad
    (quality near 0) gains almost nothing from it.
    With ``n_members`` the first ``n_members`` of the ordering are kept;
    without, the prefix whose uniform average has the lowest validation
    log-loss (the shortest on ties), so validation decides the size.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the validation rows.
    y : array-like of int of shape (n_samples,)
        Encoded labels.
    n_members : int, default=None
        Number of members to keep; chosen on validation when None.

    Returns
    -------
    indices : ndarray of int
        The chosen members, ascending.
    weights : ndarray of float
        Uniform weights.

    Examples
    --------
    Members 0 and 1 are identical; member 2 is a bit worse but disagrees:

    >>> probas = [[[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]],
    ...           [[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]],
    ...           [[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]]
    >>> indices, weights = select_diverse(probas, [0, 1, 1], n_members=2)
    >>> indices.tolist(), weights.tolist()
    ([0, 2], [0.5, 0.5])
    """
    probas, y = _check_probas_y(probas, y)
    n_snapshots = probas.shape[0]
    n_members = _check_n_members(n_members, n_snapshots)
    log_loss = member_scores(probas, y)["log_loss"]
    quality = np.exp(log_loss.min() - log_loss)
    disagree = disagreement_matrix(probas)

    order = [int(np.argmin(log_loss))]
    remaining = np.ones(n_snapshots, dtype=bool)
    remaining[order[0]] = False
    while remaining.any():
        score = quality * (1.0 + disagree[:, order].mean(axis=1))
        score[~remaining] = -np.inf
        pick = int(np.argmax(score))
        order.append(pick)
        remaining[pick] = False

    if n_members is None:
        true_proba = _true_class_proba(probas, y)
        # Prefix averages via cumulative sums: row k is the mean of order[:k+1].
        sizes = np.arange(1, n_snapshots + 1)[:, None]
        prefix_loss = _nll(np.cumsum(true_proba[order], axis=0) / sizes)
        n_members = int(np.argmin(prefix_loss)) + 1
    indices = np.sort(order[:n_members])
    return indices, _uniform(n_members)


@validate_params(
    {"probas": ["array-like"], "y": ["array-like"], "indices": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def optimize_weights(probas, y, indices=None):
    """Member weights on the simplex minimising the validation log-loss.

    Minimises the log-loss of the weighted average over a softmax
    parametrisation of the weights with L-BFGS-B and an analytic gradient,
    starting from uniform weights. Deterministic; the result is never worse
    than uniform weights on the validation rows (uniform is returned if the
    optimiser does not improve on it). With few validation rows the weights
    can overfit them.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the validation rows.
    y : array-like of int of shape (n_samples,)
        Encoded labels.
    indices : array-like of int, default=None
        Members to weight; all when None.

    Returns
    -------
    weights : ndarray of shape (len(indices),)
        Non-negative and summing to 1, in the order of ``indices``.

    Examples
    --------
    Member 0 is always right, member 1 always confidently wrong:

    >>> probas = [[[0.9, 0.1], [0.1, 0.9]], [[0.01, 0.99], [0.99, 0.01]]]
    >>> weights = optimize_weights(probas, [0, 1])
    >>> bool(weights[0] > 0.99)
    True
    """
    probas, y = _check_probas_y(probas, y)
    indices = _check_indices(indices, probas.shape[0])
    true_proba = _true_class_proba(probas[indices], y)

    return optimize_simplex(lambda weights: _mixture_nll_and_grad(weights, true_proba),
                            len(indices))


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


def _check_indices(indices, n_snapshots):
    """Validate member indices (all members when None)."""
    if indices is None:
        return np.arange(n_snapshots)
    indices = np.asarray(indices)
    if indices.ndim != 1 or len(indices) < 1 or indices.dtype.kind not in "iu":
        raise ValueError("indices must be a non-empty 1-D array of member indices.")
    if np.any((indices < 0) | (indices >= n_snapshots)):
        raise ValueError(
            f"indices must lie in 0 .. {n_snapshots - 1}, got {indices.tolist()}."
        )
    return indices


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


@validate_params(
    {"probas": ["array-like"], "y": ["array-like"], "indices": ["array-like", None],
     "prior_rows": [Real]},
    prefer_skip_nested_validation=True,
)
def shrink_weights(probas, y, indices=None, prior_rows=PRIOR_ROWS):
    """Member weights fitted on validation rows, shrunk towards the last two members.

    The maximum a posteriori weights under a Dirichlet prior worth
    ``prior_rows`` validation rows whose mean puts equal weight on the last
    two of the members (the most trained snapshots): they minimise ::

        log_loss(weights) - prior_rows / n_samples * sum(prior * log(weights))

    With few validation rows the prior dominates and the weights stay near
    ``[..., 0, 0.5, 0.5]``, where the unregularised optimum
    (:func:`optimize_weights`) would sit on whichever snapshot fits those few
    rows best; with many rows the penalty vanishes (as ``1 / n_samples``) and
    the weights approach that optimum, so an under-trained early snapshot
    still gets weight only where enough rows show that it helps.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the validation rows, oldest
        member first.
    y : array-like of int of shape (n_samples,)
        Encoded labels.
    indices : array-like of int, default=None
        Members to weight, ascending (the prior favours the last two of
        them); all when None.
    prior_rows : float, default=10.0
        Strength of the prior, in validation rows; 0 gives
        :func:`optimize_weights`' optimum.

    Returns
    -------
    weights : ndarray of shape (len(indices),)
        Non-negative and summing to 1, in the order of ``indices``.

    See Also
    --------
    optimize_weights : the unregularised optimum.

    Examples
    --------
    Nine rows on which the oldest snapshot happens to be best: the weights
    stay near the prior (the last two snapshots), while the unregularised
    optimum puts everything on the oldest one:

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 9)
    >>> probas = np.full((4, 9, 3), 0.2)
    >>> probas[:, np.arange(9), y] = [[0.62], [0.59], [0.6], [0.6]]
    >>> optimize_weights(probas, y).round(2).tolist()
    [1.0, 0.0, 0.0, 0.0]
    >>> shrink_weights(probas, y).round(2).tolist()
    [0.0, 0.0, 0.5, 0.5]
    """
    probas, y = _check_probas_y(probas, y)
    indices = _check_indices(indices, probas.shape[0])
    if not np.isfinite(prior_rows) or prior_rows < 0:
        raise ValueError(f"prior_rows must be a non-negative number, got {prior_rows!r}.")
    true_proba = _true_class_proba(probas[indices], y)
    prior = prior_weights(len(indices))
    strength = prior_rows / len(y)

    def loss_and_grad(weights):
        loss, grad = _mixture_nll_and_grad(weights, true_proba)
        penalty, grad_penalty = shrink_penalty(weights, prior, strength)
        return loss + penalty, grad + grad_penalty

    # Start between the prior and uniform: every weight positive, near the answer
    # when the prior dominates.
    return optimize_simplex(loss_and_grad, len(indices),
                            start=0.5 * prior + 0.5 * _uniform(len(indices)))


@validate_params(
    {"probas": ["array-like"], "y": ["array-like"], "selection": [str],
     "n_members": [Integral, None], "weighting": [str], "prior_rows": [Real]},
    prefer_skip_nested_validation=True,
)
def select_members(probas, y, selection, n_members=None, weighting="uniform",
                   prior_rows=PRIOR_ROWS):
    """Choose and weight ensemble members on validation predictions.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the validation rows.
    y : array-like of int of shape (n_samples,)
        Encoded labels.
    selection : {"last", "diverse", "greedy", "all"}
        The last ``n_members`` members (all when None), :func:`select_diverse`,
        :func:`select_greedy` (``n_members`` caps its distinct members) or
        every member (``n_members`` must then be None or the number of
        members).
    n_members : int, default=None
        Number of members; see ``selection``.
    weighting : {"uniform", "optimize", "shrink"}, default="uniform"
        "shrink" re-weights the chosen members with :func:`shrink_weights`
        (fitted on the rows, shrunk towards equal weights on the last two of
        them); "optimize" with :func:`optimize_weights` (the unregularised
        optimum, which over-fits few rows); "uniform" keeps the selection's
        weights, which for "greedy" are its draw counts.
    prior_rows : float, default=10.0
        Strength of the "shrink" prior, in validation rows.

    Returns
    -------
    indices : ndarray of int
        The chosen members, ascending.
    weights : ndarray of float
        Their weights, summing to 1.

    Examples
    --------
    >>> probas = [[[0.6, 0.4], [0.6, 0.4]], [[0.9, 0.1], [0.2, 0.8]]]
    >>> indices, weights = select_members(probas, [0, 1], "last", n_members=1)
    >>> indices.tolist(), weights.tolist()
    ([1], [1.0])
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}.")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
    probas, y = _check_probas_y(probas, y)
    n_snapshots = probas.shape[0]
    n_members = _check_n_members(n_members, n_snapshots)
    if selection == "last":
        indices, weights = select_last(n_snapshots, n_members)
    elif selection == "all":
        if n_members not in (None, n_snapshots):
            raise ValueError(
                f"selection='all' uses all {n_snapshots} members; got "
                f"n_members={n_members}. Use selection='last' to keep fewer."
            )
        indices, weights = select_last(n_snapshots)
    elif selection == "greedy":
        indices, weights = select_greedy(probas, y, n_members)
    else:
        indices, weights = select_diverse(probas, y, n_members)
    if weighting == "optimize":
        weights = optimize_weights(probas, y, indices)
    elif weighting == "shrink":
        weights = shrink_weights(probas, y, indices, prior_rows)
    return indices, weights
