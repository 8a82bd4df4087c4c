"""n_snapshots="auto": cycles planned from the validation curve, and the collapse guard."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot.schedules import (
    AUTO_MAX_CYCLES,
    AUTO_MIN_VALID_ROWS,
    SCHEDULES,
    auto_cycle_bounds,
    auto_lr,
    cosine_annealing_lr,
    plateau_epoch,
)

from ._helpers import AtTrainingBatch
from .conftest import interrupted_at, tiny_net

# 180 training rows and 60 validation rows (validation_fraction=0.25 of 240), batches of
# 32: 6 steps an epoch.
STEPS = 6


@pytest.fixture(scope="module")
def rows():
    X, y = make_classification(n_samples=240, n_features=6, n_informative=4, n_redundant=0,
                               n_classes=3, random_state=0)
    return StandardScaler().fit_transform(X).astype(np.float32), y


class ValidCurve(Callback):
    """Replace the recorded validation loss of the first epochs with a constructed curve."""

    def __init__(self, losses=(1.0, 0.5, 0.5, 0.5, 0.5)):
        self.losses = losses

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history) - 1
        if epoch < len(self.losses):  # later epochs keep their real validation loss
            net.history.record("valid_loss", self.losses[epoch])


class Corrupt(AtTrainingBatch):
    """After the given training step, turn the output layer's weights into confident nonsense."""

    after = True

    def act(self, net):
        with torch.no_grad():
            last = [m for m in net.module_.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.mul_(-20.0)


def fit(X, y, net, **params):
    params = {"random_state": 0, "validation_fraction": 0.25, **params}
    return SnapshotEnsembleClassifier(net, **params).fit(X, y)


def batch_lrs(clf):
    return np.array([b["lr"] for e in clf.net_.history for b in e["batches"] if "lr" in b])


# -- the plan as pure functions ---------------------------------------------------------
@pytest.mark.parametrize("losses, n_epochs, expected", [
    ([1.0, 0.5, 0.5, 0.5, 0.5], 30, True),           # three epochs without a 1 % gain
    ([1.0, 0.5, 0.5, 0.5, 0.52], 30, True),          # over-fitting counts as levelled off
    ([1.0, 0.5, 0.5, 0.5, 0.49], 30, False),         # 2 % better: still improving
    ([1.0, 0.5, 0.5, 0.5, 0.5], 14, False),          # no room for two more 5-epoch cycles
    ([1.0, 0.5, 0.5], 30, False),                    # too few epochs to tell
    ([1.0, 0.5, np.nan, 0.5, 0.5], 30, False),       # a non-finite loss decides nothing
    # Still learning, with one lucky low value on noisy rows: the window grows with the
    # epochs (half of them), so three epochs without a new best are no plateau yet.
    ([2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.74, 0.79, 0.75, 0.87], 80, False),
    ([2.0, 1.0, 0.7, 0.74, 0.79, 0.75, 0.87, 0.8, 0.75, 0.72], 80, True),
    ([-1.0, -2.0, -2.0, -2.0, -2.0], 30, True),      # negative losses (Gaussian NLL)
    ([-1.0, -2.0, -2.0, -2.0, -2.1], 30, False),
])
def test_a_plateau_is_patience_epochs_without_gain_early_enough(losses, n_epochs, expected):
    assert plateau_epoch(losses, n_epochs) is expected


@pytest.mark.parametrize("n_epochs, cut", [(30, 5), (40, 6), (90, 4), (15, 5), (100, 33)])
def test_cycles_after_the_cut_are_whole_epochs_at_least_as_long_as_the_cut(n_epochs, cut):
    bounds = auto_cycle_bounds(n_epochs, cut, STEPS)
    assert bounds[0] == cut * STEPS and bounds[-1] == n_epochs * STEPS
    assert np.all(bounds % STEPS == 0)
    lengths = np.diff(bounds) // STEPS
    assert 2 <= len(lengths) <= AUTO_MAX_CYCLES
    assert lengths.min() >= min(cut, (n_epochs - cut) // 2)


def test_the_auto_schedule_is_the_single_nets_until_the_cut():
    n_iter, bounds = 90, [15, 30, 45, 60, 75, 90]
    lrs = auto_lr(np.arange(n_iter), n_iter, bounds, lr=0.1)
    single = cosine_annealing_lr(np.arange(n_iter), n_iter, 1, lr=0.1)
    np.testing.assert_allclose(lrs[:15], single[:15])
    np.testing.assert_allclose(auto_lr(np.arange(n_iter), n_iter, None, lr=0.1), single)
    assert lrs[15] == pytest.approx(single[15])  # the first cycle anneals from where it was
    ends = np.array(bounds[1:]) - 1
    # A restart is cos(0) = 1 times the peak: exact in any libm.
    assert np.all(lrs[ends] < 0.005) and np.all(lrs[np.array(bounds[1:-1])] == 0.1)


# -- the estimator --------------------------------------------------------------------
def test_a_short_budget_gives_exactly_the_single_net(data):
    X, y = data
    auto = fit(X, y, tiny_net())
    single = fit(X, y, tiny_net(), n_snapshots=1)
    assert len(auto.snapshots_) == 1 and auto.snapshot_epochs_ == [6]
    # 'auto' on a short budget runs n_snapshots=1's very fit, in one process: bit for bit.
    for key, value in single.snapshots_[0].items():
        assert torch.equal(auto.snapshots_[0][key], value), key
    np.testing.assert_array_equal(auto.predict_proba(X), single.predict_proba(X))


def test_without_validation_rows_auto_keeps_one_cycle(rows):
    X, y = rows
    clf = fit(X, y, tiny_net(max_epochs=30, callbacks=[ValidCurve()]), validation_fraction=0.0)
    assert len(clf.snapshots_) == 1


def test_too_few_validation_rows_never_cut(data):
    X, y = data  # 120 rows: 30 validation rows
    assert 30 < AUTO_MIN_VALID_ROWS
    clf = fit(X, y, tiny_net(max_epochs=30, callbacks=[ValidCurve()]))
    assert clf.snapshot_epochs_ == [30]


def test_a_plateau_cuts_the_budget_into_cycles_of_whole_epochs(rows, monkeypatch):
    monkeypatch.setattr("sksnapshot._training.AUTO_COLLAPSE_FACTOR", None)
    X, y = rows
    clf = fit(X, y, tiny_net(max_epochs=30, callbacks=[ValidCurve()]))
    # The curve levels off at epoch 5: five cycles of 5 epochs follow.
    assert clf.snapshot_epochs_ == [10, 15, 20, 25, 30]
    assert clf.net_.history[:, "cycle"] == [1] * 10 + [2] * 5 + [3] * 5 + [4] * 5 + [5] * 5
    bounds = [e * STEPS for e in (5, 10, 15, 20, 25, 30)]
    np.testing.assert_allclose(batch_lrs(clf), auto_lr(np.arange(180), 180, bounds, lr=0.1))


def test_auto_asks_the_schedule_whether_it_may_cut_and_how_restarts_ramp(rows, monkeypatch):
    # Training names no schedule: what "auto" does follows the schedule's declaration.
    monkeypatch.setattr("sksnapshot._training.AUTO_COLLAPSE_FACTOR", None)
    X, y = rows
    monkeypatch.setitem(SCHEDULES, "cosine", SCHEDULES["cosine"]._replace(restart_warmup=0.5))
    clf = fit(X, y, tiny_net(max_epochs=30, callbacks=[ValidCurve()]))
    bounds = [e * STEPS for e in (5, 10, 15, 20, 25, 30)]
    np.testing.assert_allclose(batch_lrs(clf),
                               auto_lr(np.arange(180), 180, bounds, lr=0.1, warmup=0.5))
    monkeypatch.setitem(SCHEDULES, "cosine", SCHEDULES["cosine"]._replace(cuttable=False))
    clf = fit(X, y, tiny_net(max_epochs=30, callbacks=[ValidCurve()]))
    assert clf.snapshot_epochs_ == [6, 12, 18, 24, 30]  # the fixed five cycles, no cut


def test_an_integer_n_snapshots_ignores_the_validation_curve(rows):
    X, y = rows
    clf = fit(X, y, tiny_net(max_epochs=30, callbacks=[ValidCurve()]), n_snapshots=3)
    assert clf.snapshot_epochs_ == [10, 20, 30]
    np.testing.assert_allclose(batch_lrs(clf),
                               cosine_annealing_lr(np.arange(180), 180, 3, lr=0.1))


def test_a_restart_that_collapses_is_refused_and_the_best_snapshot_restored(rows):
    X, y = rows
    # Cycle 2 ends after step 89 (epoch 15); its weights are wrecked right after that step.
    net = tiny_net(max_epochs=30, callbacks=[ValidCurve(), Corrupt(89)])
    with pytest.warns(RuntimeWarning, match=r"Cycle 2 diverged at iteration 89 \(validation "
                      r"loss .*x the best snapshot's\)\. Restored the weights of snapshot 1, "
                      r"dropped cycle 2's snapshot.*from 0\.1 to 0\.05"):
        clf = fit(X, y, net)
    assert clf.snapshot_epochs_ == [10, 20, 25, 30]
    assert [d["cycle"] for d in clf.divergences_] == [2]
    bounds = [e * STEPS for e in (5, 10, 15, 20, 25, 30)]
    plan = auto_lr(np.arange(180), 180, bounds, lr=0.1)
    np.testing.assert_allclose(batch_lrs(clf)[90:], plan[90:] / 2)
    assert clf.score(X, y) > 0.6


def test_auto_resumes_exactly_after_the_cut(rows, tmp_path):
    X, y = rows
    kwargs = dict(checkpoint_dir=tmp_path)
    reference = fit(X, y, tiny_net(max_epochs=30, callbacks=[ValidCurve()]))
    with pytest.warns(RuntimeWarning, match=r"Training stopped after 2 of 5 cycles"):
        with interrupted_at(100):  # in cycle 3, after the cut
            fit(X, y, tiny_net(max_epochs=30, callbacks=[ValidCurve()]), **kwargs)
    resumed = fit(X, y, tiny_net(max_epochs=30, callbacks=[ValidCurve()]), **kwargs)
    assert resumed.snapshot_epochs_ == reference.snapshot_epochs_
    # Resumed in this process from its checkpoint: the same computation, bit for bit.
    np.testing.assert_array_equal(resumed.predict_proba(X), reference.predict_proba(X))
