"""The one table of fitted fields: what ``metadata.json["fitted"]`` holds, for both estimators.

Each :class:`Field` says which estimators have it (their ``_persistence_kind``),
the format version that added it, from which version it may be absent, how
:func:`save_ensemble` reads it from an estimator, how :func:`load_ensemble`
checks it and converts it back, and what a file without it means. The writer
(:func:`saved_fields`), the checker (:func:`check_fitted`) and the assembly
(:func:`restore_fields`) all read this table: a new fitted field is one row.
Rows are checked in table order, each against the rows checked before it.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .._kernel import POOLINGS
from .._modules import GaussianNLLCriterion
from ..schedules import SCHEDULES, snapshot_iterations
from ._format import short, warn

_BOTH = ("classifier", "regressor")
_DIVERGENCE_KEYS = ("iteration", "cycle", "loss", "lr_scale_before", "lr_scale_after")


@dataclass(frozen=True)
class Field:
    """One fitted field: ``check(checker, value, ctx)`` returns the estimator's value."""

    name: str
    check: Callable
    kinds: tuple = _BOTH
    since: int = 1  #: the format version that added it
    optional_since: Optional[int] = None  #: from this version on a file may lack it
    attribute: Optional[str] = None  #: the estimator's attribute, where not ``name``
    save: Optional[Callable] = None  #: estimator -> JSON value; default: the attribute
    saved_if: Optional[Callable] = None  #: estimator -> whether to write an optional field
    absent: Optional[Callable] = None  #: ctx -> the value without it; None: left unset
    at: int = 0  #: its place among the keys of a written file's ``fitted``

    @property
    def attr(self):
        return self.attribute or self.name


class Context:
    """What a field's check may consult: the file's other parts and the fields checked so far."""

    def __init__(self, check, *, kind, version, n_snapshots, n_history, params, criterion):
        self.check, self.kind, self.version = check, kind, version
        self.n_snapshots, self.n_history = n_snapshots, n_history
        self.params, self.criterion = params, criterion
        self.got = {}


# -- the checks, one per field ---------------------------------------------------

def _members(check, members, ctx):
    n = ctx.n_snapshots
    members = check.array(members, "fitted.members_", min_length=1)
    if (any(type(m) is not int for m in members) or members != sorted(set(members))
            or members[0] < 0 or members[-1] >= n):
        check.fail("fitted.members_", "must be distinct snapshot indices in ascending order, "
                                      f"each in [0, {n}); got {short(members)}.")
    return np.asarray(members, dtype=np.intp)


def _weights(check, weights, ctx):
    weights = check.array(weights, "fitted.weights_", length=len(ctx.got["members_"]))
    if (any(type(w) not in (int, float) for w in weights)
            or not all(math.isfinite(w) and w >= 0 for w in weights)
            or abs(math.fsum(weights) - 1) > 1e-6):
        check.fail("fitted.weights_", "must be finite, non-negative and sum to 1 (one weight "
                                      f"per member); got {short(weights)}.")
    return np.asarray(weights, dtype=np.float64)


def _n_features(check, value, ctx):
    return check.integer(value, "fitted.n_features_in_", 1)


def _feature_names(check, names, ctx):
    if "n_features_in_" not in ctx.got:
        check.fail("fitted.feature_names_in_", "needs fitted.n_features_in_ (feature "
                                               "names describe 2-D inputs only).")
    names = check.array(names, "fitted.feature_names_in_", length=ctx.got["n_features_in_"])
    for i, name in enumerate(names):
        check.string(name, f"fitted.feature_names_in_[{i}]")
    return np.asarray(names, dtype=object)


def _runs(check, runs, ctx):
    """The run of each snapshot; they come run-major, and epochs and steps count within runs."""
    n_runs = ctx.params.get("n_runs", 1)
    runs = check.array(runs, "fitted.snapshot_runs_", length=ctx.n_snapshots)
    if (any(type(r) is not int for r in runs) or runs != sorted(runs)
            or runs[0] < 0 or runs[-1] >= n_runs):
        check.fail("fitted.snapshot_runs_", "must be the non-decreasing run of each "
                                            f"snapshot, each in [0, {n_runs}) (params."
                                            f"n_runs); got {short(runs)}.")
    return [int(r) for r in runs]


def _within_runs(values, runs):
    """Consecutive pairs of ``values`` taken in the same run."""
    return [(a, b) for a, b, ra, rb in zip(values, values[1:], runs, runs[1:]) if ra == rb]


def _epochs(check, epochs, ctx):
    epochs = check.array(epochs, "fitted.snapshot_epochs_", length=ctx.n_snapshots)
    if (any(type(e) is not int for e in epochs)
            or any(a > b for a, b in _within_runs(epochs, ctx.got["snapshot_runs_"]))
            or min(epochs) < 1 or max(epochs) > ctx.n_history):
        check.fail("fitted.snapshot_epochs_", "must be non-decreasing epochs in "
                                              f"[1, {ctx.n_history}] (the history's length); "
                                              f"got {short(epochs)}.")
    return list(epochs)


def _divergences(check, entries, ctx):
    n_runs = ctx.params.get("n_runs", 1)
    for i, entry in enumerate(check.array(entries, "fitted.divergences_")):
        field = f"fitted.divergences_[{i}]"
        check.obj(entry, field, _DIVERGENCE_KEYS, optional=("run",))
        if "run" in entry:
            check.integer(entry["run"], f"{field}.run", 0, n_runs - 1)
        check.integer(entry["iteration"], f"{field}.iteration", 0)
        check.integer(entry["cycle"], f"{field}.cycle", 0)
        check.string(entry["loss"], f"{field}.loss")
        check.number(entry["lr_scale_before"], f"{field}.lr_scale_before", 0)
        check.number(entry["lr_scale_after"], f"{field}.lr_scale_after", 0)
    return entries


def _n_iter(check, value, ctx):
    return check.integer(value, "fitted.n_iter_", 0)


def _sample_shape(check, shape, ctx):
    return check.sample_shape(shape, "fitted.sample_shape_")


def _n_iter_planned(check, value, ctx):
    return check.integer(value, "fitted.n_iter_planned_", 1)


def _steps(check, steps, ctx):
    n_iter, planned = ctx.got["n_iter_"], ctx.got["n_iter_planned_"]
    steps = check.array(steps, "fitted.snapshot_iterations_", length=ctx.n_snapshots)
    if (any(type(t) is not int for t in steps)
            or any(a >= b for a, b in _within_runs(steps, ctx.got["snapshot_runs_"]))
            or min(steps) < 0 or max(steps) >= n_iter):
        check.fail("fitted.snapshot_iterations_",
                   "must be strictly increasing (0-based) optimizer steps in "
                   f"[0, {n_iter}) (fitted.n_iter_ steps were taken), one per snapshot; "
                   f"got {short(steps)}.")
    # Not n_iter_planned_ >= n_iter_: a DataLoader longer than its len() trains past
    # the plan. Every snapshot is taken at a planned cycle end, though.
    if max(steps) >= planned:
        check.fail("fitted.n_iter_planned_",
                   f"is {planned}, but fitted.snapshot_iterations_ has a snapshot "
                   f"after step {max(steps)}: every snapshot ends a planned cycle, so "
                   "fewer steps cannot have been planned.")
    return [int(t) for t in steps]


def _v1_steps(ctx):
    """Format 1 kept no snapshot steps: the saved schedule's planned cycle ends.

    Exact when every cycle left a snapshot; otherwise (an interrupted fit, cycles
    dropped after a divergence) the ends of equal cycles, with a warning.
    """
    n_iter, n = ctx.got["n_iter_"], ctx.n_snapshots
    if n_iter < n:
        ctx.check.fail("fitted.n_iter_", f"is {n_iter}, fewer optimizer steps than the "
                                         f"{n} snapshots taken after one each.")
    steps = None
    if ctx.params["n_snapshots"] == n:
        try:
            steps = SCHEDULES[ctx.params["schedule"]].snapshots(n_iter, n)
        except (KeyError, ValueError):
            steps = None
    if steps is None:
        steps = snapshot_iterations(n_iter, n)
        warn(f"{ctx.check.path}: format 1 files do not record the step of each "
             "snapshot, and not every planned cycle left one; the loaded "
             "snapshot_iterations_ are those of equal cycles, an approximation.")
    return steps.tolist()


def _gaussian(check, value, ctx):
    gaussian = check.boolean(value, "fitted.gaussian_")
    if gaussian != (ctx.criterion is GaussianNLLCriterion):
        check.fail("fitted.gaussian_", f"is {str(gaussian).lower()}, but the criterion "
                                       f"is {ctx.criterion.__name__}.")
    return gaussian


def _validation_scores(check, validation, ctx):
    if ctx.kind == "classifier":
        scores = ("accuracy", "log_loss")
    else:
        scores = ("mse", "gaussian_nll") if ctx.got["gaussian_"] else ("mse",)
    if validation is None:
        return None
    check.obj(validation, "fitted.validation_scores_", scores)
    for name in scores:
        check.numbers(validation[name], f"fitted.validation_scores_.{name}",
                      length=ctx.n_snapshots, finite=False)
    return {name: np.asarray(values, dtype=np.float64) for name, values in validation.items()}


def _classes(check, classes, ctx):
    return check.labels(classes, "fitted.classes_")


def _disagreement(check, rows, ctx):
    if (rows is None) != (ctx.got["validation_scores_"] is None):
        check.fail("fitted.disagreement_", "must be null exactly when "
                                           "fitted.validation_scores_ is null.")
    if rows is None:
        return None
    rows = check.array(rows, "fitted.disagreement_", length=ctx.n_snapshots)
    for i, row in enumerate(rows):
        check.numbers(row, f"fitted.disagreement_[{i}]", length=ctx.n_snapshots)
        if not all(0 <= d <= 1 for d in row):
            check.fail(f"fitted.disagreement_[{i}]", "must hold fractions in [0, 1].")
    return np.asarray(rows, dtype=np.float64)


def _n_outputs(check, value, ctx):
    return check.integer(value, "fitted.n_outputs_", 1)


def _single_output(check, value, ctx):
    single = check.boolean(value, "fitted.single_output")
    if single and ctx.got["n_outputs_"] != 1:
        check.fail("fitted.single_output", f"is true, but fitted.n_outputs_ is "
                                           f"{ctx.got['n_outputs_']}.")
    return single


def _calibration(name):
    """The check of a calibration: a number above 0, or null (not calibrated: 1.0)."""

    def check_it(check, value, ctx):
        if value is not None:
            check.number(value, f"fitted.{name}")
            if not value > 0:
                check.fail(f"fitted.{name}", "must be a finite number above 0, or "
                                             f"null; got {short(value)}.")
        return 1.0 if value is None else float(value)

    return check_it


def _pooling(check, value, ctx):
    return check.string(value, "fitted.pooling_", choices=POOLINGS)


# -- what the writer saves, where it is not the attribute as it is ----------------

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


def _saved_calibration(name):
    def save(estimator):
        value = getattr(estimator, name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating,
                                                             np.integer)) \
                or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r} cannot be saved: it must be a finite "
                             "number above 0, or None.")
        return float(value)

    return save


def _has(name):
    return lambda estimator: hasattr(estimator, name)


def _saved_classes(estimator):
    return {"values": estimator.classes_.tolist(), "dtype": estimator.classes_.dtype.str}


#: Every fitted field, in the order they are checked (each after the fields it reads).
#: ``at`` is its place among the keys of ``fitted`` in a written file (kept from the
#: single-module writer, so that files stay byte for byte what they were).
FIELDS = (
    Field("members_", _members, at=0),
    Field("weights_", _weights, at=1),
    Field("n_features_in_", _n_features, at=2, optional_since=2),
    Field("feature_names_in_", _feature_names, at=3, optional_since=1),
    # Written for several runs only: a one-run file stays readable by older versions.
    Field("snapshot_runs_", _runs, at=18, since=2, optional_since=2,
          save=lambda est: list(est.snapshot_runs_),
          saved_if=lambda est: any(getattr(est, "snapshot_runs_", None) or []),
          absent=lambda ctx: [0] * ctx.n_snapshots),
    Field("snapshot_epochs_", _epochs, at=12),
    Field("divergences_", _divergences, at=14),
    Field("n_iter_", _n_iter, at=15),
    # Format 1 saved 2-D inputs only: samples were rows of n_features_in_.
    Field("sample_shape_", _sample_shape, at=11, since=2, save=_saved_sample_shape,
          absent=lambda ctx: (ctx.got["n_features_in_"],)),
    Field("n_iter_planned_", _n_iter_planned, at=16, since=2,
          absent=lambda ctx: ctx.got["n_iter_"]),
    Field("snapshot_iterations_", _steps, at=13, since=2, absent=_v1_steps),
    Field("gaussian_", _gaussian, at=7, kinds=("regressor",)),
    Field("validation_scores_", _validation_scores, at=17),
    Field("classes_", _classes, at=5, kinds=("classifier",), save=_saved_classes),
    Field("disagreement_", _disagreement, at=4, kinds=("classifier",)),
    Field("n_outputs_", _n_outputs, at=6, kinds=("regressor",)),
    # The regressor's record of 1-D targets (predictions are 1-D then).
    Field("single_output", _single_output, at=8, kinds=("regressor",),
          attribute="single_output_"),
    # Absent: saved before calibration existed, or never calibrated; 1.0 then.
    Field("temperature_", _calibration("temperature_"), at=9, kinds=("classifier",), since=2,
          optional_since=2, save=_saved_calibration("temperature_")),
    Field("variance_scale_", _calibration("variance_scale_"), at=10, kinds=("regressor",),
          since=2, optional_since=2, save=_saved_calibration("variance_scale_")),
    # Written for cross-fitted runs only (how predict_proba pools them); absent: the
    # weighted average, as every earlier file.
    Field("pooling_", _pooling, at=19, kinds=("classifier",), since=2, optional_since=2,
          saved_if=lambda est: getattr(est, "pooling_", "mixture") != "mixture",
          absent=lambda ctx: "mixture"),
)
_WRITE_ORDER = tuple(sorted(FIELDS, key=lambda field: field.at))


def fields_of(kind, version):
    """(required, optional) fields of an estimator kind in a format version."""
    rows = [f for f in FIELDS if kind in f.kinds and f.since <= version]
    optional = [f for f in rows if f.optional_since is not None and f.optional_since <= version]
    return [f for f in rows if f not in optional], optional


def saved_fields(estimator, version):
    """The fitted fields of ``estimator`` as ``save_ensemble`` writes them (before JSON)."""
    required, optional = fields_of(type(estimator)._persistence_kind, version)
    out = {}
    for field in _WRITE_ORDER:
        if field in optional and not (field.saved_if or _has(field.attr))(estimator):
            continue
        if field in required or field in optional:
            out[field.name] = (field.save or (lambda est, f=field: getattr(est, f.attr)))(
                estimator)
    return out


def check_fitted(ctx, fitted):
    """Every field of ``fitted`` checked and converted, with defaults for older files."""
    required, optional = fields_of(ctx.kind, ctx.version)
    ctx.check.obj(fitted, "fitted", [f.name for f in required],
                  optional=[f.name for f in optional])
    for field in FIELDS:
        if field in required or (field in optional and field.name in fitted):
            ctx.got[field.name] = field.check(ctx.check, fitted[field.name], ctx)
        elif ctx.kind in field.kinds and field.absent is not None:
            ctx.got[field.name] = field.absent(ctx)
    return ctx.got


def restore_fields(estimator, values):
    """Set the checked fields on the loaded estimator."""
    for field in FIELDS:
        if field.name in values:
            setattr(estimator, field.attr, values[field.name])
