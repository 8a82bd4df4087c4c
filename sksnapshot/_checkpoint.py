"""Checkpoints that let an interrupted fit continue exactly where it stopped.

Files are written with ``torch.save`` and read with ``torch.load(weights_only=True)``,
which rebuilds tensors and plain containers only and runs no code from the file.
"""

import hashlib
import json
import os
import pathlib
import re

import numpy as np
import torch
from skorch.history import History

__all__ = ["CheckpointDir", "fingerprint"]

_PROGRESS = "progress.pt"


def _canonical(value):
    """A description of a setting that is the same in every process (no memory addresses).

    Functions and classes by qualified name, random states by their state,
    callbacks and other objects by class and parameters; plain values by repr.
    """
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, np.random.RandomState):
        return ["RandomState", hashlib.sha256(repr(value.get_state()).encode()).hexdigest()]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return ["array", _data_digest(value)]
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    if hasattr(value, "get_params"):
        return [_canonical(type(value)), _canonical(value.get_params())]
    attributes = getattr(value, "__dict__", None)
    if attributes is None:  # e.g. torch.device, NumPy scalars: a repr without addresses
        return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
    params = {k: v for k, v in attributes.items() if not k.startswith("_") and not k.endswith("_")}
    return [_canonical(type(value)), _canonical(params)]


def _data_digest(data):
    """A digest of training data: arrays in full; a Dataset by its length and a sample of items."""
    digest = hashlib.sha256()
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        digest.update(str((data.dtype.str, data.shape)).encode())
        digest.update(np.ascontiguousarray(data).tobytes())
    elif isinstance(data, dict):
        for key in sorted(data):
            digest.update(str(key).encode())
            digest.update(_data_digest(data[key]).encode())
    elif data is None:
        digest.update(b"None")
    else:  # a torch Dataset: its length and up to 16 evenly spaced items
        n = len(data)
        digest.update(f"Dataset of {n}".encode())
        for i in sorted(set(np.linspace(0, n - 1, num=min(n, 16)).astype(int).tolist())):
            item = data[i]
            for part in item if isinstance(item, (tuple, list)) else (item,):
                digest.update(_data_digest(part if isinstance(part, (np.ndarray, torch.Tensor,
                                                                      dict)) else
                                           np.asarray(part)).encode())
    return digest.hexdigest()


def fingerprint(X, y, estimator_params, net):
    """A digest of the data and of everything that shapes the training run.

    A checkpoint is only resumed by a fit with the same digest, so a changed
    data set or setting never silently continues someone else's run. Arrays
    are hashed in full; a Dataset by its length and 16 of its items. The
    digest is the same in every process for the same data and settings.
    """
    digest = hashlib.sha256()
    digest.update(_data_digest(X).encode())
    digest.update(_data_digest(y).encode())
    # An Accelerator (skorch.hf.AccelerateMixin) is not a setting of the run.
    skip = {"verbose", "train_split", "accelerator"}
    net_params = {k: _canonical(v) for k, v in net.get_params(deep=False).items()
                  if k not in skip and not k.startswith("_")
                  and not k.startswith("callbacks__print_log")}
    settings = {k: _canonical(v) for k, v in estimator_params.items()
                if k not in ("net", "verbose")}
    digest.update(json.dumps([settings, net_params], sort_keys=True).encode())
    return digest.hexdigest()


def _atomic_save(obj, path):
    """Write next to the target, then rename: a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class CheckpointDir:
    """A directory holding the snapshots and the progress of one training run.

    Parameters
    ----------
    path : str or path-like
        Created if missing.
    digest : str
        :func:`fingerprint` of the run; a directory holding another run's
        checkpoint is refused.
    split : tuple of ndarray
        The (train, valid) row indices of a fresh run. A resumed run keeps the
        split it was saved with: read :attr:`split` after construction.
    """

    def __init__(self, path, digest, split):
        self.path = pathlib.Path(path)
        self.digest = digest
        self._progress = self._load()
        if self._progress is not None:
            split = (self._progress["train"].numpy(), self._progress["valid"].numpy())
        self.split = split

    def _snapshot_path(self, index):
        return self.path / f"snapshot_{index:03d}.pt"

    def save_snapshot(self, index, state):
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_save(state, self._snapshot_path(index))

    def save_progress(self, net, callback):
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_save({
            "fingerprint": self.digest,
            "epochs_done": len(net.history),
            "n_snapshots": len(callback.snapshots_),
            "module": net.module_.state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "callback": callback.progress_state(),
            "history": json.dumps(net.history.to_list(), default=float),
            "train": torch.as_tensor(self.split[0]),
            "valid": torch.as_tensor(self.split[1]),
        }, self.path / _PROGRESS)

    def resume(self, net, callback):
        """Put a freshly initialised net back in the saved state; return the epochs done (0 if none)."""
        progress = self._progress
        if progress is None:
            return 0
        net.module_.load_state_dict(progress["module"])
        net.optimizer_.load_state_dict(progress["optimizer"])
        net.history = History(json.loads(progress["history"]))
        callback.restore(progress["callback"], progress["snapshots"])
        torch.set_rng_state(progress["rng"])
        if progress["cuda_rng"]:
            torch.cuda.set_rng_state_all(progress["cuda_rng"])
        return progress["epochs_done"]

    def _load(self):
        """The saved progress with its snapshots, or None for a fresh directory."""
        progress_path = self.path / _PROGRESS
        if not progress_path.exists():
            return None
        progress = torch.load(progress_path, map_location="cpu", weights_only=True)
        if progress.get("fingerprint") != self.digest:
            raise ValueError(
                f"The checkpoint in {str(self.path)!r} belongs to another training run "
                "(different data or settings). Use an empty checkpoint_dir, or delete "
                "that directory to start afresh."
            )
        progress["snapshots"] = [
            torch.load(self._snapshot_path(i), map_location="cpu", weights_only=True)
            for i in range(progress["n_snapshots"])
        ]
        return progress
