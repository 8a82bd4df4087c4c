"""sksnapshot: snapshot ensembles of skorch nets as scikit-learn estimators.

Train one net with a cyclic learning rate, keep a snapshot of its weights at
the end of every cycle, and predict with the average of the snapshots.
"""

from ._callbacks import CyclicSnapshots
from ._classifier import SnapshotEnsembleClassifier, default_classifier_net
from ._modules import MLPModule
from ._schedules import cosine_annealing_lr, cycle_boundaries, snapshot_iterations

__version__ = "0.1.0.dev0"

__all__ = [
    "CyclicSnapshots",
    "MLPModule",
    "SnapshotEnsembleClassifier",
    "cosine_annealing_lr",
    "cycle_boundaries",
    "default_classifier_net",
    "snapshot_iterations",
]
