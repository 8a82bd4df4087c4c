"""Smoke tests of the benchmarks' core functions on tiny settings (a few seconds each).

They check that the benchmarks (quality, speed, images, budget, ...) run end to
end and produce tables with the expected rows and columns; the numbers
themselves are meaningless at these sizes.
"""

import numpy as np
import pytest

from benchmarks import ood, quality, speed


def _table_rows(text, first_cell):
    """Markdown table rows (as lists of cells) whose first cell is ``first_cell``."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] == first_cell:
                rows.append(cells)
    return rows


def _header(text, first_cell):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no header starting with {first_cell!r}")


def test_quality_main_table(tmp_path):
    configs = [("digits", "mlp", 0.05)]
    rows, errors = quality.run_main(configs=configs, epochs=5, seeds=(0,), n_deep=2,
                                    jobs=1, max_train=300)
    assert list(rows) == configs
    assert list(rows[configs[0]]) == quality.METHODS
    text = quality.main_table(rows, errors, epochs=5, seeds=(0,), jobs=1)
    header = _header(text, "data")
    assert header == ["data", "model", "lr", "method", "accuracy", "NLL", "Brier", "ECE",
                      "members", "fit time (s)", "time / single"]
    body = [r for r in _table_rows(text, "digits") if len(r) == len(header)]
    assert [r[3] for r in body] == quality.METHODS
    # The calibrated log-loss table: the default, FGE and the references, DEE per seed.
    cll = {r[3]: r for r in _table_rows(text, "digits") if len(r) == 8}
    assert set(cll) == {quality.SINGLE, *quality.CALIBRATED, quality.DEEP}
    assert cll[quality.SINGLE][7] == "1.00" and cll[quality.DEEP][7] == "2.00"
    # The single net against itself: a zero paired difference, "equal".
    assert cll[quality.SINGLE][5] == "+0.0000 ± 0.0000" and cll[quality.SINGLE][6] == "equal"
    single = rows[configs[0]][quality.SINGLE][0]
    assert 0 <= single["accuracy"] <= 1 and np.isfinite(single["nll"])
    # TorchEnsemble is optional: either numbers or the exact error in the table.
    te = rows[configs[0]][quality.TORCHENSEMBLE][0]
    assert np.isfinite(te["nll"]) or f"**{quality.TORCHENSEMBLE} failed**" in text
    quality.plot_main(rows, tmp_path / "quality.png")
    assert (tmp_path / "quality.png").stat().st_size > 0


def test_quality_sweep_table(tmp_path):
    grid, defaults = quality.run_sweep(
        data_sets=["digits"], lrs=(0.1,), ms=(1, 2), epochs_list=(2,), seeds=(0,), jobs=1,
        max_train=300, default_lrs=(0.05,), default_ms=(1, 2), default_epochs=2)
    assert sorted(grid) == [("digits", 2, 0.1, 1), ("digits", 2, 0.1, 2)]
    assert sorted(defaults) == [("digits", 0.05, 1), ("digits", 0.05, 2)]
    text = quality.sweep_table(grid, defaults, seeds=(0,), jobs=1)
    header = _header(text, "data")
    assert header[:4] == ["data", "epochs", "lr", "M"]
    grid_rows = [r for r in _table_rows(text, "digits") if len(r) == len(header)]
    assert [r[3] for r in grid_rows] == ["1", "2"]
    assert grid_rows[0][6] == "1.000"  # M = 1 is its own reference
    quality.plot_sweep(grid, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_speed_tables(tmp_path):
    cfg = dict(data="digits", modules=["MLPModule (100,)", "CNN1d"], epochs=1, pairs=1,
               rows=(64,), ms=(1, 2), rounds=1, mem_configs=[((16,), False), ((16,), True)],
               rss_repeats=1)
    text, train, pred = speed.run(cfg, print_fn=lambda *a: None)
    assert set(train["CNN1d"]) == {"raw torch", "plain skorch", "skorch floor", "sksnapshot"}
    assert all(len(times) == 1 for times in train["CNN1d"].values())
    assert set(pred["CNN1d"]) == {(64, 1), (64, 2), (64, "weights"), (500, "selection")}
    assert len(_table_rows(text, "CNN1d")) == 1 + 4  # training row, 4 prediction rows
    memory = _table_rows(text, "MLP (16,) + BatchNorm")
    assert len(memory) == 1
    assert _header(text, "module")[:5] == [
        "module", "raw torch (median s)", "plain skorch (median s)", "skorch floor (median s)",
        "sksnapshot (median s)"]
    speed.plot_speed(train, pred, tmp_path / "speed.png")
    assert (tmp_path / "speed.png").stat().st_size > 0


def test_budget_quick_run_writes_the_table(tmp_path):
    from benchmarks import budget

    budget.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "budget.md").read_text()
    header = _header(text, "epochs")
    assert header == ["epochs", "single net", "single net + temperature", "plain skorch net",
                      *budget.METHODS]
    rows = _table_rows(text, "5")
    assert len(rows) == 1 and len(rows[0]) == len(header)
    nll, acc = (float(v) for v in rows[0][1].split(" / "))
    assert np.isfinite(nll) and 0 <= acc <= 1


def test_snapshot_bytes_match_module():
    snap, mod = speed.snapshot_memory(hidden=(8,), batch_norm=True, max_epochs=1,
                                      data="digits")
    assert snap == mod > 0


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_benchmark_nets_accept_2d_input(model):
    import torch

    from benchmarks._data import make_net

    net = make_net(model, max_epochs=1, lr=0.1)
    net.set_params(module__n_features=40, module__n_classes=10).initialize()
    assert net.module_(torch.zeros(3, 40)).shape == (3, 10)


def test_images_quick_run_writes_the_table(tmp_path, capsys):
    import torch

    from benchmarks import images

    images.main(["--quick", "--device", "cpu", "--out", str(tmp_path)])
    text = (tmp_path / "images.md").read_text()
    # the header names the device, torch version and thread count
    assert "on cpu (" in text and f"torch {torch.__version__}" in text
    assert "torch.set_num_threads(1)" in text
    header = _header(text, "data")
    assert header == ["data", "model", "lr", "method", "accuracy", "NLL", "ECE", "members",
                      "fit time (s)", "time / single"]
    body = _table_rows(text, "digits-8x8")
    assert [r[3] for r in body] == images.METHODS
    assert all(len(r) == len(header) for r in body)
    single = body[0]
    assert 0 <= float(single[4]) <= 1 and np.isfinite(float(single[5]))
    # TorchEnsemble is optional: either numbers or the exact error under the table.
    te = body[images.METHODS.index(images.TORCHENSEMBLE)]
    assert te[4] != "n/a" or f"**{images.TORCHENSEMBLE} failed**" in text
    # the raw results redraw the same table without fitting
    images.main(["--quick", "--out", str(tmp_path), "--redraw"])
    assert (tmp_path / "images.md").read_text() == text


def test_images_rows_start_from_the_same_weights():
    """Single net, snapshot ensemble and TorchEnsemble's module start from equal weights."""
    import torch
    from skorch.callbacks import Callback

    from benchmarks import images
    from benchmarks._data import split
    from sksnapshot import SnapshotEnsembleClassifier

    class RecordStart(Callback):
        def on_train_begin(self, net, **kwargs):
            self.state_ = {k: v.clone() for k, v in net.module_.state_dict().items()}

    X, y, *_ = split("digits-8x8", seed=1, max_train=100)
    starts = []
    for n_snapshots in (1, 5):
        net = images.image_net("cnn", max_epochs=5, lr=0.1).set_params(
            callbacks=[("start", RecordStart())])
        clf = SnapshotEnsembleClassifier(net, n_snapshots=n_snapshots, validation_fraction=0.0,
                                         random_state=1).fit(X, y)
        starts.append(dict(clf.net_.callbacks_)["start"].state_)  # the net's clone of it
    torch.manual_seed(images.init_seed(1))  # as the TorchEnsemble row seeds its module
    starts.append(images.SmallCNN(n_classes=10).state_dict())
    for state in starts[1:]:
        # The same seed in one process: the same initial weights, bit for bit.
        assert all(torch.equal(state[k], starts[0][k]) for k in starts[0])


def test_small_data_suite_tables():
    from benchmarks import small_data

    rules = {k: small_data.RULES[k] for k in (small_data.OLD_DEFAULT, small_data.DEFAULT)}
    records = small_data.run(["iris"], (5,), (0,), rules=rules, print_fn=lambda *a: None)
    methods = ["single net", "single net + T", "single net + T of smoothed labels",
               small_data.AUTO, small_data.OLD_DEFAULT, small_data.DEFAULT]
    assert [r["method"] for r in records] == methods
    assert records[0]["n_valid"] == 9 and records[0]["n_train"] == 81
    assert all(np.isfinite(r["nll"]) and 0 <= r["accuracy"] <= 1 for r in records)
    assert records[-1]["temperature"] > 0 and records[-1]["n_members"] == 5
    text = small_data.tables(records)
    summary = [r for r in _table_rows(text, small_data.DEFAULT) if len(r) == 7]
    assert len(summary) == 1 and summary[0][-1].endswith("/ 1")
    assert _table_rows(text, "iris (81 / 9)")[0][1] == "5"
    # The held-out rows are those the estimator's own split gives for its random_state.
    from sklearn.utils import check_random_state

    from sksnapshot._split import validation_split

    X, y, _, _ = small_data.split_task("iris", 0)
    arrays = small_data.fit_arrays("iris", 5, 0)
    _, valid = validation_split(y, 0.1, check_random_state(0))
    np.testing.assert_array_equal(arrays["y_val"], y[valid])


def test_small_data_regression_table():
    from benchmarks import small_data

    records = small_data.run_regression((0,), epochs=1, print_fn=lambda *a: None)
    assert {r["method"] for r in records} == {"single net", *small_data.REGRESSION_RULES}
    text = small_data.regression_table(records)
    assert len(_table_rows(text, "diabetes")) == 2 * (1 + len(small_data.REGRESSION_RULES))


def test_ood_tables(tmp_path):
    results = ood.main(["--quick", "--out", str(tmp_path)])
    assert sorted(results) == [("digits", 0)]
    r = results[("digits", 0)]
    assert set(r["auroc"]["pixels permuted"]) == set(ood.SCORES)
    assert all(0 <= v <= 1 for v in r["auroc"]["pixels permuted"].values())
    assert len(r["deep_clls"]) == len(r["deep_clls_cv"]) == 2
    text = (tmp_path / "ood.md").read_text()
    assert _header(text, "train task")[2:] == list(ood.SCORES)
    assert len(_table_rows(text, "digits")) == 1 + 1 + 2  # AUROC, rejection, 2 CLL rows
    assert (tmp_path / "ood_raw.json").stat().st_size > 0


def test_deep_ensemble_equivalent_interpolates():
    from benchmarks._data import calibrated_log_loss, deep_ensemble_equivalent, scores

    curve = [1.0, 0.8, 0.7, 0.65]
    # Plain IEEE arithmetic on these few numbers, no library kernel: exact anywhere.
    assert deep_ensemble_equivalent(0.9, curve) == 1.5
    assert deep_ensemble_equivalent(0.7, curve) == 3.0
    assert deep_ensemble_equivalent(1.2, curve) == 1.0
    assert deep_ensemble_equivalent(0.6, curve) == float("inf")
    # Temperature scaling never does worse than T = 1 on the rows it was fitted on.
    rng = np.random.RandomState(0)
    proba = rng.dirichlet(np.full(3, 0.2), size=300)
    y = rng.randint(0, 3, size=300)
    nll, t = calibrated_log_loss(proba, y, proba, y)
    assert t > 1 and nll < scores(y, proba)["nll"]


def test_runs_quick_table(tmp_path):
    from benchmarks import runs

    table = runs.main(["--quick", "--out", str(tmp_path)])
    rows = table["digits mlp"]
    assert {"single net", "deep ensemble, 2 nets", "deep ensemble, 5 nets"} <= set(rows)
    assert any(label.startswith("2 runs") and row["cost"] == 2 for label, row in rows.items())
    text = (tmp_path / "runs.md").read_text()
    assert "Does K=2 beat the 5-net deep ensemble" in text
    assert _header(text, "method") == ["method", "cost", "NLL", "accuracy", "seconds"]


def test_distill_quick_run_writes_the_tables(tmp_path):
    from benchmarks import distill

    rows = distill.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "distill.md").read_text()
    assert _header(text, "data") == ["data", "model", "method", "accuracy", "NLL", "CLL",
                                     "fit time (s)", "predict time (ms)"]
    body = [r for r in _table_rows(text, "digits") if len(r) == 8]
    assert [r[2] for r in body] == distill.METHODS
    assert len(_table_rows(text, "digits-8x8")) == len(distill.METHODS) + 2  # + the summary
    for records in rows[("digits", "mlp", 0.05)].values():
        assert 0 <= records[0]["accuracy"] <= 1 and np.isfinite(records[0]["nll"])
    assert "Tasks where the student beats the calibrated single net" in text
    assert (tmp_path / "distill_raw.json").stat().st_size > 0


def test_export_quick_run_keeps_the_measured_choice(tmp_path):
    from benchmarks import export

    export.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "export.md").read_text()
    methods = [r[2] for r in _table_rows(text, "mlp")]
    assert methods == export.METHODS * 2  # the ensemble, then a student
    assert "vmap over stacked members took" in text


def test_worth_quick_run_writes_the_frontier(tmp_path):
    from benchmarks import worth

    raw = worth.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "worth.md").read_text()
    methods = [r[1] for r in _table_rows(text, "5")]
    assert methods == [m.format(k=5) for m in worth.FRONTIER[1:]]
    assert [r[1] for r in _table_rows(text, "1")] == ["default"]
    # n_runs=5 with nothing else set cross-fits these 150 rows, paired against CCV per seed.
    ccv = [r for r in _table_rows(text, worth.QUICK_TASK) if len(r) == 6 and r[1] == "5"]
    assert len(ccv) == 1 and ("lower" in ccv[0][4] or "higher" in ccv[0][4]
                              or "tie" in ccv[0][4])
    assert raw[worth._key(worth.QUICK_TASK, 1, "cross", 5)]["default"]["own"] > 0
    assert (tmp_path / "worth.png").stat().st_size > 0
    # --redraw rebuilds the same tables from the raw JSON, without fitting.
    worth.main(["--quick", "--redraw", "--out", str(tmp_path)])
    assert (tmp_path / "worth.md").read_text() == text


def test_one_run_calibration_quick_run_checks_the_default_rule(tmp_path):
    from benchmarks import one_run_calibration as study

    # fit_once asserts that the grid's (prior 10, a = 0) rule is what fit itself does.
    raw = study.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "one_run_calibration.md").read_text()
    setups = _table_rows(text, study.QUICK_TASK)
    assert [(r[1], r[2]) for r in setups] == [("4", "0"), ("4", "0.1")]
    marked = [r.split("|")[2].strip() for r in text.splitlines() if r.startswith("| 10 | ")]
    assert "0 (default)" in marked and "1 (smoothed_temperature)" in marked
    record = raw[study._key(study.QUICK_TASK, 0, 4, 0.0)]
    assert set(record["grid"]) == {f"{s:g}|{a:g}" for s in study.STRENGTHS
                                   for a in study.PSEUDO_COUNTS}
    study.main(["--quick", "--redraw", "--out", str(tmp_path)])
    assert (tmp_path / "one_run_calibration.md").read_text() == text
