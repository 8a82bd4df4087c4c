"""
Calibration: one net vs its snapshot ensemble
=============================================

The same net, with the same epochs, training rows, initial weights and batch
order, is trained twice: once with a single cosine cycle (``n_snapshots=1``,
one snapshot: a plain cosine-annealed net) and once with five cycles. A
reliability diagram (:func:`sksnapshot.plotting.plot_reliability_diagram`)
compares how well their confidences match their accuracies on MNIST-1D
(Greydanus, 2020), generated locally by the ``mnist1d`` package.
"""

# %%
# Data
# ----
import matplotlib.pyplot as plt
import torch
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot.metrics import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
)
from sksnapshot.plotting import plot_reliability_diagram

torch.set_num_threads(2)

data = make_dataset(get_dataset_args())  # generated here, nothing is downloaded
scaler = StandardScaler().fit(data["x"])
X, y = scaler.transform(data["x"]), data["y"]
X_test, y_test = scaler.transform(data["x_test"]), data["y_test"]
print(f"{len(X)} training rows, {len(X_test)} test rows, {X.shape[1]} features")

# %%
# Two fits of the same net
# ------------------------
net = default_classifier_net().set_params(
    module__hidden_layer_sizes=(256, 256), lr=0.3, max_epochs=40
)
single = SnapshotEnsembleClassifier(net, n_snapshots=1, random_state=0).fit(X, y)
ensemble = clone(single).set_params(n_snapshots=5).fit(X, y)
print("ensemble members:", ensemble.members_.tolist(),
      "weights:", [round(w, 3) for w in ensemble.weights_])

probas = {
    "single net": single.predict_proba(X_test),
    "snapshot ensemble (5)": ensemble.predict_proba(X_test),
}
for name, proba in probas.items():
    accuracy = (ensemble.classes_[proba.argmax(axis=1)] == y_test).mean()
    print(f"{name:22s} accuracy {accuracy:.3f}  "
          f"log-loss {negative_log_likelihood(y_test, proba):.3f}  "
          f"ECE {expected_calibration_error(y_test, proba):.3f}  "
          f"Brier {brier_score(y_test, proba):.3f}")

# %%
# Reliability diagram
# -------------------
# Test rows are binned by confidence (the largest predicted probability). A
# point below the diagonal is a bin whose rows were predicted with more
# confidence than accuracy.
ax = plot_reliability_diagram(y_test, probas, n_bins=10, classes=ensemble.classes_)
ax.figure.set_size_inches(5.5, 5.5)
plt.show()
