"""Checkpoints that let an interrupted fit continue exactly where it stopped.

Files are written with ``torch.save`` and read with ``torch.load(weights_only=True)``,
which rebuilds tensors and plain containers only and runs no code from the file.
A file that is missing, unreadable or not what this module wrote is refused with
a ``ValueError`` naming it. One fit at a time holds a directory: an exclusive
lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) on its ``.lock``
file, from before the progress is read until the fit ends.
"""

import contextlib
import errno
import hashlib
import json
import os
import pathlib
import re
import tempfile
from collections.abc import Mapping

import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.history import History

from ._distributed import is_main_process, unwrapped_module
from ._inputs import input_digest

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = ["CheckpointDir", "SaveProgress", "fingerprint", "using"]

_PROGRESS = "progress.pt"
_LOCK = ".lock"
# The fields of a progress file and their types.
_FIELDS = {
    "fingerprint": str, "epochs_done": int, "n_snapshots": int, "module": Mapping,
    "optimizer": Mapping, "rng": torch.Tensor, "cuda_rng": list, "callback": Mapping,
    "history": str, "train": torch.Tensor, "valid": torch.Tensor,
}


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
        return ["array", input_digest(value)]
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    if hasattr(value, "get_params"):
        return [_canonical(type(value)), _canonical(value.get_params())]
    attributes = getattr(value, "__dict__", None)
    if attributes is None:  # e.g. torch.device, NumPy scalars: a repr without addresses
        return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
    params = {k: v for k, v in attributes.items() if not k.startswith("_") and not k.endswith("_")}
    return [_canonical(type(value)), _canonical(params)]


def fingerprint(X, y, estimator_params, net):
    """A digest of the data and of everything that shapes the training run.

    A checkpoint is only resumed by a fit with the same digest, so a changed
    data set or setting never silently continues someone else's run. Arrays
    are hashed in full; a Dataset by its length and 16 of its items. The
    digest is the same in every process for the same data and settings.
    """
    digest = hashlib.sha256()
    digest.update(input_digest(X).encode())
    digest.update(input_digest(y).encode())
    # An Accelerator (skorch.hf.AccelerateMixin) is not a setting of the run.
    skip = {"verbose", "train_split", "accelerator"}
    net_params = {k: _canonical(v) for k, v in net.get_params(deep=False).items()
                  if k not in skip and not k.startswith("_")
                  and not k.startswith("callbacks__print_log")}
    # Where the checkpoint lies is not a setting of the run: a moved directory, or
    # its path given as a str once and as a Path the next time, resumes.
    settings = {k: _canonical(v) for k, v in estimator_params.items()
                if k not in ("net", "verbose", "checkpoint_dir")}
    digest.update(json.dumps([settings, net_params], sort_keys=True).encode())
    return digest.hexdigest()


def _atomic_save(obj, path):
    """Write a temporary file of this writer's own next to the target, then rename.

    A crash never leaves half a file, and two writers never share a temporary name.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _try_lock(path, shared=False):
    """An open lock file locked without waiting, or None when another process holds it."""
    handle = open(path, "a+b")  # held open for as long as the lock
    try:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                        | fcntl.LOCK_NB)
        else:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK):
            return None
        raise
    return handle


def _unlock(handle):
    try:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        else:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    finally:
        handle.close()


def using(checkpoint, net):
    """``checkpoint.lock(net)``, or a context that does nothing when ``checkpoint`` is None."""
    return contextlib.nullcontext() if checkpoint is None else checkpoint.lock(net)


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

    Notes
    -----
    Construction reads the saved progress, without its snapshots, for the
    split and to refuse another run's directory early. Training must then run
    inside :meth:`lock`, which takes the directory for this fit and reads the
    progress again, with the snapshots, under the lock: that is the state
    :meth:`resume` continues from.
    """

    def __init__(self, path, digest, split):
        self.path = pathlib.Path(path)
        self.digest = digest
        self._progress = None
        progress = self._load_progress()
        if progress is not None:
            split = (progress["train"].numpy(), progress["valid"].numpy())
        self.split = split

    def _snapshot_path(self, index):
        return self.path / f"snapshot_{index:03d}.pt"

    def _busy(self):
        return RuntimeError(
            f"Another fit is using the checkpoint directory {str(self.path)!r} (it holds "
            f"the lock on {str(self.path / _LOCK)!r}). Wait for that fit to end, or pass "
            "another checkpoint_dir."
        )

    def _unusable(self, file, problem):
        return ValueError(
            f"The checkpoint file {str(file)!r} {problem}, so the training run saved in "
            f"{str(self.path)!r} cannot be resumed. Delete that directory to start afresh, "
            "or pass another checkpoint_dir."
        )

    @contextlib.contextmanager
    def lock(self, net=None):
        """Hold the directory for one fit, then read the progress to resume from.

        A second fit on the same directory, in this or another process, gets a
        ``RuntimeError`` instead of mixing its files with this one's. The lock
        is released when the block ends, however it ends. Only the main
        process of a distributed Accelerate run (the one that writes) takes
        it; the others only read.
        """
        handle = None
        if net is None or is_main_process(net):
            self.path.mkdir(parents=True, exist_ok=True)
            handle = _try_lock(self.path / _LOCK)
            if handle is None:
                raise self._busy()
        try:
            progress = self._load()
            if progress is not None and not (
                    np.array_equal(progress["train"].numpy(), self.split[0])
                    and np.array_equal(progress["valid"].numpy(), self.split[1])):
                raise RuntimeError(
                    f"Another fit wrote to the checkpoint directory {str(self.path)!r} while "
                    "this one was starting, with another validation split. Fit again to "
                    "resume from it, or pass another checkpoint_dir."
                )
            self._progress = progress
            yield self
        finally:
            self._progress = None  # the snapshots belong to the fit now
            if handle is not None:
                _unlock(handle)

    def save_snapshot(self, index, state):
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_save(state, self._snapshot_path(index))

    def save_progress(self, net, callback):
        """Save the net and ``callback.progress_state()`` (see :class:`SaveProgress`)."""
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_save({
            "fingerprint": self.digest,
            "epochs_done": len(net.history),
            "n_snapshots": callback.n_snapshots,
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
        """Put a freshly initialised net back in the saved state; return the epochs done.

        0 for a fresh directory. Call inside :meth:`lock`.
        """
        progress = self._progress
        if progress is None:
            return 0
        expected = _shapes(unwrapped_module(net).state_dict())
        states = dict(enumerate(progress["snapshots"]))
        states[_PROGRESS] = progress["callback"].get("_initial_state")
        for index, state in states.items():
            if state is not None and _shapes(state) != expected:
                file = self.path / _PROGRESS if index == _PROGRESS else self._snapshot_path(index)
                raise self._unusable(file, "holds weights that do not fit the net's module")
        try:
            net.module_.load_state_dict(progress["module"])
            net.optimizer_.load_state_dict(progress["optimizer"])
            net.history = History(json.loads(progress["history"]))
            callback.restore(progress["callback"], progress["snapshots"])
            torch.set_rng_state(progress["rng"])
            if progress["cuda_rng"]:
                torch.cuda.set_rng_state_all(progress["cuda_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise self._unusable(
                self.path / _PROGRESS,
                f"does not fit this net (a {type(exc).__name__} while restoring it)",
            ) from None
        return progress["epochs_done"]

    def _read(self, file):
        """``torch.load(weights_only=True)`` of one file, or our own error."""
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            problem = "is missing"
        except Exception as exc:  # torch's text would suggest weights_only=False: never
            problem = f"cannot be read ({type(exc).__name__}); it may be damaged or tampered with"
        raise self._unusable(file, problem)

    def _load_progress(self):
        """The saved progress without its snapshots, or None for a fresh directory."""
        progress_path = self.path / _PROGRESS
        if not progress_path.exists():
            return None
        progress = self._read(progress_path)
        if not isinstance(progress, Mapping):
            raise self._unusable(progress_path, "does not hold a training run's progress")
        if progress.get("fingerprint") != self.digest:
            try:
                probe = _try_lock(self.path / _LOCK, shared=True)
            except OSError:  # e.g. a read-only directory: nobody trains there
                probe = False
            if probe is None:  # that run is being trained right now
                raise self._busy()
            if probe:
                _unlock(probe)
            raise ValueError(
                f"The checkpoint in {str(self.path)!r} belongs to another training run "
                "(different data or settings). Use an empty checkpoint_dir, or delete "
                "that directory to start afresh."
            )
        for field, kind in _FIELDS.items():
            if not isinstance(progress.get(field), kind):
                raise self._unusable(progress_path, f"has no valid {field!r} field")
        if progress["n_snapshots"] < 0 or not isinstance(
                progress["callback"].get("_initial_state", {}), (Mapping, type(None))):
            raise self._unusable(progress_path, "has an invalid field")
        return progress

    def _load(self):
        """The saved progress with its snapshots, or None for a fresh directory."""
        progress = self._load_progress()
        if progress is None:
            return None
        progress["snapshots"] = []
        for i in range(progress["n_snapshots"]):
            snapshot = self._read(self._snapshot_path(i))
            if not isinstance(snapshot, Mapping):
                raise self._unusable(self._snapshot_path(i), "does not hold a snapshot")
            progress["snapshots"].append(snapshot)
        return progress


class SaveProgress(Callback):
    """Save the run's progress in a :class:`CheckpointDir` at the end of every epoch.

    It must be the last of the run's callbacks, so that the progress holds
    what every other one did in the epoch. The progress file keeps one
    ``"callback"`` mapping for all of them: the union of the
    ``progress_state()`` of the snapshot callback and of each of ``parts``
    (callbacks with ``progress_state()`` and ``restore(progress)``, such as
    the divergence guard's reference loss), so the file has one format
    however the callbacks are divided.
    """

    def __init__(self, checkpoint, snapshots, parts=()):
        self.checkpoint = checkpoint
        self.snapshots = snapshots
        self.parts = parts

    @property
    def n_snapshots(self):
        return len(self.snapshots.snapshots_)

    def progress_state(self):
        state = self.snapshots.progress_state()
        for part in self.parts:
            state.update(part.progress_state())
        return state

    def restore(self, progress, snapshots):
        """Give each callback its part of ``progress_state()``, the snapshots to theirs."""
        self.snapshots.restore(progress, snapshots)
        for part in self.parts:
            part.restore(progress)

    def on_epoch_end(self, net, **kwargs):
        if is_main_process(net):
            self.checkpoint.save_progress(net, self)


def _shapes(state):
    """Keys, shapes and dtypes of a state dict (None if it is not one)."""
    if not isinstance(state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        return None
    return {str(k): (tuple(v.shape), v.dtype) for k, v in state.items()}
