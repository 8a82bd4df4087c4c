"""The training callbacks one at a time: the snapshot callback, the guards, the "auto" cut,
the progress they save, and the order ``train_once`` puts them in."""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier

from sksnapshot import CyclicSnapshots, SnapshotEnsembleClassifier
from sksnapshot._auto_cut import AutoCut
from sksnapshot._checkpoint import SaveProgress
from sksnapshot._guards import CollapseGuard, DivergenceGuard
from sksnapshot._training import CALLBACK_NAME, RunSpec, run_callbacks
from sksnapshot.schedules import auto_cycle_bounds, cosine_annealing_lr

from .conftest import tiny_net

# The keys of the progress file's "callback" mapping: files written before the callbacks
# were split must resume, so they never change.
PROGRESS_KEYS = {"iteration_", "snapshot_epochs_", "snapshot_iterations_", "divergences_",
                 "_peaks", "_lr_scale", "_reference_loss", "_drop_cycle", "_cut",
                 "_snapshot_losses", "_initial_state"}


def settings(n_snapshots):
    """The run specification ``run_callbacks`` reads (as an estimator plans it)."""
    return RunSpec(n_snapshots=n_snapshots, min_lr=0.0, schedule="cosine", verbose=0,
                   net_class=NeuralNetClassifier, auto=n_snapshots == "auto")


class Directory:
    """A checkpoint directory that keeps what it is given in memory."""

    def __init__(self):
        self.snapshots, self.progress = {}, []

    def save_snapshot(self, index, state):
        self.snapshots[index] = state

    def save_progress(self, net, callback):
        # A copy, as torch.save writes one: the callbacks go on changing their lists.
        self.progress.append(copy.deepcopy(callback.progress_state()))


class Snapshots:
    """A stand-in for ``CyclicSnapshots`` that records what the guards and the cut ask of it."""

    iteration_ = 8
    n_batches_ = 4
    snapshot_due = False
    snapshot_this_epoch = False
    may_cut = True

    def __init__(self, best=None):
        self.best, self.asked = best, []

    def recover(self, net, step, what, **kwargs):
        self.asked.append(("recover", step, what, kwargs))

    def drop_last_snapshot(self):
        self.asked.append(("drop",))

    def note_snapshot_loss(self, loss):
        self.asked.append(("loss", loss))
        return self.best

    def cut(self, bounds):
        self.asked.append(("cut", bounds))


def net_with(valid_losses=(), max_epochs=30):
    """Just enough of a net for a callback: a module, a history of rows, ``max_epochs``."""
    return SimpleNamespace(module_=torch.nn.Linear(2, 2), max_epochs=max_epochs,
                           history=[{"valid_loss": loss} for loss in valid_losses] or [{}])


def train(callbacks, X, y, **params):
    net = tiny_net(callbacks=callbacks, train_split=None, module__n_features=X.shape[1],
                   module__n_classes=len(np.unique(y)), **params)
    return net.fit(X.astype(np.float32), y)


# -- the order ------------------------------------------------------------------------
def test_the_order_is_what_the_guards_and_the_cut_need():
    names = [name for name, _ in run_callbacks(settings("auto"), Directory())]
    guard, collapse, snapshots, cut, progress = (f"{CALLBACK_NAME}_divergence_guard",
                                                 f"{CALLBACK_NAME}_collapse_guard",
                                                 CALLBACK_NAME, f"{CALLBACK_NAME}_auto_cut",
                                                 f"{CALLBACK_NAME}_progress")
    # A guard refuses a cycle before its snapshot is taken and the epoch recorded; the
    # cut re-plans after the epoch recorded its plan; the progress holds the whole epoch.
    assert names == [guard, collapse, snapshots, cut, progress]
    # An integer n_snapshots has no collapse guard and no cut; no directory, no progress.
    assert [name for name, _ in run_callbacks(settings(3))] == [guard, snapshots]


def test_a_fit_adds_them_in_that_order_after_the_nets_scoring(data):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(max_epochs=2), n_snapshots="auto",
                                     random_state=0).fit(X, y)
    names = [name for name, _ in clf.net_.callbacks_]
    ours = [name for name, _ in run_callbacks(settings("auto"))]
    start = names.index(ours[0])
    # After skorch's scoring callbacks, which record the valid_loss the guards and the cut read.
    assert names[start:start + len(ours)] == ours and "valid_loss" in names[:start]


def test_the_callbacks_of_a_run_cooperate_with_one_snapshot_callback():
    callbacks = dict(run_callbacks(settings("auto"), Directory()))
    snapshots = callbacks[CALLBACK_NAME]
    assert isinstance(snapshots, CyclicSnapshots)
    for name, callback in callbacks.items():
        if name != CALLBACK_NAME:
            assert callback.snapshots is snapshots, name


# -- the snapshot callback on its own --------------------------------------------------
def test_the_snapshot_callback_sets_every_lr_and_snapshots_each_cycle_end(data):
    X, y = data  # 120 rows, batches of 32: 4 steps an epoch, 6 epochs, cycles of 8 steps
    snapshots = CyclicSnapshots(3)
    net = train([(CALLBACK_NAME, snapshots)], X, y)
    lrs = [batch["lr"] for row in net.history for batch in row["batches"]]
    np.testing.assert_allclose(lrs, cosine_annealing_lr(np.arange(24), 24, 3, lr=0.1))
    assert net.history[:, "cycle"] == [1, 1, 2, 2, 3, 3]
    assert net.history[:, "event_snapshot"] == [False, True] * 3
    record = snapshots.take_record()
    assert record.snapshot_iterations == [7, 15, 23] and record.snapshot_epochs == [2, 4, 6]
    assert not snapshots.snapshots_  # handed over, not kept


def test_auto_without_the_cut_is_the_single_nets_one_cycle(data):
    X, y = data
    snapshots = CyclicSnapshots("auto")
    train([(CALLBACK_NAME, snapshots)], X, y)
    assert snapshots.take_record().snapshot_epochs == [6]


def test_recover_restores_the_last_snapshot_halves_the_peak_and_drops_the_cycle(data):
    X, y = data
    snapshots = CyclicSnapshots(3)
    net = train([(CALLBACK_NAME, snapshots)], X, y)
    with torch.no_grad():
        for parameter in net.module_.parameters():
            parameter.fill_(math.nan)
    with pytest.warns(RuntimeWarning, match=r"Cycle 2 diverged at iteration 8 \(test\)\. "
                      r"Restored the weights of snapshot 3, dropped cycle 2's snapshot and "
                      r"lowered the peak learning rate from 0\.1 to 0\.05"):
        snapshots.recover(net, 8, "test")
    for key, value in net.module_.state_dict().items():
        assert torch.equal(value, snapshots.snapshots_[-1][key])
    assert snapshots.progress_state()["_lr_scale"] == 0.5 and not snapshots.snapshot_due
    assert snapshots.divergences_ == [{"iteration": 8, "cycle": 2, "loss": "test",
                                       "lr_scale_before": 1.0, "lr_scale_after": 0.5}]


# -- the guards -------------------------------------------------------------------------
def test_the_divergence_guard_judges_the_training_loss_against_the_first_batchs():
    snapshots = Snapshots()
    guard = DivergenceGuard(snapshots).initialize()
    net = net_with()
    for loss in (2.0, 19.0, 21.0, math.nan):  # the first batch's 2.0 sets the scale
        guard.on_batch_end(net, training=True, loss=torch.tensor(loss))
    assert [what for _, _, what, _ in snapshots.asked] == ["training loss 21",
                                                           "training loss nan"]
    assert guard.progress_state() == {"_reference_loss": 2.0}


def test_the_divergence_guard_refuses_non_finite_weights_only_before_a_snapshot():
    snapshots, net = Snapshots(), net_with()
    guard = DivergenceGuard(snapshots, factor=None).initialize()
    with torch.no_grad():
        net.module_.weight.fill_(math.inf)
    guard.on_batch_end(net, training=True, loss=torch.tensor(1.0))
    assert snapshots.asked == []  # no snapshot follows this step
    snapshots.snapshot_due = True
    guard.on_batch_end(net, training=True, loss=torch.tensor(1.0))
    assert snapshots.asked == [("recover", 8, "non-finite weights", {})]


def test_the_divergence_guard_drops_the_snapshot_of_an_epoch_whose_validation_exploded():
    snapshots = Snapshots()
    guard = DivergenceGuard(snapshots).initialize()
    guard.restore({"_reference_loss": 1.0})
    guard.on_epoch_end(net_with([99.0]))  # below 10**2 x 1: an over-fitting model's
    assert snapshots.asked == []
    snapshots.snapshot_this_epoch = True
    guard.on_epoch_end(net_with([101.0]))
    assert snapshots.asked == [("drop",), ("recover", 7, "validation loss 101",
                                           {"drop_cycle": False, "removed": True})]


def test_the_collapse_guard_judges_only_a_snapshot_the_epoch_took():
    snapshots = Snapshots(best=(0.5, "the best weights"))
    guard = CollapseGuard(snapshots, factor=1.5)
    guard.on_epoch_end(net_with([2.0]))
    assert snapshots.asked == []  # no snapshot this epoch
    snapshots.snapshot_this_epoch = True
    guard.on_epoch_end(net_with([0.7]))  # 1.4 x the best: kept
    assert snapshots.asked == [("loss", 0.7)]
    guard.on_epoch_end(net_with([1.0]))
    assert snapshots.asked[1:] == [
        ("loss", 1.0), ("drop",),
        ("recover", 7, "validation loss 1, 2x the best snapshot's",
         {"drop_cycle": False, "good": "the best weights", "removed": True})]


# -- the "auto" cut ------------------------------------------------------------------------
def test_the_cut_hands_the_bounds_of_a_plateau_to_the_snapshot_callback():
    snapshots = Snapshots()
    cut = AutoCut(snapshots)
    cut.on_epoch_begin(None, dataset_valid=range(60))
    cut.on_epoch_end(net_with([1.0, 0.5, 0.5]))  # too few epochs to tell
    assert snapshots.asked == []
    cut.on_epoch_end(net_with([1.0, 0.5, 0.5, 0.5, 0.5]))
    # 8 steps of 4 an epoch: 2 epochs done; the schedules' bounds, as a list, are the plan's.
    assert snapshots.asked == [("cut", auto_cycle_bounds(30, 2, 4).tolist())]


@pytest.mark.parametrize("rows, may_cut", [(range(49), True), (range(60), False)])
def test_the_cut_needs_validation_rows_and_a_plan_that_may_be_cut(rows, may_cut):
    snapshots = Snapshots()
    snapshots.may_cut = may_cut
    cut = AutoCut(snapshots)
    cut.on_epoch_begin(None, dataset_valid=rows)
    cut.on_epoch_end(net_with([1.0, 0.5, 0.5, 0.5, 0.5]))
    assert snapshots.asked == []


# -- the progress a resumed fit continues from ---------------------------------------------
def test_a_saved_progress_restored_gives_the_same_state_in_the_same_file_format(data):
    X, y = data
    directory = Directory()
    ours = run_callbacks(settings(3), directory)
    train(list(ours), X, y)
    saved = directory.progress[2]  # after epoch 3 of 6
    assert set(saved) == PROGRESS_KEYS
    assert saved["iteration_"] == 12 and saved["snapshot_iterations_"] == [7]
    again = run_callbacks(settings(3), directory)
    for _, callback in again:
        callback.initialize()
    progress = dict(again)[f"{CALLBACK_NAME}_progress"]
    assert isinstance(progress, SaveProgress)
    progress.restore(saved, [directory.snapshots[0]])
    restored = progress.progress_state()
    assert restored.keys() == saved.keys()
    for key in saved:
        assert restored[key] == saved[key], key  # None for _initial_state: a snapshot exists
    assert progress.n_snapshots == 1
