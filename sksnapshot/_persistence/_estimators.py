"""The estimators a file may name, and the facts each states about itself for persistence.

Persistence knows no estimator by a name string and reads no private state: each
estimator class states, as class attributes and methods,

- ``_persistence_kind``: its rows of the field table (``"classifier"`` or ``"regressor"``);
- ``_saved_criteria``: the criterion classes it may be saved with (a criterion
  decides how outputs become predictions, so a file may choose only these);
- ``_default_module`` and ``_default_net(module)``: the library's own module, and
  the skorch net the loaded estimator gets around the file's module;
- ``_output_width()`` (on a fitted estimator: the width and why) and ``_output_width_words``:
  the module's output width, and the field and words a refusal names it with;
- its fitted attributes, under the names the field table lists (the regressor's
  record of 1-D targets as the ``single_output_`` property).
"""

from .._classifier import SnapshotEnsembleClassifier
from .._regressor import SnapshotEnsembleRegressor

#: The estimator classes, by the name a file gives them.
ESTIMATORS = {cls.__name__: cls for cls in (SnapshotEnsembleClassifier,
                                            SnapshotEnsembleRegressor)}


def criteria_of(estimator_class):
    """{name: criterion class} an estimator may be saved with."""
    return {criterion.__name__: criterion for criterion in estimator_class._saved_criteria}
