"""Training and member bookkeeping shared by the snapshot-ensemble estimators."""

import inspect
import json
import os
import warnings
from collections import OrderedDict
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch.callbacks import LRScheduler
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from skorch.history import History
from torch.optim.swa_utils import update_bn

from ._callbacks import CyclicSnapshots, copy_state_dict
from ._checkpoint import CheckpointDir, fingerprint
from ._data import torch_seed, validation_split
from ._distributed import picklable_state, without_accelerator
from ._schedules import SCHEDULES
from ._selection import SELECTIONS, WEIGHTINGS

_CALLBACK_NAME = "snapshots"

# What the default nets of both estimators share (the paper's optimizer, a quiet
# net, no split of its own); each adds its criterion and peak learning rate.
DEFAULT_NET_PARAMS = {
    "optimizer": torch.optim.SGD,
    "optimizer__momentum": 0.9,
    "optimizer__nesterov": True,
    "max_epochs": 50,
    "batch_size": 128,
    "iterator_train__shuffle": True,
    "train_split": None,
    "verbose": 0,
}


def _quiet(*args, **kwargs):
    """The print-log sink of a net trained with ``verbose=0``."""


class BaseSnapshotEnsemble(BaseEstimator):
    """Train one skorch net through M learning-rate cycles and keep M snapshots.

    Subclasses say which skorch class they wrap (``_net_class``), how to build
    a default net around a module (``_default_net``), which data-dependent
    module arguments they fill in, how one member predicts
    (``_member_predict``) and how members are chosen on validation rows
    (``_choose_members``).
    """

    _parameter_constraints = {
        "net": "no_validation",
        "n_snapshots": [Interval(Integral, 1, None, closed="left")],
        "n_members": [None, Interval(Integral, 1, None, closed="left")],
        "min_lr": [Interval(Real, 0, None, closed="left")],
        "schedule": [StrOptions(set(SCHEDULES)), callable],
        "selection": [StrOptions(set(SELECTIONS))],
        "weighting": [StrOptions(set(WEIGHTINGS))],
        "combine": [StrOptions({"proba", "weights"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "checkpoint_dir": [None, str, os.PathLike],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, net=None, *, n_snapshots=5, n_members=None, min_lr=0.0,
                 schedule="cosine", selection="all", weighting="optimize", combine="proba",
                 validation_fraction=0.1, checkpoint_dir=None, random_state=None, verbose=0):
        self.net = net
        self.n_snapshots = n_snapshots
        self.n_members = n_members
        self.min_lr = min_lr
        self.schedule = schedule
        self.selection = selection
        self.weighting = weighting
        self.combine = combine
        self.validation_fraction = validation_fraction
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.verbose = verbose

    def __getstate__(self):
        # A net whose classes live in __main__ (a script or notebook) pickles so that
        # a process that cannot find them (a joblib/Dask/Ray worker) says what to do.
        return picklable_state(super().__getstate__())

    # -- building the net -------------------------------------------------
    def _build_net(self, data_kwargs):
        """Clone the template (or build the default net) and fill in data sizes."""
        net = self.net
        if net is None:
            net = self._default_net(self._default_module)
        elif isinstance(net, torch.nn.Module) or (
            isinstance(net, type) and issubclass(net, torch.nn.Module)
        ):
            net = self._default_net(net)
        elif not isinstance(net, self._net_class):
            raise InvalidParameterError(
                f"The 'net' parameter of {type(self).__name__} must be None, a "
                f"skorch {self._net_class.__name__}, or a torch.nn.Module subclass "
                f"or instance; got {net!r}."
            )
        net = clone(net)

        # Fill in e.g. n_features/n_classes only where the module's constructor
        # takes them and the user left them unset.
        if isinstance(net.module, type):
            accepted = inspect.signature(net.module).parameters
            given = net.get_params(deep=False)
            fill = {f"module__{name}": value for name, value in data_kwargs.items()
                    if name in accepted and f"module__{name}" not in given}
            net.set_params(**fill)

        for name, callback in self._user_callbacks(net):
            if isinstance(callback, LRScheduler) or (
                isinstance(callback, type) and issubclass(callback, LRScheduler)
            ):
                raise ValueError(
                    f"The net has its own learning-rate scheduler callback ({name!r}). "
                    f"{type(self).__name__} sets the learning rate of every batch "
                    "itself; remove the LRScheduler from the net's callbacks."
                )
            if name == _CALLBACK_NAME:
                raise ValueError(
                    f"The callback name {_CALLBACK_NAME!r} is reserved by "
                    f"{type(self).__name__}; rename the net's callback."
                )
        return net

    @staticmethod
    def _user_callbacks(net):
        for i, item in enumerate(net.callbacks or []):
            if isinstance(item, (tuple, list)):
                yield item[0], item[1]
            else:
                yield getattr(item, "__name__", type(item).__name__) + f"[{i}]", item

    # -- training -----------------------------------------------------------
    def _fit_snapshots(self, X, y, data_kwargs, stratify):
        """Train once and store ``net_``, ``snapshots_`` and ``members_``.

        ``stratify`` holds the labels to stratify the validation split on, or
        None for a plain random split.
        """
        if self.n_members is not None and self.n_members > self.n_snapshots:
            raise ValueError(
                f"n_members={self.n_members} cannot exceed n_snapshots={self.n_snapshots}."
            )
        if self.selection == "all" and self.n_members is not None:
            raise ValueError(
                f"selection='all' uses every snapshot; got n_members={self.n_members}. "
                "Use selection='last' (or another strategy) to keep fewer."
            )
        rng = check_random_state(self.random_state)
        strata = stratify if stratify is not None else np.zeros(len(y), dtype=np.int64)
        train, valid = validation_split(strata, self.validation_fraction, rng)
        seed = None if self.random_state is None else int(rng.randint(np.iinfo(np.int32).max))

        net = self._build_net(data_kwargs)
        checkpoint = progress = None
        if self.checkpoint_dir is not None:
            digest = fingerprint(X, y, self.get_params(deep=False), net)
            checkpoint = CheckpointDir(self.checkpoint_dir, digest,
                                       extra={"train": torch.as_tensor(train),
                                              "valid": torch.as_tensor(valid)})
            progress = checkpoint.load()
            if progress is not None:  # the split of the run being resumed
                train, valid = progress["train"].numpy(), progress["valid"].numpy()
                checkpoint.extra = {"train": progress["train"], "valid": progress["valid"]}
        collector = CyclicSnapshots(self.n_snapshots, min_lr=self.min_lr, schedule=self.schedule,
                                    checkpoint=checkpoint)
        quiet = {}
        if not self.verbose and net.get_params(deep=False).get(
                "callbacks__print_log__sink", "auto") == "auto":
            # skorch's PrintLog ignores verbose=0 when its sink is not builtins.print:
            # Accelerate's accelerator.print, or print after Ray's joblib backend
            # replaced builtins.print. A sink that prints nothing keeps the net quiet.
            quiet = {"callbacks__print_log__sink": _quiet}
        net.set_params(
            callbacks=list(net.callbacks or []) + [(_CALLBACK_NAME, collector)],
            train_split=predefined_split(Dataset(X[valid], y[valid])) if len(valid) else None,
            verbose=self.verbose,
            **quiet,
        )
        with torch_seed(seed):
            net.initialize()
            self._check_module_output(net, X[:2])
            epochs = net.max_epochs
            if progress is not None:
                epochs -= self._resume(net, collector, progress)
            # skorch swallows KeyboardInterrupt inside partial_fit; whatever
            # snapshots were taken until then are kept below.
            net.partial_fit(X[train], y[train], epochs=epochs)
            # A net with skorch.hf.AccelerateMixin predicts and pickles without it.
            self._keep_snapshots(without_accelerator(net, self._net_class))
            self._select(X[valid], y[valid], X[train])
        if self.verbose:
            print(f"{type(self).__name__}: {len(self.snapshots_)} snapshots in "
                  f"{self.n_iter_} iterations; members {self.members_.tolist()} with "
                  f"weights {np.round(self.weights_, 3).tolist()}"
                  + (", averaged into one model." if self.combine == "weights" else "."))
        return self

    @staticmethod
    def _resume(net, collector, progress):
        """Put a fresh net back in the state of the checkpoint; return epochs done."""
        net.module_.load_state_dict(progress["module"])
        net.optimizer_.load_state_dict(progress["optimizer"])
        net.history = History(json.loads(progress["history"]))
        collector.restore(progress["callback"], progress["snapshots"])
        torch.set_rng_state(progress["rng"])
        if progress["cuda_rng"]:
            torch.cuda.set_rng_state_all(progress["cuda_rng"])
        return progress["epochs_done"]

    def _keep_snapshots(self, net):
        """Move the snapshots from the callback to the estimator."""
        collector = dict(net.callbacks_)[_CALLBACK_NAME]
        snapshots = collector.snapshots_
        # The ensemble owns the snapshots; the callback keeps no second copy
        # (nor the initial weights it kept for the divergence guard).
        collector.snapshots_ = []
        collector._initial_state = None
        interrupted = collector.iteration_ < collector.n_iter_
        if not snapshots:
            if not interrupted and collector.divergences_:
                raise RuntimeError(
                    f"Every learning-rate cycle diverged ({len(collector.divergences_)} "
                    "divergences; see the warnings), so no usable snapshot was taken. "
                    "Lower the net's lr, standardise the features (for regression also the "
                    "targets, e.g. with TransformedTargetRegressor) or check the data."
                )
            raise RuntimeError(
                "Training stopped before the first learning-rate cycle ended, so no "
                "snapshot was taken and there is no ensemble to return."
            )
        if interrupted:
            warnings.warn(
                f"Training stopped after {len(snapshots)} of {self.n_snapshots} "
                f"cycles (iteration {collector.iteration_} of {collector.n_iter_}); "
                f"the ensemble keeps the {len(snapshots)} snapshots taken.",
                RuntimeWarning,
            )
        self.net_ = net
        self.snapshots_ = snapshots
        self.snapshot_epochs_ = list(collector.snapshot_epochs_)
        self.divergences_ = list(collector.divergences_)
        self.n_iter_ = collector.iteration_

    def _select(self, X_valid, y_valid, X_bn):
        """Choose members and weights on validation rows; average weights if asked.

        Without validation rows the last ``n_members`` snapshots are used with
        equal weights. ``X_bn`` are the rows that re-estimate BatchNorm
        statistics of a weight-averaged model.
        """
        n_members = self.n_members
        if n_members is not None and n_members > len(self.snapshots_):
            n_members = len(self.snapshots_)  # an interrupted fit has fewer snapshots
        if len(X_valid):
            outputs = np.stack(list(self._predict_states(X_valid, self.snapshots_)))
            self.members_, self.weights_ = self._choose_members(outputs, y_valid, n_members)
        else:
            if self.selection not in ("last", "all") or self.weighting != "uniform":
                warnings.warn(
                    f"selection={self.selection!r} with weighting={self.weighting!r} needs "
                    "validation rows (validation_fraction > 0, or call select(X, y)); "
                    "using the last n_members snapshots with equal weights.",
                    UserWarning,
                )
            self._clear_validation_results()
            k = len(self.snapshots_) if n_members is None else n_members
            self.members_ = np.arange(len(self.snapshots_) - k, len(self.snapshots_))
            self.weights_ = np.full(k, 1.0 / k)
        self.averaged_state_ = self._average_weights(X_bn) if self.combine == "weights" else None

    def _average_weights(self, X_bn):
        """Stochastic weight averaging of the chosen snapshots into one state.

        Floating-point tensors are averaged with the member weights; BatchNorm
        statistics are then re-estimated with one pass over ``X_bn``
        (``torch.optim.swa_utils.update_bn``), since averaged weights do not
        match any member's statistics.
        """
        states = [self.snapshots_[i] for i in self.members_]
        averaged = OrderedDict()
        for key, first in states[0].items():
            if first.is_floating_point():
                averaged[key] = sum(w * s[key] for w, s in zip(self.weights_.tolist(), states))
            else:  # integer buffers, e.g. BatchNorm's num_batches_tracked
                averaged[key] = first.clone()
        net, module = self.net_, self.net_.module_
        try:
            module.load_state_dict(averaged)
            loader = net.get_iterator(net.get_dataset(X_bn), training=False)
            update_bn(loader, module, device=net.device)
            return copy_state_dict(module)
        finally:
            module.load_state_dict(self.snapshots_[-1])

    def _check_module_output(self, net, X_few):
        """Fail before training when the module's output width is wrong."""
        expected = self._expected_output_width()
        module = net.module_
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = net.infer(torch.as_tensor(X_few).to(net.device))
        finally:
            module.train(was_training)
        out = out[0] if isinstance(out, (tuple, list)) else out
        width = out.shape[1] if out.ndim == 2 else None
        if width != expected:
            raise ValueError(
                f"The module returns outputs of shape {tuple(out.shape)} for "
                f"{len(X_few)} rows, but {type(self).__name__} needs "
                f"(n_rows, {expected}) here ({self._output_width_reason()})."
            )

    # -- choosing again ------------------------------------------------------
    def select(self, X, y):
        """Choose members and weights again on new labelled rows, without training.

        Applies the current ``selection``, ``n_members``, ``weighting`` and
        ``combine`` (change them with ``set_params`` first) to the snapshots
        of the last ``fit``, scored on ``X, y``: e.g. a held-out set of your
        own. With ``combine="weights"``, BatchNorm statistics of the averaged
        model are re-estimated on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Labelled rows to choose on (not training rows, or the choice
            favours over-fitted snapshots).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Their targets (for a classifier, labels among ``classes_``).

        Returns
        -------
        self : object
            With new ``members_``, ``weights_``, ``validation_scores_`` and
            ``averaged_state_``.
        """
        X = self._validate_X_predict(X)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels.")
        y = self._encode_targets(y)
        self._validate_params()
        if self.selection == "all" and self.n_members is not None:
            raise ValueError("selection='all' uses every snapshot; set n_members=None.")
        self._select(X, y, X)
        return self

    def _validate_X_predict(self, X):
        check_is_fitted(self, "snapshots_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return np.require(X, requirements=["C", "W"])

    # -- prediction -----------------------------------------------------------
    def _predict_states(self, X, states):
        """Yield the prediction for ``X`` of each state dict, one at a time.

        The states take turns in the trained net's module (copied to its
        device); afterwards the module holds the last snapshot again.
        """
        module = self.net_.module_
        try:
            for state in states:
                module.load_state_dict(state)
                yield self._member_predict(X)
        finally:
            module.load_state_dict(self.snapshots_[-1])

    def _combined_states(self):
        """The states ``predict`` runs and their weights."""
        check_is_fitted(self, "snapshots_")
        if self.averaged_state_ is not None:
            return [self.averaged_state_], np.ones(1)
        return [self.snapshots_[i] for i in self.members_], self.weights_
