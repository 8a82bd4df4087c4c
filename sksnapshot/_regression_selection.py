"""Choosing and weighting regression members from held-out validation predictions.

``means`` (and, for mean-variance members, ``variances``) have shape
``(n_members, n_samples, n_outputs)``: each member's prediction on the
validation rows, oldest first; ``y`` has shape ``(n_samples, n_outputs)``.
Losses are in nats per row, so that the "shrink" prior of
:func:`sksnapshot._selection.shrink_weights` means the same here: the Gaussian
negative log-likelihood of the mixture's first two moments for mean-variance
members, else the Gaussian likelihood with the variance profiled out,
``0.5 * log(MSE)`` (a monotone function of the squared error).
"""

import numpy as np

from ._selection import (
    PRIOR_ROWS,
    WEIGHTINGS,
    _check_n_members,
    _uniform,
    forward_selection,
    optimize_simplex,
    prior_weights,
    select_last,
    shrink_penalty,
)

__all__ = []  # nothing public: the regressor is the interface

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


def _nats_per_row(means, y, variances):
    """The validation loss in nats per row: Gaussian NLL, or 0.5 * log(MSE)."""
    loss = _regression_losses(means, y, variances)
    if variances is not None:
        return loss
    return lambda W: 0.5 * np.log(np.maximum(loss(W), 1e-300))


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


def shrink_regression_weights(means, y, variances=None, prior_rows=PRIOR_ROWS):
    """Regression member weights shrunk towards the last two members.

    The classifier's rule (:func:`sksnapshot._selection.shrink_weights`) on
    the regression loss in nats per row: minimises
    ``loss(w) - prior_rows / n_samples * sum(prior * log(w))``.

    Examples
    --------
    The oldest member is the most accurate (noise 0.3 against 0.5). On five
    rows the weights stay near the prior; on 2,000 they find the optimum,
    which also mixes in the others:

    >>> rng = np.random.default_rng(0)
    >>> def members(n):
    ...     y = rng.normal(size=(n, 1))
    ...     return np.stack([y + rng.normal(scale=s, size=y.shape)
    ...                      for s in (0.3, 0.5, 0.5, 0.5)]), y
    >>> shrink_regression_weights(*members(5)).round(2).tolist()
    [0.0, 0.0, 0.53, 0.47]
    >>> shrink_regression_weights(*members(2000)).round(2).tolist()
    [0.49, 0.18, 0.16, 0.18]
    """
    n = len(means)
    if n == 1:
        return _uniform(1)
    loss = _nats_per_row(means, y, variances)
    prior = prior_weights(n)
    strength = prior_rows / len(y)

    def loss_and_grad(w):
        penalty, grad_penalty = shrink_penalty(w, prior, strength)
        return float(loss(w)) + penalty, _numeric_grad(loss, w) + grad_penalty

    return optimize_simplex(loss_and_grad, n, start=0.5 * prior + 0.5 * _uniform(n))


def select_regression_members(means, y, selection, n_members=None, weighting="uniform",
                              variances=None, prior_rows=PRIOR_ROWS):
    """Choose and weight regression members on validation rows.

    The validation loss is the squared error of the weighted mean or, when
    ``variances`` are given, the Gaussian NLL of the mixture. ``selection`` is
    "last", "greedy" (:func:`~sksnapshot._selection.forward_selection` on that
    loss) or "all". ``weighting="optimize"`` puts the weights on the simplex
    minimising it; "shrink" uses :func:`shrink_regression_weights`; "uniform"
    keeps the selection's weights.

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
    n_members = _check_n_members(n_members, n_snapshots)
    if selection == "all" and n_members not in (None, n_snapshots):
        raise ValueError(
            f"selection='all' uses all {n_snapshots} members; got n_members={n_members}. "
            "Use selection='last' to keep fewer."
        )
    loss = _regression_losses(means, y, variances)
    if selection == "greedy":
        indices, weights = forward_selection(loss, n_snapshots, n_members)
    else:
        indices, weights = select_last(n_snapshots, n_members)
    sub_var = None if variances is None else variances[indices]
    if weighting == "optimize":
        sub = _regression_losses(means[indices], y, sub_var)
        weights = optimize_simplex(lambda w: (float(sub(w)), _numeric_grad(sub, w)),
                                   len(indices))
    elif weighting == "shrink":
        weights = shrink_regression_weights(means[indices], y, sub_var, prior_rows)
    return indices, weights


def _numeric_grad(loss, w, h=1e-6):
    """Central differences of ``loss`` at ``w``, all coordinates in one call."""
    steps = np.eye(len(w)) * h
    return (loss(w + steps) - loss(w - steps)) / (2 * h)
