import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from sksnapshot.metrics import (
    brier_score,
    disagreement,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_curve,
)


def _random_case(seed, n_samples=40, n_classes=3):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(n_classes), size=n_samples)
    return rng.integers(0, n_classes, n_samples), proba


def _calibrated_case():
    # 10 rows at confidence 0.8 with 8 right, 10 at 0.6 with 6 right.
    proba = np.array([[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 10)
    y = np.array([0] * 8 + [1] * 2 + [1] * 6 + [0] * 4)
    return y, proba


# --- Brier score -------------------------------------------------------------


def test_brier_hand_computed():
    proba = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
    # Row 0: 0.3^2 + 0.2^2 + 0.1^2 = 0.14; row 1 (label 1): 0.01 + 0.81 + 0.64 = 1.46.
    assert brier_score([0, 1], proba) == pytest.approx(0.8)


def test_brier_perfect_and_worst():
    # Sums of 0s and 1s: exact in floating point.
    assert brier_score([0, 1, 2], np.eye(3)) == 0.0
    assert brier_score([1, 2, 0], np.eye(3)) == pytest.approx(2.0)


@pytest.mark.parametrize("seed", range(3))
def test_brier_binary_is_twice_sklearn(seed):
    y, proba = _random_case(seed, n_classes=2)
    expected = brier_score_loss(y, proba[:, 1])
    assert brier_score(y, proba) == pytest.approx(2 * expected)


def test_brier_string_labels_through_classes():
    proba = np.array([[0.9, 0.1], [0.3, 0.7]])
    # Unsorted classes: column k belongs to classes[k], not to the k-th sorted label.
    assert brier_score(["dog", "cat"], proba, classes=["dog", "cat"]) == pytest.approx(0.1)
    assert brier_score(["cat", "dog"], proba, classes=["dog", "cat"]) == pytest.approx(1.3)


@pytest.mark.parametrize(
    "y_true, proba, classes, match",
    [
        (["a", "z"], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "not in classes.*'z'"),
        ([0, 1], [[0.5, 0.5]] * 3, None, "inconsistent numbers of samples"),
        ([0, 1], [[0.5, 0.5], [np.nan, 0.5]], None, "NaN"),
        ([0, np.nan], [[0.5, 0.5], [0.5, 0.5]], None, "NaN"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], None, r"outside 0 \.\. 1: \[2\]"),
        (["a", "b"], [[0.5, 0.5], [0.5, 0.5]], None, "pass `classes`"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], [0, 1, 2], "one label per column"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], [1, 1], "duplicates"),
        ([0, 1], [[1.5, -0.5], [0.5, 0.5]], None, r"probabilities in \[0, 1\]"),
        ([0, 1], [0.5, 0.5], None, "2D array"),
    ],
)
def test_brier_rejects_bad_input(y_true, proba, classes, match):
    with pytest.raises(ValueError, match=match):
        brier_score(y_true, proba, classes=classes)


# --- reliability curve and ECE -----------------------------------------------


def test_ece_zero_for_calibrated_data():
    y, proba = _calibrated_case()
    assert expected_calibration_error(y, proba) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_overconfident_data():
    # Always 99 % sure, right half of the time: gap 0.49 in the only bin.
    proba = np.array([[0.99, 0.01]] * 20)
    y = np.array([0, 1] * 10)
    assert expected_calibration_error(y, proba) == pytest.approx(0.49)


def test_ece_hand_computed_two_bins():
    # Bin (0.8, 1]: confidence 0.9, accuracy 0.5; bin (0.6, 0.8]: 0.7 and 1.
    proba = np.array([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(y, proba, n_bins=5) == pytest.approx(
        0.5 * 0.4 + 0.5 * 0.3
    )


def test_reliability_curve_bins():
    y, proba = _calibrated_case()
    confidence, accuracy, counts = reliability_curve(y, proba, n_bins=10)
    np.testing.assert_allclose(confidence, [0.6, 0.8])
    np.testing.assert_allclose(accuracy, [0.6, 0.8])
    np.testing.assert_array_equal(counts, [10, 10])


def test_reliability_curve_right_closed_edges():
    # Bins (0.4, 0.6] and (0.6, 0.8]: 0.6 sits on an edge and belongs to the first.
    proba = np.array([[0.5, 0.5], [0.6, 0.4], [0.61, 0.39], [0.0, 1.0]])
    confidence, _, counts = reliability_curve([0, 0, 0, 1], proba, n_bins=5)
    np.testing.assert_allclose(confidence, [0.55, 0.61, 1.0])
    np.testing.assert_array_equal(counts, [2, 1, 1])


def test_ece_is_weighted_gap_of_curve():
    y, proba = _random_case(0, n_samples=200, n_classes=4)
    confidence, accuracy, counts = reliability_curve(y, proba, n_bins=7)
    assert counts.sum() == 200
    expected = np.sum(counts / 200 * np.abs(accuracy - confidence))
    assert expected > 0
    assert expected_calibration_error(y, proba, n_bins=7) == pytest.approx(expected)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5])
def test_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        expected_calibration_error([0], [[1.0, 0.0]], n_bins=n_bins)


# --- negative log-likelihood ------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_nll_matches_sklearn(seed):
    y, proba = _random_case(seed)
    assert negative_log_likelihood(y, proba) == pytest.approx(log_loss(y, proba))


def test_nll_on_rows_lacking_classes():
    proba = np.array([[0.5, 0.3, 0.2], [0.25, 0.5, 0.25]])
    expected = -(np.log(0.3) + np.log(0.5)) / 2
    assert negative_log_likelihood([1, 1], proba) == pytest.approx(expected)


def test_nll_string_labels_unsorted_classes():
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    expected = -(np.log(0.2) + np.log(0.4)) / 2
    assert negative_log_likelihood(["b", "a"], proba, classes=["b", "a"]) == pytest.approx(
        expected
    )


def test_nll_rejects_unknown_label():
    with pytest.raises(ValueError, match="not in classes"):
        negative_log_likelihood(["c"], [[0.5, 0.5]], classes=["a", "b"])


# --- disagreement ------------------------------------------------------------


def test_disagreement_hand_made():
    a = np.eye(3)[[0, 1, 2, 2]]
    b = np.eye(3)[[0, 2, 2, 1]]
    # Counts of rows over 4: exact in floating point.
    assert disagreement(a, b) == 0.5
    assert disagreement(a, a) == 0.0


def test_disagreement_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        disagreement(np.eye(3), np.eye(3)[:2])
