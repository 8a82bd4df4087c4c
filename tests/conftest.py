import contextlib
from unittest import mock

import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback

from sksnapshot import default_classifier_net

# CI has two cores; one torch thread per process avoids oversubscription when
# joblib workers run beside the main process.
torch.set_num_threads(1)


class TokensAndFeatures(torch.nn.Module):
    """Two inputs (a dict of arrays): token ids (integers, for an embedding) and float features."""

    def __init__(self, n_classes, vocabulary=7):
        super().__init__()
        self.embed = torch.nn.Embedding(vocabulary, 3)
        self.head = torch.nn.Linear(3 + 2, n_classes)

    def forward(self, ids, x):
        return self.head(torch.cat([self.embed(ids).mean(dim=1), x], dim=1))


def tiny_net(**overrides):
    """A net small and short enough for unit tests (well under a second a fit)."""
    params = dict(module__hidden_layer_sizes=(16,), lr=0.1, max_epochs=6, batch_size=32)
    params.update(overrides)
    return default_classifier_net().set_params(**params)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=120, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
        random_state=0,
    )
    return StandardScaler().fit_transform(X), y


class InterruptAt(Callback):
    """Raise KeyboardInterrupt (as Ctrl-C would) before the given training batch."""

    def __init__(self, at_batch=0):
        self.at_batch = at_batch

    def initialize(self):
        self.seen_ = 0
        return self

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            if self.seen_ == self.at_batch:
                raise KeyboardInterrupt
            self.seen_ += 1


@contextlib.contextmanager
def interrupted_at(at_batch):
    """Ctrl-C before the given training batch, from outside the net's settings.

    Unlike an ``InterruptAt`` callback, it leaves the net's callbacks (which a
    checkpoint's fingerprint covers) unchanged, as a real Ctrl-C does.
    """
    from sksnapshot._callbacks import CyclicSnapshots

    original = CyclicSnapshots.on_batch_begin
    seen = [0]

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            if seen[0] == at_batch:
                raise KeyboardInterrupt
            seen[0] += 1
        return original(self, net, batch=batch, training=training, **kwargs)

    with mock.patch.object(CyclicSnapshots, "on_batch_begin", on_batch_begin):
        yield
