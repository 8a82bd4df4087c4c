"""
Uncertainty you can act on: epistemic scores and conformal prediction
=====================================================================

A snapshot ensemble's members disagree most where the training data said
least. :meth:`~sksnapshot.SnapshotEnsembleClassifier.predict_uncertainty`
splits the entropy of the ensemble's prediction into what every member finds
ambiguous (aleatoric) and what the members disagree on (the mutual
information, epistemic). Conformal prediction with MAPIE (``pip install
'sksnapshot[conformal]'``) turns the ensemble's outputs into prediction sets
and intervals with a coverage guarantee on new rows from the same
distribution.

The rows that calibrate the conformal predictor must be rows the ensemble
neither trained on nor chose its members on (its validation rows are a part
of its training rows): here a separate third of the data.
"""

# %%
# Digits 0-5 in training, digits 6-9 as rows the ensemble never saw
# ------------------------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from mapie.classification import SplitConformalClassifier
from mapie.regression import SplitConformalRegressor
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sksnapshot import (
    SnapshotEnsembleClassifier,
    SnapshotEnsembleRegressor,
    default_classifier_net,
    default_regressor_net,
)

torch.set_num_threads(2)
X, y = load_digits(return_X_y=True)
X = X / 16.0  # pixels in [0, 1]
seen = y <= 5
X_train, X_rest, y_train, y_rest = train_test_split(
    X[seen], y[seen], test_size=0.5, random_state=0, stratify=y[seen])
X_conf, X_test, y_conf, y_test = train_test_split(
    X_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest)
X_unseen = X[~seen]
print(f"train {len(X_train)}, conformalize {len(X_conf)}, test {len(X_test)}, "
      f"unseen classes {len(X_unseen)}")

# Equal member weights: weights optimised on the ~50 validation rows held out
# of so few training rows tend to put everything on one snapshot, and one
# member has no one to disagree with (its mutual information is zero).
net = default_classifier_net().set_params(
    module__hidden_layer_sizes=(128,), lr=0.05, max_epochs=40, batch_size=64)
clf = SnapshotEnsembleClassifier(net, n_snapshots=5, weighting="uniform", random_state=0)
clf.fit(X_train, y_train)
print(f"test accuracy {clf.score(X_test, y_test):.3f}; members {clf.members_.tolist()}, "
      f"weights {np.round(clf.weights_, 2).tolist()}")

# %%
# Aleatoric and epistemic uncertainty
# -----------------------------------
# ``total = aleatoric + epistemic`` row by row. Every score is larger on the
# digits of unseen classes than on test digits of the training classes; the
# AUROC says how well each tells them apart (1 is perfect, 0.5 chance). The
# snapshots of one run are more alike than independently trained nets, so
# their mutual information is small and, here, the total entropy is the
# better detector (``benchmarks/results/ood.md`` has more cases).
from sklearn.metrics import roc_auc_score  # noqa: E402

u_in, u_out = clf.predict_uncertainty(X_test), clf.predict_uncertainty(X_unseen)
is_out = np.r_[np.zeros(len(X_test)), np.ones(len(X_unseen))]
for score in ("total", "aleatoric", "epistemic", "disagreement"):
    auroc = roc_auc_score(is_out, np.r_[u_in[score], u_out[score]])
    print(f"{score:>12}: mean {u_in[score].mean():.3f} (classes 0-5) vs "
          f"{u_out[score].mean():.3f} (classes 6-9); AUROC {auroc:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, score, title in [(axes[0], "total", "predictive entropy (total)"),
                         (axes[1], "epistemic", "mutual information (epistemic)")]:
    bins = np.linspace(0, max(u_in[score].max(), u_out[score].max()), 30)
    ax.hist(u_in[score], bins=bins, alpha=0.6, density=True, label="test digits 0-5")
    ax.hist(u_out[score], bins=bins, alpha=0.6, density=True, label="unseen digits 6-9")
    ax.set_xlabel(f"{title} (nats)")
    ax.set_yscale("log")
axes[0].set_ylabel("density")
axes[0].legend()
plt.tight_layout()
plt.show()

# %%
# Rejecting the most uncertain rows
# ---------------------------------
# Accuracy on the test rows kept when the 10 % most uncertain are set aside.
keep = np.argsort(u_in.total)[: int(0.9 * len(X_test))]
predicted = clf.classes_[u_in.proba.argmax(axis=1)]
print(f"all rows: {np.mean(predicted == y_test):.3f}, "
      f"90 % most certain: {np.mean(predicted[keep] == y_test[keep]):.3f}")

# %%
# Conformal prediction sets
# -------------------------
# ``prefit=True``: MAPIE uses the fitted ensemble as it is and calibrates on
# the separate conformalization rows. With the "aps" score (adaptive sets,
# never empty) the sets hold the true label of at least 90 % of new rows from
# the same distribution (this default variant is conservative). On rows of
# unseen classes no set can hold the label, but the sets are larger: the
# ensemble's doubt shows in their size. (The "lac" score gives the smallest
# sets on average and exact coverage, but may return empty sets.)
mapie = SplitConformalClassifier(clf, confidence_level=0.9, conformity_score="aps",
                                 prefit=True)
mapie.conformalize(X_conf, y_conf)
_, sets_in = mapie.predict_set(X_test)
_, sets_out = mapie.predict_set(X_unseen)
sets_in, sets_out = sets_in[:, :, 0], sets_out[:, :, 0]
covered = sets_in[np.arange(len(y_test)), np.searchsorted(clf.classes_, y_test)]
print(f"coverage on test rows {covered.mean():.3f} (target >= 0.9); mean set size "
      f"{sets_in.sum(1).mean():.2f} (classes 0-5) vs {sets_out.sum(1).mean():.2f} (6-9)")

sizes = np.arange(len(clf.classes_) + 1)
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.bar(sizes - 0.2, np.bincount(sets_in.sum(1), minlength=len(sizes)) / len(sets_in),
       width=0.4, label="test digits 0-5")
ax.bar(sizes + 0.2, np.bincount(sets_out.sum(1), minlength=len(sizes)) / len(sets_out),
       width=0.4, label="unseen digits 6-9")
ax.set_xlabel("size of the 90 % prediction set")
ax.set_ylabel("share of rows")
ax.legend()
plt.tight_layout()
plt.show()

# %%
# Conformal intervals around the regressor
# ----------------------------------------
# Mean-variance members give ``predict(X, return_std=True)``; MAPIE's
# "std_normalized" score divides residuals by that standard deviation, so the
# calibrated intervals widen where the noise grows, while the "absolute"
# score gives one width everywhere. Both cover about 90 % of new rows.
rng = np.random.RandomState(0)
x = rng.uniform(-3, 3, size=(1200, 1))
y_reg = np.sin(2 * x[:, 0]) + x[:, 0] / 2 + rng.normal(scale=0.1 + 0.4 * np.abs(x[:, 0]))
x_train, x_rest, yr_train, yr_rest = train_test_split(x, y_reg, test_size=0.6, random_state=0)
x_conf, x_test, yr_conf, yr_test = train_test_split(x_rest, yr_rest, test_size=0.5,
                                                    random_state=0)
net = default_regressor_net(gaussian=True).set_params(
    module__hidden_layer_sizes=(64, 64), lr=0.01, max_epochs=40, batch_size=32)
reg = SnapshotEnsembleRegressor(net, n_snapshots=5, random_state=0).fit(x_train, yr_train)

# Where the training rows are dense, the members agree on the mean: almost all
# of the predictive variance is the noise they predict (aleatoric).
u = reg.predict_uncertainty(x_test)
print(f"mean variance: aleatoric {u.aleatoric.mean():.4f}, epistemic {u.epistemic.mean():.4f}")

grid = np.linspace(-3, 3, 200)[:, None]
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
for ax, score in zip(axes, ["absolute", "std_normalized"]):
    mapie = SplitConformalRegressor(reg, confidence_level=0.9, conformity_score=score,
                                    prefit=True).conformalize(x_conf, yr_conf)
    _, pis = mapie.predict_interval(x_test)
    coverage = np.mean((pis[:, 0, 0] <= yr_test) & (yr_test <= pis[:, 1, 0]))
    mean, pis_grid = mapie.predict_interval(grid)
    ax.scatter(x_test[:, 0], yr_test, s=4, alpha=0.3, color="grey")
    ax.plot(grid[:, 0], mean, color="C0")
    ax.fill_between(grid[:, 0], pis_grid[:, 0, 0], pis_grid[:, 1, 0], alpha=0.3, color="C0")
    ax.set_title(f'conformity score "{score}"\ncoverage {coverage:.3f} (target 0.9), '
                 f"mean width {np.mean(pis[:, 1, 0] - pis[:, 0, 0]):.2f}")
    ax.set_xlabel("x")
axes[0].set_ylabel("y")
plt.tight_layout()
plt.show()
