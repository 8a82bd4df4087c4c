"""
Accuracy and log-loss vs number of members
==========================================

:meth:`~sksnapshot.SnapshotEnsembleClassifier.staged_predict_proba` yields the
ensemble's probabilities as members are added, oldest first, and
:func:`sksnapshot.plotting.plot_staged_scores` draws the test accuracy and
log-loss of every stage. The data set is MNIST-1D (Greydanus, 2020), generated
locally by the ``mnist1d`` package.
"""

# %%
# Data
# ----
# 4000 training rows (of which 400 are held out here to choose weights on
# later) and 1000 test rows of 40 features, 10 classes.
import matplotlib.pyplot as plt
import numpy as np
import torch
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot.metrics import negative_log_likelihood
from sksnapshot.plotting import plot_staged_scores

torch.set_num_threads(2)

data = make_dataset(get_dataset_args())  # generated here, nothing is downloaded
scaler = StandardScaler().fit(data["x"])
X, y = scaler.transform(data["x"]), data["y"]
X_test, y_test = scaler.transform(data["x_test"]), data["y_test"]
X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=400, stratify=y, random_state=0)

# %%
# Six snapshots, averaged with equal weights
# ------------------------------------------
# ``validation_fraction=0`` trains on all of ``X_fit``; ``selection="all"`` with
# ``weighting="uniform"`` averages every snapshot with equal weights.
net = default_classifier_net().set_params(
    module__hidden_layer_sizes=(256, 256), lr=0.3, max_epochs=42
)
clf = SnapshotEnsembleClassifier(net, n_snapshots=6, selection="all", weighting="uniform",
                                 validation_fraction=0.0, random_state=0)
clf.fit(X_fit, y_fit)


def report(clf):
    for k, proba in enumerate(clf.staged_predict_proba(X_test), start=1):
        accuracy = np.mean(clf.classes_[proba.argmax(axis=1)] == y_test)
        print(f"  {k} member(s): test accuracy {accuracy:.3f}, "
              f"test log-loss {negative_log_likelihood(y_test, proba):.3f}")


print("uniform weights:")
report(clf)

# %%
# Weights fitted on held-out rows
# -------------------------------
# :meth:`~sksnapshot.SnapshotEnsembleClassifier.select` chooses members and
# weights again on labelled rows, without training: here
# ``weighting="optimize"`` minimises the log-loss of the weighted average on the
# 400 held-out rows. Stage ``k`` then averages the first ``k`` members with their
# weights, renormalised.
clf.set_params(weighting="optimize").select(X_val, y_val)
print("weights fitted on the held-out rows:", np.round(clf.weights_, 3).tolist())
report(clf)

# %%
# The two curves
# --------------
# Accuracy on the left axis, log-loss on the right one.
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
clf.set_params(weighting="uniform").select(X_val, y_val)
plot_staged_scores(clf, X_test, y_test, ax=axes[0])
axes[0].set_title('weighting="uniform"')
clf.set_params(weighting="optimize").select(X_val, y_val)
plot_staged_scores(clf, X_test, y_test, ax=axes[1])
axes[1].set_title('weighting="optimize"')
fig.tight_layout()
plt.show()
