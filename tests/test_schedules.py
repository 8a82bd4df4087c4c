import numpy as np
import pytest

from sksnapshot import cosine_annealing_lr, cycle_boundaries, snapshot_iterations


@pytest.mark.parametrize("n_iter, n_cycles", [(10, 3), (100, 5), (21, 4), (7, 7), (1000, 9), (5, 1)])
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
        expected = min_lr + (lr - min_lr) / 2 * (1 + np.cos(np.pi * (steps - start) / (stop - start)))
        np.testing.assert_allclose(got[start:stop], expected)
        assert got[start] == pytest.approx(lr)
        assert np.all(np.diff(got[start:stop]) < 0)
        assert got[stop - 1] < min_lr + (lr - min_lr) * 0.2


def test_cosine_scalar_and_range_checks():
    assert cosine_annealing_lr(0, 10, 2, lr=1.0) == pytest.approx(1.0)
    assert isinstance(cosine_annealing_lr(3, 10, 2, lr=1.0), float)
    with pytest.raises(ValueError, match="Iterations must lie in"):
        cosine_annealing_lr(10, 10, 2, lr=1.0)
