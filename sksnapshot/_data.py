"""Data helpers shared by the estimators: accepted inputs, the validation split, seeding."""

import contextlib
import math
import warnings
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import validate_data
from skorch.dataset import Dataset as SkorchDataset
from skorch.utils import is_dataset
from torch.utils.data import (
    DataLoader,
    Subset,
    TensorDataset,
)

__all__ = ["validation_split", "torch_seed", "check_inputs", "n_samples", "dataset_targets",
           "LabelledDataset", "take_rows", "batch_loader", "is_dict_input",
           "is_nd_input", "warn_small_split"]


def validation_split(y, fraction, rng):
    """Split row indices into stratified training and validation parts.

    Rows of classes with fewer than two members always stay in training, and
    every class keeps at least one training row: a class too small to split
    never makes the fit fail, it just contributes no validation row.

    Parameters
    ----------
    y : ndarray of int of shape (n_samples,)
        Encoded labels (0 .. n_classes - 1).
    fraction : float in [0, 1)
        Share of the rows to hold out.
    rng : numpy.random.RandomState
        Source of randomness.

    Returns
    -------
    train, valid : ndarray of int
        Sorted row indices; ``valid`` is empty when ``fraction`` is 0 or too
        few rows can be spared.
    """
    n_samples = len(y)
    if fraction == 0:
        return np.arange(n_samples), np.arange(0)
    counts = np.bincount(y)
    candidates = np.flatnonzero(counts[y] >= 2)
    n_candidate_classes = np.count_nonzero(counts >= 2)
    n_valid = min(math.ceil(fraction * n_samples), len(candidates) - n_candidate_classes)
    if n_valid < 1:
        return np.arange(n_samples), np.arange(0)
    try:
        _, valid = train_test_split(
            candidates, test_size=n_valid, stratify=y[candidates], random_state=rng
        )
    except ValueError:
        # Fewer validation rows than classes: one row each from n_valid classes.
        classes = rng.choice(np.flatnonzero(counts >= 2), n_valid, replace=False)
        valid = np.array([rng.choice(np.flatnonzero(y == c)) for c in classes])
    valid = np.sort(valid)
    return np.setdiff1d(np.arange(n_samples), valid), valid


# Below this many rows a split is too small to train on, or to choose members on:
# one row moves a validation score by 10% or more.
MIN_ROWS = 10


def warn_small_split(n_train, n_valid, data_driven):
    """Warn when fewer than ``MIN_ROWS`` rows train, or choose members by their scores."""
    if n_train < MIN_ROWS:
        warnings.warn(
            f"Only {n_train} rows remain for training ({n_valid} are held out for "
            f"validation); fewer than {MIN_ROWS} rows hardly train a net. Lower "
            "validation_fraction or give more data.",
            UserWarning, stacklevel=5,
        )
    if data_driven and 0 < n_valid < MIN_ROWS:
        warnings.warn(
            f"Only {n_valid} validation rows choose the members and their weights; with "
            f"fewer than {MIN_ROWS} the choice is noisy (one row moves a score by 10% or "
            "more). Raise validation_fraction, pass X_valid, or use selection='all' "
            "(or 'last') with weighting='uniform'.",
            UserWarning, stacklevel=5,
        )


@contextlib.contextmanager
def torch_seed(seed):
    """Seed torch inside the block and restore the caller's RNG state after it.

    ``seed=None`` leaves torch's global random state alone, so a user's own
    ``torch.manual_seed`` keeps working.
    """
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# -- what the estimators accept -------------------------------------------------------
def is_dict_input(X):
    """A dict of input arrays (skorch's multi-input convention); sparse DOK matrices are not."""
    return isinstance(X, Mapping) and not sp.issparse(X)


def is_nd_input(X):
    """Inputs that skip scikit-learn's 2-D validation: Datasets, dicts, arrays of rank >= 3."""
    return is_dataset(X) or is_dict_input(X) or (_is_array(X) and X.ndim >= 3)


def _is_array(X):
    return isinstance(X, (np.ndarray, torch.Tensor))


def _as_numeric_array(value, name, min_ndim):
    """``value`` as a NumPy array of numbers: floats as float32, integers kept (e.g. token ids)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions (samples first), got shape "
            f"{array.shape}."
        )
    if array.dtype.kind == "f":
        array = array.astype(np.float32, copy=False)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or infinity.")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold numbers, got dtype {array.dtype}.")
    if len(array) == 0:
        raise ValueError(f"{name} has 0 samples; at least 1 is required.")
    # torch.as_tensor warns on read-only arrays (e.g. memory maps) and needs strides it knows.
    return np.require(array, requirements=["C", "W"])


def _sample_shape(item):
    """The per-sample shape of one input: a tuple, a dict of tuples, or None if unknown."""
    if isinstance(item, Mapping):
        return {key: _sample_shape(value) for key, value in item.items()}
    shape = getattr(item, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def _dataset_sample_shape(dataset):
    item = dataset[0]
    return _sample_shape(item[0] if isinstance(item, (tuple, list)) else item)


def _describe(shape):
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in shape.items()) + "}"
    return str(shape)


def _validated_already(estimator, X):
    """Whether ``X`` is what ``validate_data`` would return unchanged: then skip its cost.

    A C-contiguous, writeable, finite float32 2-D array of the fitted width,
    for an estimator fitted without feature names. Anything else (and every
    error) goes through scikit-learn's ``validate_data``; at small batches its
    checks cost as much as the members' forward passes.
    """
    return (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype == np.float32
            and X.flags.c_contiguous and X.flags.writeable and X.shape[0] > 0
            and not hasattr(estimator, "feature_names_in_")
            and X.shape[1] == getattr(estimator, "n_features_in_", None)
            and bool(np.isfinite(X).all()))


def check_inputs(estimator, X, *, reset):
    """Validate ``X`` as skorch takes it; return it ready for training or prediction.

    2-D array-likes go through scikit-learn's ``validate_data`` (float32,
    feature names, ``n_features_in_``). Arrays and tensors of rank >= 3
    (images, sequences) and dicts of arrays (multi-input modules) are checked
    for numbers, finite values and equal numbers of rows; floats become
    float32, integers are kept. A ``torch.utils.data.Dataset`` is used as it
    is. The per-sample shape is remembered in ``fit`` (``sample_shape_``) and
    checked at prediction.
    """
    if is_dataset(X):
        if len(X) == 0:
            raise ValueError("The Dataset X has 0 samples; at least 1 is required.")
        shape = _dataset_sample_shape(X)
    elif is_dict_input(X):
        if not X:
            raise ValueError("X is an empty dict; give at least one input array.")
        X = {key: _as_numeric_array(value, f"X[{key!r}]", 1) for key, value in X.items()}
        lengths = {key: len(value) for key, value in X.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"The arrays of the dict X have different numbers of rows: {lengths}.")
        shape = _sample_shape({key: value[0] for key, value in X.items()})
    elif _is_array(X) and X.ndim >= 3:
        X = _as_numeric_array(X, "X", 3)
        shape = tuple(X.shape[1:])
    elif not reset and _validated_already(estimator, X):
        shape = tuple(X.shape[1:])
    else:
        X = validate_data(estimator, X, dtype=np.float32, reset=reset)
        X = np.require(X, requirements=["C", "W"])
        shape = tuple(X.shape[1:])
    if reset:
        if not (_is_array(X) and X.ndim == 2):
            # n_features_in_ and feature names describe 2-D inputs only.
            for name in ("n_features_in_", "feature_names_in_"):
                estimator.__dict__.pop(name, None)
        estimator.sample_shape_ = shape
    else:
        expected = getattr(estimator, "sample_shape_", None)
        if shape is not None and expected is not None and shape != expected:
            raise ValueError(
                f"X has samples of shape {_describe(shape)}, but "
                f"{type(estimator).__name__} was fitted on samples of shape "
                f"{_describe(expected)}."
            )
    return X


def n_samples(X):
    """Number of rows of an input accepted by :func:`check_inputs`."""
    if is_dict_input(X):
        return len(next(iter(X.values())))
    return X.shape[0] if sp.issparse(X) else len(X)


def dataset_targets(dataset):
    """The targets of a Dataset's items, without loading samples where it can.

    A ``targets`` attribute (torchvision's datasets), a skorch Dataset's ``y``,
    the second tensor of a ``TensorDataset`` and a ``Subset`` of any of these
    are read directly; otherwise one pass over the items reads ``item[1]``.
    """
    if isinstance(dataset, Subset):
        return np.asarray(dataset_targets(dataset.dataset))[np.asarray(dataset.indices)]
    for found in (getattr(dataset, "targets", None),
                  getattr(dataset, "y", None) if isinstance(dataset, SkorchDataset) else None,
                  dataset.tensors[1] if isinstance(dataset, TensorDataset)
                  and len(dataset.tensors) > 1 else None):
        if found is not None:
            return _to_numpy(found)
    targets = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(
                "The Dataset's items are not (X, y) pairs, so its labels cannot be read; "
                "pass them as y."
            )
        targets.append(_to_numpy(item[1]))
    return np.stack(targets)


def _to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class LabelledDataset(torch.utils.data.Dataset):
    """The inputs of ``dataset``'s items with the estimator's own (encoded) targets.

    Lets a Dataset with labels of any type (or labels given as ``y``) train
    with the encoded targets skorch needs, without copying any sample.
    """

    def __init__(self, dataset, y):
        self.dataset = dataset
        self.y = y

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        return (item[0] if isinstance(item, (tuple, list)) else item), self.y[i]


def take_rows(X, y, indices):
    """Rows ``indices`` of ``X`` and ``y`` as a skorch Dataset-ready pair, or one Dataset.

    Arrays and dicts are indexed (a copy); a Dataset becomes a ``Subset`` of
    a :class:`LabelledDataset` (no copy) and ``y`` None.
    """
    if is_dataset(X):
        return Subset(LabelledDataset(X, y), np.asarray(indices).tolist()), None
    return _take(X, indices), y[indices]


# -- batches fetched whole --------------------------------------------------------------
def _take(data, indices):
    if isinstance(data, dict):
        return {key: _take(value, indices) for key, value in data.items()}
    return data[indices]


def _indexable(data):
    """NumPy arrays, tensors and dicts of them: what :class:`_WholeBatches` indexes itself."""
    if isinstance(data, dict):
        return all(_indexable(value) for value in data.values())
    return isinstance(data, (np.ndarray, torch.Tensor))


def _as_tensors(data):
    """``data`` with its arrays as tensors sharing their memory, as ``default_convert`` makes them.

    Arrays of strings or objects stay NumPy arrays, as ``default_convert`` leaves them;
    so do read-only arrays (memory maps, joblib's copies for worker processes), which
    torch would share only with a warning: each batch of them is converted instead.
    """
    if isinstance(data, dict):
        return {key: _as_tensors(value) for key, value in data.items()}
    if isinstance(data, np.ndarray) and data.dtype.kind not in "SaUO" and data.flags.writeable:
        return torch.as_tensor(data)
    return data


def _take_rows(data, rows, indices):
    if isinstance(data, dict):
        return {key: _take_rows(value, rows, indices) for key, value in data.items()}
    return data[rows] if isinstance(data, torch.Tensor) else _as_tensors(data[indices])


class _WholeBatches(torch.utils.data.Dataset):
    """skorch's ``Dataset`` of in-memory arrays, indexed by a whole batch of rows at once.

    The arrays are turned into tensors once (as ``default_convert`` would turn
    each batch); a batch is one indexing step.
    """

    def __init__(self, dataset):
        self.n = len(dataset)
        self.X = _as_tensors(dataset.X)
        self.y = None if dataset.y is None else _as_tensors(dataset.y)

    def __len__(self):
        return self.n

    def __getitem__(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        rows = torch.from_numpy(indices)
        # skorch's placeholder for a missing y (see skorch.dataset.Dataset.transform).
        return (_take_rows(self.X, rows, indices),
                torch.Tensor([0]) if self.y is None else _take_rows(self.y, rows, indices))


class _InMemoryBatches:
    """The batches of ``DataLoader(_WholeBatches(dataset), sampler, batch_size=None)``.

    The same tensors in the same order, without the ``DataLoader``'s
    per-batch machinery (fetcher, profiler scope, conversion of every
    batch). Used when no worker, pinning or collation option asks for a real
    ``DataLoader``.
    """

    def __init__(self, batches, sampler):
        self.batches, self.sampler = batches, sampler

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        # A DataLoader's iterator draws its workers' base seed first: the same
        # draw keeps every later one (shuffling, dropout) where it would be.
        torch.empty((), dtype=torch.int64).random_(generator=self.sampler.generator)
        for indices in self.sampler:
            yield self.batches[indices]


def batch_loader(dataset, batch_size=128, shuffle=False, drop_last=False, **kwargs):
    """An iterable of batches that fetches each batch of in-memory rows with one index array.

    For skorch's own ``Dataset`` of NumPy arrays, tensors or dicts of them, a
    sampler of whole batches of indices replaces the per-row ``__getitem__``
    and collation by one indexing step per batch. The random draws, hence the
    order of the rows, are those of ``DataLoader(dataset, batch_size,
    shuffle)``. With other ``DataLoader`` options (workers, pinned memory, a
    ``collate_fn``, ...) the batches go through a ``DataLoader``
    (``batch_size=None``, the sampler yielding whole batches); other datasets
    get the plain ``DataLoader``.
    """
    if type(dataset) is not SkorchDataset or not (
            _indexable(dataset.X) and (dataset.y is None or _indexable(dataset.y))):
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                          drop_last=drop_last, **kwargs)
    generator = kwargs.pop("generator", None)
    sampler = _BatchIndices(len(dataset), batch_size, shuffle, drop_last, generator)
    batches = _WholeBatches(dataset)
    if kwargs:
        return DataLoader(batches, sampler=sampler, batch_size=None, generator=generator,
                          **kwargs)
    return _InMemoryBatches(batches, sampler)


class _BatchIndices(torch.utils.data.Sampler):
    """Row indices, one array per batch, in the order of ``BatchSampler(RandomSampler)``.

    The same random draws as :class:`~torch.utils.data.RandomSampler` (one
    draw from torch's global generator seeds a permutation, when the first
    batch is asked for), sliced into arrays instead of yielded one Python int
    at a time.
    """

    def __init__(self, n, batch_size, shuffle, drop_last, generator=None):
        self.n, self.batch_size = n, batch_size
        self.shuffle, self.drop_last, self.generator = shuffle, drop_last, generator

    def __len__(self):
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self):
        if not self.shuffle:
            order = np.arange(self.n)
        else:
            generator = self.generator
            if generator is None:  # as RandomSampler does
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
                generator = torch.Generator()
                generator.manual_seed(seed)
            order = torch.randperm(self.n, generator=generator).numpy()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start:start + self.batch_size]
        if self.shuffle and self.generator is not None:
            # RandomSampler, run to its end, draws one more (empty) permutation
            # from the user's generator; next epoch's order depends on it.
            torch.randperm(self.n, generator=self.generator)
