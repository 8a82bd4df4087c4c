"""The registry of selection and weighting rules, and the one dispatch over them.

A rule sees the members only through a :class:`~._core.MixtureLoss`; the
classifier builds a :class:`~._classification.LogLoss`, the regressor a
:class:`~._regression.RegressionLoss`, and both call :func:`choose`. A new
rule is one entry in :data:`RULES` (or :data:`WEIGHTINGS`): its function,
whether it needs validation rows, whether it works for regression.
"""

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Callable

import numpy as np

from .._compat import validate_params
from ._classification import LogLoss, diverse_members
from ._core import (
    PRIOR_ROWS,
    _uniform,
    check_n_members,
    forward_selection,
    optimized_weights,
    prior_weights,
    select_last,
    shrunk_weights,
)
from ._regression import RegressionLoss

__all__ = ["select_members", "select_regression_members"]


@dataclass(frozen=True)
class Rule:
    """How members are chosen: ``choose(loss, n_members) -> (indices, weights)``."""

    choose: Callable
    needs_validation: bool  # without validation rows, the last n_members are used instead
    regression: bool  # False: for classifiers only
    sized: bool = True  # False: every member, so n_members must be None (or all of them)


@dataclass(frozen=True)
class Weighting:
    """How the chosen members are weighted: ``weigh(loss, weights, prior_rows) -> weights``.

    ``loss`` is that of the chosen members, ``weights`` the rule's own. Without
    validation rows the last members get ``fallback(n)`` ("how" says so).
    """

    weigh: Callable
    needs_validation: bool
    fallback: Callable
    how: str


RULES = {
    "last": Rule(lambda loss, k: select_last(loss.n_members, k),
                 needs_validation=False, regression=True),
    "diverse": Rule(diverse_members, needs_validation=True, regression=False),
    "greedy": Rule(lambda loss, k: forward_selection(loss, loss.n_members, k),
                   needs_validation=True, regression=True),
    "all": Rule(lambda loss, k: select_last(loss.n_members),
                needs_validation=False, regression=True, sized=False),
}

WEIGHTINGS = {
    "shrink": Weighting(lambda loss, weights, prior_rows: shrunk_weights(loss, prior_rows),
                        needs_validation=True, fallback=prior_weights,
                        how="equal weights on the last two snapshots (the prior of the "
                            "shrunk weights)"),
    "optimize": Weighting(lambda loss, weights, prior_rows: optimized_weights(loss),
                          needs_validation=True, fallback=_uniform,
                          how="the last n_members snapshots with equal weights"),
    "uniform": Weighting(lambda loss, weights, prior_rows: weights,
                         needs_validation=False, fallback=_uniform,
                         how="the last n_members snapshots with equal weights"),
}

SELECTIONS = tuple(RULES)
REGRESSION_SELECTIONS = tuple(name for name, rule in RULES.items() if rule.regression)


def check_member_count(selection, n_members, n_snapshots=None):
    """Refuse ``n_members`` for a rule that keeps every member (``n_snapshots`` None: any)."""
    if RULES[selection].sized or n_members is None or n_members == n_snapshots:
        return
    raise ValueError(
        f"selection={selection!r} uses every snapshot; got n_members={n_members}. "
        "Use selection='last' (or another strategy) to keep fewer."
    )


def needs_validation(selection, weighting):
    """Whether ``selection`` with ``weighting`` is fitted on validation rows."""
    return RULES[selection].needs_validation or WEIGHTINGS[weighting].needs_validation


def without_validation(n_snapshots, n_members, weighting):
    """Members and weights when there are no validation rows, and what they are in words.

    The last ``n_members`` snapshots (all when None) with the weighting's
    fallback weights; members whose weight is zero are left out.
    """
    k = n_snapshots if n_members is None else n_members
    members = np.arange(n_snapshots - k, n_snapshots)
    weights = WEIGHTINGS[weighting].fallback(k)
    return members[weights > 0], weights[weights > 0], WEIGHTINGS[weighting].how


def choose(loss, selection, n_members=None, weighting="uniform", prior_rows=PRIOR_ROWS):
    """Choose and weight members on a validation ``loss``: the one dispatch over the registry.

    Checks every argument, then runs ``RULES[selection]`` and
    ``WEIGHTINGS[weighting]`` on ``loss`` (a :class:`~._core.MixtureLoss`).
    """
    names = REGRESSION_SELECTIONS if loss.regression else SELECTIONS
    if selection not in names:
        kind = " for regression" if loss.regression else ""
        raise ValueError(f"selection must be one of {names}{kind}, got {selection!r}.")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {tuple(WEIGHTINGS)}, got {weighting!r}.")
    if weighting == "shrink" and (not np.isfinite(prior_rows) or prior_rows < 0):
        raise ValueError(f"prior_rows must be a non-negative number, got {prior_rows!r}.")
    n_members = check_n_members(n_members, loss.n_members)
    check_member_count(selection, n_members, loss.n_members)
    indices, weights = RULES[selection].choose(loss, n_members)
    return indices, WEIGHTINGS[weighting].weigh(loss.subset(indices), weights, prior_rows)


@validate_params(
    {"probas": ["array-like"], "y": ["array-like"], "selection": [str],
     "n_members": [Integral, None], "weighting": [str], "prior_rows": [Real]},
    prefer_skip_nested_validation=True,
)
def select_members(probas, y, selection, n_members=None, weighting="uniform",
                   prior_rows=PRIOR_ROWS):
    """Choose and weight classifier members on validation predictions.

    Parameters
    ----------
    probas : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member on the validation rows.
    y : array-like of int of shape (n_samples,)
        Encoded labels.
    selection : {"last", "diverse", "greedy", "all"}
        The last ``n_members`` members (all when None), :func:`select_diverse`,
        :func:`select_greedy` (``n_members`` caps its distinct members) or
        every member (``n_members`` must then be None or the number of
        members).
    n_members : int, default=None
        Number of members; see ``selection``.
    weighting : {"uniform", "optimize", "shrink"}, default="uniform"
        "shrink" re-weights the chosen members with :func:`shrink_weights`
        (fitted on the rows, shrunk towards equal weights on the last two of
        them); "optimize" with :func:`optimize_weights` (the unregularised
        optimum, which over-fits few rows); "uniform" keeps the selection's
        weights, which for "greedy" are its draw counts.
    prior_rows : float, default=10.0
        Strength of the "shrink" prior, in validation rows.

    Returns
    -------
    indices : ndarray of int
        The chosen members, ascending.
    weights : ndarray of float
        Their weights, summing to 1.

    See Also
    --------
    select_regression_members : the same rules for regressors.

    Examples
    --------
    >>> probas = [[[0.6, 0.4], [0.6, 0.4]], [[0.9, 0.1], [0.2, 0.8]]]
    >>> indices, weights = select_members(probas, [0, 1], "last", n_members=1)
    >>> indices.tolist(), weights.tolist()
    ([1], [1.0])
    """
    return choose(LogLoss.of(probas, y), selection, n_members, weighting, prior_rows)


def select_regression_members(means, y, selection, n_members=None, weighting="uniform",
                              variances=None, prior_rows=PRIOR_ROWS):
    """Choose and weight regression members on validation predictions.

    The validation loss is the squared error of the weighted mean or, when
    ``variances`` are given, the Gaussian NLL of the mixture; the rules are
    those of :func:`select_members`, but for "diverse" (classifiers only).

    Parameters
    ----------
    means : ndarray of shape (n_members, n_samples, n_outputs)
        Each member's predictions on the validation rows.
    y : ndarray of shape (n_samples, n_outputs)
        The targets.
    selection : {"last", "greedy", "all"}
        As for :func:`select_members`; "greedy" is forward selection
        (:func:`forward_selection`) on the loss above.
    n_members : int, default=None
        Number of members; see ``selection``.
    weighting : {"uniform", "optimize", "shrink"}, default="uniform"
        "optimize" puts the weights on the simplex minimising the loss;
        "shrink" uses :func:`shrink_regression_weights`; "uniform" keeps the
        selection's weights.
    variances : ndarray like ``means``, default=None
        Members' predictive variances (mean-variance members).
    prior_rows : float, default=10.0
        Strength of the "shrink" prior, in validation rows.

    Returns
    -------
    indices : ndarray of int
        The chosen members, ascending.
    weights : ndarray of float
        Their weights, summing to 1.

    Examples
    --------
    >>> means = np.array([[[0.0], [0.0]], [[1.0], [2.0]]])
    >>> indices, weights = select_regression_members(means, np.array([[1.0], [2.0]]), "greedy")
    >>> indices.tolist(), weights.tolist()
    ([1], [1.0])
    """
    return choose(RegressionLoss(means, y, variances), selection, n_members, weighting,
                  prior_rows)
