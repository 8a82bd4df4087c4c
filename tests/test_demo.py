import numpy as np

from sksnapshot._demo import main, run


def test_demo_prints_an_honest_table():
    lines = []
    rows = run(max_epochs=3, lr=0.1, n_snapshots=3, seeds=(0,), print_fn=lines.append)
    text = "\n".join(lines)
    for name in ("single net (1 cosine cycle)", "single net + temperature",
                 "snapshot ensemble (3 cycles)"):
        assert f"| {name} |" in text
    assert "| method | snapshots | test accuracy | test log-loss |" in text
    assert "paired by seed" in text
    for results in rows.values():
        acc, nll, seconds, _ = results[0]
        assert 0.1 < acc <= 1.0 and np.isfinite(nll) and seconds > 0
    # The calibrated row is the single net itself: same labels, other probabilities.
    # The same net's labels, in one process: exact.
    assert rows["single net + temperature"][0][0] == rows["single net (1 cosine cycle)"][0][0]
    assert rows["snapshot ensemble (3 cycles)"][0][3] == 3


def test_demo_command_line_quick_mode(capsys):
    main(["--quick"])
    out = capsys.readouterr().out
    assert "5 epochs" in out and "| snapshot ensemble (defaults) | 1.0 |" in out
