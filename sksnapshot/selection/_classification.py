"""Member selection for classifiers: the log-loss of mixtures of predicted probabilities.

Every function takes ``probas``, an array of shape
``(n_members, n_samples, n_classes)`` with each member's predicted class
probabilities on the validation rows (members oldest first), and ``y``, the
encoded labels ``0 .. n_classes - 1`` of those rows. A selection is returned
as ``(indices, weights)``: the chosen members in ascending order and their
weights in the average, which sum to 1.
"""

from numbers import Integral, Real

import numpy as np

from .._array_checks import check_member_probas, holds_integers
from .._compat import validate_params
from ..metrics import disagreement_matrix
from ._core import (
    PRIOR_ROWS,
    MixtureLoss,
    _uniform,
    check_n_members,
    forward_selection,
    optimized_weights,
    shrunk_weights,
)

__all__ = [
    "member_scores",
    "optimize_weights",
    "select_diverse",
    "select_greedy",
    "shrink_weights",
]

# Same floor as sklearn's historical log_loss, so one confidently wrong row
# costs about 34.5 instead of infinity.
_EPS = 1e-15


def _check_probas_y(probas, y):
    """Validate probas and encoded labels y; return them as arrays."""
    probas = check_member_probas(probas)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != probas.shape[1]:
        raise ValueError(
            f"y must be 1-D with one label per validation row ({probas.shape[1]}), "
            f"got shape {y.shape}."
        )
    if not holds_integers(y):
        raise ValueError(f"y must hold encoded integer labels, got dtype {y.dtype}.")
    n_classes = probas.shape[2]
    if np.any((y < 0) | (y >= n_classes)):
        raise ValueError(
            f"y contains labels outside 0 .. {n_classes - 1}: "
            f"{np.unique(y[(y < 0) | (y >= n_classes)]).tolist()}."
        )
    return probas, y.astype(np.intp)


def _true_class_proba(probas, y):
    """Probability each member gives the true class of each row, shape (M, n)."""
    return probas[:, np.arange(len(y)), y]


def _nll(true_proba):
    """Mean negative log of true-class probabilities along the last axis."""
    return -np.mean(np.log(np.clip(true_proba, _EPS, 1.0)), axis=-1)


def _mixture_nll_and_grad(weights, true_proba):
    """Log-loss of the weighted average of members and its gradient in the weights."""
    mixture = weights @ true_proba
    clipped = mixture < _EPS
    mixture = np.maximum(mixture, _EPS)
    # d loss / d weights; clipped rows are flat in the weights.
    grad = -np.mean(np.where(clipped, 0.0, true_proba / mixture), axis=1)
    return -np.mean(np.log(mixture)), grad


class LogLoss(MixtureLoss):
    """The validation log-loss of mixtures of classifiers (already validated inputs)."""

    def __init__(self, probas, y):
        self.probas, self.y = probas, y
        # Computed from the members' own probas, never sliced from another LogLoss's: the
        # memory layout decides the summation order of ``W @ true_proba``.
        self.true_proba = _true_class_proba(probas, y)
        self.n_members, self.n_rows = len(probas), len(y)

    def __call__(self, W):
        return _nll(W @ self.true_proba)

    def loss_and_grad(self, w):
        return _mixture_nll_and_grad(w, self.true_proba)

    def subset(self, indices):
        return LogLoss(self.probas[indices], self.y)

    @classmethod
    def of(cls, probas, y):
        """The loss of validated ``probas`` and ``y``."""
        return cls(*_check_probas_y(probas, y))


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
    loss = LogLoss.of(probas, y)
    return forward_selection(loss, loss.n_members, n_members, max_steps)


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
    loss = LogLoss.of(probas, y)
    return diverse_members(loss, check_n_members(n_members, loss.n_members))


def diverse_members(loss, n_members):
    """:func:`select_diverse` on a :class:`LogLoss` (``n_members`` already checked)."""
    n_snapshots = loss.n_members
    log_loss = _nll(loss.true_proba)
    quality = np.exp(log_loss.min() - log_loss)
    disagree = disagreement_matrix(loss.probas)

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
        # Prefix averages via cumulative sums: row k is the mean of order[:k+1].
        sizes = np.arange(1, n_snapshots + 1)[:, None]
        prefix_loss = _nll(np.cumsum(loss.true_proba[order], axis=0) / sizes)
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
    loss = LogLoss.of(probas, y)
    return optimized_weights(loss.subset(_check_indices(indices, loss.n_members)))


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
    loss = LogLoss.of(probas, y)
    indices = _check_indices(indices, loss.n_members)
    if not np.isfinite(prior_rows) or prior_rows < 0:
        raise ValueError(f"prior_rows must be a non-negative number, got {prior_rows!r}.")
    return shrunk_weights(loss.subset(indices), prior_rows)
