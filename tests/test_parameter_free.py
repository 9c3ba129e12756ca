"""Distance over gradients: against optax, by hand, on complex and scalar parameters.

The 50-step float64 comparison with the paper's layer-wise DoG is a row of ``registry``
(``test_oracles.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, quadratic_grads, random_params

import funcopt

# optax's state keeps Σ‖g‖² in shape (1,): its update broadcasts, which the test suite's
# strict rank promotion refuses; the matrices and vectors below are unchanged by it.
SHAPES = {"w": (4, 3), "b": (3,), "col": (5, 1)}


def _run(tx, params, steps, apply_updates):
    state = tx.init(params)
    for k in range(steps):
        u, state = tx.update(quadratic_grads(params, jnp.asarray(k)), state, params)
        params = apply_updates(params, u)
    return params, state


def test_matches_optax():
    params = random_params(2, shapes=SHAPES)
    ours = funcopt.scale_by_distance_over_gradients(reps_rel=1e-3, global_scale=-0.5)
    theirs = optax.scale_by_distance_over_gradients(reps_rel=1e-3, global_scale=-0.5)
    got, state = _run(ours, params, 200, funcopt.apply_updates)
    with jax.numpy_rank_promotion("allow"):
        want, optax_state = _run(theirs, params, 200, optax.apply_updates)
    assert_rel_close(got, want, 1e-5)
    assert_rel_close(state.max_dist, optax_state.max_dist, 1e-5)


def test_first_step_and_scalar_parameters():
    """d₀ = r(1 + ‖θ₀‖), G₁ = ‖g‖²: u₁ = s d₀ g / ‖g‖, keeping a scalar leaf's shape."""
    tx = funcopt.scale_by_distance_over_gradients(reps_rel=0.1, eps=0.0, global_scale=-1.0)
    params = {"s": jnp.array(3.0), "v": jnp.array([3.0, 4.0])}
    grads = {"s": jnp.array(2.0), "v": jnp.array([0.0, -1.0])}
    u, state = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(u["s"], -0.1 * 4.0 * 1.0, rtol=1e-6)
    np.testing.assert_allclose(u["v"], [0.0, 0.1 * 6.0], rtol=1e-6)
    assert u["s"].shape == () and state.grad_sum_of_squares["s"].shape == ()


def test_complex_parameters_use_moduli(x64):
    """‖z − z₀‖ and ‖g‖ of complex leaves are real; θ₀ keeps its imaginary part."""
    tx = funcopt.scale_by_distance_over_gradients(reps_rel=0.5, eps=0.0)
    z = jnp.array([3.0 + 4.0j])
    state = tx.init(z)
    assert state.init_params.dtype == jnp.complex128 and state.max_dist.dtype == jnp.float64
    u, state = tx.update(jnp.array([1.0j]), state, z)
    np.testing.assert_allclose(u, [0.5 * 6.0 * 1.0j])  # d₀ = 0.5 (1 + 5), ‖g‖ = 1


def test_needs_the_params():
    tx = funcopt.scale_by_distance_over_gradients()
    with pytest.raises(ValueError, match="params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
