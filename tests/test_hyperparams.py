"""inject_hyperparams (funcopt.hyperparams) against optax and by hand.

1. optax: 1000 steps on a random nested pytree, float32 ≤ 1e-5, with a schedule as the
   learning rate, and with an optax optimizer inside funcopt's inject_hyperparams.
2. Hyper-parameters as state: kept in float32 for bfloat16 parameters (where optax's
   rounding to bfloat16 gives NaN), changed without recompiling, vmapped over,
   differentiated, read from a schedule at the step count; values, extra arguments and
   donation.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, random_params, run, wavy_grads
from support import (
    assert_donated_train_step_matches_plain,
    assert_matches_optax,
    assert_one_trace_for_any_values,
    assert_signature_matches_optax,
    assert_value_reaches_times_value,
    times_value,
)

import funcopt

# A small nested tree (dict, list, a scalar): compile time grows with the leaf count.
SHAPES = {"dense": {"w": (4, 3), "b": (3,)}, "seq": [(), (2, 3)]}


def decay(c):
    return 0.01 / (1.0 + c / 100)


# (id, funcopt transform, optax transform).
TABLE = [
    (
        "inject_hyperparams-schedule",
        lambda: funcopt.inject_hyperparams(funcopt.adam)(learning_rate=decay, b1=0.8),
        lambda: optax.inject_hyperparams(optax.adam)(learning_rate=decay, b1=0.8),
    ),
    (
        "inject_hyperparams-optax-inner",
        lambda: funcopt.inject_hyperparams(optax.rmsprop)(learning_rate=0.01, momentum=0.5),
        lambda: optax.inject_hyperparams(optax.rmsprop)(learning_rate=0.01, momentum=0.5),
    ),
]


@pytest.mark.parametrize(("name", "ours", "theirs"), TABLE, ids=[r[0] for r in TABLE])
def test_matches_optax_float32(name, ours, theirs):
    assert_matches_optax(ours(), theirs(), random_params(0, shapes=SHAPES))


# ---- hyper-parameters as state -----------------------------------------------------------


def test_inject_hyperparams_state_keeps_floats_in_float32_for_bf16_params():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    tx = funcopt.inject_hyperparams(funcopt.adam)(learning_rate=0.1)
    hp = tx.init(params).hyperparams
    assert set(hp) == {"learning_rate", "b1", "b2", "eps", "eps_root"}  # mu_dtype is not numeric
    assert all(v.dtype == jnp.float32 for v in hp.values())
    assert hp["b2"] == np.float32(0.999) and hp["learning_rate"] == np.float32(0.1)


def test_inject_hyperparams_bf16_is_finite_where_optax_is_nan():
    p16 = random_params(3, jnp.bfloat16, {"w": (4, 3), "b": (3,)})
    ref = jax.tree.map(lambda x: x.astype(jnp.float32), p16)  # the same start, in float32
    ours = funcopt.inject_hyperparams(funcopt.adam)(learning_rate=0.05)
    with jax.numpy_dtype_promotion("strict"):  # and no implicit promotion on the way
        got, _ = run(ours, p16, 5, funcopt.apply_updates, wavy_grads)
    want, _ = run(optax.adam(0.05), ref, 5, optax.apply_updates, wavy_grads)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(got))
    assert_rel_close(jax.tree.map(lambda x: x.astype(jnp.float32), got), want, 2e-2)
    # optax 0.2.8 stores b2 = 0.999 in bfloat16, where it is 1.0: 1 − b2ᵗ = 0, v̂ = 0/0.
    theirs = optax.inject_hyperparams(optax.adam)(learning_rate=0.05)
    their_state = theirs.init(p16)
    assert their_state.hyperparams["b2"].dtype == jnp.bfloat16
    assert float(their_state.hyperparams["b2"]) == 1.0
    u, _ = theirs.update(wavy_grads(p16, jnp.asarray(0)), their_state, p16)
    assert all(bool(jnp.all(jnp.isnan(x))) for x in jax.tree.leaves(u))


def test_inject_hyperparams_changing_learning_rate_does_not_recompile():
    traces = []
    tx = funcopt.inject_hyperparams(funcopt.adam)(learning_rate=0.1)

    @jax.jit
    def step(params, state):
        traces.append(None)  # runs once per trace, not per call
        u, state = tx.update(jax.tree.map(jnp.sign, params), state, params)
        return funcopt.apply_updates(params, u), state

    params = {"w": jnp.array([1.0, -2.0])}
    p1, s1 = step(params, tx.init(params))
    assert float(jnp.max(jnp.abs(p1["w"] - params["w"]))) > 0.05
    s1.hyperparams["learning_rate"] = jnp.asarray(0.0, jnp.float32)
    p2, _ = step(p1, s1)
    chex.assert_trees_all_equal(p2, p1)  # the new rate (0) was used ...
    assert len(traces) == 1  # ... by the same compiled step
    # The closure-captured alternative bakes the rate in: a new rate is a new trace.
    closure_traces = []
    for lr in (0.1, 0.0):
        opt = funcopt.adam(lr)
        jax.jit(lambda p, s, opt=opt: closure_traces.append(None) or opt.update(p, s, p))(
            params, opt.init(params)
        )
    assert len(closure_traces) == 2


def test_inject_hyperparams_vmap_over_learning_rates():
    params = random_params(4, shapes={"w": (3, 2), "b": (2,)})
    tx = funcopt.inject_hyperparams(funcopt.adam)(learning_rate=0.0)  # built once

    def train(opt, apply, lr=None):
        state = opt.init(params)
        if lr is not None:
            state.hyperparams["learning_rate"] = lr
        p = params
        for t in range(3):
            u, state = opt.update(wavy_grads(p, jnp.asarray(t)), state, p)
            p = apply(p, u)
        return p

    lrs = jnp.array([0.01, 0.1, 0.3])
    got = jax.jit(jax.vmap(lambda lr: train(tx, funcopt.apply_updates, lr)))(lrs)
    # The oracle: optax, one learning rate at a time (as float32 arrays, as ours keeps them).
    oracle = jax.jit(
        lambda lr: train(
            optax.inject_hyperparams(optax.adam)(learning_rate=lr), optax.apply_updates
        )
    )
    for i in range(len(lrs)):
        assert_rel_close(jax.tree.map(lambda x, i=i: x[i], got), oracle(lrs[i]), 1e-5)


def test_inject_hyperparams_learning_rate_is_differentiable():
    tx = funcopt.inject_hyperparams(funcopt.sgd)(learning_rate=0.0)
    p, g = jnp.array([1.0, -2.0]), jnp.array([0.5, 3.0])

    def meta_loss(lr):
        state = tx.init(p)
        state.hyperparams["learning_rate"] = lr
        u, _ = tx.update(g, state, p)
        return 0.5 * jnp.sum(funcopt.apply_updates(p, u) ** 2)

    lr = 0.1
    # d/dη ½‖θ − η g‖² = −g · (θ − η g)
    np.testing.assert_allclose(jax.grad(meta_loss)(lr), -np.dot(g, p - lr * g), rtol=1e-6)


def test_inject_hyperparams_schedule_is_read_at_the_step_count(maybe_jit):
    tx = funcopt.inject_hyperparams(funcopt.sgd)(learning_rate=lambda c: 0.1 * (c + 1))
    state = tx.init(jnp.zeros(2))
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.1)
    update = maybe_jit(tx.update)
    for t in range(3):
        u, state = update(jnp.ones(2), state)
        rate = 0.1 * (t + 1)  # the schedule at count t = 0, 1, 2
        np.testing.assert_allclose(u, [-rate, -rate], rtol=1e-6)
        assert float(state.hyperparams["learning_rate"]) == pytest.approx(rate)
        assert int(state.count) == t + 1


def test_inject_hyperparams_static_args_must_be_parameters():
    with pytest.raises(ValueError, match="static_args"):
        funcopt.inject_hyperparams(funcopt.adam, static_args="nope")
    # Not a schedule: passed through uncalled (called as one, lambda: 2.0 would raise a
    # TypeError), so scale itself refuses it, when the transform is built.
    with pytest.raises(funcopt.HyperParameterError, match="step_size"):
        funcopt.inject_hyperparams(funcopt.scale, static_args="step_size")(lambda: 2.0)


def test_inject_hyperparams_with_funcopt_classes_and_optax_factories():
    g = jnp.array([1.0, -2.0])
    for factory, kwargs in (
        (funcopt.scale, {"step_size": -0.5}),  # a transform class
        (funcopt.sgd, {"learning_rate": 0.5}),  # a funcopt factory
        (optax.sgd, {"learning_rate": 0.5}),
    ):
        tx = funcopt.inject_hyperparams(factory)(**kwargs)
        state = tx.init(g)
        assert isinstance(state, funcopt.InjectHyperparamsState)
        (name,) = kwargs
        assert state.hyperparams[name].dtype == jnp.float32
        u, state = jax.jit(tx.update)(g, state)
        chex.assert_trees_all_close(u, -0.5 * g)
        assert int(state.count) == 1
    with pytest.raises(funcopt.HyperParameterError, match="learning_rate"):
        funcopt.inject_hyperparams(funcopt.adam)(learning_rate=-1.0)  # checked when built


# ---- values, extra arguments, donation -----------------------------------------------


def test_inject_hyperparams_is_a_value():
    inject = funcopt.inject_hyperparams(funcopt.adam)
    assert inject(0.1) == inject(learning_rate=0.1) == inject(np.float64(0.1))
    assert hash(inject(0.1)) == hash(inject(learning_rate=0.1))
    assert inject(0.1) != inject(0.2)
    assert repr(inject(0.1, b1=0.8)) == "inject_hyperparams(adam)(learning_rate=0.1, b1=0.8)"


def test_numeric_hyperparameters_are_leaves_one_trace():
    make = lambda x: funcopt.inject_hyperparams(funcopt.adam)(x)
    assert_one_trace_for_any_values(make, {"w": jnp.ones(2)})


def test_extra_args_reach_the_inner_transform(maybe_jit):
    tx = funcopt.inject_hyperparams(
        lambda step_size=1.0: funcopt.chain(funcopt.scale(step_size), times_value())
    )(step_size=1.0)
    assert_value_reaches_times_value(tx, maybe_jit)


def test_donated_train_step():
    tx = funcopt.inject_hyperparams(funcopt.adam)(learning_rate=jnp.float32(0.1))
    assert_donated_train_step_matches_plain(tx)


def test_signature_matches_optax():
    assert_signature_matches_optax("inject_hyperparams")
