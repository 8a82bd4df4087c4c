"""Data helpers shared by the estimators: the held-out validation split, seeding."""

import contextlib
import math

import numpy as np
import torch
from sklearn.model_selection import train_test_split

__all__ = ["validation_split", "torch_seed"]


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


@contextlib.contextmanager
def torch_seed(seed):
    """Seed torch inside the block and restore the caller's RNG state after it.

    ``seed=None`` leaves torch's global random state alone, so a user's own
    ``torch.manual_seed`` keeps working.
    """
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
