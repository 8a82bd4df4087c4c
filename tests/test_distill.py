"""distill(): one student net trained on the ensemble's predictive distribution."""

import re

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import make_regression
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError

from sksnapshot import (
    MLPModule,
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_classifier_net,
    default_regressor_net,
    load_ensemble,
    save_ensemble,
)

from .conftest import tiny_net


class CountingMLP(MLPModule):
    """An MLP that counts the rows it has been called on (class-wide)."""

    rows = 0

    def forward(self, X):
        CountingMLP.rows += len(X)
        return super().forward(X)


@pytest.fixture(scope="module")
def clf(data):
    X, y = data
    return SnapshotEnsembleClassifier(tiny_net(max_epochs=8), n_snapshots=4,
                                      random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def student(clf, data):
    return clf.distill(data[0], max_epochs=6)


def test_student_is_a_fitted_one_member_classifier(clf, student, data):
    X, y = data
    assert type(student) is SnapshotEnsembleClassifier
    assert len(student.snapshots_) == 1 and student.n_snapshots == 1
    # One member's weight is the constant 1.0, not a computation.
    assert student.members_.tolist() == [0] and student.weights_.tolist() == [1.0]
    np.testing.assert_array_equal(student.classes_, clf.classes_)
    assert student.snapshot_epochs_[0] <= len(student.net_.history) <= 6
    assert 0 <= student.snapshot_iterations_[0] < student.n_iter_ <= student.n_iter_planned_
    assert student.temperature_ > 0
    proba = student.predict_proba(X)
    assert proba.shape == (len(X), 3) and np.allclose(proba.sum(1), 1)
    # It learnt the ensemble: it agrees with it on most rows.
    assert np.mean(student.predict(X) == clf.predict(X)) > 0.7
    np.testing.assert_allclose(student.to_torch()(torch.as_tensor(X, dtype=torch.float32)),
                               proba, atol=1e-5)


def test_student_predicts_with_one_forward_pass(data):
    X, y = data
    net = default_classifier_net(CountingMLP).set_params(
        module__hidden_layer_sizes=(16,), max_epochs=4, batch_size=32)
    ens = SnapshotEnsembleClassifier(net, n_snapshots=4, random_state=0).fit(X, y)
    student = ens.distill(X, max_epochs=2)
    for estimator, forward_passes in ((ens, 4), (student, 1)):
        CountingMLP.rows = 0
        estimator.predict_proba(X)
        assert CountingMLP.rows == forward_passes * len(X)


def test_saves_and_loads(student, data, tmp_path):
    X = data[0]
    expected = student.predict_proba(X)
    save_ensemble(student, tmp_path / "student")
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(load_ensemble(tmp_path / "student").predict_proba(X),
                                  expected)
    joblib.dump(student, tmp_path / "student.joblib")
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(joblib.load(tmp_path / "student.joblib").predict_proba(X),
                                  expected)


def test_drops_into_a_pipeline(clf, data):
    X, y = data
    pipe = make_pipeline(FunctionTransformer(), clf).fit(X, y)
    pipe.steps[-1] = (pipe.steps[-1][0], pipe[-1].distill(X, max_epochs=2))
    assert pipe.predict(X).shape == (len(X),)


def test_temperature_against_labels_or_the_ensemble(clf, data):
    X, y = data
    by_labels = clf.distill(X[:90], X_valid=X[90:], y_valid=y[90:], max_epochs=3,
                            random_state=1)
    by_teacher = clf.distill(X[:90], X_valid=X[90:], max_epochs=3, random_state=1)
    # The same training (same seed, same rows), two temperatures.
    assert by_labels.snapshot_epochs_ == by_teacher.snapshot_epochs_
    assert by_labels.temperature_ != by_teacher.temperature_
    without = clf.distill(X, validation_fraction=0, max_epochs=2)
    # No validation rows: the constant 1.0, not a computation.
    assert without.temperature_ == 1.0 and len(without.net_.history) == 2


def test_init_from_a_snapshot(clf, data):
    X = data[0]
    heaviest = clf.snapshots_[clf.members_[np.argmax(clf.weights_)]]

    def distance(student):
        return sum(float((student.snapshots_[0][k] - v).norm()) for k, v in heaviest.items())

    started = clf.distill(X, init="snapshot", max_epochs=1, validation_fraction=0)
    scratch = clf.distill(X, init="scratch", max_epochs=1, validation_fraction=0)
    assert distance(started) < 0.5 * distance(scratch)


class Jittered(torch.utils.data.Dataset):
    """Rows with random noise added on every access (augmentation); labels ignored."""

    def __init__(self, X):
        self.X = torch.as_tensor(X, dtype=torch.float32)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i] + 0.05 * torch.randn(self.X.shape[1]), -1


def test_dataset_with_augmentation(clf, data):
    X, y = data
    student = clf.distill(Jittered(X), X_valid=X[:30], max_epochs=6)
    assert len(student.snapshots_) == 1
    # The ensemble labelled every jittered batch (the Dataset's own labels are -1).
    assert student.net_.history[-1, "train_loss"] > 0.1
    assert np.mean(student.predict(X) == clf.predict(X)) > 0.7


@pytest.mark.parametrize("gaussian", [False, True])
def test_regressor(gaussian, tmp_path):
    X, y = make_regression(n_samples=150, n_features=4, noise=10.0, random_state=0)
    X, y = X.astype(np.float32), y / y.std()
    net = default_regressor_net(gaussian=gaussian).set_params(
        max_epochs=20, lr=0.02, batch_size=32, module__hidden_layer_sizes=(16,))
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, random_state=0).fit(X, y)
    student = reg.distill(X)
    assert type(student) is SnapshotEnsembleRegressor and len(student.snapshots_) == 1
    assert student.gaussian_ == gaussian
    mean, std = student.predict(X, return_std=True)
    assert mean.shape == std.shape == (150,)
    assert np.corrcoef(mean, reg.predict(X))[0, 1] > 0.95
    # Mean-variance members give the student a variance; squared-error ones none.
    # Without a variance head the std is the constant 0, not a computation.
    assert (std.min() > 0) if gaussian else np.all(std == 0)
    save_ensemble(student, tmp_path / "student")
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(load_ensemble(tmp_path / "student").predict(X), mean)


def test_bad_input(clf, data):
    X, y = data
    with pytest.raises(NotFittedError, match="not fitted"):
        SnapshotEnsembleClassifier().distill(X)
    with pytest.raises(NotFittedError, match="not fitted"):
        SnapshotEnsembleRegressor().distill(X)
    with pytest.raises(ValueError, match="X has 5 features, but"):
        clf.distill(X[:, :5])
    with pytest.raises(ValueError, match=r"X has samples of shape \(6, 1\)"):
        clf.distill(X[:, :, None])
    with pytest.raises(ValueError, match="X_valid has 10 rows but y_valid has 9"):
        clf.distill(X, X_valid=X[:10], y_valid=y[:9])
    with pytest.raises(ValueError, match="y_valid labels X_valid"):
        clf.distill(X, y_valid=y)
    with pytest.raises(ValueError, match="y contains labels not seen during fit"):
        clf.distill(X, X_valid=X[:10], y_valid=np.full(10, 7))
    with pytest.raises(InvalidParameterError, match="'init' parameter"):
        clf.distill(X, init="warm")


@pytest.mark.parametrize("bad", [np.full((4, 6), "a"), np.zeros((4, 6, 2)),
                                 np.full((4, 6), np.nan)])
def test_same_input_errors_as_predict(clf, bad):
    with pytest.raises(ValueError) as from_predict:
        clf.predict(bad)
    with pytest.raises(type(from_predict.value), match=re.escape(str(from_predict.value))):
        clf.distill(bad)
