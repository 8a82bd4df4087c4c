"""``load_ensemble``: read and check both files, check the module they describe, then build."""

import pathlib

import torch

from ._assembly import finish, initialized_net, states, unfitted_estimator
from ._builtin import BUILTIN_MODULES, check_layer_count
from ._format import METADATA, WEIGHTS, qualified_name, refuse, warn
from ._metadata import check_metadata
from ._probe import (
    PROBE_MIN_BUDGET,
    Probes,
    are_distributions,
    check_tensors,
    meta_module,
    output_width,
    probability_rows,
    run_probes,
    zero_rows,
)
from ._reading import SavedWeights, read_metadata


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
      files (FIFOs, devices, sockets and links to them are refused unread;
      each file is opened once, without blocking, checked on that open
      descriptor and read from it, so it cannot be swapped after the check),
      ``metadata.json`` may be at most 64 MiB, hold at most 2**22 JSON
      objects and arrays and nest them at most 32 levels deep (parsing it
      then takes at most about 600 MiB), and module arguments that would
      build a module larger than its tensors are refused before the module
      is built. The weights file is read into memory, then parsed into
      tensors: briefly twice what it holds.

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
    for cls in (*BUILTIN_MODULES, *modules):
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise TypeError(f"modules must hold torch.nn.Module subclasses; got {cls!r}.")
        allowed[qualified_name(cls)] = cls
    path = pathlib.Path(path)
    meta_path = path / METADATA
    spec = check_metadata(meta_path, read_metadata(meta_path), allowed)
    weights = SavedWeights(path / WEIGHTS)
    check_layer_count(meta_path, weights, spec)
    meta = meta_module(meta_path, spec)
    expected = meta.state_dict()
    check_tensors(meta_path, weights, spec, expected)

    estimator = unfitted_estimator(spec, device)
    width = estimator._output_width()[0]
    field, words = estimator._output_width_words
    field, reason = f"fitted.{field}", words.format(width=width)
    probes = Probes(spec)
    meta.eval()
    meta_width = probes.meta_width(meta)
    if meta_width is not None and meta_width != width:
        raise refuse(meta_path, field, f"{reason}, but the module its tensors describe "
                                       f"returns {meta_width} values per row.")
    snapshots, averaged_state = states(weights, spec, list(expected))
    net_ = initialized_net(estimator, snapshots)
    unchecked = _check_for_real(meta_path, spec, probes, net_.module_, meta_width is None,
                                weights.size, device, (field, reason, width))
    if unchecked is not None:
        warn(f"{meta_path}: {unchecked}; loaded without checking {_what(meta_width, spec)} "
             "before predicting.")
    return finish(estimator, net_, snapshots, averaged_state, spec["history"])


def _what(meta_width, spec):
    """The checks skipped, in words."""
    nll = spec["criterion"] is torch.nn.NLLLoss
    return ("its output width" if meta_width is None else "") + (
        " and " if meta_width is None and nll else "") + (
        "that it returns probabilities (criterion NLLLoss)" if nll else "")


def _check_for_real(meta_path, spec, probes, module, width_unknown, weights_size, device,
                    expected):
    """Run the real module on probes where the meta device could not tell enough.

    Its width where the meta device could not run it (``expected``: the field,
    the words and the width the file asks for), that it returns probabilities
    for ``NLLLoss``. Returns None, or why the checks could not be run (for a
    warning).
    """
    nll = spec["criterion"] is torch.nn.NLLLoss
    if not (width_unknown or nll):
        return None
    # Real inputs through the real module: no bigger than the weights file.
    budget = max(weights_size, PROBE_MIN_BUDGET)
    if probes.too_large(budget):
        if probes.rows:
            raise refuse(meta_path, probes.field,
                         f"is {probes.shape[0]}: rows that wide cannot be checked "
                         f"against a module this small ({budget} bytes).")
        return (f"{probes.describe()}: probe inputs that large are not built for "
                f"a module this small ({budget} bytes)")
    checks = []  # (probe samples, their description, what must hold, the refusal)
    if width_unknown:
        field, reason, width = expected
        checks.append((zero_rows(device), "zeros of {} (each input float32 or int64)",
                       lambda out: output_width(out) == width,
                       lambda out: refuse(meta_path, field, f"{reason}, but the module "
                                          f"returns {output_width(out)} values per row.")))
    if nll:
        checks.append((probability_rows(device), "{} inputs", are_distributions,
                       lambda out: refuse(meta_path, "criterion",
                                          "is NLLLoss, so the module must return "
                                          "probabilities (skorch applies no softmax), but "
                                          "its outputs are not distributions.")))
    for make, what, holds, refusal in checks:
        out, unchecked = run_probes(probes, module, make, meta_path, what)
        if unchecked is not None:
            return unchecked
        if not holds(out):
            raise refusal(out)
    return None
