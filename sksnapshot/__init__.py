"""sksnapshot: snapshot ensembles of skorch nets as scikit-learn estimators.

Train one net with a cyclic learning rate, keep a snapshot of its weights at
the end of every cycle, and predict with the average of the snapshots.

The helpers live in public submodules: :mod:`sksnapshot.schedules` (the
learning-rate schedules), :mod:`sksnapshot.selection` (choosing and weighting
members), :mod:`sksnapshot.metrics` and :mod:`sksnapshot.plotting`.
"""

from ._callbacks import CyclicSnapshots
from ._classifier import SnapshotEnsembleClassifier, default_classifier_net
from ._modules import GaussianNLLCriterion, MLPModule, MLPRegressorModule
from ._persistence import InvalidEnsembleFile, load_ensemble, save_ensemble
from ._regressor import SnapshotEnsembleRegressor, default_regressor_net
from ._version import __version__ as __version__

__all__ = [
    "CyclicSnapshots",
    "GaussianNLLCriterion",
    "InvalidEnsembleFile",
    "MLPModule",
    "MLPRegressorModule",
    "SnapshotEnsembleClassifier",
    "SnapshotEnsembleRegressor",
    "default_classifier_net",
    "default_regressor_net",
    "load_ensemble",
    "save_ensemble",
]
