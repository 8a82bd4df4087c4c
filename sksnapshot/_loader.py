"""The whole-batch loader: batches of in-memory rows fetched with one index array each.

skorch's ``Dataset`` of NumPy arrays, tensors or dicts of them, as the
estimators give it to their nets, is read by a ``DataLoader`` one row at a time
(``__getitem__`` and collation per row). :func:`batch_loader` replaces that by
one indexing step per batch, with the same random draws, so the same rows in
the same order: the snapshots of a fit with a fixed seed do not change.
:func:`~sksnapshot._training.build_net` sets it as the net's iterators.
"""

import math

import numpy as np
import torch
from skorch.dataset import Dataset as SkorchDataset
from torch.utils.data import DataLoader

from ._inputs import input_leaves, map_inputs

__all__ = ["batch_loader"]


def _indexable(data):
    """NumPy arrays, tensors and dicts of them: what :class:`_WholeBatches` indexes itself."""
    return all(isinstance(array, (np.ndarray, torch.Tensor)) for array in input_leaves(data))


def _as_tensor(array):
    """``array`` as a tensor sharing its memory, as ``default_convert`` makes it.

    Arrays of strings or objects stay NumPy arrays, as ``default_convert`` leaves them;
    so do read-only arrays (memory maps, joblib's copies for worker processes), which
    torch would share only with a warning: each batch of them is converted instead.
    """
    if isinstance(array, np.ndarray) and array.dtype.kind not in "SaUO" and array.flags.writeable:
        return torch.as_tensor(array)
    return array


def _take_rows(data, rows, indices):
    """One batch of ``data`` (arrays made tensors once, or not): by ``rows`` or ``indices``."""
    if isinstance(data, torch.Tensor):  # the usual case, without map_inputs' calls per batch
        return data[rows]
    return map_inputs(lambda array: array[rows] if isinstance(array, torch.Tensor)
                      else _as_tensor(array[indices]), data)


class _WholeBatches(torch.utils.data.Dataset):
    """skorch's ``Dataset`` of in-memory arrays, indexed by a whole batch of rows at once.

    The arrays are turned into tensors once (as ``default_convert`` would turn
    each batch); a batch is one indexing step.
    """

    def __init__(self, dataset):
        self.n = len(dataset)
        self.X = map_inputs(_as_tensor, dataset.X)
        self.y = None if dataset.y is None else map_inputs(_as_tensor, dataset.y)

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
