"""Pieces that tests and their subprocesses share by import (so fingerprints match).

Run as ``python -m tests._checkpoint_helpers MODE DIRECTORY OUT`` from the
repository root (with it on PYTHONPATH):

- ``hold``: fit on DIRECTORY, holding it (see :class:`HoldAt`) until a ``release``
  file appears beside OUT; then save ``predict_proba`` to OUT.
- ``resume``: resume the fits interrupted in DIRECTORY/schedule (a callable
  ``schedule``) and DIRECTORY/random_state (a ``RandomState``); save both
  ``predict_proba`` to OUT.
"""

import pathlib
import sys
import time

import numpy as np
import torch
from skorch.callbacks import Callback

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot.schedules import cosine_annealing_lr

from ._helpers import classification_data, tiny_net


def flat_then_cosine(t, n_iter, n_cycles, lr, min_lr):
    """A user schedule from an importable module: cosine cycles at 80% of the peak."""
    return cosine_annealing_lr(t, n_iter, n_cycles, lr=0.8 * lr, min_lr=min_lr)


class HoldAt(Callback):
    """At the start of epoch ``epoch`` write ``signal/held``, then wait for ``signal/release``."""

    def __init__(self, signal="", epoch=2, timeout=60.0):
        self.signal = signal
        self.epoch = epoch
        self.timeout = timeout

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) != self.epoch:
            return
        signal = pathlib.Path(self.signal)
        (signal / "held").write_text("held")
        deadline = time.monotonic() + self.timeout
        while not (signal / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def holding_fit(directory, signal, **kwargs):
    """The fit that holds ``directory``; the test process builds the same one to collide."""
    net = tiny_net(callbacks=[("hold", HoldAt(signal=str(signal)))], **kwargs)
    return SnapshotEnsembleClassifier(net, n_snapshots=3, random_state=0,
                                      checkpoint_dir=directory)


def resumable_fits(directory):
    """The two fits whose settings once had a per-process fingerprint."""
    directory = pathlib.Path(directory)
    return {
        "schedule": SnapshotEnsembleClassifier(
            tiny_net(), n_snapshots=3, schedule=flat_then_cosine, random_state=0,
            checkpoint_dir=directory / "schedule"),
        "random_state": SnapshotEnsembleClassifier(
            tiny_net(), n_snapshots=3, random_state=np.random.RandomState(0),
            checkpoint_dir=directory / "random_state"),
    }


if __name__ == "__main__":
    # The module's own name, not __main__: the settings name its classes and functions.
    from tests import _checkpoint_helpers as helpers

    torch.set_num_threads(1)
    mode, directory, out = sys.argv[1:4]
    X, y = classification_data()
    if mode == "hold":
        clf = helpers.holding_fit(directory, pathlib.Path(out).parent).fit(X, y)
        np.save(out, clf.predict_proba(X))
    elif mode == "resume":
        fits = helpers.resumable_fits(directory)
        np.savez(out, **{name: clf.fit(X, y).predict_proba(X) for name, clf in fits.items()})
