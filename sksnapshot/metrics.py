"""Calibration and quality metrics for probabilistic classifiers.

Every metric takes true labels and a ``(n_samples, n_classes)`` matrix of
predicted probabilities whose column ``k`` belongs to class ``k`` (or to
``classes[k]`` when ``classes`` is given, e.g. an estimator's ``classes_``).
"""

import numpy as np
from sklearn.metrics import log_loss
from sklearn.utils.validation import check_array, check_consistent_length

__all__ = [
    "brier_score",
    "disagreement",
    "expected_calibration_error",
    "negative_log_likelihood",
    "reliability_curve",
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
        if y_true.dtype.kind not in "iub":
            # Integral floats (e.g. from pandas) are harmless; anything else
            # needs an explicit column order.
            if y_true.dtype.kind != "f" or np.any(y_true != np.round(y_true)):
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
