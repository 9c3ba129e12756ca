"""Gradient accumulation and skipped steps (funcopt.accumulation) against optax and by hand.

MultiSteps, apply_every, skip_not_finite and apply_if_finite:

1. optax: 1000 steps on a random nested pytree, float32 ≤ 1e-5, with NaN and Inf
   gradients on some steps for the skipping wrappers.
2. The behaviour written out by hand: when an accumulated step is emitted (and that it
   equals one big batch's), what a skipped step leaves behind, when apply_if_finite gives
   up; bfloat16 gradients accumulated in float32, values, extra arguments and donation.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import random_params, wavy_grads
from support import (
    assert_bfloat16_run_stays_bfloat16,
    assert_donated_train_step_matches_plain,
    assert_matches_optax,
    assert_signature_matches_optax,
    assert_value_reaches_times_value,
    times_value,
)

import funcopt

# A small nested tree (dict, list, a scalar): compile time grows with the leaf count.
SHAPES = {"dense": {"w": (4, 3), "b": (3,)}, "seq": [(), (2, 3)]}


def with_nans(params, step):
    """wavy_grads, with a NaN in one leaf every 50th step and an Inf every 97th."""
    g = wavy_grads(params, step)
    bad = jnp.where(step % 97 == 5, jnp.inf, jnp.where(step % 50 == 7, jnp.nan, 0.0))
    g["dense"]["b"] = g["dense"]["b"] + bad
    return g


# (id, funcopt transform, optax transform, gradient function).
TABLE = [
    (
        "MultiSteps",
        lambda: funcopt.MultiSteps(funcopt.adam(0.01), 4).gradient_transformation(),
        lambda: optax.MultiSteps(optax.adam(0.01), 4).gradient_transformation(),
        wavy_grads,
    ),
    (
        "MultiSteps-schedule-sum-skip",
        lambda: funcopt.MultiSteps(
            funcopt.sgd(0.002, 0.9),
            lambda step: jnp.where(step < 50, 2, 3),
            use_grad_mean=False,
            should_skip_update_fn=funcopt.skip_not_finite,
        ).gradient_transformation(),
        lambda: optax.MultiSteps(
            optax.sgd(0.002, 0.9),
            lambda step: jnp.where(step < 50, 2, 3),
            use_grad_mean=False,
            should_skip_update_fn=optax.skip_not_finite,
        ).gradient_transformation(),
        with_nans,
    ),
    (
        "apply_every",
        lambda: funcopt.chain(funcopt.adam(0.01), funcopt.apply_every(3)),
        lambda: optax.chain(optax.adam(0.01), optax.apply_every(3)),
        wavy_grads,
    ),
    (
        "apply_if_finite",
        lambda: funcopt.apply_if_finite(funcopt.adam(0.01), 2),
        lambda: optax.apply_if_finite(optax.adam(0.01), 2),
        with_nans,
    ),
]


@pytest.mark.parametrize(("name", "ours", "theirs", "grads"), TABLE, ids=[r[0] for r in TABLE])
def test_matches_optax_float32(name, ours, theirs, grads):
    assert_matches_optax(ours(), theirs(), random_params(0, shapes=SHAPES), grads)


# ---- accumulation ------------------------------------------------------------------------


def test_multisteps_equals_one_big_batch_step(maybe_jit):
    kx, ky = jax.random.split(jax.random.PRNGKey(7))
    x, y = jax.random.normal(kx, (8, 3)), jax.random.normal(ky, (8,))
    loss = lambda w, x, y: jnp.mean((x @ w - y) ** 2)
    w0 = jnp.array([0.1, -0.2, 0.3])
    # Plain SGD: Adam's first step is scale-free, so it would not tell a mean from a sum.
    opt = funcopt.MultiSteps(funcopt.sgd(0.1), every_k_schedule=4)
    state, w = opt.init(w0), w0
    update = maybe_jit(opt.update)
    for i in range(4):
        g = jax.grad(loss)(w, x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2])
        u, state = update(g, state, w)
        w = funcopt.apply_updates(w, u)
        assert bool(opt.has_updated(state)) == (i == 3)
        if i < 3:
            chex.assert_trees_all_equal(u, jnp.zeros(3))
    big = optax.sgd(0.1)
    u_big, _ = big.update(jax.grad(loss)(w0, x, y), big.init(w0), w0)
    np.testing.assert_allclose(w, w0 + u_big, rtol=1e-6, atol=1e-7)  # Welford vs one mean
    assert int(state.gradient_step) == 1 and int(state.mini_step) == 0


def test_multisteps_skips_a_non_finite_micro_batch():
    opt = funcopt.MultiSteps(funcopt.sgd(1.0), 2, should_skip_update_fn=funcopt.skip_not_finite)
    state = opt.init(jnp.zeros(2))
    u, state = opt.update(jnp.array([1.0, 2.0]), state)
    u, state = opt.update(jnp.array([jnp.nan, 0.0]), state)  # as if it never happened
    assert int(state.skip_state["num_not_finite"]) == 1 and int(state.mini_step) == 1
    u, state = opt.update(jnp.array([3.0, 4.0]), state)
    np.testing.assert_allclose(u, [-2.0, -3.0])  # −mean of the two finite micro-batches
    bad = funcopt.MultiSteps(funcopt.sgd(1.0), 2, should_skip_update_fn=lambda u, s, p: (1, {}))
    with pytest.raises(ValueError, match="bool scalar"):
        bad.update(jnp.ones(2), bad.init(jnp.zeros(2)))


def test_apply_every_sums_then_emits(maybe_jit):
    tx = funcopt.apply_every(3)
    state, update = tx.init(jnp.zeros(1)), maybe_jit(tx.update)
    outs = []
    for g in (1.0, 2.0, 4.0, 8.0):
        u, state = update(jnp.array([g]), state)
        outs.append(float(u[0]))
    assert outs == [0.0, 0.0, 7.0, 0.0]


# ---- non-finite gradients ----------------------------------------------------------------

GRADS = [
    jnp.array([1.0, -2.0]),
    jnp.array([jnp.nan, 1.0]),
    jnp.array([0.5, 0.5]),
    jnp.array([jnp.inf, 0.0]),
]


def test_apply_if_finite_keeps_nan_out_of_adams_moments(maybe_jit):
    params = jnp.array([1.0, 1.0])
    tx = funcopt.apply_if_finite(funcopt.adam(0.1), max_consecutive_errors=3)
    state, update = tx.init(params), maybe_jit(tx.update)
    p = params
    for t, g in enumerate(GRADS):
        u, state = update(g, state, p)
        p = funcopt.apply_updates(p, u)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state.inner_state))
        if t in (1, 3):
            chex.assert_trees_all_equal(u, jnp.zeros(2))
    assert (int(state.notfinite_count), bool(state.last_finite), int(state.total_notfinite)) == (
        1,
        False,
        2,
    )
    # The oracle: optax's Adam on the finite gradients only.
    adam, q = optax.adam(0.1), params
    s = adam.init(q)
    for g in (GRADS[0], GRADS[2]):
        u, s = adam.update(g, s, q)
        q = optax.apply_updates(q, u)
    np.testing.assert_allclose(p, q, rtol=1e-6)
    # Without the wrapper, one NaN poisons m and v, and every later update, for good.
    plain = funcopt.adam(0.1)
    s = plain.init(params)
    for g in GRADS[:3]:
        u, s = plain.update(g, s, params)
    assert bool(jnp.isnan(u).any())  # GRADS[2] is finite, the update is not
    assert any(bool(jnp.isnan(x).any()) for x in jax.tree.leaves(s))


def test_apply_if_finite_gives_up_after_max_consecutive_errors():
    ours = funcopt.apply_if_finite(funcopt.sgd(1.0, 0.9), max_consecutive_errors=1)
    theirs = optax.apply_if_finite(optax.sgd(1.0, 0.9), max_consecutive_errors=1)
    s, r = ours.init(jnp.zeros(2)), theirs.init(jnp.zeros(2))
    for g in (jnp.array([jnp.nan, 1.0]), jnp.array([jnp.nan, 1.0])):
        u, s = ours.update(g, s)
        _, r = theirs.update(g, r)
    assert bool(jnp.isnan(u[0]))  # the second NaN in a row is applied
    chex.assert_trees_all_equal(
        (s.notfinite_count, s.last_finite, s.total_notfinite),
        (r.notfinite_count, r.last_finite, r.total_notfinite),
    )
    assert int(s.notfinite_count) == 2


def test_multisteps_accumulates_bfloat16_gradients_in_float32():
    g1 = jnp.array([1.0, 1 / 3], jnp.bfloat16)
    g2 = jnp.array([1 + 2**-8, 2.0], jnp.bfloat16)
    opt = funcopt.MultiSteps(funcopt.scale(1.0), 3)
    state = opt.init(jnp.zeros(2, jnp.bfloat16))
    assert state.acc_grads.dtype == jnp.float32
    _, state = opt.update(g1, state)
    _, state = opt.update(g2, state)
    mean = (g1.astype(jnp.float32) + g2.astype(jnp.float32)) / 2
    assert state.acc_grads.dtype == jnp.float32
    np.testing.assert_array_equal(state.acc_grads, mean)  # not rounded to bfloat16
    assert mean.astype(jnp.bfloat16).astype(jnp.float32)[1] != mean[1]
    theirs = optax.MultiSteps(optax.scale(1.0), 3)
    s = theirs.init(jnp.zeros(2, jnp.bfloat16))
    for g in (g1, g2):
        _, s = theirs.update(g, s)
    np.testing.assert_array_equal(state.acc_grads, s.acc_grads)
    u, _ = opt.update(g1, state)
    assert u.dtype == jnp.bfloat16
    opt = funcopt.MultiSteps(funcopt.scale(1.0), 2, accumulator_dtype=None)
    assert opt.init(jnp.zeros(2, jnp.bfloat16)).acc_grads.dtype == jnp.bfloat16


# ---- invalid arguments -----------------------------------------------------------------


def test_wrappers_reject_non_transforms():
    for make in (
        lambda: funcopt.apply_if_finite(None, 1),
        lambda: funcopt.MultiSteps(3, 2),
    ):
        with pytest.raises(TypeError, match="not a gradient transformation"):
            make()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: funcopt.apply_every(0), "k"),
        (lambda: funcopt.MultiSteps(funcopt.sgd(0.1), 0), "every_k_schedule"),
        (lambda: funcopt.apply_if_finite(funcopt.sgd(0.1), -1), "max_consecutive_errors"),
    ],
)
def test_invalid_arguments_name_themselves(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: funcopt.MultiSteps(funcopt.sgd(0.1), 2.5), "every_k_schedule"),
        (lambda: funcopt.MultiSteps(funcopt.sgd(0.1), True), "every_k_schedule"),
        (lambda: funcopt.apply_every(2.5), "k"),
        (lambda: funcopt.apply_every(None), "k"),
        (lambda: funcopt.apply_if_finite(funcopt.sgd(0.1), 1.5), "max_consecutive_errors"),
    ],
)
def test_integer_counts_and_ranges_are_checked(make, name):
    with pytest.raises(funcopt.HyperParameterError, match=name):
        make()


# ---- values, extra arguments, donation -----------------------------------------------


def test_wrappers_are_values():
    adam = funcopt.adam(0.1)
    assert funcopt.MultiSteps(adam, 2) == funcopt.MultiSteps(adam, 2.0)  # an integral float
    ms = funcopt.MultiSteps(adam, 2)
    assert ms.gradient_transformation() is ms and ms.inner_opt is ms.opt
    assert funcopt.apply_every(3) == funcopt.apply_every(k=3)
    assert funcopt.apply_if_finite(adam, 2) == funcopt.apply_if_finite(funcopt.adam(0.1), 2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: funcopt.MultiSteps(times_value(), 1),
        lambda: funcopt.apply_if_finite(times_value(), 0),
    ],
    ids=["MultiSteps", "apply_if_finite"],
)
def test_extra_args_reach_the_inner_transform(make, maybe_jit):
    assert_value_reaches_times_value(make(), maybe_jit)


@pytest.mark.parametrize(
    "make",
    [
        lambda: funcopt.MultiSteps(funcopt.adam(0.1), 2),
        lambda: funcopt.apply_if_finite(funcopt.adam(0.1), 2),
        lambda: funcopt.chain(funcopt.adam(0.1), funcopt.apply_every(2)),
    ],
    ids=["MultiSteps", "apply_if_finite", "apply_every"],
)
def test_donated_train_step(make):
    assert_donated_train_step_matches_plain(make())


# ---- strict dtypes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: funcopt.MultiSteps(funcopt.adam(0.1), 2).gradient_transformation(),
        lambda: funcopt.apply_if_finite(funcopt.adam(0.1), 2),
    ],
    ids=["MultiSteps", "apply_if_finite"],
)
def test_bfloat16_params_under_strict_promotion(make, strict_dtypes):
    assert_bfloat16_run_stays_bfloat16(make(), SHAPES)


# ---- signatures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["MultiSteps", "skip_not_finite", "apply_every", "apply_if_finite"]
)
def test_signature_matches_optax(name):
    assert_signature_matches_optax(name)
