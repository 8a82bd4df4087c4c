"""The estimators' numpydoc lists every parameter and every fitted attribute, and nothing else."""

import re

import numpy as np
import pandas as pd
import pytest

from sksnapshot import SnapshotEnsembleClassifier, SnapshotEnsembleRegressor

from .conftest import tiny_net


def _documented(doc, section):
    """Names of a numpydoc section's entries (``a, b : type`` gives a and b)."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.strip() == section and lines[i + 1].strip().startswith("---"))
    names = []
    for i in range(start + 2, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and lines[i + 1].strip().startswith("---") and line.strip():
            break  # the next section
        match = re.match(r"^    (\w[\w, \\]*?)( :|$)", line)
        if match and not line.startswith("     "):
            names += [n.strip(" \\") for n in match.group(1).split(",") if n.strip(" \\")]
    return set(names)


@pytest.mark.parametrize("Estimator", [SnapshotEnsembleClassifier, SnapshotEnsembleRegressor])
def test_docstring_names_every_parameter_and_fitted_attribute(Estimator, data):
    X, y = data
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])  # feature names too
    net = None
    if Estimator is SnapshotEnsembleClassifier:
        net = tiny_net(max_epochs=2)
    else:
        y = y.astype(np.float64)
    estimator = Estimator(net, n_snapshots=2, random_state=0).fit(X, y)
    doc = Estimator.__doc__
    assert _documented(doc, "Parameters") == set(estimator.get_params(deep=False))
    fitted = {name for name in vars(estimator) if name.endswith("_") and not name.startswith("_")}
    assert _documented(doc, "Attributes") == fitted
