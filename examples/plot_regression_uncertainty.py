"""
Regression with uncertainty from one training run
=================================================

:class:`~sksnapshot.SnapshotEnsembleRegressor` trains one net through several
learning-rate cycles and keeps a snapshot at the end of each. Its
``predict(X, return_std=True)`` returns the spread of the snapshots' predictions;
with mean-variance members (``default_regressor_net(gaussian=True)``) the
standard deviation also includes the noise each member predicts, so it grows
where the data are noisier.
"""

# %%
# A one-dimensional task whose noise grows with ``|x|``.
import matplotlib.pyplot as plt
import numpy as np
import torch

from sksnapshot import SnapshotEnsembleRegressor, default_regressor_net

torch.set_num_threads(2)
rng = np.random.RandomState(0)
x = rng.uniform(-3, 3, size=(600, 1))
y = np.sin(2 * x[:, 0]) + x[:, 0] / 2 + rng.normal(scale=0.1 + 0.4 * np.abs(x[:, 0]))
grid = np.linspace(-3.5, 3.5, 300)[:, None]

# %%
# The same net, the same budget: squared-error members and mean-variance members.
models = {}
for name, gaussian in [("squared error", False), ("mean-variance (Gaussian NLL)", True)]:
    net = default_regressor_net(gaussian=gaussian).set_params(
        module__hidden_layer_sizes=(64, 64), lr=0.01, max_epochs=60, batch_size=32)
    models[name] = SnapshotEnsembleRegressor(net, n_snapshots=5, random_state=0).fit(x, y)

# %%
# Mean ± 2 standard deviations of each ensemble. The squared-error members
# agree with each other, so their spread is thin everywhere; the mean-variance
# members widen the band where the noise is larger.
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
for ax, (name, model) in zip(axes, models.items()):
    mean, std = model.predict(grid, return_std=True)
    ax.scatter(x[:, 0], y, s=4, alpha=0.3, color="grey")
    ax.plot(grid[:, 0], mean, color="C0")
    ax.fill_between(grid[:, 0], mean - 2 * std, mean + 2 * std, alpha=0.3, color="C0")
    inside = np.mean(np.abs(y - model.predict(x)) <= 2 * model.predict(x, return_std=True)[1])
    ax.set_title(f"{name}\ntraining rows inside ±2σ: {inside:.0%}")
    ax.set_xlabel("x")
axes[0].set_ylabel("y")
plt.tight_layout()
plt.show()
