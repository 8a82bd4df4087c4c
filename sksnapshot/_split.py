"""Which rows train and which choose the members: the validation split, and its warnings.

Works on encoded labels (or strata) only, whatever the kind of input: a new
input type never touches this module.
"""

import math
import warnings

import numpy as np
from sklearn.model_selection import train_test_split

__all__ = ["MIN_ROWS", "validation_split", "warn_small_split"]


def validation_split(y, fraction, rng):
    """Split row indices into stratified training and validation parts.

    Rows of classes with fewer than two members always stay in training, and
    every class keeps at least one training row: a class too small to split
    never makes the fit fail, it just contributes no validation row.

    Parameters
    ----------
    y : ndarray of int of shape (n_samples,)
        Encoded labels (0 .. n_classes - 1).
    fraction : float in [0, 1)
        Share of the rows to hold out.
    rng : numpy.random.RandomState
        Source of randomness.

    Returns
    -------
    train, valid : ndarray of int
        Sorted row indices; ``valid`` is empty when ``fraction`` is 0 or too
        few rows can be spared.
    """
    n_samples = len(y)
    if fraction == 0:
        return np.arange(n_samples), np.arange(0)
    counts = np.bincount(y)
    candidates = np.flatnonzero(counts[y] >= 2)
    n_candidate_classes = np.count_nonzero(counts >= 2)
    n_valid = min(math.ceil(fraction * n_samples), len(candidates) - n_candidate_classes)
    if n_valid < 1:
        return np.arange(n_samples), np.arange(0)
    try:
        _, valid = train_test_split(
            candidates, test_size=n_valid, stratify=y[candidates], random_state=rng
        )
    except ValueError:
        # Fewer validation rows than classes: one row each from n_valid classes.
        classes = rng.choice(np.flatnonzero(counts >= 2), n_valid, replace=False)
        valid = np.array([rng.choice(np.flatnonzero(y == c)) for c in classes])
    valid = np.sort(valid)
    return np.setdiff1d(np.arange(n_samples), valid), valid


# Below this many rows a split is too small to train on, or to choose members on:
# one row moves a validation score by 10% or more.
MIN_ROWS = 10


def warn_small_split(n_train, n_valid, data_driven):
    """Warn when fewer than ``MIN_ROWS`` rows train, or choose members by their scores."""
    if n_train < MIN_ROWS:
        warnings.warn(
            f"Only {n_train} rows remain for training ({n_valid} are held out for "
            f"validation); fewer than {MIN_ROWS} rows hardly train a net. Lower "
            "validation_fraction or give more data.",
            UserWarning, stacklevel=5,
        )
    if data_driven and 0 < n_valid < MIN_ROWS:
        warnings.warn(
            f"Only {n_valid} validation rows choose the members and their weights; with "
            f"fewer than {MIN_ROWS} the choice is noisy (one row moves a score by 10% or "
            "more). Raise validation_fraction, pass X_valid, or use selection='all' "
            "(or 'last') with weighting='uniform'.",
            UserWarning, stacklevel=5,
        )
