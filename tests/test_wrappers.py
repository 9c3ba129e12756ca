"""Wrappers and combinators (funcopt.wrappers, funcopt.stepping) against independent oracles.

1. optax: 1000 steps on random nested pytrees, float32 ≤ 1e-5, with funcopt inner
   transforms under funcopt wrappers vs optax under optax, and optax inner transforms
   under funcopt wrappers.
2. The behaviour written out by hand: which leaves change, when an accumulated step
   is emitted, what a skipped step leaves behind, the lookahead sync arithmetic.
"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, random_params, run

import funcopt

# A small nested tree (dict, list, a scalar): compile time grows with the leaf count.
SHAPES = {"dense": {"w": (4, 3), "b": (3,)}, "seq": [(), (2, 3)]}
MASK = {"dense": True, "seq": [False, True]}  # a prefix of the params' structure


def ndim_labels(params):
    """Label 2-d and larger leaves "w" (weights), the rest "b" (biases, norms, scalars)."""
    return jax.tree.map(lambda x: "w" if x.ndim > 1 else "b", params)


def decay(c):
    return 0.01 / (1.0 + c / 100)


def wavy_grads(params, step):
    """A stretched quadratic's gradient plus a deterministic wave in every coordinate.

    Like ``oracle.quadratic_grads`` (the quadratic contracts rounding differences, the
    wave keeps each coordinate's gradient changing sign and size) but without a PRNG
    in the scan body, which compiles about five times faster.
    """
    leaves, treedef = jax.tree.flatten(params)
    t = step.astype(jnp.float32)
    out = []
    for i, p in enumerate(leaves):
        phase = jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) * 0.618
        wave = jnp.sin(t * (0.37 + 0.11 * i) + phase) * (1.0 + jnp.cos(0.05 * t))
        out.append((0.5 + i) * (p - 0.3) + wave.astype(p.dtype))
    return treedef.unflatten(out)


def with_nans(params, step):
    """wavy_grads, with a NaN in one leaf every 50th step and an Inf every 97th."""
    g = wavy_grads(params, step)
    bad = jnp.where(step % 97 == 5, jnp.inf, jnp.where(step % 50 == 7, jnp.nan, 0.0))
    g["dense"]["b"] = g["dense"]["b"] + bad
    return g


def fast_grads(params, step):
    return wavy_grads(params.fast, step)


# (id, funcopt transform, optax transform, gradient function, params-wrapper). Each
# funcopt wrapper runs a funcopt inner transform unless the id says "optax inner".
TABLE = [
    (
        "named_chain",
        lambda: funcopt.named_chain(
            ("adam", funcopt.scale_by_adam()), ("lr", funcopt.scale(-0.01))
        ),
        lambda: optax.named_chain(("adam", optax.scale_by_adam()), ("lr", optax.scale(-0.01))),
        wavy_grads,
        None,
    ),
    (
        "masked-prefix",
        lambda: funcopt.chain(funcopt.masked(funcopt.scale_by_adam(), MASK), funcopt.scale(-0.01)),
        lambda: optax.chain(optax.masked(optax.scale_by_adam(), MASK), optax.scale(-0.01)),
        wavy_grads,
        None,
    ),
    (
        "masked-callable-optax-inner",
        lambda: funcopt.chain(
            funcopt.masked(
                optax.scale_by_adam(), lambda p: jax.tree.map("w".__eq__, ndim_labels(p))
            ),
            funcopt.scale(-0.01),
        ),
        lambda: optax.chain(
            optax.masked(optax.scale_by_adam(), lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
            optax.scale(-0.01),
        ),
        wavy_grads,
        None,
    ),
    (
        "partition",
        lambda: funcopt.partition(
            {"w": funcopt.adamw(0.01, weight_decay=0.1), "b": funcopt.sgd(0.02, 0.9)}, ndim_labels
        ),
        lambda: optax.partition(
            {"w": optax.adamw(0.01, weight_decay=0.1), "b": optax.sgd(0.02, 0.9)}, ndim_labels
        ),
        wavy_grads,
        None,
    ),
    (
        "freeze",
        lambda: funcopt.chain(funcopt.freeze(MASK), funcopt.adam(0.01)),
        lambda: optax.chain(optax.freeze(MASK), optax.adam(0.01)),
        wavy_grads,
        None,
    ),
    (
        "inject_hyperparams-schedule",
        lambda: funcopt.inject_hyperparams(funcopt.adam)(learning_rate=decay, b1=0.8),
        lambda: optax.inject_hyperparams(optax.adam)(learning_rate=decay, b1=0.8),
        wavy_grads,
        None,
    ),
    (
        "inject_hyperparams-optax-inner",
        lambda: funcopt.inject_hyperparams(optax.rmsprop)(learning_rate=0.01, momentum=0.5),
        lambda: optax.inject_hyperparams(optax.rmsprop)(learning_rate=0.01, momentum=0.5),
        wavy_grads,
        None,
    ),
    (
        "MultiSteps",
        lambda: funcopt.MultiSteps(funcopt.adam(0.01), 4).gradient_transformation(),
        lambda: optax.MultiSteps(optax.adam(0.01), 4).gradient_transformation(),
        wavy_grads,
        None,
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
        None,
    ),
    (
        "apply_every",
        lambda: funcopt.chain(funcopt.adam(0.01), funcopt.apply_every(3)),
        lambda: optax.chain(optax.adam(0.01), optax.apply_every(3)),
        wavy_grads,
        None,
    ),
    (
        "apply_if_finite",
        lambda: funcopt.apply_if_finite(funcopt.adam(0.01), 2),
        lambda: optax.apply_if_finite(optax.adam(0.01), 2),
        with_nans,
        None,
    ),
    (
        "lookahead",
        lambda: funcopt.lookahead(funcopt.adam(0.01), 5, 0.5),
        lambda: optax.lookahead(optax.adam(0.01), 5, 0.5),
        fast_grads,
        "lookahead",
    ),
    (
        "lookahead-reset-optax-inner",
        lambda: funcopt.lookahead(optax.sgd(0.01, momentum=0.9), 4, 0.3, reset_state=True),
        lambda: optax.lookahead(optax.sgd(0.01, momentum=0.9), 4, 0.3, reset_state=True),
        fast_grads,
        "lookahead",
    ),
]


@pytest.mark.parametrize(
    ("name", "ours", "theirs", "grads", "wrap"), TABLE, ids=[r[0] for r in TABLE]
)
def test_matches_optax_float32(name, ours, theirs, grads, wrap):
    params = random_params(0, shapes=SHAPES)
    ours_p = funcopt.LookaheadParams.init_synced(params) if wrap else params
    theirs_p = optax.LookaheadParams.init_synced(params) if wrap else params
    got, _ = run(ours(), ours_p, 1000, funcopt.apply_updates, grads)
    want, _ = run(theirs(), theirs_p, 1000, optax.apply_updates, grads)
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in got)
    assert_rel_close(got, want, 1e-5)


# ---- combinators ---------------------------------------------------------------------


def test_named_chain_state_by_name(maybe_jit):
    tx = funcopt.named_chain(
        ("double", funcopt.scale(2.0)), ("avg", funcopt.scale_by_momentum(0.5))
    )
    state = tx.init({"w": jnp.zeros(2)})
    assert list(state) == ["double", "avg"]
    u, state = maybe_jit(tx.update)({"w": jnp.ones(2)}, state)
    # double: 2 g = 2; avg: m = 0.5 · 0 + 0.5 · 2 = 1.
    chex.assert_trees_all_close(u, {"w": jnp.ones(2)})
    chex.assert_trees_all_close(state["avg"].m, {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="unique"):
        funcopt.named_chain(("a", funcopt.scale(1.0)), ("a", funcopt.scale(2.0)))


def test_masked_passes_unmasked_leaves_through(maybe_jit):
    g = {"a": jnp.ones(2), "b": {"c": jnp.full(3, 4.0, jnp.bfloat16), "d": jnp.ones(())}}
    tx = funcopt.masked(funcopt.scale_by_momentum(0.5), {"a": True, "b": {"c": False, "d": True}})
    state = tx.init(g)
    assert isinstance(state.inner_state.m["b"]["c"], funcopt.MaskedNode)  # no state for c
    u, state = maybe_jit(tx.update)(g, state)
    assert u["b"]["c"] is g["b"]["c"] or bool(jnp.all(u["b"]["c"] == g["b"]["c"]))
    assert u["b"]["c"].dtype == jnp.bfloat16
    chex.assert_trees_all_close((u["a"], u["b"]["d"]), (jnp.full(2, 0.5), jnp.asarray(0.5)))


def test_masked_prefix_and_callable_masks_with_params():
    params = {"w": jnp.full((2, 2), 2.0), "norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)}}
    g = jax.tree.map(jnp.ones_like, params)
    by_prefix = funcopt.masked(funcopt.add_decayed_weights(0.5), {"w": True, "norm": False})
    by_fn = funcopt.masked(
        funcopt.add_decayed_weights(0.5), lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    )
    for tx in (by_prefix, by_fn):
        u, _ = tx.update(g, tx.init(params), params)
        # g + 0.5 θ on the weight only: 1 + 0.5 · 2 = 2.
        chex.assert_trees_all_close(u, {"w": jnp.full((2, 2), 2.0), "norm": g["norm"]})


def test_partition_no_weight_decay_on_biases_and_norms(maybe_jit):
    lr, wd = 0.1, 0.5
    params = {
        "dense": {"w": jnp.array([[1.0, -2.0], [3.0, 4.0]]), "b": jnp.array([1.0, 2.0])},
        "norm": {"scale": jnp.array([1.0, 1.0]), "bias": jnp.array([0.5, -0.5])},
    }
    grads = jax.tree.map(lambda p: jnp.where(p > 0.9, 3.0, -0.2), params)
    labels = lambda p: jax.tree.map(lambda x: "decay" if x.ndim > 1 else "no_decay", p)
    tx = funcopt.partition(
        {"decay": funcopt.adamw(lr, weight_decay=wd), "no_decay": funcopt.adam(lr)}, labels
    )
    u, state = maybe_jit(tx.update)(grads, tx.init(params), params)
    assert set(state.inner_states) == {"decay", "no_decay"}
    # Adam's first step is −η g / (|g| + ε) = −η sign(g); AdamW adds −η λ θ. (rtol: β₂ =
    # 0.999 is a Python float in 1 − β₂ but float32 in 1 − β₂ᵗ, a 6.4e-6 mismatch, as optax.)
    sign = lambda x: x / (jnp.abs(x) + 1e-8)
    want = jax.tree.map(lambda g: -lr * sign(g), grads)
    want["dense"]["w"] = -lr * (sign(grads["dense"]["w"]) + wd * params["dense"]["w"])
    chex.assert_trees_all_close(u, want, rtol=1e-5)


def test_partition_names_and_errors():
    assert funcopt.multi_transform is funcopt.partition  # optax 0.2.8 has both names
    assert funcopt.MultiTransformState is funcopt.PartitionState
    assert optax.multi_transform is optax.partition
    # Labels may be a prefix of the params: one label for a whole subtree.
    params = {"x": jnp.ones(1), "y": {"p": jnp.ones(1), "q": jnp.ones(2)}}
    tx = funcopt.partition(
        {"a": funcopt.scale(2.0), "b": funcopt.scale(-1.0)}, {"x": "a", "y": "b"}
    )
    u, _ = tx.update(params, tx.init(params))
    chex.assert_trees_all_equal(
        u, {"x": jnp.full(1, 2.0), "y": {"p": -jnp.ones(1), "q": -jnp.ones(2)}}
    )
    tx = funcopt.partition({"a": funcopt.scale(1.0)}, {"x": "a", "y": "b"})
    with pytest.raises(ValueError, match="'b'"):
        tx.init({"x": jnp.zeros(1), "y": jnp.zeros(1)})
    with pytest.raises(TypeError, match="not a gradient transformation"):
        funcopt.partition({"a": object()}, {"x": "a"})


def test_freeze_and_set_to_zero(maybe_jit):
    g = {"a": jnp.ones(2), "b": jnp.ones(3, jnp.bfloat16)}
    tx = funcopt.freeze({"a": True, "b": False})
    u, _ = maybe_jit(tx.update)(g, tx.init(g))
    chex.assert_trees_all_equal(u, {"a": jnp.zeros(2), "b": g["b"]})
    tx = funcopt.freeze(True)
    u, _ = maybe_jit(tx.update)(g, tx.init(g))
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, g))
    u, _ = maybe_jit(funcopt.set_to_zero().update)(g, funcopt.set_to_zero().init(g))
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, g))  # dtypes kept too


def test_wrappers_reject_non_transforms():
    for make in (
        lambda: funcopt.masked(object(), True),
        lambda: funcopt.apply_if_finite(None, 1),
        lambda: funcopt.MultiSteps(3, 2),
        lambda: funcopt.lookahead("sgd", 2, 0.5),
    ):
        with pytest.raises(TypeError, match="not a gradient transformation"):
            make()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: funcopt.apply_every(0), "k"),
        (lambda: funcopt.MultiSteps(funcopt.sgd(0.1), 0), "every_k_schedule"),
        (lambda: funcopt.lookahead(funcopt.sgd(0.1), 0, 0.5), "sync_period"),
        (lambda: funcopt.lookahead(funcopt.sgd(0.1), 2, 1.5), "slow_step_size"),
        (lambda: funcopt.apply_if_finite(funcopt.sgd(0.1), -1), "max_consecutive_errors"),
        (lambda: funcopt.incremental_update(1.0, 0.0, -0.1), "step_size"),
    ],
)
def test_invalid_arguments_name_themselves(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# ---- inject_hyperparams ------------------------------------------------------------------


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
    tx = funcopt.inject_hyperparams(funcopt.scale, static_args="step_size")(lambda: 2.0)
    with pytest.raises(TypeError):  # not a schedule: passed through, uncalled
        tx.update(jnp.ones(1), tx.init(jnp.ones(1)))


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
    assert float(state.fast_state[0].m[0]) == 1.0  # momentum trace after one step
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


# ---- strict dtypes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: funcopt.MultiSteps(funcopt.adam(0.1), 2).gradient_transformation(),
        lambda: funcopt.apply_if_finite(funcopt.adam(0.1), 2),
        lambda: funcopt.chain(funcopt.masked(funcopt.adam(0.1), MASK), funcopt.apply_every(2)),
        lambda: funcopt.partition(
            {"w": funcopt.adam(0.1), "b": funcopt.sgd(0.1, 0.9)}, ndim_labels
        ),
    ],
    ids=["MultiSteps", "apply_if_finite", "masked-apply_every", "partition"],
)
def test_bfloat16_params_under_strict_promotion(make, strict_dtypes):
    params = random_params(6, jnp.bfloat16, SHAPES)
    got, _ = run(make(), params, 3, funcopt.apply_updates, wavy_grads)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(got))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(got))


def test_lookahead_bfloat16_under_strict_promotion(strict_dtypes):
    params = funcopt.LookaheadParams.init_synced(random_params(6, jnp.bfloat16, SHAPES))
    tx = funcopt.lookahead(funcopt.adam(0.1), 2, 0.5)
    got, _ = run(tx, params, 3, funcopt.apply_updates, fast_grads)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(got))
    target = funcopt.incremental_update(got.fast, got.slow, jnp.asarray(0.1))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(target))


# ---- signatures --------------------------------------------------------------------------

# Keyword-only arguments of optax's that funcopt leaves out: funcopt transforms take no
# extra arguments in update(), so there is nothing to mask.
NOT_TAKEN = {"mask_compatible_extra_args"}


@pytest.mark.parametrize(
    "name",
    [
        "masked",
        "freeze",
        "set_to_zero",
        "partition",
        "multi_transform",
        "inject_hyperparams",
        "MultiSteps",
        "skip_not_finite",
        "apply_every",
        "apply_if_finite",
        "lookahead",
        "incremental_update",
        "periodic_update",
    ],
)
def test_signature_matches_optax(name):
    def params(f):
        sig = inspect.signature(f)
        return [
            (p.name, p.kind, p.default) for p in sig.parameters.values() if p.name not in NOT_TAKEN
        ]

    assert params(getattr(funcopt, name)) == params(getattr(optax, name))


@pytest.mark.parametrize("period", [0, -3])
def test_periodic_update_rejects_a_period_below_one(period):
    new, old = {"w": jnp.ones(2)}, {"w": jnp.zeros(2)}
    with pytest.raises(funcopt.HyperParameterError, match=rf"update_period={period}"):
        funcopt.periodic_update(new, old, jnp.asarray(4), period)


def test_full_tree_decay_mask_inside_partition():
    """An inner adamw's mask may be given for the whole tree: inside ``partition`` it is cut
    to the leaves that branch owns (equal to the same mask as a function)."""
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3), "emb": jnp.ones((4, 2))}
    grads = jax.tree.map(lambda x: 0.1 * x, params)
    labels = {"w": "adam", "b": "adam", "emb": "sgd"}
    full = {"w": True, "b": False, "emb": True}

    def run(mask):
        tx = funcopt.partition(
            {"adam": funcopt.adamw(0.1, weight_decay=0.5, mask=mask), "sgd": funcopt.sgd(0.1)},
            labels,
        )
        return tx.update(grads, tx.init(params), params)[0]

    got = run(full)
    want = run(lambda p: {"w": True, "b": False, "emb": p["emb"]})
    chex.assert_trees_all_equal(got, want)
    assert not np.allclose(got["w"], got["b"][None, :])  # w decays, b does not
