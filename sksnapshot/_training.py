"""One training run: build the skorch net from the template, train it, hand back a record.

The estimator calls :func:`build_net` and :func:`train_once`; it never reads
the :class:`~sksnapshot.CyclicSnapshots` callback's attributes: the run ends
with one :class:`~sksnapshot._callbacks.SnapshotRecord`. A run reads the
estimator's settings only through the :class:`RunSpec` the fit plans.
"""

import contextlib
import inspect
from dataclasses import dataclass

import torch
from sklearn.base import clone
from skorch.callbacks import LRScheduler
from skorch.dataset import Dataset as SkorchDataset
from skorch.helper import predefined_split
from torch.utils.data import DataLoader

from ._auto_cut import AutoCut
from ._callbacks import CyclicSnapshots
from ._checkpoint import SaveProgress
from ._compat import InvalidParameterError
from ._distributed import without_accelerator
from ._guards import CollapseGuard, DivergenceGuard
from ._loader import batch_loader
from .schedules import AUTO_COLLAPSE_FACTOR

__all__ = ["CALLBACK_NAME", "RunSpec", "template", "build_net", "torch_seed",
           "run_callbacks", "train_once"]

CALLBACK_NAME = "snapshots"


@dataclass(frozen=True)
class RunSpec:
    """What one training run needs of the estimator's settings, decided when the fit is planned.

    ``n_snapshots`` (an int or "auto"), ``min_lr``, ``schedule`` and
    ``verbose`` as the estimator has them; ``auto``: ``n_snapshots="auto"``
    resolved once (the validation curve may cut the cycles, and the collapse
    guard watches the restarts); ``net_class``: the skorch class a net
    trained through Accelerate returns to. Small and picklable: it travels to
    joblib's workers instead of the estimator.
    """

    n_snapshots: object
    min_lr: float
    schedule: object
    verbose: int
    net_class: type
    auto: bool

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


def _user_callbacks(net):
    for i, item in enumerate(net.callbacks or []):
        if isinstance(item, (tuple, list)):
            yield item[0], item[1]
        else:
            yield getattr(item, "__name__", type(item).__name__) + f"[{i}]", item


def template(estimator):
    """The skorch net the estimator's ``net`` parameter stands for (not a copy)."""
    net, net_class = estimator.net, estimator._net_class
    if net is None:
        return estimator._default_net(estimator._default_module)
    if isinstance(net, torch.nn.Module) or (
        isinstance(net, type) and issubclass(net, torch.nn.Module)
    ):
        return estimator._default_net(net)
    if not isinstance(net, net_class):
        raise InvalidParameterError(
            f"The 'net' parameter of {type(estimator).__name__} must be None, a "
            f"skorch {net_class.__name__}, or a torch.nn.Module subclass "
            f"or instance; got {net!r}."
        )
    return net


def build_net(estimator, data_kwargs, sample_shape=None):
    """Clone the estimator's template (or build the default net) and fill in data sizes.

    ``data_kwargs`` (e.g. ``n_features``, ``n_classes``) are given to the
    module's constructor where it takes them and the net leaves them unset. A
    net left with skorch's own ``Dataset`` and ``DataLoader`` gets
    :func:`~sksnapshot._loader.batch_loader` as its iterators (same rows, same
    order, whole batches fetched at once).
    """
    net = clone(template(estimator))

    if isinstance(net.module, type):
        accepted = inspect.signature(net.module).parameters
        given = net.get_params(deep=False)
        fill = {f"module__{name}": value for name, value in data_kwargs.items()
                if name in accepted and f"module__{name}" not in given}
        net.set_params(**fill)
        needs_width = accepted.get("n_features")
        if (needs_width is not None and needs_width.default is inspect.Parameter.empty
                and "module__n_features" not in net.get_params(deep=False)):
            raise ValueError(
                f"The module {net.module.__name__} takes 2-D rows (its n_features is their "
                f"width), but X has samples of shape {sample_shape}. Flatten them, or give "
                "a module that takes such samples (e.g. a CNN for images)."
            )

    for name, callback in _user_callbacks(net):
        if isinstance(callback, LRScheduler) or (
            isinstance(callback, type) and issubclass(callback, LRScheduler)
        ):
            raise ValueError(
                f"The net has its own learning-rate scheduler callback ({name!r}). "
                f"{type(estimator).__name__} sets the learning rate of every batch "
                "itself; remove the LRScheduler from the net's callbacks."
            )
        if name == CALLBACK_NAME:
            raise ValueError(
                f"The callback name {CALLBACK_NAME!r} is reserved by "
                f"{type(estimator).__name__}; rename the net's callback."
            )
    # Accelerate prepares its own loaders; a dataset or loader the user chose is theirs.
    if not hasattr(net, "accelerator") and net.dataset is SkorchDataset:
        for name in ("iterator_train", "iterator_valid"):
            if getattr(net, name) is DataLoader:
                net.set_params(**{name: batch_loader})
    return net


@contextlib.contextmanager
def torch_seed(seed):
    """Seed torch inside the block and restore the caller's RNG state after it.

    ``seed=None`` leaves torch's global random state alone, so a user's own
    ``torch.manual_seed`` keeps working.
    """
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def run_callbacks(spec, checkpoint=None):
    """The callbacks a run adds after the net's own: ``(name, callback)`` pairs, in order.

    skorch calls callbacks in list order, and these cooperate through that
    order, decided here and nowhere else:

    1. the divergence guard: at a batch end it judges the step's training loss
       (and a cycle end's weights) before the snapshot callback takes that
       cycle's snapshot and counts the step; at an epoch end it judges the
       validation loss first;
    2. the collapse guard (``"auto"`` only): then judges a snapshot the epoch
       took and the divergence guard kept;
    3. the snapshot callback (``CALLBACK_NAME``): then records the epoch's
       ``lr``, ``cycle``, ``event_snapshot`` and ``event_diverged``, so a
       refusal shows in the epoch it happened;
    4. the ``"auto"`` cut: after those records, which are of the plan the epoch
       trained with (it writes no history of its own);
    5. the checkpoint's :class:`~sksnapshot._checkpoint.SaveProgress` (with a
       ``checkpoint``): last, so the progress it saves holds the whole epoch.
    """
    snapshots = CyclicSnapshots(spec.n_snapshots, min_lr=spec.min_lr, schedule=spec.schedule,
                                checkpoint=checkpoint)
    divergence = DivergenceGuard(snapshots)
    collapse_factor = AUTO_COLLAPSE_FACTOR if spec.auto else None
    callbacks = [(f"{CALLBACK_NAME}_divergence_guard", divergence)]
    if collapse_factor is not None:
        callbacks.append((f"{CALLBACK_NAME}_collapse_guard",
                          CollapseGuard(snapshots, collapse_factor)))
    callbacks.append((CALLBACK_NAME, snapshots))
    if spec.auto:
        callbacks.append((f"{CALLBACK_NAME}_auto_cut", AutoCut(snapshots)))
    if checkpoint is not None:
        callbacks.append((f"{CALLBACK_NAME}_progress",
                          SaveProgress(checkpoint, snapshots, parts=[divergence])))
    return callbacks


def train_once(spec, net, train, valid, *, seed, checkpoint=None, on_initialized=None):
    """Train ``net`` once through the cycles of ``spec`` (a :class:`RunSpec`); return the
    net and its record.

    ``train`` and ``valid`` are ``(X, y)`` pairs as skorch takes them (``y``
    None for a Dataset); ``valid`` may be None. ``on_initialized(net)`` runs
    after the net is initialised and before any step (e.g. to check the
    module's output). With ``checkpoint`` (the run's checkpoint directory) the
    run resumes from, and writes to, it.
    """
    ours = run_callbacks(spec, checkpoint)
    quiet, given = {}, net.get_params(deep=False)
    if (not spec.verbose and given.get("callbacks__print_log", True) is not None
            and given.get("callbacks__print_log__sink", "auto") == "auto"):
        # skorch's PrintLog ignores verbose=0 when its sink is not builtins.print:
        # Accelerate's accelerator.print, or print after Ray's joblib backend
        # replaced builtins.print. A sink that prints nothing keeps the net quiet.
        quiet = {"callbacks__print_log__sink": _quiet}
    net.set_params(
        callbacks=list(net.callbacks or []) + ours,
        train_split=None if valid is None else predefined_split(net.get_dataset(*valid)),
        verbose=spec.verbose,
        **quiet,
    )
    with torch_seed(seed):
        net.initialize()
        if on_initialized is not None:
            on_initialized(net)
        epochs = net.max_epochs
        if checkpoint is not None:
            # run_callbacks puts SaveProgress last; it hands each callback its part.
            epochs -= checkpoint.resume(net, ours[-1][1])
        # skorch swallows KeyboardInterrupt inside partial_fit; whatever
        # snapshots were taken until then are in the record.
        net.partial_fit(*train, epochs=epochs)
    # A net with skorch.hf.AccelerateMixin predicts and pickles without it.
    net = without_accelerator(net, spec.net_class)
    return net, dict(ours)[CALLBACK_NAME].take_record()
