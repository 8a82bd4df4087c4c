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
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import check_random_state
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping, LRScheduler
from skorch.helper import predefined_split
from skorch.utils import is_dataset, to_tensor

from ._calibration import fit_temperature, fit_variance_scale
from ._callbacks import copy_state_dict
from ._compat import Interval, StrOptions, validate_params
from ._export import to_torch_module
from ._inputs import n_samples, take_rows
from ._modules import GaussianNLLCriterion
from ._split import validation_split
from ._training import build_net, torch_seed

__all__ = ["distill_ensemble"]

# Probabilities are floored here before their log (a module that returns them, NLLLoss).
_EPS = 1e-12


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
            log_q = torch.log(self.nonlinearity(y_pred).clamp_min(_EPS))
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
        bound = GaussianNLLCriterion.LOG_VAR_BOUND
        log_var = y_pred[:, k:].clamp(-bound, bound)
        sq = y_true[:, k:] + (y_true[:, :k] - y_pred[:, :k]) ** 2
        return 0.5 * (log_var + sq / log_var.exp()).mean()


class _Teacher:
    """The ensemble's targets for a batch of inputs (a torch Dataset's augmented rows).

    Not a ``torch.nn.Module``: skorch would take it for a part of the student.
    """

    def __init__(self, estimator, device):
        self.classifier = hasattr(estimator, "classes_")
        self.gaussian = getattr(estimator, "gaussian_", False)
        self.n_outputs = getattr(estimator, "n_outputs_", None)
        self.ensemble = to_torch_module(estimator, return_std=self.gaussian).to(device)

    def __call__(self, x):
        out = self.ensemble(**x) if isinstance(x, dict) else self.ensemble(x)
        if self.classifier:
            return out
        if not self.gaussian:
            return out.reshape(len(out), self.n_outputs)
        mean, std = (a.reshape(len(a), self.n_outputs) for a in out)
        return torch.cat([mean, std ** 2], dim=1)


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


def _targets(estimator, X):
    """The ensemble's calibrated predictions on in-memory rows, as training targets."""
    if hasattr(estimator, "classes_"):
        return estimator.predict_proba(X).astype(np.float32)
    mean, std = estimator.predict(X, return_std=True)
    mean, std = (a.reshape(len(a), estimator.n_outputs_) for a in (mean, std))
    out = np.hstack([mean, std ** 2]) if estimator.gaussian_ else mean
    return out.astype(np.float32)


def _criterion(estimator, net):
    """The soft-target loss matching the net's outputs."""
    if not hasattr(estimator, "classes_"):
        return GaussianMatch() if estimator.gaussian_ else torch.nn.MSELoss()
    logits = (net.predict_nonlinearity == "auto"
              and isinstance(net.criterion_, torch.nn.CrossEntropyLoss))
    return SoftTargetCrossEntropy(logits, net._get_predict_nonlinearity())


def _trainer(estimator, net, rows, valid, teacher, max_epochs, patience):
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
        net.module_, criterion=_criterion(estimator, net), teacher=teacher,
        max_epochs=max_epochs, callbacks=callbacks, verbose=estimator.verbose,
        train_split=None if valid is None else predefined_split(net.get_dataset(*valid)),
        **copied,
    )


def _split(X, valid_rows, validation_fraction, rng):
    """Row indices ``(train, valid)``: a random ``validation_fraction`` held out unless given."""
    n = n_samples(X)
    if valid_rows is not None or validation_fraction == 0:
        return np.arange(n), np.arange(0)
    return validation_split(np.zeros(n, dtype=np.int64), validation_fraction, rng)


def _student_estimator(estimator, net, history_best):
    """A fitted estimator of the estimator's class whose one member is ``net``'s module."""
    student = clone(estimator).set_params(
        n_snapshots=1, n_members=None, selection="all", combine="proba", n_runs=1,
        bootstrap=False, checkpoint_dir=None)
    for name in ("classes_", "n_outputs_", "gaussian_", "_single_output", "n_features_in_",
                 "feature_names_in_", "sample_shape_"):
        if hasattr(estimator, name):
            setattr(student, name, getattr(estimator, name))
    history = net.history
    steps = [sum("train_loss" in b for b in row["batches"]) for row in history]
    student.net_ = net
    student.snapshots_ = [copy_state_dict(net.module_)]
    student.snapshot_runs_ = [0]
    student.snapshot_epochs_ = [history_best]
    # The optimizer step after which the kept weights were there, counted as fit counts.
    student.snapshot_iterations_ = [sum(steps[:history_best]) - 1]
    student.n_iter_ = sum(steps)
    student.n_iter_planned_ = max(student.n_iter_, steps[0] * net.max_epochs)
    student.divergences_ = []
    student.members_, student.weights_ = np.array([0]), np.array([1.0])
    student.averaged_state_ = None
    for name in student._validation_attributes:  # chosen on no validation rows
        setattr(student, name, None)
    return student


def _calibrate(student, X_valid, t_valid, y_valid):
    """The student's own temperature or variance scale on the held-out rows.

    Against the labels ``y_valid`` where given, as ``fit`` calibrates;
    otherwise against the ensemble's predictions ``t_valid`` (soft targets).
    """
    # 1.0 without rows or calibration; else the uncalibrated predictions come first.
    setattr(student, student._calibration_attribute, 1.0)
    if X_valid is None or student._calibration() is None:
        return
    if hasattr(student, "classes_"):
        log_p = np.log(np.maximum(student.predict_proba(X_valid), 1e-300))
        target = student._encode_targets(y_valid) if y_valid is not None else t_valid
        student.temperature_ = fit_temperature(log_p, target)
        return
    parts = student._mixture(X_valid)
    if y_valid is not None:
        scale = fit_variance_scale(parts.mean, parts.total, student._encode_targets(y_valid))
    else:
        k = student.n_outputs_
        scale = fit_variance_scale(parts.mean, parts.total, t_valid[:, :k],
                                   target_variance=t_valid[:, k:] if student.gaussian_ else None)
    student.variance_scale_ = scale


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


def distill_ensemble(estimator, X, *, X_valid=None, y_valid=None, validation_fraction=0.1,
                     init="snapshot", max_epochs=None, patience=5, random_state=None):
    """See the estimators' ``distill``."""
    _check_settings(init=init, validation_fraction=validation_fraction, max_epochs=max_epochs,
                    patience=patience, random_state=random_state)
    X = estimator._validate_X_predict(X)  # NotFittedError, and predict's input errors
    if X_valid is not None:
        X_valid = estimator._validate_X_predict(X_valid)
        if y_valid is not None and len(y_valid) != n_samples(X_valid):
            raise ValueError(f"X_valid has {n_samples(X_valid)} rows but y_valid has "
                             f"{len(y_valid)}.")
    elif y_valid is not None:
        raise ValueError("y_valid labels X_valid; it needs X_valid.")
    rng = check_random_state(estimator.random_state if random_state is None else random_state)
    seed = int(rng.randint(np.iinfo(np.int32).max))

    data_kwargs = ({"n_classes": len(estimator.classes_)} if hasattr(estimator, "classes_")
                   else {"n_outputs": estimator.n_outputs_})
    if hasattr(estimator, "n_features_in_"):  # fitted on 2-D rows
        data_kwargs["n_features"] = estimator.n_features_in_
    net = build_net(estimator, data_kwargs, estimator.sample_shape_)
    if "n_classes" in data_kwargs and getattr(net, "classes", ()) is None:
        net.set_params(classes=np.arange(data_kwargs["n_classes"]))
    max_epochs = net.max_epochs if max_epochs is None else max_epochs
    net.set_params(verbose=0, train_split=None, max_epochs=max_epochs)  # what the student ran

    # In-memory rows: the ensemble's predictions once. A Dataset: the teacher on each batch.
    dataset = is_dataset(X)
    targets = np.zeros(n_samples(X), np.float32) if dataset else _targets(estimator, X)
    train_idx, valid_idx = _split(X, X_valid, validation_fraction, rng)
    train = take_rows(X, targets, train_idx)
    valid = t_valid = None
    if X_valid is not None:
        t_valid = _targets(estimator, X_valid)  # also for a Dataset: they calibrate below
        valid = take_rows(X_valid, t_valid, np.arange(n_samples(X_valid)))
    elif len(valid_idx):
        valid = take_rows(X, targets, valid_idx)
        t_valid = _targets(estimator, valid[0]) if dataset else targets[valid_idx]
    teacher = _Teacher(estimator, net.device or "cpu") if dataset else None

    with torch_seed(seed):
        net.initialize()
        if init == "snapshot":  # the heaviest member, or the averaged model
            states, weights = estimator._combined_states()
            net.module_.load_state_dict(states[int(np.argmax(weights))])
        trainer = _trainer(estimator, net, len(train_idx), valid, teacher, max_epochs,
                           patience)
        trainer.fit(*train)
    net.history = trainer.history
    # With early stopping the module holds the best epoch's weights (load_best).
    stop = dict(trainer.callbacks_).get("stop")
    best = getattr(stop, "best_epoch_", None) or len(net.history)
    student = _student_estimator(estimator, net, best)
    _calibrate(student, None if valid is None else valid[0], t_valid, y_valid)
    return student
