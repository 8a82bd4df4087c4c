import numpy as np
import pytest
from scipy.optimize import OptimizeResult
from sklearn.metrics import log_loss

from sksnapshot.metrics import disagreement, disagreement_matrix
from sksnapshot.selection import _core as _selection
from sksnapshot.selection import (
    member_scores,
    optimize_simplex,
    optimize_weights,
    regression_member_scores,
    select_diverse,
    select_greedy,
    select_last,
    select_members,
    select_regression_members,
    shrink_regression_weights,
    shrink_weights,
)


def ensemble_log_loss(probas, y, weights):
    """Log-loss of the normalised weighted average of the members (sklearn's)."""
    weights = np.asarray(weights, dtype=float)
    mean = np.tensordot(weights / weights.sum(), np.asarray(probas), axes=1)
    return log_loss(y, mean, labels=range(np.shape(probas)[2]))


def _random_probas(seed, n_members=5, n_samples=30, n_classes=3):
    rng = np.random.default_rng(seed)
    probas = rng.dirichlet(np.ones(n_classes), size=(n_members, n_samples))
    return probas, rng.integers(0, n_classes, n_samples)


def _soft(labels, n_classes, confidence):
    """Rows putting `confidence` on `labels` and the rest evenly elsewhere."""
    rest = (1 - confidence) / (n_classes - 1)
    proba = np.full((len(labels), n_classes), rest)
    proba[np.arange(len(labels)), labels] = confidence
    return proba


def _twins_and_other(other_confidence=0.75):
    """Members 0 and 1 identical and best; member 2 a bit worse but disagreeing."""
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    twin = _soft(y, 3, 0.8)
    twin[9] = _soft([1], 3, 0.8)[0]  # confidently wrong on the last row
    other = _soft(y, 3, other_confidence)
    other[4] = _soft([0], 3, 0.8)[0]  # confidently wrong on row 4 instead
    return np.stack([twin, twin, other]), y


def _reference_greedy(probas, y, max_steps):
    """Plain re-implementation of Caruana's selection with replacement."""
    probas, y = np.asarray(probas), np.asarray(y)
    n = len(probas)

    def loss(bag):
        mean = np.mean([probas[i] for i in bag], axis=0)
        return log_loss(y, mean, labels=range(probas.shape[2]))

    bag = [min(range(n), key=lambda i: (loss([i]), i))]
    best = (loss(bag), list(bag))
    for _ in range(max_steps - 1):
        bag.append(min(range(n), key=lambda i: (loss(bag + [i]), i)))
        if loss(bag) < best[0]:
            best = (loss(bag), list(bag))
    counts = np.bincount(best[1], minlength=n)
    return np.flatnonzero(counts), counts[counts > 0] / counts.sum()


# --- scores ------------------------------------------------------------------


def test_member_scores_hand_computed():
    probas = [[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]]
    scores = member_scores(probas, [0, 1, 1])
    np.testing.assert_allclose(scores["accuracy"], [2 / 3, 1 / 3])
    np.testing.assert_allclose(
        scores["log_loss"], [-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3, np.log(2)]
    )


def test_member_scores_match_sklearn():
    probas, y = _random_probas(0)
    expected = [log_loss(y, p, labels=range(3)) for p in probas]
    np.testing.assert_allclose(member_scores(probas, y)["log_loss"], expected)


def test_member_scores_clip_zero_probability():
    scores = member_scores([[[0.0, 1.0]]], [0])
    assert scores["log_loss"][0] == pytest.approx(-np.log(1e-15))


def test_disagreement_matrix_hand_made():
    labels = np.array([[0, 1, 2, 0], [0, 1, 2, 1], [1, 1, 0, 1]])
    matrix = disagreement_matrix(np.eye(3)[labels])
    expected = [[0, 0.25, 0.75], [0.25, 0, 0.5], [0.75, 0.5, 0]]
    np.testing.assert_array_equal(matrix, expected)


def test_disagreement_matrix_agrees_with_metric():
    probas, _ = _random_probas(1)
    matrix = disagreement_matrix(probas)
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), 0)
    assert matrix[1, 3] == disagreement(probas[1], probas[3]) > 0


# --- last / all --------------------------------------------------------------


def test_select_last_and_all():
    indices, weights = select_last(6, 3)
    np.testing.assert_array_equal(indices, [3, 4, 5])
    np.testing.assert_allclose(weights, [1 / 3] * 3)
    indices, weights = select_members(np.full((3, 1, 2), 0.5), [0], "all")
    np.testing.assert_array_equal(indices, [0, 1, 2])
    np.testing.assert_allclose(weights, [1 / 3] * 3)
    np.testing.assert_array_equal(select_last(4)[0], [0, 1, 2, 3])


@pytest.mark.parametrize("n_members", [0, 7, 2.0])
def test_select_last_bad_n_members(n_members):
    with pytest.raises(ValueError, match="n_members"):
        select_last(6, n_members)


# --- greedy ------------------------------------------------------------------


def test_greedy_repeats_dominant_member():
    y = np.array([0, 1, 2, 0, 1, 2])
    probas = np.stack([_soft(y, 3, 0.5), _soft(y, 3, 0.95), _soft((y + 1) % 3, 3, 0.6)])
    indices, weights = select_greedy(probas, y, max_steps=6)
    np.testing.assert_array_equal(indices, [1])
    # One member's weight is the constant 1.0, not a computation.
    np.testing.assert_array_equal(weights, [1.0])


def test_greedy_combines_complementary_members():
    y = np.array([0, 1])
    probas = [[[0.95, 0.05], [0.6, 0.4]], [[0.4, 0.6], [0.05, 0.95]], [[0.5, 0.5], [0.5, 0.5]]]
    indices, weights = select_greedy(probas, y)
    np.testing.assert_array_equal(indices, [0, 1])
    np.testing.assert_allclose(weights, [0.5, 0.5])


def test_greedy_breaks_ties_by_lower_index():
    probas, y = _twins_and_other()
    probas = probas[[2, 0, 1]]  # twins now at 1 and 2
    indices, _ = select_greedy(probas, y, n_members=1)
    np.testing.assert_array_equal(indices, [1])


@pytest.mark.parametrize("seed", range(4))
def test_greedy_matches_reference(seed):
    probas, y = _random_probas(seed, n_members=4, n_samples=12)
    indices, weights = select_greedy(probas, y, max_steps=8)
    ref_indices, ref_weights = _reference_greedy(probas, y, max_steps=8)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(weights, ref_weights)
    best_single = member_scores(probas, y)["log_loss"].min()
    full = np.zeros(len(probas))
    full[indices] = weights
    assert ensemble_log_loss(probas, y, full) <= best_single


def test_greedy_uses_replacement_weights():
    # Member 1 pulls row 1 up but hurts row 0; one part in three is best.
    y = np.array([0, 1])
    probas = [[[0.9, 0.1], [0.7, 0.3]], [[0.2, 0.8], [0.1, 0.9]]]
    indices, weights = select_greedy(probas, y, max_steps=10)
    np.testing.assert_array_equal(indices, [0, 1])
    ref_indices, ref_weights = _reference_greedy(probas, y, max_steps=10)
    np.testing.assert_allclose(weights, ref_weights)
    assert weights[0] != weights[1]


def test_greedy_n_members_caps_distinct():
    probas, y = _random_probas(3, n_members=6, n_samples=40)
    uncapped, _ = select_greedy(probas, y, max_steps=20)
    assert len(uncapped) > 2
    indices, weights = select_greedy(probas, y, n_members=2, max_steps=20)
    assert 1 <= len(indices) <= 2
    assert weights.sum() == pytest.approx(1.0)


# --- diverse -----------------------------------------------------------------


def test_diverse_skips_identical_twin():
    probas, y = _twins_and_other()
    scores = member_scores(probas, y)
    assert scores["log_loss"][2] > scores["log_loss"][0]  # the twins are best
    indices, weights = select_diverse(probas, y, n_members=2)
    np.testing.assert_array_equal(indices, [0, 2])
    np.testing.assert_allclose(weights, [0.5, 0.5])


def test_diverse_ignores_member_that_disagrees_by_being_wrong():
    # Member 1 is clearly worse than member 0 and disagrees on 2 rows in 10;
    # member 2 disagrees everywhere because it is always confidently wrong.
    probas, y = _twins_and_other(other_confidence=0.6)
    broken = _soft((probas[0].argmax(axis=1) + 1) % 3, 3, 0.99)
    probas = np.concatenate([probas[[0, 2]], broken[None]])
    assert disagreement_matrix(probas)[0, 2] == 1.0
    indices, _ = select_diverse(probas, y, n_members=2)
    np.testing.assert_array_equal(indices, [0, 1])


def test_diverse_validation_decides_size():
    probas, y = _twins_and_other()
    # Copies add nothing: one member is enough.
    indices, _ = select_diverse(probas[[0, 1]], y)
    np.testing.assert_array_equal(indices, [0])
    # Each fixes the other's error; equally good, so the even mix beats the
    # 2:1 mix that adding the twin back would give.
    probas, y = _twins_and_other(other_confidence=0.8)
    indices, _ = select_diverse(probas, y)
    np.testing.assert_array_equal(indices, [0, 2])


# --- optimize_weights ----------------------------------------------------------


def test_optimize_weights_trusts_perfect_member():
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    probas = np.stack([_soft(y, 3, 0.6), np.eye(3)[y], _soft((y + 1) % 3, 3, 0.98)])
    weights = optimize_weights(probas, y)
    assert weights[1] > 0.999
    assert weights[2] < 1e-4
    assert weights.min() >= 0
    assert weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(6))
def test_optimize_weights_never_worse_than_uniform(seed):
    probas, y = _random_probas(seed, n_members=5, n_samples=15)
    weights = optimize_weights(probas, y)
    assert weights.min() >= 0
    assert weights.sum() == pytest.approx(1.0)
    uniform = ensemble_log_loss(probas, y, np.ones(5))
    assert ensemble_log_loss(probas, y, weights) < uniform - 1e-3
    # The same function on the same inputs, twice in one process: bit for bit.
    np.testing.assert_array_equal(weights, optimize_weights(probas, y))  # deterministic


def test_optimize_weights_subset_and_single():
    probas, y = _random_probas(0)
    weights = optimize_weights(probas, y, indices=[1, 3])
    assert weights.shape == (2,)
    # Weighting the subset alone must give the same answer.
    np.testing.assert_allclose(weights, optimize_weights(probas[[1, 3]], y))
    # One member's weight is the constant 1.0, not a computation.
    np.testing.assert_array_equal(optimize_weights(probas, y, indices=[4]), [1.0])


def test_optimize_weights_falls_back_to_uniform(monkeypatch):
    probas, y = _random_probas(4, n_members=3)
    single = member_scores(probas, y)["log_loss"]
    worst = np.zeros(3)
    worst[np.argmax(single)] = 50.0  # all weight on the worst member

    def bad_minimize(fun, x0, **kwargs):
        return OptimizeResult(x=worst)

    monkeypatch.setattr(_selection, "minimize", bad_minimize)
    np.testing.assert_allclose(optimize_weights(probas, y), [1 / 3] * 3)


# --- select_members ------------------------------------------------------------


def test_select_members_dispatch():
    probas, y = _random_probas(5, n_members=4)
    for selection, expected in [
        ("last", select_last(4, 2)),
        ("greedy", select_greedy(probas, y, 2)),
        ("diverse", select_diverse(probas, y, 2)),
    ]:
        indices, weights = select_members(probas, y, selection, n_members=2)
        np.testing.assert_array_equal(indices, expected[0])
        # The same function on the same inputs, twice in one process: bit for bit.
        np.testing.assert_array_equal(weights, expected[1])
    indices, weights = select_members(probas, y, "all", weighting="optimize")
    np.testing.assert_array_equal(indices, [0, 1, 2, 3])
    # The same function on the same inputs, twice in one process: bit for bit.
    np.testing.assert_array_equal(weights, optimize_weights(probas, y))
    indices, weights = select_members(probas, y, "greedy", weighting="optimize")
    # The same function on the same inputs, twice in one process: bit for bit.
    np.testing.assert_array_equal(weights, optimize_weights(probas, y, indices))
    for selection in ("all", "diverse"):
        indices, weights = select_members(probas, y, selection, weighting="shrink")
        np.testing.assert_array_equal(indices, select_members(probas, y, selection)[0])
        # The same function on the same inputs, twice in one process: bit for bit.
        np.testing.assert_array_equal(weights, shrink_weights(probas, y, indices))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"selection": "best"}, "selection must be one of .*'best'"),
        ({"selection": "last", "weighting": "stacking"}, "weighting must be one of .*'stacking'"),
        ({"selection": "last", "n_members": 0}, "n_members must be between 1 and .* got 0"),
        ({"selection": "greedy", "n_members": 5}, "n_members must be between 1 and .* got 5"),
        ({"selection": "all", "n_members": 2}, "selection='all'"),
    ],
)
def test_select_members_bad_options(kwargs, match):
    probas, y = _random_probas(0, n_members=4)
    with pytest.raises(ValueError, match=match):
        select_members(probas, y, **kwargs)


@pytest.mark.parametrize(
    "probas, y, match",
    [
        (np.full((4, 2), 0.5), [0, 1, 0, 1], "3-D array"),
        (np.full((2, 4, 2), 0.5), [0, 1, 0], r"one label per validation row \(4\)"),
        (np.full((2, 3, 2), 0.5), [0, 2, 1], r"outside 0 \.\. 1: \[2\]"),
        (np.full((2, 3, 2), 0.5), [0, -1, 1], r"outside 0 \.\. 1: \[-1\]"),
        (np.full((2, 3, 2), np.nan), [0, 1, 1], "NaN"),
        (np.full((2, 3, 2), 0.5), [0.5, 1, 1], "integer labels"),
    ],
)
def test_select_members_bad_inputs(probas, y, match):
    with pytest.raises(ValueError, match=match):
        select_members(probas, y, "greedy")


@pytest.mark.parametrize("selection", ["last", "diverse", "greedy", "all"])
@pytest.mark.parametrize("weighting", ["uniform", "optimize", "shrink"])
@pytest.mark.parametrize("n_samples, one_class", [(1, False), (3, True), (5, False)])
def test_tiny_validation_sets(selection, weighting, n_samples, one_class):
    probas, y = _random_probas(7, n_members=4, n_samples=n_samples, n_classes=3)
    if one_class:
        y[:] = 2
    indices, weights = select_members(probas, y, selection, weighting=weighting)
    assert len(indices) == len(weights) >= 1
    assert np.all(np.diff(indices) > 0)
    assert np.all(weights >= 0)
    assert weights.sum() == pytest.approx(1.0)
    full = np.zeros(4)
    full[indices] = weights
    # Validation-driven choices are never worse than their starting point.
    if weighting == "shrink":
        # The prior's mean minimises the penalty, so the MAP weights fit the rows
        # at least as well as it does: equal weights on the last two chosen.
        prior = np.zeros(4)
        prior[indices[-2:]] = 1.0
        baseline = ensemble_log_loss(probas, y, prior) + 1e-6
    elif selection in ("all", "last"):
        baseline = ensemble_log_loss(probas, y, np.ones(4))
    else:
        baseline = member_scores(probas, y)["log_loss"].min()
    assert ensemble_log_loss(probas, y, full) <= baseline + 1e-12


# --- shrink ----------------------------------------------------------------------


def _informative(seed, n_samples, qualities=(0.45, 0.75, 0.6, 0.55), n_classes=3):
    """Members whose true-class probability on each row is Beta-noisy around a quality.

    Sampled afresh per row, so mixing members helps and the optimum is interior.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_samples)
    probas = np.empty((len(qualities), n_samples, n_classes))
    for m, q in enumerate(qualities):
        true = rng.beta(8 * q, 8 * (1 - q), n_samples)
        probas[m] = ((1 - true) / (n_classes - 1))[:, None]
        probas[m, np.arange(n_samples), y] = true
    return probas, y


def test_shrink_few_rows_stays_at_prior():
    # On 6 rows member 0 looks best (the unregularised optimum puts most weight
    # on a member chosen by those rows); shrink stays near the prior: equal
    # weights on the last two members.
    probas, y = _informative(0, 6, qualities=(0.7, 0.5, 0.55, 0.55))
    assert optimize_weights(probas, y).max() > 0.5
    np.testing.assert_allclose(shrink_weights(probas, y), [0, 0, 0.5, 0.5], atol=0.1)
    # Two members: the prior is uniform, so few rows give near-uniform weights.
    np.testing.assert_allclose(shrink_weights(probas[2:], y), [0.5, 0.5], atol=0.1)


def test_shrink_many_rows_finds_the_optimum():
    probas, y = _informative(1, 20000)
    optimum = optimize_weights(probas, y)
    assert optimum[1] > 0.4 and optimum[0] < 0.2  # interior and far from the prior
    np.testing.assert_allclose(shrink_weights(probas, y), optimum, atol=0.02)


def test_shrink_moves_monotonically_from_prior_to_optimum():
    probas, y = _informative(2, 3000)
    optimum = optimize_weights(probas, y)
    prior = np.array([0, 0, 0.5, 0.5])
    distances = [np.abs(shrink_weights(probas, y, prior_rows=r) - optimum).sum()
                 for r in (0, 30, 300, 3000, 30000)]
    assert distances[0] == pytest.approx(0, abs=1e-3)  # no prior: the optimum
    assert np.all(np.diff(distances) > 0)
    assert np.abs(shrink_weights(probas, y, prior_rows=1e7) - prior).sum() < 0.01


def test_shrink_subset_single_member_and_validation():
    probas, y = _informative(3, 40)
    weights = shrink_weights(probas, y, indices=[0, 2])
    np.testing.assert_allclose(weights, shrink_weights(probas[[0, 2]], y))
    # One member's weight is the constant 1.0, not a computation.
    np.testing.assert_array_equal(shrink_weights(probas, y, indices=[3]), [1.0])
    with pytest.raises(ValueError, match="prior_rows"):
        shrink_weights(probas, y, prior_rows=-1)
    with pytest.raises(ValueError, match="indices must lie"):
        shrink_weights(probas, y, indices=[4])


def test_shrink_is_what_select_applies_for_the_estimator_weighting():
    # The rule select_members applies with weighting="shrink" is shrink_weights on
    # the chosen members, whatever the selection.
    probas, y = _informative(4, 25)
    for selection in ("all", "last", "greedy", "diverse"):
        indices, weights = select_members(probas, y, selection, weighting="shrink")
        # The same function on the same inputs, twice in one process: bit for bit.
        np.testing.assert_array_equal(weights, shrink_weights(probas, y, indices))


# --- regression ------------------------------------------------------------------


def _regression_members(seed, n, scales=(0.3, 0.5, 0.5, 0.5)):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, 1))
    return np.stack([y + rng.normal(scale=s, size=y.shape) for s in scales]), y


def test_regression_shrink_few_rows_and_many_rows():
    means, y = _regression_members(0, 5)
    np.testing.assert_allclose(shrink_regression_weights(means, y), [0, 0, 0.5, 0.5], atol=0.1)
    means, y = _regression_members(1, 20000)
    _, optimum = select_regression_members(means, y, "all", weighting="optimize")
    np.testing.assert_allclose(shrink_regression_weights(means, y), optimum, atol=0.02)


def test_regression_shrink_with_variances():
    means, y = _regression_members(2, 20000)
    variances = np.full_like(means, 0.25)
    _, optimum = select_regression_members(means, y, "all", weighting="optimize",
                                           variances=variances)
    indices, weights = select_regression_members(means, y, "all", weighting="shrink",
                                                 variances=variances)
    np.testing.assert_array_equal(indices, [0, 1, 2, 3])
    np.testing.assert_allclose(weights, optimum, atol=0.02)


def test_regression_selection_options():
    means, y = _regression_members(3, 30)
    assert set(regression_member_scores(means, y)) == {"mse"}
    indices, weights = select_regression_members(means, y, "last", n_members=2,
                                                 weighting="shrink")
    np.testing.assert_array_equal(indices, [2, 3])
    assert weights.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="selection='all'"):
        select_regression_members(means, y, "all", n_members=2)
    with pytest.raises(ValueError, match="weighting must be one of"):
        select_regression_members(means, y, "all", weighting="stacking")
    with pytest.raises(ValueError, match="for regression"):
        select_regression_members(means, y, "diverse")


def test_the_weight_optimiser_runs_blas_on_one_thread_and_restores_it():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info()
                if pool["user_api"] == "blas"]

    before, seen = blas_threads(), []
    target = np.array([0.2, 0.5, 0.3])

    def loss_and_grad(w):
        seen.append(blas_threads())
        return ((w - target) ** 2).sum(), 2 * (w - target)

    np.testing.assert_allclose(optimize_simplex(loss_and_grad, 3), target, atol=1e-4)
    # The optimiser's own evaluations (all but the final comparison with the start).
    assert len(seen) > 2 and all(threads == [1] * len(before) for threads in seen[:-2])
    assert blas_threads() == before
