"""Calibration, quality and uncertainty metrics for probabilistic ensembles.

Every calibration metric takes true labels and a ``(n_samples, n_classes)``
matrix of predicted probabilities whose column ``k`` belongs to class ``k``
(or to ``classes[k]`` when ``classes`` is given, e.g. an estimator's
``classes_``). The uncertainty decompositions take the members' outputs,
``(n_members, n_samples, ...)``, and their weights.
"""

import numpy as np
from sklearn.metrics import log_loss
from sklearn.utils import Bunch
from sklearn.utils.validation import check_array, check_consistent_length

from ._array_checks import check_member_probas, holds_integers
from ._compat import validate_params
from ._kernel import mixture

__all__ = [
    "brier_score",
    "disagreement",
    "disagreement_matrix",
    "expected_calibration_error",
    "negative_log_likelihood",
    "reliability_curve",
    "uncertainty_decomposition",
    "variance_decomposition",
]


def _check_proba(proba, name="proba"):
    """Validate a finite 2-D float matrix of probabilities."""
    proba = check_array(proba, dtype=np.float64, input_name=name)
    if proba.min() < 0 or proba.max() > 1:
        raise ValueError(f"{name} must contain probabilities in [0, 1].")
    return proba


def _encode_labels(y_true, n_classes, classes):
    """Map labels to column indices 0 .. n_classes - 1, through ``classes`` if given."""
    y_true = check_array(y_true, ensure_2d=False, dtype=None, input_name="y_true")
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y_true.shape}.")
    if classes is None:
        if not holds_integers(y_true):  # anything else needs an explicit column order
            raise ValueError(
                "y_true must hold integer labels 0 .. n_classes - 1; pass "
                "`classes` to use other labels (e.g. strings)."
            )
        codes = y_true.astype(np.intp)
        bad = (codes < 0) | (codes >= n_classes)
        if np.any(bad):
            raise ValueError(
                f"y_true contains labels outside 0 .. {n_classes - 1}: "
                f"{np.unique(y_true[bad]).tolist()}; pass `classes` to map them."
            )
        return codes
    classes = np.asarray(classes)
    if classes.ndim != 1 or len(classes) != n_classes:
        raise ValueError(
            f"classes must list one label per column of proba ({n_classes}), "
            f"got shape {classes.shape}."
        )
    if len(np.unique(classes)) != n_classes:
        raise ValueError("classes must not contain duplicates.")
    order = np.argsort(classes)
    try:
        pos = np.searchsorted(classes, y_true, sorter=order)
    except TypeError:
        # Labels not comparable with classes (e.g. strings vs ints).
        raise ValueError(
            f"y_true labels (dtype {y_true.dtype}) cannot be compared with "
            f"classes (dtype {classes.dtype})."
        ) from None
    codes = order[np.minimum(pos, n_classes - 1)]
    bad = classes[codes] != y_true
    if np.any(bad):
        raise ValueError(
            f"y_true contains labels not in classes: {np.unique(y_true[bad]).tolist()}."
        )
    return codes


def _check_targets(y_true, proba, classes):
    """Validate inputs and return (encoded labels, probability matrix)."""
    proba = _check_proba(proba)
    check_consistent_length(y_true, proba)
    return _encode_labels(y_true, proba.shape[1], classes), proba


def _disagreement_rate(labels_a, labels_b):
    """Fraction of positions along the last axis where two broadcastable label arrays differ."""
    return np.mean(labels_a != labels_b, axis=-1)


def brier_score(y_true, proba, classes=None):
    """Multi-class Brier score.

    The mean over rows of the squared distance between the predicted
    probabilities and the one-hot encoded true label; 0 is perfect, 2 the
    worst. For two classes it is twice
    :func:`sklearn.metrics.brier_score_loss` of the positive class.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels: integers 0 .. n_classes - 1, or labels from ``classes``.
    proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities.
    classes : array-like of shape (n_classes,), default=None
        Label of each column of ``proba``.

    Returns
    -------
    score : float

    Examples
    --------
    >>> brier_score([0, 1], [[0.8, 0.2], [0.5, 0.5]])
    0.29
    >>> brier_score(["cat", "dog"], [[1.0, 0.0], [0.0, 1.0]], classes=["cat", "dog"])
    0.0
    """
    codes, proba = _check_targets(y_true, proba, classes)
    onehot = np.eye(proba.shape[1])[codes]
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def reliability_curve(y_true, proba, n_bins=15, classes=None):
    """Top-label reliability diagram data.

    Rows are grouped by their confidence (largest predicted probability) into
    ``n_bins`` equal-width bins ``((b - 1) / n_bins, b / n_bins]``; for every
    non-empty bin the mean confidence and the accuracy of the argmax
    prediction are returned. A calibrated model has the two equal.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels: integers 0 .. n_classes - 1, or labels from ``classes``.
    proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities.
    n_bins : int, default=15
        Number of equal-width confidence bins on [0, 1].
    classes : array-like of shape (n_classes,), default=None
        Label of each column of ``proba``.

    Returns
    -------
    mean_confidence, accuracy : ndarray of shape (n_nonempty_bins,)
        Per non-empty bin, in increasing order of confidence.
    counts : ndarray of int of shape (n_nonempty_bins,)
        Number of rows in each of those bins.

    Examples
    --------
    >>> conf, acc, counts = reliability_curve(
    ...     [0, 0, 1, 1], [[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]], n_bins=5)
    >>> conf.tolist(), acc.tolist(), counts.tolist()
    ([0.6, 0.9], [0.5, 1.0], [2, 2])
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
    codes, proba = _check_targets(y_true, proba, classes)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == codes
    # Bins are closed on the right as in Guo et al.: a confidence of exactly
    # b / n_bins belongs to bin b, and a confidence of 1 to the last bin.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges, right=True) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    nonempty = counts > 0
    counts = counts[nonempty]
    return conf_sum[nonempty] / counts, correct_sum[nonempty] / counts, counts


def expected_calibration_error(y_true, proba, n_bins=15, classes=None):
    """Top-label expected calibration error (Guo et al., 2017).

    ``sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|`` over the
    equal-width confidence bins of :func:`reliability_curve`.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels: integers 0 .. n_classes - 1, or labels from ``classes``.
    proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities.
    n_bins : int, default=15
        Number of equal-width confidence bins on [0, 1].
    classes : array-like of shape (n_classes,), default=None
        Label of each column of ``proba``.

    Returns
    -------
    ece : float
        Between 0 (calibrated) and 1.

    Examples
    --------
    >>> round(expected_calibration_error(
    ...     [0, 0, 1, 1], [[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]], n_bins=5), 6)
    0.1
    """
    confidence, accuracy, counts = reliability_curve(y_true, proba, n_bins, classes)
    return float(np.sum(counts * np.abs(accuracy - confidence)) / counts.sum())


def negative_log_likelihood(y_true, proba, classes=None):
    """Mean negative log-likelihood of the true labels (log-loss).

    A thin wrapper over :func:`sklearn.metrics.log_loss` that always passes
    every class, so it also works on rows lacking some classes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels: integers 0 .. n_classes - 1, or labels from ``classes``.
    proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities.
    classes : array-like of shape (n_classes,), default=None
        Label of each column of ``proba``.

    Returns
    -------
    nll : float

    Examples
    --------
    >>> round(negative_log_likelihood([0, 0], [[0.5, 0.3, 0.2], [0.25, 0.5, 0.25]]), 6)
    1.039721
    """
    codes, proba = _check_targets(y_true, proba, classes)
    # Encode here rather than pass ``classes`` as ``labels``: sklearn sorts
    # ``labels``, which would misalign columns for an unsorted ``classes``.
    return float(log_loss(codes, proba, labels=np.arange(proba.shape[1])))


def disagreement(proba_a, proba_b):
    """Fraction of rows on which two models predict different labels.

    Parameters
    ----------
    proba_a, proba_b : array-like of shape (n_samples, n_classes)
        Predicted probabilities of the two models on the same rows.

    Returns
    -------
    rate : float
        Between 0 (same argmax everywhere) and 1.

    See Also
    --------
    disagreement_matrix : the rate for every pair of an ensemble's members.

    Examples
    --------
    >>> disagreement([[0.9, 0.1], [0.4, 0.6]], [[0.6, 0.4], [0.7, 0.3]])
    0.5
    """
    proba_a = _check_proba(proba_a, "proba_a")
    proba_b = _check_proba(proba_b, "proba_b")
    if proba_a.shape != proba_b.shape:
        raise ValueError(
            f"proba_a and proba_b must have the same shape, got {proba_a.shape} "
            f"and {proba_b.shape}."
        )
    return float(_disagreement_rate(proba_a.argmax(axis=1), proba_b.argmax(axis=1)))


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

    See Also
    --------
    disagreement : the same rate for two models.

    Examples
    --------
    >>> probas = [[[0.9, 0.1], [0.2, 0.8]],
    ...           [[0.6, 0.4], [0.7, 0.3]],
    ...           [[0.3, 0.7], [0.4, 0.6]]]
    >>> disagreement_matrix(probas).tolist()
    [[0.0, 0.5, 0.5], [0.5, 0.0, 1.0], [0.5, 1.0, 0.0]]
    """
    labels = check_member_probas(probas).argmax(axis=2)
    return _disagreement_rate(labels[:, None, :], labels[None, :, :])


def _check_weights(weights, n_members):
    """Member weights as float64 summing to 1 (uniform when None)."""
    if weights is None:
        return np.full(n_members, 1.0 / n_members)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(weights) != n_members:
        raise ValueError(f"weights has {len(weights)} entries for {n_members} members.")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero.")
    return weights / weights.sum()


def _entropy(proba):
    """Shannon entropy (nats) along the last axis, with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(proba > 0, proba * np.log(proba), 0.0)
    return -terms.sum(axis=-1)


@validate_params(
    {"member_probas": ["array-like"], "weights": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def uncertainty_decomposition(member_probas, weights=None):
    r"""Split an ensemble's predictive entropy into aleatoric and epistemic parts.

    For members :math:`i` with weights :math:`w_i` (summing to 1) and class
    probabilities :math:`p_i(y \mid x)`, the ensemble predicts the mixture
    :math:`\bar p = \sum_i w_i p_i`, and per row (entropies in nats):

    .. math::

       \underbrace{H[\bar p]}_{\text{total}}
       = \underbrace{\textstyle\sum_i w_i H[p_i]}_{\text{aleatoric}}
       + \underbrace{\textstyle\sum_i w_i \mathrm{KL}(p_i \,\|\, \bar p)}_{\text{epistemic}}

    with :math:`H[p] = -\sum_k p_k \log p_k`. The epistemic part is the mutual
    information between the label and the member (Depeweg et al., 2018): zero
    when every member predicts the same probabilities, at most
    :math:`\log` (number of members) and at most :math:`\log K` for
    :math:`K` classes. The disagreement is the weighted share of the members
    whose label (argmax) differs from the ensemble's:
    :math:`\sum_i w_i [\arg\max p_i \ne \arg\max \bar p]`.

    Parameters
    ----------
    member_probas : array-like of shape (n_members, n_samples, n_classes)
        Each member's predicted probabilities (rows summing to 1).
    weights : array-like of shape (n_members,), default=None
        The members' weights; normalised to sum to 1. None: equal weights.

    Returns
    -------
    result : sklearn.utils.Bunch
        With arrays of shape (n_samples,), float64:

        - ``total``: the entropy of the mixture :math:`H[\bar p]`;
        - ``aleatoric``: the expected member entropy :math:`\sum_i w_i H[p_i]`;
        - ``epistemic``: the mutual information, ``total - aleatoric``
          (computed as the weighted KL divergences, so never negative);
        - ``disagreement``: the weighted share of members whose argmax
          differs from the mixture's, in [0, 1];

        and ``proba``, the mixture :math:`\bar p` of shape (n_samples, n_classes).

    See Also
    --------
    variance_decomposition : the regression counterpart.
    sksnapshot.SnapshotEnsembleClassifier.predict_uncertainty : on a fitted ensemble.

    References
    ----------
    S. Depeweg, J. M. Hernandez-Lobato, F. Doshi-Velez, S. Udluft,
    "Decomposition of Uncertainty in Bayesian Deep Learning for Efficient and
    Risk-sensitive Learning", ICML 2018.

    Examples
    --------
    Two members sure of different classes: all of the uncertainty is epistemic.

    >>> u = uncertainty_decomposition([[[1.0, 0.0]], [[0.0, 1.0]]])
    >>> u.total.round(4), u.aleatoric, u.epistemic.round(4), u.disagreement
    (array([0.6931]), array([0.]), array([0.6931]), array([0.5]))

    Two members that agree on a coin flip: all of it is aleatoric.

    >>> u = uncertainty_decomposition([[[0.5, 0.5]], [[0.5, 0.5]]])
    >>> u.aleatoric.round(4), u.epistemic
    (array([0.6931]), array([0.]))
    """
    probas = np.asarray(member_probas, dtype=np.float64)
    if probas.ndim != 3:
        raise ValueError("member_probas must have shape (n_members, n_samples, n_classes), "
                         f"got {probas.shape}.")
    if probas.shape[0] == 0:
        raise ValueError("member_probas must hold at least one member.")
    if not np.all(np.isfinite(probas)) or probas.min(initial=0) < 0:
        raise ValueError("member_probas must contain finite, non-negative probabilities.")
    w = _check_weights(weights, probas.shape[0])
    mixture = np.tensordot(w, probas, axes=1)
    total = _entropy(mixture)
    aleatoric = w @ _entropy(probas)
    # The weighted KL divergences of the members from the mixture: equal to
    # total - aleatoric, without its cancellation (and never below 0).
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where(probas > 0, np.log(probas) - np.log(mixture), 0.0)
    epistemic = np.maximum(w @ (probas * log_ratio).sum(axis=-1), 0.0)
    label = mixture.argmax(axis=-1)
    disagreement = w @ (probas.argmax(axis=-1) != label).astype(np.float64)
    return Bunch(total=total, aleatoric=aleatoric, epistemic=epistemic,
                 disagreement=disagreement, proba=mixture)


@validate_params(
    {"member_means": ["array-like"], "member_variances": ["array-like", None],
     "weights": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def variance_decomposition(member_means, member_variances=None, weights=None):
    r"""Split a regression ensemble's predictive variance into aleatoric and epistemic parts.

    For members with weights :math:`w_i` (summing to 1), predicted means
    :math:`\mu_i(x)` and (mean-variance members) variances
    :math:`\sigma_i^2(x)`, the mixture's mean and variance are, per row and
    target (the law of total variance):

    .. math::

       \mu = \sum_i w_i \mu_i, \qquad
       \underbrace{\sigma^2}_{\text{total}}
       = \underbrace{\textstyle\sum_i w_i \sigma_i^2}_{\text{aleatoric}}
       + \underbrace{\textstyle\sum_i w_i (\mu_i - \mu)^2}_{\text{epistemic}}.

    Without predicted variances (squared-error members) the aleatoric part is
    zero and the total is the members' spread alone.

    Parameters
    ----------
    member_means : array-like of shape (n_members, n_samples) or (n_members, n_samples, n_outputs)
        Each member's predicted means.
    member_variances : array-like of the same shape, default=None
        Each member's predicted variances; None for members without them.
    weights : array-like of shape (n_members,), default=None
        The members' weights; normalised to sum to 1. None: equal weights.

    Returns
    -------
    result : sklearn.utils.Bunch
        ``mean``, ``total``, ``aleatoric`` and ``epistemic`` (variances, not
        standard deviations), each of shape ``member_means.shape[1:]``, float64.

    See Also
    --------
    uncertainty_decomposition : the classification counterpart.
    sksnapshot.SnapshotEnsembleRegressor.predict_uncertainty : on a fitted ensemble.

    Examples
    --------
    >>> u = variance_decomposition([[0.0, 1.0], [2.0, 1.0]], [[1.0, 1.0], [1.0, 3.0]])
    >>> u.mean, u.aleatoric, u.epistemic, u.total
    (array([1., 1.]), array([1., 2.]), array([1., 0.]), array([2., 2.]))
    """
    means = np.asarray(member_means, dtype=np.float64)
    if means.ndim not in (2, 3) or means.shape[0] == 0:
        raise ValueError("member_means must have shape (n_members, n_samples[, n_outputs]) "
                         f"with at least one member, got {means.shape}.")
    w = _check_weights(weights, means.shape[0])
    variances = None
    if member_variances is not None:
        variances = np.asarray(member_variances, dtype=np.float64)
        if variances.shape != means.shape:
            raise ValueError(f"member_variances has shape {variances.shape}; member_means "
                             f"has {means.shape}.")
        if np.any(variances < 0):
            raise ValueError("member_variances must be non-negative.")
    mean, aleatoric, epistemic = mixture(means, variances, w)  # the estimators' own
    return Bunch(mean=mean, total=aleatoric + epistemic, aleatoric=aleatoric,
                 epistemic=epistemic)
