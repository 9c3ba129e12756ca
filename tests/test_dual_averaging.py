"""MADGRAD: against optax with a schedule, against its equations written out in NumPy
(real and complex), its copy of the start, hyper-parameters, signatures, states, one
trace for any values and bfloat16 storage.

The 1000-step float32 comparison with ``optax.contrib.madgrad`` is a row of ``registry``
(``test_oracles.py``).
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from oracle import random_params
from support import (
    assert_bf16_statistics_stay_float32,
    assert_bfloat16_run_stays_bfloat16,
    assert_follows_equations,
    assert_one_trace_for_any_values,
    assert_twins_match_in_float64,
)

import funcopt
from funcopt import dual_averaging as module


def test_matches_optax_with_a_schedule_in_float64(x64):
    """optax computes √t from an int32 count, in float32: 1e-8 apart in float64."""
    make = lambda o: o.contrib.madgrad(o.linear_schedule(1e-2, 1e-3, 500))
    assert_twins_match_in_float64(make, tol=1e-7)


# ---- the equations, written out in NumPy ------------------------------------------------


def _madgrad(lr, momentum, wd, eps):
    s = {"S": 0.0, "G": 0.0, "x0": None, "t": 0}

    def step(g, p):
        s["t"] += 1
        s["x0"] = p.copy() if s["x0"] is None else s["x0"]
        g = g + wd * p
        lam = (lr + eps) * np.sqrt(s["t"])
        s["S"] = s["S"] + lam * g
        s["G"] = s["G"] + lam * np.abs(g) ** 2
        z = s["x0"] - s["S"] / (np.cbrt(s["G"]) + eps)
        return momentum * p + (1 - momentum) * z - p

    return step


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["float64", "complex128"])
def test_the_equations_written_out(dtype, maybe_jit, x64):
    """On complex numbers with |g|², where optax sums g² and its cube root fails."""
    tx = funcopt.madgrad(0.1, momentum=0.8, weight_decay=0.1)
    assert_follows_equations(tx, lambda: _madgrad(0.1, 0.8, 0.1, 1e-6), dtype, maybe_jit)


def test_madgrad_keeps_a_copy_of_the_start_and_needs_the_params():
    p = jnp.arange(3.0)
    tx = funcopt.scale_by_madgrad(0.1)
    state = tx.init(p)
    assert state.inner_state.x0.unsafe_buffer_pointer() != p.unsafe_buffer_pointer()
    with pytest.raises(ValueError, match="params"):
        tx.update(p, state)


# ---- hyper-parameters, signatures, states ---------------------------------------------

BAD = [
    (lambda: funcopt.madgrad(-0.1), "learning_rate"),
    (lambda: funcopt.madgrad(0.1, momentum=1.0), "momentum"),
    (lambda: funcopt.madgrad(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: funcopt.scale_by_madgrad(0.1, eps=-1.0), "eps"),
]


@pytest.mark.parametrize(("make", "name"), BAD, ids=[n for _, n in BAD])
def test_bad_hyperparameters_name_the_argument(make, name):
    with pytest.raises(funcopt.HyperParameterError, match=rf"\b{name}\b"):
        make()


OPTAX_NAMES = ["madgrad", "scale_by_madgrad"]


@pytest.mark.parametrize("name", OPTAX_NAMES)
def test_signatures_are_optaxs(name):
    def params(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert params(getattr(funcopt, name)) == params(getattr(optax.contrib, name))
    assert getattr(funcopt, name) is getattr(module, name)


def test_every_optax_name_of_the_module_is_here():
    assert [
        n for n in module.__all__ if hasattr(optax.contrib, n) and not n.endswith("State")
    ] == OPTAX_NAMES


def test_state_fields_are_found_by_optaxs_names():
    tx = funcopt.madgrad(0.1)
    params = {"w": jnp.ones(3)}
    state = tx.update({"w": jnp.full(3, 0.5)}, tx.init(params), params)[1]
    for field in ["grad_sum_sq", "s", "x0"]:
        assert optax.tree.get(state, field)["w"].shape == (3,)


def test_one_trace_for_any_values():
    assert_one_trace_for_any_values(lambda x: funcopt.madgrad(x, momentum=x), random_params(1))


def test_bfloat16_statistics_stay_float32(strict_dtypes):
    """x0 in bfloat16; the sums S and G in float32."""
    tx = funcopt.madgrad(0.1)
    assert_bf16_statistics_stay_float32(tx, 1)
    assert_bfloat16_run_stays_bfloat16(tx, {"w": (4, 3), "b": ()})
