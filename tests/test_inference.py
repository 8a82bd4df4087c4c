"""The one inference path: equal to skorch's own prediction, safe from threads, fast data path."""

import copy
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.dataset import Dataset

from sksnapshot import (
    MLPModule,
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_regressor_net,
)
from sksnapshot._inference import inference_batch_size
from sksnapshot._loader import batch_loader
from sksnapshot.calibration import apply_temperature

from .conftest import tiny_net


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return SnapshotEnsembleClassifier(tiny_net(max_epochs=8, module__batch_norm=True),
                                      n_snapshots=4, random_state=0).fit(X, y)


def _reference_proba(clf, X):
    """The weighted mean of the members' probabilities through skorch's predict_proba."""
    net = copy.deepcopy(clf.net_)
    total = 0.0
    for index, weight in zip(clf.members_, clf.weights_):
        net.module_.load_state_dict(clf.snapshots_[index])
        total = total + weight * net.predict_proba(X.astype(np.float32)).astype(np.float64)
    return apply_temperature(np.log(total), clf.temperature_)


def test_predict_proba_equals_skorch_member_by_member(fitted, data):
    X, _ = data
    np.testing.assert_allclose(fitted.predict_proba(X), _reference_proba(fitted, X), atol=1e-6)


def test_prediction_leaves_the_trained_module_alone(fitted, data):
    X, _ = data
    module = fitted.net_.module_
    before = {k: v.clone() for k, v in module.state_dict().items()}
    training = module.training
    fitted.predict_proba(X)
    fitted.staged_predict_proba(X).__next__()
    assert module.training == training
    for key, value in module.state_dict().items():
        # Untouched, not recomputed: bit for bit.
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_the_net_s_inference_batch_size_is_used_and_changes_no_result(data, batch_size):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(iterator_valid__batch_size=batch_size),
                                     n_snapshots=2, random_state=0).fit(X, y)
    assert inference_batch_size(clf.net_, X) == batch_size
    np.testing.assert_allclose(clf.predict_proba(X), _reference_proba(clf, X), atol=1e-6)


def test_default_inference_batches_are_large_but_bounded():
    net = tiny_net()
    assert inference_batch_size(net, np.zeros((10_000, 8), np.float32)) == 4096
    # 1 MiB per image: 16 rows fit in 16 MiB, but never fewer than the training batch.
    assert inference_batch_size(net, np.zeros((40, 1, 512, 512), np.float32)) == 32


def test_threads_get_the_sequential_results(fitted, data):
    X, _ = data
    expected = fitted.predict_proba(X)
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(20):
            results = list(pool.map(lambda _: fitted.predict_proba(X), range(8)))
            for result in results:
                # The same members and code in one process, on any thread: bit for bit.
                np.testing.assert_array_equal(result, expected)


def test_regressor_threads_get_the_sequential_mean_and_std(data):
    X, y = data
    y = (y - y.mean()).astype(np.float64)
    net = default_regressor_net(gaussian=True).set_params(
        module__hidden_layer_sizes=(16,), max_epochs=6, batch_size=32, lr=0.01)
    reg = SnapshotEnsembleRegressor(net, n_snapshots=3, random_state=0).fit(X, y)
    mean, std = reg.predict(X, return_std=True)
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(20):
            for m, s in pool.map(lambda _: reg.predict(X, return_std=True), range(8)):
                # The same members and code in one process, on any thread: bit for bit.
                np.testing.assert_array_equal(m, mean)
                np.testing.assert_array_equal(s, std)


class _LoggingInfer(NeuralNetClassifier):
    """A net whose own ``infer`` scales the logits (and counts its calls)."""

    calls = 0

    def infer(self, x, **fit_params):
        type(self).calls += 1
        return super().infer(x, **fit_params) * 2.0


def test_a_custom_infer_is_honoured(data):
    X, y = data
    net = _LoggingInfer(MLPModule, module__hidden_layer_sizes=(16,), max_epochs=4,
                        batch_size=32, lr=0.1, criterion=torch.nn.CrossEntropyLoss,
                        train_split=None, verbose=0)
    clf = SnapshotEnsembleClassifier(net, n_snapshots=2, random_state=0).fit(X, y)
    before = _LoggingInfer.calls
    proba = clf.predict_proba(X)
    assert _LoggingInfer.calls > before
    np.testing.assert_allclose(proba, _reference_proba(clf, X), atol=1e-6)


def test_a_custom_predict_nonlinearity_is_honoured(data):
    X, y = data

    def tempered_softmax(logits):
        return torch.softmax(logits / 3.0, dim=-1)

    clf = SnapshotEnsembleClassifier(tiny_net(predict_nonlinearity=tempered_softmax),
                                     n_snapshots=2, random_state=0).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(X), _reference_proba(clf, X), atol=1e-6)


class _PlainDataset(Dataset):
    """skorch's Dataset under another class: the estimator leaves its loading alone."""


def test_batch_indexed_training_gives_the_same_snapshots(data):
    X, y = data
    fast = SnapshotEnsembleClassifier(tiny_net(module__dropout=0.2), n_snapshots=2,
                                      random_state=3).fit(X, y)
    plain = SnapshotEnsembleClassifier(tiny_net(module__dropout=0.2, dataset=_PlainDataset),
                                       n_snapshots=2, random_state=3).fit(X, y)
    assert plain.net_.iterator_train is torch.utils.data.DataLoader
    assert fast.net_.iterator_train is not torch.utils.data.DataLoader
    for a, b in zip(fast.snapshots_, plain.snapshots_):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_a_dataloader_option_keeps_the_same_snapshots(data):
    """Worker, pinning or collation options send the whole batches through a DataLoader."""
    X, y = data
    fast = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=2, random_state=3).fit(X, y)
    loader = SnapshotEnsembleClassifier(tiny_net(iterator_train__num_workers=0),
                                        n_snapshots=2, random_state=3).fit(X, y)
    # The same batches through the same steps in one process: bit for bit.
    for a, b in zip(fast.snapshots_, loader.snapshots_):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("shuffle, drop_last", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("kind", ["float", "int", "dict", "no y", "tensor", "generator",
                                  "workers", "read-only"])
def test_batch_loader_yields_what_a_dataloader_yields(kind, shuffle, drop_last):
    rng = np.random.RandomState(0)
    X = rng.randn(45, 3).astype(np.float32)
    y = rng.randint(0, 3, 45)
    X = {"int": rng.randint(0, 9, (45, 2, 2)), "dict": {"a": X, "b": X[:, :1] * 2},
         "tensor": torch.as_tensor(X)}.get(kind, X)
    if kind == "read-only":  # a memory map, or joblib's copy for a worker process
        X.flags.writeable = False
        y.flags.writeable = False
    dataset = Dataset(X, None if kind == "no y" else y)

    def batches(make):
        torch.manual_seed(7)
        options = {"generator": torch.Generator().manual_seed(3)} if kind == "generator" else {}
        if kind == "workers" and make is batch_loader:
            options["num_workers"] = 0  # any DataLoader option: batches through a DataLoader
        with warnings.catch_warnings():
            # Ours must not warn (torch warns when it shares a read-only array);
            # the per-row DataLoader does, for read-only rows.
            warnings.simplefilter("error" if make is batch_loader else "ignore")
            loader = make(dataset, batch_size=8, shuffle=shuffle, drop_last=drop_last,
                          **options)
            # The draws after the loader's: dropout in the steps between batches.
            return [(batch, torch.rand(1)) for _ in range(2) for batch in loader]

    ours, reference = batches(batch_loader), batches(torch.utils.data.DataLoader)
    assert len(ours) == len(reference) == len(batch_loader(
        dataset, batch_size=8, shuffle=shuffle, drop_last=drop_last)) * 2
    # Rows copied from the data, not computed, and one seeded RNG stream: exact.
    for ((xa, ya), after_a), ((xb, yb), after_b) in zip(ours, reference):
        assert after_a == after_b
        if kind == "dict":
            assert xa.keys() == xb.keys()
            for key in xa:
                torch.testing.assert_close(xa[key], xb[key], rtol=0, atol=0)
        else:
            torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        if kind == "no y":
            torch.testing.assert_close(ya, torch.Tensor([0]))
        else:
            torch.testing.assert_close(ya, yb, rtol=0, atol=0)


def test_a_fitted_net_is_freed_once_its_estimator_is(data):
    import gc
    import weakref

    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=2, random_state=0).fit(X, y)
    clf.predict_proba(X)  # creates the net's inference runner
    net = weakref.ref(clf.net_)
    del clf
    gc.collect()
    assert net() is None
