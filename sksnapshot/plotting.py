"""Plots of snapshot ensembles: the learning rate, diversity, calibration.

matplotlib is an optional dependency, imported when a function is called:
``pip install "sksnapshot[plot]"``. Every function draws into ``ax`` when
given one (a new figure otherwise) and returns the matplotlib Axes.
"""

from collections.abc import Mapping

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .metrics import (
    expected_calibration_error,
    negative_log_likelihood,
    reliability_curve,
)
from .schedules import learning_rate_table, resolve_schedule

__all__ = [
    "plot_disagreement",
    "plot_lr_schedule",
    "plot_reliability_diagram",
    "plot_staged_scores",
]


def _pyplot():
    """Import matplotlib.pyplot, or say how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "sksnapshot.plotting needs matplotlib: pip install \"sksnapshot[plot]\""
        ) from exc
    return plt


def _get_ax(ax):
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots()
    return plt, ax


# -- learning-rate schedule ----------------------------------------------------
def _schedule_from_estimator(estimator):
    """Per-step learning rates recorded in training and the snapshot steps."""
    check_is_fitted(estimator, ["net_", "snapshots_", "n_iter_"])
    lrs = [batch["lr"] for epoch in estimator.net_.history for batch in epoch["batches"]
           if "lr" in batch]  # training batches only
    lrs = np.asarray(lrs, dtype=np.float64)
    steps = getattr(estimator, "snapshot_iterations_", None)
    if steps is None:  # an ensemble saved before the steps were recorded: the planned ends
        _, snapshot_fn = resolve_schedule(estimator.schedule)
        steps = np.asarray(snapshot_fn(estimator.n_iter_, len(estimator.snapshots_)))
    steps = np.asarray(steps, dtype=np.int64)
    return lrs, steps[steps < len(lrs)]


def _schedule_from_args(schedule, n_iter, n_snapshots, lr, min_lr):
    """Learning rates and snapshot steps of a schedule, without training."""
    missing = [name for name, value in
               (("n_iter", n_iter), ("n_snapshots", n_snapshots), ("lr", lr))
               if value is None]
    if missing:
        raise ValueError(
            "To plot a schedule without a fitted estimator, give schedule, n_iter, "
            f"n_snapshots and lr; missing: {', '.join(missing)}."
        )
    schedule = "cosine" if schedule is None else schedule
    snapshot_fn = resolve_schedule(schedule)[1]
    n_iter, n_snapshots = int(n_iter), int(n_snapshots)
    if n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter}.")
    lrs = learning_rate_table(schedule, n_iter, n_snapshots, lr=lr, min_lr=min_lr)
    return lrs, np.asarray(snapshot_fn(n_iter, n_snapshots), dtype=np.int64)


def plot_lr_schedule(estimator=None, *, schedule=None, n_iter=None, n_snapshots=None,
                     lr=None, min_lr=None, ax=None):
    """Plot the learning rate of every training step and mark the snapshots.

    Either from a fitted estimator (the rates recorded in its
    ``net_.history``, one per optimizer step), or from a schedule without
    training anything (``schedule``, ``n_iter``, ``n_snapshots`` and ``lr``).

    Parameters
    ----------
    estimator : SnapshotEnsembleClassifier or SnapshotEnsembleRegressor, default=None
        A fitted ensemble. Give either it or the schedule's arguments.
    schedule : {"cosine", "cosine_warmup", "linear"} or callable, default=None
        The schedule to draw without an estimator; None means "cosine". See
        the ``schedule`` parameter of
        :class:`~sksnapshot.SnapshotEnsembleClassifier`.
    n_iter : int, default=None
        Total number of optimizer steps (``max_epochs * batches_per_epoch``).
    n_snapshots : int, default=None
        Number of cycles, hence of snapshots.
    lr : float, default=None
        Peak learning rate.
    min_lr : float, default=None
        The learning rate every cycle anneals towards; None means 0.0.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw into; a new figure when None.

    Returns
    -------
    ax : matplotlib.axes.Axes
        Two lines: the learning rate per step (``ax.lines[0]``) and the
        snapshot steps as markers (``ax.lines[1]``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # draw off-screen
    >>> from sksnapshot.plotting import plot_lr_schedule
    >>> ax = plot_lr_schedule(schedule="cosine", n_iter=100, n_snapshots=4, lr=0.1)
    >>> ax.lines[1].get_xdata().tolist()  # the last step of every cycle
    [24, 49, 74, 99]

    From a fitted ensemble:

    >>> from sklearn.datasets import load_iris
    >>> from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
    >>> X, y = load_iris(return_X_y=True)
    >>> net = default_classifier_net().set_params(max_epochs=10)
    >>> clf = SnapshotEnsembleClassifier(net, n_snapshots=5, random_state=0).fit(X, y)
    >>> ax = plot_lr_schedule(clf)
    >>> len(ax.lines[0].get_xdata()) == clf.n_iter_
    True
    >>> len(ax.lines[1].get_xdata())
    5
    """
    schedule_args = {"schedule": schedule, "n_iter": n_iter, "n_snapshots": n_snapshots,
                     "lr": lr, "min_lr": min_lr}
    given = [name for name, value in schedule_args.items() if value is not None]
    if estimator is not None:
        if given:
            raise ValueError(
                "Give either a fitted estimator or a schedule to draw without one, not "
                f"both; got an estimator and {', '.join(given)}."
            )
        lrs, steps = _schedule_from_estimator(estimator)
        title = f"{len(steps)} snapshots in {len(lrs)} steps"
    elif not given:
        raise ValueError(
            "plot_lr_schedule needs a fitted estimator, e.g. plot_lr_schedule(clf), or "
            "a schedule, e.g. plot_lr_schedule(schedule='cosine', n_iter=1000, "
            "n_snapshots=5, lr=0.1)."
        )
    else:
        lrs, steps = _schedule_from_args(schedule, n_iter, n_snapshots, lr,
                                         0.0 if min_lr is None else min_lr)
        title = f"{len(steps)} snapshots in {len(lrs)} steps (planned)"

    _, ax = _get_ax(ax)
    ax.plot(np.arange(len(lrs)), lrs, label="learning rate")
    ax.plot(steps, lrs[steps], linestyle="none", marker="o", color="C3",
            label="snapshot", zorder=3)
    ax.set_xlabel("training step (optimizer iteration)")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    # Head-room above the peaks for the legend.
    low, high = float(np.min(lrs, initial=0.0)), float(np.max(lrs, initial=0.0))
    span = (high - low) or max(abs(high), 1.0)
    ax.set_ylim(low - 0.05 * span, high + 0.3 * span)
    ax.legend(loc="upper right", ncol=2)
    return ax


# -- disagreement ------------------------------------------------------------------
def plot_disagreement(estimator, *, annotate=True, cmap="viridis", ax=None):
    """Heat-map of how often two snapshots disagree, chosen members highlighted.

    Cell ``(i, j)`` is the share of validation rows on which snapshots ``i``
    and ``j`` predict different labels (``estimator.disagreement_``). The
    members the estimator predicts with (``members_``) have bold, red tick
    labels and a star on the diagonal.

    Parameters
    ----------
    estimator : SnapshotEnsembleClassifier
        A fitted ensemble that had validation rows (``validation_fraction > 0``)
        or was given some with ``select(X_val, y_val)``.
    annotate : bool, default=True
        Write each cell's value into it.
    cmap : str or matplotlib.colors.Colormap, default="viridis"
        Colormap of the heat-map.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw into; a new figure when None.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The heat-map is ``ax.images[0]``, with a colorbar beside it.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # draw off-screen
    >>> from sklearn.datasets import load_iris
    >>> from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
    >>> from sksnapshot.plotting import plot_disagreement
    >>> X, y = load_iris(return_X_y=True)
    >>> net = default_classifier_net().set_params(max_epochs=10)
    >>> clf = SnapshotEnsembleClassifier(net, n_snapshots=4, validation_fraction=0.3,
    ...                                  random_state=0).fit(X, y)
    >>> ax = plot_disagreement(clf)
    >>> ax.images[0].get_array().shape
    (4, 4)
    """
    check_is_fitted(estimator, ["snapshots_", "members_"])
    if not hasattr(estimator, "classes_"):
        raise ValueError(
            "plot_disagreement needs a classifier ensemble: disagreement_ counts the "
            f"rows on which two snapshots predict different labels; got "
            f"{type(estimator).__name__}."
        )
    matrix = getattr(estimator, "disagreement_", None)
    if matrix is None:
        raise ValueError(
            "The estimator has no disagreement_ matrix: it was fitted without "
            "validation rows. Set validation_fraction > 0 before fit, or call "
            "estimator.select(X_val, y_val) with labelled held-out rows."
        )
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    members = np.unique(np.asarray(estimator.members_, dtype=np.int64))

    _, ax = _get_ax(ax)
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=max(float(matrix.max()), 1e-12))
    ax.figure.colorbar(image, ax=ax, label="share of validation rows disagreeing")
    ticks = np.arange(n)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([str(i) for i in ticks])
    ax.set_yticklabels([str(i) for i in ticks])
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        for i, label in enumerate(labels):
            if i in members:
                label.set_fontweight("bold")
                label.set_color("C3")
    ax.plot(members, members, linestyle="none", marker="*", markersize=14,
            color="C3", markeredgecolor="white", label="member")
    if annotate:
        threshold = (float(matrix.min()) + float(matrix.max())) / 2.0
        for i in range(n):
            for j in range(n):
                if i == j and i in members:
                    continue  # the marker sits there
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                        fontsize="small",
                        color="black" if matrix[i, j] > threshold else "white")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("snapshot")
    ax.set_ylabel("snapshot")
    ax.set_title(f"Disagreement between snapshots\nmembers (\u2605): {members.tolist()}")
    return ax


# -- calibration ---------------------------------------------------------------------
def _named_probas(probas, labels):
    """``{name: proba}`` from an array, a list of arrays or a mapping."""
    if isinstance(probas, Mapping):
        if labels is not None:
            raise ValueError("labels must be None when probas is a dict: its keys name "
                             "the models.")
        named = dict(probas)
    elif isinstance(probas, (list, tuple)) and len(probas) and np.ndim(probas[0]) == 2:
        if labels is None:
            labels = [f"model {i}" for i in range(len(probas))]
        elif isinstance(labels, str) or len(labels) != len(probas):
            raise ValueError(
                f"labels must name each of the {len(probas)} probability arrays."
            )
        named = dict(zip(labels, probas))
    else:
        if labels is not None and not isinstance(labels, str):
            raise ValueError("labels must be a string when probas is a single array.")
        named = {"model" if labels is None else labels: probas}
    if not named:
        raise ValueError("probas is empty: give at least one probability array.")
    return named


def plot_reliability_diagram(y_true, probas, labels=None, n_bins=15, classes=None, ax=None):
    """Reliability diagram of one or several probabilistic classifiers.

    For every model, rows are grouped by confidence (the largest predicted
    probability) into ``n_bins`` equal-width bins; each non-empty bin is a
    point (mean confidence, accuracy), see
    :func:`sksnapshot.metrics.reliability_curve`. Points on the diagonal are
    calibrated; below it the model is over-confident. The legend gives each
    model's :func:`~sksnapshot.metrics.expected_calibration_error` (ECE).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels: integers 0 .. n_classes - 1, or labels from ``classes``.
    probas : array-like of shape (n_samples, n_classes), list of them, or dict
        Predicted probabilities of one model, of several (a list), or a dict
        ``{name: proba}``.
    labels : str or list of str, default=None
        Legend name of the single model, or of each array in the list
        (default "model", "model 0", ...). Must be None for a dict.
    n_bins : int, default=15
        Number of equal-width confidence bins on [0, 1].
    classes : array-like of shape (n_classes,), default=None
        Label of each column (e.g. an estimator's ``classes_``).
    ax : matplotlib.axes.Axes, default=None
        Axes to draw into; a new figure when None.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The diagonal is ``ax.lines[0]``, then one line per model.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # draw off-screen
    >>> from sksnapshot.plotting import plot_reliability_diagram
    >>> y = [0, 0, 1, 1]
    >>> sure = [[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]]
    >>> unsure = [[0.6, 0.4], [0.6, 0.4], [0.5, 0.5], [0.4, 0.6]]
    >>> ax = plot_reliability_diagram(y, {"sure": sure, "unsure": unsure}, n_bins=5)
    >>> [text.get_text() for text in ax.get_legend().get_texts()]
    ['perfectly calibrated', 'sure (ECE 0.100)', 'unsure (ECE 0.175)']
    """
    named = _named_probas(probas, labels)
    # Compute everything first, so that bad input fails before drawing.
    curves = {}
    for name, proba in named.items():
        confidence, accuracy, _ = reliability_curve(y_true, proba, n_bins=n_bins,
                                                    classes=classes)
        ece = expected_calibration_error(y_true, proba, n_bins=n_bins, classes=classes)
        curves[name] = (confidence, accuracy, ece)

    _, ax = _get_ax(ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, (confidence, accuracy, ece) in curves.items():
        ax.plot(confidence, accuracy, marker="o", label=f"{name} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (largest predicted probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram ({n_bins} bins)")
    ax.legend(loc="upper left")
    return ax


# -- staged scores -------------------------------------------------------------
def plot_staged_scores(estimator, X, y, ax=None):
    """Accuracy and log-loss of the ensemble as members are added.

    Stage ``k`` averages the first ``k`` members (oldest first), as
    :meth:`~sksnapshot.SnapshotEnsembleClassifier.staged_predict_proba`
    yields them. The accuracy is drawn on ``ax`` (left axis) and the log-loss
    on a twin Axes sharing the x axis (right axis).

    Parameters
    ----------
    estimator : SnapshotEnsembleClassifier
        A fitted ensemble.
    X : array-like of shape (n_samples, n_features)
        Rows to score, e.g. a test set.
    y : array-like of shape (n_samples,)
        Their labels, as given to ``fit`` (any of ``estimator.classes_``).
    ax : matplotlib.axes.Axes, default=None
        Axes for the accuracy; a new figure when None.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The accuracy Axes (``ax.lines[0]``); the log-loss line is on the twin
        Axes, the other Axes of ``ax.figure`` sharing its x axis.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # draw off-screen
    >>> from sklearn.datasets import load_iris
    >>> from sksnapshot import SnapshotEnsembleClassifier, default_classifier_net
    >>> from sksnapshot.plotting import plot_staged_scores
    >>> X, y = load_iris(return_X_y=True)
    >>> net = default_classifier_net().set_params(max_epochs=10)
    >>> clf = SnapshotEnsembleClassifier(net, n_snapshots=4, random_state=0).fit(X, y)
    >>> ax = plot_staged_scores(clf, X, y)
    >>> ax.lines[0].get_xdata().tolist()  # number of members
    [1, 2, 3, 4]
    """
    check_is_fitted(estimator, ["snapshots_", "members_"])
    y = np.asarray(y)
    classes = estimator.classes_
    accuracy, nll = [], []
    for proba in estimator.staged_predict_proba(X):
        if len(y) != len(proba):
            raise ValueError(f"X has {len(proba)} rows but y has {len(y)} labels.")
        # nll validates the labels against classes_ and raises on unknown ones.
        nll.append(negative_log_likelihood(y, proba, classes=classes))
        accuracy.append(float(np.mean(classes[np.argmax(proba, axis=1)] == y)))
    stages = np.arange(1, len(accuracy) + 1)

    _, ax = _get_ax(ax)
    twin = ax.twinx()
    (acc_line,) = ax.plot(stages, accuracy, marker="o", color="C0", label="accuracy")
    (nll_line,) = twin.plot(stages, nll, marker="s", color="C1", label="log-loss")
    ax.set_xlabel("number of members (oldest first)")
    ax.set_ylabel("accuracy", color="C0")
    twin.set_ylabel("log-loss", color="C1")
    ax.tick_params(axis="y", colors="C0")
    twin.tick_params(axis="y", colors="C1")
    ax.set_xticks(stages)
    ax.legend(handles=[acc_line, nll_line], loc="center right")
    ax.set_title("Ensemble quality vs number of members")
    return ax
