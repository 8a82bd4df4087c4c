"""
A CNN snapshot ensemble on images
=================================

Snapshot ensembles were made for convolutional nets on images (Huang et al.,
2017). The estimators take images as skorch does: a float32 array of shape
``(n_images, channels, height, width)`` goes to ``fit`` and ``predict`` as it
is, and the module receives batches of that shape. Here a small CNN with
BatchNorm learns scikit-learn's digits as 1x8x8 images; five snapshots of one
training run are compared with a single net trained for the same epochs from
the same initial weights.

Two more ways in, at the end: a torch ``TensorDataset`` (labels read from it,
``y=None``), and a training ``Dataset`` with random augmentation whose
validation rows are given un-augmented through ``X_valid``.
"""

# %%
# Images
# ------
# 1797 digits of 8x8 pixels with values 0-16, scaled to [0, 1] and given a
# channel axis.
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from skorch import NeuralNetClassifier
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot.metrics import expected_calibration_error, negative_log_likelihood

torch.set_num_threads(2)

digits = load_digits()
X = (digits.data / 16).astype(np.float32).reshape(-1, 1, 8, 8)
y = digits.target
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0
)
print(f"training images {X_train.shape}, test images {X_test.shape}")

# %%
# A small CNN
# -----------
# Two conv-BatchNorm-ReLU blocks with max pooling and a linear layer: about
# 1,500 parameters. Its ``n_classes`` argument is filled in by the estimator.


class CNN(nn.Module):
    def __init__(self, n_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2),                                  # 8 x 4 x 4
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),           # 16
        )
        self.head = nn.Linear(16, n_classes)

    def forward(self, X):
        return self.head(self.features(X))


# %%
# One fit, five snapshots
# -----------------------
# The skorch net's ``max_epochs`` is the budget of the whole ensemble and its
# ``lr`` the peak of each of the five cosine cycles. 10 % of the training
# images are held out (``validation_fraction``) to weight the snapshots.
net = NeuralNetClassifier(
    CNN, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
    optimizer__momentum=0.9, optimizer__nesterov=True, lr=0.1, max_epochs=20,
    batch_size=64, iterator_train__shuffle=True,
)
ensemble = SnapshotEnsembleClassifier(net, n_snapshots=5, random_state=0)
ensemble.fit(X_train, y_train)
print(f"snapshots taken in epochs {ensemble.snapshot_epochs_}, "
      f"weights {np.round(ensemble.weights_, 2).tolist()}")

# %%
# The same net, one cosine cycle
# ------------------------------
# ``n_snapshots=1`` with the same ``random_state`` trains the same module from
# the same initial weights on the same rows for the same epochs: a plain
# cosine-annealed net.
single = clone(ensemble).set_params(n_snapshots=1).fit(X_train, y_train)

for name, model in [("single net", single), ("snapshot ensemble", ensemble)]:
    proba = model.predict_proba(X_test)
    print(f"{name:18s} accuracy {model.score(X_test, y_test):.3f}  "
          f"log-loss {negative_log_likelihood(y_test, proba):.3f}  "
          f"ECE {expected_calibration_error(y_test, proba):.3f}")

# %%
# On these easy images one cosine-annealed CNN is already near its best, and
# the weights chosen on the 135 validation images may put almost everything on
# the last snapshot (printed above): then the ensemble is about the single net.
# ``benchmarks/images.py`` measures this over seeds and against a deep
# ensemble (``benchmarks/results/images.md``).

# %%
# Quality as snapshots are added
# ------------------------------
# :meth:`~sksnapshot.SnapshotEnsembleClassifier.staged_predict_proba` yields
# the ensemble of the first 1, 2, ... members.
staged = [negative_log_likelihood(y_test, p) for p in ensemble.staged_predict_proba(X_test)]
single_nll = negative_log_likelihood(y_test, single.predict_proba(X_test))
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, len(staged) + 1), staged, "o-", label="snapshot ensemble")
ax.axhline(single_nll, color="grey", linestyle="--", label="single net, same budget")
ax.set_xlabel("members (oldest first)")
ax.set_ylabel("test log-loss")
ax.legend()
fig.tight_layout()

# %%
# The least certain test images
# -----------------------------
# The ensemble's probability of its predicted class, for the eight test
# images it is least sure about.
proba = ensemble.predict_proba(X_test)
unsure = np.argsort(proba.max(axis=1))[:8]
fig, axes = plt.subplots(1, 8, figsize=(10, 2.2))
for ax, i in zip(axes, unsure):
    top = np.argsort(proba[i])[::-1][:2]
    ax.imshow(X_test[i, 0], cmap="gray_r")
    ax.set_title(f"true {y_test[i]}\n{top[0]}: {proba[i, top[0]]:.2f}\n"
                 f"{top[1]}: {proba[i, top[1]]:.2f}", fontsize=8)
    ax.axis("off")
fig.tight_layout()

# %%
# A torch Dataset, labels inside
# ------------------------------
# A ``torch.utils.data.Dataset`` of ``(image, label)`` items is taken as skorch
# takes it, with ``y=None``: the labels come from a ``TensorDataset``'s second
# tensor, a ``targets`` attribute (as torchvision's datasets have) or one pass
# over the items. The validation rows are index subsets of the Dataset; no
# image is copied.
train_set = TensorDataset(torch.from_numpy(X_train), torch.from_numpy(y_train))
from_dataset = clone(ensemble).fit(train_set)
print(f"classes read from the Dataset: {from_dataset.classes_.tolist()}")
print(f"test accuracy {from_dataset.score(X_test, y_test):.3f}")

# %%
# Random augmentation, clean validation rows
# ------------------------------------------
# A training Dataset that shifts and perturbs every image at random would
# also perturb the validation rows held out from it, and the snapshots would
# be weighted on augmented images. Hold the validation images out yourself and
# pass them un-augmented as ``X_valid, y_valid``: the ensemble then trains on
# every row of the training Dataset and scores the snapshots on the clean ones.


class RandomShift(Dataset):
    """Images shifted by up to one pixel in each direction, plus a little noise."""

    def __init__(self, images, labels):
        self.images = torch.from_numpy(images)
        self.targets = labels  # read by the estimator without loading an image

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        dy, dx = torch.randint(-1, 2, (2,)).tolist()
        image = torch.roll(self.images[i], shifts=(dy, dx), dims=(1, 2))
        return image + 0.05 * torch.randn_like(image), self.targets[i]


X_fit, X_valid, y_fit, y_valid = train_test_split(
    X_train, y_train, test_size=0.1, stratify=y_train, random_state=0
)
augmented = clone(ensemble).fit(RandomShift(X_fit, y_fit), X_valid=X_valid, y_valid=y_valid)
print("validation log-loss of each snapshot (clean images):",
      np.round(augmented.validation_scores_["log_loss"], 3).tolist())
print(f"test accuracy {augmented.score(X_test, y_test):.3f}, log-loss "
      f"{negative_log_likelihood(y_test, augmented.predict_proba(X_test)):.3f}")
plt.show()
