"""Saving a fitted ensemble without pickle: safetensors weights + JSON metadata.

``joblib.dump``/``pickle`` keep working, but unpickling a file can run any code
it carries, so such files must come from a trusted source. The format here
cannot: tensors are read by safetensors, everything else is JSON, and the module
is rebuilt only from classes the caller allows, never by importing a name that
the file spells out.
"""

import json
import pathlib
import warnings
from collections import OrderedDict

import numpy as np
import sklearn
import skorch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted
from skorch.history import History

from ._data import torch_seed
from ._modules import GaussianNLLCriterion, MLPModule, MLPRegressorModule
from ._version import __version__

__all__ = ["save_ensemble", "load_ensemble"]

FORMAT_VERSION = 1
_WEIGHTS, _METADATA = "weights.safetensors", "metadata.json"
# Criteria that decide how logits become probabilities; looked up by name only.
_CRITERIA = {c.__name__: c for c in (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss,
                                      torch.nn.MSELoss, GaussianNLLCriterion)}
_FITTED_ARRAYS = ("members_", "weights_", "feature_names_in_", "disagreement_")


def _qualified_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _json_ready(name, value):
    """``value`` as JSON, tuples as lists; a clear error for anything else."""
    try:
        return json.loads(json.dumps(value, default=_numpy_to_python))
    except TypeError as exc:
        raise ValueError(
            f"{name}={value!r} cannot be saved without pickle (only numbers, strings, "
            "lists and dicts can); use joblib.dump for this ensemble."
        ) from exc


def _numpy_to_python(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(type(value).__name__)


def save_ensemble(estimator, path):
    """Save a fitted snapshot ensemble to a directory, without pickle.

    Writes ``weights.safetensors`` (every snapshot and, with
    ``combine="weights"``, the averaged model) and ``metadata.json`` (classes,
    feature names, chosen members and weights, the module's class name and
    constructor arguments, the training history and library versions).

    Parameters
    ----------
    estimator : SnapshotEnsembleClassifier or SnapshotEnsembleRegressor
        A fitted ensemble whose module arguments are plain JSON values.
    path : str or path-like
        Directory to write; created if missing.

    See Also
    --------
    load_ensemble : read it back.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn.datasets import load_iris
    >>> from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
    >>> X, y = load_iris(return_X_y=True)
    >>> net = default_classifier_net().set_params(max_epochs=4)
    >>> clf = SnapshotEnsembleClassifier(net, n_snapshots=2, random_state=0).fit(X, y)
    >>> directory = tempfile.mkdtemp()
    >>> save_ensemble(clf, directory)
    >>> loaded = load_ensemble(directory)
    >>> bool((loaded.predict_proba(X) == clf.predict_proba(X)).all())
    True
    """
    check_is_fitted(estimator, "snapshots_")
    net = estimator.net_
    if not isinstance(net.module, type):
        raise ValueError("Only nets built from a module class (not an instance) can be "
                         "saved without pickle; use joblib.dump.")
    criterion = net.criterion if isinstance(net.criterion, type) else type(net.criterion)
    if criterion.__name__ not in _CRITERIA or net.predict_nonlinearity != "auto":
        raise ValueError(
            f"Saving without pickle supports the criteria {sorted(_CRITERIA)} with "
            "predict_nonlinearity='auto'; use joblib.dump for this ensemble."
        )
    params = estimator.get_params(deep=False)
    settings = {k: v for k, v in params.items() if k not in ("net", "schedule", "random_state")}
    settings["checkpoint_dir"] = None if params["checkpoint_dir"] is None else str(params["checkpoint_dir"])
    settings["schedule"] = params["schedule"] if isinstance(params["schedule"], str) else None
    settings["random_state"] = params["random_state"] if isinstance(params["random_state"], int) else None
    net_params = {k: v for k, v in net.get_params(deep=False).items()
                  if k.startswith("module__") or k in ("lr", "max_epochs", "batch_size")}
    fitted = {name: getattr(estimator, name) for name in _FITTED_ARRAYS if hasattr(estimator, name)}
    if hasattr(estimator, "classes_"):
        fitted["classes_"] = {"values": estimator.classes_.tolist(),
                              "dtype": estimator.classes_.dtype.str}
    else:
        fitted.update(n_outputs_=estimator.n_outputs_, gaussian_=estimator.gaussian_,
                      single_output=estimator._single_output)
    fitted.update(
        n_features_in_=estimator.n_features_in_,
        snapshot_epochs_=estimator.snapshot_epochs_,
        divergences_=estimator.divergences_,
        n_iter_=estimator.n_iter_,
        validation_scores_=estimator.validation_scores_,
    )
    metadata = {
        "format_version": FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "versions": {"sksnapshot": __version__, "torch": torch.__version__,
                     "skorch": skorch.__version__, "scikit-learn": sklearn.__version__},
        "params": _json_ready("params", settings),
        "module": _qualified_name(net.module),
        "criterion": criterion.__name__,
        "net_params": _json_ready("net params", net_params),
        "fitted": _json_ready("fitted attributes", fitted),
        "n_snapshots": len(estimator.snapshots_),
        "averaged": estimator.averaged_state_ is not None,
        "history": _json_ready("history", net.history.to_list()),
    }
    tensors = {f"snapshot.{i}.{key}": value.contiguous()
               for i, state in enumerate(estimator.snapshots_) for key, value in state.items()}
    if estimator.averaged_state_ is not None:
        tensors.update({f"averaged.{key}": value.contiguous()
                        for key, value in estimator.averaged_state_.items()})
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path / _WEIGHTS)
    (path / _METADATA).write_text(json.dumps(metadata, indent=1))


def load_ensemble(path, *, modules=(), device="cpu"):
    """Load an ensemble saved by :func:`save_ensemble`; nothing in the files runs.

    Parameters
    ----------
    path : str or path-like
        The directory :func:`save_ensemble` wrote.
    modules : iterable of torch.nn.Module subclasses, default=()
        The module classes this file may use, besides :class:`MLPModule` and
        :class:`MLPRegressorModule`. The
        class the metadata names must be one of them: the loader never imports
        what a file names.
    device : str, default="cpu"
        Where the rebuilt net predicts (an ensemble saved from a GPU loads on
        the CPU by default).

    Returns
    -------
    estimator : SnapshotEnsembleClassifier or SnapshotEnsembleRegressor
        Fitted, predicting exactly as the saved one.
    """
    from ._classifier import SnapshotEnsembleClassifier, default_classifier_net
    from ._regressor import SnapshotEnsembleRegressor, default_regressor_net

    kinds = {SnapshotEnsembleClassifier.__name__: (SnapshotEnsembleClassifier,
                                                   default_classifier_net),
             SnapshotEnsembleRegressor.__name__: (SnapshotEnsembleRegressor,
                                                  default_regressor_net)}

    path = pathlib.Path(path)
    try:
        metadata = json.loads((path / _METADATA).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path / _METADATA} is missing or not valid JSON: {exc}") from exc
    if metadata.get("format_version") != FORMAT_VERSION or metadata.get("estimator") not in kinds:
        raise ValueError(f"{path} does not hold a sksnapshot ensemble of format "
                         f"version {FORMAT_VERSION}.")
    estimator_class, default_net = kinds[metadata["estimator"]]
    allowed = {_qualified_name(cls): cls for cls in (MLPModule, MLPRegressorModule, *modules)}
    module = allowed.get(metadata["module"])
    if module is None:
        raise ValueError(
            f"The file asks for the module class {metadata['module']!r}, which is not "
            f"among the allowed modules {sorted(allowed)}. If you trust this file, pass "
            "that class in modules=[...]; the loader never imports names from a file."
        )
    criterion = _CRITERIA.get(metadata["criterion"])
    if criterion is None:
        raise ValueError(f"Unsupported criterion {metadata['criterion']!r} in {path}.")
    try:
        tensors = load_file(path / _WEIGHTS, device="cpu")
    except (OSError, SafetensorError) as exc:
        raise ValueError(f"{path / _WEIGHTS} is not a valid safetensors file: {exc}") from exc

    params = metadata["params"]
    if params["schedule"] is None:
        warnings.warn("The ensemble was trained with a callable schedule, which cannot be "
                      "saved; the loaded estimator's schedule is 'cosine' for re-fitting.")
        params["schedule"] = "cosine"
    net = default_net(module).set_params(criterion=criterion, device=device,
                                         **metadata["net_params"])
    estimator = estimator_class(net, **params)
    with torch_seed(0):  # initialising draws random weights; keep the caller's RNG intact
        net_ = clone(net).initialize()
    expected = net_.module_.state_dict()

    def state(prefix):
        found = OrderedDict((key[len(prefix):], value) for key, value in tensors.items()
                            if key.startswith(prefix))
        if found.keys() != expected.keys():
            raise ValueError(f"The tensors {prefix}* in {path} do not match the module "
                             f"{metadata['module']}: expected keys {sorted(expected)}, "
                             f"found {sorted(found)}.")
        for key, value in found.items():
            if value.shape != expected[key].shape or value.dtype != expected[key].dtype:
                raise ValueError(
                    f"Tensor {prefix}{key} in {path} has shape {tuple(value.shape)} "
                    f"({value.dtype}); the module needs {tuple(expected[key].shape)} "
                    f"({expected[key].dtype})."
                )
        return found

    estimator.snapshots_ = [state(f"snapshot.{i}.") for i in range(metadata["n_snapshots"])]
    estimator.averaged_state_ = state("averaged.") if metadata["averaged"] else None
    fitted = metadata["fitted"]
    if "classes_" in fitted:
        classes = fitted["classes_"]
        estimator.classes_ = np.array(classes["values"], dtype=np.dtype(classes["dtype"]))
    else:
        estimator.n_outputs_, estimator.gaussian_ = fitted["n_outputs_"], fitted["gaussian_"]
        estimator._single_output = fitted["single_output"]
    for name in _FITTED_ARRAYS:
        if name in fitted:
            value = fitted[name]
            setattr(estimator, name, None if value is None else np.asarray(value))
    estimator.members_ = estimator.members_.astype(np.intp)
    for name in ("n_features_in_", "snapshot_epochs_", "divergences_", "n_iter_"):
        setattr(estimator, name, fitted[name])
    scores = fitted["validation_scores_"]
    estimator.validation_scores_ = (None if scores is None
                                    else {k: np.asarray(v) for k, v in scores.items()})
    net_.history = History(metadata["history"])
    net_.module_.load_state_dict(estimator.snapshots_[-1])
    estimator.net_ = net_
    return estimator

