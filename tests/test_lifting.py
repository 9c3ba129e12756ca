"""The lifter (funcopt.lifting): what every primitive gets from lifting its equation.

Structure checks by path, arithmetic in at least float32, storage in each buffer's dtype,
outputs from stored moments, complex numbers, Python floats and None leaves, one scalar
computation per update, and a primitive written by a user in a few lines.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close

import funcopt
from funcopt.lifting import Leafwise, abs2, compute_dtype, moment_like, second_moment_like
from funcopt.validation import DECAY
from funcopt.values import hyper


def test_compute_dtype_is_at_least_float32():
    assert compute_dtype(jnp.bfloat16) == jnp.float32
    assert compute_dtype(jnp.float16) == jnp.float32
    assert compute_dtype(jnp.float32) == jnp.float32
    assert compute_dtype(jnp.complex64) == jnp.complex64
    with jax.enable_x64(True):
        assert compute_dtype(jnp.float64) == jnp.float64


def test_buffers_take_their_policy_dtype():
    p = jnp.ones(3, jnp.bfloat16)
    assert moment_like(p).dtype == jnp.bfloat16
    assert second_moment_like(p).dtype == jnp.float32
    assert second_moment_like(jnp.ones(3, jnp.complex64)).dtype == jnp.float32
    assert moment_like(jnp.ones(3, jnp.complex64)).dtype == jnp.complex64
    a, b = moment_like(p), moment_like(p)
    assert a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()


def test_abs2_is_real_for_complex():
    x = jnp.array([3 + 4j, 1j])
    np.testing.assert_allclose(abs2(x), [25.0, 1.0])
    assert not jnp.iscomplexobj(abs2(x))


class CubeState(NamedTuple):
    s: Any


class cube_sum(Leafwise):
    """A user's primitive: s = β s + g³, output s (six lines of math and declaration)."""

    decay: float = hyper(DECAY, 0.5)
    State = CubeState

    def init_leaf(self, p):
        return CubeState(second_moment_like(p))

    def leaf(self, g, s):
        total = self.decay * s.s + g**3
        return total, CubeState(total)


def test_a_user_primitive_gets_the_whole_lift(maybe_jit):
    tx = cube_sum(0.5)
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": [jnp.ones((2, 2))]}
    grads = jax.tree.map(lambda p: 2 * p, params)
    state = tx.init(params)
    assert state.s["a"].dtype == jnp.float32  # its policy: stored in at least float32
    u, state = maybe_jit(tx.update)(grads, state, params)
    assert u["a"].dtype == jnp.bfloat16 and u["b"][0].dtype == jnp.float32
    np.testing.assert_allclose(state.s["b"][0], 8.0 * np.ones((2, 2)))
    assert tx == cube_sum(decay=0.5) and tx.elementwise
    with pytest.raises(funcopt.StructureError, match=r"state.s\['b'\]\[0\] has shape \(3,\)"):
        tx.update(grads, state._replace(s={"a": state.s["a"], "b": [jnp.ones(3)]}))
    with pytest.raises(funcopt.HyperParameterError, match="decay"):
        cube_sum(1.5)


def test_structure_errors_name_the_field_and_path(maybe_jit):
    tx = funcopt.scale_by_momentum(0.9)
    state = tx.init({"w": jnp.ones(2), "b": jnp.ones(3)})
    with pytest.raises(funcopt.StructureError, match=r"at \.mu\['b'\], state has key"):
        maybe_jit(tx.update)({"w": jnp.ones(2), "c": jnp.ones(3)}, state)
    with pytest.raises(funcopt.StructureError, match=r"state.mu\['b'\] has shape \(3,\)"):
        maybe_jit(tx.update)({"w": jnp.ones(2), "b": jnp.ones(4)}, state)


def test_state_of_another_type_is_refused():
    tx = funcopt.second_moment()
    with pytest.raises(funcopt.StructureError, match=r"state has MomentumState .* where"):
        tx.update(jnp.ones(2), funcopt.MomentumState(jnp.ones(2)))
    with pytest.raises(funcopt.StructureError, match="keeps a SecondMomentState"):  # nested
        tx.apply(jnp.ones(2), funcopt.MomentumState(jnp.ones(2)), None, None)


def test_arithmetic_runs_in_float32_for_bfloat16():
    """β₂ = 0.999 in bfloat16 is 1.0: computed there, v would never decay."""
    tx = funcopt.second_moment(0.999)
    g = jnp.ones(1, jnp.bfloat16)
    _, state = tx.update(g, tx.init(g))
    np.testing.assert_allclose(state.nu, [0.001], rtol=1e-6)


def test_array_hyperparameters_take_the_leaf_precision(strict_dtypes):
    """A float32 hyper-parameter meets float64 leaves under x64: cast, no promotion error."""
    with jax.enable_x64(True):
        tx = funcopt.scale_by_momentum(jnp.asarray(0.5, jnp.float32))
        g = jnp.ones(2, jnp.float64)
        out = jax.jit(lambda tx, g: tx.update(g, tx.init(g))[0])(tx, g)
        assert out.dtype == jnp.float64


def test_outputs_come_from_the_stored_moment():
    tx = funcopt.scale_by_momentum(0.9, mu_dtype=jnp.bfloat16)
    u, state = tx.update(jnp.full(3, 1.2345), tx.init(jnp.zeros(3)))
    np.testing.assert_array_equal(u, state.mu.astype(jnp.float32))


def test_complex_parameters_match_optax(x64):
    """Second moments use |g|², so Adam steps a complex parameter along −g/|g|."""
    g = jnp.array([1 + 1j], jnp.complex128)
    for ours, theirs in [
        (funcopt.adam(0.1), optax.adam(0.1)),
        (funcopt.rmsprop(0.1), optax.rmsprop(0.1)),
        (funcopt.adagrad(0.1), optax.adagrad(0.1)),
        (funcopt.amsgrad(0.1), optax.amsgrad(0.1)),
    ]:
        a, _ = ours.update(g, ours.init(g), g)
        b, _ = theirs.update(g, theirs.init(g), g)
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(
        funcopt.adam(0.1).update(g, funcopt.adam(0.1).init(g))[0],
        [-0.0707107 - 0.0707107j],
        rtol=1e-5,
    )


def test_complex_problem_converges_as_optax_does(x64):
    """min |z − c|² over complex z: Adam gets there (with g² instead of |g|² it did not)."""
    c = jnp.array([1.0 - 2.0j, -0.5 + 0.5j])
    loss = lambda z: jnp.sum(jnp.abs(z - c) ** 2)
    grad = lambda z: jnp.conj(jax.grad(loss, holomorphic=False)(z))  # optax's convention

    def solve(tx, apply):
        z, state = jnp.zeros(2, jnp.complex128), tx.init(jnp.zeros(2, jnp.complex128))
        for _ in range(300):
            u, state = tx.update(grad(z), state, z)
            z = apply(z, u)
        return z

    got = solve(funcopt.adam(0.05), funcopt.apply_updates)
    want = solve(optax.adam(0.05), optax.apply_updates)
    assert_rel_close(got, want, 1e-9)
    assert float(jnp.max(jnp.abs(got - c))) < 1e-2


def test_python_float_and_none_leaves():
    tx = funcopt.adam(0.1)
    params = {"w": jnp.ones(2), "s": 1.5, "frozen": None}
    state = tx.init(params)
    u, state = tx.update({"w": jnp.ones(2), "s": 0.5, "frozen": None}, state, params)
    assert u["frozen"] is None
    np.testing.assert_allclose(u["s"], -0.1, rtol=1e-5)


def test_scalars_are_computed_once_per_update():
    """A schedule on a 200-leaf tree is evaluated once, not once per leaf."""
    calls = []

    def schedule(count):
        calls.append(1)
        return 0.1

    tx = funcopt.scale_by_learning_rate(schedule)
    params = [jnp.ones(1)] * 200
    jax.jit(tx.update)(params, tx.init(params))
    assert len(calls) == 1
