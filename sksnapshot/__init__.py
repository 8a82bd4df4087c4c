"""sksnapshot: snapshot ensembles of skorch nets as scikit-learn estimators.

Train one net with a cyclic learning rate, keep a snapshot of its weights at
the end of every cycle, and predict with the average of the snapshots.
"""

from ._callbacks import CyclicSnapshots
from ._classifier import SnapshotEnsembleClassifier, default_classifier_net
from ._modules import GaussianNLLCriterion, MLPModule, MLPRegressorModule
from ._persistence import InvalidEnsembleFile, load_ensemble, save_ensemble
from ._regressor import SnapshotEnsembleRegressor, default_regressor_net
from ._schedules import (
    cosine_annealing_lr,
    cosine_warmup_lr,
    cycle_boundaries,
    linear_cycles_lr,
    linear_snapshot_iterations,
    snapshot_iterations,
)
from ._selection import (
    disagreement_matrix,
    member_scores,
    optimize_weights,
    select_diverse,
    select_greedy,
    select_members,
    shrink_weights,
)
from ._version import __version__ as __version__
from .metrics import uncertainty_decomposition, variance_decomposition

__all__ = [
    "CyclicSnapshots",
    "GaussianNLLCriterion",
    "InvalidEnsembleFile",
    "MLPModule",
    "MLPRegressorModule",
    "SnapshotEnsembleClassifier",
    "SnapshotEnsembleRegressor",
    "cosine_annealing_lr",
    "cosine_warmup_lr",
    "cycle_boundaries",
    "default_classifier_net",
    "default_regressor_net",
    "disagreement_matrix",
    "linear_cycles_lr",
    "linear_snapshot_iterations",
    "load_ensemble",
    "member_scores",
    "optimize_weights",
    "save_ensemble",
    "select_diverse",
    "select_greedy",
    "select_members",
    "shrink_weights",
    "snapshot_iterations",
    "uncertainty_decomposition",
    "variance_decomposition",
]
