"""funcopt.packed_views: packed views that compile once per leaf shape, gradients that come packed.

The numbers are tree mode's (funcopt's and optax's); the program does not grow a kernel
per leaf (the deterministic stand-in for the compile time it saves: XLA:CPU compiles every
distinct fused computation once, and a static slice at each offset is a distinct one).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, random_params

import funcopt
from funcopt.base import StructureError
from funcopt.bench_compile import hlo_lines

MIXED = {
    "f32": random_params(0),
    "bf16": random_params(1, dtype=jnp.bfloat16),
    "empty": jnp.zeros((0, 3)),
    "many": [jnp.full((4, 3), float(i)) for i in range(6)],
}

# elementwise optimizers, built from a module with optax's names (funcopt or optax)
OPTIMIZERS = {
    "adam": lambda m: m.adam(1e-2),
    "sgd-momentum": lambda m: m.sgd(1e-2, momentum=0.9),
    "lion": lambda m: m.lion(1e-3),
    "rmsprop": lambda m: m.rmsprop(1e-2),
    "adamw": lambda m: m.adamw(1e-2, weight_decay=0.1),
}


def many_leaves(n: int, seed: int = 0) -> list[jax.Array]:
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return [0.3 * jax.random.normal(k, (4, 4)) for k in keys]


def mlp(ws, x):
    """A deep tanh MLP of 2-D weights (each leaf a matmul operand)."""
    for w in ws:
        x = jnp.tanh(x @ w)
    return jnp.mean(jnp.square(x - 0.5))


def loss_fn(params, x):
    """Touches every leaf whatever its shape and dtype (a sum over leaves)."""
    return sum(
        jnp.mean(jnp.square(jnp.tanh(p.astype(jnp.float32) * x) - 0.3))
        for p in jax.tree.leaves(params)
    )


def test_views_equal_unpack_bitwise_eager_and_jitted():
    for solo in (None, 20):
        packed = funcopt.pack(MIXED, solo_size=solo)
        want = funcopt.unpack(packed)
        for got in (funcopt.views(packed), jax.jit(funcopt.views)(packed)):
            assert jax.tree.structure(got) == jax.tree.structure(want)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_views_of_integer_bool_and_complex_buffers():
    tree = {
        "b": jnp.array([True, False, True]),
        "i": [jnp.arange(3), jnp.arange(4).reshape(2, 2)],
        "c": [jnp.array([1 + 2j, 3j]), jnp.ones((), jnp.complex64)],
    }
    packed = funcopt.pack(tree)
    got = jax.jit(funcopt.views)(packed)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(tree), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_packed_value_and_grad_is_the_tree_gradient_packed():
    packed = funcopt.pack(MIXED)
    x = jnp.asarray(0.7)
    want_v, want_g = jax.value_and_grad(loss_fn)(MIXED, x)
    got_v, got_g = jax.jit(funcopt.packed_value_and_grad(loss_fn))(packed, x)
    assert isinstance(got_g, funcopt.Packed) and got_g.layout == packed.layout
    np.testing.assert_allclose(float(got_v), float(want_v), rtol=1e-6)
    want = funcopt.pack(want_g, packed.layout)
    for a, b in zip(got_g.buffers, want.buffers, strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-6)


def test_has_aux_and_unused_leaves():
    """An unused leaf gets a zero gradient; aux comes back with the loss."""
    packed = funcopt.pack({"used": jnp.arange(3.0), "unused": jnp.ones((2, 2))})

    def loss(p, s):
        return jnp.sum(p["used"] ** 2) * s, {"n": jnp.sum(p["used"])}

    (value, aux), g = funcopt.packed_value_and_grad(loss, has_aux=True)(packed, 2.0)
    assert float(value) == 10.0 and float(aux["n"]) == 3.0
    np.testing.assert_array_equal(funcopt.unpack(g)["unused"], np.zeros((2, 2)))
    np.testing.assert_array_equal(funcopt.unpack(g)["used"], [0.0, 4.0, 8.0])


def _run(step, params, state, xs):
    losses = []
    for x in xs:
        params, state, loss = step(params, state, x)
        losses.append(float(loss))
    return params, losses


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_packed_train_step_equals_funcopt_and_optax_tree_steps(name):
    """Jitted, donated packed steps on a 40-leaf MLP equal both tree steps."""
    params = many_leaves(40)
    xs = [jax.random.normal(jax.random.PRNGKey(10 + i), (8, 4)) for i in range(4)]
    tx, otx = OPTIMIZERS[name](funcopt), OPTIMIZERS[name](optax)
    assert funcopt.is_elementwise(tx)
    tree_p, tree_l = _run(
        funcopt.make_train_step(mlp, tx, donate=False), params, tx.init(params), xs
    )

    @jax.jit
    def optax_step(p, s, x):
        loss, g = jax.value_and_grad(mlp)(p, x)
        u, s = otx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    optax_p, optax_l = _run(optax_step, params, otx.init(params), xs)
    packed = funcopt.pack(params)
    step = funcopt.make_packed_train_step(mlp, tx)
    got, losses = _run(step, packed, funcopt.packed_init(tx, packed), xs)
    np.testing.assert_allclose(losses, tree_l, rtol=1e-5)
    np.testing.assert_allclose(losses, optax_l, rtol=1e-5)
    assert_rel_close(funcopt.unpack(got), tree_p, 1e-5)
    assert_rel_close(funcopt.unpack(got), optax_p, 1e-5)


def test_packed_state_and_gradient_layout():
    """Flat moments, one buffer per dtype; the step's outputs keep the layout."""
    tx = funcopt.adam(1e-2)
    packed = funcopt.pack(MIXED)
    state = funcopt.packed_init(tx, packed)
    n = sum(x.size for x in jax.tree.leaves(MIXED))
    assert sum(b.size for b in packed.buffers) == n and len(packed.buffers) == 2
    moments = [x for x in jax.tree.leaves(state.inner) if x.ndim == 1]
    assert [x.shape for x in moments] == [b.shape for b in packed.buffers] * 2
    new, state2, _ = funcopt.make_packed_train_step(loss_fn, tx)(packed, state, 0.5)
    assert new.layout == packed.layout
    assert jax.tree.structure(state2) == jax.tree.structure(state)


def test_views_reject_buffers_that_are_not_the_layout():
    packed = funcopt.pack(MIXED)
    short = funcopt.Packed((packed.buffers[0], packed.buffers[1][:-1]), packed.layout)
    with pytest.raises(StructureError, match="not those of the layout"):
        funcopt.views(short)
    cast = funcopt.Packed((packed.buffers[0], packed.buffers[1].astype(jnp.float16)), packed.layout)
    with pytest.raises(StructureError, match="not those of the layout"):
        jax.jit(funcopt.packed_value_and_grad(loss_fn))(cast, 0.5)
    with pytest.raises(StructureError, match="not those of the layout"):
        funcopt.views(funcopt.Packed(packed.buffers[:1], packed.layout))


def distinct_kernels(text: str) -> int:
    """Distinct fused computations of an optimized HLO module (names, metadata ignored):
    what XLA:CPU compiles one by one."""
    bodies, body = set(), None
    for line in text.splitlines():
        if body is None:
            if re.match(r"%\S+ \(", line):
                body = []
        elif line.startswith("}"):
            bodies.add("\n".join(body))
            body = None
        else:
            line = re.sub(r",? metadata=\{[^}]*\}", "", line)
            body.append(re.sub(r"%[\w.\-]+", "%", line).strip())
    return len(bodies)


def _compiled(leaves: int, packed: bool):
    params = many_leaves(leaves)
    x = jnp.ones((8, 4))
    if packed:
        tx = funcopt.adam(1e-3)
        p = funcopt.pack(params)
        step = funcopt.make_packed_train_step(mlp, tx)
        return step.lower(p, funcopt.packed_init(tx, p), x).compile().as_text()
    otx = optax.adam(1e-3)

    def optax_step(p, s, x):
        loss, g = jax.value_and_grad(mlp)(p, x)
        u, s = otx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    step = jax.jit(optax_step, donate_argnums=(0, 1))
    return step.lower(params, otx.init(params), x).compile().as_text()


def test_program_is_smaller_than_optax_and_kernels_do_not_grow_with_leaves():
    """Deterministic program size: fewer HLO instructions than optax's tree step, and a
    number of distinct kernels that does not grow with the number of leaves (a static
    slice per leaf made it grow by one kernel per leaf, and compile 3-7x slower)."""
    small, large = _compiled(16, True), _compiled(64, True)
    optax_large = _compiled(64, False)
    assert hlo_lines(large) < 0.75 * hlo_lines(optax_large)
    assert distinct_kernels(large) == distinct_kernels(small)
    assert distinct_kernels(large) <= distinct_kernels(optax_large) + 8
