"""Divergence guard, interruption and resuming from checkpoints."""

import math

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot._compat import InvalidParameterError
from sksnapshot.schedules import cosine_annealing_lr

from ._helpers import AtTrainingBatch
from .conftest import interrupted_at, tiny_net


class FlakyLoss(torch.nn.CrossEntropyLoss):
    """Cross-entropy that returns NaN on the chosen (training) calls."""

    def __init__(self, nan_at=(), **kwargs):
        super().__init__(**kwargs)
        self.nan_at = set(nan_at)
        self.calls = 0

    def forward(self, input, target):
        loss = super().forward(input, target)
        if self.training:
            self.calls += 1
            if self.nan_at == {"all"} or self.calls in self.nan_at:
                return loss * float("nan")
        return loss


def fit(X, y, net, **kwargs):
    params = dict(n_snapshots=3, random_state=0, selection="last", weighting="uniform")
    params.update(kwargs)
    return SnapshotEnsembleClassifier(net, **params).fit(X, y)


def test_a_nan_loss_drops_the_cycle_restores_weights_and_halves_the_lr(data):
    X, y = data
    # 120 rows, batches of 32: 4 steps per epoch, 6 epochs, cycles of 8 steps.
    net = tiny_net(criterion=FlakyLoss, criterion__nan_at=[11])
    with pytest.warns(RuntimeWarning,
                      match=r"Cycle 2 diverged at iteration 10 \(training loss nan\)"
                            r".*weights of snapshot 1.*cycle 2's snapshot.*from 0\.1 to 0\.05"):
        clf = fit(X, y, net, validation_fraction=0.0)
    assert len(clf.snapshots_) == 2  # cycle 2's snapshot was dropped
    assert clf.divergences_[0]["iteration"] == 10 and clf.divergences_[0]["cycle"] == 2
    assert clf.net_.history[:, "event_diverged"] == [False, False, True, False, False, False]
    lrs = np.array([b["lr"] for e in clf.net_.history for b in e["batches"]])
    plan = cosine_annealing_lr(np.arange(24), 24, 3, lr=0.1)
    np.testing.assert_allclose(lrs[:11], plan[:11])
    np.testing.assert_allclose(lrs[11:], plan[11:] / 2)
    assert np.all(np.isfinite(clf.predict_proba(X)))
    for snapshot in clf.snapshots_:
        assert all(torch.isfinite(t).all() for t in snapshot.values())


def test_every_cycle_diverging_is_an_error_not_a_garbage_model(data):
    X, y = data
    net = tiny_net(criterion=FlakyLoss, criterion__nan_at=["all"])
    with pytest.warns(RuntimeWarning, match="diverged"):
        with pytest.raises(RuntimeError, match="Every learning-rate cycle diverged"):
            fit(X, y, net, validation_fraction=0.0)


class BlowUpAt(AtTrainingBatch):
    """Multiply the weights by 100 after the given training step."""

    after = True

    def act(self, net):
        with torch.no_grad():
            for p in net.module_.parameters():
                p.mul_(100.0)


def test_an_exploding_validation_loss_drops_the_snapshot_taken_in_that_epoch(data):
    X, y = data
    # 108 training rows: 4 steps per epoch; cycle 1 ends at step 7, the end of epoch 2.
    net = tiny_net(callbacks=[("blow", BlowUpAt(7))])
    with pytest.warns(RuntimeWarning, match=r"Cycle 1 diverged .*validation loss"):
        clf = fit(X, y, net, validation_fraction=0.1)
    assert len(clf.snapshots_) == 2 and clf.snapshot_epochs_ == [4, 6]
    assert clf.net_.history[1, "event_diverged"] and not clf.net_.history[1, "event_snapshot"]
    assert clf.score(X, y) > 0.5  # above chance (1/3) after restarting from scratch


def test_the_guard_can_be_turned_off_and_stays_quiet_on_healthy_runs(data, recwarn):
    X, y = data
    fit(X, y, tiny_net(lr=0.3, max_epochs=10), validation_fraction=0.2)
    assert not [w for w in recwarn if "diverged" in str(w.message)]


@pytest.mark.parametrize("at_batch", [13, 16])
def test_an_interrupted_fit_resumes_to_the_same_snapshots(data, tmp_path, at_batch):
    X, y = data
    kwargs = dict(n_snapshots=3, validation_fraction=0.2)
    reference = fit(X, y, tiny_net(module__dropout=0.2), **kwargs,
                    checkpoint_dir=tmp_path / "reference")
    directory = tmp_path / "interrupted"
    with pytest.warns(RuntimeWarning, match="Training stopped after"), interrupted_at(at_batch):
        partial = fit(X, y, tiny_net(module__dropout=0.2), **kwargs, checkpoint_dir=directory)
    assert len(partial.snapshots_) < 3
    assert sorted(p.name for p in directory.iterdir())[-1] == "snapshot_001.pt"
    resumed = fit(X, y, tiny_net(module__dropout=0.2), **kwargs, checkpoint_dir=directory)
    assert len(resumed.snapshots_) == 3
    # Resumed in this process from its checkpoint: the same computation, bit for bit.
    for a, b in zip(reference.snapshots_, resumed.snapshots_):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    np.testing.assert_array_equal(resumed.predict_proba(X), reference.predict_proba(X))
    assert len(resumed.net_.history) == 6
    # The snapshots on disk load without unpickling anything.
    on_disk = torch.load(directory / "snapshot_002.pt", weights_only=True)
    # Copied tensors, no arithmetic: bit for bit.
    assert torch.equal(on_disk["layers.0.weight"], resumed.snapshots_[2]["layers.0.weight"])


def test_a_checkpoint_of_another_run_is_refused(data, tmp_path):
    X, y = data
    fit(X, y, tiny_net(), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="belongs to another training run"):
        fit(X[:100], y[:100], tiny_net(), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="belongs to another training run"):
        fit(X, y, tiny_net(lr=0.05), checkpoint_dir=tmp_path)


class NanWeightsAt(Callback):
    """Fill the weights with NaN before the given training step (so its loss is NaN).

    The step is the snapshot callback's own count, which a resumed fit gets
    back: an interrupted and an uninterrupted run diverge at the same step.
    """

    def __init__(self, step=0):
        self.step = step

    def on_batch_begin(self, net, training=False, **kwargs):
        if training and dict(net.callbacks_)["snapshots"].iteration_ == self.step:
            with torch.no_grad():
                for p in net.module_.parameters():
                    p.fill_(math.nan)


def test_a_divergence_after_resuming_restores_the_initial_weights_as_without_interruption(
        data, tmp_path):
    X, y = data
    # 4 steps per epoch, cycle 1 = steps 0-7. Ctrl-C before step 5 (the checkpoint
    # holds epoch 1, steps 0-3); after the resume, step 6 diverges.
    kwargs = dict(validation_fraction=0.0)
    restored = r"Cycle 1 diverged at iteration 6 .*Restored the weights of the initialisation"
    with pytest.warns(RuntimeWarning, match=restored):
        reference = fit(X, y, tiny_net(callbacks=[NanWeightsAt(6)]), **kwargs)
    with pytest.raises(RuntimeError, match="before the first learning-rate cycle ended"):
        with interrupted_at(5):
            fit(X, y, tiny_net(callbacks=[NanWeightsAt(6)]), **kwargs, checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / "progress.pt", weights_only=True)
    assert saved["callback"]["_initial_state"] is not None  # no snapshot yet: kept for the guard
    with pytest.warns(RuntimeWarning, match=restored):
        resumed = fit(X, y, tiny_net(callbacks=[NanWeightsAt(6)]), **kwargs,
                      checkpoint_dir=tmp_path)
    assert resumed.divergences_ == reference.divergences_
    assert len(resumed.snapshots_) == len(reference.snapshots_) == 2
    # Resumed in this process from its checkpoint: the same computation, bit for bit.
    for a, b in zip(reference.snapshots_, resumed.snapshots_):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    np.testing.assert_array_equal(resumed.predict_proba(X), reference.predict_proba(X))
    # Once a snapshot exists it is the guard's fallback: the files stay small.
    saved = torch.load(tmp_path / "progress.pt", weights_only=True)
    assert saved["callback"]["_initial_state"] is None


# -- messages -------------------------------------------------------------------
@pytest.mark.parametrize("lr", [math.nan, math.inf, 0.0])
def test_a_learning_rate_that_is_not_a_positive_number_is_named(data, lr):
    X, y = data
    with pytest.raises(ValueError, match=rf"net's learning rate must be a finite number above 0"
                                         rf".*got lr={lr}"):
        fit(X, y, tiny_net(lr=lr))


@pytest.mark.parametrize("param", ["n_snapshots", "n_members"])
def test_bools_are_not_counts(data, param):
    X, y = data
    with pytest.raises(InvalidParameterError, match=f"'{param}' parameter .* Got True instead"):
        fit(X, y, tiny_net(), **{param: True})


def test_too_few_training_rows_are_warned_about(data):
    X, y = data
    with pytest.warns(UserWarning, match=r"Only 3 rows remain for training \(117 are held out"
                                         r" for validation\); fewer than 10"):
        fit(X, y, tiny_net(max_epochs=1), n_snapshots=1, validation_fraction=0.999)


@pytest.mark.parametrize("selection, weighting, warned", [
    ("all", "optimize", True), ("greedy", "uniform", True), ("last", "uniform", False),
])
def test_few_validation_rows_that_choose_members_are_warned_about(data, selection, weighting,
                                                                  warned, recwarn):
    X, y = data
    # 120 rows, 5%: 6 validation rows.
    fit(X, y, tiny_net(max_epochs=2), n_snapshots=2, validation_fraction=0.05,
        selection=selection, weighting=weighting)
    messages = [str(w.message) for w in recwarn if "validation rows choose" in str(w.message)]
    assert bool(messages) == warned
    if warned:
        assert messages[0].startswith("Only 6 validation rows choose the members and their "
                                      "weights; with fewer than 10 the choice is noisy")
