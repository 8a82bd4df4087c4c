import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from sksnapshot.calibration import apply_temperature, fit_temperature, fit_variance_scale


def _tempered_sample(t0, n=20000, n_classes=5, seed=0):
    """Logits z and labels drawn from softmax(z / t0)."""
    rng = np.random.default_rng(seed)
    logits = 3.0 * rng.normal(size=(n, n_classes))
    p = softmax(logits / t0, axis=1)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, y


@pytest.mark.parametrize("t0", [0.5, 1.0, 2.0, 4.0])
def test_recovers_known_temperature(t0):
    logits, y = _tempered_sample(t0, seed=int(10 * t0))
    assert fit_temperature(logits, y) == pytest.approx(t0, rel=0.05)
    # Logits or log-probabilities: a per-row shift changes nothing.
    assert fit_temperature(log_softmax(logits, axis=1), y) == pytest.approx(
        fit_temperature(logits, y), rel=1e-4)


def test_fitted_temperature_lowers_the_log_loss():
    logits, y = _tempered_sample(2.0, n=2000)

    def nll(proba):
        return -np.mean(np.log(proba[np.arange(len(y)), y]))

    t = fit_temperature(logits, y)
    assert nll(apply_temperature(logits, t)) < nll(apply_temperature(logits, 1.0)) - 0.05


def test_prior_keeps_few_correct_rows_from_sharpening():
    # Nine rows, all classified correctly: the likelihood alone drives T to its
    # lower bound; the prior keeps T near 1.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 9)
    log_p = np.log(np.full((9, 3), 0.15))
    log_p[np.arange(9), y] = np.log(0.7)
    assert fit_temperature(log_p, y, prior_strength=0.0) < 0.1
    assert 0.5 < fit_temperature(log_p, y) < 1.0
    # Smoothed by the rule of succession, the labels ask for a true-class
    # probability of 10/11, not 1: a finite T even without the prior.
    t = fit_temperature(log_p, y, prior_strength=0.0, smoothing="auto")
    assert 0.3 < t < 1.0
    p_true = apply_temperature(log_p, t)[np.arange(9), y].mean()
    assert p_true == pytest.approx(10 / 11, abs=0.02)


def _confident_correct_rows(n=4, p=0.99, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    log_p = np.log(np.full((n, n_classes), (1 - p) / (n_classes - 1)))
    log_p[np.arange(n), y] = np.log(p)
    return log_p, y


@pytest.mark.parametrize("n_classes", [2, 10])
def test_smoothing_softens_a_few_confident_correct_rows(n_classes):
    # Four rows right at 0.99: they say the accuracy is about 5/6, not 1, so an
    # over-confident ensemble is softened; the labels alone (and the prior) sharpen.
    log_p, y = _confident_correct_rows(n_classes=n_classes)
    smoothed = fit_temperature(log_p, y, smoothing="auto")
    assert smoothed > 1.1
    assert fit_temperature(log_p, y) < 1.0
    # The prior still holds T back from the 5/6 the labels alone would fit.
    assert smoothed < fit_temperature(log_p, y, prior_strength=0.0, smoothing="auto")
    # More rows, less smoothing.
    log_p30, y30 = _confident_correct_rows(n=30, n_classes=n_classes)
    assert 1.0 < fit_temperature(log_p30, y30, smoothing="auto") < smoothed


def test_smoothing_vanishes_with_many_rows():
    logits, y = _tempered_sample(2.0, n=20000, seed=3)
    assert fit_temperature(logits, y, smoothing="auto") == pytest.approx(
        fit_temperature(logits, y), rel=0.01)


def test_smoothing_is_soft_targets():
    rng = np.random.default_rng(4)
    log_p = log_softmax(3 * rng.normal(size=(12, 3)), axis=1)
    y = rng.integers(0, 3, 12)
    targets = np.full((12, 3), 0.1)
    targets[np.arange(12), y] = 0.8
    assert fit_temperature(log_p, y, smoothing=0.2) == pytest.approx(
        fit_temperature(log_p, targets), rel=1e-6)
    # "auto" is 1 / (n + 2).
    assert fit_temperature(log_p, y, smoothing="auto") == pytest.approx(
        fit_temperature(log_p, y, smoothing=1 / 14), rel=1e-6)


@pytest.mark.parametrize("smoothing", ["laplace", -0.1, 1.0, np.nan])
def test_fit_temperature_bad_smoothing(smoothing):
    with pytest.raises(ValueError, match="smoothing must be 'auto' or a number in"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 1]), smoothing=smoothing)


def test_soft_targets_are_not_smoothed_again():
    soft = np.array([[0.5, 0.5], [0.2, 0.8]])
    log_p = np.log([[0.9, 0.1], [0.3, 0.7]])
    with pytest.raises(ValueError, match="soft targets y are not smoothed"):
        fit_temperature(log_p, soft, smoothing=0.1)
    # "auto" leaves them as they are (a student's temperature fits its teacher's).
    assert fit_temperature(log_p, soft, smoothing="auto") == fit_temperature(log_p, soft)


def test_prior_vanishes_with_many_rows():
    logits, y = _tempered_sample(3.0, n=20000, seed=5)
    free = fit_temperature(logits, y, prior_strength=0.0)
    assert fit_temperature(logits, y) == pytest.approx(free, rel=0.01)
    assert fit_temperature(logits, y, prior_strength=1e9) == pytest.approx(1.0, abs=1e-3)


def test_apply_temperature():
    rng = np.random.default_rng(1)
    log_p = log_softmax(rng.normal(size=(50, 4)), axis=1)
    np.testing.assert_allclose(apply_temperature(log_p, 1.0), np.exp(log_p))
    for t in (0.3, 3.0):
        proba = apply_temperature(log_p, t)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_array_equal(proba.argmax(axis=1), log_p.argmax(axis=1))
    # Softer with T > 1, sharper with T < 1.
    assert apply_temperature(log_p, 3.0).max(axis=1).mean() < np.exp(log_p).max(axis=1).mean()
    assert apply_temperature(log_p, 0.3).max(axis=1).mean() > np.exp(log_p).max(axis=1).mean()
    # A probability of exactly 0 stays finite.
    assert np.all(np.isfinite(apply_temperature(np.array([[0.0, -np.inf]]), 2.0)))


@pytest.mark.parametrize("t", [0.0, -1.0, np.nan, np.inf])
def test_apply_temperature_refuses_bad_temperature(t):
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        apply_temperature(np.zeros((2, 2)), t)


@pytest.mark.parametrize(
    "log_probas, y, match",
    [
        (np.zeros(3), [0, 1, 0], "2-D"),
        (np.zeros((3, 2)), [0, 1], "one integer label per row"),
        (np.zeros((3, 2)), [0.0, 1.0, 0.0], "one integer label per row"),
        (np.zeros((3, 2)), [0, 2, 0], r"outside 0 \.\. 1"),
        (np.full((3, 2), np.nan), [0, 1, 0], "NaN"),
    ],
)
def test_fit_temperature_bad_inputs(log_probas, y, match):
    with pytest.raises(ValueError, match=match):
        fit_temperature(log_probas, np.asarray(y))


def test_fit_temperature_bad_prior():
    with pytest.raises(ValueError, match="prior_strength"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 1]), prior_strength=-1.0)


def test_variance_scale_recovers_known_scale():
    rng = np.random.default_rng(2)
    variance = rng.uniform(0.5, 2.0, size=(20000, 2))
    mean = rng.normal(size=variance.shape)
    y = mean + rng.normal(size=variance.shape) * np.sqrt(4.0 * variance)
    assert fit_variance_scale(mean, variance, y) == pytest.approx(4.0, rel=0.03)
    # Nothing to fit: the neutral 1.0 itself, not a computation.
    assert fit_variance_scale(mean[:0], variance[:0], y[:0]) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        fit_variance_scale(mean, variance[:10], y)


# -- in the estimators ------------------------------------------------------------------
def test_the_classifier_applies_its_temperature_after_averaging(data):
    from sksnapshot import SnapshotEnsembleClassifier

    from .conftest import tiny_net

    X, y = data
    calibrated = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=3, random_state=0).fit(X, y)
    plain = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=3, calibration=None,
                                       random_state=0).fit(X, y)
    # Uncalibrated is the constant 1.0; the weights are the same fit's, in one process.
    assert plain.temperature_ == 1.0 and calibrated.temperature_ != 1.0
    np.testing.assert_array_equal(calibrated.weights_, plain.weights_)
    expected = apply_temperature(np.log(plain.predict_proba(X)), calibrated.temperature_)
    np.testing.assert_allclose(calibrated.predict_proba(X), expected, atol=1e-12)
    np.testing.assert_array_equal(calibrated.predict(X), plain.predict(X))
    # The last stage of staged_predict_proba is predict_proba.
    *_, last = calibrated.staged_predict_proba(X)
    np.testing.assert_allclose(last, calibrated.predict_proba(X), atol=1e-12)
    # select() fits the temperature again on the rows it is given.
    calibrated.select(X[:40], y[:40])
    # The same computation on the same rows in one process: bit for bit.
    assert calibrated.temperature_ == fit_temperature(
        np.log(plain.set_params().select(X[:40], y[:40]).predict_proba(X[:40])), y[:40])


def test_smoothed_temperature_is_fitted_to_smoothed_labels(data, tmp_path):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    from sksnapshot import SnapshotEnsembleClassifier, load_ensemble, save_ensemble

    from .conftest import tiny_net

    X, y = data
    kwargs = dict(n_snapshots=2, random_state=0)
    smoothed = SnapshotEnsembleClassifier(tiny_net(), calibration="smoothed_temperature",
                                          **kwargs).fit(X, y)
    plain = SnapshotEnsembleClassifier(tiny_net(), calibration=None, **kwargs).fit(X, y)
    # select() on given rows: the temperature of the smoothed labels, the same members.
    smoothed.select(X[:20], y[:20])
    log_p = np.log(plain.select(X[:20], y[:20]).predict_proba(X[:20]))
    assert smoothed.temperature_ == fit_temperature(log_p, y[:20], smoothing="auto")
    assert smoothed.temperature_ != fit_temperature(log_p, y[:20])
    np.testing.assert_array_equal(smoothed.predict(X), plain.predict(X))
    # Cross-fitted runs fit it on the out-of-fold rows the same way.
    runs = SnapshotEnsembleClassifier(tiny_net(), calibration="smoothed_temperature",
                                      n_runs=2, bootstrap="folds", **kwargs).fit(X, y)
    assert runs.temperature_ > 0 and runs.pooling_ == "tempered runs"
    # A parameter like the others: saved, cloned, searched.
    path = tmp_path / "smoothed.skens"
    save_ensemble(smoothed, path)
    loaded = load_ensemble(path)
    assert loaded.calibration == "smoothed_temperature"
    assert loaded.temperature_ == smoothed.temperature_
    assert clone(smoothed).calibration == "smoothed_temperature"
    search = GridSearchCV(SnapshotEnsembleClassifier(tiny_net(), **kwargs), cv=2,
                          param_grid={"calibration": ["temperature", "smoothed_temperature"]},
                          scoring="neg_log_loss").fit(X, y)
    assert search.best_params_["calibration"] in ("temperature", "smoothed_temperature")
    with pytest.raises(ValueError, match="calibration"):
        SnapshotEnsembleClassifier(tiny_net(), calibration="smoothed").fit(X, y)


def test_the_regressor_scales_its_variance_on_validation_rows(data):
    from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net

    X, y = data
    y = y + 0.3 * np.random.RandomState(0).randn(len(y))
    net = default_regressor_net().set_params(module__hidden_layer_sizes=(16,), max_epochs=6,
                                             batch_size=32, lr=0.01)
    scaled = SnapshotEnsembleRegressor(net, n_snapshots=3, random_state=0).fit(X, y)
    plain = SnapshotEnsembleRegressor(net, n_snapshots=3, calibration=None,
                                      random_state=0).fit(X, y)
    # Uncalibrated is the constant 1.0, not a computation.
    assert plain.variance_scale_ == 1.0 and scaled.variance_scale_ > 0
    mean, std = scaled.predict(X, return_std=True)
    plain_mean, plain_std = plain.predict(X, return_std=True)
    np.testing.assert_allclose(mean, plain_mean)
    np.testing.assert_allclose(std, np.sqrt(scaled.variance_scale_) * plain_std)
