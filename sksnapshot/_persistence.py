"""Saving a fitted ensemble without pickle: safetensors weights + JSON metadata.

``joblib.dump``/``pickle`` keep working, but unpickling a file can run any code
it carries, so such files must come from a trusted source. The format here
cannot: tensors are read by safetensors, everything else is JSON, and the module
is rebuilt only from classes the caller allows, never by importing a name that
the file spells out.

A file from someone else can still be wrong (edited by hand, truncated, or made
to hurt): :func:`load_ensemble` checks the whole of it against the format below
before it builds anything, and refuses it with one :class:`InvalidEnsembleFile`
naming the file and the field.
"""

import inspect
import itertools
import json
import math
import os
import pathlib
import re
import reprlib
import stat
import warnings
from collections import OrderedDict

import numpy as np
import sklearn
import skorch
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted
from skorch.history import History

from ._modules import GaussianNLLCriterion, MLPModule, MLPRegressorModule
from ._training import torch_seed
from ._version import __version__
from .schedules import SCHEDULES, snapshot_iterations

__all__ = ["InvalidEnsembleFile", "save_ensemble", "load_ensemble"]

#: Version 2 added ``sample_shape_``, ``snapshot_iterations_``, ``n_iter_planned_``
#: and ``temperature_`` and made ``n_features_in_`` optional (2-D inputs only).
#: Version 1 files still load (see :func:`load_ensemble`).
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_WEIGHTS, _METADATA = "weights.safetensors", "metadata.json"
#: ``metadata.json`` larger than this is refused unread.
METADATA_MAX_BYTES = 64 * 2**20
#: JSON nested deeper than this (objects and arrays) is refused.
METADATA_MAX_DEPTH = 32
#: More objects and arrays than this are refused unparsed: an empty one costs
#: about 70 bytes once parsed for 3 in the file. (A history of 50 epochs of
#: 8,000 batches each holds about 400,000.)
METADATA_MAX_CONTAINERS = 2**22
# The criteria each estimator may be saved with, looked up by name only. They
# decide how outputs become predictions: with predict_nonlinearity="auto" skorch
# applies a softmax for CrossEntropyLoss (the module returns logits) and nothing
# for NLLLoss (skorch's convention: the module returns probabilities, and the
# loss takes their log).
_CLASSIFIER_CRITERIA = {"CrossEntropyLoss": torch.nn.CrossEntropyLoss,
                        "NLLLoss": torch.nn.NLLLoss}
_REGRESSOR_CRITERIA = {"MSELoss": torch.nn.MSELoss,
                       "GaussianNLLCriterion": GaussianNLLCriterion}
_NET_PARAMS = ("lr", "max_epochs", "batch_size")
_VERSIONS = ("sksnapshot", "torch", "skorch", "scikit-learn")
_DIVERGENCE_KEYS = ("iteration", "cycle", "loss", "lr_scale_before", "lr_scale_after")
# numpy dtypes classes_ may have: bool, integers, floats, fixed-width unicode, object.
_CLASS_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|U[0-9]{1,6}|O)")
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
    "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
    "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


class InvalidEnsembleFile(ValueError):
    """A saved ensemble that :func:`load_ensemble` refuses to load.

    Raised before anything is built, when a file of the directory is missing,
    not a regular file, too large, not valid JSON or safetensors, or when a
    field of ``metadata.json`` is missing, unknown, of the wrong type, out of
    range, or inconsistent with another field or with the tensors. The
    message names the file and the field. A subclass of :class:`ValueError`.

    Attributes
    ----------
    path : str or None
        The file at fault.
    field : str or None
        The dotted name of the field at fault, e.g. ``"fitted.weights_"``;
        None when the file as a whole is at fault.
    """

    def __init__(self, message, path=None, field=None):
        super().__init__(message)
        self.path, self.field = path, field


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


def _estimator_kinds():
    """Estimator class name -> (class, default net factory, allowed criteria)."""
    from ._classifier import SnapshotEnsembleClassifier, default_classifier_net
    from ._regressor import SnapshotEnsembleRegressor, default_regressor_net

    return {
        SnapshotEnsembleClassifier.__name__: (SnapshotEnsembleClassifier,
                                              default_classifier_net, _CLASSIFIER_CRITERIA),
        SnapshotEnsembleRegressor.__name__: (SnapshotEnsembleRegressor,
                                             default_regressor_net, _REGRESSOR_CRITERIA),
    }


def _saved_sample_shape(estimator):
    """``sample_shape_`` as JSON: a list of sizes, or an object of them by input name.

    An unknown shape (None: a torch Dataset whose samples are not arrays or
    tensors) is refused: the loader could not run the module on inputs of the
    saved shape, and a file saying "unknown" would let anyone skip that check.
    """
    shape = getattr(estimator, "sample_shape_", None)
    if shape is None and hasattr(estimator, "n_features_in_"):
        shape = (estimator.n_features_in_,)  # fitted before sample_shape_ existed

    def plain(value):
        if value is None:
            raise ValueError(
                f"sample_shape_={shape!r}: the shape of the samples this ensemble was fitted "
                "on is unknown (a torch Dataset whose samples are not arrays or tensors), so "
                "it cannot be saved without pickle: load_ensemble checks the module against "
                "inputs of the saved shape. Fit on a Dataset returning tensors, or use "
                "joblib.dump."
            )
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise ValueError(f"sample_shape_={shape!r} has input names that are not "
                                 "strings; only string names can be saved without pickle "
                                 "(and passed to a module's forward). Use joblib.dump.")
            return {key: plain(item) for key, item in value.items()}
        return [int(size) for size in value]

    return plain(shape)


#: The calibration each kind of estimator fits: one positive number, optional in a file.
_CALIBRATION = {"SnapshotEnsembleClassifier": "temperature_",
                "SnapshotEnsembleRegressor": "variance_scale_"}


def _saved_calibration(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} cannot be saved: it must be a finite "
                         "number above 0, or None.")
    return float(value)


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
    kinds = _estimator_kinds()
    if type(estimator).__name__ not in kinds:
        raise ValueError(f"save_ensemble saves {sorted(kinds)}; got {type(estimator).__name__}.")
    criteria = kinds[type(estimator).__name__][2]
    net = estimator.net_
    if not isinstance(net.module, type):
        raise ValueError("Only nets built from a module class (not an instance) can be "
                         "saved without pickle; use joblib.dump.")
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
                  if k.startswith("module__") or k in _NET_PARAMS}
    fitted = {name: getattr(estimator, name)
              for name in ("members_", "weights_", "n_features_in_", "feature_names_in_",
                           "disagreement_")
              if hasattr(estimator, name)}
    if hasattr(estimator, "classes_"):
        fitted["classes_"] = {"values": estimator.classes_.tolist(),
                              "dtype": estimator.classes_.dtype.str}
    else:
        # The regressor's own record of 1-D targets, read across modules (issue 12).
        fitted.update(n_outputs_=estimator.n_outputs_, gaussian_=estimator.gaussian_,
                      single_output=estimator._single_output)
    calibration = _CALIBRATION[type(estimator).__name__]
    if hasattr(estimator, calibration):
        fitted[calibration] = _saved_calibration(calibration, getattr(estimator, calibration))
    fitted.update(
        sample_shape_=_saved_sample_shape(estimator),
        snapshot_epochs_=estimator.snapshot_epochs_,
        snapshot_iterations_=estimator.snapshot_iterations_,
        divergences_=estimator.divergences_,
        n_iter_=estimator.n_iter_,
        n_iter_planned_=estimator.n_iter_planned_,
        validation_scores_=estimator.validation_scores_,
    )
    runs = list(getattr(estimator, "snapshot_runs_", None) or [])
    if any(runs):  # only for several runs: a one-run file stays readable by older versions
        fitted["snapshot_runs_"] = runs
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


# -- reading files ---------------------------------------------------------------

_short_repr = reprlib.Repr()
_short_repr.maxlist = _short_repr.maxdict = 6
_short_repr.maxstring = _short_repr.maxother = 60
_short_repr.maxlevel = 3


def _short(value):
    """A repr short enough for an error message, whatever the file holds."""
    return _short_repr.repr(value)


def _refuse(path, field, problem):
    where = f"{path}: {field} " if field else f"{path}: "
    return InvalidEnsembleFile(where + problem, str(path), field)


def _regular_file(path):
    """``os.stat`` of ``path`` (links followed), refusing anything but a regular file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _refuse(path, None, f"cannot be read ({exc.strerror or exc}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, None, "is not a regular file (a directory, FIFO, socket or device, "
                                  "or a link to one); refused without opening it.")
    return info


def _read_capped(path, cap):
    """The bytes of a regular file of at most ``cap`` bytes; never blocks on a FIFO."""
    if _regular_file(path).st_size > cap:
        raise _refuse(path, None, f"is larger than {cap} bytes; refused unread.")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _refuse(path, None, f"cannot be read ({exc.strerror or exc}).") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the check above
            raise _refuse(path, None, "is not a regular file; refused.")
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > cap:
        raise _refuse(path, None, f"is larger than {cap} bytes; refused.")
    return b"".join(chunks)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        seen = set()
        twice = next(key for key in keys if key in seen or seen.add(key))
        raise _DuplicateKey(f"the key {twice!r} appears twice in one object")
    return dict(pairs)


def _depth(value):
    """Nesting depth of a parsed JSON value (iteratively: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > METADATA_MAX_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _read_metadata(path):
    raw = _read_capped(path, METADATA_MAX_BYTES)
    if raw.count(b"{") + raw.count(b"[") > METADATA_MAX_CONTAINERS:  # counted in strings too
        raise _refuse(path, None, f"holds more than {METADATA_MAX_CONTAINERS} JSON objects and "
                                  "arrays; refused unparsed.")
    try:
        metadata = json.loads(raw, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise _refuse(path, None, "is nested too deeply to be read; refused.") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, _DuplicateKey
        raise _refuse(path, None, f"is not valid JSON: {exc}") from None
    if _depth(metadata) > METADATA_MAX_DEPTH:
        raise _refuse(path, None, f"nests objects and arrays deeper than {METADATA_MAX_DEPTH} "
                                  "levels; refused.")
    return metadata


def _read_header(path):
    """{tensor name: (shape, safetensors dtype)} of a safetensors file, without its data."""
    _regular_file(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            return {key: (tuple(handle.get_slice(key).get_shape()),
                          handle.get_slice(key).get_dtype())
                    for key in handle.keys()}
    except (OSError, SafetensorError) as exc:
        raise _refuse(path, None, f"is not a valid safetensors file: {exc}") from None


# -- checking metadata.json against the format -----------------------------------

def _json_kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    for kind, name in ((str, "a string"), (int, "an integer"), (float, "a number"),
                       (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            shown = _short(value)
            if len(shown) > 80:  # a big array or object: its size says enough
                return f"{name} of {len(value)} entries"
            return f"{name} {shown}"
    return type(value).__name__


def _join(field, key):
    return key if not field else f"{field}.{key}"


class _Checker:
    """Type and range checks on parsed JSON; every failure names the file and field."""

    def __init__(self, path):
        self.path = path

    def fail(self, field, problem):
        raise _refuse(self.path, field, problem)

    def obj(self, value, field, required, optional=(), missing_ok=(), known=None):
        """``value`` as a dict with exactly these keys (``missing_ok`` may be absent)."""
        if not isinstance(value, dict):
            self.fail(field or "the top level", f"must be a JSON object; got {_json_kind(value)}.")
        for key in required:
            if key not in value and key not in missing_ok:
                self.fail(_join(field, key), "is missing.")
        allowed = set(required) | set(optional)
        for key in value:
            if key not in allowed:
                self.fail(_join(field, key), "is not a field of this format; expected only "
                                             f"{known or sorted(allowed)}.")
        return value

    def integer(self, value, field, low=None, high=None):
        if type(value) is not int:
            self.fail(field, f"must be an integer; got {_json_kind(value)}.")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(field, f"must be an integer in [{low}, {'inf' if high is None else high}]; "
                             f"got {_short(value)}.")
        return value

    def number(self, value, field, low=None, finite=True):
        if type(value) not in (int, float):
            self.fail(field, f"must be a number; got {_json_kind(value)}.")
        if finite and not math.isfinite(value):
            self.fail(field, f"must be finite; got {value}.")
        if low is not None and not value >= low:
            self.fail(field, f"must be at least {low}; got {_short(value)}.")
        return value

    def boolean(self, value, field):
        if type(value) is not bool:
            self.fail(field, f"must be true or false; got {_json_kind(value)}.")
        return value

    def string(self, value, field, choices=None):
        if type(value) is not str:
            self.fail(field, f"must be a string; got {_json_kind(value)}.")
        if choices is not None and value not in choices:
            self.fail(field, f"must be one of {sorted(choices)}; got {_short(value)}.")
        return value

    def array(self, value, field, length=None, min_length=0):
        if type(value) is not list:
            self.fail(field, f"must be an array; got {_json_kind(value)}.")
        if length is not None and len(value) != length:
            self.fail(field, f"must have {length} entries; got {len(value)}.")
        if len(value) < min_length:
            self.fail(field, f"must have at least {min_length} entries; got {len(value)}.")
        return value

    def numbers(self, value, field, length=None, finite=True):
        self.array(value, field, length)
        for i, item in enumerate(value):
            self.number(item, f"{field}[{i}]", finite=finite)
        return value


def _module_signature(module):
    """(all constructor parameters or None for **kwargs, the required ones)."""
    try:
        parameters = inspect.signature(module).parameters.values()
    except (TypeError, ValueError):
        return None, ()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        names = None
    else:
        names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = [p.name for p in parameters if p.default is p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, required


def _check_builtin_module_args(check, module, kwargs):
    """Strict types for the arguments of the library's own modules."""
    width = 2**31 - 1
    check.integer(kwargs["n_features"], "net_params.module__n_features", 1, width)
    out = "n_classes" if module is MLPModule else "n_outputs"
    check.integer(kwargs[out], f"net_params.module__{out}", 1, width)
    if "hidden_layer_sizes" in kwargs:
        sizes = check.array(kwargs["hidden_layer_sizes"], "net_params.module__hidden_layer_sizes")
        for i, size in enumerate(sizes):
            check.integer(size, f"net_params.module__hidden_layer_sizes[{i}]", 1, width)
    if "dropout" in kwargs:
        field = "net_params.module__dropout"
        if not 0 <= check.number(kwargs["dropout"], field) < 1:
            check.fail(field, f"must be in [0, 1); got {kwargs['dropout']}.")
    for flag in ("batch_norm", "gaussian"):
        if flag in kwargs:
            check.boolean(kwargs[flag], f"net_params.module__{flag}")


#: Settings added after format 2, whose defaults are what every earlier file was fitted with.
_LATER_PARAMS = ("n_runs", "bootstrap", "n_jobs")


def _check_params(check, metadata, estimator_class):
    """The estimator's settings (for re-fitting): the estimator's own validation."""
    defaults = estimator_class().get_params(deep=False)
    defaults.pop("net")
    params = check.obj(metadata["params"], "params", list(defaults), missing_ok=list(defaults))
    params = dict(params)
    for name in defaults:
        if name not in params and name in _LATER_PARAMS:
            params[name] = defaults[name]  # files saved before it existed: one run, as then
        elif name not in params:
            warnings.warn(f"params.{name} is missing from the file; the loaded estimator "
                          f"has the default {defaults[name]!r}.", UserWarning, stacklevel=4)
            params[name] = defaults[name]
    for name in ("schedule", "checkpoint_dir"):
        if params[name] is not None:
            check.string(params[name], f"params.{name}")
    if params["random_state"] is not None:
        check.integer(params["random_state"], "params.random_state", 0, 2**32 - 1)
    if params["checkpoint_dir"] is not None:
        warnings.warn(f"The file names a checkpoint_dir ({_short(params['checkpoint_dir'])}), "
                      "a path on the machine that saved it; the loaded estimator's "
                      "checkpoint_dir is None.", UserWarning, stacklevel=4)
        params["checkpoint_dir"] = None
    if params["schedule"] is None:
        warnings.warn("The ensemble was trained with a callable schedule, which cannot be "
                      "saved; the loaded estimator's schedule is 'cosine' for re-fitting.",
                      UserWarning, stacklevel=4)
        params["schedule"] = "cosine"
    try:
        estimator_class(**params)._validate_params()
    except ValueError as exc:  # sklearn's InvalidParameterError
        check.fail("params", f"hold a setting the estimator refuses: {exc}")
    return params


def _check_fitted(check, fitted, kind, criterion, n_snapshots, n_history, version, params):
    """The fitted attributes, each consistent with the others.

    A format 1 file has neither ``sample_shape_``, ``snapshot_iterations_``
    nor ``n_iter_planned_`` (and always ``n_features_in_``): they get
    defaults, see :func:`_v1_defaults`.
    """
    is_classifier = kind == "SnapshotEnsembleClassifier"
    own = (("classes_", "disagreement_") if is_classifier
           else ("n_outputs_", "gaussian_", "single_output"))
    if version == 1:
        common = ("members_", "weights_", "n_features_in_", "snapshot_epochs_",
                  "divergences_", "n_iter_", "validation_scores_")
        optional = ("feature_names_in_",)
    else:
        common = ("members_", "weights_", "sample_shape_", "snapshot_epochs_",
                  "snapshot_iterations_", "divergences_", "n_iter_", "n_iter_planned_",
                  "validation_scores_")
        optional = ("n_features_in_", "feature_names_in_", _CALIBRATION[kind],
                    "snapshot_runs_")
    check.obj(fitted, "fitted", common + own, optional=optional)

    members = check.array(fitted["members_"], "fitted.members_", min_length=1)
    if (any(type(m) is not int for m in members) or members != sorted(set(members))
            or members[0] < 0 or members[-1] >= n_snapshots):
        check.fail("fitted.members_", "must be distinct snapshot indices in ascending order, "
                                      f"each in [0, {n_snapshots}); got {_short(members)}.")
    weights = check.array(fitted["weights_"], "fitted.weights_", length=len(members))
    if (any(type(w) not in (int, float) for w in weights)
            or not all(math.isfinite(w) and w >= 0 for w in weights)
            or abs(math.fsum(weights) - 1) > 1e-6):
        check.fail("fitted.weights_", "must be finite, non-negative and sum to 1 (one weight "
                                      f"per member); got {_short(weights)}.")
    n_features = None
    if "n_features_in_" in fitted:
        n_features = check.integer(fitted["n_features_in_"], "fitted.n_features_in_", 1)
    if "feature_names_in_" in fitted:
        if n_features is None:
            check.fail("fitted.feature_names_in_", "needs fitted.n_features_in_ (feature "
                                                   "names describe 2-D inputs only).")
        names = check.array(fitted["feature_names_in_"], "fitted.feature_names_in_",
                            length=n_features)
        for i, name in enumerate(names):
            check.string(name, f"fitted.feature_names_in_[{i}]")
    epochs = check.array(fitted["snapshot_epochs_"], "fitted.snapshot_epochs_",
                         length=n_snapshots)
    # Optional (absent: one run). The runs' snapshots come run-major, and the
    # epochs and steps below count within each run.
    n_runs = params.get("n_runs", 1)
    runs = [0] * n_snapshots
    if "snapshot_runs_" in fitted:
        runs = check.array(fitted["snapshot_runs_"], "fitted.snapshot_runs_",
                           length=n_snapshots)
        if (any(type(r) is not int for r in runs) or runs != sorted(runs)
                or runs[0] < 0 or runs[-1] >= n_runs):
            check.fail("fitted.snapshot_runs_", "must be the non-decreasing run of each "
                                                f"snapshot, each in [0, {n_runs}) (params."
                                                f"n_runs); got {_short(runs)}.")
    if (any(type(e) is not int for e in epochs)
            or any(a > b for a, b, ra, rb in zip(epochs, epochs[1:], runs, runs[1:]) if ra == rb)
            or min(epochs) < 1 or max(epochs) > n_history):
        check.fail("fitted.snapshot_epochs_", "must be non-decreasing epochs in "
                                              f"[1, {n_history}] (the history's length); "
                                              f"got {_short(epochs)}.")
    for i, entry in enumerate(check.array(fitted["divergences_"], "fitted.divergences_")):
        field = f"fitted.divergences_[{i}]"
        check.obj(entry, field, _DIVERGENCE_KEYS, optional=("run",))
        if "run" in entry:
            check.integer(entry["run"], f"{field}.run", 0, n_runs - 1)
        check.integer(entry["iteration"], f"{field}.iteration", 0)
        check.integer(entry["cycle"], f"{field}.cycle", 0)
        check.string(entry["loss"], f"{field}.loss")
        check.number(entry["lr_scale_before"], f"{field}.lr_scale_before", 0)
        check.number(entry["lr_scale_after"], f"{field}.lr_scale_after", 0)
    n_iter = check.integer(fitted["n_iter_"], "fitted.n_iter_", 0)
    if version == 1:
        sample_shape, steps, n_iter_planned = _v1_defaults(check, n_features, n_iter,
                                                           n_snapshots, params)
    else:
        sample_shape = _check_sample_shape(check, fitted["sample_shape_"],
                                           "fitted.sample_shape_")
        n_iter_planned = check.integer(fitted["n_iter_planned_"], "fitted.n_iter_planned_", 1)
        steps = check.array(fitted["snapshot_iterations_"], "fitted.snapshot_iterations_",
                            length=n_snapshots)
        if (any(type(t) is not int for t in steps)
                or any(a >= b for a, b, ra, rb in zip(steps, steps[1:], runs, runs[1:])
                       if ra == rb)
                or min(steps) < 0 or max(steps) >= n_iter):
            check.fail("fitted.snapshot_iterations_",
                       "must be strictly increasing (0-based) optimizer steps in "
                       f"[0, {n_iter}) (fitted.n_iter_ steps were taken), one per snapshot; "
                       f"got {_short(steps)}.")
        # Not n_iter_planned_ >= n_iter_: a DataLoader longer than its len() trains past
        # the plan. Every snapshot is taken at a planned cycle end, though.
        if max(steps) >= n_iter_planned:
            check.fail("fitted.n_iter_planned_",
                       f"is {n_iter_planned}, but fitted.snapshot_iterations_ has a snapshot "
                       f"after step {max(steps)}: every snapshot ends a planned cycle, so "
                       "fewer steps cannot have been planned.")

    if is_classifier:
        scores = ("accuracy", "log_loss")
    else:
        gaussian = check.boolean(fitted["gaussian_"], "fitted.gaussian_")
        if gaussian != (criterion is GaussianNLLCriterion):
            check.fail("fitted.gaussian_", f"is {str(gaussian).lower()}, but the criterion "
                                           f"is {criterion.__name__}.")
        scores = ("mse", "gaussian_nll") if gaussian else ("mse",)
    validation = fitted["validation_scores_"]
    if validation is not None:
        check.obj(validation, "fitted.validation_scores_", scores)
        for name in scores:
            check.numbers(validation[name], f"fitted.validation_scores_.{name}",
                          length=n_snapshots, finite=False)

    out = {"members_": np.asarray(members, dtype=np.intp),
           "weights_": np.asarray(weights, dtype=np.float64),
           "sample_shape_": sample_shape,
           "snapshot_epochs_": list(epochs),
           "snapshot_iterations_": [int(t) for t in steps],
           "snapshot_runs_": [int(r) for r in runs],
           "divergences_": fitted["divergences_"],
           "n_iter_": n_iter,
           "n_iter_planned_": n_iter_planned,
           "validation_scores_": None if validation is None
           else {name: np.asarray(values, dtype=np.float64)
                 for name, values in validation.items()}}
    if n_features is not None:
        out["n_features_in_"] = n_features
    if "feature_names_in_" in fitted:
        out["feature_names_in_"] = np.asarray(fitted["feature_names_in_"], dtype=object)
    if is_classifier:
        out["classes_"] = _check_classes(check, fitted["classes_"])
        disagreement = fitted["disagreement_"]
        if (disagreement is None) != (validation is None):
            check.fail("fitted.disagreement_", "must be null exactly when "
                                               "fitted.validation_scores_ is null.")
        if disagreement is not None:
            rows = check.array(disagreement, "fitted.disagreement_", length=n_snapshots)
            for i, row in enumerate(rows):
                check.numbers(row, f"fitted.disagreement_[{i}]", length=n_snapshots)
                if not all(0 <= d <= 1 for d in row):
                    check.fail(f"fitted.disagreement_[{i}]", "must hold fractions in [0, 1].")
            disagreement = np.asarray(rows, dtype=np.float64)
        out["disagreement_"] = disagreement
    else:
        out["n_outputs_"] = check.integer(fitted["n_outputs_"], "fitted.n_outputs_", 1)
        out["gaussian_"] = fitted["gaussian_"]
        single = check.boolean(fitted["single_output"], "fitted.single_output")
        if single and out["n_outputs_"] != 1:
            check.fail("fitted.single_output", f"is true, but fitted.n_outputs_ is "
                                               f"{out['n_outputs_']}.")
        out["single_output"] = single
    calibration = _CALIBRATION[kind]
    if calibration in fitted:
        value = fitted[calibration]
        if value is not None:
            check.number(value, f"fitted.{calibration}")
            if not value > 0:
                check.fail(f"fitted.{calibration}", "must be a finite number above 0, or "
                                                    f"null; got {_short(value)}.")
        out[calibration] = 1.0 if value is None else float(value)  # null: not calibrated
    return out


#: At most this many dimensions per sample (torch allows 64).
_MAX_SAMPLE_NDIM = 32


def _check_sample_shape(check, shape, field):
    """A list of sizes (a tuple), or an object of these by input name (a dict)."""
    if isinstance(shape, dict):
        if not shape:
            check.fail(field, "must name at least one input; got an empty object.")
        return {key: _check_sample_shape(check, value, f"{field}.{key}")
                for key, value in shape.items()}
    if type(shape) is not list:
        check.fail(field, "must be an array of sizes or an object of them by input name; got "
                          f"{_json_kind(shape)}.")
    if len(shape) > _MAX_SAMPLE_NDIM or any(
            type(size) is not int or not 0 <= size <= 2**31 - 1 for size in shape):
        check.fail(field, f"must hold at most {_MAX_SAMPLE_NDIM} sizes, each an integer in "
                          f"[0, 2147483647]; got {_short(shape)}.")
    return tuple(shape)


def _plain_shape(shape):
    """A sample shape as the file spells it (lists), for messages."""
    if isinstance(shape, dict):
        return {key: _plain_shape(value) for key, value in shape.items()}
    return None if shape is None else list(shape)


def _v1_defaults(check, n_features, n_iter, n_snapshots, params):
    """(sample_shape_, snapshot_iterations_, n_iter_planned_) for a format 1 file.

    Format 1 saved 2-D inputs only: samples are rows of ``n_features_in_``. The
    snapshot steps are the planned cycle ends of the saved schedule when every
    cycle left a snapshot (then exact); otherwise (an interrupted fit, cycles
    dropped after a divergence) the ends of ``n_snapshots`` equal cycles, with
    a warning. The planned steps are the steps taken.
    """
    if n_iter < n_snapshots:
        check.fail("fitted.n_iter_", f"is {n_iter}, fewer optimizer steps than the "
                                     f"{n_snapshots} snapshots taken after one each.")
    steps = None
    if params["n_snapshots"] == n_snapshots:
        try:
            steps = SCHEDULES[params["schedule"]][1](n_iter, n_snapshots)
        except (KeyError, ValueError):
            steps = None
    if steps is None:
        steps = snapshot_iterations(n_iter, n_snapshots)
        warnings.warn(f"{check.path}: format 1 files do not record the step of each "
                      "snapshot, and not every planned cycle left one; the loaded "
                      "snapshot_iterations_ are those of equal cycles, an approximation.",
                      UserWarning, stacklevel=5)
    return (n_features,), steps.tolist(), n_iter


def _check_classes(check, classes):
    """``classes_`` as np.unique returns them: unique, sorted, of one plain dtype."""
    field = "fitted.classes_"
    check.obj(classes, field, ("values", "dtype"))
    spelled = check.string(classes["dtype"], f"{field}.dtype")
    if not _CLASS_DTYPE.fullmatch(spelled):
        check.fail(f"{field}.dtype", "must be a numpy dtype of booleans, integers, floats, "
                                     f"strings or objects; got {_short(spelled)}.")
    dtype = np.dtype(spelled)
    values = check.array(classes["values"], f"{field}.values", min_length=2)
    wanted = {"b": (bool,), "i": (int,), "u": (int,), "f": (int, float), "U": (str,),
              "O": (str, int)}[dtype.kind]
    kinds = {type(v) for v in values}
    if not (kinds <= set(wanted) and (dtype.kind != "O" or len(kinds) == 1)):
        check.fail(f"{field}.values", f"must all be of one type fitting dtype {spelled}; "
                                      f"got {_short(values)}.")
    try:
        array = np.array(values, dtype=dtype)
        ordered = np.unique(array)
    except (TypeError, ValueError, OverflowError) as exc:
        check.fail(f"{field}.values", f"do not fit dtype {spelled}: {exc}")
    if array.tolist() != values or any(isinstance(v, float) and not math.isfinite(v)
                                       for v in values):
        check.fail(f"{field}.values", f"do not survive conversion to dtype {spelled}; "
                                      f"got {_short(values)}.")
    if len(ordered) != len(array) or not np.array_equal(ordered, array):
        check.fail(f"{field}.values", "must be unique and sorted as numpy.unique sorts them; "
                                      f"got {_short(values)}.")
    return array


def _check_metadata(path, metadata, allowed):
    """Everything ``metadata.json`` says, checked and converted; nothing built."""
    check = _Checker(path)
    top = ("format_version", "estimator", "versions", "params", "module", "criterion",
           "net_params", "fitted", "n_snapshots", "averaged", "history")
    if isinstance(metadata, dict) and "format_version" in metadata and (
            type(metadata["format_version"]) is not int
            or metadata["format_version"] not in _READABLE_VERSIONS):
        check.fail("format_version", f"is {_short(metadata['format_version'])}; this version of "
                                     "sksnapshot reads formats "
                                     f"{' and '.join(map(str, _READABLE_VERSIONS))} only.")
    check.obj(metadata, "", top)
    version = metadata["format_version"]
    kinds = _estimator_kinds()
    estimator_class, default_net, criteria = kinds[check.string(
        metadata["estimator"], "estimator", set(kinds))]
    versions = check.obj(metadata["versions"], "versions", _VERSIONS)
    for name in _VERSIONS:
        check.string(versions[name], f"versions.{name}")

    name = check.string(metadata["module"], "module")
    module = allowed.get(name)
    if module is None:
        check.fail("module", f"asks for the module class {name!r}, which is not among the "
                             f"allowed modules {sorted(allowed)}. If you trust this file, pass "
                             "that class in modules=[...]; the loader never imports names "
                             "from a file.")
    criterion = criteria[check.string(metadata["criterion"], "criterion", set(criteria))]
    if criterion is torch.nn.NLLLoss and module is MLPModule:
        check.fail("criterion", "is NLLLoss, which needs a module returning probabilities; "
                                "MLPModule returns logits (its criterion is CrossEntropyLoss).")

    net_params = metadata["net_params"]
    module_keys = [k for k in net_params if k.startswith("module__")] \
        if isinstance(net_params, dict) else ()
    check.obj(net_params, "net_params", _NET_PARAMS, optional=module_keys,
              known="lr, max_epochs, batch_size and module__ arguments (the device is "
                    "load_ensemble's device argument)")
    check.number(net_params["lr"], "net_params.lr", 0)
    check.integer(net_params["max_epochs"], "net_params.max_epochs", 0)
    if check.integer(net_params["batch_size"], "net_params.batch_size", -1) == 0:
        check.fail("net_params.batch_size", "must be a positive integer or -1; got 0.")
    module_kwargs = {k[len("module__"):]: v for k, v in net_params.items()
                     if k.startswith("module__")}
    names, required = _module_signature(module)
    for key in module_kwargs:
        if names is not None and key not in names:
            check.fail(f"net_params.module__{key}", f"is not a parameter of {name}.")
    for key in required:
        if key not in module_kwargs:
            check.fail(f"net_params.module__{key}", f"is missing; {name} requires it.")
    builtin = module in (MLPModule, MLPRegressorModule)
    if builtin:
        _check_builtin_module_args(check, module, module_kwargs)

    n_snapshots = check.integer(metadata["n_snapshots"], "n_snapshots", 1)
    averaged = check.boolean(metadata["averaged"], "averaged")
    history = check.array(metadata["history"], "history")
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            check.fail(f"history[{i}]", f"must be a JSON object; got {_json_kind(row)}.")
        if "batches" in row:
            for j, batch in enumerate(check.array(row["batches"], f"history[{i}].batches")):
                if not isinstance(batch, dict):
                    check.fail(f"history[{i}].batches[{j}]",
                               f"must be a JSON object; got {_json_kind(batch)}.")
    params = _check_params(check, metadata, estimator_class)
    fitted = _check_fitted(check, metadata["fitted"], metadata["estimator"], criterion,
                           n_snapshots, len(history), version, params)
    n_features, shape = fitted.get("n_features_in_"), fitted["sample_shape_"]
    if builtin and n_features is not None and module_kwargs["n_features"] != n_features:
        check.fail("fitted.n_features_in_", f"is {n_features}, but the module "
                                            f"takes {module_kwargs['n_features']} features "
                                            "(net_params.module__n_features).")
    if n_features is not None and shape != (n_features,):
        check.fail("fitted.sample_shape_", f"is {_short(_plain_shape(shape))}, but "
                                           f"fitted.n_features_in_ is {n_features}: 2-D rows "
                                           f"have samples of shape [{n_features}].")
    if builtin and isinstance(shape, tuple) and shape != (module_kwargs["n_features"],):
        check.fail("fitted.sample_shape_", f"is {_short(list(shape))}, but "
                                           f"{name} takes rows of "
                                           f"{module_kwargs['n_features']} features "
                                           "(net_params.module__n_features).")
    if estimator_class.__name__ == "SnapshotEnsembleRegressor" and module is MLPRegressorModule:
        if module_kwargs.get("gaussian", False) != fitted["gaussian_"]:
            check.fail("net_params.module__gaussian", "must equal fitted.gaussian_.")
    return {"estimator_class": estimator_class, "default_net": default_net,
            "module": module, "module_name": name, "criterion": criterion,
            "module_kwargs": module_kwargs, "net_params": dict(net_params),
            "params": params, "fitted": fitted, "n_snapshots": n_snapshots,
            "averaged": averaged, "history": history}


# -- checking the tensors against the module, before building it ----------------

def _output_width(output):
    output = output[0] if isinstance(output, (tuple, list)) else output
    if isinstance(output, torch.Tensor) and output.ndim == 2:
        return int(output.shape[1])
    return None


def _meta_module(path, spec):
    """The module built on the meta device: shapes and dtypes, no memory."""
    try:
        with torch.device("meta"):
            module = spec["module"](**spec["module_kwargs"])
    except Exception as exc:  # the caller's class, the file's arguments
        raise _refuse(path, "net_params", f"do not build {spec['module_name']}: "
                                          f"{type(exc).__name__}: {_short(str(exc))}") from None
    if not isinstance(module, torch.nn.Module):
        raise _refuse(path, "module", f"{spec['module_name']} did not build a torch module.")
    return module


def _check_tensors(meta_path, weights_path, header, spec, expected):
    """The safetensors header holds exactly the module's state, once per snapshot."""
    n, averaged = spec["n_snapshots"], spec["averaged"]
    present = sorted({int(m.group(1)) for key in header
                      if (m := re.match(r"snapshot\.([0-9]{1,9})\.", key))})
    if len(present) != n or present != list(range(len(present))):
        raise _refuse(meta_path, "n_snapshots", f"is {n}, but {weights_path.name} holds the "
                                                f"snapshots {_short(present)}.")
    has_averaged = any(key.startswith("averaged.") for key in header)
    if has_averaged != averaged:
        raise _refuse(meta_path, "averaged", f"is {str(averaged).lower()}, but "
                                             f"{weights_path.name} "
                                             f"{'holds' if has_averaged else 'lacks'} an averaged "
                                             "model.")
    prefixes = [f"snapshot.{i}." for i in range(n)] + (["averaged."] if averaged else [])
    wanted = {prefix + key: value for prefix in prefixes for key, value in expected.items()}
    missing = sorted(wanted.keys() - header.keys())
    extra = sorted(header.keys() - wanted.keys())
    if missing or extra:
        raise _refuse(weights_path, None,
                      f"the tensors do not match the module {spec['module_name']} built from "
                      f"{meta_path.name}'s net_params: missing {_short(missing)}, unexpected "
                      f"{_short(extra)}.")
    for key, (shape, dtype) in header.items():
        need = wanted[key]
        if shape != tuple(need.shape) or _SAFETENSORS_DTYPES.get(dtype) != need.dtype:
            raise _refuse(weights_path, None,
                          f"tensor {key} has shape {shape} ({dtype}); the module built from "
                          f"{meta_path.name}'s net_params needs {tuple(need.shape)} "
                          f"({need.dtype}).")


def _load_tensors(weights_path, spec, keys):
    """Every state, as CPU tensors; non-finite values refused."""
    prefixes = [f"snapshot.{i}." for i in range(spec["n_snapshots"])]
    if spec["averaged"]:
        prefixes.append("averaged.")
    states = []
    try:
        with safe_open(weights_path, framework="pt", device="cpu") as handle:
            for prefix in prefixes:
                state = OrderedDict()
                for key in keys:
                    tensor = handle.get_tensor(prefix + key)
                    if (tensor.is_floating_point() or tensor.is_complex()) \
                            and not bool(torch.isfinite(tensor).all()):
                        raise _refuse(weights_path, None, f"tensor {prefix}{key} holds NaN or "
                                                          "infinite values.")
                    state[key] = tensor
                states.append(state)
    except (OSError, SafetensorError) as exc:
        raise _refuse(weights_path, None, f"is not a valid safetensors file: {exc}") from None
    return states[:spec["n_snapshots"]], (states[-1] if spec["averaged"] else None)


#: Probe inputs (zeros) of at most this many bytes are built for any module;
#: beyond it, no bigger than the weights file.
_PROBE_MIN_BUDGET = 2**20
#: The dtypes each input of unknown dtype is probed with: floats become float32
#: in fit, integers (token ids for an embedding) are kept.
_PROBE_DTYPES = (torch.float32, torch.int64)
#: Dicts of at most this many inputs are probed with every mix of dtypes.
_MAX_MIXED_INPUTS = 4


def _shape_leaves(shape):
    """The per-input shapes of a sample shape, in order."""
    if isinstance(shape, dict):
        return [leaf for value in shape.values() for leaf in _shape_leaves(value)]
    return [shape]


def _output_of(module, x):
    """The module's output for ``x`` as skorch's ``infer`` calls it (a dict as keywords)."""
    with torch.no_grad():
        out = module(**x) if isinstance(x, dict) else module(x)
    return out[0] if isinstance(out, (tuple, list)) else out


class _Probes:
    """Inputs of the saved per-sample shape, to run the module on before trusting a file.

    Rows of 2-D inputs (``fitted.n_features_in_``, or the library's own
    modules) are float32, as ``fit`` made them: a module that fails on them
    is refused. Other inputs (``fitted.sample_shape_``: N-D arrays, dicts of
    arrays) may hold integers (token ids), and the file does not say which:
    each input is probed with float32 zeros, then int64 zeros (every mix for a
    dict of up to 4 inputs). A module that runs on none of them (it may need
    a bool mask, or lengths above 0), or samples too large to build for real,
    are not probed: the caller loads without the check, with a warning (the
    shape is checked again against the inputs of every ``predict``).
    """

    def __init__(self, spec):
        fitted = spec["fitted"]
        self.rows = spec["module"] in (MLPModule, MLPRegressorModule) \
            or "n_features_in_" in fitted
        if spec["module"] in (MLPModule, MLPRegressorModule):
            self.shape = (spec["module_kwargs"]["n_features"],)
        elif self.rows:
            self.shape = (fitted["n_features_in_"],)
        else:
            self.shape = fitted["sample_shape_"]
        self.field = "fitted.n_features_in_" if self.rows else "fitted.sample_shape_"
        leaves = _shape_leaves(self.shape)
        if self.rows:
            self.combos = [(torch.float32,)]
        elif len(leaves) <= _MAX_MIXED_INPUTS:
            self.combos = list(itertools.product(_PROBE_DTYPES, repeat=len(leaves)))
        else:
            self.combos = [(dtype,) * len(leaves) for dtype in _PROBE_DTYPES]
        self.n_elements = sum(math.prod(dims) for dims in leaves)
        self.itemsize = 4 if self.rows else 8  # int64 probes are twice as large
        self.working = None  # the dtypes the module last ran on

    def describe(self):
        if self.rows:
            return f"{self.field} is {self.shape[0]}"
        return f"{self.field} is {_short(_plain_shape(self.shape))}"

    def build(self, dtypes, make):
        """The probe input: ``make(dims, dtype)`` for each input, in the shape's structure."""
        dtypes = iter(dtypes)

        def one(shape):
            if isinstance(shape, dict):
                return {key: one(value) for key, value in shape.items()}
            return make(shape, next(dtypes))

        return one(self.shape)

    def _ordered(self):
        return ([self.working] if self.working else []) + [
            combo for combo in self.combos if combo != self.working]

    def meta_width(self, module):
        """The output width on the meta device (no memory), or None where it cannot run."""
        for combo in self.combos:
            try:
                out = _output_of(module, self.build(
                    combo, lambda dims, dtype: torch.empty((2, *dims), dtype=dtype,
                                                           device="meta")))
            except Exception:  # not every module runs on meta; checked for real below
                continue
            width = _output_width(out)
            if width is not None:
                self.working = combo
                return width
        return None

    def too_large(self, budget):
        return 5 * self.itemsize * self.n_elements > budget

    def run(self, module, make):
        """(output, None) on the first dtypes the module runs on, or (None, the last error)."""
        error = None
        for combo in self._ordered():
            try:
                out = _output_of(module, self.build(combo, make))
            except Exception as exc:  # the caller's module, the file's shape
                error = exc
                continue
            self.working = combo
            return out, None
        return None, error


def _run_probes(probes, module, make, meta_path, what):
    """The module's outputs on probe inputs, or ``(None, why it could not be run)``.

    Rows of a 2-D width the module fails on are refused: the file's width is
    wrong. ``what`` describes the inputs, ``{}`` standing for the field and shape.
    """
    out, error = probes.run(module, make)
    if error is None:
        return out, None
    if probes.rows:
        raise _refuse(meta_path, probes.field,
                      f"is {probes.shape[0]}, but the module fails on rows of that "
                      f"width: {type(error).__name__}: {_short(str(error))}") from None
    inputs = what.format(f"{probes.field} {_short(_plain_shape(probes.shape))}")
    return None, (f"the module fails on {inputs}: "
                  f"{type(error).__name__}: {_short(str(error))}")


def _probability_rows(device):
    """Probe samples for the probabilities check: a zero and four random ones (floats)."""
    generator = torch.Generator().manual_seed(0)

    def make(dims, dtype):
        if not dtype.is_floating_point:  # token ids: only 0 is a valid id for sure
            return torch.zeros((5, *dims), dtype=dtype, device=device)
        return torch.cat([torch.zeros((1, *dims), dtype=dtype),
                          torch.randn((4, *dims), generator=generator, dtype=dtype)]).to(device)

    return make


def _are_distributions(out):
    out = out.double().cpu()
    return (out.ndim == 2 and bool(torch.isfinite(out).all()) and bool((out >= 0).all())
            and float((out.sum(dim=1) - 1).abs().max()) < 1e-4)


def load_ensemble(path, *, modules=(), device="cpu"):
    """Load an ensemble saved by :func:`save_ensemble`; nothing in the files runs.

    The whole directory is checked before anything is built: every field of
    ``metadata.json`` (exact keys and types; members, weights, classes and the
    other fitted attributes consistent with each other), then the tensors'
    names, shapes and dtypes as the safetensors header states them against
    the module built on PyTorch's ``meta`` device (no memory), and the
    module's output width on probe inputs of the saved ``sample_shape_``,
    then their values (finite). Only then is the module built for real.

    Probe inputs are two samples of zeros of ``sample_shape_`` (a dict of
    them for a multi-input module). Rows of 2-D inputs are float32, as
    ``fit`` made them, and a module failing on them is refused. The dtypes
    of other inputs are not saved (``fit`` keeps integers, e.g. token ids):
    each is probed as float32, then int64. Where the module runs on none of
    these even outside the ``meta`` device (it may need a bool mask, or
    lengths above 0), or the probes would be larger than the weights file
    (and 1 MiB), the file loads with a warning and without that check;
    ``predict`` still refuses inputs of another shape than ``sample_shape_``.

    Files of format 1 (sksnapshot before ``sample_shape_`` was saved: 2-D
    inputs only) load with ``sample_shape_=(n_features_in_,)``,
    ``n_iter_planned_=n_iter_`` and ``snapshot_iterations_`` the schedule's
    planned cycle ends (exact when every cycle left a snapshot; otherwise
    those of equal cycles, with a warning).

    What a file cannot do:

    - run code: it is JSON and safetensors, and the module class must be one
      the caller allows (``modules``);
    - choose a criterion or nonlinearity that makes a classifier's
      probabilities anything but distributions: ``predict_nonlinearity`` is
      always "auto"; the criterion is ``CrossEntropyLoss`` (a softmax of the
      outputs) or ``NLLLoss`` (refused for :class:`MLPModule`, which returns
      logits, and for any module whose outputs on probe rows are not
      distributions); a regressor's is ``MSELoss`` or
      :class:`GaussianNLLCriterion`, matching its ``gaussian_``;
    - choose where the estimator runs or writes: the device is the ``device``
      argument and the loaded ``checkpoint_dir`` is None (a path in the file
      is ignored with a warning);
    - make the loader block or exhaust memory: both files must be regular
      files (FIFOs, devices, sockets and links to them are refused unopened),
      ``metadata.json`` may be at most 64 MiB, hold at most 2**22 JSON
      objects and arrays and nest them at most 32 levels deep (parsing it
      then takes at most about 600 MiB), and module arguments that would
      build a module larger than its tensors are refused before the module
      is built. The tensors are read into memory: as much as the weights
      file holds.

    Parameters
    ----------
    path : str or path-like
        The directory :func:`save_ensemble` wrote.
    modules : iterable of torch.nn.Module subclasses, default=()
        The module classes this file may use, besides :class:`MLPModule` and
        :class:`MLPRegressorModule`. The class the metadata names must be one
        of them: the loader never imports what a file names. Their
        constructors are called with the file's (JSON) arguments, first on the
        ``meta`` device.
    device : str, default="cpu"
        Where the rebuilt net predicts (an ensemble saved from a GPU loads on
        the CPU by default).

    Returns
    -------
    estimator : SnapshotEnsembleClassifier or SnapshotEnsembleRegressor
        Fitted, predicting exactly as the saved one.

    Raises
    ------
    InvalidEnsembleFile
        A :class:`ValueError` naming the file and the field at fault, for any
        file that is missing, unsafe to read, malformed or inconsistent.

    Warns
    -----
    UserWarning
        For harmless deviations, loaded anyway: a ``checkpoint_dir`` in the
        file (ignored), a callable schedule that could not be saved ("cosine"
        for re-fitting), an estimator setting missing from ``params`` (its
        default), a module that no probe input runs on (see above), the
        approximate snapshot steps of a format 1 file.
    """
    allowed = {}
    for cls in (MLPModule, MLPRegressorModule, *modules):
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise TypeError(f"modules must hold torch.nn.Module subclasses; got {cls!r}.")
        allowed[_qualified_name(cls)] = cls
    path = pathlib.Path(path)
    meta_path, weights_path = path / _METADATA, path / _WEIGHTS
    spec = _check_metadata(meta_path, _read_metadata(meta_path), allowed)
    fitted = spec["fitted"]

    header = _read_header(weights_path)
    if spec["module"] in (MLPModule, MLPRegressorModule):
        layers = len(spec["module_kwargs"].get("hidden_layer_sizes", (100,))) + 1
        per_snapshot = sum(key.startswith("snapshot.0.") for key in header)
        if 2 * layers > per_snapshot:  # a weight and a bias per layer
            raise _refuse(meta_path, "net_params.module__hidden_layer_sizes",
                          f"asks for {layers} layers, more than {weights_path.name} holds "
                          f"tensors for.")
    meta = _meta_module(meta_path, spec)
    expected = meta.state_dict()
    _check_tensors(meta_path, weights_path, header, spec, expected)
    if spec["estimator_class"].__name__ == "SnapshotEnsembleClassifier":
        width, field = len(fitted["classes_"]), "fitted.classes_"
        reason = f"has {width} classes"
    else:
        width = fitted["n_outputs_"] * (2 if fitted["gaussian_"] else 1)
        field, reason = "fitted.n_outputs_", f"asks for {width} outputs per row"
    probes = _Probes(spec)
    meta.eval()
    meta_width = probes.meta_width(meta)
    if meta_width is not None and meta_width != width:
        raise _refuse(meta_path, field, f"{reason}, but the module its tensors describe "
                                        f"returns {meta_width} values per row.")
    snapshots, averaged_state = _load_tensors(weights_path, spec, list(expected))

    net = spec["default_net"](spec["module"]).set_params(
        criterion=spec["criterion"], device=device, **spec["net_params"])
    estimator = spec["estimator_class"](net, **spec["params"])
    with torch_seed(0):  # initialising draws random weights; keep the caller's RNG intact
        net_ = clone(net).initialize()
    net_.module_.load_state_dict(snapshots[-1])
    nll = spec["criterion"] is torch.nn.NLLLoss
    unchecked = None  # why the module was not run for real, where it had to be
    if meta_width is None or nll:
        # Real inputs through the real module: no bigger than the weights file.
        budget = max(_regular_file(weights_path).st_size, _PROBE_MIN_BUDGET)
        if probes.too_large(budget):
            if probes.rows:
                raise _refuse(meta_path, probes.field,
                              f"is {probes.shape[0]}: rows that wide cannot be checked "
                              f"against a module this small ({budget} bytes).")
            unchecked = (f"{probes.describe()}: probe inputs that large are not built for "
                         f"a module this small ({budget} bytes)")
    module = net_.module_
    module.eval()
    if meta_width is None and unchecked is None:
        out, unchecked = _run_probes(
            probes, module, lambda dims, dtype: torch.zeros((2, *dims), dtype=dtype,
                                                            device=device),
            meta_path, "zeros of {} (each input float32 or int64)")
        if unchecked is None:
            real_width = _output_width(out)
            if real_width != width:
                raise _refuse(meta_path, field, f"{reason}, but the module returns "
                                                f"{real_width} values per row.")
    if nll and unchecked is None:
        out, unchecked = _run_probes(probes, module, _probability_rows(device), meta_path,
                                     "{} inputs")
        if unchecked is None and not _are_distributions(out):
            raise _refuse(meta_path, "criterion", "is NLLLoss, so the module must return "
                                                  "probabilities (skorch applies no softmax), "
                                                  "but its outputs are not distributions.")
    if unchecked is not None:
        checks = ("its output width" if meta_width is None else "") + (
            " and " if meta_width is None and nll else "") + (
            "that it returns probabilities (criterion NLLLoss)" if nll else "")
        warnings.warn(f"{meta_path}: {unchecked}; loaded without checking {checks} before "
                      "predicting.", UserWarning, stacklevel=2)
    net_.history = History(spec["history"])

    estimator.snapshots_ = snapshots
    estimator.averaged_state_ = averaged_state
    for name, value in fitted.items():
        if name == "single_output":
            estimator._single_output = value  # the regressor's own record; see issue 12
        else:
            setattr(estimator, name, value)
    estimator.net_ = net_
    return estimator
