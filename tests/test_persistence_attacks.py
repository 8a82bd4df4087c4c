"""A saved directory made to hurt the loading process (issue 15).

The loader must not block, exhaust memory or recurse without bound, whatever
the files are; and a ``metadata.json`` changed at random either loads into an
ensemble predicting exactly as the saved one or is refused with
:class:`InvalidEnsembleFile`.
"""

import copy
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sksnapshot import (
    InvalidEnsembleFile,
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_classifier_net,
    default_regressor_net,
    load_ensemble,
    save_ensemble,
)
from sksnapshot._persistence import METADATA_MAX_BYTES, METADATA_MAX_CONTAINERS

from .conftest import TokensAndFeatures, tiny_net

try:
    import resource
except ImportError:  # Windows: no peak-RSS check
    resource = None

POSIX = os.name == "posix"


def _save(estimator, directory):
    save_ensemble(estimator, directory)
    load_ensemble(directory)  # the first build on the meta device is slow: warm it up here
    return directory


@pytest.fixture(scope="module")
def classifier(data, tmp_path_factory):
    """Uniform weights over every snapshot, BatchNorm (9 tensors per snapshot)."""
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(module__batch_norm=True), n_snapshots=3,
                                     weighting="uniform", random_state=0).fit(X, y)
    return _save(clf, tmp_path_factory.mktemp("classifier")), clf


@pytest.fixture(scope="module")
def regressor(data, tmp_path_factory):
    X, _ = data
    net = default_regressor_net(gaussian=True).set_params(
        max_epochs=4, lr=0.01, batch_size=32, module__hidden_layer_sizes=(8,))
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, weighting="uniform",
                                    random_state=0).fit(X, X[:, :2])
    return _save(reg, tmp_path_factory.mktemp("regressor")), reg


def _copy(directory, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    return target


def _load_in_thread(target, timeout=5.0):
    """(error, seconds) of load_ensemble run in a daemon thread; fails the test on a hang."""
    outcome = {}

    def run():
        start = time.perf_counter()
        try:
            load_ensemble(target)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        outcome["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        for name in ("metadata.json", "weights.safetensors"):  # unblock a reader of a FIFO
            try:
                os.close(os.open(target / name, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"load_ensemble did not return within {timeout} s")
    return outcome.get("error"), outcome["seconds"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX only")
@pytest.mark.parametrize("name", ["metadata.json", "weights.safetensors"])
def test_a_fifo_is_refused_without_blocking(classifier, tmp_path, name):
    target = _copy(classifier[0], tmp_path)
    os.remove(target / name)
    os.mkfifo(target / name)
    error, seconds = _load_in_thread(target)
    assert isinstance(error, InvalidEnsembleFile), error
    assert f"{name}: is not a regular file" in str(error) and seconds < 1


@pytest.mark.skipif(not (POSIX and os.path.exists("/dev/zero")), reason="needs /dev/zero")
@pytest.mark.parametrize("name", ["metadata.json", "weights.safetensors"])
def test_a_link_to_dev_zero_is_refused_at_once(classifier, tmp_path, name):
    target = _copy(classifier[0], tmp_path)
    os.remove(target / name)
    os.symlink("/dev/zero", target / name)
    error, seconds = _load_in_thread(target)
    assert isinstance(error, InvalidEnsembleFile) and "not a regular file" in str(error)
    assert seconds < 1


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_a_link_to_a_regular_file_loads(classifier, tmp_path, data):
    directory, clf = classifier
    target = tmp_path / "linked"
    target.mkdir()
    for name in ("metadata.json", "weights.safetensors"):
        os.symlink(directory / name, target / name)
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(load_ensemble(target).predict_proba(data[0]),
                                  clf.predict_proba(data[0]))


def test_an_oversized_metadata_file_is_refused_unread(classifier, tmp_path):
    target = _copy(classifier[0], tmp_path)
    with open(target / "metadata.json", "r+b") as handle:  # sparse: costs no disk
        handle.truncate(METADATA_MAX_BYTES + 1)
    start = time.perf_counter()
    with pytest.raises(InvalidEnsembleFile, match=f"larger than {METADATA_MAX_BYTES} bytes"):
        load_ensemble(target)
    assert time.perf_counter() - start < 1


def test_a_swarm_of_empty_objects_is_refused_unparsed(classifier, tmp_path):
    target = _copy(classifier[0], tmp_path)
    (target / "metadata.json").write_bytes(b"[" + b"{}," * METADATA_MAX_CONTAINERS + b"{}]")
    start = time.perf_counter()
    with pytest.raises(InvalidEnsembleFile, match="more than 4194304 JSON objects and arrays"):
        load_ensemble(target)
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("depth", [50, 200_000])
def test_a_nesting_bomb_is_refused(classifier, tmp_path, depth):
    target = _copy(classifier[0], tmp_path)
    metadata = json.loads((target / "metadata.json").read_text())
    text = json.dumps(metadata).replace('"history": [', '"history": [' + "[" * depth
                                        + "]" * depth + ", ", 1)
    (target / "metadata.json").write_text(text)
    start = time.perf_counter()
    with pytest.raises(InvalidEnsembleFile, match="nested too deeply|deeper than 32 levels"):
        load_ensemble(target)
    assert time.perf_counter() - start < 2


def _peak_rss_mib():
    if resource is None:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


@pytest.mark.parametrize("sizes, message", [
    # built on the meta device (no memory), then refused: other shapes, other tensors
    ([20000], r"snapshot\.0\.layers\.0\.\w+ has shape .* needs \(20000"),
    ([20000, 20000], r"the tensors do not match the module .* missing \['snapshot\.0\.layers\.4"),
    # more layers than the file holds tensors for: refused before any module is built
    ([20000] * 1000, "asks for 1001 layers"),
])
def test_module_arguments_bigger_than_the_tensors_build_nothing(classifier, tmp_path, sizes,
                                                                message):
    target = _copy(classifier[0], tmp_path)
    metadata = json.loads((target / "metadata.json").read_text())
    metadata["net_params"]["module__hidden_layer_sizes"] = sizes  # a 1.6 GB module, built
    (target / "metadata.json").write_text(json.dumps(metadata))
    before, start = _peak_rss_mib(), time.perf_counter()
    with pytest.raises(InvalidEnsembleFile, match=message):
        load_ensemble(target)
    assert time.perf_counter() - start < 1
    assert _peak_rss_mib() - before < 200


# -- random edits: refused, or loaded predicting exactly as saved --------------------

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=5)
_NAMES = st.sampled_from(["device", "predict_nonlinearity", "checkpoint_dir", "module__dropout",
                          "module__batch_norm", "module__gaussian", "feature_names_in_",
                          "classes_", "weights_", "extra"]) | st.text(max_size=6)


def _paths(node, prefix=()):
    """Every path into the metadata, except deep into the (long) history."""
    yield prefix
    if prefix[:1] == ("history",) and len(prefix) >= 2:
        return
    items = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else ())
    for key, child in items:
        if prefix == ("history",) and key != 0:
            continue
        yield from _paths(child, prefix + (key,))


def _other_type(value):
    options = [None, True, "x", [], {}, [value], str(value)]
    if isinstance(value, int) and not isinstance(value, bool):
        options.append(float(value))
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        options.append(int(value))
    return st.sampled_from([v for v in options if type(v) is not type(value)])


@st.composite
def _edited(draw, original):
    """``original`` with one to three random edits."""
    metadata = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(metadata))))
        parent, key = None, None
        node = metadata
        for step in path:
            parent, key, node = node, step, node[step]
        operation = draw(st.sampled_from(["number", "drop", "type", "reorder", "add"]))
        if operation == "number":
            numeric = isinstance(node, (int, float)) and not isinstance(node, bool)
            new = draw(st.one_of(st.integers(-3, 10), st.floats(), st.sampled_from(
                [node + 1, -node, node * 2] if numeric else [0, 1])))
        elif operation == "type":
            new = draw(_other_type(node))
        elif operation == "reorder" and isinstance(node, list) and len(node) > 1:
            new = draw(st.permutations(node))
        elif operation == "add" and isinstance(node, dict):
            new = {**node, draw(_NAMES): draw(_JSON)}
        elif operation == "add" and isinstance(node, list):
            new = node + [draw(st.sampled_from(node) if node else _JSON)]
        elif operation == "drop" and parent is not None:
            del parent[key]
            continue
        else:
            continue
        if parent is None:
            metadata = new
        else:
            parent[key] = new
    return metadata


def _load_edited(directory, metadata, modules=()):
    """load_ensemble on a copy of ``directory`` with this metadata (warnings ignored)."""
    with tempfile.TemporaryDirectory() as target:
        shutil.copy(directory / "weights.safetensors", target)
        with open(os.path.join(target, "metadata.json"), "w") as handle:
            json.dump(metadata, handle)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return load_ensemble(target, modules=modules)
            except InvalidEnsembleFile:
                return None


def _tolerance(metadata, original):
    """Exact, unless the edit changed the batch size predictions run in (float32 sums)."""
    same = (isinstance(metadata, dict) and isinstance(metadata.get("net_params"), dict)
            and metadata["net_params"].get("batch_size") == original["net_params"]["batch_size"])
    return 0.0 if same else 1e-6


def _check_a_random_edit(saved, data, same_predictions):
    """Edit the saved metadata at random; if it still loads, ``same_predictions(loaded,
    fitted, X, tolerance)`` checks that it predicts as the saved ensemble did."""
    directory, fitted = saved
    original = json.loads((directory / "metadata.json").read_text())
    metadata = data.draw(_edited(original))
    loaded = _load_edited(directory, metadata)
    if loaded is not None:
        same_predictions(loaded, fitted, data_rows(), _tolerance(metadata, original))


def _same_proba(loaded, clf, X, tolerance):
    proba = loaded.predict_proba(X)
    assert np.all(proba >= 0) and np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=0, atol=tolerance)


def _same_mean_and_std(loaded, reg, X, tolerance):
    for got, expected in zip(loaded.predict(X, return_std=True), reg.predict(X, return_std=True)):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)


_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


@_SETTINGS
@given(data=st.data())
def test_a_randomly_edited_classifier_file_loads_right_or_not_at_all(classifier, data):
    _check_a_random_edit(classifier, data, _same_proba)


@_SETTINGS
@given(data=st.data())
def test_a_randomly_edited_regressor_file_loads_right_or_not_at_all(regressor, data):
    _check_a_random_edit(regressor, data, _same_mean_and_std)


def _dict_rows(n):
    rng = np.random.default_rng(1)
    return {"ids": rng.integers(0, 7, (n, 5)), "x": rng.normal(size=(n, 2))}


@pytest.fixture(scope="module")
def dict_classifier(tmp_path_factory):
    X, y = _dict_rows(60), np.random.default_rng(2).integers(0, 3, 60)
    net = default_classifier_net(TokensAndFeatures).set_params(max_epochs=3, batch_size=16)
    clf = SnapshotEnsembleClassifier(net, n_snapshots=2, weighting="uniform",
                                     random_state=0).fit(X, y)
    directory = tmp_path_factory.mktemp("dict_classifier")
    save_ensemble(clf, directory)
    load_ensemble(directory, modules=[TokensAndFeatures])
    return directory, clf


@_SETTINGS
@given(data=st.data())
def test_a_randomly_edited_dict_input_file_loads_right_or_not_at_all(dict_classifier, data):
    # Or loads with a sample_shape_ its inputs no longer match, which every predict refuses.
    directory, clf = dict_classifier
    X = _dict_rows(16)
    original = json.loads((directory / "metadata.json").read_text())
    metadata = data.draw(_edited(original))
    loaded = _load_edited(directory, metadata, modules=[TokensAndFeatures])
    if loaded is None:
        return
    try:
        proba = loaded.predict_proba(X)
    except ValueError as exc:
        assert "samples of shape" in str(exc) and loaded.sample_shape_ != clf.sample_shape_
        return
    assert np.all(proba >= 0) and np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=0,
                               atol=_tolerance(metadata, original))


def data_rows():
    """A few fixed rows of six features (the fixtures' width)."""
    return np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)


class NotOnMeta(torch.nn.Module):
    """A module whose forward needs real values (so the loader checks it for real)."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_classes)

    def forward(self, X):
        if not bool(torch.isfinite(X).all()):  # data-dependent: fails on the meta device
            raise ValueError("non-finite input")
        return self.linear(X)


@pytest.mark.parametrize("n_features, message", [
    (10**9, r"fitted\.n_features_in_ is 1000000000: rows that wide cannot be checked"),
    (5, r"fitted\.n_features_in_ is 5, but the module fails on rows of that width"),
])
def test_a_module_checked_for_real_gets_no_huge_rows(data, tmp_path, n_features, message):
    X, y = data
    clf = SnapshotEnsembleClassifier(default_classifier_net(NotOnMeta).set_params(max_epochs=2),
                                     n_snapshots=2, random_state=0).fit(X, y)
    save_ensemble(clf, tmp_path / "saved")
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(
        load_ensemble(tmp_path / "saved", modules=[NotOnMeta]).predict_proba(X),
        clf.predict_proba(X))
    target = _copy(tmp_path / "saved", tmp_path)
    metadata = json.loads((target / "metadata.json").read_text())
    metadata["fitted"].update(n_features_in_=n_features, sample_shape_=[n_features])
    (target / "metadata.json").write_text(json.dumps(metadata))
    before, start = _peak_rss_mib(), time.perf_counter()
    with pytest.raises(InvalidEnsembleFile, match=message):
        load_ensemble(target, modules=[NotOnMeta])
    assert time.perf_counter() - start < 1 and _peak_rss_mib() - before < 200
