"""Checkpoints that let an interrupted fit continue exactly where it stopped.

Files are written with ``torch.save`` and read with ``torch.load(weights_only=True)``,
which rebuilds tensors and plain containers only and runs no code from the file.
"""

import hashlib
import json
import os
import pathlib

import numpy as np
import torch

__all__ = ["CheckpointDir", "fingerprint"]

_PROGRESS = "progress.pt"


def fingerprint(X, y, estimator_params, net):
    """A digest of the data and of everything that shapes the training run.

    A checkpoint is only resumed by a fit with the same digest, so a changed
    data set or setting never silently continues someone else's run.
    """
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(X).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    # An Accelerator (skorch.hf.AccelerateMixin) is not a setting: its repr is an address.
    skip = {"callbacks", "verbose", "train_split", "accelerator"}
    net_params = {k: repr(v) for k, v in net.get_params(deep=False).items()
                  if k not in skip and not k.startswith("_")}
    settings = {k: repr(v) for k, v in estimator_params.items() if k not in ("net", "verbose")}
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
    extra : dict
        Saved with the progress and handed back by :meth:`load` (e.g. the
        validation split).
    """

    def __init__(self, path, digest, extra=None):
        self.path = pathlib.Path(path)
        self.digest = digest
        self.extra = extra or {}

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
            **self.extra,
        }, self.path / _PROGRESS)

    def load(self):
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
