"""The file format's constants, its one error and the helpers every room uses to raise it.

A saved ensemble is a directory of two files: ``weights.safetensors`` (every
snapshot's tensors, and the averaged model's) and ``metadata.json`` (everything
else). The fields of ``metadata.json["fitted"]`` are listed in ``_fields.py``.
"""

import json
import reprlib
import sys
import warnings

import numpy as np
import torch

from .._inputs import map_inputs

#: Version 2 added ``sample_shape_``, ``snapshot_iterations_``, ``n_iter_planned_``
#: and ``temperature_`` and made ``n_features_in_`` optional (2-D inputs only).
#: Version 1 files still load (see :func:`load_ensemble`).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
WEIGHTS, METADATA = "weights.safetensors", "metadata.json"
#: ``metadata.json`` larger than this is refused unread.
METADATA_MAX_BYTES = 64 * 2**20
#: JSON nested deeper than this (objects and arrays) is refused.
METADATA_MAX_DEPTH = 32
#: More objects and arrays than this are refused unparsed: an empty one costs
#: about 70 bytes once parsed for 3 in the file. (A history of 50 epochs of
#: 8,000 batches each holds about 400,000.)
METADATA_MAX_CONTAINERS = 2**22
#: The top-level keys of ``metadata.json``.
TOP_LEVEL = ("format_version", "estimator", "versions", "params", "module", "criterion",
             "net_params", "fitted", "n_snapshots", "averaged", "history")
#: The net's settings saved besides the module's arguments (``module__*``).
NET_PARAMS = ("lr", "max_epochs", "batch_size")
VERSIONS = ("sksnapshot", "torch", "skorch", "scikit-learn")
#: The tensor dtypes safetensors names in its header, as torch knows them.
SAFETENSORS_DTYPES = {
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


def refuse(path, field, problem):
    """The :class:`InvalidEnsembleFile` for ``problem`` with ``field`` of ``path``."""
    where = f"{path}: {field} " if field else f"{path}: "
    return InvalidEnsembleFile(where + problem, str(path), field)


_short_repr = reprlib.Repr()
_short_repr.maxlist = _short_repr.maxdict = 6
_short_repr.maxstring = _short_repr.maxother = 60
_short_repr.maxlevel = 3


def short(value):
    """A repr short enough for an error message, whatever the file holds."""
    return _short_repr.repr(value)


def json_kind(value):
    """What a parsed JSON value is, in words, for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    for kind, name in ((str, "a string"), (int, "an integer"), (float, "a number"),
                       (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            shown = short(value)
            if len(shown) > 80:  # a big array or object: its size says enough
                return f"{name} of {len(value)} entries"
            return f"{name} {shown}"
    return type(value).__name__


def plain_shape(shape):
    """A sample shape as the file spells it (lists), for messages."""
    return map_inputs(lambda dims: None if dims is None else list(dims), shape)


def qualified_name(cls):
    """The name a file gives a class: ``module.QualName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def state_prefixes(spec):
    """The tensor-name prefix of each saved state: the snapshots', then the averaged model's."""
    return [f"snapshot.{i}." for i in range(spec["n_snapshots"])] + (
        ["averaged."] if spec["averaged"] else [])


def json_ready(name, value):
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



def warn(message):
    """A UserWarning pointing at the first caller outside this package (``load_ensemble``'s)."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of warn()
    while frame is not None and frame.f_globals.get("__name__", "").startswith(__package__):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)
