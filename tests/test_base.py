"""The protocol (funcopt.base): optax's shape.

``init``/``update``, tuple unpacking, a transform from two functions, optax and flax in both
directions, extra keyword arguments, state read by name with optax's tools, one count.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from oracle import assert_rel_close, random_params, run

import funcopt

# ---- optax's shape ---------------------------------------------------------------------------


def test_tuple_unpacking_and_attributes():
    tx = funcopt.adam(0.1)
    init, update = tx
    state = init(jnp.zeros(2))
    u, _ = update(jnp.ones(2), state)
    np.testing.assert_allclose(u, [-0.1, -0.1], rtol=1e-5)


def test_a_transform_from_two_functions():
    tx = funcopt.GradientTransformation(
        lambda p: (), lambda u, s, p=None: (jax.tree.map(jnp.negative, u), s)
    )
    assert isinstance(tx, funcopt.GradientTransformation)
    chained = funcopt.chain(tx, funcopt.scale(2.0))
    u, _ = chained.update(jnp.ones(2), chained.init(jnp.ones(2)))
    np.testing.assert_allclose(u, [-2.0, -2.0])


def test_funcopt_inside_optax_chain_and_optax_inside_funcopt_chain():
    params = random_params(3)
    a = optax.chain(optax.clip_by_global_norm(1.0), funcopt.adam(0.01))
    b = funcopt.chain(optax.clip_by_global_norm(1.0), funcopt.adam(0.01))
    c = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.01))
    pa, _ = run(a, params, 100, optax.apply_updates)
    pb, _ = run(b, params, 100, funcopt.apply_updates)
    pc, _ = run(c, params, 100, optax.apply_updates)
    assert_rel_close(pa, pc, 1e-6)
    assert_rel_close(pb, pc, 1e-6)


def test_optax_wrappers_accept_funcopt():
    params = random_params(1)
    for ours, theirs in [
        (optax.MultiSteps(funcopt.adam(0.01), 3), optax.MultiSteps(optax.adam(0.01), 3)),
        (
            optax.inject_hyperparams(funcopt.adam)(learning_rate=0.01),
            optax.inject_hyperparams(optax.adam)(learning_rate=0.01),
        ),
        (
            optax.masked(
                funcopt.adam(0.01), {"dense": True, "scalar": False, "seq": True, "col": False}
            ),
            optax.masked(
                optax.adam(0.01), {"dense": True, "scalar": False, "seq": True, "col": False}
            ),
        ),
    ]:
        got, _ = run(ours, params, 30, optax.apply_updates)
        want, _ = run(theirs, params, 30, optax.apply_updates)
        assert_rel_close(got, want, 1e-6)


def test_flax_nnx_optimizer_with_value_extra_argument():
    """nnx passes extra keyword arguments to tx.update; funcopt.chain hands them on."""
    from flax import nnx

    def train(tx):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))
        loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)

        @nnx.jit
        def step(model, opt):
            loss, grads = nnx.value_and_grad(loss_fn)(model)
            opt.update(model, grads, value=loss)

        for _ in range(20):
            step(model, opt)
        return nnx.state(model, nnx.Param)

    chex.assert_trees_all_close(train(funcopt.adamw(0.05)), train(optax.adamw(0.05)), rtol=1e-6)
    # optax's polyak_sgd needs value=: inside funcopt.chain it gets it.
    chex.assert_trees_all_close(
        train(funcopt.chain(funcopt.scale(0.5), optax.polyak_sgd(max_learning_rate=0.1))),
        train(optax.chain(optax.scale(0.5), optax.polyak_sgd(max_learning_rate=0.1))),
        rtol=1e-6,
    )


def test_flax_linen_train_state_accepts_funcopt():
    from flax.training import train_state

    params = {"w": jnp.ones((3, 2))}
    state = train_state.TrainState.create(apply_fn=None, params=params, tx=funcopt.adam(0.1))
    grads = {"w": jnp.ones((3, 2))}
    state = jax.jit(lambda s, g: s.apply_gradients(grads=g))(state, grads)
    np.testing.assert_allclose(state.params["w"], 0.9 * np.ones((3, 2)), rtol=1e-5)


def test_extra_arguments_reach_optax_members_of_a_chain():
    """reduce_on_plateau reads value=; lbfgs reads value, grad and value_fn."""
    from optax import contrib

    params = jnp.array([1.0, -2.0])
    fun = lambda p: jnp.sum(p**2)
    for ours, theirs in [
        (
            funcopt.chain(funcopt.sgd(0.1), contrib.reduce_on_plateau(patience=1, factor=0.5)),
            optax.chain(optax.sgd(0.1), contrib.reduce_on_plateau(patience=1, factor=0.5)),
        ),
        (funcopt.chain(optax.lbfgs()), optax.chain(optax.lbfgs())),
    ]:
        results = []
        for tx in (ours, theirs):
            p, state = params, tx.init(params)
            # jitted once: eagerly, lbfgs' line search compiles its loops at every step
            update = jax.jit(
                lambda g, s, p, v, tx=tx: tx.update(g, s, p, value=v, grad=g, value_fn=fun)
            )
            for _ in range(5):
                value, grad = jax.value_and_grad(fun)(p)
                u, state = update(grad, state, p, value)
                p = optax.apply_updates(p, u)
            results.append(p)
        chex.assert_trees_all_close(*results, rtol=1e-6)


def test_state_is_read_by_name_with_optax_tools():
    params = random_params(0)
    for tx in [
        funcopt.adam(1e-3),
        funcopt.adamw(1e-3),
        funcopt.nadam(1e-3),
        funcopt.radam(1e-3),
        funcopt.amsgrad(1e-3),
        funcopt.adabelief(1e-3),
        funcopt.yogi(1e-3),
        funcopt.adamax(1e-3),
    ]:
        state = tx.init(params)
        state = tx.update(params, state, params)[1]
        assert int(optax.tree_utils.tree_get(state, "count")) == 1
        chex.assert_trees_all_equal_shapes(optax.tree_utils.tree_get(state, "mu"), params)
        chex.assert_trees_all_equal_shapes(optax.tree_utils.tree_get(state, "nu"), params)
    state = funcopt.sgd(0.1, momentum=0.9).init(params)
    chex.assert_trees_all_equal_shapes(optax.tree_utils.tree_get(state, "trace"), params)


def test_one_step_count_per_optimizer_with_a_schedule():
    schedule = funcopt.linear_schedule(1e-2, 1e-3, 10)
    for tx in [funcopt.adam(schedule), funcopt.radam(schedule), funcopt.nadamw(schedule)]:
        state = tx.init(random_params(0))
        counts = [x for x in jax.tree.leaves(state) if x.dtype == jnp.int32]
        assert len(counts) == 1, tx


def test_safe_increment_saturates():
    top = jnp.array(np.iinfo(np.int32).max, jnp.int32)
    assert int(funcopt.safe_increment(top)) == np.iinfo(np.int32).max
    assert int(funcopt.safe_increment(jnp.array(3, jnp.int32))) == 4


def test_low_precision_state_saturates_instead_of_overflowing():
    """float16 SGD momentum with |g| = 6·10⁴: the trace g + 0.9·trace passes float16's
    largest value 65504 at the second step. It is stored saturated at ±65504 (as the
    update computed from it), not as ±inf, which would poison every later step."""
    lr, beta, g = 0.1, 0.9, 6e4
    tx = funcopt.sgd(lr, momentum=beta)
    params = {"w": jnp.ones(2, jnp.float16)}
    state = tx.init(params)
    grads = {"w": jnp.array([g, -g], jnp.float16)}
    top = float(jnp.finfo(jnp.float16).max)
    trace = 0.0
    for _ in range(5):
        u, state = tx.update(grads, state, params)
        trace = min(float(np.float16(g)) + beta * trace, top)  # by hand, saturated
        np.testing.assert_array_equal(np.asarray(state[0].trace["w"], np.float64), [trace, -trace])
        assert u["w"].dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(u["w"])))
    assert trace == top
    np.testing.assert_array_equal(u["w"], np.array([-lr * top, lr * top], np.float16))
