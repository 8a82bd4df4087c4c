"""The callback that drives the cyclic learning rate and takes the snapshots.

The guards that refuse a cycle (``_guards.py``), the ``n_snapshots="auto"`` cut
(``_auto_cut.py``) and the checkpoint's progress (``_checkpoint.py``) are
callbacks of their own; ``_training.run_callbacks`` puts them in order beside
this one.
"""

import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from skorch.callbacks import Callback

from ._distributed import is_main_process, unwrapped_module
from .schedules import (
    AUTO_FIXED_CYCLES,
    auto_lr,
    check_enough_iterations,
    learning_rate_table,
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


def _index(states, state):
    """The position of ``state`` (the object itself) in ``states``."""
    return next(i for i, s in enumerate(states) if s is state)


def _n_batches(net, X, y):
    """Training batches per epoch, which the plan needs before the first one."""
    try:
        # With Accelerate the iterator is the prepared one: its length is the
        # number of batches of one process, i.e. of global optimizer steps.
        return len(net.get_iterator(net.get_dataset(X, y), training=True))
    except TypeError as exc:
        raise ValueError(
            "The number of training batches per epoch cannot be counted "
            "(the training DataLoader has no length), so the learning-rate "
            "cycles cannot be planned."
        ) from exc


def _check_peaks(peaks, min_lr):
    """The optimizer's learning rates are the cycles' peaks: finite, above 0 and min_lr."""
    not_usable = [lr for lr in peaks if not (math.isfinite(lr) and lr > 0)]
    if not_usable:
        raise ValueError(
            f"The net's learning rate must be a finite number above 0 (it is the peak "
            f"learning rate of every cycle), got lr={not_usable[0]!r}."
        )
    too_low = [lr for lr in peaks if lr < min_lr]
    if too_low:
        raise ValueError(
            f"min_lr={min_lr} is above the peak learning rate {too_low[0]} "
            "of the optimizer; min_lr must not exceed the net's lr."
        )


class CyclePlan:
    """The schedule of one run: its cycles and every step's learning rate.

    Three things decide the plan, and a resumed fit gets them back: the peaks
    (the optimizer's learning rates when training began), the ``scale`` the
    guards lowered them by, and the ``"auto"`` cut (the steps between which
    the cycles lie; None: not cut). The tables are rebuilt from them whenever
    one changes: one lookup per batch, no maths.
    """

    def __init__(self, n_snapshots, schedule, min_lr):
        self.n_snapshots = n_snapshots
        self.schedule = schedule
        self.min_lr = min_lr
        self.peaks = None
        self.scale = 1.0
        self.cut = None
        self.n_iter = None

    @property
    def auto(self):
        """Whether the validation curve plans the cycles (``n_snapshots="auto"``)."""
        return self.n_snapshots == "auto" and resolve_schedule(self.schedule).cuttable

    @property
    def n_cycles(self):
        """The cycles planned: ``n_snapshots``, or what "auto" has decided so far."""
        if self.n_snapshots != "auto":
            return self.n_snapshots
        if not self.auto:  # another schedule: the fixed count it had before "auto"
            return AUTO_FIXED_CYCLES
        return 1 if self.cut is None else len(self.cut) - 1

    def begin(self, net, n_iter):
        """Plan ``n_iter`` steps from the net's learning rates (a resumed fit keeps its peaks)."""
        self.n_iter = n_iter
        if self.peaks is None:
            self.peaks = [group["lr"] for group in net.optimizer_.param_groups]
        _check_peaks(self.peaks, self.min_lr)
        self._replan()

    def peak(self, scale=None, group=0):
        """A parameter group's peak learning rate at ``scale`` (default: the current one)."""
        scale = self.scale if scale is None else scale
        return self.min_lr + (self.peaks[group] - self.min_lr) * scale

    def lower_peak(self):
        """Halve the peak learning rate of the rest of the run."""
        self.scale /= 2
        self._replan()

    def cut_into(self, bounds):
        """Plan "auto" as the cycles between the steps ``bounds`` (0 first, ``n_iter`` last)."""
        self.cut = list(bounds)
        self._replan()

    def _replan(self):
        peaks = [self.peak(group=group) for group in range(len(self.peaks))]
        if self.auto:
            ends = np.asarray(self.cut[1:] if self.cut is not None else [self.n_iter]) - 1
            warmup = resolve_schedule(self.schedule).restart_warmup
            tables = [auto_lr(np.arange(self.n_iter), self.n_iter, self.cut, lr=peak,
                              min_lr=self.min_lr, warmup=warmup) for peak in peaks]
        else:
            ends = resolve_schedule(self.schedule).snapshots(self.n_iter, self.n_cycles)
            tables = [learning_rate_table(self.schedule, self.n_iter, self.n_cycles, lr=peak,
                                          min_lr=self.min_lr) for peak in peaks]
        # Python floats: the per-batch lookup is the training loop's own overhead.
        self.lrs = [table.tolist() for table in tables]
        self.ends = set(ends.tolist())
        # Cycle k (1-based) is the steps from bounds[k - 1] up to its snapshot step.
        self.bounds = np.concatenate([[0], ends + 1])

    def cycle(self, step):
        """The 1-based cycle of ``step``, as the user counts them."""
        return int(np.searchsorted(self.bounds, step, side="right"))

    def in_last_cycle(self, step):
        """Whether ``step`` lies in the last cycle, before its last step."""
        return self.bounds[-2] <= step < self.bounds[-1] - 1


class CyclicSnapshots(Callback):
    """Set the learning rate every batch and snapshot the module at cycle ends.

    The whole ``max_epochs`` budget of the net is split into ``n_snapshots``
    cycles of (almost) equal numbers of optimizer steps; the peak learning rate
    of every cycle is the optimizer's own learning rate (per parameter group).
    After the last step of each cycle, a copy of the module's ``state_dict`` is
    appended to ``snapshots_``. Cycle ends are found by counting steps, not by
    reading the learning rate.

    The estimators add their own callbacks beside it, in a fixed order: the
    divergence and collapse guards, which refuse a cycle through
    :meth:`recover` and :meth:`drop_last_snapshot`, and the
    ``n_snapshots="auto"`` cut (:meth:`cut`). Without them the cycles are
    unguarded, and "auto" (with a cosine schedule) stays the single net's one cycle.

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
        when a resumed fit continues), and again whenever :meth:`recover`
        halves the peak learning rate: a callable must give the same rates for
        the same arguments.
    event_name : str, default="event_snapshot"
        History column set to True on the epochs in which a snapshot was taken
        (``PrintLog`` shows it as a ``+`` in a ``snapshot`` column);
        ``event_diverged`` is set on the epochs in which :meth:`recover` ran.
    checkpoint : object or None, default=None
        Something with a ``save_snapshot(index, state)`` method, called when a
        snapshot is taken. The estimators pass their own when
        ``checkpoint_dir`` is set, and save :meth:`progress_state` at every
        epoch's end; :meth:`restore` continues from it.

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
        One entry per :meth:`recover`: iteration, cycle, loss, old and new
        peak-learning-rate factor.
    """

    def __init__(self, n_snapshots, min_lr=0.0, schedule="cosine",
                 event_name="event_snapshot", checkpoint=None):
        self.n_snapshots = n_snapshots
        self.min_lr = min_lr
        self.schedule = schedule
        self.event_name = event_name
        self.checkpoint = checkpoint

    def initialize(self):
        self.snapshots_ = []
        self.snapshot_epochs_ = []
        self.snapshot_iterations_ = []
        self.divergences_ = []
        self.iteration_ = 0
        self.n_iter_ = None
        # Training state that a resumed fit must get back (see progress_state).
        self._plan = CyclePlan(self.n_snapshots, self.schedule, self.min_lr)
        self._drop_cycle = False
        self._initial_state = None
        self._snapshot_losses = []
        return self

    # -- resuming -----------------------------------------------------------
    _PROGRESS = ("iteration_", "snapshot_epochs_", "snapshot_iterations_", "divergences_",
                 "_drop_cycle", "_snapshot_losses")
    _PLAN = {"_peaks": "peaks", "_lr_scale": "scale", "_cut": "cut"}  # file key: plan's

    def progress_state(self):
        """What a resumed fit needs, besides the net's own state and the snapshots.

        Until the first snapshot exists this includes the initial weights that
        :meth:`recover` falls back to (after that the last snapshot is the
        fallback, and the files stay small).
        """
        state = {name: getattr(self, name) for name in self._PROGRESS}
        state.update({key: getattr(self._plan, name) for key, name in self._PLAN.items()})
        state["_initial_state"] = None if self.snapshots_ else self._initial_state
        return state

    def restore(self, progress, snapshots):
        """Continue from ``progress_state()`` and the snapshots saved with it."""
        for name in self._PROGRESS:
            setattr(self, name, progress[name])
        for key, name in self._PLAN.items():
            setattr(self._plan, name, progress[key])
        self._initial_state = progress.get("_initial_state")
        self.snapshots_ = list(snapshots)

    def take_record(self):
        """Hand the run's :class:`SnapshotRecord` over; the callback keeps no copy.

        The snapshots (and the initial weights kept for :meth:`recover`) are
        released here, so the estimator owns the only copy.
        """
        record = SnapshotRecord(
            snapshots=self.snapshots_, snapshot_epochs=list(self.snapshot_epochs_),
            snapshot_iterations=list(self.snapshot_iterations_),
            divergences=list(self.divergences_), n_iter_planned=self.n_iter_,
            n_iter=self.iteration_, n_cycles=self._plan.n_cycles)
        self.snapshots_ = []
        self._initial_state = None
        return record

    # -- planning -----------------------------------------------------------
    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.n_batches_ = _n_batches(net, X, y)
        self.n_iter_ = int(net.max_epochs) * self.n_batches_
        check_enough_iterations(
            self.n_iter_, self._plan.n_cycles,
            f"n_snapshots={self.n_snapshots} needs at least as many training iterations, "
            f"but max_epochs={net.max_epochs} x {self.n_batches_} batches per epoch gives "
            f"only {self.n_iter_}.")
        self._plan.begin(net, self.n_iter_)
        if not self.snapshots_ and self._initial_state is None:  # a resumed fit has its own
            self._initial_state = copy_state_dict(unwrapped_module(net))

    @property
    def may_cut(self):
        """Whether :meth:`cut` may still re-plan: "auto", a cuttable schedule, no cut yet."""
        return self._plan.auto and self._plan.cut is None and self.iteration_ < self.n_iter_

    def cut(self, bounds):
        """Cut "auto" into the cycles between the steps ``bounds`` (0 first, ``n_iter_`` last)."""
        self._plan.cut_into(bounds)

    # -- training -----------------------------------------------------------
    def on_epoch_begin(self, net, **kwargs):
        self._snapshot_this_epoch = False
        self._diverged_this_epoch = False

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        # A DataLoader longer than its len() must not index past the plan.
        t = min(self.iteration_, self.n_iter_ - 1)
        for group, lrs in zip(net.optimizer_.param_groups, self._plan.lrs):
            group["lr"] = lrs[t]
        net.history.record_batch("lr", self._plan.lrs[0][t])

    @property
    def snapshot_due(self):
        """Whether a snapshot follows the step in progress: its cycle's last, not dropped."""
        return self.iteration_ in self._plan.ends and not self._drop_cycle

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        if self.iteration_ in self._plan.ends:
            if self._drop_cycle:
                self._drop_cycle = False  # the next cycle starts from good weights
            else:
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

    @property
    def snapshot_this_epoch(self):
        """Whether this epoch took a snapshot that is still kept."""
        return self._snapshot_this_epoch

    def drop_last_snapshot(self):
        """Forget the snapshot taken in this epoch (a guard refused it)."""
        for taken in (self.snapshots_, self.snapshot_epochs_, self.snapshot_iterations_,
                      self._snapshot_losses):
            taken.pop()
        self._snapshot_this_epoch = False

    def note_snapshot_loss(self, loss):
        """Keep the last snapshot's validation loss; return the best earlier ``(loss, state)``.

        None when no earlier snapshot has a loss.
        """
        self._snapshot_losses[-1] = float(loss)  # a plain float: checkpoints load weights_only
        earlier = [x for x in self._snapshot_losses[:-1] if x is not None]
        if not earlier:
            return None
        return min(earlier), self.snapshots_[self._snapshot_losses.index(min(earlier))]

    def on_epoch_end(self, net, **kwargs):
        last = max(min(self.iteration_, self.n_iter_) - 1, 0)
        net.history.record("lr", self._plan.lrs[0][last])
        net.history.record("cycle", self._plan.cycle(last))
        net.history.record(self.event_name, self._snapshot_this_epoch)
        net.history.record("event_diverged", self._diverged_this_epoch)

    def recover(self, net, step, what, drop_cycle=True, good=None, removed=False):
        """Restore good weights and halve the peak learning rate, with a warning.

        ``step`` is the step at which the divergence showed and ``what`` its
        sign; ``drop_cycle`` says whether the snapshot of the cycle in progress
        must be dropped (``removed``: a guard removed it already); ``good`` the
        weights to restore (default: the last snapshot, else the initial ones).
        """
        if good is None:
            good = self.snapshots_[-1] if self.snapshots_ else self._initial_state
        # The last cycle restarted from the initial weights before any snapshot was
        # kept still trains a model of its own: keeping its snapshot is better than
        # no ensemble (with n_snapshots=1, or "auto" before a cut, it is the only one).
        last_chance = not self.snapshots_ and self._plan.in_last_cycle(step)
        drop_cycle = drop_cycle and not last_chance
        unwrapped_module(net).load_state_dict(good)
        # Momentum and Adam moments carry the divergence (often as NaN).
        net.optimizer_.state.clear()
        old = self._plan.scale
        self._plan.lower_peak()
        self._drop_cycle = self._drop_cycle or drop_cycle
        self._diverged_this_epoch = True
        cycle = self._plan.cycle(min(step, self.n_iter_ - 1))
        self.divergences_.append({"iteration": int(step), "cycle": cycle, "loss": what,
                                  "lr_scale_before": old, "lr_scale_after": self._plan.scale})
        restored = (f"snapshot {_index(self.snapshots_, good) + 1}" if self.snapshots_
                    else "the initialisation")
        warnings.warn(
            f"Cycle {cycle} diverged at iteration {step} ({what}). Restored the weights of "
            f"{restored}, {'dropped' if drop_cycle or removed else 'kept'} cycle {cycle}'s "
            f"snapshot and lowered the peak learning rate from {self._plan.peak(old):.4g} "
            f"to {self._plan.peak():.4g} for the rest of training.",
            RuntimeWarning, stacklevel=2,
        )
