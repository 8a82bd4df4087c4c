"""What the loader knows of the library's own modules (``MLPModule``, ``MLPRegressorModule``).

They are always allowed, so their arguments are checked strictly, against the
fitted fields and the tensors, before anything is built; they return logits,
so ``NLLLoss`` is refused for them. Every other module is checked only by
building it on the ``meta`` device and probing it.
"""

import inspect

import torch

from ._estimators import ESTIMATORS
from ._format import refuse, short

#: The library's own modules: each estimator's default.
BUILTIN_MODULES = tuple(cls._default_module for cls in ESTIMATORS.values())
_MAX_SIZE = 2**31 - 1


def is_builtin(module):
    return module in BUILTIN_MODULES


def _accepts(module, name):
    return name in inspect.signature(module).parameters


def check_arguments(check, module, criterion, kwargs):
    """Strict types for the MLPs' arguments; ``NLLLoss`` refused (they return logits)."""
    if criterion is torch.nn.NLLLoss:
        check.fail("criterion", "is NLLLoss, which needs a module returning probabilities; "
                                f"{module.__name__} returns logits (its criterion is "
                                "CrossEntropyLoss).")
    for name in ("n_features", "n_classes", "n_outputs"):
        if name in kwargs:
            check.integer(kwargs[name], f"net_params.module__{name}", 1, _MAX_SIZE)
    if "hidden_layer_sizes" in kwargs:
        sizes = check.array(kwargs["hidden_layer_sizes"], "net_params.module__hidden_layer_sizes")
        for i, size in enumerate(sizes):
            check.integer(size, f"net_params.module__hidden_layer_sizes[{i}]", 1, _MAX_SIZE)
    if "dropout" in kwargs:
        field = "net_params.module__dropout"
        if not 0 <= check.number(kwargs["dropout"], field) < 1:
            check.fail(field, f"must be in [0, 1); got {kwargs['dropout']}.")
    for flag in ("batch_norm", "gaussian"):
        if flag in kwargs:
            check.boolean(kwargs[flag], f"net_params.module__{flag}")


def check_n_features(check, spec):
    """The MLP's input width is the fitted ``n_features_in_``."""
    n_features, kwargs = spec["fitted"].get("n_features_in_"), spec["module_kwargs"]
    if n_features is not None and kwargs["n_features"] != n_features:
        check.fail("fitted.n_features_in_", f"is {n_features}, but the module "
                                            f"takes {kwargs['n_features']} features "
                                            "(net_params.module__n_features).")


def check_against_fitted(check, spec):
    """The MLP takes rows of the fitted sample shape, and has the fitted head."""
    kwargs, fitted, name = spec["module_kwargs"], spec["fitted"], spec["module_name"]
    shape = fitted["sample_shape_"]
    if isinstance(shape, tuple) and shape != (kwargs["n_features"],):
        check.fail("fitted.sample_shape_", f"is {short(list(shape))}, but "
                                           f"{name} takes rows of "
                                           f"{kwargs['n_features']} features "
                                           "(net_params.module__n_features).")
    if ("gaussian_" in fitted and _accepts(spec["module"], "gaussian")
            and kwargs.get("gaussian", False) != fitted["gaussian_"]):
        check.fail("net_params.module__gaussian", "must equal fitted.gaussian_.")


def input_width(spec):
    """The width of the rows the MLP takes."""
    return spec["module_kwargs"]["n_features"]


def check_layer_count(meta_path, weights, spec):
    """No more layers than the file holds tensors for (refused before anything is built)."""
    if not is_builtin(spec["module"]):
        return
    default = inspect.signature(spec["module"]).parameters["hidden_layer_sizes"].default
    layers = len(spec["module_kwargs"].get("hidden_layer_sizes", default)) + 1
    per_snapshot = sum(key.startswith("snapshot.0.") for key in weights.header)
    if 2 * layers > per_snapshot:  # a weight and a bias per layer
        raise refuse(meta_path, "net_params.module__hidden_layer_sizes",
                     f"asks for {layers} layers, more than {weights.path.name} holds "
                     f"tensors for.")
