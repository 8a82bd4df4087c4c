"""checkpoint_dir: one fit at a time, a fingerprint stable across processes, bad files named."""

import os
import pathlib
import shutil
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import pytest
import torch
from skorch.callbacks import EarlyStopping, GradientNormClipping

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot._callbacks import CyclicSnapshots
from sksnapshot._checkpoint import CheckpointDir

from . import _checkpoint_helpers as helpers
from ._helpers import assert_close_elsewhere, classification_data
from .conftest import interrupted_at, tiny_net

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUSY = "Another fit is using the checkpoint directory"


def fit(X, y, net=None, **kwargs):
    params = dict(n_snapshots=3, random_state=0, selection="last", weighting="uniform")
    params.update(kwargs)
    return SnapshotEnsembleClassifier(tiny_net() if net is None else net, **params).fit(X, y)


def start(*args):
    """``python -m tests._checkpoint_helpers ARGS`` in a new process, the worktree importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.Popen([sys.executable, "-m", "tests._checkpoint_helpers", *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def interrupted_fit(X, y, directory, at_batch=13, **kwargs):
    with pytest.warns(RuntimeWarning, match="Training stopped after"), interrupted_at(at_batch):
        fit(X, y, checkpoint_dir=directory, **kwargs)


# -- one fit at a time ---------------------------------------------------------
def test_a_second_process_on_a_directory_in_use_fails_fast_and_can_go_on_later(tmp_path):
    X, y = classification_data()
    directory, signal = tmp_path / "ck", tmp_path / "signal"
    signal.mkdir()
    holder = start("hold", directory, signal / "proba.npy")
    try:
        deadline = time.monotonic() + 120
        while not (signal / "held").exists():  # epoch 1 saved, the lock held
            assert holder.poll() is None, holder.communicate()[0]
            assert time.monotonic() < deadline, "the holding process never started training"
            time.sleep(0.05)
        began = time.monotonic()
        with pytest.raises(RuntimeError, match=f"{BUSY} '{directory}'"):
            helpers.holding_fit(directory, signal).fit(X, y)  # the same run
        with pytest.raises(RuntimeError, match=f"{BUSY} '{directory}'"):
            helpers.holding_fit(directory, signal, lr=0.05).fit(X, y)  # another run
        assert time.monotonic() - began < 5
    finally:
        (signal / "release").write_text("go")
        output = holder.communicate(timeout=120)[0]
    assert holder.returncode == 0, output
    assert not list(directory.glob("*.tmp"))  # every writer renamed its own temporary file
    # Once the holder is done, the same fit finds its finished run.
    again = helpers.holding_fit(directory, signal).fit(X, y)
    assert_close_elsewhere(again.predict_proba(X), np.load(signal / "proba.npy"))


def test_the_lock_is_held_during_a_fit_and_released_however_it_ends(data, tmp_path):
    X, y = data
    with CheckpointDir(tmp_path, "x", None).lock():  # another fit, here in this process
        with pytest.raises(RuntimeError, match=BUSY):
            fit(X, y, checkpoint_dir=tmp_path)
    interrupted_fit(X, y, tmp_path)  # Ctrl-C
    original = CyclicSnapshots.on_batch_begin

    def fail_at_epoch_4(self, net, training=False, **kwargs):
        if training and len(net.history) == 4:
            raise OSError("disk gone")
        return original(self, net, training=training, **kwargs)

    with mock.patch.object(CyclicSnapshots, "on_batch_begin", fail_at_epoch_4):
        with pytest.raises(OSError, match="disk gone"):
            fit(X, y, checkpoint_dir=tmp_path)
    assert len(fit(X, y, checkpoint_dir=tmp_path).snapshots_) == 3


# -- the fingerprint -----------------------------------------------------------
@pytest.mark.parametrize("first, second", [
    (GradientNormClipping(gradient_clip_value=1.0), GradientNormClipping(gradient_clip_value=2.0)),
    (EarlyStopping(patience=50), EarlyStopping(patience=60)),
], ids=["gradient_clipping", "early_stopping"])
def test_resuming_with_other_callback_settings_is_refused(data, tmp_path, first, second):
    X, y = data
    interrupted_fit(X, y, tmp_path, net=tiny_net(callbacks=[first]), validation_fraction=0.2)
    with pytest.raises(ValueError, match="belongs to another training run"):
        fit(X, y, tiny_net(callbacks=[second]), validation_fraction=0.2, checkpoint_dir=tmp_path)


def test_a_callable_schedule_and_a_random_state_resume_in_a_new_process(tmp_path):
    X, y = classification_data()
    for name, clf in helpers.resumable_fits(tmp_path).items():
        with pytest.warns(RuntimeWarning, match="Training stopped after"), interrupted_at(13):
            clf.fit(X, y)
        assert (tmp_path / name / "snapshot_000.pt").exists()
    resumer = start("resume", tmp_path, tmp_path / "resumed.npz")
    output = resumer.communicate(timeout=300)[0]
    assert resumer.returncode == 0, output
    resumed = np.load(tmp_path / "resumed.npz")
    for name, clf in helpers.resumable_fits(tmp_path / "reference").items():
        clf.set_params(checkpoint_dir=None)
        assert_close_elsewhere(resumed[name], clf.fit(X, y).predict_proba(X))


# -- missing and unreadable files ------------------------------------------------
@pytest.fixture(scope="module")
def saved_run(data, tmp_path_factory):
    """A checkpoint directory of a fit interrupted after its first snapshot."""
    directory = tmp_path_factory.mktemp("saved") / "ck"
    interrupted_fit(*data, directory)
    return directory


def damaged(saved_run, tmp_path, damage):
    directory = tmp_path / "ck"
    shutil.copytree(saved_run, directory)
    damage(directory)
    return directory


class NotAllowed:
    """A class torch.load(weights_only=True) refuses to rebuild."""


@pytest.mark.parametrize("damage, file, problem", [
    (lambda d: (d / "snapshot_000.pt").unlink(), "snapshot_000.pt", "is missing"),
    (lambda d: (d / "progress.pt").write_bytes(b"not a checkpoint"), "progress.pt",
     r"cannot be read \(UnpicklingError\)"),
    (lambda d: (d / "progress.pt").write_bytes((d / "progress.pt").read_bytes()[:500]),
     "progress.pt", "cannot be read"),
    (lambda d: torch.save({"x": NotAllowed()}, d / "snapshot_000.pt"), "snapshot_000.pt",
     r"cannot be read \(UnpicklingError\)"),
    (lambda d: torch.save({"layers.0.weight": torch.zeros(2)}, d / "snapshot_000.pt"),
     "snapshot_000.pt", "holds weights that do not fit the net's module"),
], ids=["snapshot_deleted", "progress_garbage", "progress_truncated", "pickled_object",
        "snapshot_of_another_module"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(data, saved_run, tmp_path, damage, file,
                                                       problem):
    X, y = data
    directory = damaged(saved_run, tmp_path, damage)
    with pytest.raises(ValueError, match=f"'{directory / file}' {problem}.*Delete that directory"
                                         ".*pass another checkpoint_dir") as info:
        fit(X, y, checkpoint_dir=directory)
    # Never torch's advice to load with weights_only=False, not even as the cause.
    assert "weights_only" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None
