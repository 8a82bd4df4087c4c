"""Property-based tests (hypothesis) and the errors every bad input gets."""

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sksnapshot import SnapshotEnsembleClassifier

from .conftest import tiny_net


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return SnapshotEnsembleClassifier(tiny_net(), n_snapshots=3, random_state=0).fit(X, y)


rows = arrays(np.float64, st.tuples(st.integers(1, 40), st.just(6)),
              elements=st.floats(-1e3, 1e3, allow_nan=False))
fast = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@fast
@given(X=rows)
def test_probabilities_are_a_distribution(fitted, X):
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 3)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert set(fitted.predict(X)) <= set(fitted.classes_)


@fast
@given(X=rows, seed=st.integers(0, 2**16), batch_size=st.integers(1, 64))
def test_predictions_ignore_row_order_and_batch_size(fitted, X, seed, batch_size):
    order = np.random.RandomState(seed).permutation(len(X))
    expected = fitted.predict_proba(X)
    np.testing.assert_allclose(fitted.predict_proba(X[order]), expected[order], atol=1e-6)
    original = fitted.net_.batch_size
    try:
        fitted.net_.batch_size = batch_size
        np.testing.assert_allclose(fitted.predict_proba(X), expected, atol=1e-6)
    finally:
        fitted.net_.batch_size = original


@pytest.mark.parametrize("make_bad, match", [
    (lambda X, y: (np.where(X > 1, np.inf, X), y), "infinity"),
    (lambda X, y: (X[:0], y[:0]), "0 sample"),
    (lambda X, y: (X.astype(str).astype(object) + "x", y), "(?i)could not convert string to float"),
    (lambda X, y: (X[:, :, None], y), r"takes 2-D rows .* samples of shape \(\d+, 1\)"),
    (lambda X, y: (X, y[:-1]), "inconsistent numbers of samples"),
])
def test_bad_training_input_is_named(data, make_bad, match):
    X, y = make_bad(*data)
    with pytest.raises(ValueError, match=match):
        SnapshotEnsembleClassifier(tiny_net()).fit(X, y)


def test_bad_prediction_input_is_named(fitted, data):
    X, _ = data
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(np.full((2, 6), np.nan))
    with pytest.raises(ValueError, match="expecting 6 features"):
        fitted.predict_proba(X[:, :4])
    broken = copy.deepcopy(fitted)
    for state in broken.snapshots_:
        state["layers.0.bias"][0] = np.nan  # as if the module overflowed on these rows
    with pytest.raises(ValueError, match=r"not finite for 2 rows \(first: \[0, 1\]\)"):
        broken.predict_proba(X[:2])
