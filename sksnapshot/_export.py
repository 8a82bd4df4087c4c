"""A fitted ensemble as one plain :class:`torch.nn.Module`, for serving without Python's stack.

:func:`to_torch_module` copies the predicting members (or the one averaged
model of ``combine="weights"``) of an :class:`~sksnapshot._kernel.EnsembleSpec`
into a module that computes what ``predict_proba`` (classifier) or
``predict`` (regressor) computes: the members' outputs through the net's
predict nonlinearity, then the spec's kernel head
(:mod:`sksnapshot._kernel`). Torch operations only: no skorch, scikit-learn
or NumPy at run time, so ``torch.export.export`` and ``torch.onnx.export``
can trace it. The estimators build the spec (``_ensemble_spec``); this module
never reads an estimator.

The members run in a plain Python loop, which the trace unrolls: stacking them
with ``torch.func.stack_module_state`` and ``vmap`` was slower on CPU (the
user guide and ``benchmarks/export.py`` give the measurement).
"""

import inspect

from skorch import NeuralNet
from torch import nn

from ._inference import meta_replica
from ._inputs import first_output

__all__ = ["EnsembleClassifierModule", "EnsembleModule", "EnsembleRegressorModule",
           "to_torch_module"]


def _member_modules(net, states):
    """One CPU copy of the trained module per state, in eval mode, without gradients.

    The copies start weightless (``meta_replica``, as the inference path's
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
        member = meta_replica(net.module_)
        member.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
        members.append(member.cpu().eval().requires_grad_(False))
    return nn.ModuleList(members)


class EnsembleModule(nn.Module):
    """The members, their weights and the kernel head that combines their outputs.

    ``forward`` takes the inputs of one member (a dict's arrays as keyword
    arguments) and returns ``head(outputs, weights)``, the outputs being the
    members' predictions through the net's predict nonlinearity.
    """

    def __init__(self, members, weights, nonlinearity, head):
        super().__init__()
        self.members = members
        # Python floats: constants in a traced or exported graph.
        self.member_weights = [float(w) for w in weights]
        self.nonlinearity = nonlinearity
        self.head = head
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
            yield self.nonlinearity(first_output(member(*args, **kwargs)))

    def _predict(self, args, kwargs):
        return self.head(list(self._outputs(args, kwargs)), self.member_weights)

    def train(self, mode=True):
        """Members stay in eval mode (BatchNorm statistics, no dropout): this is for inference."""
        return super().train(False)


class EnsembleClassifierModule(EnsembleModule):
    """The class probabilities of a fitted :class:`~sksnapshot.SnapshotEnsembleClassifier`.

    ``(n_rows, n_classes)`` probabilities, columns in the order of the
    estimator's ``classes_``: the weighted mean of the members' probabilities,
    normalised, then ``softmax(log(p) / T)`` with the fitted temperature, as
    ``predict_proba`` computes them (:class:`~sksnapshot._kernel.ProbaHead`).
    """

    @property
    def temperature(self):
        return self.head.temperature


class EnsembleRegressorModule(EnsembleModule):
    """The predictions of a fitted :class:`~sksnapshot.SnapshotEnsembleRegressor`.

    The members' weighted mean, and with ``return_std=True`` also the
    predictive standard deviation: the square root of ``variance_scale_``
    times the members' weighted spread plus (for mean-variance members) their
    weighted variances, as ``predict(X, return_std=True)`` computes it
    (:class:`~sksnapshot._kernel.GaussianHead`). Shapes ``(n_rows,)`` for a
    single target, else ``(n_rows, n_outputs)``.
    """


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


def _input_names(sample_shape, module):
    """The names of a dict ``X``'s inputs, in the order of the module's ``forward``; else None."""
    if not isinstance(sample_shape, dict):
        return None
    order = list(inspect.signature(module.forward).parameters)
    return sorted(sample_shape,
                  key=lambda name: (order.index(name) if name in order else len(order)))


def to_torch_module(spec, cls=EnsembleModule):
    """The plain torch module of ``spec``, an :class:`~sksnapshot._kernel.EnsembleSpec`.

    ``cls`` is the module's class (:class:`EnsembleModule` or a subclass of it,
    as the estimator's ``to_torch`` names it).
    """
    net = spec.net
    members = _member_modules(net, spec.states)
    names = _input_names(spec.sample_shape, net.module_)
    cls = cls if names is None else _with_input_names(cls, names)
    return cls(members, spec.weights, net._get_predict_nonlinearity(), spec.head)
