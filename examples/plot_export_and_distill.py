"""
Serving: export to ONNX, and distil the ensemble into one net
=============================================================

A fitted snapshot ensemble predicts inside Python, through scikit-learn and
skorch, at one forward pass per member. Two ways out:

- ``to_torch()`` turns it into one plain :class:`torch.nn.Module` computing
  exactly ``predict_proba``; ``torch.onnx.export`` makes an ONNX file of it,
  which onnxruntime (or Triton, or a phone) runs without Python's stack;
- ``distill(X)`` trains one student net on the ensemble's calibrated
  probabilities, so serving costs one forward pass.
"""

# %%
# An ensemble and the single net it competes with
# ------------------------------------------------
# The digits, standardised; an MLP trained for 30 epochs, once through five
# cosine cycles (the ensemble) and once through one (the single net). Both
# fit their temperature on the 10 % of the training rows they hold out.
import time

import matplotlib.pyplot as plt
import numpy as np
import onnxruntime
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
from sksnapshot.metrics import negative_log_likelihood

torch.set_num_threads(2)

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train = scaler.transform(X_train).astype(np.float32)
X_test = scaler.transform(X_test).astype(np.float32)

net = default_classifier_net().set_params(module__hidden_layer_sizes=(256, 256), lr=0.05,
                                          max_epochs=30)
ensemble = SnapshotEnsembleClassifier(net, n_snapshots=5, random_state=0).fit(X_train, y_train)
single = SnapshotEnsembleClassifier(net, n_snapshots=1, random_state=0).fit(X_train, y_train)

# %%
# Export: one torch module, then ONNX
# -----------------------------------
# The module holds copies of the five members, their weights and the
# temperature; it takes a float32 tensor and returns the probabilities.
module = ensemble.to_torch()
proba = module(torch.from_numpy(X_test)).detach().numpy()
print("max |to_torch - predict_proba|:",
      float(np.abs(proba - ensemble.predict_proba(X_test)).max()))

# %%
# ``torch.onnx.export`` traces it with a dynamic batch dimension (the program
# runs on any number of rows); onnxruntime then needs neither torch nor skorch.
batch = torch.export.Dim("batch")
program = torch.onnx.export(module, (torch.from_numpy(X_test[:8]),),
                            dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
onnx_proba = session.run(None, {input_name: X_test})[0]
print("max |onnxruntime - predict_proba|:",
      float(np.abs(onnx_proba - ensemble.predict_proba(X_test)).max()))
# program.save("ensemble.onnx") writes the file to ship.

# %%
# Distillation: one net that predicts like the ensemble
# -----------------------------------------------------
# The student is the same MLP, trained on the ensemble's probabilities for the
# training rows (no labels needed: unlabelled rows would do as well), stopped
# early on held-out rows, on which it also fits its own temperature. It is a
# fitted :class:`~sksnapshot.SnapshotEnsembleClassifier` with one member: it
# saves, loads and exports like the ensemble.
student = ensemble.distill(X_train)
print(f"student: {len(student.snapshots_)} member, trained {len(student.net_.history)} "
      f"epochs, best epoch {student.snapshot_epochs_[0]}, temperature "
      f"{student.temperature_:.2f}")


def predict_ms(estimator, repeats=20):
    start = time.perf_counter()
    for _ in range(repeats):
        estimator.predict_proba(X_test)
    return 1000 * (time.perf_counter() - start) / repeats


rows = {}
for name, estimator in [("single net", single), ("ensemble (5)", ensemble),
                        ("student", student)]:
    p = estimator.predict_proba(X_test)
    rows[name] = (negative_log_likelihood(y_test, p), np.mean(p.argmax(1) == y_test),
                  predict_ms(estimator))
    print(f"{name:>13}: log-loss {rows[name][0]:.3f}, accuracy {rows[name][1]:.3f}, "
          f"predict_proba {rows[name][2]:.1f} ms")

# %%
# On this small task the numbers move with the seed; ``benchmarks/distill.py``
# measures the student over three seeds on six tasks
# (``benchmarks/results/distill.md``).
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
names = list(rows)
axes[0].bar(names, [rows[n][0] for n in names], color=["0.6", "tab:blue", "tab:green"])
axes[0].set_ylabel("test log-loss")
axes[1].bar(names, [rows[n][2] for n in names], color=["0.6", "tab:blue", "tab:green"])
axes[1].set_ylabel("predict_proba time (ms)")
fig.tight_layout()
plt.show()
