"""to_torch(): a plain torch module computing predict_proba / predict, traceable and exportable."""

import copy
import inspect
import pickle

import numpy as np
import onnxruntime
import pytest
import torch
from sklearn.datasets import make_regression
from sklearn.exceptions import NotFittedError
from skorch import NeuralNetClassifier

from sksnapshot import (
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_classifier_net,
    default_regressor_net,
)

from .conftest import TokensAndFeatures, tiny_net

BATCH = torch.export.Dim("batch")


class BatchNormCNN(torch.nn.Module):
    """A tiny image classifier with BatchNorm (whose statistics eval mode must use)."""

    def __init__(self, n_classes=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4 * 4 * 4, n_classes)

    def forward(self, X):
        return self.head(torch.relu(self.bn(self.conv(X))).flatten(1))


def _fit_classifier(X, y, net=None, **params):
    params = {"n_snapshots": 2, "random_state": 0, **params}
    return SnapshotEnsembleClassifier(net or tiny_net(max_epochs=4), **params).fit(X, y)


@pytest.fixture(scope="module")
def clf(data):
    X, y = data
    return _fit_classifier(X.astype(np.float32), y)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    X = (rng.normal(size=(120, 1, 6, 6)) + y[:, None, None, None]).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def cnn(images):
    net = default_classifier_net(BatchNormCNN).set_params(max_epochs=3, batch_size=32, lr=0.05)
    return _fit_classifier(*images, net=net)


@pytest.fixture(scope="module")
def dict_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    X = {"ids": rng.integers(0, 7, size=(120, 4)),
         "x": (rng.normal(size=(120, 2)) + y[:, None]).astype(np.float32)}
    return X, y


def _tensors(X):
    return {k: torch.as_tensor(v) for k, v in X.items()}


def _exported(module, example, rows):
    """``torch.export`` and ONNX programs of ``module`` (dynamic batch), run on ``rows``."""
    shapes = {name: {0: BATCH} for name in example}
    program = torch.export.export(module, (), kwargs=_tensors(example), dynamic_shapes=shapes)
    exported = program.module()(**_tensors(rows))
    onnx_program = torch.onnx.export(module, (), kwargs=_tensors(example),
                                     dynamic_shapes=shapes, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(onnx_program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    # ONNX names the inputs after forward's parameters (lower-cased), in their order.
    order = [rows[name] for name in inspect.signature(module.forward).parameters]
    onnx_out = session.run(None, {i.name: np.asarray(v)
                                  for i, v in zip(session.get_inputs(), order)})
    return exported, onnx_out


def test_classifier_matches_predict_proba(clf, data):
    X = data[0].astype(np.float32)
    module = clf.to_torch()
    assert isinstance(module, torch.nn.Module) and not module.training
    np.testing.assert_allclose(module(torch.from_numpy(X)).numpy(), clf.predict_proba(X),
                               atol=1e-5)


def test_temperature_is_applied(clf, data):
    X = data[0].astype(np.float32)
    hot = copy.deepcopy(clf)
    hot.temperature_ = 2.5
    p = hot.to_torch()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(p, hot.predict_proba(X), atol=1e-5)
    assert not np.allclose(p, clf.predict_proba(X), atol=1e-3)


def test_combine_weights_is_one_model(data):
    X, y = data[0].astype(np.float32), data[1]
    clf = _fit_classifier(X, y, combine="weights")
    module = clf.to_torch()
    assert len(module.members) == 1
    np.testing.assert_allclose(module(torch.from_numpy(X)).numpy(), clf.predict_proba(X),
                               atol=1e-5)


def test_batchnorm_cnn_in_eval_mode(cnn, images):
    X = images[0]
    module = cnn.to_torch()
    module.train()  # stays an inference module: BatchNorm keeps its running statistics
    assert not any(m.training for m in module.modules())
    np.testing.assert_allclose(module(torch.from_numpy(X)).numpy(), cnn.predict_proba(X),
                               atol=1e-5)


def test_dict_inputs_become_keyword_arguments(dict_data):
    X, y = dict_data
    net = default_classifier_net(TokensAndFeatures).set_params(max_epochs=3, batch_size=16)
    clf = _fit_classifier(X, y, net=net)
    module = clf.to_torch()
    expected = clf.predict_proba(X)
    np.testing.assert_allclose(module(**_tensors(X)).numpy(), expected, atol=1e-5)
    # The signature names the inputs (in the module's order), so positional calls work too.
    np.testing.assert_allclose(module(torch.as_tensor(X["ids"]), torch.as_tensor(X["x"])),
                               expected, atol=1e-5)
    # A class made for the input names survives pickle and deepcopy.
    for copied in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        np.testing.assert_allclose(copied(**_tensors(X)).numpy(), expected, atol=1e-5)
    exported, onnx_out = _exported(module, {k: v[:8] for k, v in X.items()},
                                   {k: v[:5] for k, v in X.items()})
    np.testing.assert_allclose(exported.numpy(), expected[:5], atol=1e-4)
    np.testing.assert_allclose(onnx_out[0], expected[:5], atol=1e-4)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_export_and_onnx_match_on_another_batch_size(model, clf, cnn, data, images):
    estimator, X = (clf, data[0].astype(np.float32)) if model == "mlp" else (cnn, images[0])
    expected = estimator.predict_proba(X[:5])
    exported, onnx_out = _exported(estimator.to_torch(), {"X": X[:8]}, {"X": X[:5]})
    np.testing.assert_allclose(exported.numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(onnx_out[0], expected, atol=1e-4)


@pytest.mark.parametrize("gaussian", [False, True])
def test_regressor_mean_and_std(gaussian):
    X, y = make_regression(n_samples=100, n_features=4, n_targets=2, noise=5.0, random_state=0)
    X, y = X.astype(np.float32), y / y.std()
    net = default_regressor_net(gaussian=gaussian).set_params(
        max_epochs=4, lr=0.01, module__hidden_layer_sizes=(16,))
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, random_state=0).fit(X, y)
    mean, std = reg.predict(X, return_std=True)
    assert reg.variance_scale_ != 1.0 and std.min() > 0
    np.testing.assert_allclose(reg.to_torch()(torch.from_numpy(X)).numpy(), mean, atol=1e-5)
    module = reg.to_torch(return_std=True)
    got_mean, got_std = module(torch.from_numpy(X))
    np.testing.assert_allclose(got_mean.numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(got_std.numpy(), std, atol=1e-5, rtol=1e-5)
    exported, onnx_out = _exported(module, {"X": X[:8]}, {"X": X[:5]})
    for got in (exported, onnx_out):
        np.testing.assert_allclose(np.asarray(got[0]), mean[:5], atol=1e-4)
        np.testing.assert_allclose(np.asarray(got[1]), std[:5], atol=1e-4, rtol=1e-4)


def test_single_target_is_one_dimensional():
    X, y = make_regression(n_samples=60, n_features=3, noise=1.0, random_state=0)
    X, y = X.astype(np.float32), y / y.std()
    net = default_regressor_net().set_params(max_epochs=2, lr=0.01)
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, random_state=0).fit(X, y)
    mean, std = reg.to_torch(return_std=True)(torch.from_numpy(X))
    assert mean.shape == std.shape == (60,)
    np.testing.assert_allclose(std.numpy(), reg.predict(X, return_std=True)[1], atol=1e-5)


def test_module_is_a_copy(clf, data):
    X = data[0].astype(np.float32)
    before = clf.predict_proba(X)
    module = clf.to_torch()
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    # The estimator's own weights, untouched, in one process: bit for bit.
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_not_fitted_and_custom_infer(clf):
    with pytest.raises(NotFittedError, match="not fitted"):
        SnapshotEnsembleClassifier().to_torch()
    with pytest.raises(NotFittedError, match="not fitted"):
        SnapshotEnsembleRegressor().to_torch(return_std=True)

    class OwnInfer(NeuralNetClassifier):
        def infer(self, x, **fit_params):
            return super().infer(x, **fit_params) * 2

    odd = copy.deepcopy(clf)
    odd.net_.__class__ = OwnInfer
    with pytest.raises(ValueError, match="overrides infer"):
        odd.to_torch()
