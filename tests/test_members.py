"""The estimator's choice and combination of members (selection, weights, SWA, schedules)."""

import copy

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss
from torch.optim.swa_utils import update_bn

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot.schedules import linear_cycles_lr
from sksnapshot.selection import member_scores

from .conftest import tiny_net


@pytest.fixture(scope="module")
def split(data):
    X, y = data
    return X[:90], y[:90], X[90:], y[90:]


@pytest.fixture(scope="module")
def fitted(split):
    X, y, _, _ = split
    # Without a temperature, predict_proba is the weighted mean of the members
    # (test_calibration.py covers the temperature).
    return SnapshotEnsembleClassifier(tiny_net(max_epochs=8), n_snapshots=4, calibration=None,
                                      random_state=0).fit(X, y)


def _member_probas(clf, X):
    """Each snapshot's probabilities through skorch's own predict_proba (a reference path)."""
    net = copy.deepcopy(clf.net_)
    probas = []
    for state in clf.snapshots_:
        net.module_.load_state_dict(state)
        probas.append(net.predict_proba(X.astype(np.float32)))
    return np.stack(probas)


def test_validation_results_are_recorded(fitted):
    scores = fitted.validation_scores_
    assert scores["accuracy"].shape == scores["log_loss"].shape == (4,)
    assert np.all((0 <= scores["accuracy"]) & (scores["accuracy"] <= 1))
    D = fitted.disagreement_
    assert D.shape == (4, 4) and np.allclose(D, D.T) and np.all(np.diag(D) == 0)


@pytest.mark.parametrize("selection, n_members, expected_size", [
    ("last", 2, 2), ("all", None, 4), ("diverse", 3, 3), ("greedy", 2, None),
    ("diverse", None, None),
])
def test_select_applies_each_strategy_without_retraining(fitted, split, selection, n_members,
                                                         expected_size):
    _, _, X_v, y_v = split
    clf = fitted.set_params(selection=selection, n_members=n_members, weighting="uniform")
    snapshots = clf.snapshots_
    clf.select(X_v, y_v)
    assert clf.snapshots_ is snapshots
    assert np.all(np.diff(clf.members_) > 0)
    if expected_size is not None:
        assert len(clf.members_) == expected_size
    if selection == "last":
        assert clf.members_.tolist() == [2, 3]
    assert clf.weights_.sum() == pytest.approx(1.0)
    expected = member_scores(_member_probas(clf, X_v), y_v)
    np.testing.assert_allclose(clf.validation_scores_["log_loss"], expected["log_loss"])
    probas = _member_probas(clf, X_v)[clf.members_]
    np.testing.assert_allclose(clf.predict_proba(X_v),
                               np.average(probas, axis=0, weights=clf.weights_), atol=1e-6)


def test_optimised_weights_are_no_worse_on_the_rows_they_were_fitted_to(fitted, split):
    _, _, X_v, y_v = split
    clf = fitted.set_params(selection="all", n_members=None, weighting="uniform").select(X_v, y_v)
    uniform = log_loss(y_v, clf.predict_proba(X_v), labels=clf.classes_)
    clf.set_params(weighting="optimize").select(X_v, y_v)
    assert np.all(clf.weights_ >= 0) and clf.weights_.sum() == pytest.approx(1.0)
    assert not np.allclose(clf.weights_, 0.25)
    assert log_loss(y_v, clf.predict_proba(X_v), labels=clf.classes_) <= uniform + 1e-9


def test_select_rejects_unknown_labels_and_mismatched_rows(fitted, split):
    _, _, X_v, y_v = split
    with pytest.raises(ValueError, match=r"labels not seen during fit: \[9\]"):
        fitted.select(X_v, np.where(y_v == 0, 9, y_v))
    with pytest.raises(ValueError, match="30 rows but y has 29 labels"):
        fitted.select(X_v, y_v[:-1])


def test_staged_predict_proba_adds_members_in_order(fitted, split):
    _, _, X_v, y_v = split
    clf = fitted.set_params(selection="all", n_members=None, weighting="uniform").select(X_v, y_v)
    stages = list(clf.staged_predict_proba(X_v))
    assert len(stages) == 4
    probas = _member_probas(clf, X_v)
    np.testing.assert_allclose(stages[0], probas[0], atol=1e-6)
    np.testing.assert_allclose(stages[1], probas[:2].mean(0), atol=1e-6)
    np.testing.assert_allclose(stages[-1], clf.predict_proba(X_v), atol=1e-12)


def test_selection_all_with_n_members_fails_before_training(split):
    X, y, _, _ = split
    with pytest.raises(ValueError, match="selection='all' uses every snapshot"):
        SnapshotEnsembleClassifier(tiny_net(), selection="all", n_members=2).fit(X, y)


def test_without_validation_rows_selection_falls_back_to_the_last_members(split):
    X, y, _, _ = split
    clf = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=3, n_members=2, selection="diverse",
                                     validation_fraction=0.0, random_state=0)
    with pytest.warns(UserWarning, match="needs validation rows"):
        clf.fit(X, y)
    assert clf.members_.tolist() == [1, 2] and clf.validation_scores_ is None


def test_weight_averaging_makes_one_model_with_fresh_batchnorm_statistics(split):
    X, y, X_v, _ = split
    clf = SnapshotEnsembleClassifier(tiny_net(module__batch_norm=True), n_snapshots=3,
                                     combine="weights", validation_fraction=0.0,
                                     weighting="uniform",
                                     random_state=0).fit(X, y)
    members = [clf.snapshots_[i] for i in clf.members_]
    averaged = clf.averaged_state_
    torch.testing.assert_close(averaged["layers.0.weight"],
                               sum(s["layers.0.weight"] for s in members) / 3)
    # BatchNorm statistics are re-estimated, not averaged.
    mean_of_means = sum(s["layers.1.running_mean"] for s in members) / 3
    assert not torch.allclose(averaged["layers.1.running_mean"], mean_of_means)
    module = clf.net_.module_
    module.load_state_dict({**averaged, "layers.1.running_mean": torch.zeros(16)})
    batches = torch.as_tensor(X, dtype=torch.float32).split(32)  # the net's batch size
    update_bn(batches, module)
    torch.testing.assert_close(module.state_dict()["layers.1.running_mean"],
                               averaged["layers.1.running_mean"])
    module.eval()
    with torch.no_grad():
        expected = torch.softmax(module(torch.as_tensor(X_v, dtype=torch.float32)), 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(X_v), expected, atol=1e-6)


def test_linear_schedule_drives_training(split):
    X, y, _, _ = split
    clf = SnapshotEnsembleClassifier(tiny_net(max_epochs=8), n_snapshots=3, schedule="linear",
                                     validation_fraction=0.1, random_state=0).fit(X, y)
    lrs = np.array([b["lr"] for e in clf.net_.history for b in e["batches"] if "lr" in b])
    n_iter = 8 * 3  # 81 training rows in batches of 32
    np.testing.assert_allclose(lrs, linear_cycles_lr(np.arange(n_iter), n_iter, 3, lr=0.1))
    assert len(clf.snapshots_) == 3


def test_a_callable_schedule_is_used_and_checked(split):
    X, y, _, _ = split

    def steps(t, n_iter, n_cycles, lr, min_lr):
        return np.where(t % 2 == 0, lr, lr / 10)

    clf = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=2, schedule=steps,
                                     validation_fraction=0.1, random_state=0).fit(X, y)
    lrs = [b["lr"] for e in clf.net_.history for b in e["batches"] if "lr" in b]
    assert lrs[:4] == pytest.approx([0.1, 0.01, 0.1, 0.01])

    def broken(t, n_iter, n_cycles, lr, min_lr):
        return lr

    with pytest.raises(ValueError, match="one finite learning rate per step"):
        SnapshotEnsembleClassifier(tiny_net(), schedule=broken).fit(X, y)
