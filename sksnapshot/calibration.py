"""Post-hoc calibration on held-out rows, as the estimators fit it.

The temperature of a classifier's combined probabilities and the scale of a
regressor's predictive variance, each fitted on validation rows (the
estimators' ``calibration`` setting), public so that a calibration fitted
elsewhere (on other rows, on another model's outputs) is the same fit.
"""

from ._calibration import apply_temperature, fit_temperature, fit_variance_scale

__all__ = ["apply_temperature", "fit_temperature", "fit_variance_scale"]
