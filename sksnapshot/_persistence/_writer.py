"""Writing a fitted ensemble: ``weights.safetensors`` and ``metadata.json``, no pickle."""

import json
import pathlib

import sklearn
import skorch
import torch
from safetensors.torch import save_file
from sklearn.utils.validation import check_is_fitted

from .._version import __version__
from ._estimators import ESTIMATORS, criteria_of
from ._fields import saved_fields
from ._format import (
    FORMAT_VERSION,
    METADATA,
    NET_PARAMS,
    WEIGHTS,
    json_ready,
    qualified_name,
    state_prefixes,
)


def save_ensemble(estimator, path):
    """Save a fitted snapshot ensemble to a directory, without pickle.

    Writes ``weights.safetensors`` (every snapshot and, with
    ``combine="weights"``, the averaged model) and ``metadata.json`` (format
    2: classes, the per-sample shape ``sample_shape_`` and, for 2-D inputs,
    ``n_features_in_`` and feature names, chosen members and weights, the
    snapshots' epochs and optimizer steps, the module's class name and
    constructor arguments, the training history and library versions; a
    classifier's ``temperature_`` where it has one). The estimator's
    ``checkpoint_dir`` is not saved: it is a path on this machine.

    Parameters
    ----------
    estimator : SnapshotEnsembleClassifier or SnapshotEnsembleRegressor
        A fitted ensemble whose module arguments are plain JSON values, trained
        with ``predict_nonlinearity="auto"`` and ``CrossEntropyLoss`` or
        ``NLLLoss`` (classifier; with ``NLLLoss`` the module returns
        probabilities, as skorch expects), ``MSELoss`` or
        :class:`GaussianNLLCriterion` (regressor). Fitted on 2-D rows, N-D
        arrays (images, sequences), dicts of arrays (input names are
        strings) or a torch Dataset whose samples are arrays or tensors; not
        on a Dataset whose samples have no shape (``sample_shape_`` None),
        which the loader could not check: use ``joblib.dump`` for those.
    path : str or path-like
        Directory to write; created if missing.

    See Also
    --------
    load_ensemble : read it back.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn.datasets import load_iris
    >>> from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net, load_ensemble
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
    if ESTIMATORS.get(type(estimator).__name__) is not type(estimator):
        raise ValueError(f"save_ensemble saves {sorted(ESTIMATORS)}; "
                         f"got {type(estimator).__name__}.")
    net = estimator.net_
    if not isinstance(net.module, type):
        raise ValueError("Only nets built from a module class (not an instance) can be "
                         "saved without pickle; use joblib.dump.")
    criteria = criteria_of(type(estimator))
    criterion = net.criterion if isinstance(net.criterion, type) else type(net.criterion)
    if criteria.get(criterion.__name__) is not criterion or net.predict_nonlinearity != "auto":
        raise ValueError(
            f"Saving a {type(estimator).__name__} without pickle supports the criteria "
            f"{sorted(criteria)} with predict_nonlinearity='auto'; use joblib.dump for "
            "this ensemble."
        )
    params = estimator.get_params(deep=False)
    settings = {k: v for k, v in params.items() if k not in ("net", "schedule", "random_state")}
    settings["checkpoint_dir"] = None  # a path on this machine; never carried to another
    settings["schedule"] = params["schedule"] if isinstance(params["schedule"], str) else None
    random_state = params["random_state"]
    settings["random_state"] = random_state if isinstance(random_state, int) else None
    net_params = {k: v for k, v in net.get_params(deep=False).items()
                  if k.startswith("module__") or k in NET_PARAMS}
    averaged = estimator.averaged_state_ is not None
    metadata = {
        "format_version": FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "versions": {"sksnapshot": __version__, "torch": torch.__version__,
                     "skorch": skorch.__version__, "scikit-learn": sklearn.__version__},
        "params": json_ready("params", settings),
        "module": qualified_name(net.module),
        "criterion": criterion.__name__,
        "net_params": json_ready("net params", net_params),
        "fitted": json_ready("fitted attributes", saved_fields(estimator, FORMAT_VERSION)),
        "n_snapshots": len(estimator.snapshots_),
        "averaged": averaged,
        "history": json_ready("history", net.history.to_list()),
    }
    states = list(estimator.snapshots_) + ([estimator.averaged_state_] if averaged else [])
    prefixes = state_prefixes({"n_snapshots": len(estimator.snapshots_), "averaged": averaged})
    tensors = {prefix + key: value.contiguous()
               for prefix, state in zip(prefixes, states) for key, value in state.items()}
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path / WEIGHTS)
    (path / METADATA).write_text(json.dumps(metadata, indent=1))
