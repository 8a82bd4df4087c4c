"""Fit orchestration and member bookkeeping shared by the snapshot-ensemble estimators."""

import os
import warnings
from collections import OrderedDict
from copy import copy
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from skorch.dataset import unpack_data
from skorch.utils import to_tensor
from torch.optim.swa_utils import update_bn

from ._callbacks import copy_state_dict
from ._checkpoint import CheckpointDir, fingerprint, using
from ._compat import Interval, StrOptions, _fit_context
from ._distributed import picklable_state
from ._inference import runner_for
from ._inputs import (
    InputsModule,
    check_inputs,
    first_output,
    first_rows,
    fit_inputs,
    is_dataset,
    labelled_rows,
    n_samples,
    take_rows,
)
from ._serving import ServingContract
from ._split import validation_split, warn_small_split
from ._training import DEFAULT_NET_PARAMS, RunSpec, build_net, train_once
from .schedules import SCHEDULES
from .selection._rules import (
    SELECTIONS,
    WEIGHTINGS,
    check_member_count,
    choose,
    needs_validation,
    without_validation,
)

__all__ = ["BaseSnapshotEnsemble", "CROSS_FIT_MAX_ROWS", "CROSS_FIT_MIN_RUNS", "DEFAULT_NET_PARAMS"]

# bootstrap="auto" cross-fits the runs of a fit with at most this many rows (the largest
# training set benchmarks/worth.py measured), and only from this many runs on, where every
# run trains on 4/5 of the rows: 2 and 3 folds lost to the single net on the smallest
# time-series sets, whose fold runs saw 18-33 rows (results/worth.md).
CROSS_FIT_MAX_ROWS = 300
CROSS_FIT_MIN_RUNS = 5


def _run_seeds(rng, random_state, n_runs):
    """Each run's torch seed: run 0's drawn first (None without a random_state), then the others."""
    top = np.iinfo(np.int32).max
    first = None if random_state is None else int(rng.randint(top))
    seeds = [first] + [int(rng.randint(top)) for _ in range(1, n_runs)]
    if first is None and n_runs > 1:
        # A worker process's torch starts from the same default seed every time.
        seeds[0] = int(rng.randint(top))
    return seeds


def _bootstrap(rows, seed):
    """A bootstrap sample of the training ``rows`` (sorted), drawn from the run's seed."""
    return np.sort(np.random.RandomState(seed).choice(rows, size=len(rows), replace=True))


def _train_run(estimator, net, train, valid, seed, checkpoint):
    """One run, in whatever process joblib chose: ``(net, SnapshotRecord)``."""

    def check_output(net):
        estimator._check_module_output(net, first_rows(net, train[0]))

    with using(checkpoint, net):  # one fit at a time per checkpoint directory
        return train_once(estimator._run_spec(), net, train, valid, seed=seed,
                          checkpoint=checkpoint, on_initialized=check_output)


@dataclass
class _Plan:
    """What ``fit`` trains, all decided before training starts."""

    X: object  # the validated rows and targets, as skorch takes them
    y: np.ndarray
    split: tuple  # (training rows, validation rows): indices into X
    seeds: list  # each run's torch seed
    net: object  # the template net every run trains (a clone of it after run 0)
    runs: list  # each run's (training rows, validation rows); a resumed run keeps its own
    checkpoints: list  # each run's CheckpointDir, or None
    valid: tuple  # the validation rows given to skorch, (X, y), or None
    y_valid: np.ndarray  # their encoded targets
    cross_fit: bool = False  # runs[r][1] is fold r: run r's own validation rows

    @property
    def X_valid(self):
        return None if self.valid is None else self.valid[0]


class _Count(Interval):
    """``Interval(Integral, ...)`` without bools (``numbers.Integral`` includes True)."""

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)


class BaseSnapshotEnsemble(ServingContract, BaseEstimator):
    """Train one skorch net through M learning-rate cycles and keep M snapshots.

    ``fit`` reads validate -> plan -> train -> keep -> select: ``_validate``
    (settings, inputs, targets), ``_plan`` (a :class:`_Plan`: split, seeds,
    net, runs, checkpoints, validation rows), ``_train`` (the runs),
    ``_keep`` (the snapshots as fitted attributes), ``_select`` (members,
    weights, weight averaging, calibration).

    The contract with a subclass, all class attributes or methods:

    - ``_net_class``, ``_default_module``, ``_default_net``: the skorch class
      it wraps and how a default net is built around a module;
    - targets: ``_target_checks`` (keyword arguments of ``validate_data`` for
      ``y``), ``_validate_targets(y)`` (training targets ready for skorch and
      the module arguments they imply, ``n_classes`` or ``n_outputs``; sets
      the target-related fitted attributes), ``_stratified`` (whether the
      validation split is stratified on them), ``_encode_targets(y)``
      (targets of new labelled rows: ``select``, ``X_valid``);
    - ``_output_width()``: the module's output width and why, checked
      before training;
    - ``_validation_loss(outputs, y)``: the
      :class:`~sksnapshot.selection._core.MixtureLoss` of the members'
      outputs on validation rows, which ``selection`` and ``weighting`` work
      on (setting the fitted ``_validation_attributes``, None without
      validation rows);
    - ``_default_weighting`` and ``_default_calibration``: what "auto" means;
      ``_fit_calibration(X_valid, y_valid)``: the calibration of the combined
      prediction fitted on validation rows, kept as ``_calibration_attribute``
      (1.0 without validation rows or with ``calibration=None``);
    - export and distillation (the last section of this class): the kernel
      heads ``_prediction_head(return_std)`` and ``_target_head()``,
      ``_soft_targets(X)``, ``_student_criterion(net)``,
      ``_fit_soft_calibration(X_valid, targets)``, ``_data_kwargs()`` and
      ``_data_attributes``; ``_export.py`` and ``_distill.py`` get an
      ``EnsembleSpec`` and a ``DistillationSource`` built from them, never
      the estimator.
    """

    _target_checks = {}
    _validation_attributes = ("validation_scores_",)
    _can_cross_fit = False

    _parameter_constraints = {
        "net": "no_validation",
        "n_snapshots": [StrOptions({"auto"}), _Count(Integral, 1, None, closed="left")],
        "n_members": [None, _Count(Integral, 1, None, closed="left")],
        "min_lr": [Interval(Real, 0, None, closed="left")],
        "schedule": [StrOptions(set(SCHEDULES)), callable],
        "selection": [StrOptions(set(SELECTIONS))],
        "weighting": [StrOptions({"auto", *WEIGHTINGS})],
        "combine": [StrOptions({"proba", "weights"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "checkpoint_dir": [None, str, os.PathLike],
        "n_runs": [_Count(Integral, 1, None, closed="left")],
        "bootstrap": [StrOptions({"auto", "folds"}), "boolean"],
        "n_jobs": [None, Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, net=None, *, n_snapshots="auto", n_members=None, min_lr=0.0,
                 schedule="cosine", selection="all", weighting="auto", combine="proba",
                 calibration="auto", validation_fraction=0.1, checkpoint_dir=None,
                 n_runs=1, bootstrap="auto", n_jobs=None, random_state=None, verbose=0):
        self.net = net
        self.n_snapshots = n_snapshots
        self.n_members = n_members
        self.min_lr = min_lr
        self.schedule = schedule
        self.selection = selection
        self.weighting = weighting
        self.combine = combine
        self.calibration = calibration
        self.validation_fraction = validation_fraction
        self.checkpoint_dir = checkpoint_dir
        self.n_runs = n_runs
        self.bootstrap = bootstrap
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def __getstate__(self):
        # A net whose classes live in __main__ (a script or notebook) pickles so that
        # a process that cannot find them (a joblib/Dask/Ray worker) says what to do.
        return picklable_state(super().__getstate__())

    def _check_member_settings(self):
        """The checks of ``n_members`` against the other settings, for fit and select."""
        if (self.n_members is not None and self.n_snapshots != "auto"
                and self.n_members > self.n_snapshots):
            raise ValueError(
                f"n_members={self.n_members} cannot exceed n_snapshots={self.n_snapshots}."
            )
        check_member_count(self.selection, self.n_members)

    # -- input ----------------------------------------------------------------
    def _validate_X_predict(self, X):
        check_is_fitted(self, "snapshots_")
        return check_inputs(self, X, reset=False)

    def _labelled_rows(self, X, y):
        """New labelled rows (``select``, ``X_valid``): inputs and encoded targets."""
        X, y = labelled_rows(self, X, y)
        return X, self._encode_targets(y)

    # -- training -----------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, X_valid=None, y_valid=None):
        """Train the net once through ``n_snapshots`` cycles and keep the snapshots.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Training samples, as skorch takes them: a 2-D array-like of shape
            (n_samples, n_features) (validated by scikit-learn and converted to
            float32); an array or tensor of rank >= 3 with samples first
            (images, sequences; floats become float32, integers are kept); a
            dict of such arrays (a module taking several inputs); or a
            ``torch.utils.data.Dataset`` of ``(X, y)`` items.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
            Class labels of any type scikit-learn accepts (classifier), or
            numeric targets, converted to float32 (regressor). May be None only
            when ``X`` is a Dataset: they are then read from its ``targets``
            attribute (as torchvision's datasets have), a ``TensorDataset``'s
            second tensor, or one pass over its items.
        X_valid, y_valid : default=None
            Rows to choose members on (and to report ``valid_loss``),
            instead of holding out ``validation_fraction`` of ``X``; the same
            kinds as ``X, y``. E.g. the validation images without the random
            augmentation of the training Dataset.

        Returns
        -------
        self : object
            The fitted ensemble.
        """
        X, y, data_kwargs = self._validate(X, y)
        plan = self._plan(X, y, data_kwargs, X_valid, y_valid)
        results, bn_rows = self._train(plan)
        self._keep(results)
        if plan.cross_fit:
            self._select_out_of_fold(plan, bn_rows)
        else:
            self._select(plan.X_valid, plan.y_valid, bn_rows)
        if self.verbose:
            print(f"{type(self).__name__}: {len(self.snapshots_)} snapshots in "
                  f"{self.n_iter_} iterations; members {self.members_.tolist()} with "
                  f"weights {np.round(self.weights_, 3).tolist()}"
                  + (", averaged into one model." if self.combine == "weights" else "."))
        return self

    def _validate(self, X, y):
        """The settings, then ``(X, y, module arguments the data imply)`` as skorch takes them."""
        self._check_member_settings()
        X, y = fit_inputs(self, X, y, **self._target_checks)
        y, data_kwargs = self._validate_targets(y)
        if isinstance(X, np.ndarray) and X.ndim == 2:  # a width only makes sense for 2-D rows
            data_kwargs["n_features"] = X.shape[1]
        return X, y, data_kwargs

    def _plan(self, X, y, data_kwargs, X_valid, y_valid):
        """Decide everything before training: the split, seeds, net, runs, checkpoints."""
        rng = check_random_state(self.random_state)
        n = n_samples(X)
        cross_fit = self._cross_fitting(y, X_valid)
        if X_valid is not None or cross_fit:
            split = (np.arange(n), np.arange(0))
        else:
            strata = y if self._stratified else np.zeros(n, dtype=np.int64)
            split = validation_split(strata, self.validation_fraction, rng)
        folds = self._folds(y, rng) if cross_fit else None
        seeds = _run_seeds(rng, self.random_state, self.n_runs)

        net = self._net_for_data(data_kwargs)
        runs = folds or [(split[0] if not self._bootstrapped()
                          else _bootstrap(split[0], seed), split[1]) for seed in seeds]
        checkpoints = [None] * self.n_runs
        if self.checkpoint_dir is not None:
            checkpoints, runs = self._checkpoints(X, y, net, seeds, runs, n, cross_fit)
        valid_idx = runs[0][1]  # shared by every run, unless cross-fitted
        if cross_fit:  # each run gets its own fold (_train); every row is out of fold once
            valid, y_v = None, y
            warn_small_split(min(len(t) for t, _ in runs), min(len(v) for _, v in runs),
                             data_driven=False)
            return _Plan(X, y, split, seeds, net, runs, checkpoints, valid, y_v, cross_fit)
        if X_valid is not None:
            X_v, y_v = self._labelled_rows(X_valid, y_valid)
            valid = (X_v, y_v) if not is_dataset(X_v) else take_rows(X_v, y_v, np.arange(len(y_v)))
        else:
            valid = take_rows(X, y, valid_idx) if len(valid_idx) else None
            y_v = y[valid_idx]

        warn_small_split(len(runs[0][0]), len(y_v),
                         data_driven=needs_validation(self.selection, self._weighting()))
        return _Plan(X, y, split, seeds, net, runs, checkpoints, valid, y_v)

    def _bootstrapped(self):
        """Whether each run trains on a bootstrap sample (``bootstrap=True``)."""
        return not isinstance(self.bootstrap, str) and bool(self.bootstrap)

    def _cross_fitting(self, y, X_valid):
        """Whether this fit cross-fits its runs (``bootstrap="folds"``, or what "auto" picks).

        "auto" never fails for the folds' sake: a class with fewer rows than runs keeps
        the shared split, as before cross-fitting existed.
        """
        if self.bootstrap == "auto":
            return (self._can_cross_fit
                    and CROSS_FIT_MIN_RUNS <= self.n_runs <= np.bincount(y).min()
                    and X_valid is None and self.validation_fraction > 0
                    and len(y) <= CROSS_FIT_MAX_ROWS)
        if self.bootstrap != "folds":
            return False
        conflict = ("" if self._can_cross_fit else f"{type(self).__name__} does not cross-fit "
                    "its runs (the spread between runs cannot be seen out of fold)")
        conflict = conflict or next((why for bad, why in (
            (self.n_runs < 2, f"it needs n_runs >= 2 folds, got n_runs={self.n_runs}"),
            (X_valid is not None, "the folds are the validation rows, not X_valid"),
        ) if bad), "")
        if conflict:
            raise ValueError(f"bootstrap='folds': {conflict}. Use bootstrap=False or 'auto'.")
        return True

    def _folds(self, y, rng):
        """The runs' (training rows, fold): ``n_runs`` folds, stratified for a classifier."""
        k = self.n_runs
        if self._stratified:
            counts = np.bincount(y)
            if counts.min() < k:
                label = self.classes_[np.argmin(counts)].tolist()
                raise ValueError(
                    f"Cross-fitting n_runs={k} runs splits the rows into {k} stratified "
                    f"folds, but class {label!r} has only {counts.min()} rows, and every "
                    f"fold needs one of each class. Use n_runs <= {counts.min()}, or "
                    "bootstrap=False (runs sharing one validation split)."
                )
        if len(y) < 2 * k:
            raise ValueError(f"Cross-fitting n_runs={k} runs needs at least {2 * k} rows "
                             f"(each fold trains on the others), got {len(y)}.")
        cv = (StratifiedKFold if self._stratified else KFold)(
            k, shuffle=True, random_state=rng.randint(np.iinfo(np.int32).max))
        return list(cv.split(np.zeros((len(y), 1)), y))

    def _train(self, plan):
        """Train the plan's runs: their ``(net, record)`` pairs, and the rows for BatchNorm."""
        if self.n_runs == 1 and not plan.cross_fit:  # in this process
            train = take_rows(plan.X, plan.y, plan.runs[0][0])
            return [_train_run(self, plan.net, train, plan.valid, plan.seeds[0],
                               plan.checkpoints[0])], train[0]
        results = self._train_runs(plan)
        # BatchNorm statistics of averaged weights: on the training rows, not a sample.
        n = n_samples(plan.X)
        held_out = np.arange(0) if plan.cross_fit else plan.runs[0][1]
        bn_rows = (take_rows(plan.X, plan.y, np.setdiff1d(np.arange(n), held_out))[0]
                   if self.combine == "weights" else None)
        return results, bn_rows

    def _checkpoints(self, X, y, net, seeds, runs, n, cross_fit=False):
        """One :class:`CheckpointDir` per run, and the runs' splits (a resumed run keeps its own).

        One run uses ``checkpoint_dir`` itself; several use ``run_000/``, ``run_001/``...
        in it. Runs resumed from their directories must share their validation rows;
        fresh runs adopt those rows.
        """
        params = self.get_params(deep=False)
        params.pop("n_jobs")  # results do not depend on it
        params.pop("n_runs")  # nor a run's: adding runs resumes the runs done
        several = self.n_runs > 1
        checkpoints = []
        for r, (seed, split) in enumerate(zip(seeds, runs)):
            # The seed when it follows from random_state; with None a new fit draws new
            # seeds, and resumes from the torch state saved in the directory.
            params.update(run=r, run_seed=seed if self.random_state is not None else None)
            path = os.path.join(self.checkpoint_dir, f"run_{r:03d}") if several \
                else self.checkpoint_dir
            checkpoints.append(CheckpointDir(path, fingerprint(X, y, params, net), split))
        resumed = [c for c, split in zip(checkpoints, runs) if c.split is not split]
        if not resumed:
            return checkpoints, runs
        if cross_fit:
            if any(not np.array_equal(c.split[1], split[1])
                   for c, split in zip(checkpoints, runs)):
                raise ValueError(
                    f"The runs saved in {str(self.checkpoint_dir)!r} were cross-fitted on "
                    "other folds, so they cannot be resumed into one ensemble (the folds "
                    "follow from random_state: set it to resume). Delete that directory to "
                    "start afresh, or pass another checkpoint_dir."
                )
            return checkpoints, runs
        valid = resumed[0].split[1]
        if any(not np.array_equal(c.split[1], valid) for c in resumed):
            raise ValueError(
                f"The runs saved in {str(self.checkpoint_dir)!r} hold different validation "
                "rows, so they cannot be resumed into one ensemble. Delete that directory "
                "to start afresh, or pass another checkpoint_dir."
            )
        train = np.setdiff1d(np.arange(n), valid)
        for c, seed in zip(checkpoints, seeds):
            if c not in resumed:
                c.split = (train if not self._bootstrapped() else _bootstrap(train, seed),
                           valid)
        return checkpoints, [c.split for c in checkpoints]

    def _run_spec(self):
        """What training reads of the settings (:class:`~sksnapshot._training.RunSpec`):
        ``n_snapshots="auto"`` is resolved here, once."""
        return RunSpec(n_snapshots=self.n_snapshots, min_lr=self.min_lr, schedule=self.schedule,
                       verbose=self.verbose, net_class=self._net_class,
                       auto=self.n_snapshots == "auto")

    def _train_runs(self, plan):
        """Train the runs through joblib, in order; after an interrupted run, start no other.

        Each task carries its own net, rows and seed and seeds torch itself, so
        the results do not depend on the backend or ``n_jobs``.
        """
        worker = copy(self)  # without the previous fit's fitted attributes
        for name in ("net_", "snapshots_", "averaged_state_", *self._validation_attributes):
            worker.__dict__.pop(name, None)
        nets = [plan.net] + [clone(plan.net) for _ in range(1, self.n_runs)]
        stop = []

        def tasks():
            for r in range(self.n_runs):
                if stop:  # a Ctrl-C ended the last run (sequential backends only)
                    return
                train = take_rows(plan.X, plan.y, plan.runs[r][0])
                valid = (take_rows(plan.X, plan.y, plan.runs[r][1]) if plan.cross_fit
                         else plan.valid)
                yield delayed(_train_run)(worker, nets[r], train, valid, plan.seeds[r],
                                          plan.checkpoints[r])

        results = []
        for result in Parallel(n_jobs=self.n_jobs, return_as="generator")(tasks()):
            results.append(result)
            if result[1].interrupted:
                stop.append(True)
        return results

    def _keep(self, results):
        """The fitted attributes from the runs' ``(net, record)`` pairs, pooled run-major."""
        records = [record for _, record in results]
        snapshots = [s for record in records for s in record.snapshots]
        divergences = [{**d, "run": r} for r, record in enumerate(records)
                       for d in record.divergences]
        if not snapshots:
            if not any(record.interrupted for record in records) and divergences:
                raise RuntimeError(
                    f"Every learning-rate cycle diverged ({len(divergences)} "
                    "divergences; see the warnings), so no usable snapshot was taken. "
                    "Lower the net's lr, standardise the features (for regression also the "
                    "targets, e.g. with TransformedTargetRegressor) or check the data."
                )
            raise RuntimeError(
                "Training stopped before the first learning-rate cycle ended, so no "
                "snapshot was taken and there is no ensemble to return."
            )
        n_iter = sum(record.n_iter for record in records)
        n_iter_planned = records[0].n_iter_planned * self.n_runs
        if any(record.interrupted for record in records) or len(records) < self.n_runs:
            of = "" if self.n_runs == 1 else f" over {len(records)} of {self.n_runs} runs"
            planned = records[0].n_cycles * self.n_runs
            warnings.warn(
                f"Training stopped after {len(snapshots)} of {planned} "
                f"cycles{of} (iteration {n_iter} of {n_iter_planned}); "
                f"the ensemble keeps the {len(snapshots)} snapshots taken.",
                RuntimeWarning, stacklevel=3,
            )
        self.net_ = results[0][0]
        self.snapshots_ = snapshots
        self.snapshot_runs_ = [r for r, record in enumerate(records) for _ in record.snapshots]
        self.snapshot_epochs_ = [e for record in records for e in record.snapshot_epochs]
        self.snapshot_iterations_ = [t for record in records for t in record.snapshot_iterations]
        self.divergences_ = divergences
        self.n_iter_ = n_iter
        self.n_iter_planned_ = n_iter_planned

    def _weighting(self):
        """``weighting``, with "auto" resolved to the estimator's measured default."""
        return self._default_weighting if self.weighting == "auto" else self.weighting

    def _calibration(self):
        """``calibration``, with "auto" resolved to the estimator's own kind (or None)."""
        return self._default_calibration if self.calibration == "auto" else self.calibration

    def _select(self, X_valid, y_valid, X_bn):
        """Choose members and weights on validation rows; average weights if asked; calibrate.

        Without validation rows (``X_valid`` None) the last ``n_members``
        snapshots are used with equal weights, or, for ``weighting="shrink"``,
        the shrinkage's prior (equal weights on the last two of them).
        ``X_bn`` are the rows that re-estimate BatchNorm statistics of a
        weight-averaged model.
        """
        n_members = self.n_members
        if n_members is not None and n_members > len(self.snapshots_):
            n_members = len(self.snapshots_)  # an interrupted fit has fewer snapshots
        weighting = self._weighting()
        if X_valid is not None:
            loss = self._validation_loss(self._member_outputs(X_valid, self.snapshots_), y_valid)
            self.members_, self.weights_ = choose(loss, self.selection, n_members, weighting)
        else:
            self.members_, self.weights_, how = without_validation(len(self.snapshots_),
                                                                   n_members, weighting)
            if needs_validation(self.selection, weighting):
                warnings.warn(
                    f"selection={self.selection!r} with weighting={weighting!r} needs "
                    "validation rows (validation_fraction > 0, or call select(X, y)); "
                    f"using {how}.", UserWarning, stacklevel=3,
                )
            for name in self._validation_attributes:
                setattr(self, name, None)
        self.averaged_state_ = self._average_weights(X_bn) if self.combine == "weights" else None
        calibrate = X_valid is not None and self._calibration() is not None
        setattr(self, self._calibration_attribute,
                self._fit_calibration(X_valid, y_valid) if calibrate else 1.0)

    def _select_out_of_fold(self, plan, X_bn):
        """Members, weights and calibration of cross-fitted runs, from every row out of fold.

        Run ``r`` predicts its own fold only. The snapshots are matched across runs by
        their place from the end (the last of every run, the one before...; a run with
        more snapshots than the others lends only its last ones), and the rows' out-of-fold
        outputs of each place form one "member" of the mixture loss: the choice and its
        weights then fit what the pooled runs predict, each place's weight shared
        equally by the runs. The calibration is fitted on the rows' out-of-fold mixtures
        (``_fit_run_calibration``).
        """
        runs = np.asarray(self.snapshot_runs_)
        n_runs = runs.max() + 1  # an interrupted fit may have fewer runs than n_runs
        places = min(np.count_nonzero(runs == r) for r in range(n_runs))
        snapshot_of = [np.flatnonzero(runs == r)[-places:] for r in range(n_runs)]
        folds = [valid for _, valid in plan.runs[:n_runs]]
        rows = np.concatenate(folds)
        outputs = [self._member_outputs(take_rows(plan.X, plan.y, fold)[0],
                                        [self.snapshots_[i] for i in np.flatnonzero(runs == r)])
                   for r, fold in enumerate(folds)]
        oof = np.empty((places, len(plan.y), *outputs[0].shape[2:]), dtype=outputs[0].dtype)
        for fold, out in zip(folds, outputs):
            oof[:, fold] = out[len(out) - places:]
        oof, y = oof[:, rows], plan.y[rows]  # the rows of the runs trained (all, unless cut)
        n_members = self.n_members if self.n_members is None else min(self.n_members, places)
        chosen, weights = choose(self._validation_loss(oof, y), self.selection, n_members,
                                 self._weighting())
        self._per_snapshot_scores(outputs, [plan.y[f] for f in folds], places)
        self.members_ = np.array([snapshot_of[r][j] for r in range(n_runs) for j in chosen])
        self.weights_ = np.tile(weights, n_runs) / n_runs
        self.averaged_state_ = self._average_weights(X_bn) if self.combine == "weights" else None
        calibrate = self._calibration() is not None
        run_of_row = np.concatenate([np.full(len(f), r) for r, f in enumerate(folds)])
        mixture = np.tensordot(weights, oof[chosen], axes=1)
        self._fit_run_calibration(mixture, y, run_of_row, calibrate)

    def _average_weights(self, X_bn):
        """Stochastic weight averaging of the chosen snapshots into one state.

        Floating-point tensors are averaged with the member weights; BatchNorm
        statistics are then re-estimated with one pass over ``X_bn``
        (``torch.optim.swa_utils.update_bn``), since averaged weights do not
        match any member's statistics.
        """
        runs = np.asarray(self.snapshot_runs_)
        if len(set(runs[self.members_].tolist())) > 1:
            # Weights of independent runs lie in different basins: their average is no
            # model. Keep the run of the heaviest member, with its weights renormalised.
            keep = runs[self.members_] == runs[self.members_[np.argmax(self.weights_)]]
            self.members_ = self.members_[keep]
            self.weights_ = self.weights_[keep] / self.weights_[keep].sum()
        states = [self.snapshots_[i] for i in self.members_]
        averaged = OrderedDict()
        for key, first in states[0].items():
            if first.is_floating_point():
                averaged[key] = sum(w * s[key] for w, s in zip(self.weights_.tolist(), states))
            else:  # integer buffers, e.g. BatchNorm's num_batches_tracked
                averaged[key] = first.clone()
        net, module = self.net_, self.net_.module_
        device = net.device
        batches = (to_tensor(unpack_data(batch)[0], device=device)
                   for batch in net.get_iterator(net.get_dataset(X_bn), training=False))
        before = copy_state_dict(module)
        try:
            module.load_state_dict(averaged)
            update_bn(batches, InputsModule(module))
            return copy_state_dict(module)
        finally:
            module.load_state_dict(before)

    def _check_module_output(self, net, x_few):
        """Fail before training when the module's output width is wrong."""
        expected, reason = self._output_width()
        module = net.module_
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = net.infer(x_few)
        finally:
            module.train(was_training)
        out = first_output(out)
        width = out.shape[1] if out.ndim == 2 else None
        if width != expected:
            raise ValueError(
                f"The module returns outputs of shape {tuple(out.shape)} for "
                f"{len(out)} rows, but {type(self).__name__} needs "
                f"(n_rows, {expected}) here ({reason})."
            )

    # -- choosing again ------------------------------------------------------
    def select(self, X, y=None):
        """Choose members and weights again on new labelled rows, without training.

        Applies the current ``selection``, ``n_members``, ``weighting`` and
        ``combine`` (change them with ``set_params`` first) to the snapshots
        of the last ``fit``, scored on ``X, y``: e.g. a held-out set of your
        own. With ``combine="weights"``, BatchNorm statistics of the averaged
        model are re-estimated on ``X``.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Labelled rows to choose on (not training rows, or the choice
            favours over-fitted snapshots), of the kind ``fit`` accepts.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
            Their targets (for a classifier, labels among ``classes_``); may be
            None when ``X`` is a Dataset whose items carry them.

        Returns
        -------
        self : object
            With new ``members_``, ``weights_``, ``validation_scores_`` and
            ``averaged_state_``.
        """
        check_is_fitted(self, "snapshots_")
        X, y = self._labelled_rows(X, y)
        self._validate_params()
        self._check_member_settings()
        self._select(X, y, X)
        return self

    # -- prediction -----------------------------------------------------------
    def _member_outputs(self, X, states):
        """Every state's outputs on ``X``: shape ``(n_states, n_rows, n_outputs)``."""
        return runner_for(self.net_).each(X, states)

    def _weighted_outputs(self, X):
        """The weighted sum of the predicting members' outputs, per row."""
        states, weights = self._combined_states()
        return runner_for(self.net_).weighted_sum(X, states, weights)

    def _reduced_outputs(self, X, reduce):
        """``reduce(member_outputs, weights)`` per batch for the predicting members, stacked.

        ``member_outputs`` is a float64 array ``(n_members, batch, ...)``.
        """
        states, weights = self._combined_states()

        def on_batch(outputs):
            return reduce(torch.stack(list(outputs)).double().cpu().numpy(), weights)

        return runner_for(self.net_).map_batches(X, states, on_batch)

    def _combined_states(self):
        """The states ``predict`` runs and their weights."""
        check_is_fitted(self, "snapshots_")
        if self.averaged_state_ is not None:
            return [self.averaged_state_], np.ones(1)
        return [self.snapshots_[i] for i in self.members_], self.weights_

    # -- the net a fit trains ------------------------------------------------------
    def _net_for_data(self, data_kwargs):
        """The net a fit trains: the template built for data of these sizes."""
        net = build_net(self, data_kwargs, self.sample_shape_)
        if "n_classes" in data_kwargs and getattr(net, "classes", ()) is None:
            # skorch infers its classes from y, which a Dataset X (or a bootstrap
            # sample missing a class) does not give it.
            net.set_params(classes=np.arange(data_kwargs["n_classes"]))
        return net
