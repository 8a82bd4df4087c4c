"""Choosing and weighting regression members from held-out validation predictions.

``means`` (and, for mean-variance members, ``variances``) have shape
``(n_members, n_samples, n_outputs)``: each member's prediction on the
validation rows, oldest first; ``y`` has shape ``(n_samples, n_outputs)``.
The loss of a mixture is the squared error of its mean or, with member
variances, the Gaussian negative log-likelihood of its first two moments. The
"shrink" prior of :func:`shrink_weights` is weighed against the loss in nats
per row, so that it means the same here: that NLL, or else the Gaussian
likelihood with the variance profiled out, ``0.5 * log(MSE)`` (a monotone
function of the squared error).
"""

import numpy as np

from ._core import PRIOR_ROWS, MixtureLoss, shrunk_weights

__all__ = ["regression_member_scores", "shrink_regression_weights"]


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


class RegressionLoss(MixtureLoss):
    """The validation loss of mixtures of regressors: squared error, or Gaussian NLL."""

    regression = True

    def __init__(self, means, y, variances=None):
        self.means, self.y, self.variances = means, y, variances
        self.n_members, self.n_rows = len(means), len(y)
        self._loss = _regression_losses(means, y, variances)
        self._nats = _nats_per_row(means, y, variances)

    def __call__(self, W):
        return self._loss(W)

    def loss_and_grad(self, w):
        return float(self._loss(w)), _numeric_grad(self._loss, w)

    def nats_and_grad(self, w):
        return float(self._nats(w)), _numeric_grad(self._nats, w)

    def subset(self, indices):
        return RegressionLoss(self.means[indices], self.y,
                              None if self.variances is None else self.variances[indices])


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

    The classifier's rule (:func:`shrink_weights`) on
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
    return shrunk_weights(RegressionLoss(means, y, variances), prior_rows)


def _numeric_grad(loss, w, h=1e-6):
    """Central differences of ``loss`` at ``w``, all coordinates in one call."""
    steps = np.eye(len(w)) * h
    return (loss(w + steps) - loss(w - steps)) / (2 * h)
