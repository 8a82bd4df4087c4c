"""Post-hoc calibration of the combined ensemble on validation rows.

Classification: temperature scaling of the ensemble's *combined* log-probabilities
(one scalar ``T > 0``, ``softmax(log p / T)``, fitted after averaging; Guo et al.
2017, Ashukha et al. 2020). Regression: one scale of the predictive variance.
"""

import numpy as np
from scipy.optimize import minimize_scalar

from ._kernel import LOG_PROBA_FLOOR, floor_log, log_temper, temper

__all__ = ["apply_temperature", "fit_temperature", "fit_variance_scale"]

# Temperatures are searched in [1 / _T_BOUND, _T_BOUND] (on a log scale).
_T_BOUND = 100.0
# Strength of the Gaussian prior on log T, chosen on benchmarks/small_data.py: without
# it, a few validation rows that are all classified correctly drive T towards 0.
TEMPERATURE_PRIOR = 10.0
# Pseudo-counts of Laplace's rule of succession behind smoothing="auto" (one error and
# one success). Not the default: benchmarks/one_run_calibration.py and small_data.py
# found it better for over-confident nets and worse for accurate, confident ones.
_SUCCESSION = 1.0


def _check_log_probas(log_probas, y=None):
    """Validate finite-or-(-inf) (n_samples, n_classes) log-probabilities (and labels)."""
    log_probas = np.asarray(log_probas, dtype=np.float64)
    if log_probas.ndim != 2 or min(log_probas.shape) < 1:
        raise ValueError(
            f"log_probas must be a non-empty 2-D array (n_samples, n_classes), "
            f"got shape {log_probas.shape}."
        )
    if np.any(np.isnan(log_probas)) or np.any(log_probas == np.inf):
        raise ValueError("log_probas contains NaN or +infinity.")
    if y is None:
        return log_probas
    y = np.asarray(y)
    if y.ndim == 2:  # probabilities (soft targets), e.g. a teacher ensemble's
        if (y.shape != log_probas.shape or not np.all(np.isfinite(y)) or np.any(y < 0)
                or not np.allclose(y.sum(axis=1), 1, atol=1e-4)):
            raise ValueError(f"Soft targets y must be probabilities of shape "
                             f"{log_probas.shape} (rows summing to 1).")
        return log_probas, y.astype(np.float64)
    if y.shape != (len(log_probas),) or y.dtype.kind not in "iu":
        raise ValueError(
            f"y must hold one integer label per row ({len(log_probas)}), got "
            f"shape {y.shape} and dtype {y.dtype}."
        )
    if np.any((y < 0) | (y >= log_probas.shape[1])):
        raise ValueError(f"y contains labels outside 0 .. {log_probas.shape[1] - 1}.")
    return log_probas, y.astype(np.intp)


def _floor(log_probas):
    """Replace -inf (a probability of exactly 0) by log(1e-15), the kernel's floor."""
    return np.maximum(log_probas, LOG_PROBA_FLOOR)


def _tempered_nll(log_probas, y, temperature):
    """Summed negative log-likelihood of ``softmax(log_probas / temperature)``."""
    tempered = log_temper(log_probas, temperature)  # the one tempering, as predict applies it
    if y.ndim == 2:  # soft targets: the cross-entropy to them
        return -float(np.sum(y * tempered))
    return -float(np.sum(tempered[np.arange(len(y)), y]))


def _smoothed_targets(y, n_classes, smoothing):
    """Labels as probabilities: ``1 - smoothing`` on the label, the rest shared by the others.

    ``"auto"``: ``smoothing = 1 / (n + 2)`` for ``n`` rows, the chance of an error
    after ``n`` correct predictions by Laplace's rule of succession.
    """
    if isinstance(smoothing, str):
        if smoothing != "auto":
            raise ValueError(f"smoothing must be 'auto' or a number in [0, 1), got "
                             f"{smoothing!r}.")
        smoothing = _SUCCESSION / (len(y) + 2 * _SUCCESSION)
    elif not (np.isfinite(smoothing) and 0 <= smoothing < 1):
        raise ValueError(f"smoothing must be 'auto' or a number in [0, 1), got {smoothing!r}.")
    if smoothing == 0 or n_classes < 2:
        return y
    targets = np.full((len(y), n_classes), smoothing / (n_classes - 1))
    targets[np.arange(len(y)), y] = 1 - smoothing
    return targets


def fit_temperature(log_probas, y, prior_strength=TEMPERATURE_PRIOR, smoothing=0.0):
    """The temperature minimising the log-loss of ``softmax(log_probas / T)``.

    Fitted on held-out rows, after the members are combined: ``log_probas`` are
    the logs of the ensemble's averaged probabilities. ``T > 1`` softens
    over-confident predictions, ``T < 1`` sharpens under-confident ones; the
    argmax, hence accuracy, never changes.

    ``T`` is the maximum a posteriori estimate under a Gaussian prior on
    ``log T`` centred at 0 (``T = 1``): it minimises ::

        sum of the rows' negative log-likelihoods + prior_strength * log(T) ** 2

    over ``log T`` in ``[-log 100, log 100]`` (bounded Brent). The prior
    matters only with few rows: on a handful of rows that are all classified
    correctly the likelihood alone keeps improving as ``T`` goes to 0, and such
    a sharpened ensemble is ruinously over-confident on the next mistake.

    With ``smoothing="auto"`` the labels are smoothed first: each row's target
    puts ``1 - 1 / (n + 2)`` on its label, by Laplace's rule of succession the
    chance that the next of ``n`` correctly classified rows is classified
    correctly too. Four validation rows that an over-confident net gets right
    then say that its accuracy is about 5/6, not 1, so its temperature rises
    above 1; as ``n`` grows the smoothing vanishes. It is not the default: on
    a handful of rows it cannot tell an over-confident net (whose errors are
    confident) from an accurate, confident one, and it softens both
    (``benchmarks/results/one_run_calibration.md``, ``small_data.md``).

    Parameters
    ----------
    log_probas : array-like of shape (n_samples, n_classes)
        Log-probabilities (or logits: any per-row shift gives the same fit)
        on the validation rows. ``-inf`` (a probability of 0) is floored at
        ``log(1e-15)``.
    y : array-like of int of shape (n_samples,), or of shape (n_samples, n_classes)
        Encoded labels ``0 .. n_classes - 1``; or probabilities (soft
        targets, e.g. a teacher ensemble's), whose cross-entropy is
        minimised instead.
    prior_strength : float, default=10.0
        Weight of ``log(T) ** 2`` against the summed log-loss (a prior
        standard deviation of ``1 / sqrt(2 * prior_strength)``, about 0.22,
        on ``log T``); 0 fits the likelihood alone.
    smoothing : "auto" or float in [0, 1), default=0.0
        Probability moved from each row's label to the other classes (shared
        equally) before fitting; ``"auto"`` is ``1 / (n_samples + 2)``, 0
        fits the labels as they are. Soft targets are never smoothed (they
        carry their own uncertainty; "auto" leaves them as they are).

    Returns
    -------
    temperature : float
        Positive.

    See Also
    --------
    apply_temperature : use the fitted temperature.

    References
    ----------
    C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern
    Neural Networks", ICML 2017. A. Ashukha, A. Lyzhov, D. Molchanov,
    D. Vetrov, "Pitfalls of In-Domain Uncertainty Estimation and Ensembling
    in Deep Learning", ICLR 2020.

    Examples
    --------
    Logits twice as confident as they should be (5,000 rows: the prior hardly
    matters):

    >>> rng = np.random.default_rng(0)
    >>> logits = 3 * rng.normal(size=(5000, 4))
    >>> y = np.array([rng.choice(4, p=np.exp(row) / np.exp(row).sum()) for row in logits / 2])
    >>> round(fit_temperature(logits, y), 1)
    2.0

    Four rows classified correctly and confidently: the labels alone sharpen
    (``T < 1``), smoothed by the rule of succession they soften:

    >>> log_p = np.log([[0.99, 0.01], [0.02, 0.98], [0.97, 0.03], [0.01, 0.99]])
    >>> y = np.array([0, 1, 0, 1])
    >>> fit_temperature(log_p, y) < 1 < fit_temperature(log_p, y, smoothing="auto")
    True
    """
    log_probas, y = _check_log_probas(log_probas, y)
    if not np.isfinite(prior_strength) or prior_strength < 0:
        raise ValueError(
            f"prior_strength must be a non-negative number, got {prior_strength!r}.")
    if y.ndim == 1:
        y = _smoothed_targets(y, log_probas.shape[1], smoothing)
    elif smoothing != "auto" and smoothing != 0:
        raise ValueError("smoothing applies to labels; soft targets y are not smoothed "
                         f"(pass smoothing=0 or 'auto'), got {smoothing!r}.")
    log_probas = _floor(log_probas)

    def objective(log_t):
        return _tempered_nll(log_probas, y, np.exp(log_t)) + prior_strength * log_t ** 2

    bound = np.log(_T_BOUND)
    result = minimize_scalar(objective, bounds=(-bound, bound), method="bounded",
                             options={"xatol": 1e-6})
    # Never worse than leaving the probabilities alone, on the rows it was fitted on.
    if not np.isfinite(result.fun) or result.fun > objective(0.0):
        return 1.0
    return float(np.exp(result.x))


def apply_temperature(log_probas, temperature):
    """Probabilities ``softmax(log_probas / temperature)``.

    Parameters
    ----------
    log_probas : array-like of shape (n_samples, n_classes)
        Log-probabilities (or logits) of the combined ensemble; ``-inf`` (a
        probability of 0) is floored at ``log(1e-15)``.
    temperature : float
        A positive temperature, e.g. from :func:`fit_temperature`.

    Returns
    -------
    proba : ndarray of shape (n_samples, n_classes)
        Rows summing to 1 (float64).

    Examples
    --------
    >>> log_p = np.log([[0.8, 0.2]])
    >>> apply_temperature(log_p, 1.0).round(3).tolist()
    [[0.8, 0.2]]
    >>> apply_temperature(log_p, 1e6).round(3).tolist()
    [[0.5, 0.5]]
    """
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
    # The kernel's arithmetic (what predict_proba and the exported module compute).
    return temper(floor_log(_check_log_probas(log_probas)), temperature)


def fit_variance_scale(mean, variance, y, target_variance=None):
    """The factor ``s`` maximising the Gaussian likelihood of ``N(mean, s * variance)``.

    Closed form: ``s = mean((y - mean)^2 / variance)``; with
    ``target_variance`` (targets that are distributions ``N(y,
    target_variance)``, e.g. a teacher ensemble's predictions) ``s =
    mean((target_variance + (y - mean)^2) / variance)``, which minimises the
    Kullback-Leibler divergence from them. Fitted on validation
    rows, it rescales the ensemble's predictive variance (``return_std``
    becomes ``sqrt(s) * std``) so that the standardised residuals have unit
    variance; it does not change the predicted mean.

    Parameters
    ----------
    mean : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Predicted means on the validation rows.
    variance : array-like of the same shape
        Predicted variances; rows with variance 0 are left out.
    y : array-like of the same shape
        Targets.
    target_variance : array-like of the same shape, default=None
        The targets' own variances; None for plain targets.

    Returns
    -------
    scale : float
        Positive; 1.0 when no row has a positive variance.

    Examples
    --------
    Residuals three times wider than the predicted deviation:

    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(scale=3.0, size=10000)
    >>> round(fit_variance_scale(np.zeros_like(y), np.ones_like(y), y) ** 0.5, 1)
    3.0
    """
    mean, variance, y = (np.asarray(a, dtype=np.float64) for a in (mean, variance, y))
    if not mean.shape == variance.shape == y.reshape(mean.shape).shape:
        raise ValueError(f"mean, variance and y must have the same shape, got "
                         f"{mean.shape}, {variance.shape} and {y.shape}.")
    # Rows without spread (e.g. a single squared-error member) carry no scale.
    keep = variance > 0
    if not keep.any():
        return 1.0
    spread = (y.reshape(mean.shape) - mean) ** 2
    if target_variance is not None:
        spread = spread + np.asarray(target_variance, dtype=np.float64).reshape(mean.shape)
    scale = float(np.mean(spread[keep] / variance[keep]))
    if not np.isfinite(scale) or scale <= 0:
        return 1.0
    return scale
