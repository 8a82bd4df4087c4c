"""Choosing and weighting ensemble members on held-out validation predictions.

A selection is ``(indices, weights)``: the chosen members in ascending order
and their weights in the average, which sum to 1. Classifier functions take
``probas`` of shape ``(n_members, n_samples, n_classes)`` (each member's
predicted probabilities on the validation rows, oldest member first) and the
encoded labels ``y``; regressor functions take ``means`` (and ``variances``)
of shape ``(n_members, n_samples, n_outputs)`` and the targets ``y``.

Every rule works on the validation loss of weighted mixtures of the members
(the log-loss for classifiers; the squared error, or the Gaussian NLL of
mean-variance members, for regressors), so classifiers and regressors share
one registry of rules and one dispatch (:func:`select_members`,
:func:`select_regression_members`). The pairwise disagreement of members is
:func:`sksnapshot.metrics.disagreement_matrix`.
"""

from ._classification import (
    member_scores,
    optimize_weights,
    select_diverse,
    select_greedy,
    shrink_weights,
)
from ._core import forward_selection, optimize_simplex, select_last
from ._regression import regression_member_scores, shrink_regression_weights
from ._rules import select_members, select_regression_members

__all__ = [
    "forward_selection",
    "member_scores",
    "optimize_simplex",
    "optimize_weights",
    "regression_member_scores",
    "select_diverse",
    "select_greedy",
    "select_last",
    "select_members",
    "select_regression_members",
    "shrink_regression_weights",
    "shrink_weights",
]
