"""Files saved before the persistence package existed load identically, and save back the same.

``tests/data/classifier_v2`` and ``tests/data/regressor_v2`` were written by
the single-module ``_persistence.py`` (format 2); ``tests/data/expected.json``
holds what its ``load_ensemble`` returned for them (see
``tests/data/make_saved_ensembles.py``).
"""

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from sksnapshot import load_ensemble, save_ensemble

from ._helpers import assert_close_elsewhere
from .data.make_saved_ensembles import FITTED, plain, rows

DATA = pathlib.Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def assert_same_output(got, expected):
    """A computed output, as ``plain`` writes it, against one stored by other versions."""
    assert got["dtype"] == expected["dtype"]
    assert_close_elsewhere(got["array"], expected["array"])


def test_fixtures_stay_small():
    assert sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file()) < 32_000


@pytest.mark.parametrize("name", ["classifier_v2", "regressor_v2"])
def test_an_old_file_loads_identically(name):
    expected = EXPECTED[name]
    loaded = load_ensemble(DATA / name)
    X = rows()[1]
    if name.startswith("classifier"):
        X = pd.DataFrame(X, columns=["a", "b", "c"])
    params = loaded.get_params(deep=False)
    params.pop("net")
    assert params == expected["params"]
    # Fitted attributes are read from the file's JSON, not computed: exact under any versions.
    assert {n: plain(getattr(loaded, n)) for n in FITTED if hasattr(loaded, n)} \
        == expected["fitted"]
    assert len(loaded.snapshots_) == expected["n_snapshots"]
    assert (loaded.averaged_state_ is not None) == expected["averaged"]
    assert len(loaded.net_.history) == expected["history_length"]
    if "predict_proba" in expected:
        assert plain(loaded.predict(X)) == expected["predict"]  # labels, not floats
        assert_same_output(plain(loaded.predict_proba(X)), expected["predict_proba"])
    else:
        mean, std = loaded.predict(X, return_std=True)
        assert_same_output(plain(mean), expected["predict"])
        assert_same_output(plain(std), expected["predict_std"])


def test_the_tolerance_still_sees_a_real_change():
    """A real change as small as one weight moved by 1e-3 fails the comparison."""
    loaded = load_ensemble(DATA / "regressor_v2")
    loaded.snapshots_[-1]["layers.0.weight"][0, 0] += 1e-3
    with pytest.raises(AssertionError):
        assert_same_output(plain(loaded.predict(rows()[1])), EXPECTED["regressor_v2"]["predict"])


@pytest.mark.parametrize("name", ["classifier_v2", "regressor_v2"])
def test_an_old_file_saves_back_the_same(name, tmp_path):
    save_ensemble(load_ensemble(DATA / name), tmp_path)
    old = json.loads((DATA / name / "metadata.json").read_text())
    new = json.loads((tmp_path / "metadata.json").read_text())
    old.pop("versions"), new.pop("versions")  # the libraries of this machine
    # Parsed JSON, read and written back with no arithmetic between: exact under any versions.
    assert new == old
    assert list(new["fitted"]) == list(old["fitted"])  # the same keys in the same order
    # Tensors, not bytes: a safetensors release may lay out its header differently. The
    # values are copied from file to file with no arithmetic between: exact under any versions.
    new, old = (load_file(d / "weights.safetensors") for d in (tmp_path, DATA / name))
    assert new.keys() == old.keys()
    for key, tensor in old.items():
        assert new[key].dtype == tensor.dtype and torch.equal(new[key], tensor), key


def test_an_old_file_loads_from_a_copy(tmp_path):
    """Nothing in the fixture depends on where it lies."""
    shutil.copytree(DATA / "regressor_v2", tmp_path / "copy")
    loaded = load_ensemble(tmp_path / "copy")
    # The same weights through the same code in one process: exact.
    np.testing.assert_array_equal(loaded.predict(rows()[1]),
                                  load_ensemble(DATA / "regressor_v2").predict(rows()[1]))
