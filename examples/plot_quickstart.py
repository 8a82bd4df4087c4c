"""
Quickstart: train 1, get M for free
===================================

Train one MLP on the digits data set through five cosine learning-rate
cycles, keep a snapshot of its weights at the end of every cycle, and predict
with the average of the snapshots' probabilities (Huang et al., 2017). For
comparison, the same net
with the same epochs, rows and seed is trained with a single cosine cycle
(``n_snapshots=1``): one snapshot, i.e. a plain net.
"""

# %%
# Data
# ----
# The digits are small (1797 images of 8x8 pixels); the features are
# standardised with statistics of the training rows.
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot.metrics import negative_log_likelihood

torch.set_num_threads(2)

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0
)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
print(f"{len(X_train)} training rows, {len(X_test)} test rows, {X.shape[1]} features")

# %%
# One fit, five snapshots
# -----------------------
# :func:`~sksnapshot.default_classifier_net` is a skorch ``NeuralNetClassifier``
# around :class:`~sksnapshot.MLPModule` (SGD with Nesterov momentum). Its
# ``max_epochs`` is the budget of the whole ensemble and its ``lr`` the peak
# learning rate of every cycle. The module's ``n_features`` and ``n_classes``
# are filled in from the data. ``n_snapshots=5`` asks for five equal cycles, to
# show the mechanism; the default, ``n_snapshots="auto"``, lets the validation
# rows decide, and stays the single net when restarts would not pay (see the
# user guide's "How many cycles").
#
# ``selection="all"`` with ``weighting="uniform"`` is the plain average of all
# snapshots, as in the paper. (``weighting="optimize"`` would instead fit the
# weights on the validation rows; see :ref:`the selection example
# <sphx_glr_auto_examples_plot_disagreement.py>`.)
net = default_classifier_net().set_params(
    module__hidden_layer_sizes=(256, 256), lr=0.2, max_epochs=40, batch_size=64
)
clf = SnapshotEnsembleClassifier(net, n_snapshots=5, selection="all", weighting="uniform",
                                 random_state=0)
clf.fit(X_train, y_train)

print(f"optimizer steps: {clf.n_iter_}")
print(f"snapshots taken in epochs: {clf.snapshot_epochs_}")
print(f"members: {clf.members_.tolist()}, weights: {np.round(clf.weights_, 3).tolist()}")
print("validation accuracy of each snapshot:",
      np.round(clf.validation_scores_["accuracy"], 3).tolist())
print("validation log-loss of each snapshot:",
      np.round(clf.validation_scores_["log_loss"], 3).tolist())

# %%
# The same net with a single cycle
# --------------------------------
# ``n_snapshots=1`` anneals the learning rate once from ``lr`` to 0 over the
# same 40 epochs: an ordinary cosine-annealed net.
single = clone(clf).set_params(n_snapshots=1).fit(X_train, y_train)

for name, model in [("single net (1 cycle)", single), ("snapshot ensemble (5)", clf)]:
    proba = model.predict_proba(X_test)
    print(f"{name:24s} test accuracy {model.score(X_test, y_test):.3f}   "
          f"test log-loss {negative_log_likelihood(y_test, proba):.3f}")

# %%
# The training history
# --------------------
# ``clf.net_`` is the trained skorch net; its history has the losses on the
# training and validation rows (10 % of the training rows, held out by
# ``validation_fraction``) and the epochs in which a snapshot was taken.
history = clf.net_.history
epochs = history[:, "epoch"]
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(epochs, history[:, "train_loss"], label="training loss")
ax.plot(epochs, history[:, "valid_loss"], label="validation loss")
for i, epoch in enumerate(clf.snapshot_epochs_):
    ax.axvline(epoch, color="grey", linestyle=":", label="snapshot" if i == 0 else None)
ax.set_xlabel("epoch")
ax.set_ylabel("cross-entropy")
ax.set_yscale("log")
ax.legend()
ax.set_title("Five cycles in one training run")
fig.tight_layout()
plt.show()
