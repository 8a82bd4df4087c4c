"""
Choosing members: disagreement and selection strategies
=======================================================

An ensemble helps where its members make different mistakes. The snapshots of
one training run are compared on held-out rows: ``disagreement_`` is the share
of rows on which two snapshots predict different labels, and
``selection="diverse"`` keeps accurate snapshots that disagree with each other.
:meth:`~sksnapshot.SnapshotEnsembleClassifier.select` re-chooses the members
with another strategy without training again. Data: MNIST-1D (Greydanus, 2020),
generated locally by the ``mnist1d`` package.
"""

# %%
# Data and one fit with six snapshots
# -----------------------------------
# 600 of the 4000 training rows are held out to choose members on; the test
# rows are only used to report.
import matplotlib.pyplot as plt
import numpy as np
import torch
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot.metrics import negative_log_likelihood
from sksnapshot.plotting import plot_disagreement

torch.set_num_threads(2)

data = make_dataset(get_dataset_args())  # generated here, nothing is downloaded
scaler = StandardScaler().fit(data["x"])
X, y = scaler.transform(data["x"]), data["y"]
X_test, y_test = scaler.transform(data["x_test"]), data["y_test"]
X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=600, stratify=y, random_state=0)

net = default_classifier_net().set_params(
    module__hidden_layer_sizes=(256, 256), lr=0.3, max_epochs=42
)
clf = SnapshotEnsembleClassifier(net, n_snapshots=6, selection="all", weighting="uniform",
                                 validation_fraction=0.0, random_state=0)
clf.fit(X_fit, y_fit)

# %%
# Selection strategies, on the same snapshots
# -------------------------------------------
# Each strategy chooses on the 600 held-out rows; the test scores are printed.
strategies = {
    "all, uniform": dict(selection="all", n_members=None, weighting="uniform"),
    "all, optimize": dict(selection="all", n_members=None, weighting="optimize"),
    "last 3": dict(selection="last", n_members=3, weighting="uniform"),
    "diverse 3": dict(selection="diverse", n_members=3, weighting="uniform"),
    "greedy": dict(selection="greedy", n_members=None, weighting="uniform"),
}
for name, params in strategies.items():
    clf.set_params(**params).select(X_val, y_val)
    proba = clf.predict_proba(X_test)
    print(f"{name:14s} members {str(clf.members_.tolist()):19s} weights "
          f"{str(np.round(clf.weights_, 2).tolist()):32s} test accuracy "
          f"{clf.score(X_test, y_test):.3f}, log-loss "
          f"{negative_log_likelihood(y_test, proba):.3f}")

print("held-out accuracy of each snapshot:",
      np.round(clf.validation_scores_["accuracy"], 3).tolist())

# %%
# The disagreement heat-map
# -------------------------
# With ``selection="diverse"`` and ``n_members=3`` again; the chosen members
# have bold red tick labels and a star on the diagonal.
clf.set_params(**strategies["diverse 3"]).select(X_val, y_val)
print("disagreement between snapshots:")
print(np.round(clf.disagreement_, 3))
ax = plot_disagreement(clf)
ax.figure.set_size_inches(6.5, 5.5)
plt.show()
