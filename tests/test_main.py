"""``python -m funcopt demo``: the main job, at a small size (``make demo`` runs it in full)."""

from __future__ import annotations

import re

import pytest

from funcopt.__main__ import main as cli


def test_demo_prints_both_losses_their_difference_and_step_times(capsys):
    assert cli(["demo", "--epochs", "2", "--steps", "5", "--no-figures"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == [
        "epoch", "loss", "funcopt", "loss", "optax", "max|Δθ|", "step", "funcopt", "step", "optax"
    ]  # fmt: skip
    rows = [re.findall(r"[-+.\deE]+", line) for line in lines[1:]]
    assert [int(r[0]) for r in rows] == [1, 2]
    for _, loss_funcopt, loss_optax, diff, t_funcopt, t_optax in rows:
        # same initialisation, same batches: funcopt.adam and optax.adam agree to rounding
        assert abs(float(loss_funcopt) - float(loss_optax)) <= 1e-6 * float(loss_optax)
        assert float(diff) < 1e-5
        assert float(t_funcopt) > 0 and float(t_optax) > 0
    assert float(rows[1][1]) < float(rows[0][1])  # it trains


def test_unknown_arguments_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(["demo", "--no-such-flag"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
