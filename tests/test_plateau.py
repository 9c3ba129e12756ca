"""reduce_on_plateau: against optax over 1000 steps, the rule written out, errors, dtypes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import optax.tree
import pytest
from oracle import assert_rel_close, random_params, wavy_grads

import funcopt


def _loss(params):
    leaves = jax.tree.leaves(params)
    return sum(0.5 * (0.5 + i) * jnp.sum((p - 0.3) ** 2) for i, p in enumerate(leaves))


def _run(tx, params, steps, apply_updates):
    """``steps`` updates with ``value=`` the loss at the current params, in one scan."""

    @jax.jit
    def go(params):
        def body(carry, step):
            p, s = carry
            u, s = tx.update(wavy_grads(p, step), s, p, value=_loss(p))
            return (apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))[0]

    return go(params)


PLATEAU = dict(factor=0.5, patience=5, rtol=1e-3, atol=1e-4, cooldown=3, accumulation_size=4)


@pytest.mark.parametrize("kw", [PLATEAU, dict(PLATEAU, min_scale=0.1, cooldown=0)])
def test_matches_optax(kw):
    params = random_params(0)
    ours = funcopt.chain(funcopt.adam(0.05), funcopt.reduce_on_plateau(**kw))
    theirs = optax.chain(optax.adam(0.05), optax.contrib.reduce_on_plateau(**kw))
    got, state = _run(ours, params, 1000, funcopt.apply_updates)
    want, optax_state = _run(theirs, params, 1000, optax.apply_updates)
    assert_rel_close(got, want, 1e-5)
    scale = optax.tree.get(state, "scale")  # optax's field names
    assert float(scale) == float(optax.tree.get(optax_state, "scale"))
    assert float(scale) <= 0.5**3  # the rule did act, several times
    for ours_field, theirs_field in zip(state[-1], optax_state[-1], strict=True):
        assert float(ours_field) == float(theirs_field)


def _written_out(losses, factor, patience, rtol, atol, cooldown, accumulation_size, min_scale):
    """The rule, from Keras's and torch's ReduceLROnPlateau, with averaging of the losses."""
    scale, best, plateau, cool, n, total = 1.0, math.inf, 0, 0, 0, 0.0
    scales = []
    for v in losses:
        n, total = n + 1, total + v
        if n == accumulation_size:
            avg = total / n
            improved = avg < (1 - rtol) * best - atol
            best = avg if improved else best
            plateau = 0 if improved else plateau + 1
            if cool > 0:
                plateau, cool = 0, cool - 1
            elif plateau == patience:
                scale, plateau, cool = max(scale * factor, min_scale), 0, cooldown
            n, total = 0, 0.0
        scales.append(scale)
    return scales


@pytest.mark.parametrize(
    "kw",
    [
        dict(factor=0.5, patience=2, rtol=0.1, atol=0.0, cooldown=0, accumulation_size=1),
        dict(factor=0.5, patience=1, rtol=0.0, atol=0.5, cooldown=2, accumulation_size=2),
        dict(factor=0.1, patience=1, rtol=0.0, atol=0.01, cooldown=1, accumulation_size=1),
    ],
)
def test_the_rule_written_out(kw, maybe_jit):
    losses = [4.0, 3.9, 3.8, 2.0, 2.5, 2.4, 1.0, 1.0, 1.0, 0.99, 3.0, 3.0, 0.5, 0.5, 0.5, 0.5]
    kw = dict(kw, min_scale=0.01)
    tx = funcopt.reduce_on_plateau(**kw)
    update = maybe_jit(lambda g, s, v: tx.update(g, s, value=v))
    state = tx.init(jnp.zeros(2))
    got = []
    for v in losses:
        u, state = update(jnp.ones(2), state, jnp.float32(v))
        got.append(float(u[0]))
        assert float(u[1]) == float(state.scale)
    np.testing.assert_allclose(got, _written_out(losses, **kw), rtol=1e-6)
    assert min(got) < 1.0


def test_needs_the_value():
    tx = funcopt.reduce_on_plateau()
    with pytest.raises(TypeError, match="value="):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_state_dtypes_follow_the_params(strict_dtypes):
    """The scale in the params' lowest float dtype, the losses in their highest (as optax);
    the updates keep each gradient's dtype."""
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(3)}
    tx = funcopt.reduce_on_plateau(patience=1)
    state = tx.init(params)
    assert state.scale.dtype == jnp.bfloat16 and state.best_value.dtype == jnp.float32
    for v in (1.0, 1.0):
        u, state = jax.jit(lambda g, s, v: tx.update(g, s, value=v))(params, state, v)
    assert u["a"].dtype == jnp.bfloat16 and u["b"].dtype == jnp.float32
    assert float(u["b"][0]) == pytest.approx(0.1, rel=1e-3)


def test_hyperparameters_are_leaves():
    traces = []

    @jax.jit
    def step(tx, g, v):
        traces.append(None)
        s = tx.init(g)
        for _ in range(2):
            u, s = tx.update(g, s, value=v)
        return u

    g = jnp.ones(2)
    outs = [step(funcopt.reduce_on_plateau(f, patience=1), g, 1.0) for f in (0.1, 0.2, 0.3)]
    assert len(traces) == 1
    np.testing.assert_allclose([float(u[0]) for u in outs], [0.1, 0.2, 0.3], rtol=1e-6)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(factor=0.0), "factor"),
        (dict(factor=1.0), "factor"),
        (dict(patience=0), "patience"),
        (dict(patience=2.5), "patience"),
        (dict(rtol=1.5), "rtol"),
        (dict(atol=-1.0), "atol"),
        (dict(rtol=0.0, atol=0.0), "rtol and atol"),
        (dict(cooldown=-1), "cooldown"),
        (dict(accumulation_size=0), "accumulation_size"),
        (dict(min_scale=-0.1), "min_scale"),
    ],
)
def test_bad_hyperparameters(kw, name):
    with pytest.raises(funcopt.HyperParameterError, match=name):
        funcopt.reduce_on_plateau(**kw)
