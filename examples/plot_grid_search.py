"""
Pipeline and GridSearchCV over the number of snapshots
======================================================

:class:`~sksnapshot.SnapshotEnsembleClassifier` is a scikit-learn estimator:
it goes into a :class:`~sklearn.pipeline.Pipeline` and its parameters, and the
wrapped skorch net's (``net__lr``, ``net__module__hidden_layer_sizes``, ...),
can be searched by :class:`~sklearn.model_selection.GridSearchCV`. Here the
number of snapshots is chosen by 3-fold cross-validated log-loss on the
digits data set.
"""

# %%
# The pipeline
# ------------
# Scaling happens inside the pipeline, so each cross-validation fold scales
# with its own training rows.
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net

torch.set_num_threads(2)

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0
)
net = default_classifier_net().set_params(
    module__hidden_layer_sizes=(128,), lr=0.1, max_epochs=20, batch_size=64
)
pipe = make_pipeline(StandardScaler(), SnapshotEnsembleClassifier(net, random_state=0))

# The net's parameters are nested under the ensemble's ``net`` parameter.
params = pipe.get_params()
for name in ["snapshotensembleclassifier__n_snapshots",
             "snapshotensembleclassifier__net__lr",
             "snapshotensembleclassifier__net__module__hidden_layer_sizes"]:
    print(f"{name} = {params[name]}")

# %%
# The search
# ----------
# Each candidate is one training run per fold, whatever its number of
# snapshots: the budget is the net's ``max_epochs``.
search = GridSearchCV(
    pipe,
    {"snapshotensembleclassifier__n_snapshots": [1, 2, 4]},
    cv=3,
    scoring={"accuracy": "accuracy", "log_loss": "neg_log_loss"},
    refit="log_loss",
)
search.fit(X_train, y_train)

results = search.cv_results_
n_snapshots = np.array(results["param_snapshotensembleclassifier__n_snapshots"], dtype=int)
for i, m in enumerate(n_snapshots):
    print(f"n_snapshots={m}: CV accuracy {results['mean_test_accuracy'][i]:.3f} "
          f"± {results['std_test_accuracy'][i]:.3f}, CV log-loss "
          f"{-results['mean_test_log_loss'][i]:.3f} ± {results['std_test_log_loss'][i]:.3f}")
print("best:", search.best_params_)
# ``search.score`` uses the refit metric, the (negated) log-loss.
print(f"refitted best pipeline: test log-loss {-search.score(X_test, y_test):.3f}, "
      f"test accuracy {search.best_estimator_.score(X_test, y_test):.3f}")

# %%
# Cross-validated scores vs number of snapshots
# ---------------------------------------------
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].errorbar(n_snapshots, results["mean_test_accuracy"],
                 yerr=results["std_test_accuracy"], marker="o", capsize=3)
axes[0].set_ylabel("CV accuracy")
axes[1].errorbar(n_snapshots, -results["mean_test_log_loss"],
                 yerr=results["std_test_log_loss"], marker="o", capsize=3, color="C1")
axes[1].set_ylabel("CV log-loss")
for ax in axes:
    ax.set_xlabel("n_snapshots")
    ax.set_xticks(n_snapshots)
fig.tight_layout()
plt.show()
