"""Training and fitted ensembles across processes: Accelerate (the unwrapped module, the
main process, means over processes, Accelerate-free nets) and clear pickle errors."""

import pickle
import sys

import torch

__all__ = ["without_accelerator", "picklable_state", "unwrapped_module", "is_main_process",
           "global_mean"]

_MAIN_MODULES = ("__main__", "__mp_main__")


# -- Hugging Face Accelerate --------------------------------------------------------

def accelerator_of(net):
    """The net's Hugging Face ``Accelerator`` (``skorch.hf.AccelerateMixin``), or None."""
    return getattr(net, "accelerator", None)


def unwrapped_module(net):
    """``net.module_`` without Accelerate's wrappers (e.g. DistributedDataParallel).

    Snapshots taken from the unwrapped module have the module's own
    ``state_dict`` keys (no ``module.`` prefix), so they load into the module
    the net holds after training, with or without the accelerator.
    """
    accelerator = accelerator_of(net)
    if accelerator is None:
        return net.module_
    return accelerator.unwrap_model(net.module_)


def is_main_process(net):
    """False only on the processes of a distributed Accelerate run other than the main one."""
    accelerator = accelerator_of(net)
    return accelerator is None or bool(accelerator.is_main_process)


def global_mean(net, value):
    """The mean of ``value`` over the processes of a distributed Accelerate run.

    Every process sees the loss of its own shard of the batch; deciding on the
    mean makes all processes take the same decision (every process must call
    this at the same point). Without an accelerator, or with one process,
    ``value`` itself.
    """
    accelerator = accelerator_of(net)
    if accelerator is None or accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="mean").item())


def without_accelerator(net, net_class):
    """The trained ``net`` without Hugging Face Accelerate, to predict and pickle.

    A net with ``skorch.hf.AccelerateMixin`` prepares every data loader with its
    ``Accelerator``: in a distributed run each process predicts only its shard
    and gathers the rest from the other processes, and an unpickled copy would
    still shard the rows without them. The net returned (the same object) has
    the unwrapped module, criterion and optimizer, no ``accelerator`` and, as its
    class, the first class of its MRO that is a ``net_class`` without the mixin;
    its history and callbacks are kept. Other nets are returned unchanged.
    """
    accelerator = accelerator_of(net)
    if accelerator is None or not hasattr(net, "_unwrap_accelerator"):
        return net
    accelerator.wait_for_everyone()
    net._unwrap_accelerator()  # a no-op after unwrap_after_train=True
    for name in net._optimizers:
        inner = getattr(getattr(net, name + "_", None), "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):  # accelerate's AcceleratedOptimizer
            setattr(net, name + "_", inner)
    sink = getattr(accelerator, "print", None)
    if sink is not None:  # the mixin made PrintLog print through the accelerator
        if net.__dict__.get("callbacks__print_log__sink") == sink:
            net.callbacks__print_log__sink = print
        for _, callback in getattr(net, "callbacks_", []):
            if getattr(callback, "sink", None) == sink:
                callback.sink = print
    for name in ("accelerator", "unwrap_after_train", "_wrapped_with_accelerator"):
        net.__dict__.pop(name, None)
    if net.device is None:  # the accelerator placed the module
        parameter = next(net.module_.parameters(), None)
        net.device = "cpu" if parameter is None else str(parameter.device)
    net.__class__ = next(cls for cls in type(net).__mro__
                         if issubclass(cls, net_class) and not hasattr(cls, "_unwrap_accelerator"))
    return net


# -- classes that pickle saves by reference -----------------------------------------

def _importable(cls):
    """Whether pickle can save ``cls`` by reference: its module and name give it back."""
    obj = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is cls


def _net_classes(net):
    """The classes of the net's modules, criteria and optimizers, and its module class."""
    classes = set()
    names = list(getattr(net, "_modules", [])) + list(getattr(net, "_criteria", []))
    for name in names + list(getattr(net, "_optimizers", [])):
        obj = getattr(net, name + "_", None)
        if isinstance(obj, torch.nn.Module):
            classes.update(type(m) for m in obj.modules())
        elif obj is not None:
            classes.add(type(obj))
    if isinstance(getattr(net, "module", None), type):
        classes.add(net.module)
    return sorted(classes, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def _where(classes):
    names = ", ".join(f"{cls.__module__}.{cls.__qualname__}" for cls in classes)
    if any("<locals>" in cls.__qualname__ for cls in classes):
        return f"{names} (defined inside a function)"
    return f"{names} (defined in __main__: the script, notebook or session being run)"


def _fix(name):
    return (f"Move {name} to an importable file (e.g. my_modules.py next to your script, on "
            "the workers' sys.path too: for Dask, client.upload_file('my_modules.py')) and "
            f"import it from there: from my_modules import {name}.")


class _PickledNet:
    """A fitted net whose classes may not exist in the process that unpickles it.

    It pickles as a nested pickle of the net, so that a failure to find the
    classes, on either side, is reported with what to do about it.
    """

    def __init__(self, net, classes):
        self.net = net
        self.classes = classes

    def __reduce__(self):
        lost = [cls for cls in self.classes if not _importable(cls)]
        if lost:
            raise pickle.PicklingError(
                f"Cannot pickle the fitted ensemble: its net uses {_where(lost)}, which "
                "this process cannot name (a class sent to a joblib, Dask or Ray worker "
                "travels by value, but the net's weights are pickled with references to "
                "their classes). The fitted ensemble cannot leave this process, e.g. be "
                f"returned from a worker. {_fix(lost[0].__name__)}"
            )
        names = [f"{cls.__module__}.{cls.__qualname__}" for cls in self.classes]
        return _load_net, (pickle.dumps(self.net, protocol=pickle.HIGHEST_PROTOCOL), names)


def _load_net(data, names):
    try:
        return pickle.loads(data)
    except (AttributeError, ImportError) as exc:
        raise pickle.UnpicklingError(
            f"Cannot rebuild the fitted ensemble's net: it uses {', '.join(names)}, defined in "
            "__main__ of the process that pickled it (a script, notebook or session), and "
            "pickle finds classes by module and name, which this process (a joblib, Dask or "
            f"Ray worker, or a new session) lacks. {_fix(names[0].rsplit('.', 1)[-1])}"
        ) from exc


def picklable_state(state):
    """``state`` of a fitted ensemble, with ``net_`` wrapped when its classes may not travel."""
    net = state.get("net_")
    if net is not None:
        classes = [cls for cls in _net_classes(net)
                   if cls.__module__ in _MAIN_MODULES or not _importable(cls)]
        if classes:
            # First in the state: a process lacking the classes fails here, with the
            # message, before it meets the ``net`` parameter's reference to them.
            state = {"net_": _PickledNet(net, classes),
                     **{key: value for key, value in state.items() if key != "net_"}}
    return state
