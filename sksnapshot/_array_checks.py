"""Checks of arrays that the public metrics and the selection rules both take.

Private to the package (the public ``metrics`` and ``selection`` modules import
them from here), so neither room imports the other's private names.
"""

import numpy as np

__all__ = ["check_member_probas", "holds_integers"]


def check_member_probas(probas):
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


def holds_integers(y):
    """Whether an array holds integer labels: an integer or bool dtype, or integral
    floats (e.g. from pandas), which are harmless."""
    return y.dtype.kind in "iub" or (y.dtype.kind == "f" and bool(np.all(y == np.round(y))))
