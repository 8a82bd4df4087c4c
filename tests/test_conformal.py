"""Conformal prediction with MAPIE (>= 1.0) around both estimators.

The conformalization rows are never rows the ensemble trained on or chose its
members on (its own validation rows are a part of the training rows).
"""

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_friedman1
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sksnapshot import (
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_regressor_net,
)

from .conftest import tiny_net

mapie_classification = pytest.importorskip("mapie.classification")
mapie_regression = pytest.importorskip("mapie.regression")

CONFIDENCE = 0.9


def _classifier():
    net = tiny_net(module__hidden_layer_sizes=(32,), max_epochs=8, batch_size=64)
    return SnapshotEnsembleClassifier(net, n_snapshots=3, random_state=0)


def _regressor(gaussian=True):
    net = default_regressor_net(gaussian=gaussian).set_params(
        module__hidden_layer_sizes=(32,), lr=0.01, max_epochs=8, batch_size=64)
    return SnapshotEnsembleRegressor(net, n_snapshots=3, random_state=0)


@pytest.fixture(scope="module")
def classification():
    """1000 training, 5000 conformalization and 5000 test rows of a 4-class task."""
    X, y = make_classification(n_samples=11000, n_features=10, n_informative=6,
                               n_classes=4, flip_y=0.05, random_state=0)
    X = StandardScaler().fit_transform(X)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, random_state=0)
    X_conf, X_test, y_conf, y_test = train_test_split(X_rest, y_rest, train_size=5000,
                                                      random_state=0)
    return X_train, y_train, X_conf, y_conf, X_test, y_test


@pytest.fixture(scope="module")
def regression():
    """Friedman #1 (noise sd 1): 1000 training, 5000 conformalization, 5000 test rows."""
    X, y = make_friedman1(n_samples=11000, n_features=6, noise=1.0, random_state=0)
    y = (y - y.mean()) / y.std()
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, random_state=0)
    X_conf, X_test, y_conf, y_test = train_test_split(X_rest, y_rest, train_size=5000,
                                                      random_state=0)
    return X_train, y_train, X_conf, y_conf, X_test, y_test


def _set_coverage(y_sets, y_test, classes):
    """Share of rows whose prediction set holds the true label (first confidence level)."""
    return float(np.mean(y_sets[np.arange(len(y_test)), np.searchsorted(classes, y_test), 0]))


def _interval_coverage(y_pis, y_test):
    return float(np.mean((y_pis[:, 0, 0] <= y_test) & (y_test <= y_pis[:, 1, 0])))


@pytest.mark.parametrize("score, params", [
    ("lac", None),
    # APS with its default include_last_label=True over-covers (0.955 here at 0.9);
    # the randomized variant is the exact one.
    ("aps", {"include_last_label": "randomized"}),
])
def test_split_conformal_classifier_prefit_covers(classification, score, params):
    X_train, y_train, X_conf, y_conf, X_test, y_test = classification
    clf = _classifier().fit(X_train, y_train)
    mapie = mapie_classification.SplitConformalClassifier(
        estimator=clf, confidence_level=CONFIDENCE, conformity_score=score, prefit=True,
        random_state=0)
    mapie.conformalize(X_conf, y_conf)
    y_pred, y_sets = mapie.predict_set(X_test, conformity_score_params=params)
    np.testing.assert_array_equal(y_pred, clf.predict(X_test))
    assert y_sets.shape == (len(X_test), len(clf.classes_), 1)
    coverage = _set_coverage(y_sets, y_test, clf.classes_)
    assert abs(coverage - CONFIDENCE) <= 0.03, coverage
    assert 1 <= y_sets[:, :, 0].sum(axis=1).mean() < len(clf.classes_)


def test_split_conformal_classifier_fits_the_ensemble(classification):
    X_train, y_train, X_conf, y_conf, X_test, y_test = classification
    mapie = mapie_classification.SplitConformalClassifier(
        estimator=_classifier(), confidence_level=[0.8, CONFIDENCE], prefit=False)
    mapie.fit(X_train, y_train).conformalize(X_conf, y_conf)
    _, y_sets = mapie.predict_set(X_test)
    assert y_sets.shape == (len(X_test), 4, 2)
    # A higher confidence level never gives smaller sets.
    assert np.all(y_sets[:, :, 1] >= y_sets[:, :, 0])
    coverage = _set_coverage(y_sets[:, :, 1:], y_test, np.arange(4))
    assert abs(coverage - CONFIDENCE) <= 0.03, coverage


def test_cross_conformal_classifier(classification):
    X_train, y_train, _, _, X_test, y_test = classification
    mapie = mapie_classification.CrossConformalClassifier(
        estimator=_classifier(), confidence_level=CONFIDENCE, cv=3, random_state=0)
    mapie.fit_conformalize(X_train, y_train)
    y_pred, y_sets = mapie.predict_set(X_test)
    assert y_sets.shape == (len(X_test), 4, 1)
    assert np.mean(y_pred == y_test) > 0.5


@pytest.mark.parametrize("gaussian, score", [(False, "absolute"), (True, "absolute"),
                                             (True, "std_normalized")])
def test_split_conformal_regressor_prefit_covers(regression, gaussian, score):
    if score == "std_normalized":  # MAPIE's since 1.5; the oldest versions get MAPIE 1.1
        pytest.importorskip("mapie", minversion="1.5")
    X_train, y_train, X_conf, y_conf, X_test, y_test = regression
    reg = _regressor(gaussian).fit(X_train, y_train)
    mapie = mapie_regression.SplitConformalRegressor(
        estimator=reg, confidence_level=CONFIDENCE, conformity_score=score, prefit=True)
    mapie.conformalize(X_conf, y_conf)
    y_pred, y_pis = mapie.predict_interval(X_test)
    np.testing.assert_allclose(y_pred, reg.predict(X_test), rtol=1e-6)
    assert y_pis.shape == (len(X_test), 2, 1)
    coverage = _interval_coverage(y_pis, y_test)
    assert abs(coverage - CONFIDENCE) <= 0.03, coverage
    width = y_pis[:, 1, 0] - y_pis[:, 0, 0]
    if score == "std_normalized":  # scaled by predict(X, return_std=True): adaptive
        assert width.std() > 0.01 * width.mean()
    else:
        np.testing.assert_allclose(width, width[0], rtol=1e-5)


def test_split_conformal_regressor_fits_the_ensemble(regression):
    X_train, y_train, X_conf, y_conf, X_test, y_test = regression
    mapie = mapie_regression.SplitConformalRegressor(
        estimator=_regressor(), confidence_level=CONFIDENCE, prefit=False)
    mapie.fit(X_train, y_train).conformalize(X_conf, y_conf)
    _, y_pis = mapie.predict_interval(X_test)
    coverage = _interval_coverage(y_pis, y_test)
    assert abs(coverage - CONFIDENCE) <= 0.03, coverage


def test_cross_conformal_regressor(regression):
    X_train, y_train, _, _, X_test, y_test = regression
    mapie = mapie_regression.CrossConformalRegressor(
        estimator=_regressor(), confidence_level=CONFIDENCE, cv=3, method="plus",
        random_state=0)
    mapie.fit_conformalize(X_train[:600], y_train[:600])
    y_pred, y_pis = mapie.predict_interval(X_test)
    assert y_pred.shape == (len(X_test),) and y_pis.shape == (len(X_test), 2, 1)
    assert np.all(y_pis[:, 0, 0] <= y_pis[:, 1, 0])
    # CV+ guarantees at least 1 - 2 alpha; in practice it is near 1 - alpha.
    assert _interval_coverage(y_pis, y_test) >= 1 - 2 * (1 - CONFIDENCE)
