"""Assembly: the estimator a checked file describes, built for real at last.

Everything here runs after ``metadata.json`` and the safetensors header have
been checked and the module has been seen, on the ``meta`` device, to match
the tensors.
"""

from collections import OrderedDict

import torch
from sklearn.base import clone
from skorch.history import History

from .._training import torch_seed
from ._fields import restore_fields
from ._format import refuse, state_prefixes


def unfitted_estimator(spec, device):
    """The estimator with the file's settings and fitted fields, before its net and tensors."""
    cls = spec["estimator_class"]
    net = cls._default_net(spec["module"]).set_params(
        criterion=spec["criterion"], device=device, **spec["net_params"])
    estimator = cls(net, **spec["params"])
    restore_fields(estimator, spec["fitted"])
    return estimator


def states(weights, spec, keys):
    """(snapshots, averaged state or None), as CPU tensors; non-finite values refused."""
    tensors = weights.tensors()
    out = []
    for prefix in state_prefixes(spec):
        state = OrderedDict()
        for key in keys:
            tensor = tensors.pop(prefix + key, None)
            if tensor is None:  # its header said otherwise: not a file safetensors wrote
                raise refuse(weights.path, None, f"is not a valid safetensors file: tensor "
                                                 f"{prefix}{key} is not where its header "
                                                 "says.")
            if (tensor.is_floating_point() or tensor.is_complex()) \
                    and not bool(torch.isfinite(tensor).all()):
                raise refuse(weights.path, None, f"tensor {prefix}{key} holds NaN or "
                                                 "infinite values.")
            state[key] = tensor
        out.append(state)
    n = spec["n_snapshots"]
    return out[:n], (out[n] if spec["averaged"] else None)


def initialized_net(estimator, snapshots):
    """The estimator's net, initialised (without touching the caller's RNG), last snapshot in."""
    with torch_seed(0):  # initialising draws random weights; keep the caller's RNG intact
        net_ = clone(estimator.net).initialize()
    net_.module_.load_state_dict(snapshots[-1])
    net_.module_.eval()
    return net_


def finish(estimator, net_, snapshots, averaged_state, history):
    """The fitted estimator: its snapshots, averaged state, net and the net's history."""
    net_.history = History(history)
    estimator.snapshots_ = snapshots
    estimator.averaged_state_ = averaged_state
    estimator.net_ = net_
    return estimator
