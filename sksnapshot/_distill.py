"""Distillation: one student net trained to predict what the fitted ensemble predicts.

The student is the ensemble's own net (its template, built as ``fit`` builds
it), trained with skorch on the ensemble's *calibrated* predictive
distribution: the temperature-scaled probabilities of a classifier, the mean
(and, for mean-variance members, the variance) of a regressor. Training rows,
unlabelled rows or a torch Dataset (whose random augmentation the teacher then
sees batch by batch) all serve. Rows held out from them stop the training early
(skorch's ``EarlyStopping``, best weights kept) and fit the student's own
temperature or variance scale against the ensemble's. The result is a fitted
estimator of the same class with one member: predicting costs one forward pass.
"""

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Callable

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping, LRScheduler
from skorch.helper import predefined_split
from skorch.utils import to_tensor

from ._callbacks import SnapshotRecord, copy_state_dict
from ._compat import Interval, StrOptions, validate_params
from ._export import to_torch_module
from ._inputs import is_dataset, n_samples, take_rows
from ._kernel import clamp_log_variance, log_proba
from ._split import validation_split
from ._training import torch_seed

__all__ = ["DistillationSource", "GaussianMatch", "SoftTargetCrossEntropy",
           "distill_ensemble"]


@dataclass(frozen=True)
class DistillationSource:
    """What distillation asks of a fitted estimator, which builds it (``_distillation_source``).

    Attributes
    ----------
    validate : callable
        ``X -> X`` checked as ``predict`` checks it (``NotFittedError`` first).
    soft_targets : callable
        In-memory rows -> the ensemble's calibrated predictions as float32
        training targets ``(n_rows, width)``.
    spec : callable
        ``() ->`` the :class:`~sksnapshot._kernel.EnsembleSpec` whose head
        computes those targets: the teacher of a Dataset's batches, and the
        states a student may start from.
    student_net : callable
        ``() ->`` an unfitted net, built as the estimator's ``fit`` built its own.
    criterion : callable
        ``net ->`` the loss of the student's outputs against the targets.
    fit_student : callable
        ``(net, record, X_valid, y_valid, soft_targets) ->`` a fitted
        estimator of the teacher's class whose one member is ``net``'s module
        (``BaseSnapshotEnsemble._fit_student``).
    random_state, verbose
        The estimator's settings of these names.
    """

    validate: Callable
    soft_targets: Callable
    spec: Callable
    student_net: Callable
    criterion: Callable
    fit_student: Callable
    random_state: object
    verbose: int


class SoftTargetCrossEntropy(torch.nn.Module):
    """Cross-entropy of the student's distribution to the teacher's probabilities, per row.

    ``KL(teacher || student)`` plus the teacher's entropy, a constant. With
    ``logits=True`` the student returns logits (a ``CrossEntropyLoss`` net);
    otherwise ``nonlinearity`` turns its output into probabilities.
    """

    def __init__(self, logits=True, nonlinearity=None):
        super().__init__()
        self.logits = logits
        self.nonlinearity = nonlinearity

    def forward(self, y_pred, y_true):
        if self.logits:
            log_q = torch.log_softmax(y_pred, dim=1)
        else:
            log_q = log_proba(self.nonlinearity(y_pred))
        return -(y_true * log_q).sum(dim=1).mean()


class GaussianMatch(torch.nn.Module):
    """``KL(N(teacher) || N(student))`` per value, up to a constant, for mean-variance students.

    The targets hold the teacher's means, then its variances; the student's
    outputs its means, then log-variances (clipped as in
    :class:`~sksnapshot.GaussianNLLCriterion`). Minimised, the student's
    variance is the teacher's plus the squared error of its mean.
    """

    def forward(self, y_pred, y_true):
        k = y_true.shape[1] // 2
        log_var = clamp_log_variance(y_pred[:, k:])
        sq = y_true[:, k:] + (y_true[:, :k] - y_pred[:, :k]) ** 2
        return 0.5 * (log_var + sq / log_var.exp()).mean()


class _Teacher:
    """The ensemble's targets for a batch of inputs (a torch Dataset's augmented rows).

    Not a ``torch.nn.Module``: skorch would take it for a part of the student.
    """

    def __init__(self, spec, device):
        self.ensemble = to_torch_module(spec).to(device)

    def __call__(self, x):
        return self.ensemble(**x) if isinstance(x, dict) else self.ensemble(x)


class StudentNet(NeuralNet):
    """A skorch net trained on the ensemble's soft targets.

    The targets are given (precomputed for in-memory rows), or, with a
    ``teacher``, the teacher's on each batch: a Dataset's random
    augmentation gives new rows every epoch, and the teacher labels them as
    they come.
    """

    def __init__(self, *args, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_pred = y_pred[0] if isinstance(y_pred, tuple) else y_pred  # as skorch predicts
        if self.teacher is not None:
            with torch.no_grad():
                y_true = self.teacher(to_tensor(X, device=self.device))
        return super().get_loss(y_pred, y_true, X=X, training=training)


def _trainer(source, net, rows, valid, teacher, max_epochs, patience):
    """The skorch net that trains ``net.module_`` in place (the template's optimizer and loaders).

    One cosine decay of the learning rate per batch, over ``max_epochs``;
    with validation rows, early stopping on their loss (best weights kept).
    """
    given = net.get_params(deep=False)
    copied = {k: v for k, v in given.items()
              if k.startswith(("optimizer", "iterator_train", "iterator_valid", "dataset"))
              or k in ("lr", "batch_size", "device")}
    batch = net.batch_size if net.batch_size > 0 else rows
    steps = max(max_epochs * math.ceil(rows / batch), 1)
    callbacks = [("lr", LRScheduler("CosineAnnealingLR", T_max=steps, step_every="batch"))]
    if valid is not None:
        callbacks.append(("stop", EarlyStopping(patience=patience, load_best=True)))
    return StudentNet(
        net.module_, criterion=source.criterion(net), teacher=teacher,
        max_epochs=max_epochs, callbacks=callbacks, verbose=source.verbose,
        train_split=None if valid is None else predefined_split(net.get_dataset(*valid)),
        **copied,
    )


def _split(X, valid_rows, validation_fraction, rng):
    """Row indices ``(train, valid)``: a random ``validation_fraction`` held out unless given."""
    n = n_samples(X)
    if valid_rows is not None or validation_fraction == 0:
        return np.arange(n), np.arange(0)
    return validation_split(np.zeros(n, dtype=np.int64), validation_fraction, rng)


class StudentRecord(SnapshotRecord):
    """A student's training as the estimators keep a run's: one snapshot, the kept weights.

    Early stopping ends the training as planned, so it is never an interruption.
    """

    @property
    def interrupted(self):
        return False


def _record(net, best_epoch):
    """The :class:`StudentRecord` of ``net``'s training, holding ``best_epoch``'s weights."""
    steps = [sum("train_loss" in b for b in row["batches"]) for row in net.history]
    return StudentRecord(
        snapshots=[copy_state_dict(net.module_)],
        snapshot_epochs=[best_epoch],
        # The optimizer step after which the kept weights were there, counted as fit counts.
        snapshot_iterations=[sum(steps[:best_epoch]) - 1],
        divergences=[],
        n_iter_planned=max(sum(steps), steps[0] * net.max_epochs),
        n_iter=sum(steps),
        n_cycles=1,
    )


@validate_params(
    {"init": [StrOptions({"scratch", "snapshot"})],
     "validation_fraction": [Interval(Real, 0, 1, closed="left")],
     "max_epochs": [None, Interval(Integral, 1, None, closed="left")],
     "patience": [Interval(Integral, 1, None, closed="left")],
     "random_state": ["random_state"]},
    prefer_skip_nested_validation=False,
)
def _check_settings(init, validation_fraction, max_epochs, patience, random_state):
    """Validate ``distill``'s settings as scikit-learn validates parameters."""


def distill_ensemble(source, X, *, X_valid=None, y_valid=None, validation_fraction=0.1,
                     init="snapshot", max_epochs=None, patience=5, random_state=None):
    """See the estimators' ``distill``; ``source`` is their :class:`DistillationSource`."""
    _check_settings(init=init, validation_fraction=validation_fraction, max_epochs=max_epochs,
                    patience=patience, random_state=random_state)
    X = source.validate(X)  # NotFittedError, and predict's input errors
    if X_valid is not None:
        X_valid = source.validate(X_valid)
        if y_valid is not None and len(y_valid) != n_samples(X_valid):
            raise ValueError(f"X_valid has {n_samples(X_valid)} rows but y_valid has "
                             f"{len(y_valid)}.")
    elif y_valid is not None:
        raise ValueError("y_valid labels X_valid; it needs X_valid.")
    rng = check_random_state(source.random_state if random_state is None else random_state)
    seed = int(rng.randint(np.iinfo(np.int32).max))

    net = source.student_net()
    max_epochs = net.max_epochs if max_epochs is None else max_epochs
    net.set_params(verbose=0, train_split=None, max_epochs=max_epochs)  # what the student ran

    # In-memory rows: the ensemble's predictions once. A Dataset: the teacher on each batch.
    dataset = is_dataset(X)
    targets = np.zeros(n_samples(X), np.float32) if dataset else source.soft_targets(X)
    train_idx, valid_idx = _split(X, X_valid, validation_fraction, rng)
    train = take_rows(X, targets, train_idx)
    valid = t_valid = None
    if X_valid is not None:
        t_valid = source.soft_targets(X_valid)  # also for a Dataset: they calibrate below
        valid = take_rows(X_valid, t_valid, np.arange(n_samples(X_valid)))
    elif len(valid_idx):
        valid = take_rows(X, targets, valid_idx)
        t_valid = source.soft_targets(valid[0]) if dataset else targets[valid_idx]
    spec = source.spec()
    teacher = _Teacher(spec, net.device or "cpu") if dataset else None

    with torch_seed(seed):
        net.initialize()
        if init == "snapshot":  # the heaviest member, or the averaged model
            net.module_.load_state_dict(spec.states[int(np.argmax(spec.weights))])
        trainer = _trainer(source, net, len(train_idx), valid, teacher, max_epochs, patience)
        trainer.fit(*train)
    net.history = trainer.history
    # With early stopping the module holds the best epoch's weights (load_best).
    stop = dict(trainer.callbacks_).get("stop")
    best = getattr(stop, "best_epoch_", None) or len(net.history)
    return source.fit_student(net, _record(net, best), None if valid is None else valid[0],
                              y_valid, t_valid)
