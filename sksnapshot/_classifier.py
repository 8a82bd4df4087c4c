"""SnapshotEnsembleClassifier."""

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.utils import Bunch
from sklearn.utils.multiclass import check_classification_targets
from skorch import NeuralNetClassifier

from ._base import DEFAULT_NET_PARAMS, BaseSnapshotEnsemble
from ._calibration import fit_temperature
from ._compat import StrOptions
from ._distill import SoftTargetCrossEntropy, distill_ensemble
from ._export import EnsembleClassifierModule, to_torch_module
from ._kernel import ProbaHead, log_proba, normalise
from ._modules import MLPModule
from .metrics import disagreement_matrix, uncertainty_decomposition
from .selection import member_scores
from .selection._classification import LogLoss

__all__ = ["SnapshotEnsembleClassifier", "default_classifier_net"]


def default_classifier_net(module=MLPModule):
    """The skorch net trained when only a module (or nothing) is given.

    SGD with Nesterov momentum 0.9, peak learning rate 0.1, 50 epochs of
    batches of 128 shuffled rows, cross-entropy on the module's logits, silent.
    The learning rate was chosen on a swept grid: the user guide has the
    measurement (``python -m benchmarks.quality --part sweep``).

    Parameters
    ----------
    module : torch.nn.Module subclass or instance, default=MLPModule
        The module to train; it must return one logit per class.

    Returns
    -------
    net : skorch.NeuralNetClassifier
        An uninitialised net, to be used as the template of an ensemble.

    Examples
    --------
    >>> net = default_classifier_net()
    >>> net.max_epochs, net.lr
    (50, 0.1)
    """
    return NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss, lr=0.1,
                               **DEFAULT_NET_PARAMS)


class SnapshotEnsembleClassifier(ClassifierMixin, BaseSnapshotEnsemble):
    """Snapshot ensemble of a skorch classifier: train 1, get M for free.

    One training run of the net, with its learning rate following ``n_snapshots``
    cosine cycles with warm restarts (Huang et al., 2017), leaves a snapshot of
    the weights at the end of each cycle. ``predict_proba`` averages the softmax
    outputs of the chosen snapshots.

    The net's own ``max_epochs`` is the whole budget and its ``lr`` the peak
    learning rate of every cycle: the ensemble costs what one net costs.

    Parameters
    ----------
    net : skorch.NeuralNetClassifier, torch.nn.Module subclass or instance, default=None
        The net to train. A ``NeuralNetClassifier`` is a template: it is
        cloned in ``fit`` and never changed. A module (class or instance) is
        wrapped in :func:`default_classifier_net`, so it must return logits.
        None trains :class:`MLPModule` in that default net.

        The net's criterion, optimizer and its settings, batch size, iterators,
        device and callbacks are honoured, except that its ``train_split`` is
        replaced by the ensemble's own validation rows (see
        ``validation_fraction``), its ``verbose`` by the ensemble's, and it may
        not carry its own ``LRScheduler``. If the module class has constructor
        parameters named ``n_features`` or ``n_classes`` that the net does not
        set, they are filled in with the width of ``X`` and the number of classes.
    n_snapshots : "auto" or int, default="auto"
        Number of learning-rate cycles M, hence of snapshots. An integer
        splits the ``max_epochs * batches_per_epoch`` optimizer steps into M
        cycles of equal length (to within one step). "auto" (with the cosine
        schedules) lets the validation rows decide: training starts as the
        single net's one cosine over the whole budget and is cut into cycles
        only when the validation loss stops improving early enough for at
        least two more cycles as long as the epochs it took; then the rest of
        the budget becomes up to 5 restart cycles of whole epochs, and a
        restart whose snapshot's validation loss is over 1.5 times the best
        earlier snapshot's is refused (its best predecessor restored, the peak
        learning rate halved). A short budget, or fewer than 50 validation
        rows, gives one cycle: exactly the single net. With the "linear" schedule or a
        callable, "auto" means 5. The user guide (:ref:`auto-cycles`) has the
        rule and its measurements.
    n_members : int, default=None
        How many snapshots to predict with. For ``selection="last"`` the last
        ``n_members`` (None: all); for "diverse" exactly ``n_members`` and for
        "greedy" at most ``n_members`` distinct ones (None: as many as lower the
        validation log-loss); must be None for "all".
    min_lr : float, default=0.0
        The learning rate every cycle anneals towards.
    schedule : {"cosine", "cosine_warmup", "linear"} or callable, default="cosine"
        The learning rate of every training step. "cosine": cosine annealing
        with warm restarts over ``n_snapshots`` equal cycles, a snapshot at the
        end of each (:func:`~sksnapshot.schedules.cosine_annealing_lr`).
        "cosine_warmup": the same cycles and snapshots, but every restart
        ramps the learning rate up over a quarter of its cycle instead of
        jumping to it (:func:`~sksnapshot.schedules.cosine_warmup_lr`). "linear": fast
        geometric ensembling (Garipov et al., 2018): a linear decay over the
        first half of the budget, then ``n_snapshots`` short triangular cycles,
        a snapshot at each low point (:func:`~sksnapshot.schedules.linear_cycles_lr`). A
        callable ``schedule(t, n_iter, n_cycles, lr, min_lr)`` returns the
        learning rates of the steps ``t`` (an array); snapshots are then taken
        at the ends of ``n_snapshots`` equal cycles.
    selection : {"all", "last", "diverse", "greedy"}, default="all"
        How members are chosen on the validation rows. "all": every snapshot;
        "last": the last ``n_members`` snapshots (Huang et al.); "diverse":
        accurate snapshots that disagree with each other
        (:func:`~sksnapshot.selection.select_diverse`); "greedy": forward selection with
        replacement that lowers the validation log-loss of the average
        (Caruana et al., 2004). Without validation rows, the last
        ``n_members`` snapshots are used with equal weights.
    weighting : {"auto", "shrink", "optimize", "uniform"}, default="auto"
        How the chosen members are averaged (``weights_``), from the
        validation rows. "shrink" (what "auto" means here) minimises the
        validation log-loss of the weighted average plus a Dirichlet prior
        worth 10 validation rows whose mean is equal weights on the last two
        chosen members (:func:`~sksnapshot.selection.shrink_weights`): with a few dozen
        rows the weights stay near the prior, with thousands they reach the
        optimum. "optimize" minimises the validation log-loss alone (on small
        data it puts almost all weight on one snapshot picked by noise).
        "uniform" gives equal weights ("greedy": its selection counts).

        Why "shrink" is the default: :ref:`choosing-members` in the user
        guide (``python -m benchmarks.small_data``).
    combine : {"proba", "weights"}, default="proba"
        "proba" averages the members' predicted probabilities. "weights"
        averages the members' weights into one model (stochastic weight
        averaging, Izmailov et al., 2018) and re-estimates its BatchNorm
        statistics on the training rows, so predicting costs one forward pass.
        Weights are only averaged within one run (independent runs end in
        different minima, whose average is no model): with ``n_runs > 1``,
        the members of the run of the heaviest member are kept, their weights
        renormalised, and ``members_`` and ``weights_`` say so.
    calibration : {"auto", "temperature", "smoothed_temperature"} or None, \
            default="auto"
        "temperature" (what "auto" means here) fits one temperature ``T`` on
        the validation rows after combining, and returns
        ``softmax(log(p) / T)`` of the combined probabilities ``p``
        (``temperature_``); the predicted labels are unchanged. A prior holds
        ``log T`` near 0, so that a handful of rows cannot sharpen the
        ensemble to certainty. "smoothed_temperature" fits ``T`` to the labels
        smoothed by the rule of succession (each of ``n`` rows puts
        ``1 - 1 / (n + 2)`` on its label; :func:`sksnapshot.calibration.fit_temperature`
        with ``smoothing="auto"``): a few rows that an over-confident net
        gets right then soften it. It helps nets trained long on few rows,
        whose mistakes are confident, and costs accurate nets whose mistakes
        are not (user guide, "One run's temperature from a handful of rows").
        None keeps the plain weighted average.
    validation_fraction : float in [0, 1), default=0.1
        Share of the training rows held out (stratified) and given to skorch as
        its validation set, so ``valid_loss`` and ``valid_acc`` appear in the
        history. 0 trains on every row. Ignored when ``fit`` is given
        ``X_valid``.
    checkpoint_dir : str, path-like or None, default=None
        A directory where every snapshot is written the moment it is taken,
        and the training progress at every epoch end. Calling ``fit`` again
        with the same data and settings resumes exactly where an interrupted
        fit stopped; a directory holding another run (other data or settings)
        is refused, and so is a second fit using it at the same time. With
        ``n_runs > 1`` every run has its own subdirectory (``run_000/``,
        ``run_001/``, ...) and resumes on its own; runs finished before an
        interruption are not trained again.
    n_runs : int, default=1
        Independent training runs, each from its own initialisation (a seed
        drawn from ``random_state``) through ``n_snapshots`` cycles: the
        snapshots of all runs form one pool, which ``selection``,
        ``weighting`` and ``combine`` work on. K runs cost K times the
        training of one. ``n_runs=1`` is the single run of the paper. Which
        rows each run trains on is ``bootstrap``'s; what each budget buys is
        in the user guide ("What each budget buys on small data").
    bootstrap : {"auto", "folds"} or bool, default="auto"
        Which rows each run trains on. False: all runs train on the same
        rows and share one validation split (``validation_fraction``).
        True: each run trains on a bootstrap sample of those rows (as many
        rows, drawn with replacement from the run's seed); the validation
        rows are the same for every run and never sampled. "folds"
        (cross-fitted runs): the rows are split into ``n_runs`` stratified
        folds; run ``r`` trains on the other folds and uses fold ``r`` as its
        validation rows, so every row trains ``n_runs - 1`` runs and is
        predicted out of fold once. The members (matched across runs by
        their place from the end), their weights and the temperature are
        then fitted on all rows' out-of-fold predictions, and each run's
        mixture is tempered before the runs are averaged (``pooling_``);
        ``validation_fraction`` is not used, and ``X_valid`` is refused.
        Each class needs at least ``n_runs`` rows. "auto": "folds" with
        ``n_runs >= 5`` on at most 300 rows (where the user guide's benchmark
        found it best; without ``X_valid``, with ``validation_fraction > 0``
        and at least ``n_runs`` rows of every class), False otherwise.
    n_jobs : int or None, default=None
        The runs trained at once, through :class:`joblib.Parallel` (None: 1,
        unless in a :func:`joblib.parallel_config` context; -1: all cores).
        Inside ``joblib.parallel_config(backend="dask")`` (or Ray's backend)
        the runs go to the cluster's workers. Every run seeds torch itself,
        so the result does not depend on ``n_jobs`` or the backend (with the
        same number of torch threads per run, see the "Scaling out" page).
        Unused with ``n_runs=1``, which trains in this process.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split and torch (weights, shuffling, dropout)
        inside ``fit`` only; torch's global random state is restored afterwards.
        None leaves torch's global random state in charge.
    verbose : int, default=0
        Passed to the net: 1 prints skorch's epoch table, with the learning
        rate, the cycle and a ``+`` in the ``snapshot`` column where one was
        taken. 0 is silent.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    n_features_in_ : int
        Number of features seen during ``fit`` (2-D inputs only).
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of features seen during ``fit``, when ``X`` has string column names.
    sample_shape_ : tuple, dict of tuples or None
        The shape of one sample seen in ``fit`` (``(n_features,)`` for 2-D
        inputs, e.g. ``(1, 28, 28)`` for images; per input for a dict; None
        when a Dataset's items have no shape); prediction inputs must match.
    net_ : skorch.NeuralNetClassifier
        The trained net (of run 0 with ``n_runs > 1``); ``net_.history`` holds
        the per-epoch losses, ``lr``, ``cycle`` and ``event_snapshot``, and
        per-batch ``lr``. Its module holds the weights of its run's last
        snapshot.
    snapshots_ : list of OrderedDict
        The module's ``state_dict`` at the end of each cycle, oldest first,
        as detached CPU tensors (parameters and buffers); with ``n_runs > 1``
        all runs' snapshots, run by run.
    snapshot_runs_ : list of int
        The run (0 to ``n_runs - 1``) each snapshot came from.
    snapshot_epochs_ : list of int
        The (1-based) epoch in which each snapshot was taken, within its run.
    members_ : ndarray of int
        Indices into ``snapshots_`` of the chosen members, ascending.
    weights_ : ndarray of float
        The weight of each member, summing to 1.
    validation_scores_ : dict or None
        ``"accuracy"`` and ``"log_loss"`` of every snapshot on the validation
        rows (arrays of length ``len(snapshots_)``; with cross-fitted runs,
        each on its own run's fold); None without them.
    disagreement_ : ndarray of shape (n_snapshots, n_snapshots) or None
        Fraction of validation rows on which two snapshots predict different
        labels (with cross-fitted runs: two snapshots of different runs, as
        their places from the end do out of fold); None without validation
        rows.
    temperature_ : float
        The fitted temperature (1.0 without validation rows or calibration).
    pooling_ : {"mixture", "tempered runs"}
        How ``predict_proba`` combines the members: "mixture", the weighted
        average of their probabilities, then ``temperature_``; "tempered
        runs" (cross-fitted runs, ``bootstrap="folds"``): each run's
        weighted mixture scaled by ``temperature_``, then the runs averaged.
        ``select`` sets "mixture" (its rows are predicted by every run).
    averaged_state_ : OrderedDict or None
        With ``combine="weights"``, the averaged model's state (CPU tensors).
    snapshot_iterations_ : list of int
        The (0-based) optimizer step after which each snapshot was taken,
        counted within its run.
    divergences_ : list of dict
        One entry per divergence the guard handled (the run, the iteration
        and cycle within it, the loss that showed it, the peak learning-rate
        factor before and after); empty for a healthy run.
    n_iter_ : int
        Optimizer steps taken, in total over the runs.
    n_iter_planned_ : int
        Optimizer steps planned, in total over the runs (``n_iter_`` is
        smaller after an interruption).

    See Also
    --------
    sklearn.ensemble.VotingClassifier : soft voting over independent estimators.

    References
    ----------
    G. Huang, Y. Li, G. Pleiss, Z. Liu, J. E. Hopcroft, K. Q. Weinberger,
    "Snapshot Ensembles: Train 1, Get M for Free", ICLR 2017.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skorch import NeuralNetClassifier
    >>> from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
    >>> X, y = load_iris(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> net = default_classifier_net().set_params(max_epochs=30)
    >>> clf = SnapshotEnsembleClassifier(net, n_snapshots=3, random_state=0).fit(X, y)
    >>> len(clf.snapshots_)
    3
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    >>> clf.score(X, y) > 0.9
    True
    """

    _parameter_constraints = {
        **BaseSnapshotEnsemble._parameter_constraints,
        "calibration": [StrOptions({"auto", "temperature", "smoothed_temperature"}), None],
    }
    _net_class = NeuralNetClassifier
    _default_module = MLPModule
    _default_net = staticmethod(default_classifier_net)
    # Both measured on benchmarks/small_data.py (results/small_data.md).
    _default_weighting = "shrink"
    _default_calibration = "temperature"
    _calibration_attribute = "temperature_"
    # What sksnapshot._persistence reads (see its _estimators.py): this estimator's rows of
    # the fitted-field table, the criteria a saved file may name, and the field and words
    # a refusal names the output width (_output_width) with.
    _persistence_kind = "classifier"
    _saved_criteria = (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss)
    _output_width_words = ("classes_", "has {width} classes")
    _validation_attributes = ("validation_scores_", "disagreement_")
    _stratified = True
    _can_cross_fit = True
    # How cross-fitted runs pool: chosen on benchmarks/worth.py (results/worth.md).
    _cross_fit_pooling = "tempered runs"

    def _validate_targets(self, y):
        check_classification_targets(y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the "
                f"data, but the data contain only one class: {self.classes_[0]!r}."
            )
        return y_encoded.reshape(-1).astype(np.int64), {"n_classes": len(self.classes_)}

    def _output_width(self):
        return len(self.classes_), f"one output per class; classes: {self.classes_.tolist()}"

    def _validation_loss(self, probas, y):
        self.validation_scores_ = member_scores(probas, y)
        self.disagreement_ = disagreement_matrix(probas)
        return LogLoss.of(probas, y)

    def _fit_temperature(self, mixture, y):
        """The temperature of ``calibration`` for a mixture's probabilities on labelled rows."""
        smoothing = "auto" if self._calibration() == "smoothed_temperature" else 0.0
        return fit_temperature(log_proba(normalise(mixture)), y, smoothing=smoothing)

    def _fit_calibration(self, X_valid, y_valid):
        return self._fit_temperature(self._weighted_outputs(X_valid), y_valid)

    def _select(self, X_valid, y_valid, X_bn):
        super()._select(X_valid, y_valid, X_bn)
        self.pooling_ = "mixture"  # rows every member predicts calibrate the average

    def _per_snapshot_scores(self, outputs, ys, places):
        """``validation_scores_`` and ``disagreement_`` of cross-fitted runs, per snapshot.

        ``outputs[r]`` are run ``r``'s snapshots on its fold, ``ys[r]`` that fold's
        labels; ``disagreement_`` holds the matrix of the ``places`` out of fold (the
        snapshots matched across runs from the end). A snapshot is scored on its own
        fold; two snapshots of one run disagree as they do on their fold, two of
        different runs as their places do out of fold (a run's earlier snapshots
        without a place count as its first place).
        """
        scores = [member_scores(out, y) for out, y in zip(outputs, ys)]
        self.validation_scores_ = {k: np.concatenate([s[k] for s in scores]) for k in scores[0]}
        place = np.concatenate([np.maximum(0, np.arange(len(out)) - (len(out) - places))
                                for out in outputs])
        matrix = self.disagreement_[np.ix_(place, place)]
        start = 0
        for out in outputs:
            stop = start + len(out)
            matrix[start:stop, start:stop] = disagreement_matrix(out)
            start = stop
        self.disagreement_ = matrix

    def _fit_run_calibration(self, mixture, y, run_of_row, calibrate):
        """The temperature of cross-fitted runs, from each row's out-of-fold mixture.

        Every row is predicted by one run, so the temperature calibrates one run's
        mixture: it is applied to each run before the runs are pooled
        (``pooling_``), not to their average, which pooling already softens.
        """
        self.temperature_ = self._fit_temperature(mixture, y) if calibrate else 1.0
        self.pooling_ = "mixture" if self.averaged_state_ is not None else self._cross_fit_pooling

    def _member_runs(self):
        """The run of each predicting member (None for one averaged model)."""
        if self.averaged_state_ is not None:
            return None
        return np.asarray(self.snapshot_runs_)[self.members_].tolist()

    def _calibrated(self, proba):
        """Normalised, temperature-scaled, finite probabilities from a weighted average."""
        # A row that is not finite stays so through the head, so the check may come last.
        return self._check_finite(self._prediction_head().calibrate(proba))

    def _encode_targets(self, y):
        """Map labels to indices of ``classes_``; unseen labels are an error."""
        y = np.asarray(y)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise ValueError(
                f"y contains labels not seen during fit: {unknown.tolist()}; "
                f"known classes: {self.classes_.tolist()}."
            )
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def staged_predict_proba(self, X):
        """Yield the ensemble's probabilities as members are added, oldest first.

        Stage ``k`` is the weighted average (weights renormalised) of the first
        ``k`` members in ``members_``: the curve "quality vs number of
        members". It averages probabilities also when ``combine="weights"``.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Samples to predict, of the kind and per-sample shape seen in ``fit``.

        Yields
        ------
        proba : ndarray of shape (n_samples, n_classes)
        """
        X = self._validate_X_predict(X)
        probas = self._member_outputs(X, [self.snapshots_[i] for i in self.members_])
        runs = np.asarray(self.snapshot_runs_)[self.members_].tolist()
        temperature, pooling = getattr(self, "temperature_", 1.0), self._pooling()
        for k in range(1, len(probas) + 1):
            weights = self.weights_[:k] / self.weights_[:k].sum()
            head = ProbaHead(temperature, runs[:k], pooling)
            yield self._check_finite(head(probas[:k].astype(np.float64), weights))

    def predict_proba(self, X):
        """The members' class probabilities, averaged and calibrated.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Samples to predict, of the kind and per-sample shape seen in ``fit``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Weighted mean of the members' probabilities (``weights_``), then
            scaled by the fitted ``temperature_`` (``softmax(log(p) / T)``; 1.0
            with ``calibration=None``), columns ordered as ``classes_``.
        """
        X = self._validate_X_predict(X)
        if self._pooling() == "mixture":
            return self._calibrated(self._weighted_outputs(X))
        head = self._prediction_head()  # cross-fitted runs: pooled run by run
        return self._reduced_outputs(X, lambda probas, weights: self._check_finite(
            head(probas, weights)))

    def _check_finite(self, proba):
        """Never hand out NaN: name the rows instead."""
        if np.isfinite(proba).all():
            return proba
        bad = ~np.all(np.isfinite(proba), axis=1)
        if bad.any():
            raise ValueError(
                f"The members' probabilities are not finite for {bad.sum()} rows "
                f"(first: {np.flatnonzero(bad)[:5].tolist()}); these inputs overflow the "
                "module (scale the features as for training)."
            )
        return proba

    def predict(self, X):
        """Predict the class labels of ``X`` (argmax of :meth:`predict_proba`).

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Samples to predict, of the kind and per-sample shape seen in ``fit``.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Predicted labels, taken from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_uncertainty(self, X):
        r"""Per row, how uncertain the ensemble is, and how much of it is the members' disagreement.

        The predictive entropy of the ensemble's probabilities (``total``) is
        split into the expected entropy of the members (``aleatoric``: what
        every member finds ambiguous) and the mutual information between the
        label and the member (``epistemic``: what the members disagree on),
        with the members' ``weights_``; see
        :func:`~sksnapshot.metrics.uncertainty_decomposition` for the
        formulas. Rows unlike the training data tend to have a high
        ``epistemic`` score; ``total`` also flags ambiguous in-distribution rows.

        With ``combine="weights"`` the ensemble predicts with one averaged
        model, so there are no members to disagree: ``epistemic`` and
        ``disagreement`` are zero and ``total`` equals ``aleatoric``. Use
        ``combine="proba"`` (``set_params`` then ``select``, or refit) for the
        decomposition.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Samples to predict, of the kind and per-sample shape seen in ``fit``.

        Returns
        -------
        uncertainty : sklearn.utils.Bunch
            Arrays of shape (n_samples,), in nats:

            - ``total``: :math:`H[\bar p]`, the entropy of the members' weighted
              mixture :math:`\bar p = \sum_i w_i p_i`;
            - ``aleatoric``: :math:`\sum_i w_i H[p_i]`, the expected member entropy;
            - ``epistemic``: ``total - aleatoric``, the mutual information, in
              :math:`[0, \min(\log K, \log M)]` for K classes and M members;
            - ``disagreement``: the weighted share of members whose label
              differs from the ensemble's, in [0, 1];

            and ``proba``, of shape (n_samples, n_classes): that mixture. The
            decomposition is the members', before calibration:
            :meth:`predict_proba` applies ``temperature_`` to this mixture
            (same labels, other confidences).

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
        >>> X, y = load_iris(return_X_y=True)
        >>> X = (X - X.mean(axis=0)) / X.std(axis=0)
        >>> net = default_classifier_net().set_params(max_epochs=20)
        >>> clf = SnapshotEnsembleClassifier(net, n_snapshots=4, random_state=0).fit(X, y)
        >>> u = clf.predict_uncertainty(X[:5])
        >>> sorted(u)
        ['aleatoric', 'disagreement', 'epistemic', 'proba', 'total']
        >>> bool(np.allclose(u.total, u.aleatoric + u.epistemic))
        True
        >>> bool((u.proba.argmax(1) == clf.predict_proba(X[:5]).argmax(1)).all())
        True
        """
        X = self._validate_X_predict(X)
        names = ("total", "aleatoric", "epistemic", "disagreement")

        def reduce(probas, weights):
            self._check_finite(probas.sum(axis=0))  # names rows whose outputs are not finite
            parts = uncertainty_decomposition(probas, weights)
            return np.column_stack([*(parts[name] for name in names), parts.proba])

        out = self._reduced_outputs(X, reduce)
        result = Bunch(**{name: out[:, i] for i, name in enumerate(names)})
        result.proba = normalise(out[:, len(names):])
        return result

    def to_torch(self):
        """The fitted ensemble as one plain :class:`torch.nn.Module`, for serving.

        Its ``forward`` takes a batch of inputs as the module takes them (a
        float32 tensor; the arrays of a dict ``X`` as keyword arguments) and
        returns what :meth:`predict_proba` returns, as a tensor: the
        members' probabilities (the net's ``predict_nonlinearity``) averaged
        with ``weights_``, then scaled by ``temperature_``; with
        ``combine="weights"`` one averaged model. It needs torch only, runs
        on the CPU in eval mode, and traces with ``torch.export.export``
        (dynamic batch size) and ``torch.onnx.export``.

        Returns
        -------
        module : torch.nn.Module
            Independent of the estimator (copies of the members' weights).

        Examples
        --------
        >>> import torch
        >>> from sklearn.datasets import load_iris
        >>> from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
        >>> X, y = load_iris(return_X_y=True)
        >>> X = ((X - X.mean(0)) / X.std(0)).astype("float32")
        >>> net = default_classifier_net().set_params(max_epochs=4)
        >>> clf = SnapshotEnsembleClassifier(net, n_snapshots=2, random_state=0).fit(X, y)
        >>> module = clf.to_torch()
        >>> bool(np.allclose(module(torch.from_numpy(X)), clf.predict_proba(X), atol=1e-5))
        True
        """
        return to_torch_module(self._ensemble_spec(self._prediction_head),
                               EnsembleClassifierModule)

    def distill(self, X, *, X_valid=None, y_valid=None, validation_fraction=0.1,
                init="snapshot", max_epochs=None, patience=5, random_state=None):
        """Train one net to predict what the ensemble predicts: one forward pass per row.

        The student is the ensemble's net (built from ``net`` as ``fit``
        builds it), trained with skorch on the ensemble's calibrated
        probabilities :meth:`predict_proba` (a soft-target cross-entropy):
        one cosine decay of the learning rate over ``max_epochs``, stopped
        early (skorch's ``EarlyStopping``, best weights kept) on held-out
        rows, on which the student's own temperature is then fitted.

        Parameters
        ----------
        X : array-like, dict of arrays or torch Dataset
            Rows to distil on, of the kind and per-sample shape seen in
            ``fit``: the training rows, unlabelled rows, or both. Labels are
            not needed (a Dataset's are ignored). A Dataset with random
            augmentation gives new rows every epoch: the ensemble labels each
            batch as it comes.
        X_valid : same kinds as ``X``, default=None
            Rows for early stopping and the temperature, instead of holding
            out ``validation_fraction`` of ``X`` (e.g. rows without augmentation).
        y_valid : array-like of shape (n_samples,), default=None
            Labels of ``X_valid``: the temperature is then fitted to them (as
            ``fit`` does), not to the ensemble's probabilities.
        validation_fraction : float in [0, 1), default=0.1
            Share of ``X`` held out when ``X_valid`` is None; 0 trains on every
            row for ``max_epochs`` epochs, with temperature 1.
        init : {"snapshot", "scratch"}, default="snapshot"
            Start from the heaviest member (the averaged model with
            ``combine="weights"``), or from freshly initialised weights.
            Starting from the snapshot mostly gave the lower test log-loss
            and stopped earlier (the user guide's "Serving: export and
            distillation" gives the measurement).
        max_epochs : int, default=None
            The student's budget; None: the net's ``max_epochs``.
        patience : int, default=5
            Epochs without a lower validation loss before stopping.
        random_state : int, RandomState instance or None, default=None
            Seeds the split and torch; None uses the estimator's ``random_state``.

        Returns
        -------
        student : SnapshotEnsembleClassifier
            Fitted, with one member (``snapshots_`` of length 1), the same
            ``classes_`` and ``n_snapshots=1``: it predicts, saves
            (:func:`~sksnapshot.save_ensemble`, ``joblib``) and exports
            (:meth:`to_torch`) like any fitted ensemble. ``net_.history`` is
            the student's training.

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
        >>> X, y = load_iris(return_X_y=True)
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = default_classifier_net().set_params(max_epochs=20)
        >>> clf = SnapshotEnsembleClassifier(net, n_snapshots=4, random_state=0).fit(X, y)
        >>> student = clf.distill(X)
        >>> len(student.snapshots_), student.score(X, y) > 0.8
        (1, True)
        """
        return distill_ensemble(self._distillation_source(), X, X_valid=X_valid, y_valid=y_valid,
                                validation_fraction=validation_fraction, init=init,
                                max_epochs=max_epochs, patience=patience,
                                random_state=random_state)

    # -- what export and distillation ask of a classifier (see BaseSnapshotEnsemble) --
    _data_attributes = ("classes_", *BaseSnapshotEnsemble._data_attributes)

    def _data_kwargs(self):
        return {"n_classes": len(self.classes_)}

    def _pooling(self):
        return getattr(self, "pooling_", "mixture")  # files saved before it: the mixture

    def _prediction_head(self, return_std=False):
        # format-1 files have no temperature_
        pooling = self._pooling()
        runs = None if pooling == "mixture" else self._member_runs()
        return ProbaHead(getattr(self, "temperature_", 1.0), runs, pooling)

    def _soft_targets(self, X):
        return self.predict_proba(X).astype(np.float32)

    def _student_criterion(self, net):
        logits = (net.predict_nonlinearity == "auto"
                  and isinstance(net.criterion_, torch.nn.CrossEntropyLoss))
        return SoftTargetCrossEntropy(logits, net._get_predict_nonlinearity())

    def _fit_soft_calibration(self, X_valid, targets):
        return self._fit_calibration(X_valid, targets)  # fit_temperature takes probabilities
