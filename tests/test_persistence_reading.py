"""Each file of a saved ensemble is opened once and read from that descriptor."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import sksnapshot
from sksnapshot import SnapshotEnsembleClassifier, load_ensemble, save_ensemble
from sksnapshot._compat import SKLEARN_VERSIONS

from .conftest import tiny_net


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(max_epochs=2), n_snapshots=2,
                                     random_state=0).fit(X, y)
    directory = tmp_path_factory.mktemp("saved")
    save_ensemble(clf, directory)
    return directory, clf


def test_each_file_is_opened_once(saved, monkeypatch, tmp_path):
    directory, _ = saved
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    opened, real_open = [], os.open
    monkeypatch.setattr(os, "open", lambda path, *args, **kwargs: (
        opened.append(os.path.basename(path)), real_open(path, *args, **kwargs))[1])
    load_ensemble(target)
    assert sorted(opened) == ["metadata.json", "weights.safetensors"]


def test_a_file_swapped_after_it_was_opened_is_not_read(saved, data, monkeypatch, tmp_path):
    """Replacing weights.safetensors once it is open changes nothing: it is not opened again."""
    directory, clf = saved
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    tensors = load_file(target / "weights.safetensors")
    swapped = {key: value.mul(np.nan) if value.is_floating_point() else value
               for key, value in tensors.items()}
    real_open = os.open

    def open_then_swap(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if os.path.basename(path) == "weights.safetensors":
            os.remove(path)
            save_file(swapped, path)  # a new file under the same name
        return fd

    monkeypatch.setattr(os, "open", open_then_swap)
    loaded = load_ensemble(target)
    monkeypatch.undo()
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(data[0]), clf.predict_proba(data[0]))
    with pytest.raises(sksnapshot.InvalidEnsembleFile, match="holds NaN"):
        load_ensemble(target)  # the swapped file, read afresh, is refused


def test_scikit_learn_is_a_version_the_private_names_are_known_on():
    import sklearn

    major_minor = tuple(int(part) for part in sklearn.__version__.split(".")[:2])
    low, high = (tuple(int(p) for p in v.split(".")) for v in SKLEARN_VERSIONS)
    assert low <= major_minor <= high, (
        f"scikit-learn {sklearn.__version__} is outside sksnapshot._compat.SKLEARN_VERSIONS "
        f"{SKLEARN_VERSIONS}: run the test suite on it, then widen the range.")


def test_a_warning_points_at_the_caller_of_load_ensemble(tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(pathlib.Path(__file__).parent / "data" / "classifier_v2", target)
    metadata = json.loads((target / "metadata.json").read_text())
    metadata["params"]["checkpoint_dir"] = "/somewhere/else"
    (target / "metadata.json").write_text(json.dumps(metadata))
    with pytest.warns(UserWarning, match="names a checkpoint_dir") as record:
        load_ensemble(target)
    assert record[0].filename == __file__
