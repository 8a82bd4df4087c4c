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

from sksnapshot import load_ensemble, save_ensemble

from .data.make_saved_ensembles import FITTED, plain, rows

DATA = pathlib.Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())


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
    assert {n: plain(getattr(loaded, n)) for n in FITTED if hasattr(loaded, n)} \
        == expected["fitted"]
    assert len(loaded.snapshots_) == expected["n_snapshots"]
    assert (loaded.averaged_state_ is not None) == expected["averaged"]
    assert len(loaded.net_.history) == expected["history_length"]
    assert plain(loaded.predict(X)) == expected["predict"]
    if "predict_proba" in expected:
        assert plain(loaded.predict_proba(X)) == expected["predict_proba"]
    else:
        assert plain(loaded.predict(X, return_std=True)[1]) == expected["predict_std"]


@pytest.mark.parametrize("name", ["classifier_v2", "regressor_v2"])
def test_an_old_file_saves_back_the_same(name, tmp_path):
    save_ensemble(load_ensemble(DATA / name), tmp_path)
    old = json.loads((DATA / name / "metadata.json").read_text())
    new = json.loads((tmp_path / "metadata.json").read_text())
    old.pop("versions"), new.pop("versions")  # the libraries of this machine
    assert new == old
    assert list(new["fitted"]) == list(old["fitted"])  # the same keys in the same order
    assert (tmp_path / "weights.safetensors").read_bytes() \
        == (DATA / name / "weights.safetensors").read_bytes()


def test_an_old_file_loads_from_a_copy(tmp_path):
    """Nothing in the fixture depends on where it lies."""
    shutil.copytree(DATA / "regressor_v2", tmp_path / "copy")
    loaded = load_ensemble(tmp_path / "copy")
    np.testing.assert_array_equal(loaded.predict(rows()[1]),
                                  load_ensemble(DATA / "regressor_v2").predict(rows()[1]))
