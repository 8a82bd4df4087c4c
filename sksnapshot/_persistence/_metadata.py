"""Checking ``metadata.json`` as a whole: its top level, the estimator's settings, the net's.

:func:`check_metadata` turns the parsed file into a ``spec`` (classes, not names;
converted values) or refuses it; the fitted fields are checked by ``_fields.py``.
Nothing is built here.
"""

import inspect

from . import _builtin as builtin
from ._checks import Checker
from ._estimators import ESTIMATORS, criteria_of
from ._fields import Context, check_fitted
from ._format import (
    NET_PARAMS,
    READABLE_VERSIONS,
    TOP_LEVEL,
    VERSIONS,
    json_kind,
    plain_shape,
    short,
    warn,
)

#: Settings added after format 2, whose defaults are what every earlier file was fitted with.
_LATER_PARAMS = ("n_runs", "bootstrap", "cross_fit", "n_jobs")


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
            warn(f"params.{name} is missing from the file; the loaded estimator "
                 f"has the default {defaults[name]!r}.")
            params[name] = defaults[name]
    for name in ("schedule", "checkpoint_dir"):
        if params[name] is not None:
            check.string(params[name], f"params.{name}")
    if params["random_state"] is not None:
        check.integer(params["random_state"], "params.random_state", 0, 2**32 - 1)
    if params["checkpoint_dir"] is not None:
        warn(f"The file names a checkpoint_dir ({short(params['checkpoint_dir'])}), "
             "a path on the machine that saved it; the loaded estimator's "
             "checkpoint_dir is None.")
        params["checkpoint_dir"] = None
    if params["schedule"] is None:
        warn("The ensemble was trained with a callable schedule, which cannot be "
             "saved; the loaded estimator's schedule is 'cosine' for re-fitting.")
        params["schedule"] = "cosine"
    try:
        estimator_class(**params)._validate_params()
    except ValueError as exc:  # sklearn's InvalidParameterError
        check.fail("params", f"hold a setting the estimator refuses: {exc}")
    return params


def _check_net_params(check, net_params, module, name):
    """The net's settings and the module's arguments, against its constructor."""
    module_keys = [k for k in net_params if k.startswith("module__")] \
        if isinstance(net_params, dict) else ()
    check.obj(net_params, "net_params", NET_PARAMS, optional=module_keys,
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
    return module_kwargs


def _check_history(check, history):
    for i, row in enumerate(check.array(history, "history")):
        if not isinstance(row, dict):
            check.fail(f"history[{i}]", f"must be a JSON object; got {json_kind(row)}.")
        if "batches" in row:
            for j, batch in enumerate(check.array(row["batches"], f"history[{i}].batches")):
                if not isinstance(batch, dict):
                    check.fail(f"history[{i}].batches[{j}]",
                               f"must be a JSON object; got {json_kind(batch)}.")
    return history


def check_metadata(path, metadata, allowed):
    """Everything ``metadata.json`` says, checked and converted; nothing built."""
    check = Checker(path)
    if isinstance(metadata, dict) and "format_version" in metadata and (
            type(metadata["format_version"]) is not int
            or metadata["format_version"] not in READABLE_VERSIONS):
        check.fail("format_version", f"is {short(metadata['format_version'])}; this version of "
                                     "sksnapshot reads formats "
                                     f"{' and '.join(map(str, READABLE_VERSIONS))} only.")
    check.obj(metadata, "", TOP_LEVEL)
    estimator_class = ESTIMATORS[check.string(metadata["estimator"], "estimator",
                                              set(ESTIMATORS))]
    versions = check.obj(metadata["versions"], "versions", VERSIONS)
    for name in VERSIONS:
        check.string(versions[name], f"versions.{name}")

    name = check.string(metadata["module"], "module")
    module = allowed.get(name)
    if module is None:
        check.fail("module", f"asks for the module class {name!r}, which is not among the "
                             f"allowed modules {sorted(allowed)}. If you trust this file, pass "
                             "that class in modules=[...]; the loader never imports names "
                             "from a file.")
    criteria = criteria_of(estimator_class)
    criterion = criteria[check.string(metadata["criterion"], "criterion", set(criteria))]
    module_kwargs = _check_net_params(check, metadata["net_params"], module, name)
    if builtin.is_builtin(module):
        builtin.check_arguments(check, module, criterion, module_kwargs)

    n_snapshots = check.integer(metadata["n_snapshots"], "n_snapshots", 1)
    averaged = check.boolean(metadata["averaged"], "averaged")
    history = _check_history(check, metadata["history"])
    params = _check_params(check, metadata, estimator_class)
    context = Context(check, kind=estimator_class._persistence_kind,
                      version=metadata["format_version"], n_snapshots=n_snapshots,
                      n_history=len(history), params=params, criterion=criterion)
    fitted = check_fitted(context, metadata["fitted"])
    n_features, shape = fitted.get("n_features_in_"), fitted["sample_shape_"]
    spec = {"estimator_class": estimator_class, "module": module, "module_name": name,
            "criterion": criterion, "module_kwargs": module_kwargs,
            "net_params": dict(metadata["net_params"]), "params": params, "fitted": fitted,
            "n_snapshots": n_snapshots, "averaged": averaged, "history": history}
    if builtin.is_builtin(module):
        builtin.check_n_features(check, spec)
    if n_features is not None and shape != (n_features,):
        check.fail("fitted.sample_shape_", f"is {short(plain_shape(shape))}, but "
                                           f"fitted.n_features_in_ is {n_features}: 2-D rows "
                                           f"have samples of shape [{n_features}].")
    if builtin.is_builtin(module):
        builtin.check_against_fitted(check, spec)
    return spec
