"""Adafactor (funcopt.factored): the factored second moment by hand, and the optimizer.

``scale_by_factored_rms`` runs four steps (eagerly and under jit, with strict dtype
promotion) on fixed gradients against its docstring's equations written out in NumPy
(float64). ``adafactor``'s optax comparisons run from ``registry`` in
``test_oracles.py``; here its argument checks, its optional stages and donation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracle import random_params
from support import assert_bf16_statistics_stay_float32, assert_state_buffers_donatable

import funcopt

RNG = np.random.default_rng(0)
GRADS = [RNG.normal(size=(4, 3)) for _ in range(4)]
PARAMS = RNG.normal(size=(4, 3))


def _outputs(tx, maybe_jit, params=PARAMS):
    update = maybe_jit(tx.update)
    state = tx.init(jnp.asarray(params, jnp.float32))
    outs = []
    for g in GRADS:
        u, state = update(jnp.asarray(g, jnp.float32), state, jnp.asarray(params, jnp.float32))
        outs.append(np.asarray(u, np.float64))
    return outs


def _check(got, want, tol=2e-6):
    for t, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"step {t + 1}")


# ---- scale_by_factored_rms -----------------------------------------------------------------


def test_factored_rms_follows_its_equation(maybe_jit, strict_dtypes):
    rows, cols, want = 0.0, 0.0, []
    for t, x in enumerate(GRADS):
        beta = 1 - (t + 1) ** -0.8
        g2 = x * x + 1e-30
        rows = beta * rows + (1 - beta) * g2.mean(axis=1)  # (4,): the rows of (4, 3)
        cols = beta * cols + (1 - beta) * g2.mean(axis=0)  # (3,)
        v_hat = np.outer(rows, cols) / rows.mean()
        want.append(x / np.sqrt(v_hat))
    _check(_outputs(funcopt.scale_by_factored_rms(min_dim_size_to_factor=3), maybe_jit), want)


def test_factored_rms_keeps_a_full_moment_for_small_leaves(maybe_jit):
    """Below min_dim_size_to_factor the leaf gets RMSProp with Adafactor's decay schedule."""
    got = _outputs(funcopt.scale_by_factored_rms(min_dim_size_to_factor=5), maybe_jit)
    v, want = 0.0, []
    for t, x in enumerate(GRADS):
        beta = 1 - (t + 1) ** -0.8
        v = beta * v + (1 - beta) * (x * x + 1e-30)
        want.append(x / np.sqrt(v))
    _check(got, want)


def test_factored_rms_takes_optax_decay_rate_fn(maybe_jit):
    """decay_rate_fn(step, decay_rate) gives β at step = t − 1 (here capped at 0.5)."""
    fn = lambda step, c: jnp.minimum(1.0 - (step + 1.0) ** -c, 0.5)
    tx = funcopt.scale_by_factored_rms(min_dim_size_to_factor=5, decay_rate_fn=fn)
    v, want = 0.0, []
    for t, x in enumerate(GRADS):
        beta = min(1 - (t + 1) ** -0.8, 0.5)
        v = beta * v + (1 - beta) * (x * x + 1e-30)
        want.append(x / np.sqrt(v))
    _check(_outputs(tx, maybe_jit), want)


def test_factored_rms_state_buffers_are_distinct_and_donatable():
    """Each state leaf, placeholders included, is its own buffer: a donated step works."""
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    tx = funcopt.scale_by_factored_rms(min_dim_size_to_factor=2)
    state = tx.init(params)
    leaves = jax.tree.leaves(state)
    assert len({x.unsafe_buffer_pointer() for x in leaves}) == len(leaves)
    step = jax.jit(tx.update, donate_argnums=1)
    for _ in range(2):
        _, state = step(params, state, params)


def test_factored_rms_decay_saturates_at_the_top_count():
    """Adafactor's decay reads count + 1: it must saturate at 2³¹ − 1, not wrap negative."""
    tx = funcopt.scale_by_factored_rms(min_dim_size_to_factor=3)
    g = jnp.asarray(GRADS[0], jnp.float32)
    state = tx.init(g)
    assert isinstance(state, funcopt.CountState)  # the count is the enclosing CountState's
    state = state._replace(count=jnp.asarray(np.iinfo(np.int32).max, jnp.int32))
    out, state = tx.update(g, state)
    assert np.all(np.isfinite(np.asarray(out))) and int(state.count) == np.iinfo(np.int32).max


def test_factored_rms_statistics_are_float32_for_bf16_params():
    # No first moment: nothing may be bf16.
    assert_bf16_statistics_stay_float32(funcopt.scale_by_factored_rms(), first=0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: funcopt.scale_by_factored_rms(min_dim_size_to_factor=0), r"min_dim_size"),
        (lambda: funcopt.scale_by_factored_rms(step_offset=1.5), r"step_offset"),
        (lambda: funcopt.scale_by_factored_rms(step_offset=-1), r"step_offset"),
        (lambda: funcopt.scale_by_factored_rms(epsilon=float("nan")), r"epsilon"),
        (lambda: funcopt.scale_by_factored_rms(decay_rate=0.0), r"decay_rate"),
    ],
)
def test_factored_rms_rejects_bad_arguments(make, message):
    with pytest.raises(funcopt.HyperParameterError, match=message):
        make()


# ---- adafactor -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(decay_offset=-1), r"\bdecay_offset=-1"),
        (dict(decay_offset=2.5), r"\bdecay_offset=2.5"),
        (dict(min_dim_size_to_factor=0), r"\bmin_dim_size_to_factor=0"),
        (dict(min_dim_size_to_factor=1.5), r"\bmin_dim_size_to_factor=1.5"),
        (dict(decay_rate=0.0), r"\bdecay_rate=0.0"),
        (dict(clipping_threshold=0.0), r"\bclipping_threshold=0.0"),
        (dict(eps=-1e-30), r"\beps=-1e-30"),
        (dict(momentum=1.0), r"\bmomentum=1.0"),
        (dict(factored=1), r"\bfactored=1"),
    ],
)
def test_adafactor_names_bad_arguments(kwargs, message):
    with pytest.raises(funcopt.HyperParameterError, match=message):
        funcopt.adafactor(0.01, **kwargs)


def test_adafactor_accepts_its_optional_stages_off():
    tx = funcopt.adafactor(None, clipping_threshold=None, decay_offset=1e1, momentum=None)
    assert tx == funcopt.adafactor(None, clipping_threshold=None, decay_offset=10)


# The registry's rows are donated in test_properties.py; these add momentum to a factored
# Adafactor, and factored=False.
DONATED = [
    ("adafactor", lambda: funcopt.adafactor(0.01, min_dim_size_to_factor=2, momentum=0.9)),
    ("adafactor-unfactored", lambda: funcopt.adafactor(0.01, factored=False)),
]


@pytest.mark.parametrize("make", [d[1] for d in DONATED], ids=[d[0] for d in DONATED])
def test_init_allocates_a_buffer_per_state_leaf(make):
    """No state leaf shares a buffer with another or with the params, so the state, and
    the params beside it, can be donated."""
    assert_state_buffers_donatable(make(), random_params(0))
