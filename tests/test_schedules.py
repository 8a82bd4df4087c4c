import numpy as np
import pytest

from sksnapshot.schedules import (
    RESTART_WARMUP,
    cosine_annealing_lr,
    cosine_warmup_lr,
    cycle_boundaries,
    linear_cycles_lr,
    linear_snapshot_iterations,
    resolve_schedule,
    snapshot_iterations,
)


@pytest.mark.parametrize("n_iter, n_cycles",
                         [(10, 3), (100, 5), (21, 4), (7, 7), (1000, 9), (5, 1)])
def test_boundaries_give_exactly_n_cycles(n_iter, n_cycles):
    bounds = cycle_boundaries(n_iter, n_cycles)
    assert bounds[0] == 0 and bounds[-1] == n_iter
    assert len(bounds) == n_cycles + 1
    assert np.all(np.diff(bounds) >= 1)
    expected = [int(np.floor(k * n_iter / n_cycles + 0.5)) for k in range(n_cycles + 1)]
    assert bounds.tolist() == expected


def test_uneven_budget_cycle_lengths_differ_by_at_most_one():
    lengths = np.diff(cycle_boundaries(22, 4))
    assert lengths.tolist() == [6, 5, 6, 5]


def test_fewer_iterations_than_cycles_is_an_error():
    with pytest.raises(ValueError, match="Cannot split 3 training iterations into 4 cycles"):
        cycle_boundaries(3, 4)


def test_snapshot_iterations_are_cycle_ends():
    assert snapshot_iterations(22, 4).tolist() == [5, 10, 16, 21]
    assert len(snapshot_iterations(1000, 9)) == 9


def test_cosine_matches_the_paper_formula_in_every_cycle():
    n_iter, n_cycles, lr, min_lr = 22, 4, 0.2, 0.01
    t = np.arange(n_iter)
    got = cosine_annealing_lr(t, n_iter, n_cycles, lr=lr, min_lr=min_lr)
    bounds = cycle_boundaries(n_iter, n_cycles)
    for k in range(n_cycles):
        start, stop = bounds[k], bounds[k + 1]
        steps = np.arange(start, stop)
        phase = (steps - start) / (stop - start)
        expected = min_lr + (lr - min_lr) / 2 * (1 + np.cos(np.pi * phase))
        np.testing.assert_allclose(got[start:stop], expected)
        assert got[start] == pytest.approx(lr)
        assert np.all(np.diff(got[start:stop]) < 0)
        assert got[stop - 1] < min_lr + (lr - min_lr) * 0.2


def test_cosine_scalar_and_range_checks():
    assert cosine_annealing_lr(0, 10, 2, lr=1.0) == pytest.approx(1.0)
    assert isinstance(cosine_annealing_lr(3, 10, 2, lr=1.0), float)
    with pytest.raises(ValueError, match="Iterations must lie in"):
        cosine_annealing_lr(10, 10, 2, lr=1.0)


def test_warmup_restarts_ramp_up_then_follow_the_cosine():
    n_iter, n_cycles, lr, min_lr, warmup = 40, 4, 0.2, 0.01, 0.3
    t = np.arange(n_iter)
    got = cosine_warmup_lr(t, n_iter, n_cycles, lr=lr, min_lr=min_lr, warmup=warmup)
    plain = cosine_annealing_lr(t, n_iter, n_cycles, lr=lr, min_lr=min_lr)
    np.testing.assert_allclose(got[:10], plain[:10])  # the first cycle starts from scratch
    for start in (10, 20, 30):
        cycle = got[start:start + 10]
        assert cycle[0] == pytest.approx(min_lr)  # no jump at the restart
        assert np.all(np.diff(cycle[:3]) > 0)  # rising over the first 30 %
        np.testing.assert_allclose(np.diff(cycle[:4], 2), 0, atol=1e-12)  # linearly
        assert cycle[3] == pytest.approx(lr)  # the peak where the ramp ends
        assert np.all(np.diff(cycle[3:]) < 0)  # then the cosine down
        assert cycle[-1] < min_lr + (lr - min_lr) * 0.2
    # Snapshots where the cosine schedule takes them, at the cycles' low points.
    ends = snapshot_iterations(n_iter, n_cycles)
    assert resolve_schedule("cosine_warmup")[1] is snapshot_iterations
    assert [got[end] for end in ends] == [got[s + 3:s + 10].min() for s in (0, 10, 20, 30)]
    np.testing.assert_allclose(
        cosine_warmup_lr(t, n_iter, n_cycles, lr=lr, min_lr=min_lr, warmup=0.0), plain)
    assert isinstance(cosine_warmup_lr(12, n_iter, n_cycles, lr=lr), float)
    with pytest.raises(ValueError, match="warmup"):
        cosine_warmup_lr(0, 10, 2, lr=0.1, warmup=1.0)


def test_linear_schedule_warms_up_then_cycles_between_two_rates():
    n_iter, n_cycles, lr, min_lr = 40, 4, 0.2, 0.001
    lrs = linear_cycles_lr(np.arange(n_iter), n_iter, n_cycles, lr=lr, min_lr=min_lr)
    assert lrs[0] == pytest.approx(lr) and lrs[19] == pytest.approx(min_lr)
    assert np.all(np.diff(lrs[:20]) < 0)  # the warm-up decays linearly
    np.testing.assert_allclose(np.diff(lrs[:20], 2), 0, atol=1e-12)
    ends = linear_snapshot_iterations(n_iter, n_cycles)
    assert ends.tolist() == [24, 29, 34, 39]
    np.testing.assert_allclose(lrs[ends], min_lr)  # a snapshot at every low point
    high = min_lr + 0.5 * (lr - min_lr)
    for start in (20, 25, 30, 35):
        cycle = lrs[start:start + 5]
        assert cycle.max() <= high + 1e-12 and cycle.max() > min_lr
        assert cycle.argmax() not in (0, 4)


def test_linear_schedule_needs_room_for_its_cycles():
    with pytest.raises(ValueError, match="too few for 6 cycles"):
        linear_snapshot_iterations(10, 6)
    with pytest.raises(ValueError, match="warmup must lie in"):
        linear_cycles_lr(0, 10, 2, lr=0.1, warmup=1.0)


def test_resolve_schedule():
    # Each schedule declares whether "auto" may cut it and how its restarts ramp up.
    assert resolve_schedule("cosine")[:] == (cosine_annealing_lr, snapshot_iterations, True, 0.0)
    assert resolve_schedule("linear")[:] == (linear_cycles_lr, linear_snapshot_iterations,
                                             False, 0.0)
    assert resolve_schedule("cosine_warmup")[:] == (cosine_warmup_lr, snapshot_iterations, True,
                                                    RESTART_WARMUP)
    custom = lambda t, n_iter, n_cycles, lr, min_lr: np.full(len(t), lr)  # noqa: E731
    assert resolve_schedule(custom)[:] == (custom, snapshot_iterations, False, 0.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        resolve_schedule("step")


def test_public_helpers_validate_parameter_types_as_the_estimators_do():
    from sksnapshot._compat import InvalidParameterError
    from sksnapshot.metrics import uncertainty_decomposition
    from sksnapshot.selection import member_scores

    with pytest.raises(InvalidParameterError, match="'n_iter' parameter of cycle_boundaries"):
        cycle_boundaries("10", 2)
    with pytest.raises(InvalidParameterError, match="'probas' parameter of member_scores"):
        member_scores(3, [0])
    with pytest.raises(InvalidParameterError,
                       match="'weights' parameter of uncertainty_decomposition"):
        uncertainty_decomposition([[[1.0]]], weights="uniform")
