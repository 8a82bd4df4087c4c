"""The one predictive kernel: the members' outputs to the ensemble's prediction.

Prediction (``predict_proba``, ``predict``, the calibration's inputs),
export (``to_torch``) and the distillation teacher all combine the members
with these functions:

- :func:`weighted_sum` of the members' outputs (after the net's predict
  nonlinearity), streamed one member at a time;
- classifier: :func:`normalise`, then :func:`temper` of :func:`log_proba`
  (the one log floor, :data:`PROBA_FLOOR`) by the temperature;
  :class:`ProbaHead` is that chain;
- regressor: :func:`split_outputs` (means, then variances from the
  log-variance clamped once, :data:`LOG_VAR_BOUND`), :func:`mixture` (the
  law of total variance), the variance scale; :class:`GaussianHead` is that
  chain.

Each function takes torch tensors (an exported graph, in the module's
float32) or NumPy arrays (the estimators' float64 prediction) and computes
with that library's operations: the same arithmetic in the same order, so
that ``predict_proba`` keeps the bits it had when its NumPy code was its
own (saved-file fixtures compare them exactly; torch's ``exp`` rounds
differently from NumPy's in a few values of a thousand). The heads are small
stateless ``nn.Module`` s whose settings are Python constants and whose
branches are decided when they are built, so that ``torch.export`` and ONNX
trace them. :class:`EnsembleSpec` is what an estimator hands to the modules
that build on the kernel (export, distillation).
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "LOG_PROBA_FLOOR",
    "LOG_VAR_BOUND",
    "POOLINGS",
    "PROBA_FLOOR",
    "EnsembleSpec",
    "GaussianHead",
    "ProbaHead",
    "clamp_log_variance",
    "floor_log",
    "log_proba",
    "log_temper",
    "mixture",
    "normalise",
    "pool_runs",
    "split_outputs",
    "temper",
    "weighted_sum",
]

# Probabilities are floored here before their log (scikit-learn's historical 1e-15):
# an exact 0 stays finite under a temperature, and -inf never reaches a softmax.
PROBA_FLOOR = 1e-15
LOG_PROBA_FLOOR = float(np.log(PROBA_FLOOR))
# Log-variances are clipped to +-20 (variances e^-20 .. e^20) in training, prediction,
# export and distillation alike: one huge residual cannot blow a variance up to infinity.
LOG_VAR_BOUND = 20.0


def _xp(a):
    """The library of ``a``: torch for a tensor, else NumPy (same names for what is used here)."""
    return torch if isinstance(a, torch.Tensor) else np


def weighted_sum(outputs, weights):
    """``sum_m weights[m] * outputs[m]``; ``outputs`` any iterable, consumed one at a time."""
    total = None
    for w, out in zip(weights, outputs):
        if total is None:
            total = out * w
        elif isinstance(total, torch.Tensor):
            total = torch.add(total, out, alpha=w)
        else:
            total = total + w * out
    return total


# -- classification -----------------------------------------------------------------
def normalise(proba):
    """Rows summing to 1 (NaN rows stay NaN, for the caller to refuse).

    Softmax rows in float32 sum to 1 only to ~1e-7; consumers such as
    scikit-learn's ``log_loss`` check to a tighter tolerance.
    """
    return proba / proba.sum(axis=-1, keepdims=True)


def floor_log(log_p):
    """Log-probabilities floored at ``log(PROBA_FLOOR)`` (``-inf`` included)."""
    return log_p.clip(min=LOG_PROBA_FLOOR)


def log_proba(proba):
    """``log(max(proba, PROBA_FLOOR))``."""
    return _xp(proba).log(proba.clip(min=PROBA_FLOOR))


def log_temper(log_p, temperature):
    """``log_softmax(log_p / temperature)`` over the classes.

    SciPy's log-softmax, step for step (max subtracted, log of the summed
    exponentials subtracted); ``log_p`` is finite (floored) or NaN. The
    temperature's fit (its likelihood) and its use (:func:`temper`) both
    compute it here.
    """
    xp = _xp(log_p)
    z = log_p / temperature
    z = z - xp.amax(z, axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


def temper(log_p, temperature):
    """``softmax(log_p / temperature)`` over the classes, as ``exp(log_temper)``."""
    return _xp(log_p).exp(log_temper(log_p, temperature))


#: How the members of several runs become one calibrated prediction (``ProbaHead``).
POOLINGS = ("mixture", "tempered runs", "log")


class ProbaHead(nn.Module):
    """The classifier's prediction from its members' probabilities.

    ``pooling="mixture"``: the weighted mean, normalised, then (for a
    temperature other than 1) ``softmax(log(p) / T)``, as ``predict_proba``
    returns it. With ``runs`` (the run of each member) the members of each
    run are mixed first (weights renormalised within the run), and the runs
    pooled: ``"tempered runs"`` tempers each run's mixture, then averages the
    runs with their total weights (what a temperature fitted on out-of-fold
    rows, each predicted by one run, calibrates); ``"log"`` averages the runs'
    log-probabilities, then tempers.
    """

    def __init__(self, temperature=1.0, runs=None, pooling="mixture"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        self.temperature = float(temperature)
        self.pooling = pooling
        # Member positions by run, as Python ints: constants in a traced graph.
        self.groups = None if pooling == "mixture" or runs is None else [
            [i for i, r in enumerate(runs) if r == run] for run in sorted(set(runs))]

    def calibrate(self, proba):
        """Normalised and temperature-scaled probabilities from a weighted mean."""
        proba = normalise(proba)
        if self.temperature == 1.0:  # leaves the mean's own bits (and zeros) alone
            return proba
        return temper(log_proba(proba), self.temperature)

    def forward(self, outputs, weights):
        if self.groups is None:
            return self.calibrate(weighted_sum(outputs, weights))
        outputs = list(outputs)
        shares = [float(sum(weights[i] for i in group)) for group in self.groups]
        mixtures = [normalise(weighted_sum([outputs[i] for i in group],
                                           [float(weights[i]) / share for i in group]))
                    for group, share in zip(self.groups, shares)]
        if self.pooling == "tempered runs":
            return normalise(weighted_sum([self.calibrate(m) for m in mixtures], shares))
        return temper(weighted_sum([log_proba(m) for m in mixtures], shares), self.temperature)


def pool_runs(probas, weights, runs, temperature, pooling):
    """Members' probabilities ``(n_members, n_rows, n_classes)`` pooled as ``ProbaHead`` does."""
    return ProbaHead(temperature, runs, pooling)(probas, weights)


# -- regression ----------------------------------------------------------------------
def clamp_log_variance(log_var):
    """Log-variances clipped to ``[-LOG_VAR_BOUND, LOG_VAR_BOUND]``."""
    return log_var.clip(-LOG_VAR_BOUND, LOG_VAR_BOUND)


def split_outputs(outputs, n_outputs, gaussian):
    """Members' ``(means, variances)`` from their raw outputs; variances None without a head.

    Mean-variance members return the means in their first ``n_outputs``
    columns and log-variances in the rest (:class:`~sksnapshot.GaussianNLLCriterion`).
    """
    means = outputs[..., :n_outputs]
    if not gaussian:
        return means, None
    return means, _xp(outputs).exp(clamp_log_variance(outputs[..., n_outputs:]))


def mixture(means, variances, weights):
    """``(mean, aleatoric, epistemic)`` of a weighted mixture (law of total variance).

    ``means`` (and ``variances``, or None for members without them) stack
    the members on their first axis; ``weights``, summing to 1, has one
    entry a member. ``aleatoric = sum_m w_m var_m`` (zeros without
    variances), ``epistemic = sum_m w_m (mean_m - mean)^2``.
    """
    xp = _xp(means)
    if xp is torch:  # on the members' device (an exported module may be moved to a GPU)
        w = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
    else:
        w = np.asarray(weights, dtype=means.dtype)
    mean = xp.tensordot(w, means, 1)
    epistemic = xp.tensordot(w, (means - mean) ** 2, 1)
    aleatoric = (xp.zeros_like(mean) if variances is None
                 else xp.tensordot(w, variances, 1))
    return mean, aleatoric, epistemic


class GaussianHead(nn.Module):
    """The regressor's prediction from its members' raw outputs.

    ``parts`` gives the mixture's mean and uncalibrated variance parts; the
    forward pass returns what ``form`` names, with the variance times
    ``variance_scale``:

    - ``"mean"``: the mean (``predict(X)``);
    - ``"mean_std"``: the mean and the standard deviation (``predict(X, return_std=True)``);
    - ``"moments"``: the mean and, for mean-variance members, the variance
      beside it, ``(n_rows, 2 * n_outputs)`` (the distillation targets).

    With ``single_output`` the first two forms return 1-D arrays, as the
    estimator fitted on 1-D targets does.
    """

    FORMS = ("mean", "mean_std", "moments")

    def __init__(self, n_outputs, gaussian, variance_scale=1.0, single_output=False,
                 form="mean"):
        super().__init__()
        if form not in self.FORMS:
            raise ValueError(f"form must be one of {self.FORMS}, got {form!r}.")
        self.n_outputs = int(n_outputs)
        self.gaussian = bool(gaussian)
        self.variance_scale = float(variance_scale)
        self.single_output = bool(single_output)
        self.form = form

    def parts(self, outputs, weights):
        """``(mean, aleatoric, epistemic)`` of the members' stacked raw outputs, unscaled."""
        means, variances = split_outputs(outputs, self.n_outputs, self.gaussian)
        return mixture(means, variances, weights)

    def _shaped(self, a):
        return a[:, 0] if self.single_output else a

    def predictive(self, mean, aleatoric, epistemic):
        """What ``form`` names, from the mixture's parts (:meth:`parts`)."""
        if self.form == "mean":
            return self._shaped(mean)
        variance = self.variance_scale * (aleatoric + epistemic)
        if self.form == "moments":
            return _xp(mean).concatenate([mean, variance], 1) if self.gaussian else mean
        return self._shaped(mean), self._shaped(_xp(variance).sqrt(variance))

    def forward(self, outputs, weights):
        return self.predictive(*self.parts(torch.stack(list(outputs)), weights))


# -- what an estimator hands to export and distillation --------------------------------
@dataclass(frozen=True)
class EnsembleSpec:
    """A fitted ensemble's prediction, as the kernel computes it.

    Built by the estimators (``BaseSnapshotEnsemble._ensemble_spec``); read by
    :func:`sksnapshot._export.to_torch_module` and the distillation teacher,
    which never look at the estimator itself.

    Attributes
    ----------
    net : skorch.NeuralNet
        The trained net: its module's architecture, predict nonlinearity and ``infer``.
    states : list of dict
        The predicting members' states (one averaged state with ``combine="weights"``).
    weights : list of float
        Their weights, summing to 1.
    head : torch.nn.Module
        :class:`ProbaHead` or :class:`GaussianHead`: ``head(outputs, weights)``.
    sample_shape : tuple, dict or None
        The estimator's ``sample_shape_`` (a dict names the inputs of a dict ``X``).
    """

    net: object
    states: list
    weights: list
    head: nn.Module
    sample_shape: object = None
