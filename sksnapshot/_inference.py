"""The one inference path of both estimators: every member, batch by batch, nothing mutated.

Every prediction (``predict``, ``predict_proba``, ``staged_predict_proba``,
``predict_uncertainty``, ``select`` and the member choice inside ``fit``) runs
here. The rows are read once, in large batches; each batch goes through every
member with :func:`torch.func.functional_call` on a *replica* of the trained
module whose own parameters live on the ``meta`` device (they take no memory:
every call supplies the member's tensors). A replica serves one call at a time,
so calls from many threads never see each other's weights, and the trained
module itself is never touched.
"""

import contextlib
import copy
import itertools
import math
import queue
import threading
import weakref

import numpy as np
import torch
from skorch import NeuralNet
from skorch.dataset import unpack_data
from skorch.utils import multi_indexing, to_tensor

from ._inputs import (
    call_module,
    first_output,
    forward_arguments,
    input_leaves,
    is_dataset,
    n_samples,
)
from ._kernel import weighted_sum

__all__ = ["MemberRunner", "inference_batch_size", "meta_replica", "runner_for"]

# Inference keeps no activations for a backward pass, so batches can be far
# larger than the training batch; bounded by the bytes of the input batch
# (benchmarks/speed.py measures the choice).
_MAX_BATCH_ROWS = 4096
_MAX_BATCH_BYTES = 16 * 2**20


def meta_replica(module):
    """A deep copy of ``module`` whose state tensors are weightless ``meta`` tensors.

    Non-persistent buffers (not in the state dict, so not in a snapshot) are
    shared with the original: they are constants the forward pass reads.
    """
    in_state = {id(t) for t in module.state_dict(keep_vars=True).values()}
    memo = {}
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if id(tensor) in in_state:
            meta = torch.empty_like(tensor, device="meta")
            if isinstance(tensor, torch.nn.Parameter):
                meta = torch.nn.Parameter(meta, requires_grad=tensor.requires_grad)
            memo[id(tensor)] = meta
        else:
            memo[id(tensor)] = tensor
    return copy.deepcopy(module, memo).eval()


class _Replica:
    """A weightless copy of the trained module that runs any member's state.

    A member's tensors are put straight into the replica's parameter and
    buffer slots (as ``torch.func.functional_call`` does, without its per-call
    search for tied weights), and the ``meta`` placeholders go back after the
    call, so an idle replica holds no member's memory.
    """

    def __init__(self, module):
        self.module = meta_replica(module)
        self.slots = []
        for key in module.state_dict():
            prefix, _, name = key.rpartition(".")
            owner = self.module.get_submodule(prefix)
            store = owner._parameters if name in owner._parameters else owner._buffers
            if name not in store:  # e.g. extra state: leave it to functional_call
                self.slots = None
                break
            self.slots.append((key, store, name, store[name]))

    def __call__(self, state, x):
        if self.slots is None:
            return torch.func.functional_call(self.module, state, *forward_arguments(x))
        for key, store, name, _ in self.slots:
            store[name] = state[key]
        return call_module(self.module, x)

    def release(self):
        if self.slots is not None:
            for _, store, name, placeholder in self.slots:
                store[name] = placeholder


def inference_batch_size(net, X):
    """Rows per inference batch: the net's ``iterator_valid__batch_size`` if set, else large.

    The default is the most rows (up to 4096) whose input fits in 16 MiB, and
    never fewer than the training batch size (which fits with gradients).
    """
    given = getattr(net, "iterator_valid__batch_size", None)
    if given is not None:
        return given if given > 0 else max(n_samples(X), 1)
    row_bytes = _row_bytes(X)
    rows = _MAX_BATCH_ROWS if row_bytes is None else _MAX_BATCH_BYTES // max(row_bytes, 1)
    return int(max(min(rows, _MAX_BATCH_ROWS), net.batch_size if net.batch_size > 0 else 1))


def _row_bytes(X):
    if is_dataset(X):
        return None
    total = 0
    for value in input_leaves(X):
        n = max(len(value), 1)
        nbytes = getattr(value, "nbytes", None)
        if nbytes is None:
            return None
        total += math.ceil(nbytes / n)
    return total


class MemberRunner:
    """Run the members of a fitted ensemble on rows, from any number of threads.

    Parameters
    ----------
    net : skorch.NeuralNet
        The trained net. Its device, ``predict_nonlinearity``, validation
        iterator (for Datasets) and, when its class overrides ``infer``, its
        ``infer`` are honoured.
    """

    def __init__(self, net):
        # A weak reference: the runner is the value of a WeakKeyDictionary keyed by the
        # net, and a strong one would keep every fitted net alive forever.
        self._net = weakref.ref(net)
        self.module = net.module_
        self.device = torch.device(net.device if net.device is not None else "cpu")
        self.nonlinearity = net._get_predict_nonlinearity()
        # A net with its own ``infer`` needs its own module: such calls take turns.
        self._custom_infer = type(net).infer is not NeuralNet.infer
        self._lock = threading.Lock()
        self._replicas = queue.SimpleQueue()

    @property
    def net(self):
        return self._net()

    # -- the rows, batch by batch ------------------------------------------------
    def _batches(self, X, batch_size):
        if is_dataset(X):
            params = {**self.net.get_params_for("iterator_valid"), "batch_size": batch_size}
            for batch in self.net.iterator_valid(X, **params):
                yield unpack_data(batch)[0]
            return
        for start in range(0, n_samples(X), batch_size):
            yield multi_indexing(X, slice(start, start + batch_size))

    # -- one batch through one member ------------------------------------------------
    def _acquire(self):
        try:
            return self._replicas.get_nowait()
        except queue.Empty:
            return _Replica(self.module)

    def _forward(self, replica, state, x):
        if self._custom_infer:  # under the lock _run holds: the module is this call's
            self.module.load_state_dict(state)
            out = self.net.infer(x)
        else:
            out = replica(state, x)
        return self.nonlinearity(first_output(out))

    @contextlib.contextmanager
    def _exclusive_module(self):
        """The trained module for this call alone, in eval mode; restored afterwards."""
        with self._lock:
            original = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            was_training = self.module.training
            self.module.eval()
            try:
                yield None
            finally:
                self.module.load_state_dict(original)
                self.module.train(was_training)

    @contextlib.contextmanager
    def _pooled_replica(self):
        replica = self._acquire()
        try:
            yield replica
        finally:
            replica.release()
            self._replicas.put(replica)

    def _run(self, X, states, batch_size, consume):
        """Call ``consume(outputs)`` for each batch; ``outputs`` yields one tensor a member.

        The members run as ``consume`` iterates: a reduction that adds each
        output as it comes keeps one member's output in memory (and in the
        CPU's caches) at a time, as a plain loop over the members does.
        """
        if self.device.type != "cpu":
            # The members' tensors go to the device once per call; the snapshots stay on the CPU.
            states = [{k: v.to(self.device) for k, v in state.items()} for state in states]
        # A net with its own infer runs members in its module, one call at a time.
        runner = self._exclusive_module() if self._custom_infer else self._pooled_replica()
        with runner as replica, torch.inference_mode():
            for xb in self._batches(X, batch_size):
                x = (torch.as_tensor(xb, device=self.device) if isinstance(xb, np.ndarray)
                     else to_tensor(xb, device=self.device))
                consume(self._forward(replica, state, x) for state in states)

    # -- what the estimators ask for -----------------------------------------------
    def map_batches(self, X, states, reduce, batch_size=None):
        """``reduce(outputs)`` of every batch, concatenated along the rows.

        ``outputs`` is an iterator over the batch's member outputs (tensors on
        the device, one per state, computed as it is consumed); ``reduce``
        returns a NumPy array with one row per sample. Memory is that of one
        batch of member outputs plus the result, whatever the number of rows.
        """
        batch_size = batch_size or inference_batch_size(self.net, X)
        parts = []
        self._run(X, states, batch_size, lambda outputs: parts.append(reduce(outputs)))
        return parts[0] if len(parts) == 1 else _concatenate(parts)

    def weighted_sum(self, X, states, weights, batch_size=None):
        """``sum_m weights[m] * output_m`` for every row, as float64 NumPy."""
        weights = [float(w) for w in weights]

        def reduce(outputs):
            # float64 sums (MPS has none): the same numbers as NumPy's np.average.
            outputs = (out.to(torch.float64 if out.device.type != "mps" else torch.float32)
                       for out in outputs)
            return weighted_sum(outputs, weights).cpu().numpy()

        return self.map_batches(X, states, reduce, batch_size)

    def each(self, X, states, batch_size=None):
        """Every member's outputs, shape ``(n_members, n_rows, ...)``, float32 NumPy."""
        out = self.map_batches(
            X, states, lambda outputs: torch.stack(list(outputs), 1).cpu().numpy(), batch_size)
        return np.moveaxis(out, 1, 0) if out.size else np.zeros((len(states), 0), np.float32)


def _concatenate(parts):
    return np.concatenate(parts, axis=0) if parts else np.zeros((0,), dtype=np.float64)


# One runner per trained net, created on first use and dropped with the net: the
# estimator's own attributes never change in predict (scikit-learn checks that).
_RUNNERS = weakref.WeakKeyDictionary()
_RUNNERS_LOCK = threading.Lock()


def runner_for(net):
    """The :class:`MemberRunner` of ``net`` (rebuilt if its module or device changed)."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(net)
        device = torch.device(net.device if net.device is not None else "cpu")
        if runner is None or runner.module is not net.module_ or runner.device != device:
            runner = _RUNNERS[net] = MemberRunner(net)
        return runner
