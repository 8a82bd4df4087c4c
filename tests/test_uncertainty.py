"""predict_uncertainty on both estimators and the decompositions behind it."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_regression

from sksnapshot import (
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_regressor_net,
)
from sksnapshot.metrics import uncertainty_decomposition, variance_decomposition

from .conftest import tiny_net


# -- the math on constructed members --------------------------------------------------
def test_identical_members_have_no_mutual_information():
    rng = np.random.RandomState(0)
    proba = rng.dirichlet(np.ones(4), size=7)
    u = uncertainty_decomposition(np.stack([proba] * 3), weights=[0.2, 0.5, 0.3])
    np.testing.assert_allclose(u.epistemic, 0.0, atol=1e-12)
    np.testing.assert_allclose(u.total, u.aleatoric)
    np.testing.assert_allclose(u.total, -(proba * np.log(proba)).sum(axis=1))
    # Identical members disagree on no row: the count 0, exact.
    np.testing.assert_array_equal(u.disagreement, 0.0)
    np.testing.assert_allclose(u.proba, proba)


@pytest.mark.parametrize("n_members, n_classes", [(2, 2), (3, 5), (4, 4)])
def test_confident_members_on_different_classes_have_maximal_mutual_information(
        n_members, n_classes):
    # Member i puts all its mass on class i: every row is a uniform mixture over
    # n_members classes, with no aleatoric part.
    probas = np.zeros((n_members, 6, n_classes))
    for i in range(n_members):
        probas[i, :, i] = 1.0
    u = uncertainty_decomposition(probas)
    np.testing.assert_allclose(u.epistemic, np.log(n_members))
    np.testing.assert_allclose(u.total, np.log(n_members))
    # One-hot (or variance-free) members: the entropy of 0s and 1s is exactly 0.
    np.testing.assert_array_equal(u.aleatoric, 0.0)
    # The ensemble's argmax is class 0 (ties go to the first): all others disagree.
    np.testing.assert_allclose(u.disagreement, (n_members - 1) / n_members)


def test_decomposition_is_an_identity_with_weights():
    rng = np.random.RandomState(1)
    probas = rng.dirichlet(np.full(3, 0.3), size=(5, 50))
    weights = rng.uniform(size=5)
    u = uncertainty_decomposition(probas, weights)
    w = weights / weights.sum()
    mixture = np.einsum("m,mnk->nk", w, probas)
    entropy = lambda p: -(p * np.log(p)).sum(axis=-1)  # noqa: E731
    np.testing.assert_allclose(u.total, entropy(mixture))
    np.testing.assert_allclose(u.aleatoric, w @ entropy(probas))
    np.testing.assert_allclose(u.epistemic, u.total - u.aleatoric, atol=1e-12)
    assert np.all(u.epistemic >= 0) and np.all(u.epistemic <= np.log(3) + 1e-12)
    labels = probas.argmax(axis=2)
    np.testing.assert_allclose(u.disagreement, w @ (labels != mixture.argmax(axis=1)))
    # A zero weight removes a member.
    u0 = uncertainty_decomposition(probas, np.r_[weights[:4], 0.0])
    u4 = uncertainty_decomposition(probas[:4], weights[:4])
    for key in u4:
        np.testing.assert_allclose(u0[key], u4[key])


def test_decomposition_errors():
    with pytest.raises(ValueError, match="shape"):
        uncertainty_decomposition(np.ones((3, 2)))
    with pytest.raises(ValueError, match="entries for 2 members"):
        uncertainty_decomposition(np.full((2, 1, 2), 0.5), weights=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        uncertainty_decomposition(np.full((2, 1, 2), 0.5), weights=[1.0, -0.5])
    with pytest.raises(ValueError, match="finite"):
        uncertainty_decomposition(np.full((2, 1, 2), np.nan))
    with pytest.raises(ValueError, match="member_variances has shape"):
        variance_decomposition(np.zeros((2, 3)), np.ones((2, 4)))


def test_variance_decomposition_is_the_law_of_total_variance():
    rng = np.random.RandomState(2)
    means, variances = rng.normal(size=(4, 30, 2)), rng.uniform(0.1, 2, size=(4, 30, 2))
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    u = variance_decomposition(means, variances, weights)
    mixture_mean = np.einsum("m,mno->no", weights, means)
    second = np.einsum("m,mno->no", weights, variances + means ** 2)
    np.testing.assert_allclose(u.mean, mixture_mean)
    np.testing.assert_allclose(u.total, second - mixture_mean ** 2)
    np.testing.assert_allclose(u.total, u.aleatoric + u.epistemic)
    same = variance_decomposition(np.stack([means[0]] * 3))
    np.testing.assert_allclose(same.epistemic, 0.0, atol=1e-24)
    np.testing.assert_array_equal(same.aleatoric, 0.0)


# -- on fitted tiny ensembles ---------------------------------------------------------
@pytest.fixture(scope="module")
def clf(data):
    X, y = data
    # No temperature: predict_proba is then the members' mixture the scores decompose.
    return SnapshotEnsembleClassifier(tiny_net(), n_snapshots=3, calibration=None,
                                      random_state=0).fit(X, y)


def test_classifier_predict_uncertainty(clf, data):
    X, _ = data
    u = clf.predict_uncertainty(X)
    assert sorted(u) == ["aleatoric", "disagreement", "epistemic", "proba", "total"]
    for key in ("total", "aleatoric", "epistemic", "disagreement"):
        assert u[key].shape == (len(X),) and u[key].dtype == np.float64
        assert np.all(u[key] >= 0)
    np.testing.assert_allclose(u.total, u.aleatoric + u.epistemic, atol=1e-10)
    assert np.all(u.total <= np.log(len(clf.classes_)) + 1e-9)
    assert np.all(u.epistemic <= np.log(len(clf.members_)) + 1e-9)
    assert np.all(u.disagreement <= 1)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(u.proba, proba, atol=1e-6)
    np.testing.assert_allclose(u.total, -(proba * np.log(proba)).sum(axis=1), atol=1e-5)
    # The same numbers as the decomposition of the members' own probabilities.
    members = np.stack([clf._member_outputs(X, [clf.snapshots_[i]])[0] for i in clf.members_])
    expected = uncertainty_decomposition(members, clf.weights_)
    np.testing.assert_allclose(u.epistemic, expected.epistemic, atol=1e-7)
    assert u.epistemic.max() > 0  # the snapshots do differ


def test_classifier_weight_averaged_has_no_epistemic_part(clf, data):
    X, y = data
    averaged = clone(clf).set_params(combine="weights").fit(X, y)
    u = averaged.predict_uncertainty(X[:20])
    # One averaged model: no spread between members, the constant 0.
    np.testing.assert_array_equal(u.epistemic, 0.0)
    # Identical members disagree on no row: the count 0, exact.
    np.testing.assert_array_equal(u.disagreement, 0.0)
    np.testing.assert_allclose(u.total, u.aleatoric)
    np.testing.assert_allclose(u.proba, averaged.predict_proba(X[:20]), atol=1e-6)


def test_classifier_predict_uncertainty_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SnapshotEnsembleClassifier(tiny_net()).predict_uncertainty(np.zeros((2, 6)))


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("n_targets", [1, 2])
def test_regressor_predict_uncertainty_matches_return_std(gaussian, n_targets):
    X, y = make_regression(n_samples=120, n_features=5, n_targets=n_targets, noise=10.0,
                           random_state=0)
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    net = default_regressor_net(gaussian=gaussian).set_params(
        module__hidden_layer_sizes=(16,), lr=0.01, max_epochs=6, batch_size=32)
    reg = SnapshotEnsembleRegressor(net, n_snapshots=3, random_state=0).fit(X, y)
    u = reg.predict_uncertainty(X)
    mean, std = reg.predict(X, return_std=True)
    assert sorted(u) == ["aleatoric", "epistemic", "mean", "total"]
    for key in u:
        assert u[key].shape == mean.shape
    for key in ("total", "aleatoric", "epistemic"):
        assert np.all(u[key] >= 0)
    np.testing.assert_allclose(u.mean, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(u.total, u.aleatoric + u.epistemic, rtol=1e-12)
    np.testing.assert_allclose(u.total, std ** 2, rtol=1e-4, atol=1e-6)
    assert np.all(u.epistemic > 0)
    if gaussian:
        assert np.all(u.aleatoric > 0)
    else:
        # One-hot (or variance-free) members: the entropy of 0s and 1s is exactly 0.
        np.testing.assert_array_equal(u.aleatoric, 0.0)
