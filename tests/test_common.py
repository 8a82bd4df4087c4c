"""scikit-learn's own estimator checks, on the default constructor and a tiny net."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sksnapshot import SnapshotEnsembleClassifier

from .conftest import tiny_net

ESTIMATORS = [
    SnapshotEnsembleClassifier(),
    SnapshotEnsembleClassifier(tiny_net(max_epochs=20), n_snapshots=2, validation_fraction=0.0,
                               selection="last", weighting="uniform"),
]


# No expected failures: every check must pass.
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
