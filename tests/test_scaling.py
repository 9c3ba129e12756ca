"""Step sizes, weight decay, signs and per-layer ratios (funcopt.scaling), by hand."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcopt

G = [np.array([1.0, -2.0, 0.5]), np.array([-3.0, 0.25, 2.0]), np.array([0.5, 0.5, -1.0])]
RNG = np.random.default_rng(0)
GRADS = [RNG.normal(size=(4, 3)) for _ in range(4)]
PARAMS = RNG.normal(size=(4, 3))


def _steps(tx, grads, params=None, maybe_jit=lambda f: f):
    p = jnp.zeros(np.shape(grads[0])) if params is None else jnp.asarray(params, jnp.float32)
    state = tx.init(p)
    update = maybe_jit(tx.update)
    outs = []
    for g in grads:
        u, state = update(jnp.asarray(g, jnp.float32), state, p)
        outs.append(np.asarray(u, np.float64))
    return outs, state


def test_scale_and_learning_rate(maybe_jit):
    outs, _ = _steps(funcopt.scale(-0.5), G, maybe_jit=maybe_jit)
    np.testing.assert_allclose(outs[0], -0.5 * G[0], rtol=0)
    outs, _ = _steps(funcopt.scale_by_learning_rate(0.1), G, maybe_jit=maybe_jit)
    np.testing.assert_allclose(outs[1], -0.1 * G[1], rtol=1e-7)
    outs, _ = _steps(funcopt.scale_by_learning_rate(0.1, flip_sign=False), G)
    np.testing.assert_allclose(outs[1], 0.1 * G[1], rtol=1e-7)


def test_a_constant_learning_rate_keeps_no_state():
    assert funcopt.scale_by_learning_rate(0.1).init(jnp.zeros(3)) == funcopt.EmptyState()


def test_learning_rate_schedule_is_read_at_count_from_zero(maybe_jit):
    schedule = lambda count: 1.0 / (1.0 + count.astype(jnp.float32))
    outs, state = _steps(funcopt.scale_by_learning_rate(schedule), G, maybe_jit=maybe_jit)
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


def test_add_decayed_weights_with_a_schedule(maybe_jit):
    schedule = funcopt.linear_schedule(0.1, 0.0, 2)
    tx = funcopt.add_decayed_weights(schedule)
    p = jnp.array([10.0])
    outs, _ = _steps(tx, [np.zeros(1)] * 3, params=p, maybe_jit=maybe_jit)
    np.testing.assert_allclose(np.ravel(outs), [1.0, 0.5, 0.0], rtol=1e-6)


def test_transforms_that_need_params_say_so():
    for tx in [
        funcopt.add_decayed_weights(0.1),
        funcopt.scale_by_trust_ratio(),
        funcopt.scale_by_param_block_rms(),
    ]:
        with pytest.raises(ValueError, match="needs the current parameters"):
            tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_sign():
    outs, _ = _steps(funcopt.scale_by_sign(), GRADS)
    np.testing.assert_array_equal(outs[0], np.sign(GRADS[0]))


def test_trust_ratio_and_param_block_rms_follow_their_equations(maybe_jit, strict_dtypes):
    outs, _ = _steps(funcopt.scale_by_trust_ratio(0.0, 0.5, 0.1), GRADS, PARAMS, maybe_jit)
    for x, u in zip(GRADS, outs, strict=True):
        want = x * 0.5 * np.linalg.norm(PARAMS) / (np.linalg.norm(x) + 0.1)
        np.testing.assert_allclose(u, want, rtol=2e-6)
    outs, _ = _steps(funcopt.scale_by_param_block_rms(1e-3), GRADS, PARAMS, maybe_jit)
    for x, u in zip(GRADS, outs, strict=True):
        np.testing.assert_allclose(u, x * np.sqrt(np.mean(PARAMS**2)), rtol=2e-6)


def test_trust_ratio_is_one_for_zero_params():
    tx = funcopt.scale_by_trust_ratio()
    g = jnp.ones(3)
    out, _ = tx.update(g, tx.init(g), jnp.zeros(3))
    np.testing.assert_array_equal(out, g)


def test_delta_rms_follows_its_equation(maybe_jit, strict_dtypes):
    outs, _ = _steps(funcopt.scale_by_delta_rms(0.9, 0.1), GRADS, maybe_jit=maybe_jit)
    x_acc = 0.0
    for x, u in zip(GRADS, outs, strict=True):
        want = np.sqrt(x_acc + 0.1) * x
        x_acc = 0.9 * x_acc + 0.1 * want * want
        np.testing.assert_allclose(u, want, rtol=2e-6, atol=2e-6)


def test_elementwise_declarations():
    assert funcopt.scale(2.0).elementwise and funcopt.scale_by_sign().elementwise
    assert funcopt.add_decayed_weights(0.1).elementwise
    assert not funcopt.add_decayed_weights(0.1, mask={"w": True}).elementwise
    assert not funcopt.scale_by_trust_ratio().elementwise
    assert not funcopt.scale_by_param_block_rms().elementwise


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: funcopt.scale(float("nan")), "step_size"),
        (lambda: funcopt.scale(float("inf")), "step_size"),
        (lambda: funcopt.scale_by_learning_rate(-1.0), "learning_rate"),
        (lambda: funcopt.scale_by_learning_rate("1e-3"), "learning_rate"),
        (lambda: funcopt.add_decayed_weights(-0.1), "weight_decay"),
        (lambda: funcopt.scale_by_trust_ratio(trust_coefficient=-1.0), "trust_coefficient"),
        (lambda: funcopt.scale_by_param_block_rms(-1.0), "min_scale"),
        (lambda: funcopt.scale_by_delta_rms(rho=1.0), "rho"),
    ],
)
def test_invalid_hyperparameters_are_named(make, argument):
    with pytest.raises(funcopt.HyperParameterError, match=argument):
        make()


# ---- squash and normalize_by_update_norm ------------------------------------------------


def test_squash_modes_written_out():
    g = jnp.array([-3.0, -0.4, 0.0, 0.2, 2.5])
    state = funcopt.squash().init(g)
    for mode, want in [
        ("hard", np.sign(np.asarray(g))),
        ("smooth", np.tanh(2.0 * np.asarray(g))),
        ("refined", np.clip(np.asarray(g), -1, 1)),
    ]:
        u, _ = funcopt.squash(mode, 2.0).update(g, state)
        np.testing.assert_allclose(u, want, rtol=1e-6)
    with pytest.raises(funcopt.HyperParameterError, match=r"mode must be one of .*mode='soft'"):
        funcopt.squash("soft")


def test_normalize_by_update_norm_against_the_global_norm():
    g = {"a": jnp.array([3.0, 0.0]), "b": [jnp.array([[4.0]]), jnp.array(-12.0)]}
    for scale_factor, eps in [(1.0, 1e-6), (-2.0, 0.5)]:
        tx = funcopt.normalize_by_update_norm(scale_factor, eps)
        u, _ = tx.update(g, tx.init(g))
        want = jax.tree.map(lambda x: scale_factor * x / (13.0 + eps), g)
        chex.assert_trees_all_close(u, want, rtol=1e-6)
        theirs, _ = optax.normalize_by_update_norm(scale_factor, eps).update(g, None)
        chex.assert_trees_all_close(u, theirs, rtol=1e-6)
