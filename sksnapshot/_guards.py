"""The guards: callbacks that refuse a cycle whose training went wrong.

Each judges one sign and leaves the remedy to the snapshot callback
(:meth:`~sksnapshot.CyclicSnapshots.recover`, ``drop_last_snapshot``): good
weights back, the peak learning rate halved. They must run before it, in
the order ``_training.run_callbacks`` decides.
"""

import math

import torch
from skorch.callbacks import Callback

from ._distributed import global_mean, unwrapped_module

__all__ = ["CollapseGuard", "DivergenceGuard"]


def _all_finite(module):
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values()
               if t.is_floating_point())


def epoch_valid_loss(net):
    """The epoch's validation loss, the same in every process (None without validation rows)."""
    loss = net.history[-1].get("valid_loss")
    return None if loss is None else global_mean(net, loss)


class DivergenceGuard(Callback):
    """Refuse a cycle whose loss or weights blew up.

    A training loss that is not finite or above ``factor * ref``, or a
    validation loss that is not finite or above ``factor**2 * ref``, where
    ``ref`` is the larger of 1 and the magnitude of the first training
    batch's loss, means the cycle diverged. (The validation bound is looser
    because an over-fitting, over-confident model legitimately raises the
    validation loss well above its minimum.) Weights that are not finite
    after a cycle's last step are refused too, whatever ``factor``. The
    cycle's snapshot is then dropped (a snapshot taken in the epoch whose
    validation loss diverged included), the last good weights restored and
    the peak learning rate of the rest of training halved
    (:meth:`~sksnapshot.CyclicSnapshots.recover`).

    It must run before ``snapshots`` at each batch end: the training loss of
    a cycle's last step decides whether that step's snapshot is taken.

    Parameters
    ----------
    snapshots : CyclicSnapshots
        The callback whose cycles it guards.
    factor : float or None, default=10.0
        None turns the loss checks off.
    """

    def __init__(self, snapshots, factor=10.0):
        self.snapshots = snapshots
        self.factor = factor

    def initialize(self):
        self._reference_loss = None
        return self

    def progress_state(self):
        """What a resumed fit needs: the reference loss."""
        return {"_reference_loss": self._reference_loss}

    def restore(self, progress):
        self._reference_loss = progress["_reference_loss"]

    def _is_divergent(self, loss, factor):
        if factor is None:
            return False
        if not math.isfinite(loss):
            return True
        reference = self._reference_loss
        # Losses near 0 (or negative, e.g. Gaussian NLL) give no scale: floor at 1.
        if reference is None or not math.isfinite(reference):
            return False
        return loss > factor * max(abs(reference), 1.0)

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if not training:
            return
        snapshots = self.snapshots
        loss = loss.item() if loss is not None else math.nan
        # With Accelerate's data parallelism every process decides on the same mean.
        loss = global_mean(net, loss)
        if self._reference_loss is None:
            self._reference_loss = loss
        if self._is_divergent(loss, self.factor):
            snapshots.recover(net, snapshots.iteration_, f"training loss {loss:.4g}")
        if snapshots.snapshot_due and not _all_finite(unwrapped_module(net)):
            # The last step can blow the weights up even after a finite loss.
            snapshots.recover(net, snapshots.iteration_, "non-finite weights")

    def on_epoch_end(self, net, **kwargs):
        valid_loss = epoch_valid_loss(net)
        factor = None if self.factor is None else self.factor ** 2
        if valid_loss is None or not self._is_divergent(valid_loss, factor):
            return
        popped = self.snapshots.snapshot_this_epoch
        if popped:
            # Taken from weights whose validation loss exploded: not a member.
            # The cycle after it restarts from the restored weights below.
            self.snapshots.drop_last_snapshot()
        self.snapshots.recover(net, self.snapshots.iteration_ - 1,
                               f"validation loss {valid_loss:.4g}",
                               drop_cycle=not popped, removed=popped)


class CollapseGuard(Callback):
    """Refuse a snapshot whose validation loss collapsed after a restart.

    A snapshot whose validation loss is above ``factor`` times the best
    earlier snapshot's is dropped; that best snapshot's weights are restored
    and the peak learning rate is halved, as for a divergence. A snapshot's
    validation loss is skorch's ``valid_loss`` of the epoch that took it:
    exactly the snapshot's when its cycle ends with the epoch, as the cycles
    of ``n_snapshots="auto"`` do (the estimators add this guard for "auto").

    It must run after the divergence guard at each epoch end: a snapshot that
    guard dropped is not judged again.

    Parameters
    ----------
    snapshots : CyclicSnapshots
        The callback whose snapshots it judges.
    factor : float
        How much worse than the best earlier snapshot a snapshot may be.
    """

    def __init__(self, snapshots, factor):
        self.snapshots = snapshots
        self.factor = factor

    def on_epoch_end(self, net, **kwargs):
        if not self.snapshots.snapshot_this_epoch:
            return
        loss = epoch_valid_loss(net)
        if loss is None:
            return
        best = self.snapshots.note_snapshot_loss(loss)
        if best is None or loss <= self.factor * best[0]:
            return
        self.snapshots.drop_last_snapshot()
        self.snapshots.recover(
            net, self.snapshots.iteration_ - 1,
            f"validation loss {loss:.4g}, {loss / best[0]:.3g}x the best snapshot's",
            drop_cycle=False, good=best[1], removed=True)
