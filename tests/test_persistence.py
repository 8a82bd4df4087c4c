"""Pickle-free saving and loading (safetensors + JSON)."""

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from sksnapshot import (
    SnapshotEnsembleClassifier,
    default_classifier_net,
    load_ensemble,
    save_ensemble,
)

from .conftest import tiny_net


class Wide(torch.nn.Module):
    def __init__(self, n_features, n_classes, width=12):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(n_features, width), torch.nn.Tanh(),
                                        torch.nn.Linear(width, n_classes))

    def forward(self, X):
        return self.body(X)


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    frame = pd.DataFrame(X, columns=[f"c{i}" for i in range(6)])
    labels = np.array(["ant", "bee", "cow"])[y]
    return SnapshotEnsembleClassifier(tiny_net(module__batch_norm=True), n_snapshots=3,
                                      random_state=0).fit(frame, labels), frame


@pytest.mark.parametrize("combine", ["proba", "weights"])
def test_round_trip_predicts_identically(fitted, tmp_path, combine):
    clf, frame = fitted
    clf.set_params(combine=combine).select(frame.iloc[:40], clf.predict(frame.iloc[:40]))
    save_ensemble(clf, tmp_path)
    loaded = load_ensemble(tmp_path)
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))
    assert loaded.predict(frame).tolist() == clf.predict(frame).tolist()
    assert loaded.classes_.dtype == clf.classes_.dtype
    assert loaded.feature_names_in_.tolist() == clf.feature_names_in_.tolist()
    assert loaded.members_.tolist() == clf.members_.tolist()
    np.testing.assert_allclose(loaded.weights_, clf.weights_)
    assert loaded.get_params()["n_snapshots"] == 3 and loaded.combine == combine
    assert len(loaded.net_.history) == len(clf.net_.history)
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["module"] == "sksnapshot._modules.MLPModule"
    assert set(metadata["versions"]) == {"sksnapshot", "torch", "skorch", "scikit-learn"}


def test_a_user_module_must_be_allowed_explicitly(data, tmp_path):
    X, y = data
    clf = SnapshotEnsembleClassifier(default_classifier_net(Wide).set_params(max_epochs=4),
                                     n_snapshots=2, random_state=0).fit(X, y)
    save_ensemble(clf, tmp_path)
    with pytest.raises(ValueError, match=r"module class '.*Wide', which is not among the allowed"):
        load_ensemble(tmp_path)
    loaded = load_ensemble(tmp_path, modules=[Wide])
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_metadata_naming_another_class_is_refused_without_importing_it(fitted, tmp_path):
    clf, _ = fitted
    save_ensemble(clf, tmp_path)
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    metadata["module"] = "os.system"
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="'os.system', which is not among the allowed modules"):
        load_ensemble(tmp_path)


def test_tensors_of_the_wrong_shape_are_refused(fitted, tmp_path):
    clf, _ = fitted
    save_ensemble(clf, tmp_path)
    tensors = load_file(tmp_path / "weights.safetensors")
    tensors["snapshot.1.layers.0.weight"] = torch.zeros(3, 3)
    save_file(tensors, tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match=r"snapshot\.1\.layers\.0\.weight .* shape \(3, 3\)"):
        load_ensemble(tmp_path)
    del tensors["snapshot.1.layers.0.weight"]
    save_file(tensors, tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="do not match the module"):
        load_ensemble(tmp_path)


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_payload_in_the_files_runs_nothing(fitted, tmp_path):
    clf, _ = fitted
    save_ensemble(clf, tmp_path)
    sentinel = tmp_path / "pwned"
    (tmp_path / "weights.safetensors").write_bytes(pickle.dumps(Payload(str(sentinel))))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_ensemble(tmp_path)
    (tmp_path / "metadata.json").write_bytes(pickle.dumps(Payload(str(sentinel))))
    with pytest.raises(ValueError, match="not valid JSON"):
        load_ensemble(tmp_path)
    assert not os.path.exists(sentinel)


def test_what_cannot_be_saved_without_pickle_says_so(data, tmp_path):
    X, y = data
    clf = SnapshotEnsembleClassifier(Wide(6, 3), n_snapshots=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="module class .not an instance"):
        save_ensemble(clf, tmp_path)
    with pytest.raises(Exception, match="not fitted"):
        save_ensemble(SnapshotEnsembleClassifier(), tmp_path)


@pytest.mark.parametrize("gaussian", [False, True])
def test_regressors_round_trip(data, tmp_path, gaussian):
    from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net

    X, _ = data
    y = X[:, :2] @ np.array([[1.0, -0.5], [0.3, 2.0]])
    net = default_regressor_net(gaussian=gaussian).set_params(max_epochs=5, lr=0.01)
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, random_state=0).fit(X, y)
    save_ensemble(reg, tmp_path)
    loaded = load_ensemble(tmp_path)
    assert type(loaded) is SnapshotEnsembleRegressor and loaded.gaussian_ == gaussian
    for a, b in zip(loaded.predict(X, return_std=True), reg.predict(X, return_std=True)):
        np.testing.assert_array_equal(a, b)
