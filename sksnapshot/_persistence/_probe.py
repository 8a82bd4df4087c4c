"""Checking the module a file describes before building it: on the ``meta`` device, then probes.

The module is first built on PyTorch's ``meta`` device (shapes and dtypes, no
memory) to compare its state with the safetensors header, and run there on
probe inputs of the saved per-sample shape to learn its output width. Where it
cannot run on ``meta``, or must be seen to return probabilities (``NLLLoss``),
the real module runs on small real probes.
"""

import itertools
import math
import re

import torch

from .._inputs import call_module, first_output, input_leaves, map_inputs
from ._builtin import input_width, is_builtin
from ._format import SAFETENSORS_DTYPES, plain_shape, refuse, short, state_prefixes

#: Probe inputs (zeros) of at most this many bytes are built for any module;
#: beyond it, no bigger than the weights file.
PROBE_MIN_BUDGET = 2**20
#: The dtypes each input of unknown dtype is probed with: floats become float32
#: in fit, integers (token ids for an embedding) are kept.
_PROBE_DTYPES = (torch.float32, torch.int64)
#: Dicts of at most this many inputs are probed with every mix of dtypes.
_MAX_MIXED_INPUTS = 4


def output_width(output):
    """The width of a module's (first) output of 2 dimensions, else None."""
    output = first_output(output)
    if isinstance(output, torch.Tensor) and output.ndim == 2:
        return int(output.shape[1])
    return None


def meta_module(path, spec):
    """The module built on the meta device: shapes and dtypes, no memory."""
    try:
        with torch.device("meta"):
            module = spec["module"](**spec["module_kwargs"])
    except Exception as exc:  # the caller's class, the file's arguments
        raise refuse(path, "net_params", f"do not build {spec['module_name']}: "
                                         f"{type(exc).__name__}: {short(str(exc))}") from None
    if not isinstance(module, torch.nn.Module):
        raise refuse(path, "module", f"{spec['module_name']} did not build a torch module.")
    return module


def check_tensors(meta_path, weights, spec, expected):
    """The safetensors header holds exactly the module's state, once per snapshot."""
    header, name = weights.header, weights.path.name
    n, averaged = spec["n_snapshots"], spec["averaged"]
    present = sorted({int(m.group(1)) for key in header
                      if (m := re.match(r"snapshot\.([0-9]{1,9})\.", key))})
    if len(present) != n or present != list(range(len(present))):
        raise refuse(meta_path, "n_snapshots", f"is {n}, but {name} holds the "
                                               f"snapshots {short(present)}.")
    has_averaged = any(key.startswith("averaged.") for key in header)
    if has_averaged != averaged:
        raise refuse(meta_path, "averaged", f"is {str(averaged).lower()}, but {name} "
                                            f"{'holds' if has_averaged else 'lacks'} an "
                                            "averaged model.")
    wanted = {prefix + key: value for prefix in state_prefixes(spec)
              for key, value in expected.items()}
    missing = sorted(wanted.keys() - header.keys())
    extra = sorted(header.keys() - wanted.keys())
    if missing or extra:
        raise refuse(weights.path, None,
                     f"the tensors do not match the module {spec['module_name']} built from "
                     f"{meta_path.name}'s net_params: missing {short(missing)}, unexpected "
                     f"{short(extra)}.")
    for key, (shape, dtype) in header.items():
        need = wanted[key]
        if shape != tuple(need.shape) or SAFETENSORS_DTYPES.get(dtype) != need.dtype:
            raise refuse(weights.path, None,
                         f"tensor {key} has shape {shape} ({dtype}); the module built from "
                         f"{meta_path.name}'s net_params needs {tuple(need.shape)} "
                         f"({need.dtype}).")


def _output_of(module, x):
    """The module's output for ``x`` as skorch's ``infer`` calls it (a dict as keywords)."""
    with torch.no_grad():
        return first_output(call_module(module, x))


class Probes:
    """Inputs of the saved per-sample shape, to run the module on before trusting a file.

    Rows of 2-D inputs (``fitted.n_features_in_``, or the library's own
    modules) are float32, as ``fit`` made them: a module that fails on them
    is refused. Other inputs (``fitted.sample_shape_``: N-D arrays, dicts of
    arrays) may hold integers (token ids), and the file does not say which:
    each input is probed with float32 zeros, then int64 zeros (every mix for a
    dict of up to 4 inputs). A module that runs on none of them (it may need
    a bool mask, or lengths above 0), or samples too large to build for real,
    are not probed: the caller loads without the check, with a warning (the
    shape is checked again against the inputs of every ``predict``).
    """

    def __init__(self, spec):
        fitted = spec["fitted"]
        mlp = is_builtin(spec["module"])
        self.rows = mlp or "n_features_in_" in fitted
        if mlp:
            self.shape = (input_width(spec),)
        elif self.rows:
            self.shape = (fitted["n_features_in_"],)
        else:
            self.shape = fitted["sample_shape_"]
        self.field = "fitted.n_features_in_" if self.rows else "fitted.sample_shape_"
        leaves = input_leaves(self.shape)
        if self.rows:
            self.combos = [(torch.float32,)]
        elif len(leaves) <= _MAX_MIXED_INPUTS:
            self.combos = list(itertools.product(_PROBE_DTYPES, repeat=len(leaves)))
        else:
            self.combos = [(dtype,) * len(leaves) for dtype in _PROBE_DTYPES]
        self.n_elements = sum(math.prod(dims) for dims in leaves)
        self.itemsize = 4 if self.rows else 8  # int64 probes are twice as large
        self.working = None  # the dtypes the module last ran on

    def describe(self):
        if self.rows:
            return f"{self.field} is {self.shape[0]}"
        return f"{self.field} is {short(plain_shape(self.shape))}"

    def build(self, dtypes, make):
        """The probe input: ``make(dims, dtype)`` for each input, in the shape's structure."""
        dtypes = iter(dtypes)
        return map_inputs(lambda dims: make(dims, next(dtypes)), self.shape)

    def _ordered(self):
        return ([self.working] if self.working else []) + [
            combo for combo in self.combos if combo != self.working]

    def meta_width(self, module):
        """The output width on the meta device (no memory), or None where it cannot run."""
        for combo in self.combos:
            try:
                out = _output_of(module, self.build(
                    combo, lambda dims, dtype: torch.empty((2, *dims), dtype=dtype,
                                                           device="meta")))
            except Exception:  # not every module runs on meta; checked for real below
                continue
            width = output_width(out)
            if width is not None:
                self.working = combo
                return width
        return None

    def too_large(self, budget):
        return 5 * self.itemsize * self.n_elements > budget

    def run(self, module, make):
        """(output, None) on the first dtypes the module runs on, or (None, the last error)."""
        error = None
        for combo in self._ordered():
            try:
                out = _output_of(module, self.build(combo, make))
            except Exception as exc:  # the caller's module, the file's shape
                error = exc
                continue
            self.working = combo
            return out, None
        return None, error


def run_probes(probes, module, make, meta_path, what):
    """The module's outputs on probe inputs, or ``(None, why it could not be run)``.

    Rows of a 2-D width the module fails on are refused: the file's width is
    wrong. ``what`` describes the inputs, ``{}`` standing for the field and shape.
    """
    out, error = probes.run(module, make)
    if error is None:
        return out, None
    if probes.rows:
        raise refuse(meta_path, probes.field,
                     f"is {probes.shape[0]}, but the module fails on rows of that "
                     f"width: {type(error).__name__}: {short(str(error))}") from None
    inputs = what.format(f"{probes.field} {short(plain_shape(probes.shape))}")
    return None, (f"the module fails on {inputs}: "
                  f"{type(error).__name__}: {short(str(error))}")


def zero_rows(device):
    """Probe samples for the width check: two zeros."""
    return lambda dims, dtype: torch.zeros((2, *dims), dtype=dtype, device=device)


def probability_rows(device):
    """Probe samples for the probabilities check: a zero and four random ones (floats)."""
    generator = torch.Generator().manual_seed(0)

    def make(dims, dtype):
        if not dtype.is_floating_point:  # token ids: only 0 is a valid id for sure
            return torch.zeros((5, *dims), dtype=dtype, device=device)
        return torch.cat([torch.zeros((1, *dims), dtype=dtype),
                          torch.randn((4, *dims), generator=generator, dtype=dtype)]).to(device)

    return make


def are_distributions(out):
    """Whether ``out`` holds rows of finite, non-negative values summing to 1."""
    out = out.double().cpu()
    return (out.ndim == 2 and bool(torch.isfinite(out).all()) and bool((out >= 0).all())
            and float((out.sum(dim=1) - 1).abs().max()) < 1e-4)
