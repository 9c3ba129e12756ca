"""ADOPT and ACProp: against optax in float64, against their equations written out in
NumPy (real, and complex for ACProp), their first steps, hyper-parameters, signatures,
states and bfloat16 storage.

The 1000-step float32 and float64 comparisons with optax of ``adopt`` (also Nesterov and
unclipped) and ``acprop`` are rows of ``registry`` (``test_oracles.py``).
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from support import (
    assert_bf16_statistics_stay_float32,
    assert_bfloat16_run_stays_bfloat16,
    assert_follows_equations,
    assert_twins_match_in_float64,
    not_scalars,
)

import funcopt
from funcopt import decorrelated as module

# Configurations the registry rows leave out: (name, row built by funcopt and by optax)
TWINS = [
    # (optax rounds 1 − β₂ in float32, 1.7e-4 off for β₂ = 0.9999: in float64 it does not)
    ("adopt-unclipped", lambda o: o.contrib.adopt(1e-2, use_clipping=False)),
    ("acprop-mask", lambda o: o.contrib.acprop(1e-2, b1=0.8, weight_decay=0.1, mask=not_scalars)),
]


@pytest.mark.parametrize("make", [m for _, m in TWINS], ids=[n for n, _ in TWINS])
def test_matches_optax_in_float64(make, x64):
    assert_twins_match_in_float64(make)


# ---- the equations, written out in NumPy ------------------------------------------------


def _adopt(lr, b1, b2, eps, nesterov=False, clipping=True):
    s = {"m": 0.0, "v": 0.0, "t": 0}

    def step(g, p):
        s["t"] += 1
        if s["t"] == 1:  # v₁ = |g₁|², no step
            s["v"] = np.abs(g) ** 2
            return 0 * g
        x = g / np.maximum(np.sqrt(s["v"]), eps)
        if clipping:
            x = np.clip(x, -((s["t"] - 1) ** 0.25), (s["t"] - 1) ** 0.25)
        s["v"] = b2 * s["v"] + (1 - b2) * np.abs(g) ** 2
        s["m"] = b1 * s["m"] + (1 - b1) * x
        return -lr * (b1 * s["m"] + (1 - b1) * x if nesterov else s["m"])

    return step


def _acprop(lr, b1, b2, eps, eps_root, wd):
    s = {"m": 0.0, "s": 0.0, "t": 0}

    def step(g, p):
        s["t"] += 1
        s_hat = 1.0 if s["t"] == 1 else s["s"] / (1 - b2 ** (s["t"] - 1))  # ŝ_{t−1}
        u = g / (np.sqrt(s_hat) + eps)
        s["s"] = b2 * s["s"] + (1 - b2) * np.abs(g - s["m"]) ** 2 + eps_root
        s["m"] = b1 * s["m"] + (1 - b1) * g
        return -lr * (u + wd * p)

    return step


EQUATIONS = [
    ("adopt", funcopt.adopt(0.1, b2=0.99), lambda: _adopt(0.1, 0.9, 0.99, 1e-6)),
    (
        "adopt-nesterov-unclipped",
        funcopt.adopt(0.1, b1=0.8, nesterov=True, use_clipping=False),
        lambda: _adopt(0.1, 0.8, 0.9999, 1e-6, nesterov=True, clipping=False),
    ),
    (
        "acprop",
        funcopt.acprop(0.1, eps=1e-8, eps_root=1e-10, weight_decay=0.1),
        lambda: _acprop(0.1, 0.9, 0.999, 1e-8, 1e-10, 0.1),
    ),
]


@pytest.mark.parametrize(
    ("tx", "reference"), [e[1:] for e in EQUATIONS], ids=[e[0] for e in EQUATIONS]
)
def test_the_equations_written_out(tx, reference, maybe_jit, x64):
    assert_follows_equations(tx, reference, np.float64, maybe_jit)


def test_complex_acprop_follows_the_equations_with_moduli(maybe_jit, x64):
    """|g − m|² for complex numbers, as optax (ADOPT's clipping is undefined there)."""
    _, tx, reference = EQUATIONS[2]
    assert_follows_equations(tx, reference, np.complex128, maybe_jit)


def test_adopt_refuses_to_clip_complex_numbers_as_optax():
    z = jnp.ones(2, jnp.complex64)
    for tx in (funcopt.adopt(0.1), optax.contrib.adopt(0.1)):
        with pytest.raises(ValueError, match=r"[Cc]omplex"):
            tx.update(z, tx.init(z), z)


def test_the_first_steps():
    """ADOPT does not move at the first step; ACProp's first step is g / (1 + ε)."""
    g = jnp.array([2.0, -4.0])
    u, _ = funcopt.adopt(0.1).update(g, funcopt.adopt(0.1).init(g))
    np.testing.assert_array_equal(u, [0.0, 0.0])
    tx = funcopt.scale_by_acprop(eps=0.5)
    np.testing.assert_allclose(tx.update(g, tx.init(g))[0], g / 1.5)


# ---- hyper-parameters, signatures, states ---------------------------------------------

BAD = [
    (lambda: funcopt.adopt(0.1, b1=1.0), "b1"),
    (lambda: funcopt.adopt(0.1, eps=-1.0), "eps"),
    (lambda: funcopt.adopt(0.1, use_clipping=1), "use_clipping"),
    (lambda: funcopt.adopt(0.1, clip_value_fn=3.0), "clip_value_fn"),
    (lambda: funcopt.acprop(0.1, eps_root=-1.0), "eps_root"),
    (lambda: funcopt.acprop(0.1, weight_decay=-1.0), "weight_decay"),
]


@pytest.mark.parametrize(("make", "name"), BAD, ids=[n for _, n in BAD])
def test_bad_hyperparameters_name_the_argument(make, name):
    with pytest.raises(funcopt.HyperParameterError, match=rf"\b{name}\b"):
        make()


OPTAX_NAMES = ["acprop", "adopt", "scale_by_acprop", "scale_by_adopt"]


@pytest.mark.parametrize("name", OPTAX_NAMES)
def test_signatures_are_optaxs(name):
    """Names, order, kinds and defaults (ADOPT's default clip function is a lambda there)."""

    def params(f):
        return [
            (p.name, p.kind, None if p.name == "clip_value_fn" else p.default)
            for p in inspect.signature(f).parameters.values()
        ]

    assert params(getattr(funcopt, name)) == params(getattr(optax.contrib, name))
    assert getattr(funcopt, name) is getattr(module, name)


def test_every_optax_name_of_the_module_is_here():
    assert [
        n for n in module.__all__ if hasattr(optax.contrib, n) and not n.endswith("State")
    ] == OPTAX_NAMES


@pytest.mark.parametrize(
    ("tx", "fields"),
    [(funcopt.adopt(0.1), ["mu", "nu"]), (funcopt.acprop(0.1), ["mu", "nu"])],
    ids=["adopt", "acprop"],
)
def test_state_fields_are_found_by_optaxs_names(tx, fields):
    params = {"w": jnp.ones(3)}
    state = tx.update({"w": jnp.full(3, 0.5)}, tx.init(params), params)[1]
    for field in fields:
        assert optax.tree.get(state, field)["w"].shape == (3,)


@pytest.mark.parametrize("tx", [funcopt.adopt(0.1), funcopt.acprop(0.1)], ids=["adopt", "acprop"])
def test_bfloat16_statistics_stay_float32(tx, strict_dtypes):
    """One bfloat16 tree each: ADOPT's ``mu`` and ACProp's prediction ``mu``."""
    assert_bf16_statistics_stay_float32(tx, 1)
    assert_bfloat16_run_stays_bfloat16(tx, {"w": (4, 3), "b": ()})
