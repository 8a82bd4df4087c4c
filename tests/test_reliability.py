"""Divergence guard, interruption and resuming from checkpoints."""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from sksnapshot import SnapshotEnsembleClassifier, cosine_annealing_lr

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
    with pytest.warns(RuntimeWarning, match=r"Cycle 2 diverged at iteration 10 \(training loss nan\)"
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


class BlowUpAt(Callback):
    """Multiply the weights by 100 after the given training step."""

    def __init__(self, step=0):
        self.step = step

    def initialize(self):
        self.seen_ = 0
        return self

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            if self.seen_ == self.step:
                with torch.no_grad():
                    for p in net.module_.parameters():
                        p.mul_(100.0)
            self.seen_ += 1


def test_an_exploding_validation_loss_drops_the_snapshot_taken_in_that_epoch(data):
    X, y = data
    # 108 training rows: 4 steps per epoch; cycle 1 ends at step 7, the end of epoch 2.
    net = tiny_net(callbacks=[("blow", BlowUpAt(step=7))])
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
    for a, b in zip(reference.snapshots_, resumed.snapshots_):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    np.testing.assert_array_equal(resumed.predict_proba(X), reference.predict_proba(X))
    assert len(resumed.net_.history) == 6
    # The snapshots on disk load without unpickling anything.
    on_disk = torch.load(directory / "snapshot_002.pt", weights_only=True)
    assert torch.equal(on_disk["layers.0.weight"], resumed.snapshots_[2]["layers.0.weight"])


def test_a_checkpoint_of_another_run_is_refused(data, tmp_path):
    X, y = data
    fit(X, y, tiny_net(), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="belongs to another training run"):
        fit(X[:100], y[:100], tiny_net(), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="belongs to another training run"):
        fit(X, y, tiny_net(lr=0.05), checkpoint_dir=tmp_path)
