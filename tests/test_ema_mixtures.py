"""AdEMAMix and simplified AdEMAMix: against optax with schedules and masks, against
their equations written out in NumPy (real and complex), their hyper-parameters,
signatures, states, one trace for any values and bfloat16 storage.

The 1000-step float32 and float64 comparisons with optax of ``ademamix`` and
``simplified_ademamix`` are rows of ``registry`` (``test_oracles.py``).
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
    SMALL,
    FuncoptAsOptax,
    assert_bf16_statistics_stay_float32,
    assert_bfloat16_run_stays_bfloat16,
    assert_follows_equations,
    assert_matches_optax,
    assert_one_trace_for_any_values,
    assert_twins_match_in_float64,
    not_scalars,
)

import funcopt
from funcopt import ema_mixtures as module

# Configurations the registry rows leave out: (name, row built by funcopt and by optax)
TWINS = [
    (
        "ademamix-schedules-mask",
        lambda o: o.contrib.ademamix(
            1e-2,
            b3=o.linear_schedule(0.9, 0.999, 300),
            alpha=o.linear_schedule(0.0, 5.0, 300),
            weight_decay=0.1,
            mask=not_scalars,
        ),
    ),
    (
        "simplified_ademamix-alpha",
        lambda o: o.contrib.simplified_ademamix(1e-3, b1=0.9, alpha=o.linear_schedule(0, 2, 99)),
    ),
]


@pytest.mark.parametrize("make", [m for _, m in TWINS], ids=[n for n, _ in TWINS])
def test_matches_optax_in_float64(make, x64):
    assert_twins_match_in_float64(make)


def test_funcopts_schedules_read_as_optaxs():
    """The schedules β₃(t) and α(t) built by funcopt, over 1000 float32 steps."""
    _, make = TWINS[0]
    assert_matches_optax(make(FuncoptAsOptax()), make(optax), random_params(0, shapes=SMALL))


# ---- the equations, written out in NumPy ------------------------------------------------


def _ademamix(lr, b1, b2, b3, alpha, eps, wd):
    s = {"m1": 0.0, "m2": 0.0, "v": 0.0, "t": 0}

    def step(g, p):
        s["t"] += 1
        t = s["t"]
        s["m1"] = b1 * s["m1"] + (1 - b1) * g
        s["m2"] = b3 * s["m2"] + (1 - b3) * g
        s["v"] = b2 * s["v"] + (1 - b2) * np.abs(g) ** 2
        mix = s["m1"] / (1 - b1**t) + alpha * s["m2"]
        return -lr * (mix / (np.sqrt(s["v"] / (1 - b2**t)) + eps) + wd * p)

    return step


def _simplified(lr, b1, b2, alpha, eps, wd):
    s = {"m": 0.0, "v": 0.0, "t": 0}

    def step(g, p):
        s["t"] += 1
        s["m"] = b1 * s["m"] + g
        s["v"] = b2 * s["v"] + (1 - b2) * np.abs(g) ** 2
        v_hat = s["v"] / (1 - b2 ** s["t"])
        return -lr * ((s["m"] + alpha * g) / (np.sqrt(v_hat) + eps) + wd * p)

    return step


EQUATIONS = [
    (
        "ademamix",
        funcopt.ademamix(0.1, b3=0.99, weight_decay=0.1),
        lambda: _ademamix(0.1, 0.9, 0.999, 0.99, 5.0, 1e-8, 0.1),
    ),
    (
        "simplified_ademamix",
        funcopt.simplified_ademamix(0.1, b1=0.9, alpha=2.0, weight_decay=0.1),
        lambda: _simplified(0.1, 0.9, 0.95, 2.0, 1e-8, 0.1),
    ),
]
DTYPES = [np.float64, np.complex128]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "complex128"])
@pytest.mark.parametrize(
    ("tx", "reference"), [e[1:] for e in EQUATIONS], ids=[e[0] for e in EQUATIONS]
)
def test_the_equations_written_out(tx, reference, dtype, maybe_jit, x64):
    """On complex numbers with |g|², where optax's simplified AdEMAMix averages g² (a
    complex number under a complex root): the equations with moduli are the oracle."""
    assert_follows_equations(tx, reference, dtype, maybe_jit)


# ---- hyper-parameters, signatures, states ---------------------------------------------

BAD = [
    (lambda: funcopt.ademamix(0.1, b3=1.0), "b3"),
    (lambda: funcopt.ademamix(0.1, alpha=-1.0), "alpha"),
    (lambda: funcopt.ademamix(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: funcopt.scale_by_ademamix(mu_dtype="int8"), "mu_dtype"),
    (lambda: funcopt.simplified_ademamix(0.1, b1=1.5), "b1"),
    (lambda: funcopt.trace_mixture(0.9, alpha=-1.0), "alpha"),
]


@pytest.mark.parametrize(("make", "name"), BAD, ids=[n for _, n in BAD])
def test_bad_hyperparameters_name_the_argument(make, name):
    with pytest.raises(funcopt.HyperParameterError, match=rf"\b{name}\b"):
        make()


OPTAX_NAMES = [
    "ademamix",
    "scale_by_ademamix",
    "scale_by_simplified_ademamix",
    "simplified_ademamix",
]


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


@pytest.mark.parametrize(
    ("tx", "fields"),
    [(funcopt.ademamix(0.1), ["m1", "m2", "nu"]), (funcopt.simplified_ademamix(0.1), ["m"])],
    ids=["ademamix", "simplified_ademamix"],
)
def test_state_fields_are_found_by_optaxs_names(tx, fields):
    """(optax's simplified AdEMAMix names its second moment ``n``; funcopt's is ``nu``.)"""
    params = {"w": jnp.ones(3)}
    state = tx.update({"w": jnp.full(3, 0.5)}, tx.init(params), params)[1]
    for field in fields:
        assert optax.tree.get(state, field)["w"].shape == (3,)


def test_one_trace_for_any_values():
    assert_one_trace_for_any_values(lambda x: funcopt.ademamix(x, alpha=10 * x), random_params(1))


@pytest.mark.parametrize(
    ("tx", "first"),
    [(funcopt.ademamix(0.1), 2), (funcopt.simplified_ademamix(0.1), 1)],
    ids=["ademamix", "simplified_ademamix"],
)
def test_bfloat16_statistics_stay_float32(tx, first, strict_dtypes):
    """AdEMAMix's m1 and m2 (optax keeps nu in mu_dtype too), the simplified one's m."""
    assert_bf16_statistics_stay_float32(tx, first)
    assert_bfloat16_run_stays_bfloat16(tx, {"w": (4, 3), "b": ()})
