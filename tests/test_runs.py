"""Independent runs (``n_runs``), bootstrap samples and their parallel training (issue 17)."""

import numpy as np
import pytest
import torch
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

from .conftest import interrupted_at, tiny_net


def _ensemble(**params):
    params = {"n_snapshots": 2, "random_state": 0, **params}
    return SnapshotEnsembleClassifier(tiny_net(max_epochs=4), **params)


def _same_snapshots(a, b):
    assert len(a) == len(b)
    for first, second in zip(a, b):
        assert list(first) == list(second)
        for key in first:
            assert torch.equal(first[key], second[key]), key


def test_two_runs_pool_their_snapshots_run_major(data):
    X, y = data
    clf = _ensemble(n_runs=2).fit(X, y)
    assert len(clf.snapshots_) == 4
    assert clf.snapshot_runs_ == [0, 0, 1, 1]
    # 108 training rows in batches of 32: 4 steps an epoch, 16 a run.
    assert clf.snapshot_epochs_ == [2, 4, 2, 4]
    assert clf.snapshot_iterations_ == [7, 15, 7, 15]
    assert clf.n_iter_ == clf.n_iter_planned_ == 32
    assert len(clf.validation_scores_["log_loss"]) == 4
    assert clf.predict_proba(X).shape == (len(X), 3)
    # The runs start from different initialisations.
    assert not torch.equal(clf.snapshots_[0]["layers.0.weight"],
                           clf.snapshots_[2]["layers.0.weight"])


def test_one_run_is_the_fit_of_before_and_run_0_of_more(data):
    X, y = data
    one = _ensemble().fit(X, y)
    explicit = _ensemble(n_runs=1, n_jobs=2).fit(X, y)
    three = _ensemble(n_runs=3).fit(X, y)
    assert one.snapshot_runs_ == [0, 0]
    _same_snapshots(one.snapshots_, explicit.snapshots_)
    np.testing.assert_array_equal(one.predict_proba(X), explicit.predict_proba(X))
    # Run 0 keeps the seed a single run draws: the same snapshots.
    _same_snapshots(one.snapshots_, three.snapshots_[:2])
    assert three.snapshot_runs_ == [0, 0, 1, 1, 2, 2]
    assert one.net_.history[:, "train_loss"] == three.net_.history[:, "train_loss"]


def test_n_jobs_2_on_loky_equals_n_jobs_1(data):
    X, y = data
    sequential = _ensemble(n_runs=2, bootstrap=True).fit(X, y)
    parallel = _ensemble(n_runs=2, bootstrap=True, n_jobs=2).fit(X, y)
    _same_snapshots(sequential.snapshots_, parallel.snapshots_)
    np.testing.assert_array_equal(sequential.predict_proba(X), parallel.predict_proba(X))
    assert sequential.snapshot_runs_ == parallel.snapshot_runs_


def test_bootstrap_samples_the_training_rows_and_leaves_validation_alone(data, monkeypatch):
    X, y = data
    seen = []
    original = sksnapshot._base.train_once

    def recording(estimator, net, train, valid, **kwargs):
        seen.append((np.array(train[0]), np.array(valid[0]), np.array(valid[1])))
        return original(estimator, net, train, valid, **kwargs)

    monkeypatch.setattr(sksnapshot._base, "train_once", recording)
    _ensemble(n_runs=3, bootstrap=True).fit(X, y)
    assert len(seen) == 3
    rows = {tuple(row): i for i, row in enumerate(X.astype(np.float32))}
    valid_rows = {rows[tuple(row)] for row in seen[0][1]}
    assert len(valid_rows) == 12  # validation_fraction=0.1 of 120
    samples = []
    for train, valid_X, valid_y in seen:
        assert len(train) == 108  # as many rows as the training part
        index = [rows[tuple(row)] for row in train]
        assert len(set(index)) < len(index)  # drawn with replacement: rows repeat
        assert not set(index) & valid_rows  # never a validation row
        np.testing.assert_array_equal(valid_X, seen[0][1])  # shared and untouched
        np.testing.assert_array_equal(valid_y, seen[0][2])
        samples.append(sorted(index))
    assert samples[0] != samples[1] != samples[2]

    seen.clear()
    _ensemble(n_runs=2).fit(X, y)  # without bootstrap: every training row once
    for train, _, _ in seen:
        assert sorted(rows[tuple(row)] for row in train) == sorted(
            set(range(120)) - valid_rows)


def test_bootstrap_on_a_dataset_uses_index_subsets(data, monkeypatch):
    X, y = data
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(X, dtype=torch.float32),
                                             torch.as_tensor(y))
    seen = []
    original = sksnapshot._base.train_once

    def recording(estimator, net, train, valid, **kwargs):
        seen.append(train[0])
        return original(estimator, net, train, valid, **kwargs)

    monkeypatch.setattr(sksnapshot._base, "train_once", recording)
    clf = _ensemble(n_runs=2, bootstrap=True).set_params(net__module__n_features=6)
    clf.fit(dataset)
    assert all(isinstance(train, torch.utils.data.Subset) for train in seen)
    assert all(len(set(train.indices)) < len(train.indices) == 108 for train in seen)
    assert clf.predict(dataset).shape == (120,)


def test_combine_weights_averages_within_the_heaviest_members_run(data):
    X, y = data
    clf = _ensemble(n_runs=2, combine="weights", weighting="uniform").fit(X, y)
    runs = np.asarray(clf.snapshot_runs_)
    assert len(set(runs[clf.members_].tolist())) == 1
    np.testing.assert_allclose(clf.weights_.sum(), 1.0)
    pooled = _ensemble(n_runs=2, weighting="uniform").fit(X, y)
    heaviest = runs[pooled.members_[np.argmax(pooled.weights_)]]  # the first of equals
    assert runs[clf.members_][0] == heaviest
    assert clf.averaged_state_ is not None and clf.predict(X).shape == y.shape


def test_checkpoint_resumes_each_run_after_an_interruption(data, tmp_path):
    X, y = data
    expected = _ensemble(n_runs=2).fit(X, y)
    with interrupted_at(16 + 10):  # run 0 done (16 steps), run 1 stopped in its 2nd cycle
        with pytest.warns(RuntimeWarning, match="Training stopped after 3 of 4 cycles"):
            partial = _ensemble(n_runs=2, checkpoint_dir=tmp_path).fit(X, y)
    assert partial.snapshot_runs_ == [0, 0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_000", "run_001"]
    resumed = _ensemble(n_runs=2, checkpoint_dir=tmp_path).fit(X, y)
    _same_snapshots(resumed.snapshots_, expected.snapshots_)
    np.testing.assert_array_equal(resumed.predict_proba(X), expected.predict_proba(X))
    # Other settings of the runs (here bootstrap) are another run: refused.
    with pytest.raises(ValueError, match="belongs to another training run"):
        _ensemble(n_runs=2, bootstrap=True, checkpoint_dir=tmp_path).fit(X, y)


def test_one_run_keeps_the_checkpoint_layout(data, tmp_path):
    X, y = data
    _ensemble(checkpoint_dir=tmp_path).fit(X, y)
    assert (tmp_path / "progress.pt").exists() and not (tmp_path / "run_000").exists()


def test_save_and_load_two_runs(data, tmp_path):
    X, y = data
    clf = _ensemble(n_runs=2).fit(X, y)
    save_ensemble(clf, tmp_path)
    loaded = load_ensemble(tmp_path)
    assert loaded.snapshot_runs_ == [0, 0, 1, 1] and loaded.n_runs == 2
    assert loaded.snapshot_epochs_ == clf.snapshot_epochs_
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    # A one-run file has no snapshot_runs_ field: all zeros.
    one = _ensemble().fit(X, y)
    save_ensemble(one, tmp_path / "one")
    assert load_ensemble(tmp_path / "one").snapshot_runs_ == [0, 0]


def test_a_file_with_a_run_outside_n_runs_is_refused(data, tmp_path):
    import json

    from sksnapshot import InvalidEnsembleFile

    X, y = data
    save_ensemble(_ensemble(n_runs=2).fit(X, y), tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["fitted"]["snapshot_runs_"] = [0, 0, 1, 2]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidEnsembleFile, match=r"fitted\.snapshot_runs_ must be"):
        load_ensemble(tmp_path)


def test_clone_and_grid_search_over_runs(data):
    X, y = data
    clf = _ensemble(n_runs=2, bootstrap=True, n_jobs=1)
    assert clone(clf).get_params()["n_runs"] == 2
    search = GridSearchCV(clf, {"n_runs": [1, 2]}, cv=2).fit(X, y)
    assert search.best_estimator_.snapshot_runs_ in ([0, 0], [0, 0, 1, 1])


def test_regressor_runs(data):
    X, y = data
    net = default_regressor_net().set_params(max_epochs=4, batch_size=32)
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, n_runs=2, random_state=0).fit(
        X, y.astype(np.float64))
    assert reg.snapshot_runs_ == [0, 0, 1, 1]
    assert reg.predict(X, return_std=True)[1].shape == (len(X),)


@pytest.mark.parametrize("params, match", [
    ({"n_runs": 0}, "n_runs"), ({"bootstrap": "yes"}, "bootstrap"), ({"n_jobs": 1.5}, "n_jobs"),
])
def test_invalid_run_settings_are_refused(data, params, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        _ensemble(**params).fit(X, y)
