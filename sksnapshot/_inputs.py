"""What the estimators accept as X, and every rule about it, in one place.

skorch takes four kinds of input, and so do the estimators:

- a 2-D array-like (validated by scikit-learn's ``validate_data``: float32,
  feature names, ``n_features_in_``);
- an array or tensor of rank >= 3, samples first (images, sequences);
- a dict of such arrays, one per keyword argument of the module;
- a ``torch.utils.data.Dataset`` of ``(X, y)`` items (or of inputs alone).

This module validates them for ``fit``, ``predict`` and ``select``, counts and
takes their rows, reads a Dataset's targets, records and checks the
per-sample shape (``sample_shape_``), digests them for checkpoint
fingerprints, and calls a module on them the way skorch's ``infer`` does: a
dict as keyword arguments, and the first element of a tuple output as the
prediction. A new kind of input is taught here and nowhere else.
"""

import hashlib
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.validation import check_consistent_length, validate_data
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import unpack_data
from skorch.utils import is_dataset, multi_indexing, to_tensor
from torch.utils.data import Subset, TensorDataset

__all__ = [
    "InputsModule",
    "LabelledDataset", "call_module", "check_inputs", "dataset_targets", "describe_shape",
    "first_output", "first_rows", "fit_inputs", "forward_arguments", "input_digest",
    "input_leaves", "is_dataset", "is_dict_input", "is_nd_input", "item_input",
    "labelled_rows", "map_inputs", "n_samples", "sample_shape", "take_rows",
]


# -- the kinds of input ---------------------------------------------------------------
def is_dict_input(X):
    """A dict of input arrays (skorch's multi-input convention); sparse DOK matrices are not."""
    # Arrays first: the loader asks this of every batch, and an ABC check costs more.
    return not _is_array(X) and isinstance(X, Mapping) and not sp.issparse(X)


def is_nd_input(X):
    """Inputs that skip scikit-learn's 2-D validation: Datasets, dicts, arrays of rank >= 3."""
    return is_dataset(X) or is_dict_input(X) or (_is_array(X) and X.ndim >= 3)


def _is_array(X):
    return isinstance(X, (np.ndarray, torch.Tensor))


def map_inputs(fn, X):
    """``fn`` applied to each array of ``X``, keeping the structure of a dict of inputs.

    Also serves any structure shaped like the inputs: a sample shape (a
    tuple, or a dict of them) or a batch of a dict input.
    """
    if is_dict_input(X):
        return {key: map_inputs(fn, value) for key, value in X.items()}
    return fn(X)


def input_leaves(X):
    """The arrays of ``X`` in order: ``X`` itself, or the values of a dict of inputs."""
    if is_dict_input(X):
        return [leaf for value in X.values() for leaf in input_leaves(value)]
    return [X]


# -- a module called as skorch's ``infer`` calls it --------------------------------------
def forward_arguments(x):
    """``(args, kwargs)`` of a module's call on ``x``: a dict's arrays as keyword arguments."""
    return ((), dict(x)) if isinstance(x, Mapping) else ((x,), {})


def call_module(module, x):
    """``module``'s output on ``x``, with a dict of inputs passed as keyword arguments."""
    args, kwargs = forward_arguments(x)
    return module(*args, **kwargs)



class InputsModule(torch.nn.Module):
    """``module`` called as skorch's ``infer`` does (:func:`call_module`), for
    ``torch.optim.swa_utils.update_bn``, which passes each batch as one argument."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return call_module(self.module, x)

def first_output(output):
    """The prediction in a module's output: the first element of a tuple (or list) output."""
    return output[0] if isinstance(output, (tuple, list)) else output


def item_input(item):
    """The input of one Dataset item: the first element of an ``(X, y)`` pair, else the item."""
    return item[0] if isinstance(item, (tuple, list)) else item


# -- validation -------------------------------------------------------------------------
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


def _validated_rows(estimator, X, *, reset, y=None, **y_params):
    """2-D rows through scikit-learn's ``validate_data`` (with ``y`` when given), as float32.

    Returns ``X``, or ``(X, y)`` when ``y`` is given; ``X`` is C-contiguous and
    writeable, as ``torch.as_tensor`` takes it without a copy or a warning.
    """
    if y is None:
        X = validate_data(estimator, X, dtype=np.float32, reset=reset)
    else:
        X, y = validate_data(estimator, X, y, dtype=np.float32, reset=reset, **y_params)
    X = np.require(X, requirements=["C", "W"])
    return X if y is None else (X, y)


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
        shape = sample_shape(item_input(X[0]))
    elif is_dict_input(X):
        if not X:
            raise ValueError("X is an empty dict; give at least one input array.")
        X = {key: _as_numeric_array(value, f"X[{key!r}]", 1) for key, value in X.items()}
        lengths = {key: len(value) for key, value in X.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"The arrays of the dict X have different numbers of rows: {lengths}.")
        shape = sample_shape({key: value[0] for key, value in X.items()})
    elif _is_array(X) and X.ndim >= 3:
        X = _as_numeric_array(X, "X", 3)
        shape = tuple(X.shape[1:])
    elif not reset and _validated_already(estimator, X):
        shape = tuple(X.shape[1:])
    else:
        X = _validated_rows(estimator, X, reset=reset)
        shape = tuple(X.shape[1:])
    _record_or_check_shape(estimator, X, shape, reset)
    return X


def fit_inputs(estimator, X, y, **y_params):
    """Training inputs and targets as skorch takes them (the estimator's ``fit``).

    2-D array-likes are validated together with ``y`` by scikit-learn's
    ``validate_data`` (``y_params`` are its checks of ``y``); other inputs by
    :func:`check_inputs`, with ``y`` read from a Dataset when not given.
    """
    if y is None and not is_dataset(X):
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target y is None "
            "(only a torch Dataset X can carry its own targets)."
        )
    if not is_nd_input(X):
        X, y = _validated_rows(estimator, X, reset=True, y=y, **y_params)
        _record_or_check_shape(estimator, X, tuple(X.shape[1:]), reset=True)
        return X, y
    X = check_inputs(estimator, X, reset=True)
    if y is None:
        y = dataset_targets(X)
    y = validate_data(estimator, y=y, **y_params)
    check_consistent_length(np.arange(n_samples(X)), y)
    return X, y


def labelled_rows(estimator, X, y):
    """New labelled rows of a fitted estimator (``select``, ``X_valid``): inputs and targets.

    The targets are returned as given (or read from a Dataset), not encoded.
    """
    X = check_inputs(estimator, X, reset=False)
    if y is None:
        if not is_dataset(X):
            raise ValueError("y is required unless X is a torch Dataset with targets.")
        y = dataset_targets(X)
    if len(y) != n_samples(X):
        what = "labels" if hasattr(estimator, "classes_") else "targets"
        raise ValueError(f"X has {n_samples(X)} rows but y has {len(y)} {what}.")
    return X, y


# -- the per-sample shape -----------------------------------------------------------------
def sample_shape(sample):
    """The shape of one sample: a tuple, a dict of tuples (dict inputs), or None if unknown."""

    def shape_of(value):
        shape = getattr(value, "shape", None)
        return None if shape is None else tuple(int(s) for s in shape)

    return map_inputs(shape_of, sample)


def describe_shape(shape):
    """A sample shape as error messages print it."""
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k!r}: {describe_shape(v)}" for k, v in shape.items()) + "}"
    return str(shape)


def _record_or_check_shape(estimator, X, shape, reset):
    """Remember the sample shape in ``fit`` (``sample_shape_``); check it against it later."""
    if reset:
        if not (_is_array(X) and X.ndim == 2):
            # n_features_in_ and feature names describe 2-D inputs only.
            for name in ("n_features_in_", "feature_names_in_"):
                estimator.__dict__.pop(name, None)
        estimator.sample_shape_ = shape
        return
    expected = getattr(estimator, "sample_shape_", None)
    if shape is not None and expected is not None and shape != expected:
        raise ValueError(
            f"X has samples of shape {describe_shape(shape)}, but "
            f"{type(estimator).__name__} was fitted on samples of shape "
            f"{describe_shape(expected)}."
        )


# -- rows -----------------------------------------------------------------------------------
def n_samples(X):
    """Number of rows of an input accepted by :func:`check_inputs`."""
    if is_dict_input(X):
        return len(next(iter(X.values())))
    return X.shape[0] if sp.issparse(X) else len(X)


def take_rows(X, y, indices):
    """Rows ``indices`` of ``X`` and ``y`` as a skorch Dataset-ready pair, or one Dataset.

    Arrays and dicts are indexed (a copy); a Dataset becomes a ``Subset`` of
    a :class:`LabelledDataset` (no copy) and ``y`` None.
    """
    if is_dataset(X):
        return Subset(LabelledDataset(X, y), np.asarray(indices).tolist()), None
    return map_inputs(lambda array: array[indices], X), y[indices]


def first_rows(net, X, n=2):
    """The first ``n`` samples of ``X`` as one batch of inputs on the net's device."""
    if is_dataset(X):
        batch = next(iter(net.get_iterator(Subset(X, range(min(n, len(X)))))))
        return to_tensor(unpack_data(batch)[0], device=net.device)
    return to_tensor(multi_indexing(X, slice(0, n)), device=net.device)


# -- a Dataset's targets ----------------------------------------------------------------------
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
        return item_input(self.dataset[i]), self.y[i]


# -- the digest of an input (checkpoint fingerprints) ----------------------------------------
def input_digest(data):
    """A digest of training data: arrays in full; a Dataset by its length and a sample of items.

    The same in every process for the same data: a checkpoint written for
    these rows is only resumed with them.
    """
    digest = hashlib.sha256()
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        digest.update(str((data.dtype.str, data.shape)).encode())
        digest.update(np.ascontiguousarray(data).tobytes())
    elif isinstance(data, dict):
        for key in sorted(data):
            digest.update(str(key).encode())
            digest.update(input_digest(data[key]).encode())
    elif data is None:
        digest.update(b"None")
    else:  # a torch Dataset: its length and up to 16 evenly spaced items
        n = len(data)
        digest.update(f"Dataset of {n}".encode())
        for i in sorted(set(np.linspace(0, n - 1, num=min(n, 16)).astype(int).tolist())):
            item = data[i]
            for part in item if isinstance(item, (tuple, list)) else (item,):
                digest.update(input_digest(part if isinstance(part, (np.ndarray, torch.Tensor,
                                                                      dict)) else
                                           np.asarray(part)).encode())
    return digest.hexdigest()
