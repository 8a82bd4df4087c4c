"""Pickle-free saving and loading (safetensors + JSON)."""

import json
import math
import os
import pickle
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from sksnapshot import (
    InvalidEnsembleFile,
    SnapshotEnsembleClassifier,
    default_classifier_net,
    load_ensemble,
    save_ensemble,
)
from sksnapshot.calibration import apply_temperature

from .conftest import TokensAndFeatures, tiny_net


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
    # A round trip in one process: the same weights through the same code, bit for bit.
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
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_metadata_naming_another_class_is_refused_without_importing_it(fitted, tmp_path):
    clf, _ = fitted
    save_ensemble(clf, tmp_path)
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    metadata["module"] = "os.system"
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError,
                       match=r"metadata\.json: module asks for the module class 'os.system', "
                             "which is not among the allowed modules"):
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


class ProbaMLP(torch.nn.Module):
    """Returns probabilities, as skorch expects of a module trained with NLLLoss."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_classes)

    def forward(self, X):
        return torch.softmax(self.linear(X), dim=-1)


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
    # A round trip in one process: the same weights through the same code, bit for bit.
    for a, b in zip(loaded.predict(X, return_std=True), reg.predict(X, return_std=True)):
        np.testing.assert_array_equal(a, b)


# -- a file edited by someone else loads right or not at all (issue 15) ----------

@pytest.fixture(scope="module")
def saved_fit(data, tmp_path_factory):
    """A classifier (labels 'ant', 'bee', 'cow', named features, BatchNorm) saved once."""
    X, y = data
    frame = pd.DataFrame(X, columns=[f"c{i}" for i in range(6)])
    labels = np.array(["ant", "bee", "cow"])[y]
    # Uncalibrated (temperature_ 1.0), so that a format-1 copy predicts the same.
    clf = SnapshotEnsembleClassifier(tiny_net(module__batch_norm=True), n_snapshots=3,
                                     calibration=None, random_state=0).fit(frame, labels)
    directory = tmp_path_factory.mktemp("saved")
    save_ensemble(clf, directory)
    return directory, clf, frame


@pytest.fixture
def saved(saved_fit):
    return saved_fit[0]


def edited(saved, tmp_path, edit):
    """A copy of the saved directory whose metadata.json ``edit`` changed in place."""
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    metadata = json.loads((target / "metadata.json").read_text())
    result = edit(metadata)
    (target / "metadata.json").write_text(json.dumps(metadata if result is None else result))
    return target


def set_at(dotted, value):
    def edit(metadata):
        *parents, last = dotted.split(".")
        node = metadata
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


def drop(dotted):
    def edit(metadata):
        *parents, last = dotted.split(".")
        node = metadata
        for key in parents:
            node = node[key]
        del node[last]
    return edit


REFUSED = {
    # criterion and nonlinearity that would not give probabilities
    "criterion MSELoss": (set_at("criterion", "MSELoss"), r"criterion must be one of"),
    "criterion NLLLoss": (set_at("criterion", "NLLLoss"), r"criterion is NLLLoss, which needs"),
    "predict_nonlinearity null": (set_at("net_params.predict_nonlinearity", None),
                                  r"net_params\.predict_nonlinearity is not a field"),
    # weights
    "negative weights": (set_at("fitted.weights_", [-3, 4, 0]), r"fitted\.weights_ must be finite"),
    "zero weights": (set_at("fitted.weights_", [0, 0, 0]), r"fitted\.weights_ must be finite"),
    "NaN weight": (set_at("fitted.weights_", [math.nan, 0.5, 0.5]),
                   r"fitted\.weights_ must be finite"),
    "weights not summing to 1": (set_at("fitted.weights_", [0.5, 0.5, 0.5]),
                                 r"fitted\.weights_ must be finite.*sum to 1"),
    "fewer weights than members": (set_at("fitted.weights_", [0.5, 0.5]),
                                   r"fitted\.weights_ must have 3 entries"),
    "string weights": (set_at("fitted.weights_", ["0.2", "0.3", "0.5"]), r"fitted\.weights_"),
    # classes
    "fewer classes than outputs": (set_at("fitted.classes_.values", ["ant", "bee"]),
                                   r"fitted\.classes_ has 2 classes, but the module .* returns 3"),
    "more classes than outputs": (set_at("fitted.classes_.values", ["ant", "bee", "cow", "dog"]),
                                  r"fitted\.classes_ has 4 classes"),
    "unsorted classes": (set_at("fitted.classes_.values", ["bee", "ant", "cow"]),
                         r"fitted\.classes_\.values must be unique and sorted"),
    "repeated classes": (set_at("fitted.classes_.values", ["ant", "ant", "cow"]),
                         r"fitted\.classes_\.values must be unique and sorted"),
    "mixed class types": (set_at("fitted.classes_.values", ["ant", 1, "cow"]),
                          r"fitted\.classes_\.values must all be of one type"),
    "bad dtype string": (set_at("fitted.classes_.dtype", "not a dtype"),
                         r"fitted\.classes_\.dtype must be a numpy dtype"),
    "structured dtype": (set_at("fitted.classes_.dtype", "i4,i4"), r"fitted\.classes_\.dtype"),
    "classes truncated by dtype": (set_at("fitted.classes_.dtype", "<U2"),
                                   r"fitted\.classes_\.values do not survive conversion"),
    # members
    "member out of range": (set_at("fitted.members_", [0, 1, 3]), r"fitted\.members_ must be"),
    "negative member": (set_at("fitted.members_", [-1, 0, 1]), r"fitted\.members_ must be"),
    "fractional member": (set_at("fitted.members_", [0, 1.5, 2]), r"fitted\.members_ must be"),
    "nested members": (set_at("fitted.members_", [[0, 1], 2, 2]), r"fitted\.members_ must be"),
    "repeated members": (set_at("fitted.members_", [0, 0, 2]), r"fitted\.members_ must be"),
    "unordered members": (set_at("fitted.members_", [2, 1, 0]), r"fitted\.members_ must be"),
    "no members": (set_at("fitted.members_", []), r"fitted\.members_ must have at least 1"),
    # structure
    "missing fitted key": (drop("fitted.n_iter_"), r"fitted\.n_iter_ is missing"),
    "missing net param": (drop("net_params.lr"), r"net_params\.lr is missing"),
    "missing top-level key": (drop("history"), r"history is missing"),
    "unknown top-level key": (set_at("extra", 1), r"extra is not a field of this format"),
    "unknown fitted key": (set_at("fitted.coef_", [1]), r"fitted\.coef_ is not a field"),
    "top-level list": (lambda metadata: [metadata], r"the top level must be a JSON object"),
    "module as a list": (set_at("module", ["sksnapshot._modules.MLPModule"]),
                         r"module must be a string"),
    "device from the file": (set_at("net_params.device", "cuda"),
                             r"net_params\.device is not a field"),
    "module argument the module lacks": (set_at("net_params.module__activation", "tanh"),
                                         r"net_params\.module__activation is not a parameter"),
    "no snapshots": (set_at("n_snapshots", 0), r"n_snapshots must be an integer in \[1, inf\]"),
    "more snapshots than saved": (set_at("n_snapshots", 4), r"fitted\.snapshot_epochs_ must have"),
    "boolean snapshot count": (set_at("n_snapshots", True), r"n_snapshots must be an integer"),
    "averaged without tensors": (set_at("averaged", True), r"averaged is true, but"),
    "other estimator kind": (set_at("estimator", "SnapshotEnsembleRegressor"),
                             r"criterion must be one of|fitted\.\w+ is missing"),
    "unknown estimator": (set_at("estimator", "os.system"), r"estimator must be one of"),
    "newer format": (set_at("format_version", 3),
                     r"format_version is 3; .* reads formats 1 and 2 only"),
    "boolean format": (set_at("format_version", True), r"format_version is True"),
    "wrong feature count": (lambda metadata: metadata["fitted"].update(
        n_features_in_=5, feature_names_in_=list("abcde")),
        r"fitted\.n_features_in_ is 5, but the module takes 6 features"),
    "feature names of another length": (set_at("fitted.feature_names_in_", ["a"]),
                                        r"fitted\.feature_names_in_ must have 6 entries"),
    "hidden width weights.safetensors lacks": (
        set_at("net_params.module__hidden_layer_sizes", [17]),
        r"tensor snapshot\.0\.layers\.0\.\w+ has shape"),
    "params refused by the estimator": (set_at("params.n_snapshots", -1),
                                        r"params hold a setting the estimator refuses"),
    "snapshot epochs beyond the history": (set_at("fitted.snapshot_epochs_", [2, 4, 60]),
                                           r"fitted\.snapshot_epochs_ must be non-decreasing"),
    "history of strings": (set_at("history", ["epoch 1"]), r"history\[0\] must be a JSON object"),
    # per-sample shape, snapshot steps, planned steps, temperature (format 2)
    "sample shape of another width": (set_at("fitted.sample_shape_", [7]),
                                      r"fitted\.sample_shape_ is \[7\], but fitted\.n_features_in_ "
                                      r"is 6"),
    "sample shape of images for rows": (set_at("fitted.sample_shape_", [1, 2, 3]),
                                        r"fitted\.sample_shape_ is \[1, 2, 3\], but"),
    "unknown sample shape for rows": (set_at("fitted.sample_shape_", None),
                                      r"fitted\.sample_shape_ must be an array of sizes"),
    "negative sample size": (set_at("fitted.sample_shape_", [-6]),
                             r"fitted\.sample_shape_ must hold at most 32 sizes"),
    "sample sizes as strings": (set_at("fitted.sample_shape_", ["6"]),
                                r"fitted\.sample_shape_ must hold"),
    "sample shape as a string": (set_at("fitted.sample_shape_", "(6,)"),
                                 r"fitted\.sample_shape_ must be an array of sizes"),
    "no sample shape": (drop("fitted.sample_shape_"), r"fitted\.sample_shape_ is missing"),
    "feature names without a width": (drop("fitted.n_features_in_"),
                                      r"fitted\.feature_names_in_ needs fitted\.n_features_in_"),
    "snapshot steps reversed": (lambda metadata: metadata["fitted"]["snapshot_iterations_"]
                                .reverse(), r"fitted\.snapshot_iterations_ must be strictly "
                                            r"increasing"),
    "snapshot steps repeated": (lambda metadata: metadata["fitted"].update(
        snapshot_iterations_=[1, 1, 2]), r"fitted\.snapshot_iterations_ must be strictly"),
    "snapshot step not taken": (lambda metadata: metadata["fitted"]["snapshot_iterations_"]
                                .__setitem__(-1, metadata["fitted"]["n_iter_"]),
                                r"fitted\.snapshot_iterations_ must be .* in \[0, \d+\)"),
    "fewer snapshot steps than snapshots": (set_at("fitted.snapshot_iterations_", [3]),
                                            r"fitted\.snapshot_iterations_ must have 3 entries"),
    "fractional snapshot step": (set_at("fitted.snapshot_iterations_", [1, 2.5, 3]),
                                 r"fitted\.snapshot_iterations_ must be strictly"),
    "no snapshot steps": (drop("fitted.snapshot_iterations_"),
                          r"fitted\.snapshot_iterations_ is missing"),
    "fewer planned steps than the last snapshot's": (
        set_at("fitted.n_iter_planned_", 2),
        r"fitted\.n_iter_planned_ is 2, but fitted\.snapshot_iterations_ has a snapshot after"),
    "no planned step": (set_at("fitted.n_iter_planned_", 0),
                        r"fitted\.n_iter_planned_ must be an integer in \[1, inf\]"),
    "planned steps as a string": (set_at("fitted.n_iter_planned_", "12"),
                                  r"fitted\.n_iter_planned_ must be an integer"),
    "zero temperature": (set_at("fitted.temperature_", 0),
                         r"fitted\.temperature_ must be a finite number above 0"),
    "negative temperature": (set_at("fitted.temperature_", -1.5),
                             r"fitted\.temperature_ must be a finite number above 0"),
    "infinite temperature": (set_at("fitted.temperature_", math.inf),
                             r"fitted\.temperature_ must be finite"),
    "temperature as a string": (set_at("fitted.temperature_", "1.5"),
                                r"fitted\.temperature_ must be a number"),
    "format 1 with format 2 fields": (set_at("format_version", 1),
                                      r"fitted\.\w+ is not a field of this format"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_edited_metadata_file_is_refused_naming_the_field(saved, tmp_path, case):
    edit, message = REFUSED[case]
    target = edited(saved, tmp_path, edit)
    with pytest.raises(InvalidEnsembleFile, match=message) as caught:
        load_ensemble(target)
    assert str(target / "metadata.json") in str(caught.value) or (
        "weights.safetensors" in case and str(target / "weights.safetensors") in str(caught.value))
    assert isinstance(caught.value, ValueError)


def test_the_untouched_copy_loads(saved, tmp_path, saved_fit):
    _, clf, frame = saved_fit
    loaded = load_ensemble(edited(saved, tmp_path, lambda metadata: None))
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))


def test_duplicate_keys_are_refused(saved, tmp_path):
    target = edited(saved, tmp_path, lambda metadata: None)
    text = (target / "metadata.json").read_text()
    (target / "metadata.json").write_text(text.replace('"averaged": false',
                                                       '"averaged": false, "averaged": true'))
    with pytest.raises(InvalidEnsembleFile, match="the key 'averaged' appears twice"):
        load_ensemble(target)


def test_nan_in_a_snapshot_tensor_blames_the_file(saved, tmp_path):
    target = edited(saved, tmp_path, lambda metadata: None)
    tensors = load_file(target / "weights.safetensors")
    tensors["snapshot.1.layers.0.weight"][0, 0] = math.nan
    save_file(tensors, target / "weights.safetensors")
    with pytest.raises(InvalidEnsembleFile, match=r"weights\.safetensors: tensor "
                                                  r"snapshot\.1\.layers\.0\.weight holds NaN"):
        load_ensemble(target)


def test_a_snapshot_the_metadata_does_not_count_is_refused(saved, tmp_path):
    target = edited(saved, tmp_path, lambda metadata: None)
    tensors = load_file(target / "weights.safetensors")
    tensors.update({key.replace("snapshot.2.", "snapshot.3."): value.clone()
                    for key, value in tensors.items() if key.startswith("snapshot.2.")})
    save_file(tensors, target / "weights.safetensors")
    with pytest.raises(InvalidEnsembleFile, match=r"n_snapshots is 3, but weights\.safetensors "
                                                  r"holds the snapshots \[0, 1, 2, 3\]"):
        load_ensemble(target)


def test_no_path_or_device_comes_from_the_file(saved, tmp_path, saved_fit):
    _, clf, frame = saved_fit
    target = edited(saved, tmp_path, set_at("params.checkpoint_dir", str(tmp_path / "elsewhere")))
    with pytest.warns(UserWarning, match="names a checkpoint_dir .* checkpoint_dir is None"):
        loaded = load_ensemble(target)
    assert loaded.checkpoint_dir is None and loaded.net_.device == "cpu"
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))
    assert json.loads((saved / "metadata.json").read_text())["params"]["checkpoint_dir"] is None


def test_a_missing_setting_loads_with_its_default_and_a_warning(saved, tmp_path, saved_fit):
    _, clf, frame = saved_fit
    with pytest.warns(UserWarning, match="params.verbose is missing .* default 0"):
        loaded = load_ensemble(edited(saved, tmp_path, drop("params.verbose")))
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))


@pytest.fixture(scope="module")
def saved_regressor(data, tmp_path_factory):
    from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net

    X, _ = data
    net = default_regressor_net(gaussian=True).set_params(
        max_epochs=4, lr=0.01, module__hidden_layer_sizes=(8,))
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, random_state=0).fit(X, X[:, 0])
    directory = tmp_path_factory.mktemp("saved_regressor")
    save_ensemble(reg, directory)
    return directory, reg


@pytest.mark.parametrize("edit, message", [
    (set_at("criterion", "MSELoss"), r"fitted\.gaussian_ is true, but the criterion is MSELoss"),
    (set_at("criterion", "CrossEntropyLoss"), r"criterion must be one of"),
    (set_at("fitted.gaussian_", False), r"fitted\.gaussian_ is false"),
    (set_at("fitted.n_outputs_", 2), r"fitted\.single_output is true, but fitted\.n_outputs_ is 2"),
    (set_at("net_params.module__gaussian", False), r"net_params\.module__gaussian must equal"),
    (set_at("params.selection", "diverse"), r"params hold a setting"),
    (set_at("fitted.validation_scores_", {"mse": [1.0, 2.0]}),
     r"fitted\.validation_scores_\.gaussian_nll is missing"),
])
def test_an_edited_regressor_file_is_refused(saved_regressor, tmp_path, edit, message):
    directory, _ = saved_regressor
    with pytest.raises(InvalidEnsembleFile, match=message):
        load_ensemble(edited(directory, tmp_path, edit))


def test_nll_loss_loads_only_with_a_module_returning_probabilities(data, tmp_path):
    X, y = data
    net = default_classifier_net(ProbaMLP).set_params(criterion=torch.nn.NLLLoss, max_epochs=2)
    clf = SnapshotEnsembleClassifier(net, n_snapshots=2, random_state=0).fit(X, y)
    save_ensemble(clf, tmp_path / "proba")
    loaded = load_ensemble(tmp_path / "proba", modules=[ProbaMLP])
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))

    logits = SnapshotEnsembleClassifier(default_classifier_net(Wide).set_params(max_epochs=2),
                                        n_snapshots=2, random_state=0).fit(X, y)
    save_ensemble(logits, tmp_path / "logits")
    target = edited(tmp_path / "logits", tmp_path, set_at("criterion", "NLLLoss"))
    with pytest.raises(InvalidEnsembleFile, match="criterion is NLLLoss, so the module must "
                                                  "return probabilities"):
        load_ensemble(target, modules=[Wide])


# -- N-D arrays, dicts of arrays (format 2) ------------------------------------------

class TinyCNN(torch.nn.Module):
    """Images of one channel: (N, 1, H, W)."""

    def __init__(self, n_classes, channels=2):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, channels, 3, padding=1)
        self.head = torch.nn.Linear(channels, n_classes)

    def forward(self, X):
        return self.head(torch.relu(self.conv(X)).mean(dim=(2, 3)))


class SequenceRegressor(torch.nn.Module):
    """Sequences (N, T, F) to n_outputs values."""

    def __init__(self, n_outputs, hidden=4):
        super().__init__()
        self.gru = torch.nn.GRU(3, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, n_outputs)

    def forward(self, X):
        return self.head(self.gru(X)[0][:, -1])


def _nd_case(name):
    """(estimator, X, module class) fitted on a small set of samples of each kind."""
    from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net

    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 3, n)
    if name == "images":
        X = rng.normal(size=(n, 1, 5, 5)).astype(np.float32)
        net = default_classifier_net(TinyCNN)
        estimator = SnapshotEnsembleClassifier(net.set_params(max_epochs=3, batch_size=16),
                                               n_snapshots=2, weighting="uniform", random_state=0)
        return estimator.fit(X, y), X, TinyCNN
    if name == "tokens and features":
        X = {"ids": rng.integers(0, 7, (n, 5)), "x": rng.normal(size=(n, 2))}
        net = default_classifier_net(TokensAndFeatures)
        estimator = SnapshotEnsembleClassifier(net.set_params(max_epochs=3, batch_size=16),
                                               n_snapshots=2, weighting="uniform", random_state=0)
        return estimator.fit(X, y), X, TokensAndFeatures
    X = rng.normal(size=(n, 4, 3)).astype(np.float32)
    net = default_regressor_net(SequenceRegressor).set_params(max_epochs=3, batch_size=16, lr=0.01)
    estimator = SnapshotEnsembleRegressor(net, n_snapshots=2, weighting="uniform", random_state=0)
    return estimator.fit(X, X[:, -1, :2]), X, SequenceRegressor


ND_CASES = ("images", "tokens and features", "sequences")


@pytest.fixture(scope="module")
def nd_saved(tmp_path_factory):
    saved = {}
    for name in ND_CASES:
        estimator, X, module = _nd_case(name)
        directory = tmp_path_factory.mktemp(name.replace(" ", "_"))
        save_ensemble(estimator, directory)
        saved[name] = directory, estimator, X, module
    return saved


def _predictions(estimator, X):
    if hasattr(estimator, "predict_proba"):
        return [estimator.predict_proba(X), estimator.predict(X)]
    return list(estimator.predict(X, return_std=True))


@pytest.mark.parametrize("name", ND_CASES)
def test_nd_and_dict_inputs_round_trip(nd_saved, name):
    directory, estimator, X, module = nd_saved[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every check ran: no warning
        loaded = load_ensemble(directory, modules=[module])
    # A round trip in one process: the same weights through the same code, bit for bit.
    for got, expected in zip(_predictions(loaded, X), _predictions(estimator, X)):
        np.testing.assert_array_equal(got, expected)
    assert loaded.sample_shape_ == estimator.sample_shape_
    assert loaded.snapshot_iterations_ == estimator.snapshot_iterations_
    assert loaded.n_iter_planned_ == estimator.n_iter_planned_ == estimator.n_iter_
    assert not hasattr(loaded, "n_features_in_") and not hasattr(loaded, "feature_names_in_")
    fitted = json.loads((directory / "metadata.json").read_text())["fitted"]
    assert "n_features_in_" not in fitted
    assert getattr(loaded, "temperature_", 1.0) == getattr(estimator, "temperature_", 1.0)
    with pytest.raises(ValueError, match="samples of shape"):  # still checked at predict
        loaded.predict(np.zeros((2, 3), dtype=np.float32))


@pytest.mark.parametrize("name", ["images", "tokens and features"])
def test_nd_files_are_probed_with_their_sample_shape(nd_saved, tmp_path, name):
    directory, _, _, module = nd_saved[name]
    target = edited(directory, tmp_path, set_at("fitted.classes_.values", [0, 1, 2, 3]))
    with pytest.raises(InvalidEnsembleFile, match=r"fitted\.classes_ has 4 classes, but the "
                                                  r"module .* returns 3"):
        load_ensemble(target, modules=[module])


@pytest.mark.parametrize("name, edit, message", [
    ("images", set_at("fitted.n_features_in_", 25),
     r"fitted\.sample_shape_ is \[1, 5, 5\], but fitted\.n_features_in_ is 25"),
    ("images", set_at("fitted.sample_shape_", [1, 5, -5]), r"fitted\.sample_shape_ must hold"),
    ("images", set_at("fitted.sample_shape_", [1] * 33), r"fitted\.sample_shape_ must hold at "
                                                         r"most 32 sizes"),
    ("tokens and features", set_at("fitted.sample_shape_.x", "2"),
     r"fitted\.sample_shape_\.x must be an array of sizes"),
    ("tokens and features", set_at("fitted.sample_shape_", {}),
     r"fitted\.sample_shape_ must name at least one input"),
    ("sequences", set_at("fitted.snapshot_iterations_", [11, 5]),
     r"fitted\.snapshot_iterations_ must be strictly increasing"),
    ("sequences", set_at("fitted.n_iter_planned_", 3), r"fitted\.n_iter_planned_ is 3, but"),
    ("sequences", set_at("fitted.temperature_", 1.0), r"fitted\.temperature_ is not a field"),
])
def test_an_edited_nd_file_is_refused_naming_the_field(nd_saved, tmp_path, name, edit, message):
    directory, _, _, module = nd_saved[name]
    with pytest.raises(InvalidEnsembleFile, match=message):
        load_ensemble(edited(directory, tmp_path, edit), modules=[module])


def test_a_sample_shape_no_probe_runs_on_loads_with_a_warning_and_predict_refuses(nd_saved,
                                                                                  tmp_path):
    # The input dtypes are not saved: a module failing on float32 and int64 zeros of the
    # saved shape may need other inputs (a bool mask), so it is not refused; but predict
    # checks every input against the saved shape.
    directory, _, X, module = nd_saved["images"]
    target = edited(directory, tmp_path, set_at("fitted.sample_shape_", [2, 5, 5]))
    with pytest.warns(UserWarning, match=r"the module fails on zeros of fitted\.sample_shape_ "
                                         r"\[2, 5, 5\] .*loaded without checking its output "
                                         r"width"):
        loaded = load_ensemble(target, modules=[module])
    with pytest.raises(ValueError, match=r"samples of shape \(1, 5, 5\), but .* fitted on "
                                         r"samples of shape \(2, 5, 5\)"):
        loaded.predict_proba(X)


def test_an_unknown_sample_shape_is_neither_saved_nor_loaded(nd_saved, tmp_path, monkeypatch):
    # A torch Dataset whose samples are not arrays leaves sample_shape_ None: no probe
    # could be built, and a file saying so would skip the checks of any file.
    directory, estimator, _, module = nd_saved["images"]
    monkeypatch.setattr(estimator, "sample_shape_", None)
    with pytest.raises(ValueError, match=r"sample_shape_=None: the shape of the samples .* "
                                         r"is unknown .*Fit on a Dataset returning tensors"):
        save_ensemble(estimator, tmp_path / "unknown")
    for shape in (None, {"X": None}):
        with pytest.raises(InvalidEnsembleFile, match=r"fitted\.sample_shape_(\.X)? must be an "
                                                      r"array of sizes or an object"):
            load_ensemble(edited(directory, tmp_path / str(shape is None),
                                 set_at("fitted.sample_shape_", shape)), modules=[module])


def test_a_dataset_fit_saves_its_sample_shape(tmp_path):
    # A regressor: a classifier fitted on a Dataset does not train yet (skorch cannot
    # infer its classes without y).
    from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net

    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(40, 4, 3)), dtype=torch.float32)
    y = X[:, -1, :2].clone()
    net = default_regressor_net(SequenceRegressor).set_params(max_epochs=2, batch_size=16)
    reg = SnapshotEnsembleRegressor(net, n_snapshots=2, weighting="uniform", random_state=0)
    reg.fit(torch.utils.data.TensorDataset(X, y))
    save_ensemble(reg, tmp_path)
    loaded = load_ensemble(tmp_path, modules=[SequenceRegressor])
    assert loaded.sample_shape_ == (4, 3)
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict(X.numpy()), reg.predict(X.numpy()))


def test_input_names_that_are_not_strings_are_not_saved(nd_saved, tmp_path, monkeypatch):
    _, estimator, _, _ = nd_saved["tokens and features"]
    monkeypatch.setattr(estimator, "sample_shape_", {0: (5,), "x": (2,)})
    with pytest.raises(ValueError, match="input names that are not strings"):
        save_ensemble(estimator, tmp_path)


# -- temperature_ (for temperature scaling) -------------------------------------------

@pytest.mark.parametrize("value", [1.5, 2, None])
def test_a_temperature_is_restored(saved, tmp_path, saved_fit, value):
    _, clf, frame = saved_fit
    loaded = load_ensemble(edited(saved, tmp_path, set_at("fitted.temperature_", value)))
    # null: not calibrated (1.0); the saved estimator is uncalibrated (see saved_fit).
    # Read from the file's JSON, or the constant 1.0: exact.
    assert loaded.temperature_ == (1.0 if value is None else value)
    assert type(loaded.temperature_) is float
    expected = apply_temperature(np.log(clf.predict_proba(frame)), loaded.temperature_)
    np.testing.assert_allclose(loaded.predict_proba(frame), expected, atol=1e-12)


def test_a_temperature_is_saved_only_when_the_estimator_has_one(saved, saved_fit, tmp_path,
                                                                monkeypatch):
    _, clf, _ = saved_fit
    monkeypatch.delattr(clf, "temperature_")  # as an ensemble pickled before it existed
    save_ensemble(clf, tmp_path / "cold")
    assert "temperature_" not in json.loads((tmp_path / "cold" / "metadata.json").read_text())[
        "fitted"]
    assert not hasattr(load_ensemble(tmp_path / "cold"), "temperature_")
    monkeypatch.setattr(clf, "temperature_", np.float64(1.25), raising=False)
    save_ensemble(clf, tmp_path / "warm")
    # Written to and read from JSON, no arithmetic: exact.
    assert load_ensemble(tmp_path / "warm").temperature_ == 1.25
    monkeypatch.setattr(clf, "temperature_", float("nan"))
    with pytest.raises(ValueError, match="temperature_=nan cannot be saved"):
        save_ensemble(clf, tmp_path / "nan")


# -- files of format 1 (before sample_shape_, snapshot_iterations_, n_iter_planned_) ---

def as_format_1(metadata):
    metadata["format_version"] = 1
    for name in ("sample_shape_", "snapshot_iterations_", "n_iter_planned_", "temperature_"):
        metadata["fitted"].pop(name, None)


def test_a_format_1_file_loads_with_defaults(saved, tmp_path, saved_fit):
    _, clf, frame = saved_fit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every cycle left a snapshot: exact, no warning
        loaded = load_ensemble(edited(saved, tmp_path, as_format_1))
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))
    assert loaded.sample_shape_ == (6,) == clf.sample_shape_
    assert loaded.snapshot_iterations_ == clf.snapshot_iterations_
    assert loaded.n_iter_planned_ == loaded.n_iter_ == clf.n_iter_planned_


def test_a_format_1_file_of_the_linear_schedule_gets_its_snapshot_steps(data, tmp_path):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(max_epochs=4), n_snapshots=2, schedule="linear",
                                     weighting="uniform", random_state=0).fit(X, y)
    save_ensemble(clf, tmp_path / "saved")
    loaded = load_ensemble(edited(tmp_path / "saved", tmp_path, as_format_1))
    assert loaded.snapshot_iterations_ == clf.snapshot_iterations_


def test_the_warmup_schedule_is_saved_by_name(data, tmp_path):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(max_epochs=4), n_snapshots=2,
                                     schedule="cosine_warmup", random_state=0).fit(X, y)
    save_ensemble(clf, tmp_path / "saved")
    loaded = load_ensemble(tmp_path / "saved")
    assert loaded.schedule == "cosine_warmup"
    # A round trip in one process: the same weights through the same code, bit for bit.
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_a_format_1_file_missing_cycles_gets_approximate_steps(saved, tmp_path):
    edit = [as_format_1, set_at("params.n_snapshots", 4)]
    with pytest.warns(UserWarning, match="format 1 files do not record the step of each "
                                         "snapshot.*an approximation"):
        loaded = load_ensemble(edited(saved, tmp_path, lambda m: [e(m) for e in edit] and None))
    from sksnapshot.schedules import snapshot_iterations
    assert loaded.snapshot_iterations_ == snapshot_iterations(loaded.n_iter_, 3).tolist()


@pytest.mark.parametrize("edit, message", [
    (set_at("fitted.n_iter_", 2), r"fitted\.n_iter_ is 2, fewer optimizer steps than the 3"),
    (drop("fitted.n_features_in_"), r"fitted\.n_features_in_ is missing"),
    (set_at("fitted.temperature_", 1.0), r"fitted\.temperature_ is not a field"),
])
def test_an_edited_format_1_file_is_refused(saved, tmp_path, edit, message):
    with pytest.raises(InvalidEnsembleFile, match=message):
        load_ensemble(edited(saved, tmp_path, lambda m: [as_format_1(m), edit(m)] and None))
