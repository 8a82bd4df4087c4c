"""On a GPU: training on CUDA, snapshots on the CPU, CUDA = CPU predictions, CPU-only loading.

Every test here is marked ``cuda`` and skipped where ``torch.cuda.is_available()``
is False (CI has no GPU); run them on a GPU machine with ``python -m pytest -m cuda``.
"""

import os
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn

from sksnapshot import (
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_regressor_net,
    load_ensemble,
    save_ensemble,
)

from .conftest import tiny_net

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


class SmallCNN(nn.Module):
    """Conv-BN-ReLU, pooling, linear: images (N, 1, 8, 8) to logits."""

    def __init__(self, n_classes=10, channels=8, hidden=32, autocast=False):
        super().__init__()
        self.autocast = autocast
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(channels * 16, hidden), nn.ReLU(),
            nn.Linear(hidden, n_classes))

    def forward(self, X):
        if self.autocast:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.features(X).float()
        return self.features(X)


@pytest.fixture(scope="module")
def images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.data / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    return X[:600], digits.target[:600]


def _cnn_net(**overrides):
    params = dict(module=SmallCNN, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                  optimizer__momentum=0.9, lr=0.05, max_epochs=6, batch_size=64,
                  iterator_train__shuffle=True, train_split=None, verbose=0, device="cuda")
    params.update(overrides)
    return NeuralNetClassifier(**params)


def _module_bytes(module):
    return sum(t.numel() * t.element_size()
               for t in list(module.parameters()) + list(module.buffers()))


def test_fit_on_cuda_keeps_snapshots_on_the_cpu_and_one_model_on_the_gpu(images):
    X, y = images
    # A plain skorch fit first: cuBLAS/cuDNN workspaces, allocated on first use, are
    # counted by memory_allocated and are no part of the ensemble's cost.
    _cnn_net(module__channels=64, module__hidden=256, max_epochs=1).fit(X, y)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    net = _cnn_net(module__channels=64, module__hidden=256)
    clf = SnapshotEnsembleClassifier(net, n_snapshots=10, random_state=0).fit(X, y)
    assert len(clf.snapshots_) == 10
    for state in clf.snapshots_:
        assert all(t.device.type == "cpu" for t in state.values())
    model = _module_bytes(clf.net_.module_)
    held = torch.cuda.memory_allocated() - before
    # The trained module and its optimizer's momentum: about two models, never ten.
    assert held < 3 * model + 2**20, (held, model)
    assert clf.net_.module_.features[0].weight.device.type == "cuda"
    assert clf.score(X, y) > 0.8


def test_predictions_on_cuda_equal_predictions_on_the_cpu(images):
    X, y = images
    clf = SnapshotEnsembleClassifier(_cnn_net(), n_snapshots=3, random_state=0).fit(X, y)
    on_gpu = clf.predict_proba(X)
    cpu = pickle.loads(pickle.dumps(clf))
    cpu.net_.device = "cpu"
    cpu.net_.module_.to("cpu")
    np.testing.assert_allclose(cpu.predict_proba(X), on_gpu, atol=1e-5)


def test_mixed_precision_modules_train_and_predict(images):
    X, y = images
    clf = SnapshotEnsembleClassifier(_cnn_net(module__autocast=True), n_snapshots=2,
                                     random_state=0).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert clf.score(X, y) > 0.6


def test_a_cuda_trained_ensemble_loads_and_predicts_in_a_cpu_only_process(images, tmp_path):
    X, y = images
    clf = SnapshotEnsembleClassifier(_cnn_net(), n_snapshots=2, random_state=0).fit(X, y)
    expected = clf.predict_proba(X[:50])
    joblib.dump(clf, tmp_path / "clf.joblib")
    np.save(tmp_path / "X.npy", X[:50])
    code = (
        "import sys, joblib, numpy as np, torch; sys.path.insert(0, sys.argv[2]);"
        "assert not torch.cuda.is_available();"
        "clf = joblib.load(sys.argv[1] + '/clf.joblib');"
        "np.save(sys.argv[1] + '/proba.npy', clf.predict_proba(np.load(sys.argv[1] + '/X.npy')))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(tmp_path), root],
                   check=True, env=env, cwd=root, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "proba.npy"), expected, atol=1e-5)


def test_save_ensemble_from_cuda_loads_on_the_cpu(data, tmp_path):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(device="cuda"), n_snapshots=2,
                                     random_state=0).fit(X, y)
    save_ensemble(clf, tmp_path / "model")
    loaded = load_ensemble(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), atol=1e-5)


def test_regressor_on_cuda_returns_the_cpu_mean_and_std(data):
    X, y = data
    y = (y - y.mean()) / y.std()
    net = default_regressor_net(gaussian=True).set_params(
        module__hidden_layer_sizes=(16,), max_epochs=6, batch_size=32, lr=0.01, device="cuda")
    reg = SnapshotEnsembleRegressor(net, n_snapshots=3, random_state=0).fit(X, y)
    mean, std = reg.predict(X, return_std=True)
    cpu = pickle.loads(pickle.dumps(reg))
    cpu.net_.device = "cpu"
    cpu.net_.module_.to("cpu")
    cpu_mean, cpu_std = cpu.predict(X, return_std=True)
    np.testing.assert_allclose(cpu_mean, mean, atol=1e-5)
    np.testing.assert_allclose(cpu_std, std, atol=1e-5)


def test_an_exported_regressor_runs_on_cuda(data):
    """The kernel's mixture puts the member weights on the members' device."""
    X, y = data
    X, y = X.astype(np.float32), (y - y.mean()) / y.std()
    net = default_regressor_net(gaussian=True).set_params(
        module__hidden_layer_sizes=(16,), max_epochs=4, batch_size=32, lr=0.01)
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, random_state=0).fit(X, y)
    mean, std = reg.predict(X, return_std=True)
    module = reg.to_torch(return_std=True).to("cuda")
    with torch.no_grad():
        got_mean, got_std = module(torch.from_numpy(X).cuda())
    np.testing.assert_allclose(got_mean.cpu().numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(got_std.cpu().numpy(), std, atol=1e-5, rtol=1e-5)
