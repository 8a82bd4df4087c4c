"""The built-in module used when no net is given."""

import torch
from torch import nn

from ._kernel import LOG_VAR_BOUND, clamp_log_variance

__all__ = ["GaussianNLLCriterion", "MLPModule", "MLPRegressorModule"]


class MLPModule(nn.Module):
    """A multi-layer perceptron returning logits (one per class).

    This is the module :class:`SnapshotEnsembleClassifier` trains when it is
    given no net. Its ``n_features`` and ``n_classes`` are filled in from the
    training data by the estimator, so a net built around it only needs the
    hidden layer sizes, e.g.
    ``NeuralNetClassifier(MLPModule, module__hidden_layer_sizes=(512, 512))``.

    Parameters
    ----------
    n_features : int
        Width of the input rows.
    n_classes : int
        Number of outputs (logits).
    hidden_layer_sizes : tuple of int, default=(100,)
        Width of each hidden layer, as in :class:`sklearn.neural_network.MLPClassifier`.
    dropout : float, default=0.0
        Dropout probability after every hidden activation.
    batch_norm : bool, default=False
        Insert a BatchNorm layer before every hidden activation.

    Examples
    --------
    >>> import torch
    >>> module = MLPModule(n_features=4, n_classes=3, hidden_layer_sizes=(8,))
    >>> module(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, n_features, n_classes, hidden_layer_sizes=(100,), dropout=0.0,
                 batch_norm=False):
        super().__init__()
        layers = []
        width = n_features
        for size in hidden_layer_sizes:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, X):
        return self.layers(X.to(torch.float32))


class MLPRegressorModule(MLPModule):
    """A multi-layer perceptron for regression, optionally with a variance head.

    With ``gaussian=False`` it returns ``n_outputs`` values per row. With
    ``gaussian=True`` it returns ``2 * n_outputs``: the means, then the
    log-variances, as :class:`GaussianNLLCriterion` and
    :class:`SnapshotEnsembleRegressor` expect (mean-variance members,
    Lakshminarayanan et al., 2017).

    Parameters
    ----------
    n_features : int
        Width of the input rows.
    n_outputs : int
        Number of regression targets.
    hidden_layer_sizes, dropout, batch_norm
        As for :class:`MLPModule`.
    gaussian : bool, default=False
        Add a log-variance output per target.

    Examples
    --------
    >>> import torch
    >>> MLPRegressorModule(3, 2, gaussian=True)(torch.zeros(5, 3)).shape
    torch.Size([5, 4])
    """

    def __init__(self, n_features, n_outputs, hidden_layer_sizes=(100,), dropout=0.0,
                 batch_norm=False, gaussian=False):
        super().__init__(n_features, n_outputs * (2 if gaussian else 1),
                         hidden_layer_sizes=hidden_layer_sizes, dropout=dropout,
                         batch_norm=batch_norm)


class GaussianNLLCriterion(nn.Module):
    """Gaussian negative log-likelihood of (mean, log-variance) outputs.

    The module's output holds the means in its first half of columns and the
    log-variances in the second; the loss is
    :func:`torch.nn.functional.gaussian_nll_loss` with
    ``var = exp(clip(log_var, -LOG_VAR_BOUND, LOG_VAR_BOUND))``: the clip keeps
    one huge residual from blowing the variance (and the loss) up to infinity.

    Examples
    --------
    >>> import torch
    >>> out = torch.tensor([[0.0, 0.0]])  # mean 0, variance 1
    >>> round(GaussianNLLCriterion()(out, torch.tensor([[1.0]])).item(), 3)
    0.5
    """

    # The kernel's bound, which prediction, export and distillation clip with too.
    LOG_VAR_BOUND = LOG_VAR_BOUND

    def forward(self, y_pred, y_true):
        n_outputs = y_true.shape[1]
        mean, log_var = y_pred[:, :n_outputs], y_pred[:, n_outputs:]
        var = clamp_log_variance(log_var).exp()
        return nn.functional.gaussian_nll_loss(mean, y_true, var, eps=1e-6)
