"""
The learning-rate schedule and the snapshots
============================================

:func:`sksnapshot.plotting.plot_lr_schedule` draws a schedule before training
(from its arguments) or after (from the learning rates a fitted ensemble
recorded, one per optimizer step), with a marker at every step after which a
snapshot was taken: the last step of each cycle.
"""

# %%
# Planning, without training
# --------------------------
# 40 epochs of 19 batches are 760 optimizer steps. The cosine schedule restarts
# at the peak learning rate in each of the five cycles; the "linear" schedule
# (fast geometric ensembling) decays linearly during the first half of the
# budget, then runs five short triangular cycles.
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot.plotting import plot_lr_schedule

torch.set_num_threads(2)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
for ax, schedule in zip(axes, ["cosine", "linear"]):
    plot_lr_schedule(schedule=schedule, n_iter=760, n_snapshots=5, lr=0.2, ax=ax)
    ax.set_title(f'schedule="{schedule}" (planned)')
fig.tight_layout()

# %%
# What training recorded
# ----------------------
# The ensemble sets the learning rate before every batch and records it in
# the skorch history. The digits' 1797 rows less 10 % validation rows give 26
# batches of 64 per epoch here, so 10 epochs are 260 steps.
X, y = load_digits(return_X_y=True)
X = StandardScaler().fit_transform(X)
net = default_classifier_net().set_params(
    module__hidden_layer_sizes=(128,), lr=0.2, max_epochs=10, batch_size=64
)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
for ax, schedule in zip(axes, ["cosine", "linear"]):
    clf = SnapshotEnsembleClassifier(net, n_snapshots=5, schedule=schedule,
                                     random_state=0).fit(X, y)
    plot_lr_schedule(clf, ax=ax)
    ax.set_title(f'schedule="{schedule}" (recorded)')
    print(f"{schedule}: {clf.n_iter_} steps, snapshots in epochs {clf.snapshot_epochs_}")
    print("  learning rate at the end of each epoch:",
          np.round(clf.net_.history[:, "lr"], 4).tolist())
    print("  cycle of each epoch:", clf.net_.history[:, "cycle"])
fig.tight_layout()
plt.show()
