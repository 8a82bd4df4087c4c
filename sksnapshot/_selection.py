"""Choosing and weighting ensemble members from held-out validation predictions.

Every function takes ``probas``, an array of shape
``(n_members, n_samples, n_classes)`` with each member's predicted class
probabilities on the validation rows (members oldest first), and ``y``, the
encoded labels ``0 .. n_classes - 1`` of those rows. A selection is returned
as ``(indices, weights)``: the chosen members in ascending order and their
weights in the average, which sum to 1.
"""

import numpy as np
from scipy.optimize import minimize

from .metrics import _disagreement_rate

__all__ = [
    "disagreement_matrix",
    "ensemble_log_loss",
    "forward_selection",
    "member_scores",
    "optimize_simplex",
    "optimize_weights",
    "regression_member_scores",
    "select_regression_members",
    "select_all",
    "select_diverse",
    "select_greedy",
    "select_last",
    "select_members",
]

# Same floor as sklearn's historical log_loss, so one confidently wrong row
# costs about 34.5 instead of infinity.
_EPS = 1e-15

SELECTIONS = ("last", "diverse", "greedy", "all")
WEIGHTINGS = ("uniform", "optimize")


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
    if y.dtype.kind not in "iub" and not (
        y.dtype.kind == "f" and np.all(y == np.round(y))
    ):
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


def _uniform(n):
    """Uniform weights over n members."""
    return np.full(n, 1.0 / n)


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


def ensemble_log_loss(probas, y, weights):
    """Validation log-loss of the weighted average of the members.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the validation rows.
    y : array-like of int of shape (n_samples,)
        Encoded labels.
    weights : array-like of shape (n_members,)
        Non-negative member weights; normalised to sum to 1.

    Returns
    -------
    log_loss : float

    Examples
    --------
    >>> probas = [[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.4, 0.6]]]
    >>> round(ensemble_log_loss(probas, [0, 1], [0.5, 0.5]), 4)
    0.3567
    """
    probas, y = _check_probas_y(probas, y)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (probas.shape[0],):
        raise ValueError(
            f"weights must have shape ({probas.shape[0]},), got {weights.shape}."
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero.")
    return float(_mixture_log_loss(_true_class_proba(probas, y), weights / weights.sum()))


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


def select_all(n_snapshots):
    """Every snapshot with uniform weights.

    Parameters
    ----------
    n_snapshots : int
        Number of available snapshots.

    Returns
    -------
    indices : ndarray of int
    weights : ndarray of float

    Examples
    --------
    >>> indices, weights = select_all(4)
    >>> indices.tolist(), weights.tolist()
    ([0, 1, 2, 3], [0.25, 0.25, 0.25, 0.25])
    """
    return select_last(n_snapshots)


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
    if indices is None:
        indices = np.arange(probas.shape[0])
    indices = np.asarray(indices)
    if indices.ndim != 1 or len(indices) < 1 or indices.dtype.kind not in "iu":
        raise ValueError("indices must be a non-empty 1-D array of member indices.")
    if np.any((indices < 0) | (indices >= probas.shape[0])):
        raise ValueError(
            f"indices must lie in 0 .. {probas.shape[0] - 1}, got {indices.tolist()}."
        )
    true_proba = _true_class_proba(probas[indices], y)

    def loss_and_grad(weights):
        mixture = weights @ true_proba
        clipped = mixture < _EPS
        mixture = np.maximum(mixture, _EPS)
        # d loss / d weights; clipped rows are flat in the weights.
        grad = -np.mean(np.where(clipped, 0.0, true_proba / mixture), axis=1)
        return -np.mean(np.log(mixture)), grad

    return optimize_simplex(loss_and_grad, len(indices))


def optimize_simplex(loss_and_grad, n):
    """Weights on the probability simplex minimising a validation loss.

    ``loss_and_grad(weights)`` returns the loss of the mixture with these
    weights and its gradient with respect to them. The weights are a softmax
    of free parameters optimised with L-BFGS-B from uniform; the result is
    never worse than uniform weights (uniform is returned otherwise). This is
    the loss-agnostic core of :func:`optimize_weights`, shared by classifiers
    and regressors.

    Examples
    --------
    >>> target = np.array([0.2, 0.8])
    >>> w = optimize_simplex(lambda w: (((w - target) ** 2).sum(), 2 * (w - target)), 2)
    >>> w.round(3).tolist()
    [0.2, 0.8]
    """
    uniform = _uniform(n)
    if n == 1:
        return uniform

    def in_z(z):
        weights = np.exp(z - z.max())
        weights /= weights.sum()
        loss, grad_w = loss_and_grad(weights)
        # Chain rule through the softmax: J = diag(w) - w w^T.
        return loss, weights * (grad_w - weights @ grad_w)

    result = minimize(
        in_z, np.zeros(n), jac=True, method="L-BFGS-B",
        options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-14},
    )
    weights = np.exp(result.x - result.x.max())
    weights /= weights.sum()
    if not np.all(np.isfinite(weights)) or loss_and_grad(weights)[0] > loss_and_grad(uniform)[0]:
        return uniform
    return weights


def select_members(probas, y, selection, n_members=None, weighting="uniform"):
    """Choose and weight ensemble members on validation predictions.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the validation rows.
    y : array-like of int of shape (n_samples,)
        Encoded labels.
    selection : {"last", "diverse", "greedy", "all"}
        :func:`select_last`, :func:`select_diverse`, :func:`select_greedy`
        (``n_members`` caps its distinct members) or :func:`select_all`
        (``n_members`` must then be None or the number of members).
    n_members : int, default=None
        Number of members; see ``selection``.
    weighting : {"uniform", "optimize"}, default="uniform"
        "optimize" re-weights the chosen members with
        :func:`optimize_weights`; "uniform" keeps the selection's weights,
        which for "greedy" are its draw counts.

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
        indices, weights = select_all(n_snapshots)
    elif selection == "greedy":
        indices, weights = select_greedy(probas, y, n_members)
    else:
        indices, weights = select_diverse(probas, y, n_members)
    if weighting == "optimize":
        weights = optimize_weights(probas, y, indices)
    return indices, weights


REGRESSION_SELECTIONS = ("last", "greedy", "all")


def _regression_losses(means, y, variances):
    """Vectorised validation loss of mixtures, for forward selection and weights.

    Squared error of the mixture mean, or, with member variances, the Gaussian
    negative log-likelihood of the mixture's first two moments.
    """
    m = means.reshape(len(means), -1)
    target = y.reshape(-1)
    if variances is None:
        def loss(W):
            return np.mean((W @ m - target) ** 2, axis=-1)
    else:
        second = variances.reshape(len(variances), -1) + m ** 2

        def loss(W):
            mean = W @ m
            var = np.maximum(W @ second - mean ** 2, 1e-12)
            return 0.5 * np.mean(np.log(2 * np.pi * var) + (target - mean) ** 2 / var, axis=-1)
    return loss


def regression_member_scores(means, y, variances=None):
    """Validation mean squared error (and Gaussian NLL) of every member.

    Parameters
    ----------
    means : ndarray of shape (n_members, n_samples, n_outputs)
    y : ndarray of shape (n_samples, n_outputs)
    variances : ndarray like ``means``, default=None
        Members' predictive variances (mean-variance members).

    Returns
    -------
    scores : dict
        ``"mse"`` and, with variances, ``"gaussian_nll"``: arrays of shape
        ``(n_members,)``.

    Examples
    --------
    >>> means = np.array([[[1.0], [2.0]], [[0.0], [0.0]]])
    >>> regression_member_scores(means, np.array([[1.0], [2.0]]))["mse"].tolist()
    [0.0, 2.5]
    """
    eye = np.eye(len(means))
    scores = {"mse": _regression_losses(means, y, None)(eye)}
    if variances is not None:
        scores["gaussian_nll"] = _regression_losses(means, y, variances)(eye)
    return scores


def select_regression_members(means, y, selection, n_members=None, weighting="uniform",
                              variances=None):
    """Choose and weight regression members on validation rows.

    The validation loss is the squared error of the weighted mean or, when
    ``variances`` are given, the Gaussian NLL of the mixture. ``selection`` is
    "last", "greedy" (:func:`forward_selection` on that loss) or "all";
    ``weighting="optimize"`` puts the weights on the simplex minimising it.

    Returns
    -------
    indices, weights : ndarray

    Examples
    --------
    >>> means = np.array([[[0.0], [0.0]], [[1.0], [2.0]]])
    >>> indices, weights = select_regression_members(means, np.array([[1.0], [2.0]]), "greedy")
    >>> indices.tolist(), weights.tolist()
    ([1], [1.0])
    """
    if selection not in REGRESSION_SELECTIONS:
        raise ValueError(f"selection must be one of {REGRESSION_SELECTIONS} for regression, "
                         f"got {selection!r}.")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
    n_snapshots = len(means)
    loss = _regression_losses(means, y, variances)
    if selection == "greedy":
        indices, weights = forward_selection(loss, n_snapshots, n_members)
    else:
        indices, weights = select_last(n_snapshots, n_members)
    if weighting == "optimize":
        sub = _regression_losses(means[indices], y,
                                 None if variances is None else variances[indices])
        weights = optimize_simplex(lambda w: (float(sub(w)), _numeric_grad(sub, w)),
                                   len(indices))
    return indices, weights


def _numeric_grad(loss, w, h=1e-6):
    """Central differences of ``loss`` at ``w``, all coordinates in one call."""
    steps = np.eye(len(w)) * h
    return (loss(w + steps) - loss(w - steps)) / (2 * h)
