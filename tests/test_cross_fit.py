"""Cross-fitted runs (``bootstrap="folds"``, and what "auto" picks): issue 27."""

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import sksnapshot._base
from sksnapshot import (
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_regressor_net,
    load_ensemble,
    save_ensemble,
)
from sksnapshot._kernel import pool_runs
from sksnapshot.calibration import apply_temperature

from .conftest import tiny_net


def _ensemble(**params):
    params = {"n_snapshots": 2, "n_runs": 3, "random_state": 0, **params}
    return SnapshotEnsembleClassifier(tiny_net(max_epochs=4), **params)


def _recording(monkeypatch):
    """The (training rows, validation rows) every run was given, as row indices of X."""
    seen = []
    original = sksnapshot._base.train_once

    def recording(estimator, net, train, valid, **kwargs):
        seen.append((np.array(train[0]), np.array(valid[0])))
        return original(estimator, net, train, valid, **kwargs)

    monkeypatch.setattr(sksnapshot._base, "train_once", recording)
    return seen


def test_every_row_is_predicted_out_of_fold_exactly_once(data, monkeypatch):
    X, y = data
    seen = _recording(monkeypatch)
    clf = _ensemble(bootstrap="folds").fit(X, y)
    index = {tuple(row): i for i, row in enumerate(X.astype(np.float32))}
    folds = [sorted(index[tuple(row)] for row in valid) for _, valid in seen]
    assert sorted(i for fold in folds for i in fold) == list(range(len(X)))  # once each
    for (train, _), fold in zip(seen, folds):  # a run trains on the other folds
        assert sorted(index[tuple(row)] for row in train) == sorted(set(range(len(X))) - set(fold))
    counts = np.array([np.bincount(y[fold]) for fold in folds])  # stratified: 40 per class
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all()
    assert clf.pooling_ == "tempered runs" and clf.snapshot_runs_ == [0, 0, 1, 1, 2, 2]
    # One weight per place, shared equally by the runs; scores per snapshot, on its fold.
    np.testing.assert_allclose(clf.weights_.reshape(3, -1), clf.weights_[:len(clf.weights_) // 3]
                               * np.ones((3, 1)))
    assert clf.validation_scores_["log_loss"].shape == (6,)
    assert clf.disagreement_.shape == (6, 6)


def test_auto_cross_fits_five_runs_or_more_on_small_data_only(data, monkeypatch):
    X, y = data
    monkeypatch.setattr(sksnapshot._base, "CROSS_FIT_MIN_RUNS", 3)  # 3 tiny runs suffice here
    assert _ensemble().fit(X, y).pooling_ == "tempered runs"  # 120 rows, 3 runs
    assert _ensemble(n_runs=2).fit(X, y).pooling_ == "mixture"  # fewer runs: a shared split
    assert _ensemble(bootstrap=False).fit(X, y).pooling_ == "mixture"
    assert _ensemble(validation_fraction=0.0).fit(X, y).pooling_ == "mixture"
    assert _ensemble().fit(X[:90], y[:90], X_valid=X[90:], y_valid=y[90:]).pooling_ == "mixture"
    monkeypatch.setattr(sksnapshot._base, "CROSS_FIT_MAX_ROWS", 100)
    assert _ensemble().fit(X, y).pooling_ == "mixture"
    assert sksnapshot._base.CROSS_FIT_MIN_RUNS == 3  # the real default is 5, tested below


def test_auto_is_cross_fitted_from_five_runs(data, monkeypatch):
    seen = _recording(monkeypatch)
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(max_epochs=1), n_snapshots=1, n_runs=5,
                                     random_state=0).fit(X, y)
    assert clf.pooling_ == "tempered runs" and [len(valid) for _, valid in seen] == [24] * 5


def test_the_runs_are_tempered_then_averaged(data):
    X, y = data
    clf = _ensemble(bootstrap="folds").fit(X, y)
    probas = clf._member_outputs(X, [clf.snapshots_[i] for i in clf.members_])
    runs = np.asarray(clf.snapshot_runs_)[clf.members_]
    expected = np.zeros((len(X), 3))
    for r in range(3):
        mine = runs == r
        mixture = np.tensordot(clf.weights_[mine] / clf.weights_[mine].sum(), probas[mine], 1)
        expected += clf.weights_[mine].sum() * apply_temperature(np.log(mixture),
                                                                 clf.temperature_)
    np.testing.assert_allclose(clf.predict_proba(X), expected, atol=1e-6)
    np.testing.assert_allclose(list(clf.staged_predict_proba(X))[-1], expected, atol=1e-6)
    assert clf.temperature_ != 1.0
    # select() chooses on rows every run predicts: their average is calibrated then.
    clf.select(X[:40], y[:40])
    assert clf.pooling_ == "mixture"
    np.testing.assert_allclose(
        clf.predict_proba(X), pool_runs(clf._member_outputs(X, [clf.snapshots_[i] for i in
                                                                 clf.members_]),
                                        clf.weights_, runs, clf.temperature_, "mixture"),
        atol=1e-6)


@pytest.mark.parametrize("params, fit, match", [
    ({"n_runs": 5}, {}, r"class 0 has only 4 rows.*n_runs <= 4"),
    ({"n_runs": 1}, {}, r"bootstrap='folds': it needs n_runs >= 2"),
    ({}, {"X_valid": True}, r"bootstrap='folds': the folds are the validation rows"),
    ({"bootstrap": "yes"}, {}, "bootstrap"),
])
def test_bad_fold_settings_are_refused_with_the_reason(data, params, fit, match):
    X, y = data
    y = y.copy()
    y[np.flatnonzero(y == 0)[4:]] = 1  # class 0: 4 rows
    if fit:
        fit = {"X_valid": X[:10], "y_valid": y[:10]}
    with pytest.raises(ValueError, match=match):
        _ensemble(**{"bootstrap": "folds", **params}).fit(X, y, **fit)


def test_auto_keeps_the_shared_split_when_a_class_has_fewer_rows_than_runs(data, monkeypatch):
    monkeypatch.setattr(sksnapshot._base, "CROSS_FIT_MIN_RUNS", 3)
    X, y = data
    y = y.copy()
    y[np.flatnonzero(y == 2)[2:]] = 0  # class 2: 2 rows, fewer than 3 folds
    assert _ensemble().fit(X, y).pooling_ == "mixture"


def test_the_regressor_refuses_folds_and_auto_shares_the_split(data):
    X, y = data
    net = default_regressor_net().set_params(max_epochs=2, batch_size=32)
    reg = SnapshotEnsembleRegressor(net, n_snapshots=1, n_runs=2, random_state=0)
    with pytest.raises(ValueError, match="does not cross-fit"):
        clone(reg).set_params(bootstrap="folds").fit(X, y.astype(float))
    assert reg.fit(X, y.astype(float)).snapshot_runs_ == [0, 1]


def test_clone_grid_search_and_joblib(data, tmp_path):
    X, y = data
    clf = _ensemble(n_runs=2, bootstrap="folds")
    assert clone(clf).get_params()["bootstrap"] == "folds"
    search = GridSearchCV(clf, {"bootstrap": ["folds", False]}, cv=2).fit(X, y)
    assert search.best_params_["bootstrap"] in ("folds", False)
    # The runs go through joblib like shared-split runs: the same result in 2 processes.
    sequential = clone(clf).fit(X, y)
    parallel = clone(clf).set_params(n_jobs=2).fit(X, y)
    np.testing.assert_allclose(parallel.predict_proba(X), sequential.predict_proba(X),
                               atol=1e-6)
    joblib.dump(sequential, tmp_path / "clf.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib").predict_proba(X),
                                  sequential.predict_proba(X))


def test_save_and_load_keep_the_pooling(data, tmp_path):
    X, y = data
    clf = _ensemble(n_runs=2, bootstrap="folds").fit(X, y)
    save_ensemble(clf, tmp_path)
    loaded = load_ensemble(tmp_path)
    assert loaded.pooling_ == "tempered runs" and loaded.bootstrap == "folds"
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_export_and_stages_pool_the_runs_as_predict_proba_does(data):
    # One kernel head pools the runs for predict_proba, its stages and to_torch().
    import torch

    X, y = data
    clf = _ensemble(n_runs=2, bootstrap="folds").fit(X, y)
    assert clf.pooling_ == "tempered runs" and len(set(clf.snapshot_runs_)) == 2
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(list(clf.staged_predict_proba(X))[-1], proba, atol=1e-12)
    with torch.no_grad():
        exported = clf.to_torch()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(exported, proba, atol=1e-5)  # float32 graph vs float64
    # Not the average tempered once: the pooling makes a difference worth exporting.
    averaged = clf._calibrated(clf._weighted_outputs(X))
    assert np.abs(averaged - proba).max() > 1e-4


def test_resuming_cross_fitted_runs_from_their_checkpoints(data, tmp_path):
    X, y = data
    expected = _ensemble(n_runs=2, bootstrap="folds").fit(X, y)
    resumed = _ensemble(n_runs=2, bootstrap="folds", checkpoint_dir=tmp_path).fit(X, y)
    # Every run is done: all resumed.
    again = _ensemble(n_runs=2, bootstrap="folds", checkpoint_dir=tmp_path).fit(X, y)
    np.testing.assert_allclose(resumed.predict_proba(X), expected.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(again.predict_proba(X), expected.predict_proba(X), atol=1e-6)
