"""Slow weights and target networks (funcopt.averaging) against optax and by hand.

lookahead (with LookaheadParams), incremental_update and periodic_update:

1. optax: 1000 steps on a random nested pytree, float32 ≤ 1e-5, with a funcopt and
   with an optax fast optimizer; 1000 target-network updates.
2. The behaviour written out by hand: the lookahead sync arithmetic, resetting the fast
   optimizer, optax's LookaheadParams at init; values, extra arguments, donation and
   strict dtypes.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from oracle import assert_rel_close, random_params, run, wavy_grads
from support import (
    assert_matches_optax,
    assert_one_trace_for_any_values,
    assert_signature_matches_optax,
    assert_value_reaches_times_value,
    times_value,
)

import funcopt

# A small nested tree (dict, list, a scalar): compile time grows with the leaf count.
SHAPES = {"dense": {"w": (4, 3), "b": (3,)}, "seq": [(), (2, 3)]}


def fast_grads(params, step):
    return wavy_grads(params.fast, step)


# (id, funcopt transform, optax transform). Params are LookaheadParams; the gradient is
# taken at the fast weights.
TABLE = [
    (
        "lookahead",
        lambda: funcopt.lookahead(funcopt.adam(0.01), 5, 0.5),
        lambda: optax.lookahead(optax.adam(0.01), 5, 0.5),
    ),
    (
        "lookahead-reset-optax-inner",
        lambda: funcopt.lookahead(optax.sgd(0.01, momentum=0.9), 4, 0.3, reset_state=True),
        lambda: optax.lookahead(optax.sgd(0.01, momentum=0.9), 4, 0.3, reset_state=True),
    ),
]


@pytest.mark.parametrize(("name", "ours", "theirs"), TABLE, ids=[r[0] for r in TABLE])
def test_matches_optax_float32(name, ours, theirs):
    params = random_params(0, shapes=SHAPES)
    ours_p = funcopt.LookaheadParams.init_synced(params)
    theirs_p = optax.LookaheadParams.init_synced(params)
    assert_matches_optax(ours(), theirs(), ours_p, fast_grads, theirs_p)


# ---- slow weights ------------------------------------------------------------------------


def test_lookahead_sync_arithmetic(maybe_jit):
    # Fast SGD with step +1 per call; every 2nd step φ ← φ + ½ (θ − φ), θ ← φ.
    tx = funcopt.lookahead(funcopt.sgd(1.0), sync_period=2, slow_step_size=0.5)
    params = funcopt.LookaheadParams.init_synced(jnp.zeros(1))
    state, update = tx.init(params), maybe_jit(tx.update)
    seen = []
    for _ in range(4):
        u, state = update(jnp.array([-1.0]), state, params)
        params = funcopt.apply_updates(params, u)
        seen.append((float(params.fast[0]), float(params.slow[0])))
    assert seen == [(1.0, 0.0), (1.0, 1.0), (2.0, 1.0), (2.0, 2.0)]


def test_lookahead_reset_state_restarts_the_fast_optimizer():
    tx = funcopt.lookahead(
        funcopt.sgd(1.0, 0.9), sync_period=2, slow_step_size=0.5, reset_state=True
    )
    params = funcopt.LookaheadParams.init_synced(jnp.zeros(1))
    state = tx.init(params)
    _, state = tx.update(jnp.ones(1), state, params)
    assert float(jax.tree.leaves(state.fast_state)[0][0]) == 1.0  # the trace after one step
    _, state = tx.update(jnp.ones(1), state, params)
    chex.assert_trees_all_equal(state.fast_state, funcopt.sgd(1.0, 0.9).init(jnp.zeros(1)))
    # optax's LookaheadParams (or bare fast params) are accepted at init as well.
    for p in (optax.LookaheadParams.init_synced(jnp.zeros(1)), jnp.zeros(1)):
        chex.assert_trees_all_equal(tx.init(p), tx.init(params))
    with pytest.raises(ValueError, match="LookaheadParams"):
        tx.update(jnp.ones(1), state, jnp.zeros(1))


def test_target_network_updates_match_optax():
    params = random_params(5, shapes=SHAPES)

    @jax.jit
    def both():
        def body(carry, step):
            online = wavy_grads(params, step)
            a, b, c, d = carry
            return (
                funcopt.incremental_update(online, a, 0.01),
                optax.incremental_update(online, b, 0.01),
                funcopt.periodic_update(online, c, step, 7),
                optax.periodic_update(online, d, step, 7),
            ), None

        return jax.lax.scan(body, (params,) * 4, jnp.arange(1000))[0]

    a, b, c, d = both()
    assert_rel_close(a, b, 1e-5)
    chex.assert_trees_all_equal(c, d)
    ema = funcopt.incremental_update(
        {"x": jnp.ones(2), "n": None}, {"x": jnp.zeros(2), "n": None}, 0.25
    )
    chex.assert_trees_all_equal(ema, {"x": jnp.full(2, 0.25), "n": None})


@pytest.mark.parametrize("period", [0, -3])
def test_periodic_update_rejects_a_period_below_one(period):
    new, old = {"w": jnp.ones(2)}, {"w": jnp.zeros(2)}
    with pytest.raises(funcopt.HyperParameterError, match=rf"update_period={period}"):
        funcopt.periodic_update(new, old, jnp.asarray(4), period)


def test_lookahead_donated_step_from_init_synced():
    params = funcopt.LookaheadParams.init_synced({"w": jnp.ones(3)})
    assert params.fast["w"] is not params.slow["w"]  # two buffers: both may be donated
    tx = funcopt.lookahead(funcopt.adam(0.1), 2, 0.5)
    loss = lambda p: jnp.sum(p["w"] ** 2)

    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p.fast), s, p)
        return funcopt.apply_updates(p, u), s

    donated = jax.jit(step, donate_argnums=(0, 1))
    p, s = params, tx.init(params)
    q, r = jax.tree.map(jnp.copy, (params, s))
    for _ in range(4):
        p, s = donated(p, s)
        q, r = step(q, r)
    chex.assert_trees_all_close((p, s), (q, r))


# ---- invalid arguments -----------------------------------------------------------------


def test_wrappers_reject_non_transforms():
    with pytest.raises(TypeError, match="not a gradient transformation"):
        funcopt.lookahead("sgd", 2, 0.5)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: funcopt.lookahead(funcopt.sgd(0.1), 0, 0.5), "sync_period"),
        (lambda: funcopt.lookahead(funcopt.sgd(0.1), 2, 1.5), "slow_step_size"),
        (lambda: funcopt.incremental_update(1.0, 0.0, -0.1), "step_size"),
    ],
)
def test_invalid_arguments_name_themselves(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: funcopt.lookahead(funcopt.sgd(0.1), 2.5, 0.5), "sync_period"),
        (lambda: funcopt.lookahead(funcopt.sgd(0.1), 2, float("nan")), "slow_step_size"),
        (lambda: funcopt.lookahead(funcopt.sgd(0.1), 2, -0.1), "slow_step_size"),
        (lambda: funcopt.incremental_update(1.0, 0.0, True), "step_size"),
        (lambda: funcopt.periodic_update(1.0, 0.0, 3, 2.5), "update_period"),
    ],
)
def test_integer_counts_and_ranges_are_checked(make, name):
    with pytest.raises(funcopt.HyperParameterError, match=name):
        make()


# ---- values, extra arguments ---------------------------------------------------------


def test_wrappers_are_values():
    adam = funcopt.adam(0.1)
    assert funcopt.lookahead(adam, 2, 0.5) == funcopt.lookahead(adam, 2, slow_step_size=0.5)


def test_numeric_hyperparameters_are_leaves_one_trace():
    synced = funcopt.LookaheadParams.init_synced({"w": jnp.ones(2)})
    make = lambda x: funcopt.lookahead(funcopt.adam(x), 2, x)
    assert_one_trace_for_any_values(make, synced, grads=synced.fast)


def test_extra_args_reach_the_inner_transform(maybe_jit):
    tx = funcopt.lookahead(times_value(), 2, 0.5)
    wrap = funcopt.LookaheadParams.init_synced
    assert_value_reaches_times_value(tx, maybe_jit, wrap=wrap, read=lambda u: u.fast)


# ---- strict dtypes -------------------------------------------------------------------


def test_lookahead_bfloat16_under_strict_promotion(strict_dtypes):
    params = funcopt.LookaheadParams.init_synced(random_params(6, jnp.bfloat16, SHAPES))
    tx = funcopt.lookahead(funcopt.adam(0.1), 2, 0.5)
    got, _ = run(tx, params, 3, funcopt.apply_updates, fast_grads)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(got))
    target = funcopt.incremental_update(got.fast, got.slow, jnp.asarray(0.1))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(target))


# ---- signatures ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lookahead", "incremental_update", "periodic_update"])
def test_signature_matches_optax(name):
    assert_signature_matches_optax(name)
