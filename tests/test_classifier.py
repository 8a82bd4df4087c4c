import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback, LRScheduler

from sksnapshot import MLPModule, SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot._compat import InvalidParameterError
from sksnapshot._split import validation_split
from sksnapshot.schedules import cosine_annealing_lr, cosine_warmup_lr, snapshot_iterations

from ._helpers import assert_close_elsewhere
from .conftest import InterruptAt, tiny_net


def fit(X, y, net=None, **kwargs):
    kwargs.setdefault("random_state", 0)
    kwargs.setdefault("n_snapshots", 3)
    # The paper's ensemble (every snapshot or the last n_members, equal
    # weights) keeps these tests about training; test_members.py covers the rest.
    kwargs.setdefault("selection", "last")
    kwargs.setdefault("weighting", "uniform")
    kwargs.setdefault("calibration", None)
    return SnapshotEnsembleClassifier(tiny_net() if net is None else net, **kwargs).fit(X, y)


# -- the schedule and the snapshots ------------------------------------------------

def test_lr_is_set_every_batch_to_the_cosine(data):
    X, y = data
    clf = fit(X, y, tiny_net(max_epochs=7), n_snapshots=4, validation_fraction=0.0)
    lrs = np.array([b["lr"] for epoch in clf.net_.history for b in epoch["batches"]])
    n_iter = 7 * 4  # 120 rows in batches of 32
    assert clf.n_iter_ == n_iter == len(lrs)
    np.testing.assert_allclose(lrs, cosine_annealing_lr(np.arange(n_iter), n_iter, 4, lr=0.1))


def test_warmup_restarts_set_every_batch_and_snapshot_at_the_cosine_ends(data):
    X, y = data
    clf = fit(X, y, tiny_net(max_epochs=7), n_snapshots=4, validation_fraction=0.0,
              schedule="cosine_warmup")
    lrs = np.array([b["lr"] for epoch in clf.net_.history for b in epoch["batches"]])
    np.testing.assert_allclose(lrs, cosine_warmup_lr(np.arange(28), 28, 4, lr=0.1))
    assert clf.snapshot_iterations_ == snapshot_iterations(28, 4).tolist()


@pytest.mark.parametrize("max_epochs, n_snapshots", [(7, 4), (5, 5), (3, 12), (6, 1)])
def test_exactly_n_snapshots_for_uneven_budgets(data, max_epochs, n_snapshots):
    X, y = data
    clf = fit(X, y, tiny_net(max_epochs=max_epochs), n_snapshots=n_snapshots,
              validation_fraction=0.0)
    assert len(clf.snapshots_) == n_snapshots
    assert len(clf.snapshot_epochs_) == n_snapshots
    assert clf.snapshot_epochs_[-1] == max_epochs
    events = clf.net_.history[:, "event_snapshot"]
    assert [i + 1 for i, e in enumerate(events) if e] == sorted(set(clf.snapshot_epochs_))


def test_more_snapshots_than_iterations_is_a_clear_error(data):
    X, y = data
    with pytest.raises(ValueError, match=r"n_snapshots=9 needs .* gives only 8"):
        fit(X, y, tiny_net(max_epochs=2), n_snapshots=9, validation_fraction=0.0)


def test_snapshots_are_detached_cpu_copies_with_buffers(data):
    X, y = data
    net = tiny_net(module__batch_norm=True)
    clf = fit(X, y, net, n_snapshots=3)
    first, last = clf.snapshots_[0], clf.snapshots_[-1]
    assert "layers.1.running_mean" in first  # BatchNorm statistics travel too
    for snap in clf.snapshots_:
        for tensor in snap.values():
            assert tensor.device.type == "cpu" and not tensor.requires_grad
    assert not torch.equal(first["layers.0.weight"], last["layers.0.weight"])
    # The module ends on the last snapshot, and the snapshot is a copy.
    live = clf.net_.module_.state_dict()
    for key, value in last.items():
        # Copied tensors, no arithmetic: bit for bit.
        assert torch.equal(live[key], value)
    with torch.no_grad():
        clf.net_.module_.layers[0].weight.add_(1.0)
    assert not torch.equal(clf.net_.module_.layers[0].weight, last["layers.0.weight"])


def test_predict_proba_is_the_mean_of_the_members_softmax(data):
    X, y = data
    clf = fit(X, y, n_snapshots=4, n_members=3)
    assert clf.members_.tolist() == [1, 2, 3]
    module = MLPModule(n_features=6, n_classes=3, hidden_layer_sizes=(16,)).eval()
    expected = []
    for index in (1, 2, 3):
        module.load_state_dict(clf.snapshots_[index])
        with torch.no_grad():
            expected.append(torch.softmax(module(torch.as_tensor(X, dtype=torch.float32)), 1))
    expected = torch.stack(expected).mean(0).numpy()
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    # Predicting leaves the net's module on the last snapshot.
    # Copied tensors, no arithmetic: bit for bit.
    assert torch.equal(clf.net_.module_.state_dict()["layers.0.weight"],
                       clf.snapshots_[-1]["layers.0.weight"])


def test_ensemble_of_one_is_a_plain_cosine_run_of_the_same_net(data):
    X, y = data
    clf = fit(X, y, n_snapshots=1, validation_fraction=0.0)
    np.testing.assert_allclose(clf.predict_proba(X), clf.net_.predict_proba(X), atol=1e-6)


def test_history_and_verbose_output(data, capsys):
    X, y = data
    clf = fit(X, y, n_snapshots=3, verbose=0)
    assert capsys.readouterr().out == ""
    row = clf.net_.history[-1]
    for key in ("train_loss", "valid_loss", "valid_acc", "lr", "cycle", "event_snapshot"):
        assert key in row
    assert clf.net_.history[:, "cycle"] == [1, 1, 2, 2, 3, 3]
    fit(X, y, n_snapshots=3, verbose=1)
    out = capsys.readouterr().out
    assert "snapshot" in out and "cycle" in out and "lr" in out
    assert "3 snapshots" in out


@pytest.mark.parametrize("verbose", [0, 1])
def test_a_net_without_its_print_log_trains_quietly(data, capsys, verbose):
    X, y = data
    clf = fit(X, y, tiny_net(callbacks__print_log=None), n_snapshots=2, verbose=verbose)
    assert len(clf.snapshots_) == 2
    assert "print_log" not in dict(clf.net_.callbacks_)
    assert "train_loss" not in capsys.readouterr().out


# -- the net template ----------------------------------------------------------------

def test_template_net_is_not_mutated(data):
    X, y = data
    net = tiny_net(callbacks=[("counter", BatchCounter())])
    before = {k: v for k, v in net.get_params(deep=False).items() if k != "callbacks"}
    clf = fit(X, y, net)
    after = {k: v for k, v in net.get_params(deep=False).items() if k != "callbacks"}
    assert before.keys() == after.keys()
    assert all(before[k] is after[k] or before[k] == after[k] for k in before)
    assert not hasattr(net, "module_")
    assert net.callbacks[0][1].count in (None, 0)  # the user's instance was not run
    # ...but the user's callback ran, on a clone, every training batch.
    assert dict(clf.net_.callbacks_)["counter"].count == clf.n_iter_


class BatchCounter(Callback):
    def __init__(self, count=None):
        self.count = count

    def initialize(self):
        self.count = 0
        return self

    def on_batch_end(self, net, training=False, **kwargs):
        self.count += training


class Hidden(torch.nn.Module):
    def __init__(self, n_features, n_classes, hidden=8):
        super().__init__()
        self.n_classes = n_classes
        self.seq = torch.nn.Sequential(
            torch.nn.Linear(n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_classes)
        )

    def forward(self, X):
        return self.seq(X)


def test_module_class_shorthand_fills_data_sizes(data):
    X, y = data
    clf = SnapshotEnsembleClassifier(Hidden, n_snapshots=2, random_state=0).fit(X, y)
    assert clf.net_.module_.n_classes == 3
    assert clf.net_.module_.seq[0].in_features == 6
    assert clf.score(X, y) > 0.6


def test_module_instance_shorthand_is_not_trained_in_place(data):
    X, y = data
    module = Hidden(6, 3)
    w = module.seq[0].weight.detach().clone()
    clf = SnapshotEnsembleClassifier(module, n_snapshots=2, random_state=0).fit(X, y)
    # Untouched, not recomputed: bit for bit.
    assert torch.equal(module.seq[0].weight, w)
    assert clf.predict(X).shape == (len(X),)


def test_user_set_sizes_are_kept_and_a_wrong_width_is_named(data):
    X, y = data
    net = default_classifier_net(Hidden).set_params(module__n_classes=5)
    with pytest.raises(ValueError, match=r"outputs of shape \(2, 5\).*one output per class"):
        fit(X, y, net)


def test_lr_scheduler_in_the_net_is_refused(data):
    X, y = data
    net = tiny_net(callbacks=[("sched", LRScheduler("StepLR", step_size=1))])
    with pytest.raises(ValueError, match="own learning-rate scheduler callback"):
        fit(X, y, net)


@pytest.mark.parametrize("params, match", [
    ({"n_snapshots": 0}, "n_snapshots"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"min_lr": -1.0}, "min_lr"),
    ({"n_members": 0}, "n_members"),
    ({"net": "mlp"}, "'net' parameter"),
    ({"net": int}, "'net' parameter"),
])
def test_invalid_parameters(data, params, match):
    X, y = data
    kwargs = {"net": tiny_net(), **params}
    with pytest.raises(InvalidParameterError, match=match):
        SnapshotEnsembleClassifier(**kwargs).fit(X, y)


@pytest.mark.parametrize("params, match", [
    ({"n_members": 4, "n_snapshots": 3}, "n_members=4 cannot exceed n_snapshots=3"),
    ({"min_lr": 0.5}, "min_lr=0.5 is above the peak learning rate"),
])
def test_inconsistent_parameters(data, params, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        fit(X, y, **params)


# -- data handling ------------------------------------------------------------------

@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "emu"]), np.array([-3, 10, 42]), np.array([False, True, True]),
])
def test_any_labels(data, labels):
    X, y = data
    y_labels = labels[y]
    clf = fit(X, y_labels)
    assert clf.classes_.tolist() == sorted(set(labels.tolist()))
    pred = clf.predict(X)
    assert pred.dtype == y_labels.dtype
    assert set(pred) <= set(labels)
    assert clf.score(X, y_labels) > 0.6


def test_pandas_and_integer_input(data):
    X, y = data
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    clf = fit(frame, pd.Series(y))
    assert clf.feature_names_in_.tolist() == list(frame.columns)
    assert clf.n_features_in_ == 6
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        from_array = clf.predict_proba(X)
    np.testing.assert_allclose(clf.predict_proba(frame), from_array, atol=1e-7)
    fit(np.round(X * 3).astype(np.int64), y)  # integer features are accepted


def test_bad_input_errors(data):
    X, y = data
    clf = fit(X, y)
    with pytest.raises(ValueError,
                       match="X has 5 features, but SnapshotEnsembleClassifier is expecting 6"):
        clf.predict(X[:, :5])
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(X_nan, y)
    with pytest.raises(ValueError, match="only one class"):
        fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="Unknown label type"):
        fit(X, y + 0.5)


def test_validation_rows_reach_skorch(data):
    X, y = data
    with_valid = fit(X, y, validation_fraction=0.25)
    assert with_valid.net_.history[-1, "valid_batch_count"] == 1
    assert "valid_loss" in with_valid.net_.history[-1]
    without = fit(X, y, validation_fraction=0.0)
    assert "valid_loss" not in without.net_.history[-1]


def test_validation_split_is_stratified_and_spares_tiny_classes():
    rng = np.random.RandomState(0)
    y = np.array([0] * 50 + [1] * 30 + [2] * 1)
    train, valid = validation_split(y, 0.2, rng)
    assert len(valid) == 17 and len(np.intersect1d(train, valid)) == 0
    assert np.bincount(y[valid], minlength=3).tolist() == [11, 6, 0]
    assert 80 in train  # the single member of class 2 stays in training
    # Fewer validation rows than classes: every class keeps a training row.
    y = np.repeat(np.arange(10), 2)
    train, valid = validation_split(y, 0.1, rng)
    assert len(valid) == 2 and set(y[train]) == set(range(10))
    assert validation_split(y, 0.0, rng)[1].size == 0


def test_a_class_too_small_to_split_does_not_crash(data):
    X, y = data
    y = y.copy()
    y[0] = 7  # a class with one member
    clf = fit(X, y, validation_fraction=0.2)
    assert 7 in clf.classes_


# -- scikit-learn integration ---------------------------------------------------------

def test_pipeline_and_grid_search_over_snapshots_and_net_params(data):
    X, y = data
    pipe = make_pipeline(StandardScaler(), SnapshotEnsembleClassifier(tiny_net(), random_state=0))
    grid = GridSearchCV(pipe, {
        "snapshotensembleclassifier__n_snapshots": [1, 3],
        "snapshotensembleclassifier__net__module__hidden_layer_sizes": [(8,), (16,)],
        "snapshotensembleclassifier__net__lr": [0.05, 0.1],
    }, cv=2, n_jobs=2)
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 8
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    best = grid.best_estimator_[-1]
    assert len(best.snapshots_) == grid.best_params_["snapshotensembleclassifier__n_snapshots"]
    assert best.net_.lr == grid.best_params_["snapshotensembleclassifier__net__lr"]
    assert grid.score(X, y) > 0.6


def test_clone_is_unfitted_and_keeps_params(data):
    X, y = data
    clf = fit(X, y, n_snapshots=2)
    copy = clone(clf)
    assert not hasattr(copy, "snapshots_")
    assert copy.get_params()["n_snapshots"] == 2
    assert copy.get_params()["net__lr"] == 0.1


def test_random_state_makes_fits_identical_in_process_and_in_workers(data):
    X, y = data
    torch_state = torch.random.get_rng_state()
    clf = fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # caller's RNG untouched
    a = clf.predict_proba(X)
    b = fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)  # the same fit twice in one process: bit for bit
    in_workers = joblib.Parallel(n_jobs=2)(
        joblib.delayed(_fit_proba)(X, y) for _ in range(2)
    )
    for proba in in_workers:
        assert_close_elsewhere(proba, a)
    assert not np.allclose(fit(X, y, random_state=1).predict_proba(X), a)


def _fit_proba(X, y):
    return fit(X, y).predict_proba(X)


def test_joblib_round_trip_in_a_new_process(data, tmp_path):
    X, y = data
    clf = fit(X, y)
    path = tmp_path / "model.joblib"
    joblib.dump(clf, path)
    np.save(tmp_path / "X.npy", X)
    code = textwrap.dedent(f"""
        import joblib, numpy as np
        clf = joblib.load({str(path)!r})
        X = np.load({str(tmp_path / 'X.npy')!r})
        np.save({str(tmp_path / 'p.npy')!r}, clf.predict_proba(X))
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    assert_close_elsewhere(np.load(tmp_path / "p.npy"), clf.predict_proba(X))


def test_a_net_pickled_on_cuda_loads_on_cpu(data):
    X, y = data
    clf = fit(X, y)
    expected = clf.predict_proba(X)
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        pytest.skip("this test simulates a CPU-only machine")
    clf.net_.device = "cuda"  # as if trained on a GPU; snapshots are CPU tensors anyway
    with pytest.warns(Warning, match="(?i)cuda"):
        loaded = pickle.loads(pickle.dumps(clf))
    assert str(loaded.net_.device) == "cpu"
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


# -- interruption --------------------------------------------------------------------

def test_ctrl_c_keeps_the_snapshots_taken_so_far(data):
    X, y = data
    net = tiny_net(max_epochs=6, callbacks=[("stop", InterruptAt(17))])
    with pytest.warns(RuntimeWarning, match="stopped after 2 of 3 cycles"):
        clf = fit(X, y, net, n_snapshots=3, validation_fraction=0.0)
    assert len(clf.snapshots_) == 2
    assert clf.predict_proba(X).shape == (len(X), 3)


def test_ctrl_c_before_the_first_snapshot_raises(data):
    X, y = data
    net = tiny_net(callbacks=[("stop", InterruptAt(1))])
    with pytest.raises(RuntimeError, match="no snapshot was taken"):
        fit(X, y, net)
