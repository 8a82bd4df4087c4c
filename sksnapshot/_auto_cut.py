"""The ``n_snapshots="auto"`` cut: a callback that cuts the budget into cycles at a plateau.

What makes a plateau and which cycles follow it are the schedules' pure
functions (:func:`~sksnapshot.schedules.plateau_epoch`,
:func:`~sksnapshot.schedules.auto_cycle_bounds`); this callback only asks them
at epoch ends and hands the bounds to the snapshot callback, which owns the plan.
"""

import math

from skorch.callbacks import Callback

from ._distributed import global_mean
from .schedules import AUTO_MIN_VALID_ROWS, auto_cycle_bounds, plateau_epoch

__all__ = ["AutoCut"]


def _n_rows(dataset):
    """Rows of a validation dataset: 0 for None, as many as needed if it has no length."""
    if dataset is None:
        return 0
    try:
        return len(dataset)
    except TypeError:
        return math.inf


class AutoCut(Callback):
    """``n_snapshots="auto"``: end the first cycle early if validation has levelled off.

    Until then the run is the single net's (one cosine over the budget). At a
    plateau of the validation loss (:func:`~sksnapshot.schedules.plateau_epoch`)
    early enough for two more cycles as long, the first cycle anneals and the
    rest of the budget becomes up to ``AUTO_MAX_CYCLES`` restart cycles of
    whole epochs (:func:`~sksnapshot.schedules.auto_cycle_bounds`). Without
    validation rows, with fewer than ``AUTO_MIN_VALID_ROWS``, or when the
    budget is too short, it stays one cycle: the single net.

    It must run after ``snapshots`` at each epoch end: the epoch's ``lr`` and
    ``cycle`` are those of the plan the epoch trained with.

    Parameters
    ----------
    snapshots : CyclicSnapshots
        The callback whose plan it cuts (it asks ``snapshots.may_cut`` whether
        the plan may still be cut).
    """

    def __init__(self, snapshots):
        self.snapshots = snapshots

    def on_epoch_begin(self, net, dataset_valid=None, **kwargs):
        self._dataset_valid = dataset_valid

    def on_epoch_end(self, net, **kwargs):
        if not self.snapshots.may_cut:
            return
        if _n_rows(self._dataset_valid) < AUTO_MIN_VALID_ROWS:
            return  # too few rows to tell a levelled-off curve from noise
        losses = [row.get("valid_loss") for row in net.history]
        if any(loss is None for loss in losses) or not plateau_epoch(
                [global_mean(net, loss) for loss in losses], int(net.max_epochs)):
            return
        n_batches = self.snapshots.n_batches_
        epoch = self.snapshots.iteration_ // n_batches
        self.snapshots.cut(auto_cycle_bounds(int(net.max_epochs), epoch, n_batches).tolist())
