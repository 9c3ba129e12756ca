"""Optimistic gradient methods: against optax, the correction written out, and a game.

The 1000-step optax comparisons of ``optimistic_gradient_descent`` and
``optimistic_adam_v2`` are rows of ``registry`` (``test_oracles.py``).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, random_params, run_against_optax

import funcopt


def test_the_correction_written_out(maybe_jit):
    """u₁ = α g₁, then u_t = (α + β) g_t − β g_{t−1}."""
    alpha, beta = 0.7, 0.4
    tx = funcopt.scale_by_optimistic_gradient(alpha, beta)
    update = maybe_jit(tx.update)
    grads = np.random.default_rng(0).normal(size=(6, 3))
    state = tx.init(jnp.zeros(3))
    for t, g in enumerate(grads):
        u, state = update(jnp.asarray(g, jnp.float32), state)
        previous = grads[t - 1] if t else g
        np.testing.assert_allclose(u, (alpha + beta) * g - beta * previous, rtol=1e-6, atol=1e-6)


def test_optimism_makes_a_bilinear_game_converge():
    """min_x max_y x·y: simultaneous descent–ascent spirals out, the optimistic one in."""

    def distance_after(tx, steps=1000):
        z = {"x": jnp.array(1.0), "y": jnp.array(1.0)}
        state = tx.init(z)
        for _ in range(steps):
            g = {"x": z["y"], "y": -z["x"]}  # descend in x, ascend in y
            u, state = tx.update(g, state, z)
            z = funcopt.apply_updates(z, u)
        return float(jnp.hypot(z["x"], z["y"]))

    start = 2**0.5
    assert distance_after(funcopt.sgd(0.1)) > 10 * start
    assert distance_after(funcopt.optimistic_gradient_descent(0.1)) < 0.01 * start


def test_deprecated_optimistic_adam_matches_optax():
    params = random_params(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = optax.optimistic_adam(0.01, optimism=0.02)
    with pytest.warns(DeprecationWarning, match="optimistic_adam_v2"):
        ours = funcopt.optimistic_adam(0.01, optimism=0.02)
    got, want = run_against_optax(ours, theirs, params, 300)
    assert_rel_close(got, want, 1e-5)


def test_deprecated_optimistic_adam_refuses_a_schedule():
    """Its learning rate is the correction's α, a number (as in optax)."""
    with pytest.raises(funcopt.HyperParameterError, match="learning_rate"):
        funcopt.optimistic_adam(funcopt.constant_schedule(0.1))


def test_optimistic_adam_v2_takes_a_schedule():
    schedule = funcopt.linear_schedule(0.1, 0.0, 10)
    tx = funcopt.optimistic_adam_v2(schedule, alpha=0.5)
    theirs = optax.optimistic_adam_v2(optax.linear_schedule(0.1, 0.0, 10), alpha=0.5)
    params = {"w": jnp.ones(3)}
    got, want = run_against_optax(tx, theirs, params, 12)
    assert_rel_close(got, want, 1e-6)
    assert jax.tree.structure(got) == jax.tree.structure(params)
