"""The hand-written JSON checker: types and ranges of parsed values, each naming its field."""

import math
import re

import numpy as np

from ._format import json_kind, refuse, short

#: At most this many dimensions per sample (torch allows 64).
MAX_SAMPLE_NDIM = 32
#: numpy dtypes ``classes_`` may have: bool, integers, floats, fixed-width unicode, object.
CLASS_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|U[0-9]{1,6}|O)")


def _join(field, key):
    return key if not field else f"{field}.{key}"


class Checker:
    """Type and range checks on parsed JSON; every failure names the file and field."""

    def __init__(self, path):
        self.path = path

    def fail(self, field, problem):
        raise refuse(self.path, field, problem)

    def obj(self, value, field, required, optional=(), missing_ok=(), known=None):
        """``value`` as a dict with exactly these keys (``missing_ok`` may be absent)."""
        if not isinstance(value, dict):
            self.fail(field or "the top level", f"must be a JSON object; got {json_kind(value)}.")
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
            self.fail(field, f"must be an integer; got {json_kind(value)}.")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(field, f"must be an integer in [{low}, {'inf' if high is None else high}]; "
                             f"got {short(value)}.")
        return value

    def number(self, value, field, low=None, finite=True):
        if type(value) not in (int, float):
            self.fail(field, f"must be a number; got {json_kind(value)}.")
        if finite and not math.isfinite(value):
            self.fail(field, f"must be finite; got {value}.")
        if low is not None and not value >= low:
            self.fail(field, f"must be at least {low}; got {short(value)}.")
        return value

    def boolean(self, value, field):
        if type(value) is not bool:
            self.fail(field, f"must be true or false; got {json_kind(value)}.")
        return value

    def string(self, value, field, choices=None):
        if type(value) is not str:
            self.fail(field, f"must be a string; got {json_kind(value)}.")
        if choices is not None and value not in choices:
            self.fail(field, f"must be one of {sorted(choices)}; got {short(value)}.")
        return value

    def array(self, value, field, length=None, min_length=0):
        if type(value) is not list:
            self.fail(field, f"must be an array; got {json_kind(value)}.")
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

    def sample_shape(self, shape, field):
        """A list of sizes (a tuple), or an object of these by input name (a dict)."""
        if isinstance(shape, dict):
            if not shape:
                self.fail(field, "must name at least one input; got an empty object.")
            return {key: self.sample_shape(value, f"{field}.{key}")
                    for key, value in shape.items()}
        if type(shape) is not list:
            self.fail(field, "must be an array of sizes or an object of them by input name; "
                             f"got {json_kind(shape)}.")
        if len(shape) > MAX_SAMPLE_NDIM or any(
                type(size) is not int or not 0 <= size <= 2**31 - 1 for size in shape):
            self.fail(field, f"must hold at most {MAX_SAMPLE_NDIM} sizes, each an integer in "
                             f"[0, 2147483647]; got {short(shape)}.")
        return tuple(shape)

    def labels(self, classes, field):
        """``classes_`` as np.unique returns them: unique, sorted, of one plain dtype."""
        self.obj(classes, field, ("values", "dtype"))
        spelled = self.string(classes["dtype"], f"{field}.dtype")
        if not CLASS_DTYPE.fullmatch(spelled):
            self.fail(f"{field}.dtype", "must be a numpy dtype of booleans, integers, floats, "
                                        f"strings or objects; got {short(spelled)}.")
        dtype = np.dtype(spelled)
        values = self.array(classes["values"], f"{field}.values", min_length=2)
        wanted = {"b": (bool,), "i": (int,), "u": (int,), "f": (int, float), "U": (str,),
                  "O": (str, int)}[dtype.kind]
        kinds = {type(v) for v in values}
        if not (kinds <= set(wanted) and (dtype.kind != "O" or len(kinds) == 1)):
            self.fail(f"{field}.values", f"must all be of one type fitting dtype {spelled}; "
                                         f"got {short(values)}.")
        try:
            array = np.array(values, dtype=dtype)
            ordered = np.unique(array)
        except (TypeError, ValueError, OverflowError) as exc:
            self.fail(f"{field}.values", f"do not fit dtype {spelled}: {exc}")
        if array.tolist() != values or any(isinstance(v, float) and not math.isfinite(v)
                                           for v in values):
            self.fail(f"{field}.values", f"do not survive conversion to dtype {spelled}; "
                                         f"got {short(values)}.")
        if len(ordered) != len(array) or not np.array_equal(ordered, array):
            self.fail(f"{field}.values", "must be unique and sorted as numpy.unique sorts them; "
                                         f"got {short(values)}.")
        return array
