"""What export and distillation ask of a fitted estimator: the contract, and its hooks.

``_export.py`` and ``_distill.py`` never read an estimator: ``to_torch()`` hands the
former an ``EnsembleSpec`` (``_ensemble_spec``), ``distill()`` the latter a
``DistillationSource`` (``_distillation_source``). What differs between the
estimators are the hooks below, declared by each subclass in a section of its own.
:class:`~sksnapshot._base.BaseSnapshotEnsemble` inherits this mixin.
"""

import numpy as np
from sklearn.base import clone

from ._distill import DistillationSource
from ._kernel import EnsembleSpec

__all__ = ["ServingContract"]


class ServingContract:
    """Export and distillation of a fitted ensemble through the estimator's own steps."""

    # The fitted attributes that describe the data, which a distilled student inherits.
    _data_attributes = ("n_features_in_", "feature_names_in_", "sample_shape_")

    def _data_kwargs(self):
        """The module arguments the fitted targets imply (``n_classes`` or ``n_outputs``)."""
        raise NotImplementedError

    def _prediction_head(self, return_std=False):
        """The kernel head of the estimator's prediction (``predict_proba`` or ``predict``)."""
        raise NotImplementedError

    def _target_head(self):
        """The kernel head of the distillation targets: by default the prediction's."""
        return self._prediction_head()

    def _soft_targets(self, X):
        """The distillation targets on in-memory rows, float32 ``(n_rows, width)``."""
        raise NotImplementedError

    def _student_criterion(self, net):
        """The skorch criterion that trains a student's ``net`` on the soft targets."""
        raise NotImplementedError

    def _fit_soft_calibration(self, X_valid, targets):
        """The calibration fitted to the soft targets of ``X_valid`` (not to labels)."""
        raise NotImplementedError

    def _ensemble_spec(self, make_head, *args):
        """The predicting states, their weights and the head ``make_head(*args)``.

        The head is made after the fitted check, from the fitted attributes.
        """
        states, weights = self._combined_states()  # checks that it is fitted
        return EnsembleSpec(self.net_, states, [float(w) for w in weights], make_head(*args),
                            getattr(self, "sample_shape_", None))

    def _distillation_source(self):
        """What :func:`~sksnapshot._distill.distill_ensemble` asks of this estimator."""
        return DistillationSource(
            validate=self._validate_X_predict,
            soft_targets=self._soft_targets,
            spec=lambda: self._ensemble_spec(self._target_head),
            student_net=self._student_net,
            criterion=self._student_criterion,
            fit_student=self._fit_student,
            random_state=self.random_state,
            verbose=self.verbose,
        )

    def _student_net(self):
        """An unfitted net for a student, built as ``fit`` built this estimator's."""
        data_kwargs = self._data_kwargs()
        if hasattr(self, "n_features_in_"):  # fitted on 2-D rows
            data_kwargs["n_features"] = self.n_features_in_
        return self._net_for_data(data_kwargs)

    def _fit_student(self, net, record, X_valid=None, y_valid=None, soft_targets=None):
        """A new estimator of this class fitted from one trained ``net`` and its record.

        The student has this estimator's settings and data facts
        (``_data_attributes``), one snapshot and one member. It goes through
        the steps of ``fit`` after training: keep (``_keep``), select (its
        one member, with weight 1; no validation scores), calibrate
        (``_fit_calibration`` against the labels ``y_valid`` of ``X_valid``
        where given, else ``_fit_soft_calibration`` against ``soft_targets``).
        """
        student = clone(self).set_params(
            n_snapshots=1, n_members=None, selection="all", combine="proba", n_runs=1,
            bootstrap=False, checkpoint_dir=None)
        for name in self._data_attributes:
            if hasattr(self, name):
                setattr(student, name, getattr(self, name))
        student._keep([(net, record)])
        student.members_, student.weights_ = np.array([0]), np.array([1.0])
        student.averaged_state_ = None
        for name in student._validation_attributes:  # chosen on no validation rows
            setattr(student, name, None)
        # 1.0 without rows or calibration; else the uncalibrated predictions come first.
        setattr(student, student._calibration_attribute, 1.0)
        if X_valid is not None and student._calibration() is not None:
            setattr(student, student._calibration_attribute,
                    student._fit_calibration(X_valid, student._encode_targets(y_valid))
                    if y_valid is not None
                    else student._fit_soft_calibration(X_valid, soft_targets))
        return student
