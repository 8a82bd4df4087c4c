"""SnapshotEnsembleRegressor."""

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.utils import Bunch
from skorch import NeuralNetRegressor

from ._base import DEFAULT_NET_PARAMS, BaseSnapshotEnsemble
from ._calibration import fit_variance_scale
from ._compat import StrOptions
from ._distill import GaussianMatch, distill_ensemble
from ._export import EnsembleRegressorModule, to_torch_module
from ._kernel import GaussianHead, split_outputs
from ._modules import GaussianNLLCriterion, MLPRegressorModule
from ._training import template
from .metrics import variance_decomposition
from .selection import regression_member_scores
from .selection._regression import RegressionLoss
from .selection._rules import REGRESSION_SELECTIONS

__all__ = ["SnapshotEnsembleRegressor", "default_regressor_net"]


def default_regressor_net(module=MLPRegressorModule, gaussian=False):
    """The skorch net trained when only a module (or nothing) is given.

    SGD with Nesterov momentum 0.9, peak learning rate 0.05 (half the
    classifier's: squared errors give larger gradients; not swept yet), 50
    epochs, batches of 128 shuffled rows, silent, with
    the squared error, or with ``gaussian=True`` the Gaussian NLL of
    mean-variance outputs.

    Parameters
    ----------
    module : torch.nn.Module subclass or instance, default=MLPRegressorModule
    gaussian : bool, default=False
        Train mean-variance members: :class:`GaussianNLLCriterion`, and
        ``module__gaussian=True`` for :class:`MLPRegressorModule`.

    Returns
    -------
    net : skorch.NeuralNetRegressor

    Examples
    --------
    >>> net = default_regressor_net(gaussian=True)
    >>> net.criterion.__name__, net.module__gaussian
    ('GaussianNLLCriterion', True)
    """
    extra = {}
    if gaussian and module is MLPRegressorModule:
        extra["module__gaussian"] = True
    return NeuralNetRegressor(
        module,
        criterion=GaussianNLLCriterion if gaussian else torch.nn.MSELoss,
        lr=0.05,
        **DEFAULT_NET_PARAMS,
        **extra,
    )


class SnapshotEnsembleRegressor(RegressorMixin, BaseSnapshotEnsemble):
    """Snapshot ensemble of a skorch regressor, with predictive uncertainty.

    The same training as :class:`SnapshotEnsembleClassifier` (one run of the
    net through ``n_snapshots`` learning-rate cycles, a snapshot at the end of
    each); ``predict`` averages the members' outputs and
    ``predict(X, return_std=True)`` also returns their spread. With
    mean-variance members (a net whose criterion is
    :class:`GaussianNLLCriterion`, e.g. ``default_regressor_net(gaussian=True)``),
    the standard deviation is the mixture's: the square root of the mean of
    the members' variances plus the variance of their means.

    Parameters
    ----------
    net : skorch.NeuralNetRegressor, torch.nn.Module subclass or instance, default=None
        As for :class:`SnapshotEnsembleClassifier`, with a ``NeuralNetRegressor``
        (a module is wrapped in :func:`default_regressor_net`). Constructor
        parameters named ``n_features`` and ``n_outputs`` are filled in.
    n_snapshots, n_members, min_lr, schedule, combine, validation_fraction, \
checkpoint_dir, n_runs, n_jobs, random_state, verbose
        As for :class:`SnapshotEnsembleClassifier`. The validation split is not
        stratified, and the validation loss for choosing members is the
        squared error (Gaussian NLL for mean-variance members).
    bootstrap : {"auto"} or bool, default="auto"
        As for the classifier, without cross-fitted runs ("folds" is refused:
        out of fold each row is predicted by one run, so the spread between
        runs that ``return_std`` includes could not be calibrated there);
        "auto" means False here.
    weighting : {"auto", "optimize", "shrink", "uniform"}, default="auto"
        As for the classifier, on the validation loss above, except that
        "auto" means "optimize" here, where the early, less over-fitted
        snapshots can be the good ones (measured in the user guide,
        :ref:`choosing-members`).
    calibration : {"auto", "variance"} or None, default="auto"
        "variance" (what "auto" means) fits one factor ``s`` of the
        predictive variance on the validation rows (maximum Gaussian
        likelihood, ``variance_scale_``); ``return_std`` is then
        ``sqrt(s * variance)`` (its coverage is measured in the user guide,
        :ref:`choosing-members`). None leaves the variance as the members give it.
    selection : {"all", "last", "greedy"}, default="all"
        As for the classifier; "diverse" is for classifiers only.

    Attributes
    ----------
    n_outputs_ : int
        Number of regression targets.
    gaussian_ : bool
        Whether the members predict a variance as well as a mean.
    variance_scale_ : float
        The fitted factor of the predictive variance (1.0 without validation
        rows or calibration).
    validation_scores_ : dict or None
        ``"mse"`` (and ``"gaussian_nll"``) of every snapshot on the validation rows.
    net_, snapshots_, snapshot_runs_, snapshot_epochs_, snapshot_iterations_, members_, \
weights_, averaged_state_, divergences_, n_iter_, n_iter_planned_, n_features_in_, \
feature_names_in_, sample_shape_
        As for :class:`SnapshotEnsembleClassifier`.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=5.0, random_state=0)
    >>> y = (y - y.mean()) / y.std()
    >>> net = default_regressor_net().set_params(max_epochs=20)
    >>> reg = SnapshotEnsembleRegressor(net, n_snapshots=4, random_state=0).fit(X, y)
    >>> mean, std = reg.predict(X[:3], return_std=True)
    >>> mean.shape, std.shape
    ((3,), (3,))
    >>> reg.score(X, y) > 0.9
    True
    """

    _parameter_constraints = {
        **BaseSnapshotEnsemble._parameter_constraints,
        "selection": [StrOptions(set(REGRESSION_SELECTIONS))],
        "calibration": [StrOptions({"auto", "variance"}), None],
    }
    _net_class = NeuralNetRegressor
    _default_module = MLPRegressorModule
    _default_net = staticmethod(default_regressor_net)
    # Both measured on benchmarks/small_data.py's regression part: shrunk weights
    # cost ~10 % RMSE on diabetes, the variance scale brings +-2 sigma coverage near 0.95.
    _default_weighting = "optimize"
    _default_calibration = "variance"
    _calibration_attribute = "variance_scale_"
    # What sksnapshot._persistence reads (see its _estimators.py); as for the classifier.
    _persistence_kind = "regressor"
    _saved_criteria = (torch.nn.MSELoss, GaussianNLLCriterion)
    _output_width_words = ("n_outputs_", "asks for {width} outputs per row")
    _stratified = False
    _target_checks = {"multi_output": True, "y_numeric": True}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate_targets(self, y):
        y = np.asarray(y)
        self._single_output = y.ndim == 1
        y = np.require(y.reshape(len(y), -1), dtype=np.float32, requirements=["C", "W"])
        self.n_outputs_ = y.shape[1]
        # The criterion of the net that is trained, not of the template alone.
        criterion = template(self).criterion
        self.gaussian_ = isinstance(criterion, type) and issubclass(criterion, GaussianNLLCriterion)
        return y, {"n_outputs": self.n_outputs_}

    @property
    def single_output_(self):
        """bool: whether ``fit`` saw 1-D targets, so that ``predict`` returns 1-D arrays.

        Saved and restored by :func:`save_ensemble` / :func:`load_ensemble`.
        """
        return self._single_output

    @single_output_.setter
    def single_output_(self, value):
        self._single_output = bool(value)

    def _output_width(self):
        if self.gaussian_:
            return (2 * self.n_outputs_,
                    f"a mean and a log-variance for each of {self.n_outputs_} targets")
        return self.n_outputs_, f"one output per target; {self.n_outputs_} targets"

    def _split(self, outputs):
        """Members' (means, variances) from raw outputs, float64; variances None without a head.

        Takes NumPy arrays or tensors (the streaming prediction path) alike.
        """
        torch_in = isinstance(outputs, torch.Tensor)
        outputs = outputs if torch_in else torch.as_tensor(outputs)
        means, variances = split_outputs(outputs.to(torch.float64), self.n_outputs_,
                                         self.gaussian_)
        if torch_in:
            return means, variances
        return means.numpy(), None if variances is None else variances.numpy()

    def _validation_loss(self, outputs, y):
        means, variances = self._split(outputs)
        self.validation_scores_ = regression_member_scores(means, y, variances)
        return RegressionLoss(means, y, variances)

    def _fit_calibration(self, X_valid, y_valid):
        parts = self._mixture(X_valid)
        return fit_variance_scale(parts.mean, parts.total, y_valid)

    def _mixture(self, X):
        """The mixture's mean and uncalibrated variance parts, per row and target.

        One pass in batches; per batch, :func:`~sksnapshot.metrics.variance_decomposition`
        (the kernel's mixture) of the members' means and variances (never
        O(members x rows) memory). Returns a Bunch of ``mean``, ``total``,
        ``aleatoric``, ``epistemic``.
        """
        k = self.n_outputs_

        def reduce(outputs, weights):
            means, variances = self._split(outputs)
            parts = variance_decomposition(means, variances, weights)
            return np.concatenate([parts.mean, parts.aleatoric, parts.epistemic], axis=1)

        out = self._reduced_outputs(X, reduce)
        mean, aleatoric, epistemic = out[:, :k], out[:, k:2 * k], out[:, 2 * k:]
        if not np.all(np.isfinite(mean)):
            raise ValueError("The members' predictions are not finite for some rows; these "
                             "inputs overflow the module (scale the features as for training).")
        return Bunch(mean=mean, total=aleatoric + epistemic, aleatoric=aleatoric,
                     epistemic=epistemic)

    def _encode_targets(self, y):
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y.shape[1]} targets; the ensemble was fitted on "
                             f"{self.n_outputs_}.")
        return y

    def predict(self, X, return_std=False):
        """Average the members' predictions; optionally return their spread.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Samples to predict, of the kind and per-sample shape seen in ``fit``.
        return_std : bool, default=False
            Also return the predictive standard deviation: the weighted spread
            of the members' means, plus (mean-variance members) their mean
            variance. With ``combine="weights"`` only the single model's own
            variance (zero without a variance head).

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        y_std : ndarray of the same shape
            Only with ``return_std=True``.
        """
        X = self._validate_X_predict(X)  # NotFittedError before the head reads fitted values
        return self._predicted(X, self._prediction_head(return_std))

    def _predicted(self, X, head):
        """What the kernel ``head`` makes of the members' mixture on validated rows ``X``."""
        parts = self._mixture(X)
        return head.predictive(parts.mean, parts.aleatoric, parts.epistemic)

    def predict_uncertainty(self, X):
        r"""The predictive variance per row, split into aleatoric and epistemic parts.

        With member weights :math:`w_i`, means :math:`\mu_i` and (mean-variance
        members) variances :math:`\sigma_i^2`, per row and target:
        ``total = aleatoric + epistemic`` with ``aleatoric`` :math:`=\sum_i
        w_i \sigma_i^2` (the noise the members predict; zero for
        squared-error members) and ``epistemic`` :math:`=\sum_i w_i (\mu_i -
        \mu)^2` (the members' disagreement), each times the fitted
        ``variance_scale_``; see
        :func:`~sksnapshot.metrics.variance_decomposition`. ``total`` is the
        square of the standard deviation ``predict(X, return_std=True)``
        returns, and ``mean`` is ``predict(X)``.

        With ``combine="weights"`` the single averaged model has no members to
        disagree: ``epistemic`` is zero.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Samples to predict, of the kind and per-sample shape seen in ``fit``.

        Returns
        -------
        uncertainty : sklearn.utils.Bunch
            ``mean``, ``total``, ``aleatoric`` and ``epistemic`` (variances,
            in squared target units), each of shape (n_samples,), or
            (n_samples, n_outputs) for several targets.

        Examples
        --------
        >>> from sklearn.datasets import make_regression
        >>> from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net
        >>> X, y = make_regression(n_samples=200, n_features=5, noise=5.0, random_state=0)
        >>> y = (y - y.mean()) / y.std()
        >>> net = default_regressor_net(gaussian=True).set_params(max_epochs=20, lr=0.01)
        >>> reg = SnapshotEnsembleRegressor(net, n_snapshots=4, random_state=0).fit(X, y)
        >>> u = reg.predict_uncertainty(X[:3])
        >>> u.total.shape
        (3,)
        >>> bool(np.allclose(u.total, u.aleatoric + u.epistemic))
        True
        >>> bool(np.allclose(np.sqrt(u.total), reg.predict(X[:3], return_std=True)[1]))
        True
        """
        X = self._validate_X_predict(X)
        result = self._mixture(X)
        scale = getattr(self, "variance_scale_", 1.0)  # the calibration scales every part
        for key in ("total", "aleatoric", "epistemic"):
            result[key] = scale * result[key]
        if self._single_output:
            for key in result:
                result[key] = result[key][:, 0]
        return result

    def to_torch(self, return_std=False):
        """The fitted ensemble as one plain :class:`torch.nn.Module`, for serving.

        Its ``forward`` takes a batch of inputs as the module takes them (a
        float32 tensor; the arrays of a dict ``X`` as keyword arguments) and
        returns what :meth:`predict` returns, as tensors: the members'
        weighted mean, and with ``return_std=True`` also the standard
        deviation (the members' spread and, for mean-variance members, their
        variances, times ``variance_scale_``). It needs torch only, runs on
        the CPU in eval mode, and traces with ``torch.export.export``
        (dynamic batch size) and ``torch.onnx.export``.

        Parameters
        ----------
        return_std : bool, default=False
            Return ``(mean, std)`` instead of the mean alone.

        Returns
        -------
        module : torch.nn.Module
            Independent of the estimator (copies of the members' weights).
        """
        return to_torch_module(self._ensemble_spec(self._prediction_head, return_std),
                               EnsembleRegressorModule)

    def distill(self, X, *, X_valid=None, y_valid=None, validation_fraction=0.1,
                init="snapshot", max_epochs=None, patience=5, random_state=None):
        """Train one net to predict what the ensemble predicts: one forward pass per row.

        The student is the ensemble's net (built from ``net`` as ``fit``
        builds it), trained with skorch to match the ensemble's predictive
        distribution: the mean of :meth:`predict` (squared error), and for
        mean-variance members also its calibrated variance (the
        Kullback-Leibler divergence between the Gaussians). One cosine decay
        of the learning rate over ``max_epochs``, stopped early (skorch's
        ``EarlyStopping``, best weights kept) on held-out rows, on which the
        student's own ``variance_scale_`` is then fitted. A student of
        squared-error members has one member and so no spread: its
        ``return_std`` is zero.

        Parameters
        ----------
        X, X_valid, validation_fraction, init, max_epochs, patience, random_state
            As for :meth:`SnapshotEnsembleClassifier.distill`.
        y_valid : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
            Targets of ``X_valid``: the variance scale is then fitted to them
            (as ``fit`` does), not to the ensemble's predictions.

        Returns
        -------
        student : SnapshotEnsembleRegressor
            Fitted, with one member and ``n_snapshots=1``: it predicts, saves
            and exports like any fitted ensemble.
        """
        return distill_ensemble(self._distillation_source(), X, X_valid=X_valid, y_valid=y_valid,
                                validation_fraction=validation_fraction, init=init,
                                max_epochs=max_epochs, patience=patience,
                                random_state=random_state)

    # -- what export and distillation ask of a regressor (see BaseSnapshotEnsemble) --
    _data_attributes = ("n_outputs_", "gaussian_", "_single_output",
                        *BaseSnapshotEnsemble._data_attributes)

    def _data_kwargs(self):
        return {"n_outputs": self.n_outputs_}

    def _head(self, form):
        return GaussianHead(self.n_outputs_, self.gaussian_,
                            getattr(self, "variance_scale_", 1.0), self._single_output, form)

    def _prediction_head(self, return_std=False):
        return self._head("mean_std" if return_std else "mean")

    def _target_head(self):
        return self._head("moments")

    def _soft_targets(self, X):
        X = self._validate_X_predict(X)
        return self._predicted(X, self._target_head()).astype(np.float32)

    def _student_criterion(self, net):
        return GaussianMatch() if self.gaussian_ else torch.nn.MSELoss()

    def _fit_soft_calibration(self, X_valid, targets):
        # The targets are the teacher's N(mean, variance): the scale minimises the KL from them.
        parts, k = self._mixture(X_valid), self.n_outputs_
        return fit_variance_scale(parts.mean, parts.total, targets[:, :k],
                                  target_variance=targets[:, k:] if self.gaussian_ else None)
