"""
Weight averaging vs probability averaging
=========================================

``combine="proba"`` (the default) predicts with every member and averages
their probabilities: M forward passes per prediction. ``combine="weights"``
averages the members' weights into one model (stochastic weight averaging,
Izmailov et al., 2018) and re-estimates its BatchNorm statistics on the
training rows: one forward pass. Here both are compared for an MLP with
BatchNorm (``module__batch_norm=True``), trained with the cosine schedule and
with the "linear" schedule of fast geometric ensembling, on MNIST-1D
(Greydanus, 2020), generated locally by the ``mnist1d`` package.
"""

# %%
# Data
# ----
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot.metrics import negative_log_likelihood

torch.set_num_threads(2)

data = make_dataset(get_dataset_args())  # generated here, nothing is downloaded
scaler = StandardScaler().fit(data["x"])
X, y = scaler.transform(data["x"]), data["y"]
X_test, y_test = scaler.transform(data["x_test"]), data["y_test"]

# %%
# One fit per schedule
# --------------------
# Every fit uses ``combine="weights"``, so ``predict_proba`` runs the averaged
# model; ``staged_predict_proba`` always averages the members' probabilities,
# so its last stage is what ``combine="proba"`` predicts with the same members
# and weights.
net = default_classifier_net().set_params(
    module__hidden_layer_sizes=(256, 256), module__batch_norm=True, lr=0.1, max_epochs=40
)
results = {}
for schedule in ["cosine", "linear"]:
    clf = SnapshotEnsembleClassifier(net, n_snapshots=5, schedule=schedule, selection="all",
                                     weighting="uniform", combine="weights", random_state=0)
    clf.fit(X, y)

    start = time.perf_counter()
    proba_weights = clf.predict_proba(X_test)
    seconds_weights = time.perf_counter() - start

    start = time.perf_counter()
    *_, proba_average = clf.staged_predict_proba(X_test)
    seconds_average = time.perf_counter() - start

    for combine, proba, seconds in [("proba", proba_average, seconds_average),
                                    ("weights", proba_weights, seconds_weights)]:
        accuracy = np.mean(clf.classes_[proba.argmax(axis=1)] == y_test)
        nll = negative_log_likelihood(y_test, proba)
        results[schedule, combine] = accuracy, nll
        print(f"schedule={schedule!r:9s} combine={combine!r:10s} test accuracy "
              f"{accuracy:.3f}, log-loss {nll:.3f}, predicting took {seconds * 1000:.0f} ms")

# %%
# Side by side
# ------------
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
names = [f"{schedule}\n{combine}" for schedule, combine in results]
colors = ["C0" if combine == "proba" else "C1" for _, combine in results]
for ax, column, label in zip(axes, [0, 1], ["test accuracy", "test log-loss"]):
    values = [scores[column] for scores in results.values()]
    ax.bar(names, values, color=colors)
    for i, value in enumerate(values):
        ax.annotate(f"{value:.3f}", (i, value), ha="center", va="bottom")
    ax.set_ylabel(label)
    ax.set_xlabel("schedule / combine")
axes[0].set_ylim(0, 1)
fig.tight_layout()
plt.show()
