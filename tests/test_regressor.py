import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
import torch
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import make_regression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net
from sksnapshot._compat import InvalidParameterError

from ._helpers import assert_close_elsewhere


def tiny_reg_net(gaussian=False, **overrides):
    params = dict(module__hidden_layer_sizes=(16,), lr=0.05, max_epochs=8, batch_size=32)
    params.update(overrides)
    return default_regressor_net(gaussian=gaussian).set_params(**params)


@pytest.fixture(scope="module")
def reg_data():
    X, y = make_regression(n_samples=120, n_features=5, n_targets=2, noise=10.0, random_state=0)
    X = StandardScaler().fit_transform(X)
    return X, (y - y.mean(0)) / y.std(0)


def fit(X, y, net=None, **kwargs):
    params = dict(n_snapshots=3, random_state=0)
    params.update(kwargs)
    return SnapshotEnsembleRegressor(tiny_reg_net() if net is None else net, **params).fit(X, y)


def member_outputs(reg, X):
    """Each member's raw output, by loading its snapshot into a fresh module."""
    module = type(reg.net_.module_)(**{k[8:]: v for k, v in reg.net_.get_params().items()
                                       if k.startswith("module__")}).eval()
    outputs = []
    for index in reg.members_:
        module.load_state_dict(reg.snapshots_[index])
        with torch.no_grad():
            outputs.append(module(torch.as_tensor(X, dtype=torch.float32)).numpy())
    return np.stack(outputs)


def test_single_and_multi_output_predictions_are_member_means(reg_data):
    X, Y = reg_data
    for y in (Y[:, 0], Y):
        reg = fit(X, y, selection="all", weighting="uniform", calibration=None)
        mean, std = reg.predict(X, return_std=True)
        assert mean.shape == std.shape == y.shape
        outputs = member_outputs(reg, X).astype(np.float64).reshape(3, len(X), -1)
        expected_mean = outputs.mean(0).reshape(y.shape)
        np.testing.assert_allclose(mean, expected_mean, atol=1e-6)
        np.testing.assert_allclose(std, outputs.std(0).reshape(y.shape), atol=1e-5)
        assert np.all(std > 0)
        assert reg.score(X, y) > 0.5


def test_mean_variance_members_give_the_mixture_variance(reg_data):
    X, Y = reg_data
    reg = fit(X, Y[:, 0], net=tiny_reg_net(gaussian=True), selection="all", weighting="uniform",
              calibration=None)
    assert reg.gaussian_ and "gaussian_nll" in reg.validation_scores_
    outputs = member_outputs(reg, X).astype(np.float64)  # (M, n, 2): mean, log-variance
    means, variances = outputs[..., 0], np.exp(outputs[..., 1])
    mean, std = reg.predict(X, return_std=True)
    np.testing.assert_allclose(mean, means.mean(0), atol=1e-6)
    np.testing.assert_allclose(std ** 2, variances.mean(0) + means.var(0), rtol=1e-5)


def test_selection_and_weights_on_validation_rows(reg_data):
    X, Y = reg_data
    reg = fit(X, Y, n_snapshots=4, selection="greedy", weighting="uniform")
    assert reg.validation_scores_["mse"].shape == (4,)
    assert reg.weights_.sum() == pytest.approx(1.0)
    reg.set_params(selection="all", weighting="optimize").select(X[:40], Y[:40])
    assert reg.members_.tolist() == [0, 1, 2, 3]
    uniform_mse = np.mean((member_outputs(reg, X[:40]).mean(0) - Y[:40]) ** 2)
    assert np.mean((reg.predict(X[:40]) - Y[:40]) ** 2) <= uniform_mse + 1e-9
    with pytest.raises(ValueError, match="y has 1 targets; the ensemble was fitted on 2"):
        reg.select(X[:40], Y[:40, 0])
    with pytest.raises(InvalidParameterError, match="selection"):
        fit(X, Y, selection="diverse")


def test_weight_averaging_predicts_with_one_model(reg_data):
    X, Y = reg_data
    reg = fit(X, Y, combine="weights", net=tiny_reg_net(module__batch_norm=True))
    mean, std = reg.predict(X, return_std=True)
    assert reg.averaged_state_ is not None
    # One model's spread is the constant 0, not a computation.
    np.testing.assert_array_equal(std, 0.0)  # one model without a variance head


def test_wrong_module_width_is_named(reg_data):
    X, Y = reg_data
    net = tiny_reg_net().set_params(criterion=default_regressor_net(gaussian=True).criterion)
    with pytest.raises(ValueError, match="a mean and a log-variance for each of 2 targets"):
        fit(X, Y, net=net)


def test_pipeline_transformed_target_grid_search_and_joblib(reg_data, tmp_path):
    X, Y = reg_data
    y = Y[:, 0] * 50 + 300  # unscaled targets: the transformer standardises them
    model = TransformedTargetRegressor(
        make_pipeline(StandardScaler(), SnapshotEnsembleRegressor(tiny_reg_net(), random_state=0)),
        transformer=StandardScaler())
    grid = GridSearchCV(model, {"regressor__snapshotensembleregressor__n_snapshots": [1, 3],
                                "regressor__snapshotensembleregressor__net__lr": [0.02, 0.05]},
                        cv=2)
    grid.fit(X, y)
    assert grid.score(X, y) > 0.5
    path = tmp_path / "reg.joblib"
    joblib.dump(grid.best_estimator_, path)
    np.save(tmp_path / "X.npy", X)
    code = textwrap.dedent(f"""
        import joblib, numpy as np
        model = joblib.load({str(path)!r})
        np.save({str(tmp_path / 'p.npy')!r}, model.predict(np.load({str(tmp_path / 'X.npy')!r})))
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    assert_close_elsewhere(np.load(tmp_path / "p.npy"), grid.best_estimator_.predict(X))


def test_random_state_repeats(reg_data):
    X, Y = reg_data
    state = torch.random.get_rng_state()
    first = fit(X, Y)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(fit(X, Y).predict(X), first.predict(X))  # one process: exact
