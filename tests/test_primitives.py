"""Each primitive against its equation, written out by hand, step by step."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcopt

G = [np.array([1.0, -2.0, 0.5]), np.array([-3.0, 0.25, 2.0]), np.array([0.5, 0.5, -1.0])]


def _steps(tx, grads, params=None, maybe_jit=lambda f: f):
    p = jnp.zeros(3) if params is None else params
    state = tx.init(p)
    update = maybe_jit(tx.update)
    outs = []
    for g in grads:
        u, state = update(jnp.asarray(g, jnp.float32), state, p)
        outs.append(np.asarray(u))
    return outs, state


@pytest.mark.parametrize(
    ("damped", "nesterov"), [(True, False), (False, False), (True, True), (False, True)]
)
def test_scale_by_momentum(damped, nesterov, maybe_jit):
    beta = 0.8
    outs, state = _steps(
        funcopt.scale_by_momentum(beta, damped=damped, nesterov=nesterov), G, maybe_jit=maybe_jit
    )
    m = np.zeros(3)
    w = 1 - beta if damped else 1.0
    for g, u in zip(G, outs, strict=True):
        m = beta * m + w * g
        want = beta * m + w * g if nesterov else m
        np.testing.assert_allclose(u, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.m, m, rtol=1e-6)


def test_scale_by_momentum_zero_decay_is_identity():
    outs, _ = _steps(funcopt.scale_by_momentum(0.0), G)
    np.testing.assert_allclose(outs, G, rtol=0)


def test_bias_correction_counts_from_one(maybe_jit):
    beta = 0.9
    outs, state = _steps(funcopt.bias_correction(beta), G, maybe_jit=maybe_jit)
    for t, (g, u) in enumerate(zip(G, outs, strict=True), start=1):
        np.testing.assert_allclose(u, g / (1 - beta**t), rtol=1e-6)
    assert int(state.count) == 3


def test_momentum_then_bias_correction_is_a_weighted_mean():
    """m̂_t = Σ β^{t−k} g_k / Σ β^{t−k}: the chapter's derivation, checked numerically."""
    beta = 0.7
    tx = funcopt.chain(funcopt.scale_by_momentum(beta), funcopt.bias_correction(beta))
    outs, _ = _steps(tx, G)
    for t in range(1, 4):
        w = beta ** np.arange(t - 1, -1, -1)
        np.testing.assert_allclose(
            outs[t - 1], (w[:, None] * np.array(G[:t])).sum(0) / w.sum(), rtol=1e-6
        )


@pytest.mark.parametrize(
    ("kwargs", "denominator"),
    [
        (dict(eps=1e-3, eps_in_sqrt=True), lambda v: np.sqrt(v + 1e-3)),
        (dict(eps=1e-3, eps_in_sqrt=False), lambda v: np.sqrt(v) + 1e-3),
        (dict(eps=1e-3, eps_in_sqrt=False, eps_root=1e-2), lambda v: np.sqrt(v + 1e-2) + 1e-3),
        (dict(eps=0.0), np.sqrt),
    ],
    ids=["inside", "outside", "outside+root", "chapter"],
)
def test_scale_by_rms_eps_placement(kwargs, denominator, maybe_jit):
    beta = 0.9
    outs, state = _steps(funcopt.scale_by_rms(beta, **kwargs), G, maybe_jit=maybe_jit)
    v = np.zeros(3)
    for g, u in zip(G, outs, strict=True):
        v = beta * v + (1 - beta) * g**2
        np.testing.assert_allclose(u, g / denominator(v), rtol=1e-5)
    np.testing.assert_allclose(state.v, v, rtol=1e-6)


def test_scale_by_rms_bias_correction_and_initial_scale():
    beta = 0.9
    outs, _ = _steps(funcopt.scale_by_rms(beta, 0.0, bias_correction=True, initial_scale=1.0), G)
    v = np.ones(3)
    for t, (g, u) in enumerate(zip(G, outs, strict=True), start=1):
        v = beta * v + (1 - beta) * g**2
        np.testing.assert_allclose(u, g / np.sqrt(v / (1 - beta**t)), rtol=1e-5)


def test_scale_by_rms_measures_the_raw_gradient_not_its_numerator():
    """v comes from g even when the numerator is a momentum average."""
    b1, b2 = 0.5, 0.9
    tx = funcopt.scale_by_rms(b2, 0.0, numerator=funcopt.scale_by_momentum(b1))
    outs, state = _steps(tx, G)
    m, v = np.zeros(3), np.zeros(3)
    for g, u in zip(G, outs, strict=True):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        np.testing.assert_allclose(u, m / np.sqrt(v), rtol=1e-5)
    np.testing.assert_allclose(state.numerator.m, m, rtol=1e-6)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_scale_by_stddev_is_finite_for_a_constant_gradient(bias_correction, maybe_jit):
    """v̂ − m̂² is a variance (≥ 0 exactly); rounding must not push it below 0 into NaN."""
    tx = funcopt.scale_by_stddev(0.9, 1e-8, bias_correction=bias_correction)
    g = {"w": jnp.linspace(-300.0, 300.0, 4001)}
    state = tx.init(g)
    update = maybe_jit(tx.update)
    for _ in range(30):
        u, state = update(g, state)
        assert bool(jnp.all(jnp.isfinite(u["w"])))
    # where it is exact: g / sqrt(var + ε) with var ≥ 0, never larger than g / sqrt(ε)
    assert bool(jnp.all(jnp.abs(u["w"]) <= jnp.abs(g["w"]) / jnp.sqrt(1e-8) * (1 + 1e-6)))


def test_scale_by_stddev_matches_optax():
    grads = [jnp.asarray(g, jnp.float32) for g in G]
    ours, theirs = funcopt.scale_by_stddev(0.9, 1e-4), optax.scale_by_stddev(0.9, 1e-4)
    so, st = ours.init(jnp.zeros(3)), theirs.init(jnp.zeros(3))
    for g in grads:
        uo, so = ours.update(g, so)
        ut, st = theirs.update(g, st)
        np.testing.assert_allclose(uo, ut, rtol=1e-6)


def test_moment_dtype_stores_rounded_moment_and_uses_it():
    tx = funcopt.scale_by_momentum(0.9, moment_dtype=jnp.bfloat16)
    outs, state = _steps(tx, G)
    assert state.m.dtype == jnp.bfloat16
    np.testing.assert_array_equal(outs[-1], np.asarray(state.m, np.float32))


def test_scale_and_learning_rate(maybe_jit):
    outs, _ = _steps(funcopt.scale(-0.5), G, maybe_jit=maybe_jit)
    np.testing.assert_allclose(outs[0], -0.5 * G[0], rtol=0)
    outs, _ = _steps(funcopt.scale_by_learning_rate(0.1), G, maybe_jit=maybe_jit)
    np.testing.assert_allclose(outs[1], -0.1 * G[1], rtol=1e-7)
    outs, _ = _steps(funcopt.scale_by_learning_rate(0.1, flip_sign=False), G)
    np.testing.assert_allclose(outs[1], 0.1 * G[1], rtol=1e-7)


def test_learning_rate_schedule_is_read_at_count_from_zero():
    schedule = lambda count: 1.0 / (1.0 + count.astype(jnp.float32))
    outs, state = _steps(funcopt.scale_by_learning_rate(schedule), G)
    seen = [u / -g for g, u in zip(G, outs, strict=True)]
    np.testing.assert_allclose(seen, [[1.0] * 3, [0.5] * 3, [1 / 3] * 3], rtol=1e-6)
    assert int(state.count) == 3


def test_add_decayed_weights_with_masks(maybe_jit):
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    grads = {"w": jnp.array([0.5, 0.5]), "b": jnp.array([0.5])}
    want = {"w": np.array([0.6, 0.7]), "b": np.array([0.5])}
    for mask in ({"w": True, "b": False}, lambda p: {"w": True, "b": False}):
        tx = funcopt.add_decayed_weights(0.1, mask)
        u, _ = maybe_jit(tx.update)(grads, tx.init(params), params)
        chex.assert_trees_all_close(u, want, rtol=1e-6)
    tx = funcopt.add_decayed_weights(0.1)
    u, _ = tx.update(grads, tx.init(params), params)
    chex.assert_trees_all_close(u["b"], np.array([0.8]), rtol=1e-6)


def test_add_decayed_weights_needs_params():
    tx = funcopt.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_primitives_keep_distinct_state_buffers():
    """Donation needs every state leaf to own its buffer (no [zeros] * k)."""
    state = funcopt.adam(1e-3).init({"a": jnp.ones(4), "b": jnp.ones(4)})
    leaves = [x for x in jax.tree.leaves(state) if x.size]
    pointers = [x.unsafe_buffer_pointer() for x in leaves]
    assert len(set(pointers)) == len(pointers)
