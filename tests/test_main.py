"""``python -m funcopt demo``: the main job, at a small size (``make demo`` runs it in full),
and the command line's help."""

from __future__ import annotations

import contextlib
import io
import re

import jax
import jax.numpy as jnp
import optax
import pytest

import funcopt
from funcopt import __main__ as m
from funcopt.__main__ import main as cli

EPOCHS, STEPS = 2, 5


@pytest.fixture(scope="module")
def demo_run():
    """The demo's printed lines and exit status at a small size."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli(["demo", "--epochs", str(EPOCHS), "--steps", str(STEPS), "--no-figures"])
    return status, out.getvalue().strip().splitlines()


def _header_index(lines):
    return next(i for i, line in enumerate(lines) if line.split()[:1] == ["epoch"])


def test_demo_prints_both_losses_their_difference_and_step_times(demo_run):
    status, lines = demo_run
    assert status == 0
    h = _header_index(lines)
    assert lines[h].split() == [
        "epoch", "loss", "funcopt", "loss", "optax", "max|Δθ|", "step", "funcopt", "step", "optax"
    ]  # fmt: skip
    rows = [re.findall(r"[-+.\deE]+", line) for line in lines[h + 1 : h + 1 + EPOCHS]]
    assert [int(r[0]) for r in rows] == [1, 2]
    for _, loss_funcopt, loss_optax, diff, t_funcopt, t_optax in rows:
        # same initialisation, same batches: funcopt.adam and optax.adam agree to rounding
        assert abs(float(loss_funcopt) - float(loss_optax)) <= 1e-6 * float(loss_optax)
        assert float(diff) < 1e-5
        assert float(t_funcopt) > 0 and float(t_optax) > 0
    assert float(rows[1][1]) < float(rows[0][1])  # it trains


def test_demo_says_what_it_trains_on_what_and_how_long_before_training(demo_run):
    _, lines = demo_run
    before = "\n".join(lines[: _header_index(lines)])
    assert "MLP 16 → 64 → 64 → 1" in before
    n_params = 16 * 64 + 64 + 64 * 64 + 64 + 64 + 1
    assert f"{n_params:,} parameters" in before
    assert "synthetic regression" in before and "batch of 128" in before
    assert "funcopt.adam(0.003) and optax.adam(0.003)" in before
    assert f"{EPOCHS} epochs × {STEPS} steps = {EPOCHS * STEPS} steps each" in before
    assert "compiling" in before  # progress before the first row


def _independent_max_diff(epochs, steps):
    """The demo's run redone here: its initialisation and batches, this test's own loss,
    loop and jit, each optimizer on its own."""
    params0, batch_at = m.demo_problem()

    def loss(params, x, y):
        for layer in params[:-1]:
            x = jnp.tanh(x @ layer["w"] + layer["b"][None, :])
        return jnp.mean(jnp.square(x @ params[-1]["w"] + params[-1]["b"][None, :] - y))

    finals = []
    for tx, apply in [
        (funcopt.adam(3e-3), funcopt.apply_updates),
        (optax.adam(3e-3), optax.apply_updates),
    ]:

        @jax.jit
        def step(p, s, x, y, tx=tx, apply=apply):
            _, g = jax.value_and_grad(loss)(p, x, y)  # as the demo: the same XLA program
            u, s = tx.update(g, s, p)
            return apply(p, u), s

        p, s = params0, tx.init(params0)
        for epoch in range(1, epochs + 1):
            for i in range(steps):
                p, s = step(p, s, *batch_at(epoch, i))
        finals.append(p)
    return max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1]), strict=True)
    )


def test_demo_ends_with_a_verdict_whose_number_is_the_real_max_difference(demo_run):
    _, lines = demo_run
    last = lines[-1]
    match = re.fullmatch(
        r"funcopt\.adam and optax\.adam agree to (\S+) \(max \|Δθ\|\) after "
        rf"{EPOCHS} epochs of {STEPS} steps",
        last,
    )
    assert match, last
    reported = float(match.group(1))
    # the same number as the last epoch's row, and as an independent computation
    assert reported == float(lines[_header_index(lines) + EPOCHS].split()[3])
    assert reported == pytest.approx(_independent_max_diff(EPOCHS, STEPS), rel=0.01)
    assert 0 <= reported < m.AGREE_TOL


def test_verdict_names_the_figures_and_a_disagreement():
    assert m.verdict(2.7e-7, 5, 100, "figures").endswith(
        "agree to 2.70e-07 (max |Δθ|) after 5 epochs of 100 steps; figures in figures/"
    )
    bad = m.verdict(3e-3, 1, 1, None)
    assert "DISAGREE" in bad and "3.00e-03" in bad and "after 1 epoch of 1 step" in bad


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        cli([*argv, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert not re.search(r"``|:func:|:mod:|:data:", text), text  # plain text, no reST
    return text


def test_help_is_plain_and_every_option_says_its_meaning_and_default(capsys):
    top = _help(capsys)
    assert "funcopt's command line" in top
    for command in ("demo", "figures", "bench"):
        assert re.search(rf"^\s+{command}\s+\w", top, re.M), top  # each command explained
    demo = _help(capsys, "demo")
    assert "MLP (16 → 64 → 64 → 1, tanh)" in demo and "optax.adam" in demo
    assert re.search(r"--epochs N\s+epochs to train \(default: 5\)", demo)
    assert re.search(r"--steps N\s+steps per epoch \(default: 100\)", demo)
    assert re.search(r"--out DIR\s+where the figures go \(default: figures\)", demo)
    assert re.search(r"--no-figures\s+train only \(default: figures are written\)", demo)
    figures = _help(capsys, "figures")
    assert re.search(r"--out DIR\s+where the figures go \(default: figures\)", figures)


def test_unknown_arguments_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(["demo", "--no-such-flag"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_epochs_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(["demo", "--epochs", "0"])
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
