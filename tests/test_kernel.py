"""_kernel.py: the one predictive computation, and that its three users agree."""

import ast
import copy
import math
import pathlib

import numpy as np
import pytest
import torch
from sklearn.datasets import make_regression

from sksnapshot import (
    GaussianNLLCriterion,
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_regressor_net,
)
from sksnapshot._distill import _Teacher
from sksnapshot._kernel import (
    LOG_PROBA_FLOOR,
    LOG_VAR_BOUND,
    PROBA_FLOOR,
    GaussianHead,
    ProbaHead,
    clamp_log_variance,
    log_proba,
    mixture,
    normalise,
    split_outputs,
    temper,
    weighted_sum,
)
from sksnapshot.calibration import apply_temperature

from .conftest import tiny_net

PACKAGE = pathlib.Path(__file__).parents[1] / "sksnapshot"


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


# -- the pieces, against hand-computed values --------------------------------------
def test_weighted_sum_and_normalise():
    outputs = [_t([[0.6, 0.4]]), _t([[1.0, 0.0]])]
    np.testing.assert_allclose(weighted_sum(iter(outputs), [0.25, 0.75]), [[0.9, 0.1]])
    np.testing.assert_allclose(normalise(_t([[1.0, 3.0]])), [[0.25, 0.75]])


def test_proba_head_averages_normalises_and_tempers():
    outputs = [_t([[0.6, 0.4]]), _t([[1.0, 0.0]])]
    np.testing.assert_allclose(ProbaHead()(outputs, [0.5, 0.5]), [[0.8, 0.2]])
    # softmax(log p / 2) = sqrt(p) / sum(sqrt(p)): sqrt(0.8) is twice sqrt(0.2).
    np.testing.assert_allclose(ProbaHead(2.0)(outputs, [0.5, 0.5]), [[2 / 3, 1 / 3]])
    np.testing.assert_allclose(temper(torch.log(_t([[0.8, 0.2]])), 2.0), [[2 / 3, 1 / 3]])
    # The same arithmetic on NumPy arrays as on tensors (the libraries' exp may differ
    # in the last bit).
    log_p = np.log(np.random.default_rng(0).dirichlet(np.ones(4), size=50))
    np.testing.assert_allclose(temper(log_p, 1.7), temper(torch.from_numpy(log_p), 1.7),
                               rtol=1e-14)


def test_the_one_log_floor():
    assert LOG_PROBA_FLOOR == math.log(PROBA_FLOOR) and PROBA_FLOOR == 1e-15
    np.testing.assert_allclose(log_proba(_t([0.0, 1e-20, 0.5])),
                               [LOG_PROBA_FLOOR, LOG_PROBA_FLOOR, math.log(0.5)])
    # A zero probability stays finite under a temperature, in the head and in the
    # public apply_temperature alike (which takes the logs).
    head = ProbaHead(2.0).calibrate(_t([[1.0, 0.0]]))
    floor = math.sqrt(PROBA_FLOOR)
    np.testing.assert_allclose(head, [[1 / (1 + floor), floor / (1 + floor)]])
    np.testing.assert_allclose(apply_temperature([[0.0, -np.inf]], 2.0), head, rtol=1e-12)


def test_the_one_log_variance_clamp():
    assert GaussianNLLCriterion.LOG_VAR_BOUND == LOG_VAR_BOUND == 20.0
    np.testing.assert_allclose(clamp_log_variance(_t([-50.0, 0.5, 50.0])), [-20.0, 0.5, 20.0])
    means, variances = split_outputs(_t([[1.0, 2.0, 100.0, 0.0]]), 2, gaussian=True)
    np.testing.assert_allclose(means, [[1.0, 2.0]])
    np.testing.assert_allclose(variances, [[math.exp(20.0), 1.0]])
    assert split_outputs(_t([[1.0, 2.0]]), 2, gaussian=False)[1] is None


def test_mixture_is_the_law_of_total_variance():
    # Members on the first axis: two members, one row.
    means, variances = _t([[0.0], [2.0]]), _t([[1.0], [3.0]])
    mean, aleatoric, epistemic = mixture(means, variances, [0.25, 0.75])
    # mean 1.5; aleatoric 0.25 * 1 + 0.75 * 3; epistemic 0.25 * 1.5^2 + 0.75 * 0.5^2.
    np.testing.assert_allclose(torch.stack([mean, aleatoric, epistemic]).numpy(),
                               [[1.5], [2.5], [0.75]])
    assert float(mixture(_t([[1.0]]), None, [1.0])[1]) == 0.0
    # NumPy arrays in, NumPy arrays out: the same function serves float64 prediction.
    parts = mixture(means.numpy(), variances.numpy(), np.array([0.25, 0.75]))
    assert all(isinstance(p, np.ndarray) for p in parts)
    np.testing.assert_array_equal(parts, [[1.5], [2.5], [0.75]])


def test_gaussian_head_forms():
    log_var = math.log(2.0)
    outputs = [_t([[0.0, log_var]]), _t([[2.0, log_var]])]  # one target, variance 2
    weights = [0.5, 0.5]

    def head(form, **kwargs):
        return GaussianHead(1, True, variance_scale=3.0, form=form, **kwargs)(outputs, weights)

    np.testing.assert_allclose(head("mean"), [[1.0]])
    mean, std = head("mean_std", single_output=True)
    assert mean.shape == std.shape == (1,)
    np.testing.assert_allclose(std, [math.sqrt(3.0 * (2.0 + 1.0))])
    np.testing.assert_allclose(head("moments"), [[1.0, 9.0]])
    plain = GaussianHead(1, False, form="moments")([_t([[0.0]]), _t([[2.0]])], weights)
    np.testing.assert_allclose(plain, [[1.0]])
    with pytest.raises(ValueError, match="form must be one of"):
        GaussianHead(1, False, form="std")


def test_no_other_module_writes_the_floor_or_the_clamp():
    """The floor and the clamp are the kernel's: no module on the predictive path has its own."""
    for name in ("_base", "_calibration", "_classifier", "_distill", "_export", "_inference",
                 "_modules", "_regressor", "metrics"):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        floors = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                  and node.value in (1e-15, 1e-300, 1e-12)]
        clamps = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                  and node.attr in ("clamp", "clamp_min")]
        assert not floors and not clamps, (name, floors, clamps)


# -- predict, to_torch() and the distillation teacher agree ------------------------------
@pytest.fixture(scope="module")
def clf(data):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(max_epochs=4), n_snapshots=2,
                                     random_state=0).fit(X.astype(np.float32), y)
    clf.temperature_ = 1.7  # a temperature that moves the probabilities
    return clf


def _teacher(estimator, X):
    """The distillation teacher's targets on ``X`` (what a Dataset's batches get)."""
    teacher = _Teacher(estimator._distillation_source().spec(), "cpu")
    with torch.no_grad():
        return teacher(torch.from_numpy(X)).numpy()


def test_classifier_prediction_export_and_teacher_agree(clf, data):
    X = data[0].astype(np.float32)
    expected = clf.predict_proba(X)
    with torch.no_grad():
        exported = clf.to_torch()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-6)
    np.testing.assert_allclose(_teacher(clf, X), expected, atol=1e-6)
    np.testing.assert_allclose(clf._distillation_source().soft_targets(X), expected,
                               atol=1e-6)
    plain = copy.deepcopy(clf)
    plain.temperature_ = 1.0
    assert not np.allclose(plain.predict_proba(X), expected, atol=1e-3)


@pytest.mark.parametrize("gaussian", [False, True])
def test_regressor_prediction_export_and_teacher_agree(gaussian):
    X, y = make_regression(n_samples=100, n_features=4, noise=5.0, random_state=0)
    X, y = X.astype(np.float32), y / y.std()
    net = default_regressor_net(gaussian=gaussian).set_params(
        max_epochs=3, lr=0.01, module__hidden_layer_sizes=(8,))
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, random_state=0).fit(X, y)
    assert reg.variance_scale_ != 1.0
    mean, std = reg.predict(X, return_std=True)
    with torch.no_grad():
        got_mean, got_std = (a.numpy() for a in reg.to_torch(return_std=True)(
            torch.from_numpy(X)))
    np.testing.assert_allclose(got_mean, mean, atol=1e-5)
    np.testing.assert_allclose(got_std, std, atol=1e-5, rtol=1e-5)
    expected = np.column_stack([mean, std ** 2]) if gaussian else mean[:, None]
    np.testing.assert_allclose(_teacher(reg, X), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(reg._distillation_source().soft_targets(X), expected,
                               atol=1e-5, rtol=1e-5)


def test_the_temperatures_fit_and_use_temper_alike():
    # fit_temperature's likelihood and predict's tempering are the one log_temper: the same
    # steps as SciPy's log_softmax, so the same bits in one process.
    from scipy.special import log_softmax

    from sksnapshot._kernel import log_temper

    logits = 5 * np.random.default_rng(0).normal(size=(200, 4))
    for temperature in (0.3, 1.0, 2.7):
        np.testing.assert_array_equal(log_temper(logits, temperature),
                                      log_softmax(logits / temperature, axis=1))
        np.testing.assert_array_equal(np.exp(log_temper(logits, temperature)),
                                      apply_temperature(logits, temperature))
