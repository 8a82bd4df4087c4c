"""Writes the saved ensembles under ``tests/data/`` that ``test_saved_files.py`` loads.

They were written by the single-module ``sksnapshot/_persistence.py`` (format 2),
before it became a package, together with what that code's ``load_ensemble``
returned for them (``expected.json``): the test proves files written then still
load identically. Rerun it only to add a file, never to refresh one
(``PYTHONPATH=. python tests/data/make_saved_ensembles.py``).
"""

import json
import pathlib

import numpy as np
import pandas as pd
import torch

import sksnapshot as sk

HERE = pathlib.Path(__file__).parent
SMALL = dict(module__hidden_layer_sizes=(4,), max_epochs=4, batch_size=-1)


def rows():
    """The training rows, and the rows the expected outputs are for."""
    X = np.random.RandomState(0).normal(size=(24, 3)).round(2)
    return X, X[:6]


def plain(value):
    """A fitted attribute as JSON: arrays as lists with their dtype."""
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


FITTED = ("classes_", "n_features_in_", "feature_names_in_", "sample_shape_", "members_",
          "weights_", "snapshot_epochs_", "snapshot_iterations_", "snapshot_runs_",
          "divergences_", "n_iter_", "n_iter_planned_", "validation_scores_",
          "disagreement_", "temperature_", "n_outputs_", "gaussian_", "variance_scale_")


def record(estimator, X):
    """What a loaded estimator holds and predicts, as JSON."""
    params = estimator.get_params(deep=False)
    params.pop("net")
    out = {"params": params,
           "fitted": {name: plain(getattr(estimator, name)) for name in FITTED
                      if hasattr(estimator, name)},
           "n_snapshots": len(estimator.snapshots_),
           "averaged": estimator.averaged_state_ is not None,
           "history_length": len(estimator.net_.history),
           "predict": plain(estimator.predict(X))}
    if hasattr(estimator, "predict_proba"):
        out["predict_proba"] = plain(estimator.predict_proba(X))
    else:
        mean, std = estimator.predict(X, return_std=True)
        out["predict_std"] = plain(std)
    return out


def main():
    torch.set_num_threads(1)
    X, X_test = rows()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    labels = np.array(["ant", "bee", "cow"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    clf = sk.SnapshotEnsembleClassifier(
        sk.default_classifier_net().set_params(**SMALL), n_snapshots=2, combine="weights",
        validation_fraction=0.25, random_state=0).fit(frame, labels)
    y = X @ np.array([1.0, -0.5, 0.25])
    reg = sk.SnapshotEnsembleRegressor(
        sk.default_regressor_net(gaussian=True).set_params(**SMALL), n_snapshots=2,
        validation_fraction=0.25, random_state=0).fit(X, y)
    expected = {}
    test_frame = pd.DataFrame(X_test, columns=["a", "b", "c"])
    for name, estimator, test in (("classifier_v2", clf, test_frame),
                                  ("regressor_v2", reg, X_test)):
        sk.save_ensemble(estimator, HERE / name)
        expected[name] = record(sk.load_ensemble(HERE / name), test)
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
