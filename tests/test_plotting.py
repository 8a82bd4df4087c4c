"""Tests of sksnapshot.plotting (matplotlib, Agg backend: no window opens)."""

import sys

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback

from sksnapshot import SnapshotEnsembleClassifier
from sksnapshot.metrics import (
    expected_calibration_error,
    negative_log_likelihood,
    reliability_curve,
)
from sksnapshot.schedules import linear_snapshot_iterations, snapshot_iterations

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from sksnapshot.plotting import (  # noqa: E402
    plot_disagreement,
    plot_lr_schedule,
    plot_reliability_diagram,
    plot_staged_scores,
)

from .conftest import tiny_net  # noqa: E402

N_SNAPSHOTS = 3


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def clf(data):
    X, y = data
    return SnapshotEnsembleClassifier(tiny_net(), n_snapshots=N_SNAPSHOTS,
                                      random_state=0).fit(X, y)


def recorded_lrs(clf):
    return [b["lr"] for epoch in clf.net_.history for b in epoch["batches"] if "lr" in b]


# -- plot_lr_schedule -------------------------------------------------------------
def test_lr_schedule_from_estimator(clf):
    ax = plot_lr_schedule(clf)
    assert isinstance(ax, Axes)
    lr_line, snap_line = ax.lines
    assert len(lr_line.get_xdata()) == clf.n_iter_
    np.testing.assert_allclose(lr_line.get_ydata(), recorded_lrs(clf))
    # One marker per snapshot, at the last step of every cycle.
    assert len(snap_line.get_xdata()) == N_SNAPSHOTS == len(clf.snapshots_)
    expected = snapshot_iterations(clf.n_iter_, N_SNAPSHOTS)
    np.testing.assert_array_equal(snap_line.get_xdata(), expected)
    np.testing.assert_allclose(snap_line.get_ydata(), np.asarray(recorded_lrs(clf))[expected])


def test_lr_schedule_uses_the_fitted_plan(data):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=N_SNAPSHOTS, schedule="linear",
                                     random_state=0).fit(X, y)
    clf.set_params(n_snapshots=2, schedule="cosine")  # changed after fit
    np.testing.assert_array_equal(plot_lr_schedule(clf).lines[1].get_xdata(),
                                  linear_snapshot_iterations(clf.n_iter_, N_SNAPSHOTS))


def test_lr_schedule_draws_into_given_ax(clf):
    _, ax = plt.subplots()
    assert plot_lr_schedule(clf, ax=ax) is ax
    assert len(ax.lines) == 2


@pytest.mark.parametrize("schedule, snapshot_fn", [
    ("cosine", snapshot_iterations),
    ("linear", linear_snapshot_iterations),
    (None, snapshot_iterations),
])
def test_lr_schedule_without_training(schedule, snapshot_fn):
    ax = plot_lr_schedule(schedule=schedule, n_iter=50, n_snapshots=5, lr=0.2, min_lr=0.01)
    lr_line, snap_line = ax.lines
    lrs = np.asarray(lr_line.get_ydata())
    assert len(lrs) == 50
    assert lrs.max() == pytest.approx(0.2)
    assert lrs.min() >= 0.01 - 1e-12
    np.testing.assert_array_equal(snap_line.get_xdata(), snapshot_fn(50, 5))


def test_lr_schedule_callable():
    def constant(t, n_iter, n_cycles, lr, min_lr):
        return np.full(len(t), lr)

    ax = plot_lr_schedule(schedule=constant, n_iter=12, n_snapshots=3, lr=0.5)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), 0.5)
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [3, 7, 11])


def test_lr_schedule_interrupted_fit(data):
    class StopAfter(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 4:
                raise KeyboardInterrupt

    X, y = data
    net = tiny_net(callbacks=[("stop", StopAfter())])
    with pytest.warns(RuntimeWarning, match="Training stopped"):
        clf = SnapshotEnsembleClassifier(net, n_snapshots=N_SNAPSHOTS, random_state=0).fit(X, y)
    assert len(clf.snapshots_) == 2
    ax = plot_lr_schedule(clf)
    lr_line, snap_line = ax.lines
    assert len(lr_line.get_xdata()) == clf.n_iter_
    planned = len(lr_line.get_xdata()) * 6 // 4  # 4 of 6 epochs were trained
    np.testing.assert_array_equal(snap_line.get_xdata(),
                                  snapshot_iterations(planned, N_SNAPSHOTS)[:2])


def test_lr_schedule_errors(clf):
    with pytest.raises(ValueError, match="needs a fitted estimator.*or a schedule"):
        plot_lr_schedule()
    with pytest.raises(ValueError, match="not both.*n_iter"):
        plot_lr_schedule(clf, n_iter=10)
    with pytest.raises(ValueError, match="missing: n_snapshots, lr"):
        plot_lr_schedule(schedule="cosine", n_iter=10)
    with pytest.raises(ValueError, match="schedule must be one of"):
        plot_lr_schedule(schedule="step", n_iter=10, n_snapshots=2, lr=0.1)
    with pytest.raises(NotFittedError):
        plot_lr_schedule(SnapshotEnsembleClassifier(tiny_net()))


# -- plot_disagreement --------------------------------------------------------------
def test_disagreement_heatmap(clf):
    ax = plot_disagreement(clf)
    assert isinstance(ax, Axes)
    # The plotted matrix is the fitted one, copied, not recomputed: exact.
    np.testing.assert_array_equal(ax.images[0].get_array(), clf.disagreement_)
    assert len(ax.figure.axes) == 2  # the heat-map and its colorbar
    (marker_line,) = ax.lines
    np.testing.assert_array_equal(marker_line.get_xdata(), clf.members_)
    bold = [t.get_text() for t in ax.get_xticklabels() if t.get_fontweight() == "bold"]
    assert bold == [str(i) for i in clf.members_]


def test_disagreement_highlights_diverse_members(data):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=N_SNAPSHOTS, n_members=2,
                                     selection="diverse", validation_fraction=0.3,
                                     random_state=0).fit(X, y)
    _, ax = plt.subplots()
    assert plot_disagreement(clf, annotate=False, ax=ax) is ax
    assert len(ax.lines[0].get_xdata()) == 2
    assert not ax.texts
    bold = [int(t.get_text()) for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == clf.members_.tolist()


def test_disagreement_needs_validation_rows(data):
    X, y = data
    clf = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=N_SNAPSHOTS, selection="last",
                                     weighting="uniform", validation_fraction=0.0,
                                     random_state=0).fit(X, y)
    assert clf.disagreement_ is None
    with pytest.raises(ValueError, match=r"validation_fraction > 0.*select\(X_val, y_val\)"):
        plot_disagreement(clf)
    clf.select(X[:40], y[:40])
    ax = plot_disagreement(clf)
    # The plotted matrix is the fitted one, copied, not recomputed: exact.
    np.testing.assert_array_equal(ax.images[0].get_array(), clf.disagreement_)


# -- plot_reliability_diagram ---------------------------------------------------------
def test_reliability_single_and_dict(clf, data):
    X, y = data
    proba = clf.predict_proba(X)
    ax = plot_reliability_diagram(y, proba, n_bins=5)
    assert isinstance(ax, Axes)
    assert len(ax.lines) == 2  # diagonal + model
    conf, acc, _ = reliability_curve(y, proba, n_bins=5)
    np.testing.assert_allclose(ax.lines[1].get_xdata(), conf)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), acc)
    ece = expected_calibration_error(y, proba, n_bins=5)
    assert ax.get_legend().get_texts()[1].get_text() == f"model (ECE {ece:.3f})"

    single = next(clf.staged_predict_proba(X))
    ax = plot_reliability_diagram(y, {"first": single, "ensemble": proba})
    assert len(ax.lines) == 3
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[1].startswith("first (ECE ") and texts[2].startswith("ensemble (ECE ")


def test_reliability_list_labels_and_classes():
    y = np.array(["a", "b", "b"])
    probas = [np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]]),
              np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])]
    ax = plot_reliability_diagram(y, probas, labels=["x", "y"], classes=["a", "b"])
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [t.split(" (")[0] for t in texts[1:]] == ["x", "y"]
    ax = plot_reliability_diagram(y, probas[0], labels="net", classes=["a", "b"])
    assert ax.get_legend().get_texts()[1].get_text().startswith("net (ECE")


def test_reliability_errors():
    proba = np.array([[0.7, 0.3], [0.2, 0.8]])
    with pytest.raises(ValueError, match="labels must be None when probas is a dict"):
        plot_reliability_diagram([0, 1], {"a": proba}, labels=["a"])
    with pytest.raises(ValueError, match="labels must name each of the 2"):
        plot_reliability_diagram([0, 1], [proba, proba], labels=["a"])
    with pytest.raises(ValueError, match="classes"):
        plot_reliability_diagram(["a", "b"], proba)


# -- plot_staged_scores ----------------------------------------------------------------
def test_staged_scores(clf, data):
    X, y = data
    ax = plot_staged_scores(clf, X, y)
    assert isinstance(ax, Axes)
    assert len(ax.figure.axes) == 2  # accuracy and its log-loss twin
    twin = next(a for a in ax.figure.axes if a is not ax)
    (acc_line,), (nll_line,) = ax.lines, twin.lines
    n = len(clf.members_)
    np.testing.assert_array_equal(acc_line.get_xdata(), np.arange(1, n + 1))
    stages = list(clf.staged_predict_proba(X))
    np.testing.assert_allclose(acc_line.get_ydata(),
                               [np.mean(p.argmax(axis=1) == y) for p in stages])
    np.testing.assert_allclose(nll_line.get_ydata(),
                               [negative_log_likelihood(y, p) for p in stages])
    assert acc_line.get_ydata()[-1] == pytest.approx(clf.score(X, y))


def test_staged_scores_string_labels(data):
    X, y = data
    names = np.array(["cat", "dog", "emu"])[y]
    clf = SnapshotEnsembleClassifier(tiny_net(), n_snapshots=N_SNAPSHOTS,
                                     random_state=0).fit(X, names)
    _, ax = plt.subplots()
    assert plot_staged_scores(clf, X, names, ax=ax) is ax
    assert ax.lines[0].get_ydata()[-1] == pytest.approx(clf.score(X, names))
    with pytest.raises(ValueError, match="not in classes"):
        plot_staged_scores(clf, X, np.where(names == "emu", "yak", names))


# -- optional dependency ----------------------------------------------------------------
def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "sksnapshot\[plot\]"'):
        plot_reliability_diagram([0, 1], [[0.7, 0.3], [0.2, 0.8]])
