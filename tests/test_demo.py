import numpy as np

from sksnapshot._demo import main, run


def test_demo_prints_an_honest_table():
    lines = []
    rows = run(max_epochs=3, lr=0.1, n_snapshots=3, seeds=(0,), print_fn=lines.append)
    text = "\n".join(lines)
    assert "single net (1 cosine cycle)" in text and "snapshot ensemble (3 cycles)" in text
    assert "| method | test accuracy | test log-loss |" in text
    for results in rows.values():
        acc, nll, seconds = results[0]
        assert 0.1 < acc <= 1.0 and np.isfinite(nll) and seconds > 0


def test_demo_command_line_quick_mode(capsys):
    main(["--quick", "--snapshots", "2"])
    out = capsys.readouterr().out
    assert "5 epochs" in out and "snapshot ensemble (2 cycles)" in out
