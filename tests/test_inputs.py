"""Deep-learning inputs as skorch takes them (issue 14): images, sequences, dicts, Datasets.

Tiny modules, the first 150 rows of digits, 2-3 epochs: each fit takes well under
a second.
"""

import io

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier
from skorch.helper import SliceDict
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

import sksnapshot._base
from sksnapshot import SnapshotEnsembleClassifier, load_ensemble, save_ensemble

N_TRAIN, N_TEST = 150, 40
NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                  "nine"])

# -- tiny modules (module level, so that joblib pickles them by reference) --------------
class TinyCNN(nn.Module):
    """conv-BN-ReLU, max-pool, linear: (n, 1, 8, 8) images -> logits."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
                                      nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Linear(4 * 4 * 4, n_classes)

    def forward(self, X):
        return self.head(self.features(X))


class TwoInputs(nn.Module):
    """A module of two inputs, ``X={"a": ..., "b": ...}`` in skorch's dict convention."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.a, self.b = nn.Linear(32, 8), nn.Linear(32, 8)
        self.head = nn.Linear(16, n_classes)

    def forward(self, a, b):
        return self.head(torch.relu(torch.cat([self.a(a), self.b(b)], dim=1)))


class TinyGRU(nn.Module):
    """A GRU over (n, T, F) sequences; the last hidden state -> logits."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(16, n_classes)

    def forward(self, X):
        return self.head(self.gru(X)[0][:, -1])


def tiny_net(module, **overrides):
    params = dict(criterion=nn.CrossEntropyLoss, lr=0.1, max_epochs=2, batch_size=32,
                  optimizer=torch.optim.SGD, optimizer__momentum=0.9, train_split=None,
                  iterator_train__shuffle=True, verbose=0)
    params.update(overrides)
    return NeuralNetClassifier(module, **params)


# -- data ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    """The first 190 digits as float32 rows of 64 pixels in [0, 1] and labels."""
    X, y = load_digits(return_X_y=True)
    return (X[:N_TRAIN + N_TEST] / 16).astype(np.float32), y[:N_TRAIN + N_TEST]


def inputs(kind, X2d, y):
    """``X2d`` (n, 64) as the input ``kind``, its labels (None: the Dataset has them) and module."""
    images = X2d.reshape(-1, 1, 8, 8)
    if kind == "images":
        return images, y, TinyCNN
    if kind == "tensor_dataset":
        return TensorDataset(torch.as_tensor(images), torch.as_tensor(y)), None, TinyCNN
    if kind == "dict":
        return SliceDict(a=X2d[:, :32], b=X2d[:, 32:]), y, TwoInputs
    if kind == "sequence":
        return X2d.reshape(-1, 8, 8), y, TinyGRU  # 8 time steps of 8 features
    raise ValueError(kind)


def bad_shape(kind, X2d):
    """Rows of ``kind`` with the wrong per-sample shape, and the expected shape's text."""
    if kind in ("images", "tensor_dataset"):
        bad = X2d.reshape(-1, 1, 4, 16)
        if kind == "tensor_dataset":
            bad = TensorDataset(torch.as_tensor(bad))
        return bad, "(1, 8, 8)"
    if kind == "dict":
        return {"a": X2d[:, :16], "b": X2d[:, 32:]}, "{'a': (32,), 'b': (32,)}"
    return X2d.reshape(-1, 4, 16), "(8, 8)"


KINDS = ["images", "tensor_dataset", "dict", "sequence"]
ARRAY_KINDS = ["images", "dict", "sequence"]


@pytest.fixture(scope="module")
def fitted(digits):
    """One fitted ensemble per input kind (built on first use), with its train and test inputs."""
    X2d, y = digits
    cache = {}

    def get(kind):
        if kind not in cache:
            X, y_fit, module = inputs(kind, X2d[:N_TRAIN], y[:N_TRAIN])
            X_test = inputs(kind, X2d[N_TRAIN:], y[N_TRAIN:])[0]
            clf = SnapshotEnsembleClassifier(tiny_net(module), n_snapshots=2, random_state=0)
            cache[kind] = clf.fit(X, y_fit), X, X_test
        return cache[kind]

    return get


# -- the snippet of the issue ----------------------------------------------------------
def test_issue_snippet_images_work_unchanged():
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype("float32").reshape(-1, 1, 8, 8)[:N_TRAIN]
    y = y[:N_TRAIN]
    clf = SnapshotEnsembleClassifier(
        NeuralNetClassifier(TinyCNN, criterion=nn.CrossEntropyLoss, lr=0.1, max_epochs=3,
                            batch_size=32), n_snapshots=3, random_state=0).fit(X, y)
    assert len(clf.snapshots_) == 3
    assert clf.sample_shape_ == (1, 8, 8)
    assert not hasattr(clf, "n_features_in_")  # a width describes 2-D rows only
    proba = clf.predict_proba(X[:10])
    assert proba.shape == (10, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert set(clf.predict(X)) <= set(clf.classes_)
    assert clf.validation_scores_["accuracy"].shape == (3,)


# -- every input kind ----------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_predict_proba_rows_sum_to_one(fitted, kind):
    clf, X, X_test = fitted(kind)
    proba = clf.predict_proba(X_test)
    assert proba.shape == (N_TEST, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X_test), clf.classes_[proba.argmax(axis=1)])
    staged = list(clf.staged_predict_proba(X_test))
    assert len(staged) == len(clf.members_)
    np.testing.assert_allclose(staged[-1], proba, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_joblib_round_trip_predicts_identically(fitted, kind):
    clf, _, X_test = fitted(kind)
    buffer = io.BytesIO()
    joblib.dump(clf, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))
    assert loaded.sample_shape_ == clf.sample_shape_


@pytest.mark.parametrize("kind", KINDS)
def test_save_ensemble_round_trip(fitted, kind, digits, tmp_path):
    clf, _, X_test = fitted(kind)
    save_ensemble(clf, tmp_path)
    loaded = load_ensemble(tmp_path, modules=[TinyCNN, TwoInputs, TinyGRU])
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))
    bad, expected = bad_shape(kind, digits[0][N_TRAIN:])
    with pytest.raises(ValueError, match=f"fitted on samples of shape {expected}".replace(
            "(", r"\(").replace(")", r"\)")):
        loaded.predict(bad)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_sample_shape_at_predict_names_the_expected_shape(fitted, kind, digits):
    clf, _, _ = fitted(kind)
    bad, expected = bad_shape(kind, digits[0][N_TRAIN:])
    for method in (clf.predict, clf.predict_proba):
        with pytest.raises(ValueError) as info:
            method(bad)
        assert f"fitted on samples of shape {expected}" in str(info.value)


def test_flat_rows_for_an_image_model_name_the_image_shape(fitted, digits):
    clf, _, _ = fitted("images")
    with pytest.raises(ValueError, match=r"shape \(64,\).*shape \(1, 8, 8\)"):
        clf.predict(digits[0][:5])


@pytest.mark.parametrize("kind", ARRAY_KINDS)
def test_grid_search_over_n_snapshots(digits, kind):
    X2d, y = digits
    X, y, module = inputs(kind, X2d[:120], y[:120])
    search = GridSearchCV(
        SnapshotEnsembleClassifier(tiny_net(module), random_state=0),
        {"n_snapshots": [1, 2]}, cv=2, error_score="raise",
    ).fit(X, y)
    assert search.best_params_["n_snapshots"] in (1, 2)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.predict_proba(X).shape == (120, 10)


# -- Datasets ----------------------------------------------------------------------------
class CountingImages(Dataset):
    """Images with labels in ``targets`` (as torchvision's), counting ``__getitem__`` calls.

    Items are ``(image, -1)``: labels can only be right if read from ``targets``.
    ``augment`` adds a random shift and noise to every item, as a training
    transform would, and counts the rows it changed.
    """

    def __init__(self, images, targets, augment=False):
        self.images, self.targets, self.augment = images, np.asarray(targets), augment
        self.calls = 0
        self.augmented = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.calls += 1
        x = torch.as_tensor(self.images[i])
        if self.augment:
            shift = int(torch.randint(-1, 2, ()))
            x = torch.roll(x, shifts=shift, dims=-1) + 0.1 * torch.randn_like(x)
            self.augmented += 1
        return x, -1


def test_tensor_dataset_without_y_reads_its_labels(fitted, digits):
    clf, dataset, _ = fitted("tensor_dataset")
    np.testing.assert_array_equal(clf.classes_, np.unique(digits[1][:N_TRAIN]))
    assert clf.predict(dataset).shape == (N_TRAIN,)


def test_tensor_dataset_with_default_validation_split(digits):
    X2d, y = digits
    dataset = TensorDataset(torch.as_tensor(X2d[:N_TRAIN].reshape(-1, 1, 8, 8)),
                            torch.as_tensor(y[:N_TRAIN]))
    clf = SnapshotEnsembleClassifier(tiny_net(TinyCNN), n_snapshots=2, random_state=0)
    clf.fit(dataset)
    assert clf.validation_scores_ is not None


def test_string_labels_from_targets_map_through_classes(digits):
    X2d, y = digits
    names = NAMES[y[:N_TRAIN]]
    dataset = CountingImages(X2d[:N_TRAIN].reshape(-1, 1, 8, 8), names)
    clf = SnapshotEnsembleClassifier(tiny_net(TinyCNN, max_epochs=2), n_snapshots=2,
                                     validation_fraction=0.0, random_state=0).fit(dataset)
    np.testing.assert_array_equal(clf.classes_, np.unique(names))  # not the items' -1
    predicted = clf.predict(dataset)
    assert predicted.dtype.kind == "U" and set(predicted) <= set(NAMES)
    # select() reads the labels of a Dataset the same way and encodes them via classes_.
    clf.select(dataset)
    assert clf.validation_scores_["accuracy"].shape == (2,)
    unknown = CountingImages(X2d[:4].reshape(-1, 1, 8, 8), ["ten"] * 4)
    with pytest.raises(ValueError, match="not seen during fit"):
        clf.select(unknown)


class _Stop(Exception):
    pass


def test_dataset_validation_split_is_stratified_index_subsets(digits, monkeypatch):
    """The split hands skorch Subsets of the very Dataset, and no sample was loaded for it."""
    X2d, y = digits
    names = NAMES[y[:N_TRAIN]]
    dataset = CountingImages(X2d[:N_TRAIN].reshape(-1, 1, 8, 8), names)
    seen = {}

    def capture(estimator, net, train, valid, **kwargs):
        seen.update(train=train, valid=valid, calls=dataset.calls)
        raise _Stop

    monkeypatch.setattr(sksnapshot._base, "train_once", capture)
    clf = SnapshotEnsembleClassifier(tiny_net(TinyCNN), validation_fraction=0.2,
                                     random_state=0)
    with pytest.raises(_Stop):
        clf.fit(dataset)
    (train, y_train), (valid, y_valid) = seen["train"], seen["valid"]
    assert y_train is None and y_valid is None  # the labels travel inside the Subsets
    assert isinstance(train, Subset) and isinstance(valid, Subset)
    assert train.dataset.dataset is dataset and valid.dataset.dataset is dataset
    train_idx, valid_idx = np.asarray(train.indices), np.asarray(valid.indices)
    assert not set(train_idx) & set(valid_idx)
    assert sorted([*train_idx, *valid_idx]) == list(range(N_TRAIN))
    assert len(valid_idx) == 30
    # stratified: every class's share of validation rows is close to 20 %
    counts = np.bincount(y[:N_TRAIN][valid_idx], minlength=10)
    totals = np.bincount(y[:N_TRAIN], minlength=10)
    assert np.all(np.abs(counts - 0.2 * totals) <= 1)
    # only dataset[0] (the per-sample shape) was loaded: no pass over the data, no copy
    assert seen["calls"] <= 1
    # and the Subsets' items carry the encoded labels
    x, label = valid[0]
    assert x.shape == (1, 8, 8) and clf.classes_[label] == names[valid_idx[0]]


def test_X_valid_with_arrays_on_an_unfitted_estimator(digits):
    X2d, y = digits
    X = X2d.reshape(-1, 1, 8, 8)
    clf = SnapshotEnsembleClassifier(tiny_net(TinyCNN), n_snapshots=2, random_state=0)
    clf.fit(X[:120], y[:120], X_valid=X[120:N_TRAIN], y_valid=y[120:N_TRAIN])
    assert clf.validation_scores_["accuracy"].shape == (2,)


def test_augmented_training_dataset_validates_on_clean_rows(digits):
    """The recipe: random transforms in the training Dataset, clean rows as X_valid."""
    X2d, y = digits
    images, names = X2d.reshape(-1, 1, 8, 8), NAMES[y]
    train = CountingImages(images[:120], names[:120], augment=True)
    valid = CountingImages(images[120:N_TRAIN], names[120:N_TRAIN])
    clf = SnapshotEnsembleClassifier(tiny_net(TinyCNN, max_epochs=2), n_snapshots=2,
                                     random_state=0)
    clf.fit(train, X_valid=valid)
    assert valid.calls > 0 and valid.augmented == 0  # validation rows came from `valid`
    # every augmented item is a training row: 2 epochs of 120 rows, plus the few
    # items read for the per-sample shape and the output check
    assert 2 * 120 <= train.augmented <= 2 * 120 + 4
    scores = {k: v.copy() for k, v in clf.validation_scores_.items()}
    # the same scores as choosing again on the clean validation images as arrays
    clf.select(images[120:N_TRAIN], names[120:N_TRAIN])
    for key in scores:
        np.testing.assert_allclose(scores[key], clf.validation_scores_[key], rtol=1e-6)
