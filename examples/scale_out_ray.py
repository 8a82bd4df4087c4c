"""
Hyper-parameter search on a Ray cluster
=======================================

Ray's joblib backend runs the fits of a scikit-learn search on the workers of a
Ray cluster, here a :class:`~sklearn.model_selection.GridSearchCV` over the
number of snapshots and the peak learning rate of a
:class:`~sksnapshot.SnapshotEnsembleClassifier`. Ray is optional and not
installed by any extra of ``sksnapshot`` (``pip install "ray[default]"``);
this script is not run when the documentation is built.

Run it on this machine (Ray starts a local cluster), or on a running cluster::

    python examples/scale_out_ray.py
    python examples/scale_out_ray.py --address auto

Each fit seeds torch from ``random_state``, so the results are those of the
same search run sequentially, whichever worker runs which fit. The module is
sksnapshot's own :class:`~sksnapshot.MLPModule`; a module class of your own
must live in an importable file, not in this script, for the fitted ensembles
to travel between processes (see the "Scaling out" page of the docs).
"""

import argparse
import time

import joblib
import numpy as np
import ray
from ray.util.joblib import register_ray
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster ('auto', or host:port); default: start one")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of every fit (keep it at the CPUs a task reserves)")
    args = parser.parse_args()

    # Every Ray worker process gets these variables before it imports torch,
    # which fixes its thread count: no over-subscription when the fits share cores.
    threads = str(args.torch_threads)
    ray.init(address=args.address, runtime_env={
        "env_vars": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}})
    register_ray()

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0)
    net = default_classifier_net().set_params(
        module__hidden_layer_sizes=(128,), max_epochs=20, batch_size=64)
    pipe = make_pipeline(StandardScaler(), SnapshotEnsembleClassifier(net, random_state=0))
    search = GridSearchCV(
        pipe,
        {"snapshotensembleclassifier__n_snapshots": [1, 2, 4],
         "snapshotensembleclassifier__net__lr": [0.05, 0.1]},
        cv=3, scoring="neg_log_loss", n_jobs=-1,
    )

    start = time.perf_counter()
    with joblib.parallel_config(backend="ray"):
        search.fit(X_train, y_train)
    print(f"{len(search.cv_results_['params'])} candidates x 3 folds on Ray in "
          f"{time.perf_counter() - start:.1f} s")

    results = search.cv_results_
    for params, loss in zip(results["params"], -results["mean_test_score"]):
        short = {name.split("__", 1)[1]: value for name, value in params.items()}
        print(f"  {short}: CV log-loss {loss:.3f}")
    best = search.best_estimator_  # refitted in this process
    print("best:", search.best_params_)
    print(f"test accuracy {best.score(X_test, y_test):.3f}, test log-loss "
          f"{-search.score(X_test, y_test):.3f}, "
          f"{len(best[-1].snapshots_)} snapshots, weights {np.round(best[-1].weights_, 2)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
