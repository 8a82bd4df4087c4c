import contextlib
from unittest import mock

import pytest
import torch

from ._helpers import InterruptAt, classification_data, tiny_net

__all__ = ["InterruptAt", "TokensAndFeatures", "interrupted_at", "tiny_net"]  # tests import these

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


@pytest.fixture(scope="module")
def data():
    return classification_data()


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
