"""A fitted ensemble as one plain :class:`torch.nn.Module`, for serving without Python's stack.

:func:`to_torch_module` copies the predicting members (or the one averaged
model of ``combine="weights"``) out of a fitted estimator into a module that
computes what ``predict_proba`` (classifier) or ``predict`` (regressor)
computes, with torch operations only: no skorch, scikit-learn or NumPy at run
time, so ``torch.export.export`` and ``torch.onnx.export`` can trace it.

The members run in a plain Python loop, which the trace unrolls. Stacking them
with ``torch.func.stack_module_state`` and ``vmap`` took a median 2.0x the
loop's time on CPU (0.82-4.5x over batches of 1-4096 rows for 5-member MLP and
1-D CNN ensembles; faster in one cell of eight; ``benchmarks/export.py``,
``results/export.md``), so the loop is what is kept.
"""

import inspect

import torch
from skorch import NeuralNet
from torch import nn

from ._inference import _meta_replica
from ._modules import GaussianNLLCriterion

__all__ = ["EnsembleClassifierModule", "EnsembleRegressorModule", "to_torch_module"]

# apply_temperature floors probabilities at 1e-15 before taking their log.
_PROBA_FLOOR = 1e-15


def _member_modules(net, states):
    """One CPU copy of the trained module per state, in eval mode, without gradients.

    The copies start weightless (``_meta_replica``, as the inference path's
    replicas do) and take clones of the member's tensors, so the estimator's
    snapshots are never shared with a module the caller may change.
    """
    if type(net).infer is not NeuralNet.infer:
        raise ValueError(
            f"The net's class {type(net).__name__} overrides infer(), whose computation "
            "cannot be copied into a plain torch module; export the module yourself."
        )
    members = []
    for state in states:
        member = _meta_replica(net.module_)
        member.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
        members.append(member.cpu().eval().requires_grad_(False))
    return nn.ModuleList(members)


class _Ensemble(nn.Module):
    """The members and their weights; ``_outputs`` gives each member's predicted output."""

    def __init__(self, members, weights, nonlinearity):
        super().__init__()
        self.members = members
        # Python floats: constants in a traced or exported graph.
        self.member_weights = [float(w) for w in weights]
        self.nonlinearity = nonlinearity
        self.eval()

    def forward(self, X):
        return self._predict((X,), {})

    def __reduce_ex__(self, protocol):
        # A class made by _with_input_names is rebuilt from its base and names when
        # unpickled (pickle cannot find a class made at run time by its name).
        if getattr(self, "input_names", None) is None:
            return super().__reduce_ex__(protocol)
        return _named_instance, (type(self).__bases__[0], self.input_names), self.__dict__

    def _outputs(self, args, kwargs):
        # Dict inputs reach the members as keyword arguments, as skorch's infer passes them.
        for member in self.members:
            out = member(*args, **kwargs)
            out = out[0] if isinstance(out, tuple) else out  # skorch predicts from the first
            yield self.nonlinearity(out)

    def train(self, mode=True):
        """Members stay in eval mode (BatchNorm statistics, no dropout): this is for inference."""
        return super().train(False)


class EnsembleClassifierModule(_Ensemble):
    """The class probabilities of a fitted :class:`~sksnapshot.SnapshotEnsembleClassifier`.

    ``forward`` takes the inputs of one member (a dict's arrays as keyword
    arguments) and returns ``(n_rows, n_classes)`` probabilities, columns in
    the order of the estimator's ``classes_``: the weighted mean of the
    members' probabilities, normalised, then ``softmax(log(p) / T)`` with the
    fitted temperature, as ``predict_proba`` computes them.
    """

    def __init__(self, members, weights, nonlinearity, temperature):
        super().__init__(members, weights, nonlinearity)
        self.temperature = float(temperature)

    def _predict(self, args, kwargs):
        proba = None
        for w, out in zip(self.member_weights, self._outputs(args, kwargs)):
            proba = out * w if proba is None else proba + out * w
        proba = proba / proba.sum(dim=1, keepdim=True)
        if self.temperature != 1.0:
            proba = torch.softmax(torch.log(proba.clamp_min(_PROBA_FLOOR)) / self.temperature,
                                  dim=1)
        return proba


class EnsembleRegressorModule(_Ensemble):
    """The predictions of a fitted :class:`~sksnapshot.SnapshotEnsembleRegressor`.

    ``forward`` returns the members' weighted mean, and with
    ``return_std=True`` also the predictive standard deviation: the square
    root of ``variance_scale_`` times the members' weighted spread plus (for
    mean-variance members) their weighted variances, as
    ``predict(X, return_std=True)`` computes it. Shapes ``(n_rows,)`` for a
    single target, else ``(n_rows, n_outputs)``.
    """

    def __init__(self, members, weights, nonlinearity, n_outputs, gaussian, variance_scale,
                 single_output, return_std):
        super().__init__(members, weights, nonlinearity)
        self.n_outputs = int(n_outputs)
        self.gaussian = bool(gaussian)
        self.variance_scale = float(variance_scale)
        self.single_output = bool(single_output)
        self.return_std = bool(return_std)

    def _shaped(self, a):
        return a[:, 0] if self.single_output else a

    def _predict(self, args, kwargs):
        k = self.n_outputs
        outputs = list(self._outputs(args, kwargs))
        means = [out[:, :k] for out in outputs]
        mean = sum(w * m for w, m in zip(self.member_weights, means))
        if not self.return_std:
            return self._shaped(mean)
        variance = sum(w * (m - mean) ** 2 for w, m in zip(self.member_weights, means))
        if self.gaussian:
            bound = GaussianNLLCriterion.LOG_VAR_BOUND  # as the criterion trained them
            variance = variance + sum(w * out[:, k:].clamp(-bound, bound).exp()
                                      for w, out in zip(self.member_weights, outputs))
        return self._shaped(mean), self._shaped(torch.sqrt(self.variance_scale * variance))


def _with_input_names(cls, names):
    """A subclass of ``cls`` whose ``forward`` takes the named inputs of a dict ``X``.

    ``torch.export`` and ``torch.onnx.export`` bind inputs through the
    signature of ``forward`` and cannot give dynamic shapes to ``**kwargs``:
    the signature names every input (``forward(self, ids, x)``), and the
    inputs reach every member as keyword arguments, as skorch's ``infer``
    passes a dict.
    """

    def forward(self, *args, **kwargs):
        kwargs.update(zip(self.input_names, args))
        return self._predict((), kwargs)

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    forward.__signature__ = inspect.Signature(
        [inspect.Parameter(name, positional) for name in ("self", *names)])
    return type(cls.__name__, (cls,), {"forward": forward, "input_names": tuple(names),
                                      "__module__": cls.__module__,
                                      "__qualname__": cls.__qualname__})


def _named_instance(cls, names):
    """An empty instance of ``_with_input_names(cls, names)`` for pickle to fill."""
    named = _with_input_names(cls, names)
    return named.__new__(named)


def _input_names(estimator, module):
    """The names of a dict ``X``'s inputs, in the order of the module's ``forward``; else None."""
    shape = getattr(estimator, "sample_shape_", None)
    if not isinstance(shape, dict):
        return None
    order = list(inspect.signature(module.forward).parameters)
    return sorted(shape, key=lambda name: (order.index(name) if name in order else len(order)))


def to_torch_module(estimator, return_std=False):
    """The plain torch module of a fitted estimator (see the estimators' ``to_torch``)."""
    states, weights = estimator._combined_states()  # checks that it is fitted
    net = estimator.net_
    members = _member_modules(net, states)
    nonlinearity = net._get_predict_nonlinearity()
    names = _input_names(estimator, net.module_)
    if hasattr(estimator, "classes_"):
        cls = EnsembleClassifierModule
        args = (getattr(estimator, "temperature_", 1.0),)
    else:
        cls = EnsembleRegressorModule
        args = (estimator.n_outputs_, estimator.gaussian_,
                getattr(estimator, "variance_scale_", 1.0), estimator._single_output, return_std)
    cls = cls if names is None else _with_input_names(cls, names)
    return cls(members, weights, nonlinearity, *args)
