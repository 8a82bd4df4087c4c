"""skorch callbacks that drive the cyclic learning rate and take the snapshots."""

from collections import OrderedDict

import numpy as np
from skorch.callbacks import Callback

from ._schedules import cycle_boundaries, resolve_schedule

__all__ = ["CyclicSnapshots", "copy_state_dict"]


def copy_state_dict(module):
    """Return a detached CPU copy of ``module.state_dict()``.

    Copies live on the CPU so that keeping M of them costs host memory only,
    never accelerator memory, and they unpickle on machines without a GPU.
    """
    return OrderedDict(
        (key, value.detach().to("cpu", copy=True))
        for key, value in module.state_dict().items()
    )


class CyclicSnapshots(Callback):
    """Set the learning rate every batch and snapshot the module at cycle ends.

    The whole ``max_epochs`` budget of the net is split into ``n_snapshots``
    cycles of (almost) equal numbers of optimizer steps; the peak learning rate
    of every cycle is the optimizer's own learning rate (per parameter group).
    After the last step of each cycle, a copy of the module's ``state_dict`` is
    appended to ``snapshots_``.

    Cycle ends are found by counting steps, not by reading the learning rate,
    so the callback does not depend on the order in which callbacks run.

    Parameters
    ----------
    n_snapshots : int
        Number of cycles, hence of snapshots.
    min_lr : float, default=0.0
        The learning rate every cycle anneals towards.
    schedule : {"cosine", "linear"} or callable, default="cosine"
        "cosine": :func:`~sksnapshot.cosine_annealing_lr`; "linear":
        :func:`~sksnapshot.linear_cycles_lr` (fast geometric ensembling); or
        ``schedule(t, n_iter, n_cycles, lr, min_lr)`` giving the learning rate
        of the steps ``t``. Evaluated once, for all steps, when training begins.
    event_name : str, default="event_snapshot"
        History column set to True on the epochs in which a snapshot was taken
        (``PrintLog`` shows it as a ``+`` in a ``snapshot`` column).

    Attributes
    ----------
    snapshots_ : list of OrderedDict
        The snapshots taken so far, oldest first.
    n_iter_ : int
        Optimizer steps planned for the whole training run.
    iteration_ : int
        Optimizer steps taken so far.
    """

    def __init__(self, n_snapshots, min_lr=0.0, schedule="cosine",
                 event_name="event_snapshot"):
        self.n_snapshots = n_snapshots
        self.min_lr = min_lr
        self.schedule = schedule
        self.event_name = event_name

    def initialize(self):
        self.snapshots_ = []
        self.snapshot_epochs_ = []
        self.iteration_ = 0
        self.n_iter_ = None
        self._lrs = None
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        dataset = net.get_dataset(X, y)
        try:
            n_batches = len(net.get_iterator(dataset, training=True))
        except TypeError as exc:
            raise ValueError(
                "The number of training batches per epoch cannot be counted "
                "(the training DataLoader has no length), so the learning-rate "
                "cycles cannot be planned."
            ) from exc
        self.n_iter_ = int(net.max_epochs) * n_batches
        if self.n_iter_ < self.n_snapshots:
            raise ValueError(
                f"n_snapshots={self.n_snapshots} needs at least as many training "
                f"iterations, but max_epochs={net.max_epochs} x {n_batches} "
                f"batches per epoch gives only {self.n_iter_}. Train for more "
                "epochs, use a smaller batch size or ask for fewer snapshots."
            )
        steps = np.arange(self.n_iter_)
        peaks = [group["lr"] for group in net.optimizer_.param_groups]
        too_low = [lr for lr in peaks if lr < self.min_lr]
        if too_low:
            raise ValueError(
                f"min_lr={self.min_lr} is above the peak learning rate {too_low[0]} "
                "of the optimizer; min_lr must not exceed the net's lr."
            )
        lr_fn, snapshot_fn = resolve_schedule(self.schedule)
        # One precomputed table per parameter group: a lookup per batch, no maths.
        self._lrs = [
            np.asarray(lr_fn(steps, self.n_iter_, self.n_snapshots, lr=peak, min_lr=self.min_lr),
                       dtype=np.float64)
            for peak in peaks
        ]
        if self._lrs[0].shape != steps.shape or not np.all(np.isfinite(self._lrs[0])):
            raise ValueError(
                f"The schedule must return one finite learning rate per step, got an "
                f"array of shape {self._lrs[0].shape} for {len(steps)} steps."
            )
        ends = snapshot_fn(self.n_iter_, self.n_snapshots)
        self._cycle_ends = set(ends.tolist())
        # Cycle k (1-based) ends at its snapshot step, for the history's 'cycle'.
        self._bounds = np.concatenate([[0], ends + 1])

    def on_epoch_begin(self, net, **kwargs):
        self._snapshot_this_epoch = False

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        # A DataLoader longer than its len() must not index past the plan.
        t = min(self.iteration_, self.n_iter_ - 1)
        for group, lrs in zip(net.optimizer_.param_groups, self._lrs):
            group["lr"] = float(lrs[t])
        net.history.record_batch("lr", float(self._lrs[0][t]))

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        if self.iteration_ in self._cycle_ends:
            self.snapshots_.append(copy_state_dict(net.module_))
            self.snapshot_epochs_.append(len(net.history))
            self._snapshot_this_epoch = True
        self.iteration_ += 1

    def on_epoch_end(self, net, **kwargs):
        last = max(min(self.iteration_, self.n_iter_) - 1, 0)
        net.history.record("lr", float(self._lrs[0][last]))
        # 1-based cycle of the epoch's last step, as the user counts them.
        net.history.record("cycle", int(np.searchsorted(self._bounds, last, side="right")))
        net.history.record(self.event_name, self._snapshot_this_epoch)
