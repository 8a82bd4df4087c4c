"""The built-in module used when no net is given."""

import torch
from torch import nn

__all__ = ["MLPModule"]


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
