"""skorch callbacks that drive the cyclic learning rate and take the snapshots."""

import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from skorch.callbacks import Callback

from ._distributed import global_mean, is_main_process, unwrapped_module
from .schedules import (
    AUTO_FIXED_CYCLES,
    AUTO_MIN_VALID_ROWS,
    auto_cycle_bounds,
    auto_lr,
    check_enough_iterations,
    learning_rate_table,
    plateau_epoch,
    resolve_schedule,
)

__all__ = ["CyclicSnapshots", "SnapshotRecord", "copy_state_dict"]


def copy_state_dict(module):
    """Return a detached CPU copy of ``module.state_dict()``.

    Copies live on the CPU so that keeping M of them costs host memory only,
    never accelerator memory, and they unpickle on machines without a GPU.
    """
    return OrderedDict(
        (key, value.detach().to("cpu", copy=True))
        for key, value in module.state_dict().items()
    )


@dataclass
class SnapshotRecord:
    """What one training run hands to the estimator: its snapshots and how they came.

    Attributes
    ----------
    snapshots : list of OrderedDict
        The kept snapshots (CPU ``state_dict`` copies), oldest first.
    snapshot_epochs : list of int
        The (1-based) epoch in which each was taken.
    snapshot_iterations : list of int
        The (0-based) optimizer step after which each was taken.
    divergences : list of dict
        The divergences the guard handled.
    n_iter_planned : int
        Optimizer steps planned for the run.
    n_iter : int
        Optimizer steps taken (fewer after an interruption).
    n_cycles : int
        Cycles planned (for ``n_snapshots="auto"``, as the validation curve decided).
    """

    snapshots: list
    snapshot_epochs: list
    snapshot_iterations: list
    divergences: list
    n_iter_planned: int
    n_iter: int
    n_cycles: int = 0

    @property
    def interrupted(self):
        return self.n_iter < self.n_iter_planned


def _n_rows(dataset):
    """Rows of a validation dataset: 0 for None, as many as needed if it has no length."""
    if dataset is None:
        return 0
    try:
        return len(dataset)
    except TypeError:
        return math.inf


def _index(states, state):
    """The position of ``state`` (the object itself) in ``states``."""
    return next(i for i, s in enumerate(states) if s is state)


def _all_finite(module):
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values()
               if t.is_floating_point())


class CyclicSnapshots(Callback):
    """Set the learning rate every batch and snapshot the module at cycle ends.

    The whole ``max_epochs`` budget of the net is split into ``n_snapshots``
    cycles of (almost) equal numbers of optimizer steps; the peak learning rate
    of every cycle is the optimizer's own learning rate (per parameter group).
    After the last step of each cycle, a copy of the module's ``state_dict`` is
    appended to ``snapshots_``.

    Cycle ends are found by counting steps, not by reading the learning rate,
    so the callback does not depend on the order in which callbacks run.

    With ``n_snapshots="auto"`` (and a cosine schedule) training starts as
    the single net's: one cosine over the whole budget. It is cut into
    cycles only when the validation loss levels off early enough for at
    least two more cycles as long as the epochs it took
    (:func:`~sksnapshot.schedules.plateau_epoch`): the first cycle then
    anneals, and the rest of the budget becomes up to
    ``AUTO_MAX_CYCLES`` restart cycles of whole epochs. Without validation
    rows, with fewer than ``AUTO_MIN_VALID_ROWS`` (50), or when the budget is
    too short, it stays one cycle: the single net.

    Parameters
    ----------
    n_snapshots : int or "auto"
        Number of cycles, hence of snapshots; "auto" as above (with the
        "linear" schedule or a callable: 5).
    min_lr : float, default=0.0
        The learning rate every cycle anneals towards.
    schedule : {"cosine", "cosine_warmup", "linear"} or callable, default="cosine"
        "cosine": :func:`~sksnapshot.schedules.cosine_annealing_lr`; "cosine_warmup":
        :func:`~sksnapshot.schedules.cosine_warmup_lr`; "linear":
        :func:`~sksnapshot.schedules.linear_cycles_lr` (fast geometric ensembling); or
        ``schedule(t, n_iter, n_cycles, lr, min_lr)`` giving the learning rate
        of the steps ``t``. Evaluated for all steps when training begins (and
        when a resumed fit continues), and again whenever the divergence guard
        halves the peak learning rate: a callable must give the same rates for
        the same arguments.
    event_name : str, default="event_snapshot"
        History column set to True on the epochs in which a snapshot was taken
        (``PrintLog`` shows it as a ``+`` in a ``snapshot`` column).
    divergence_factor : float or None, default=10.0
        A training loss that is not finite or above ``divergence_factor * ref``,
        or a validation loss that is not finite or above
        ``divergence_factor**2 * ref``, where ``ref`` is the larger of 1 and the
        magnitude of the first training batch's loss, means the cycle diverged.
        (The validation bound is looser because an over-fitting, over-confident
        model legitimately raises the validation loss well above its minimum.)
        The cycle's snapshot is then dropped, the
        last good weights (the previous snapshot, else the initial weights) are
        restored, the optimizer's state is reset, and the peak learning rate of
        the rest of training is halved. None turns the guard off. A divergence
        in the last cycle before any snapshot was kept keeps that cycle's
        snapshot (it trains on from the initial weights).
    collapse_factor : float or None, default=None
        The restart-collapse guard (the estimators turn it on for
        ``n_snapshots="auto"``): a snapshot whose validation loss is above
        ``collapse_factor`` times the best earlier snapshot's is not kept;
        that best snapshot's weights are restored and the peak learning rate
        is halved, as for a divergence. Needs validation rows. A snapshot's
        validation loss is skorch's ``valid_loss`` of the epoch that took it:
        exactly the snapshot's when its cycle ends with the epoch, as the
        cycles of "auto" do.
    checkpoint : object or None, default=None
        Something with ``save_snapshot(index, state)`` and
        ``save_progress(net, callback)`` methods, called when a snapshot is
        taken and at the end of every epoch. The estimators pass their own
        when ``checkpoint_dir`` is set (see
        :class:`~sksnapshot.SnapshotEnsembleClassifier`); ``progress_state``
        and ``restore`` are what it saves and resumes from.

    Attributes
    ----------
    snapshots_ : list of OrderedDict
        The snapshots taken so far, oldest first (handed over, and emptied,
        by :meth:`take_record`).
    snapshot_iterations_ : list of int
        The optimizer step after which each snapshot was taken.
    n_iter_ : int
        Optimizer steps planned for the whole training run.
    iteration_ : int
        Optimizer steps taken so far.
    divergences_ : list of dict
        One entry per detected divergence: iteration, cycle, loss, old and new
        peak-learning-rate factor.
    """

    def __init__(self, n_snapshots, min_lr=0.0, schedule="cosine",
                 event_name="event_snapshot", divergence_factor=10.0, collapse_factor=None,
                 checkpoint=None):
        self.n_snapshots = n_snapshots
        self.min_lr = min_lr
        self.schedule = schedule
        self.event_name = event_name
        self.divergence_factor = divergence_factor
        self.collapse_factor = collapse_factor
        self.checkpoint = checkpoint

    def initialize(self):
        self.snapshots_ = []
        self.snapshot_epochs_ = []
        self.snapshot_iterations_ = []
        self.divergences_ = []
        self.iteration_ = 0
        self.n_iter_ = None
        # Training state that a resumed fit must get back (see progress_state).
        self._peaks = None
        self._lr_scale = 1.0
        self._reference_loss = None
        self._drop_cycle = False
        self._initial_state = None
        self._cut = None
        self._snapshot_losses = []
        self._dataset_valid = None
        return self

    # -- resuming -----------------------------------------------------------
    _PROGRESS = ("iteration_", "snapshot_epochs_", "snapshot_iterations_", "divergences_",
                 "_peaks", "_lr_scale", "_reference_loss", "_drop_cycle", "_cut",
                 "_snapshot_losses")

    def progress_state(self):
        """What a resumed fit needs, besides the net's own state and the snapshots.

        Until the first snapshot exists this includes the initial weights the
        divergence guard falls back to (after that the last snapshot is the
        fallback, and the files stay small).
        """
        state = {name: getattr(self, name) for name in self._PROGRESS}
        state["_initial_state"] = None if self.snapshots_ else self._initial_state
        return state

    def restore(self, progress, snapshots):
        """Continue from ``progress_state()`` and the snapshots saved with it."""
        for name in self._PROGRESS:
            setattr(self, name, progress[name])
        self._initial_state = progress.get("_initial_state")
        self.snapshots_ = list(snapshots)

    def take_record(self):
        """Hand the run's :class:`SnapshotRecord` over; the callback keeps no copy.

        The snapshots (and the initial weights kept for the divergence guard)
        are released here, so the estimator owns the only copy.
        """
        record = SnapshotRecord(
            snapshots=self.snapshots_, snapshot_epochs=list(self.snapshot_epochs_),
            snapshot_iterations=list(self.snapshot_iterations_),
            divergences=list(self.divergences_), n_iter_planned=self.n_iter_,
            n_iter=self.iteration_, n_cycles=self._n_cycles())
        self.snapshots_ = []
        self._initial_state = None
        return record

    # -- planning -----------------------------------------------------------
    def on_train_begin(self, net, X=None, y=None, **kwargs):
        dataset = net.get_dataset(X, y)
        try:
            # With Accelerate the iterator is the prepared one: its length is the
            # number of batches of one process, i.e. of global optimizer steps.
            n_batches = len(net.get_iterator(dataset, training=True))
        except TypeError as exc:
            raise ValueError(
                "The number of training batches per epoch cannot be counted "
                "(the training DataLoader has no length), so the learning-rate "
                "cycles cannot be planned."
            ) from exc
        self.n_iter_ = int(net.max_epochs) * n_batches
        self._n_batches = n_batches
        check_enough_iterations(
            self.n_iter_, self._n_cycles(),
            f"n_snapshots={self.n_snapshots} needs at least as many training iterations, "
            f"but max_epochs={net.max_epochs} x {n_batches} batches per epoch gives only "
            f"{self.n_iter_}.")
        if self._peaks is None:  # a resumed fit keeps the peaks it planned with
            self._peaks = [group["lr"] for group in net.optimizer_.param_groups]
        not_usable = [lr for lr in self._peaks if not (math.isfinite(lr) and lr > 0)]
        if not_usable:
            raise ValueError(
                f"The net's learning rate must be a finite number above 0 (it is the peak "
                f"learning rate of every cycle), got lr={not_usable[0]!r}."
            )
        too_low = [lr for lr in self._peaks if lr < self.min_lr]
        if too_low:
            raise ValueError(
                f"min_lr={self.min_lr} is above the peak learning rate {too_low[0]} "
                "of the optimizer; min_lr must not exceed the net's lr."
            )
        self._plan()
        if not self.snapshots_ and self._initial_state is None:  # a resumed fit has its own
            self._initial_state = copy_state_dict(unwrapped_module(net))

    @property
    def _auto(self):
        """Whether the validation curve plans the cycles (``n_snapshots="auto"``)."""
        return self.n_snapshots == "auto" and resolve_schedule(self.schedule).cuttable

    def _n_cycles(self):
        """The cycles planned: ``n_snapshots``, or what "auto" has decided so far."""
        if self.n_snapshots != "auto":
            return self.n_snapshots
        if not self._auto:  # another schedule: the fixed count it had before "auto"
            return AUTO_FIXED_CYCLES
        return 1 if self._cut is None else len(self._cut) - 1

    def _plan(self):
        """The learning-rate tables and the snapshot steps of the current plan."""
        self._plan_lrs()
        if self._auto:
            ends = np.asarray(self._cut[1:] if self._cut is not None else [self.n_iter_]) - 1
        else:
            ends = resolve_schedule(self.schedule).snapshots(self.n_iter_, self._n_cycles())
        self._cycle_ends = set(ends.tolist())
        # Cycle k (1-based) ends at its snapshot step, for the history's 'cycle'.
        self._bounds = np.concatenate([[0], ends + 1])

    def _plan_lrs(self):
        """One learning-rate table per parameter group: a lookup per batch, no maths."""
        def table(peak):
            if not self._auto:
                return learning_rate_table(self.schedule, self.n_iter_, self._n_cycles(),
                                           lr=peak, min_lr=self.min_lr)
            return auto_lr(np.arange(self.n_iter_), self.n_iter_, self._cut, lr=peak,
                           min_lr=self.min_lr,
                           warmup=resolve_schedule(self.schedule).restart_warmup)

        # Python floats: the per-batch lookup is the training loop's own overhead.
        self._lrs = [table(self.min_lr + (peak - self.min_lr) * self._lr_scale).tolist()
                     for peak in self._peaks]

    # -- training -----------------------------------------------------------
    def on_epoch_begin(self, net, dataset_valid=None, **kwargs):
        self._snapshot_this_epoch = False
        self._diverged_this_epoch = False
        self._dataset_valid = dataset_valid

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        # A DataLoader longer than its len() must not index past the plan.
        t = min(self.iteration_, self.n_iter_ - 1)
        for group, lrs in zip(net.optimizer_.param_groups, self._lrs):
            group["lr"] = lrs[t]
        net.history.record_batch("lr", self._lrs[0][t])

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if not training:
            return
        loss = loss.item() if loss is not None else math.nan
        # With Accelerate's data parallelism every process decides on the same mean.
        loss = global_mean(net, loss)
        if self._reference_loss is None:
            self._reference_loss = loss
        if self._is_divergent(loss, self.divergence_factor):
            self._recover(net, self.iteration_, f"training loss {loss:.4g}")
        if self.iteration_ in self._cycle_ends:
            if not self._drop_cycle and not _all_finite(unwrapped_module(net)):
                # The last step can blow the weights up even after a finite loss.
                self._recover(net, self.iteration_, "non-finite weights")
            if self._drop_cycle:
                self._drop_cycle = False  # the next cycle starts from good weights
            else:
                # Every process keeps the (identical) snapshots: choosing members
                # predicts with all processes in step. Only the main one writes files.
                self._take_snapshot(net)
        self.iteration_ += 1

    def _take_snapshot(self, net):
        """Keep the module's weights as a snapshot (its validation loss comes at epoch end)."""
        # Every process keeps the (identical) snapshots: choosing members
        # predicts with all processes in step. Only the main one writes files.
        self.snapshots_.append(copy_state_dict(unwrapped_module(net)))
        self.snapshot_epochs_.append(len(net.history))
        self.snapshot_iterations_.append(self.iteration_)
        self._snapshot_losses.append(None)
        self._snapshot_this_epoch = True
        if self.checkpoint is not None and is_main_process(net):
            self.checkpoint.save_snapshot(len(self.snapshots_) - 1, self.snapshots_[-1])

    def _drop_last_snapshot(self):
        """Forget the snapshot taken in this epoch (the guards refused it)."""
        for taken in (self.snapshots_, self.snapshot_epochs_, self.snapshot_iterations_,
                      self._snapshot_losses):
            taken.pop()
        self._snapshot_this_epoch = False

    def _check_collapse(self, net, loss):
        """The collapse guard, on the validation loss of the epoch that took a snapshot.

        A restart that threw the net out of its basin: its snapshot is dropped
        and the best earlier one restored, with a halved peak learning rate.
        """
        self._snapshot_losses[-1] = float(loss)  # a plain float: checkpoints load weights_only
        earlier = [x for x in self._snapshot_losses[:-1] if x is not None]
        if not earlier or loss <= self.collapse_factor * min(earlier):
            return
        best = min(earlier)
        good = self.snapshots_[self._snapshot_losses.index(best)]
        self._drop_last_snapshot()
        self._recover(net, self.iteration_ - 1,
                      f"validation loss {loss:.4g}, {loss / best:.3g}x the best snapshot's",
                      drop_cycle=False, good=good, removed=True)

    def on_epoch_end(self, net, **kwargs):
        valid_loss = net.history[-1].get("valid_loss")
        if valid_loss is not None:
            valid_loss = global_mean(net, valid_loss)
        factor = None if self.divergence_factor is None else self.divergence_factor ** 2
        if valid_loss is not None and self._is_divergent(valid_loss, factor):
            popped = self._snapshot_this_epoch
            if popped:
                # Taken from weights whose validation loss exploded: not a member.
                # The cycle after it restarts from the restored weights below.
                self._drop_last_snapshot()
            self._recover(net, self.iteration_ - 1, f"validation loss {valid_loss:.4g}",
                          drop_cycle=not popped, removed=popped)
        elif (self._snapshot_this_epoch and valid_loss is not None
              and self.collapse_factor is not None):
            self._check_collapse(net, valid_loss)
        last = max(min(self.iteration_, self.n_iter_) - 1, 0)
        net.history.record("lr", self._lrs[0][last])
        # 1-based cycle of the epoch's last step, as the user counts them.
        net.history.record("cycle", int(np.searchsorted(self._bounds, last, side="right")))
        if self._auto and self._cut is None and self.iteration_ < self.n_iter_:
            self._maybe_cut(net)
        net.history.record(self.event_name, self._snapshot_this_epoch)
        net.history.record("event_diverged", self._diverged_this_epoch)
        if self.checkpoint is not None and is_main_process(net):
            self.checkpoint.save_progress(net, self)

    def _maybe_cut(self, net):
        """``n_snapshots="auto"``: end the first cycle early if validation has levelled off.

        Until then the run is the single net's (one cosine over the budget). At a
        plateau of the validation loss (:func:`~sksnapshot.schedules.plateau_epoch`)
        early enough for two more cycles as long, the first cycle anneals and the
        rest of the budget becomes restart cycles (``auto_cycle_bounds``).
        """
        if _n_rows(self._dataset_valid) < AUTO_MIN_VALID_ROWS:
            return  # too few rows to tell a levelled-off curve from noise
        losses = [row.get("valid_loss") for row in net.history]
        if any(loss is None for loss in losses) or not plateau_epoch(
                [global_mean(net, loss) for loss in losses], int(net.max_epochs)):
            return
        epoch = self.iteration_ // self._n_batches
        self._cut = auto_cycle_bounds(int(net.max_epochs), epoch, self._n_batches).tolist()
        self._plan()

    # -- the divergence guard ------------------------------------------------
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

    def _recover(self, net, step, what, drop_cycle=True, good=None, removed=False):
        """Restore good weights and halve the peak learning rate.

        ``step`` is the step at which the divergence showed; ``drop_cycle``
        says whether the snapshot of the cycle in progress must be dropped
        (``removed``: it was taken and removed already); ``good`` the weights
        to restore (default: the last snapshot, else the initial weights).
        """
        if good is None:
            good = self.snapshots_[-1] if self.snapshots_ else self._initial_state
        # The last cycle restarted from the initial weights before any snapshot was
        # kept still trains a model of its own: keeping its snapshot is better than
        # no ensemble (with n_snapshots=1, or "auto" before a cut, it is the only one).
        last_chance = not self.snapshots_ and self._bounds[-2] <= step < self._bounds[-1] - 1
        drop_cycle = drop_cycle and not last_chance
        unwrapped_module(net).load_state_dict(good)
        # Momentum and Adam moments carry the divergence (often as NaN).
        net.optimizer_.state.clear()
        old = self._lr_scale
        self._lr_scale = old / 2
        self._plan_lrs()
        self._drop_cycle = self._drop_cycle or drop_cycle
        self._diverged_this_epoch = True
        cycle = int(np.searchsorted(self._bounds, min(step, self.n_iter_ - 1), side="right"))
        self.divergences_.append({"iteration": int(step), "cycle": cycle,
                                  "loss": what, "lr_scale_before": old,
                                  "lr_scale_after": self._lr_scale})
        peak = self._peaks[0]
        restored = (f"snapshot {_index(self.snapshots_, good) + 1}" if self.snapshots_
                    else "the initialisation")
        warnings.warn(
            f"Cycle {cycle} diverged at iteration {step} ({what}). Restored the weights of "
            f"{restored}, "
            f"{'dropped' if drop_cycle or removed else 'kept'} cycle {cycle}'s snapshot and "
            "lowered the "
            f"peak learning rate from "
            f"{self.min_lr + (peak - self.min_lr) * old:.4g} to "
            f"{self.min_lr + (peak - self.min_lr) * self._lr_scale:.4g} for the rest of training.",
            RuntimeWarning, stacklevel=2,
        )
