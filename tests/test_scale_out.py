"""Scaling out on existing engines: a search on a Dask cluster, training through Accelerate.

The Dask tests start a real ``distributed.LocalCluster`` (2 worker processes of
1 thread each, loopback only); the Accelerate tests train in this process with
``Accelerator(cpu=True)`` and in 2 data-parallel processes on the CPU (gloo),
started by ``torchrun``. They need the packages of the test extra
(``dask[distributed]``, ``accelerate``) and are skipped, saying so, without them.
"""

import os
import pathlib
import pickle
import subprocess
import sys

import cloudpickle  # joblib's own dependency, the pickler of its loky workers
import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_validate
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.hf import AccelerateMixin  # imports neither accelerate nor transformers

from sksnapshot import MLPModule, SnapshotEnsembleClassifier

from ._helpers import assert_close_elsewhere
from .conftest import tiny_net

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env(*paths):
    """This process's environment, with sksnapshot (and ``paths``) importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [*map(str, paths), str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(args, tmp_path, timeout=240, **kwargs):
    result = subprocess.run(args, cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                            text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


# -- a search on a Dask cluster ---------------------------------------------------------

@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip(
        "distributed", reason="needs dask[distributed] (pip install -e '.[test]')")
    # Dask's nanny runs in this process and writes its workers' variables
    # (OMP_NUM_THREADS=1, ...) into os.environ; a variable already set there wins
    # over Dask's default. Start from Dask's defaults, leave os.environ as found.
    saved = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.pop(name, None)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      worker_dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                yield client
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _search(kind):
    clf = SnapshotEnsembleClassifier(tiny_net(max_epochs=4), n_snapshots=2, random_state=0)
    scoring = {"accuracy": "accuracy", "log_loss": "neg_log_loss"}
    if kind == "grid":
        return GridSearchCV(clf, {"net__lr": [0.05, 0.2], "n_snapshots": [1, 2]}, cv=2,
                            scoring=scoring, refit="log_loss")
    return RandomizedSearchCV(
        clf, {"net__lr": [0.02, 0.05, 0.1, 0.2], "net__module__hidden_layer_sizes": [(8,), (16,)]},
        n_iter=3, cv=2, scoring=scoring, refit="log_loss", random_state=0)


@pytest.mark.parametrize("kind", ["grid", "randomized"])
def test_search_on_a_dask_cluster_equals_the_sequential_search(data, dask_client, kind):
    X, y = data
    with joblib.parallel_config(backend="dask"):
        on_cluster = _search(kind).set_params(n_jobs=-1).fit(X, y)
    sequential = _search(kind).fit(X, y)

    results, expected = on_cluster.cv_results_, sequential.cv_results_
    assert results["params"] == expected["params"]
    compared = [key for key in expected if "test_" in key]
    assert len(compared) >= 8
    for key in compared:  # the same seeds and one torch thread everywhere, other processes
        assert_close_elsewhere(results[key], expected[key], err_msg=key)
    assert on_cluster.best_params_ == sequential.best_params_
    assert_close_elsewhere(on_cluster.best_estimator_.predict_proba(X),
                           sequential.best_estimator_.predict_proba(X))
    assert on_cluster.best_estimator_.score(X, y) > 0.5


class TorchThreads(Callback):
    """Records, when training begins, torch's thread count and the process training."""

    def on_train_begin(self, net, **kwargs):
        self.n_threads_ = torch.get_num_threads()
        self.pid_ = os.getpid()


def test_each_fit_on_a_dask_worker_uses_the_workers_one_thread(data, dask_client):
    X, y = data
    # Dask's nanny starts every worker process with OMP_NUM_THREADS=1, which torch
    # reads when it is imported there: 2 workers x 1 torch thread on 2 cores.
    assert set(dask_client.run(torch.get_num_threads).values()) == {1}
    net = tiny_net(callbacks=[("threads", TorchThreads())])
    clf = SnapshotEnsembleClassifier(net, n_snapshots=2, random_state=0)
    with joblib.parallel_config(backend="dask"):
        fitted = cross_validate(clf, X, y, cv=2, n_jobs=-1, return_estimator=True)["estimator"]
    records = [dict(est.net_.callbacks_)["threads"] for est in fitted]
    assert all(record.pid_ != os.getpid() for record in records)  # trained on the workers
    assert [record.n_threads_ for record in records] == [1, 1]
    for est in fitted:  # and the fitted ensembles came back from the workers intact
        assert len(est.snapshots_) == 2 and est.predict(X).shape == y.shape


def test_runs_on_a_dask_cluster_equal_the_sequential_runs(data, dask_client):
    # n_runs trains its runs through joblib: the dask backend sends them to the
    # workers (1 torch thread each, as this process), with the same results.
    X, y = data
    net = tiny_net(max_epochs=4, callbacks=[("threads", TorchThreads())])
    clf = SnapshotEnsembleClassifier(net, n_snapshots=2, n_runs=2, bootstrap=True,
                                     random_state=0)
    sequential = clone(clf).fit(X, y)
    with joblib.parallel_config(backend="dask"):
        on_cluster = clone(clf).set_params(n_jobs=2).fit(X, y)
    assert on_cluster.snapshot_runs_ == sequential.snapshot_runs_ == [0, 0, 1, 1]
    record = dict(on_cluster.net_.callbacks_)["threads"]  # run 0's net, from a worker
    assert record.pid_ != os.getpid() and record.n_threads_ == 1
    assert_close_elsewhere(on_cluster.predict_proba(X), sequential.predict_proba(X))


# -- modules defined in __main__ --------------------------------------------------------

def test_a_fitted_ensemble_whose_module_class_has_no_importable_name_says_why(data):
    # As in a worker that received the class by value (cloudpickle): pickle's
    # reference to it, module and name, would not find it anywhere.
    class LocalModule(MLPModule):
        pass

    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(module=LocalModule), n_snapshots=2,
                                     random_state=0).fit(X, y)
    with pytest.raises(pickle.PicklingError, match=r"LocalModule \(defined inside a function\)"
                       r".*Move LocalModule to an importable file"):
        cloudpickle.dumps(clf)
    # Unfitted, the ensemble travels by value, as a search sends it to its workers.
    assert cloudpickle.loads(cloudpickle.dumps(clone(clf))).fit(X, y).predict(X).shape == y.shape


def test_a_process_without_the_main_module_class_says_how_to_fix_it(data):
    X, y = data
    main = sys.modules["__main__"]
    MainModule = type("MainModule", (MLPModule,), {"__module__": "__main__"})
    main.MainModule = MainModule
    try:
        clf = SnapshotEnsembleClassifier(tiny_net(module=MainModule), n_snapshots=2,
                                         random_state=0).fit(X, y)
        blob = pickle.dumps(clf)
        # The process that defines the class loads it as before (the same weights, the same
        # process: bit for bit).
        np.testing.assert_array_equal(pickle.loads(blob).predict_proba(X), clf.predict_proba(X))
    finally:
        del main.MainModule
    # A process whose __main__ lacks the class (a worker, a new session) says what to do.
    with pytest.raises(pickle.UnpicklingError, match=r"uses __main__\.MainModule, defined in "
                       r"__main__.*Move MainModule to an importable file"):
        pickle.loads(blob)


MAIN_SCRIPT = '''
import pickle

import numpy as np
import torch
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, cross_validate

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net


class MainModule(torch.nn.Module):  # defined in the script that runs: __main__
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_classes)

    def forward(self, X):
        return self.linear(X)


if __name__ == "__main__":
    torch.set_num_threads(1)
    X, y = make_classification(80, 4, n_informative=3, n_redundant=0, random_state=0)
    X = X.astype(np.float32)
    net = default_classifier_net(MainModule).set_params(max_epochs=2, batch_size=32)
    clf = SnapshotEnsembleClassifier(net, n_snapshots=1, random_state=0)
    # Unfitted ensembles travel to loky's workers by value (cloudpickle): the search works.
    search = GridSearchCV(clf, {"net__lr": [0.05, 0.1]}, cv=2, n_jobs=2).fit(X, y)
    print("search:", search.best_estimator_.predict(X).shape)
    try:  # a fitted ensemble coming back from a worker
        cross_validate(clf, X, y, cv=2, n_jobs=2, return_estimator=True)
    except pickle.PicklingError as exc:
        print("returned:", exc)
'''


def test_a_main_module_searches_on_loky_and_a_fitted_ensemble_says_how_to_travel(tmp_path):
    # A fitted ensemble sent *to* a loky worker fails there with the message of
    # the test above, as the cause of loky's BrokenProcessPool (measured, not run
    # here: one more pool of workers to start costs seconds).
    (tmp_path / "main_module.py").write_text(MAIN_SCRIPT)
    out = _run([sys.executable, "main_module.py"], tmp_path)
    assert "search: (80,)" in out
    returned = out.split("returned:")[1]
    assert "__main__.MainModule (defined in __main__" in returned
    assert "Move MainModule to an importable file" in returned


# -- Hugging Face Accelerate ------------------------------------------------------------

class AcceleratedNet(AccelerateMixin, NeuralNetClassifier):
    """skorch's recipe for a net trained through Hugging Face Accelerate."""


def _accelerated_tiny_net(**overrides):
    accelerate = pytest.importorskip(
        "accelerate", reason="needs accelerate (pip install -e '.[test]')")
    params = {k: v for k, v in tiny_net(**overrides).get_params(deep=False).items()
              if k not in ("module", "device", "_params_to_validate")}
    return AcceleratedNet(MLPModule, accelerator=accelerate.Accelerator(cpu=True), **params)


def test_accelerate_single_process_fit_equals_the_plain_fit_and_drops_the_accelerator(
        data, capsys):
    X, y = data
    plain = tiny_net()
    clf = SnapshotEnsembleClassifier(_accelerated_tiny_net(), n_snapshots=3,
                                     random_state=0).fit(X, y)
    # verbose=0 is silent, although skorch's PrintLog prints through accelerator.print.
    assert capsys.readouterr().out == ""
    expected = SnapshotEnsembleClassifier(plain, n_snapshots=3, random_state=0).fit(X, y)

    assert clf.n_iter_ == expected.n_iter_ == 6 * 4  # 108 training rows, batches of 32
    assert list(clf.snapshots_[0]) == list(expected.snapshots_[0])  # the module's own keys
    # The same fit, with and without Accelerate, in one process: bit for bit.
    np.testing.assert_array_equal(clf.predict_proba(X), expected.predict_proba(X))
    # The fitted net is a plain skorch net: it predicts and pickles without the accelerator.
    assert type(clf.net_) is NeuralNetClassifier and not hasattr(clf.net_, "accelerator")
    assert type(clf.net_.optimizer_) is torch.optim.SGD
    # A pickle round trip in one process: bit for bit.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X),
                                  expected.predict_proba(X))


def test_accelerate_fit_resumes_from_its_checkpoint_dir(data, tmp_path):
    X, y = data
    first = SnapshotEnsembleClassifier(_accelerated_tiny_net(), n_snapshots=2, random_state=0,
                                       checkpoint_dir=tmp_path).fit(X, y)
    assert (tmp_path / "progress.pt").exists()
    # Another Accelerator object, the same run: the checkpoint is found and finished.
    again = SnapshotEnsembleClassifier(_accelerated_tiny_net(), n_snapshots=2, random_state=0,
                                       checkpoint_dir=tmp_path).fit(X, y)
    assert again.net_.history[:, "dur"] == first.net_.history[:, "dur"]  # not trained again
    np.testing.assert_array_equal(again.predict_proba(X), first.predict_proba(X))  # same weights


DDP_NETS = '''
from skorch import NeuralNetClassifier
from skorch.hf import AccelerateMixin


class AcceleratedNet(AccelerateMixin, NeuralNetClassifier):
    def _initialize_accelerator(self):
        # accelerate wraps every prepared module in DistributedDataParallel on
        # MULTI_CPU, also a criterion without parameters, which DDP refuses
        # (its GPU path skips those); the criterion needs no preparing on the CPU.
        criteria, self._criteria = self._criteria, []
        try:
            return super()._initialize_accelerator()
        finally:
            self._criteria = criteria
'''

DDP_SCRIPT = '''
import sys

import joblib
import numpy as np
import torch
from accelerate import Accelerator
from sklearn.datasets import make_classification

from ddp_nets import AcceleratedNet  # importable: the pickle can name it
from sksnapshot import MLPModule, SnapshotEnsembleClassifier

if __name__ == "__main__":
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    X, y = make_classification(240, 6, n_informative=4, n_redundant=0, n_classes=3,
                               random_state=0)
    X = X.astype(np.float32)
    net = AcceleratedNet(
        MLPModule, accelerator=accelerator, module__hidden_layer_sizes=(16,),
        criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
        optimizer__momentum=0.9, lr=0.1, max_epochs=6, batch_size=32,
        iterator_train__shuffle=True)
    clf = SnapshotEnsembleClassifier(net, n_snapshots=3, random_state=0).fit(X, y)
    first = clf.snapshots_[0]["layers.0.weight"].reshape(1, -1)
    # Every process holds the same snapshots, bit for bit: DDP applies the same all-reduced
    # gradients to the same initial weights on each.
    same = accelerator.gather(first)
    with open(f"rank{rank}.txt", "w") as report:  # one file each: no interleaved lines
        report.write(f"processes={accelerator.num_processes} n_iter={clf.n_iter_} "
                     f"snapshots={len(clf.snapshots_)} keys={sorted(clf.snapshots_[0])} "
                     f"identical={bool(torch.equal(same[0], same[-1]))} "
                     f"net={type(clf.net_).__name__}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # predicting needs no other process
        np.save(sys.argv[1] + ".npy", clf.predict_proba(X))
        joblib.dump(clf, sys.argv[1])
'''

LOAD_SCRIPT = '''
import sys
import joblib, numpy as np
from sklearn.datasets import make_classification
from tests._helpers import assert_close_elsewhere  # expected was computed in another process
X, y = make_classification(240, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=0)
clf = joblib.load(sys.argv[1])
expected = np.load(sys.argv[1] + ".npy")
assert_close_elsewhere(clf.predict_proba(X.astype(np.float32)), expected)
print("predicted", clf.predict(X).shape, "without the accelerator")
'''


def test_accelerate_two_data_parallel_processes_on_the_cpu(tmp_path):
    pytest.importorskip("accelerate", reason="needs accelerate (pip install -e '.[test]')")
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("this torch build has no gloo backend for CPU data parallelism")
    (tmp_path / "ddp_nets.py").write_text(DDP_NETS)
    (tmp_path / "ddp_fit.py").write_text(DDP_SCRIPT)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "ddp_fit.py", "model.joblib"], tmp_path)
    # 216 training rows in batches of 32: 7 batches, 4 per process, and the
    # schedule counts these global steps (6 epochs x 4).
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == (
            "processes=2 n_iter=24 snapshots=3 keys=['layers.0.bias', 'layers.0.weight', "
            "'layers.2.bias', 'layers.2.weight'] identical=True net=NeuralNetClassifier")
    # A plain process (no torchrun, no process group) loads the ensemble and predicts.
    (tmp_path / "load.py").write_text(LOAD_SCRIPT)
    assert "predicted (240,) without the accelerator" in _run(
        [sys.executable, "load.py", "model.joblib"], tmp_path)
