"""Adan: against optax in float64 (masked decay, ε_root = 0), against its equations
written out in NumPy (real and complex), its primitives by hand, hyper-parameters,
signatures, states and bfloat16 storage.

The 1000-step float32 and float64 comparisons with ``optax.adan`` are a row of
``registry`` (``test_oracles.py``).
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from support import (
    assert_bf16_statistics_stay_float32,
    assert_bfloat16_run_stays_bfloat16,
    assert_follows_equations,
    assert_twins_match_in_float64,
    not_scalars,
)

import funcopt
from funcopt import nesterov_estimation as module


def test_matches_optax_in_float64(x64):
    """A configuration the registry row leaves out."""
    assert_twins_match_in_float64(
        lambda o: o.adan(1e-2, b1=0.9, eps_root=0.0, weight_decay=0.1, mask=not_scalars)
    )


# ---- the equations, written out in NumPy ------------------------------------------------


def _adan(lr, b1, b2, b3, eps, eps_root, wd):
    s = {"m": 0.0, "v": 0.0, "n": 0.0, "g": None, "t": 0}

    def step(g, p):
        s["t"] += 1
        t = s["t"]
        d = 0 * g if s["g"] is None else g - s["g"]
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * d
        s["n"] = b3 * s["n"] + (1 - b3) * np.abs(g + (1 - b2) * d) ** 2
        s["g"] = g
        num = s["m"] / (1 - b1**t) + (1 - b2) * s["v"] / (1 - b2**t)
        return -lr * (num / (np.sqrt(s["n"] / (1 - b3**t) + eps_root) + eps) + wd * p)

    return step


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["float64", "complex128"])
def test_the_equations_written_out(dtype, maybe_jit, x64):
    """Xie et al., Algorithm 1, with optax's decoupled decay (the paper divides by 1 + λη)."""
    tx = funcopt.adan(0.1, weight_decay=0.1)
    reference = lambda: _adan(0.1, 0.98, 0.92, 0.99, 1e-8, 1e-8, 0.1)
    assert_follows_equations(tx, reference, dtype, maybe_jit)


def test_nesterov_estimate_is_the_gradient_at_the_first_step():
    tx = funcopt.nesterov_estimate(0.75)
    u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    np.testing.assert_array_equal(u, [2.0])
    np.testing.assert_array_equal(tx.update(jnp.array([6.0]), state)[0], [6.0 + 0.25 * 4.0])


# ---- hyper-parameters, signatures, states ---------------------------------------------

BAD = [
    (lambda: funcopt.adan(0.1, b3=2.0), "b3"),
    (lambda: funcopt.adan(float("nan")), "learning_rate"),
    (lambda: funcopt.adan(0.1, eps_root=-1.0), "eps_root"),
    (lambda: funcopt.adan_momentum(b2=1.0), "b2"),
]


@pytest.mark.parametrize(("make", "name"), BAD, ids=[n for _, n in BAD])
def test_bad_hyperparameters_name_the_argument(make, name):
    with pytest.raises(funcopt.HyperParameterError, match=rf"\b{name}\b"):
        make()


OPTAX_NAMES = ["adan", "scale_by_adan"]


@pytest.mark.parametrize("name", OPTAX_NAMES)
def test_signatures_are_optaxs(name):
    def params(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert params(getattr(funcopt, name)) == params(getattr(optax, name))
    assert getattr(funcopt, name) is getattr(module, name)


def test_every_optax_name_of_the_module_is_here():
    assert [
        n for n in module.__all__ if hasattr(optax, n) and not n.endswith("State")
    ] == OPTAX_NAMES


def test_state_fields_are_found_by_optaxs_names():
    """m, v and g as optax's (its n is funcopt's nu, with a second copy of g_{t−1})."""
    tx = funcopt.adan(0.1)
    params = {"w": jnp.ones(3)}
    state = tx.update({"w": jnp.full(3, 0.5)}, tx.init(params), params)[1]
    for field in ["m", "v", "g", "nu", "previous_gradient"]:
        assert optax.tree.get(state, field)["w"].shape == (3,)


def test_bfloat16_statistics_stay_float32(strict_dtypes):
    """m, v and the two copies of the last gradient in bfloat16; n in float32."""
    tx = funcopt.adan(0.1)
    assert_bf16_statistics_stay_float32(tx, 4)
    assert_bfloat16_run_stays_bfloat16(tx, {"w": (4, 3), "b": ()})
