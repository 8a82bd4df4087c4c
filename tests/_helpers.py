"""The data, the net and the tolerance the tests share: one home for conftest's fixtures and
for the helpers that subprocesses import (``tests/_checkpoint_helpers.py``)."""

import numpy as np
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback

from sksnapshot import default_classifier_net

# Outputs computed elsewhere, by another process (its own torch threads, its own memory
# alignment for oneDNN's and BLAS's vector paths) or by other versions of torch, numpy and
# scikit-learn (a stored file), may differ from this process's in their last float32 bits:
# float32's epsilon is 1.2e-7, and the few epochs of a test's tiny net grow that to about
# 1e-6 at most. A real change (another member, weight, temperature, or one more epoch)
# moves the outputs by far more (test_saved_files checks that a 1e-3 weight change fails).
RTOL, ATOL = 1e-5, 1e-7


def assert_close_elsewhere(actual, desired, **kwargs):
    """``actual`` equals ``desired``, computed in another process or by other versions."""
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=ATOL, **kwargs)


def classification_data():
    """120 standardised rows of 6 features, 3 classes (the ``data`` fixture)."""
    X, y = make_classification(
        n_samples=120, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
        random_state=0,
    )
    return StandardScaler().fit_transform(X), y


def tiny_net(**overrides):
    """A net small and short enough for unit tests (well under a second a fit)."""
    params = dict(module__hidden_layer_sizes=(16,), lr=0.1, max_epochs=6, batch_size=32)
    params.update(overrides)
    return default_classifier_net().set_params(**params)


class AtTrainingBatch(Callback):
    """Calls ``act(net)`` before training batch ``at`` (0-based), or after it with ``after``."""

    after = False

    def __init__(self, at=0):
        self.at = at

    def initialize(self):
        self.seen_ = 0
        return self

    def _count(self, net, training):
        if training:
            if self.seen_ == self.at:
                self.act(net)
            self.seen_ += 1

    def on_batch_begin(self, net, training=False, **kwargs):
        if not self.after:
            self._count(net, training)

    def on_batch_end(self, net, training=False, **kwargs):
        if self.after:
            self._count(net, training)


class InterruptAt(AtTrainingBatch):
    """Raise KeyboardInterrupt (as Ctrl-C would) before the given training batch."""

    def act(self, net):
        raise KeyboardInterrupt
