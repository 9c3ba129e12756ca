"""The protocol: identity, chain, apply_updates and the factory cache."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcopt


def test_identity_passes_updates_through(maybe_jit):
    tx = funcopt.identity()
    g = {"a": jnp.arange(3.0), "b": None}
    u, state = maybe_jit(tx.update)(g, tx.init(g))
    chex.assert_trees_all_equal(u, g)
    assert state == funcopt.EmptyState()


def test_chain_applies_in_order_and_keeps_a_state_per_member(maybe_jit):
    tx = funcopt.chain(funcopt.scale(2.0), funcopt.scale_by_momentum(0.5), funcopt.scale(-1.0))
    state = tx.init(jnp.zeros(2))
    assert isinstance(state, tuple) and len(state) == 3
    u, state = maybe_jit(tx.update)(jnp.array([1.0, 3.0]), state)
    # 2 g, then m = 0.5 · 0 + 0.5 · 2 g = g, then − g
    np.testing.assert_allclose(u, [-1.0, -3.0])
    np.testing.assert_allclose(state[1].m, [1.0, 3.0])


def test_chain_rejects_non_transforms():
    with pytest.raises(TypeError, match="argument 1 is int"):
        funcopt.chain(funcopt.identity(), 3)


def test_chain_equals_optax_chain():
    params = jnp.linspace(-1, 1, 5)
    ours = funcopt.chain(optax.clip(0.5), funcopt.scale(-0.1))
    theirs = optax.chain(optax.clip(0.5), optax.scale(-0.1))
    u1, _ = ours.update(params * 3, ours.init(params))
    u2, _ = theirs.update(params * 3, theirs.init(params))
    chex.assert_trees_all_close(u1, u2)


def test_apply_updates_keeps_each_parameter_dtype():
    params = {"f32": jnp.ones(2), "bf16": jnp.ones(2, jnp.bfloat16), "none": None}
    updates = {"f32": jnp.full(2, 0.5), "bf16": jnp.full(2, 0.5, jnp.float32), "none": None}
    new = funcopt.apply_updates(params, updates)
    assert new["f32"].dtype == jnp.float32 and new["bf16"].dtype == jnp.bfloat16
    assert new["none"] is None
    np.testing.assert_allclose(np.asarray(new["bf16"], np.float32), [1.5, 1.5])


def test_apply_updates_equals_optax():
    params = {"a": jnp.arange(4.0), "b": [jnp.ones((2, 2))]}
    updates = jax.tree.map(lambda x: 0.25 * x - 1, params)
    chex.assert_trees_all_equal(
        funcopt.apply_updates(params, updates), optax.apply_updates(params, updates)
    )


def test_factories_cache_hashable_arguments_only():
    assert funcopt.scale(2.0) is funcopt.scale(2.0)
    assert funcopt.scale(2.0) is not funcopt.scale(2)  # typed: 2 and 2.0 differ
    arr = jnp.asarray(2.0)
    assert funcopt.scale(arr) is not funcopt.scale(arr)  # arrays are unhashable: fresh


def test_same_transform_does_not_recompile_as_static_argument():
    traces = []

    def step(tx, g, state):
        traces.append(1)  # runs once per trace, i.e. once per compilation
        return tx.update(g, state)

    step = jax.jit(step, static_argnums=0)
    g = jnp.ones(3)
    for _ in range(3):
        tx = funcopt.adam(1e-3)  # rebuilt each time, as in a training script
        step(tx, g, tx.init(g))
    assert len(traces) == 1
