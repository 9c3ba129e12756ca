"""Bad input across the registry gives a clear error; step counters saturate, not wrap.

Hyper-parameters out of range are refused naming the optimizer's own argument (eagerly:
under ``jit``/``vmap`` traced hyper-parameters must be accepted); integer and boolean
parameter leaves are refused by every optimizer; every step counter saturates at
2³¹ − 1; a non-finite gradient poisons Adam unless apply_if_finite skips it; values that
would give NaN on the first steps are refused up front. Tree structure errors (updates,
params and states that do not match) are tested in ``test_trees.py``.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import registry
from oracle import assert_rel_close

import funcopt
from funcopt import HyperParameterError

PARAMS = {"w": jnp.ones((3, 2)), "b": [jnp.zeros(2), jnp.ones(())]}


# ---- hyper-parameters ------------------------------------------------------------------

BAD_HYPERPARAMETERS = [
    (lambda: funcopt.scale_by_momentum(1.0), "decay", "1.0"),
    (lambda: funcopt.scale_by_rms(-0.1), "decay", "-0.1"),
    (lambda: funcopt.scale_by_rms(0.9, eps=-1.0), "eps", "-1.0"),
    (lambda: funcopt.scale_by_learning_rate(-1.0), "learning_rate", "-1.0"),
    (lambda: funcopt.add_decayed_weights(-0.5), "weight_decay", "-0.5"),
    (lambda: funcopt.adam(float("nan")), "learning_rate", "nan"),
    (lambda: funcopt.adam(0.1, eps=-1e-8), "eps", "-1e-08"),
    (lambda: funcopt.sgd(0.1, momentum=1.5), None, "1.5"),
    (lambda: funcopt.adam(0.1, b2=jnp.asarray(1.0)), None, "1.0"),
]


@pytest.mark.parametrize("case", range(len(BAD_HYPERPARAMETERS)))
def test_hyperparameter_out_of_range(case):
    make, name, value = BAD_HYPERPARAMETERS[case]
    with pytest.raises(HyperParameterError) as err:
        make()
    assert isinstance(err.value, ValueError)
    msg = str(err.value)
    assert value in msg, msg
    if name is not None:
        assert re.search(rf"\b{name}\b", msg), msg


OPTIMIZER_ARGUMENTS = [
    (funcopt.adam, "b1"),
    (funcopt.adamw, "b2"),
    (funcopt.nadam, "b1"),
    (funcopt.amsgrad, "b2"),
    (funcopt.lion, "b2"),
    (funcopt.radam, "b1"),
    (funcopt.signum, "beta"),
    (funcopt.lars, "momentum"),
    (funcopt.sgd, "momentum"),
    (funcopt.gdm, "momentum"),
    (funcopt.adadelta, "rho"),
    (funcopt.muon, "beta"),
    (funcopt.schedule_free_adamw, "b1"),
]


@pytest.mark.parametrize(
    ("make", "arg"), OPTIMIZER_ARGUMENTS, ids=lambda x: getattr(x, "__name__", x)
)
def test_optimizer_errors_use_the_optimizers_names(make, arg):
    """The message names the optimizer's own argument, not the primitive's ``decay``."""
    with pytest.raises(HyperParameterError, match=rf"\b{arg}=1.5\b"):
        make(0.1, **{arg: 1.5})


def test_traced_hyperparameters_under_jit_and_vmap():
    """Built inside jit/vmap, hyper-parameters are tracers: no check, same result as optax."""
    g = jax.tree.map(lambda x: x + 0.5, PARAMS)

    def step(lr, b1, b2):
        tx = funcopt.adam(lr, b1, b2)
        return tx.update(g, tx.init(PARAMS), PARAMS)[0]

    def oracle(lr, b1, b2):
        tx = optax.adam(lr, b1, b2)
        return tx.update(g, tx.init(PARAMS), PARAMS)[0]

    assert_rel_close(jax.jit(step)(0.1, 0.8, 0.99), oracle(0.1, 0.8, 0.99), 1e-6)
    lrs = jnp.array([0.1, 0.2, 0.3])
    out = jax.vmap(step, in_axes=(0, None, None))(lrs, 0.8, 0.99)
    for i, lr in enumerate([0.1, 0.2, 0.3]):
        assert_rel_close(jax.tree.map(lambda x, i=i: x[i], out), oracle(lr, 0.8, 0.99), 1e-6)
    # out-of-range but traced: allowed (validation is for concrete values only)
    jax.jit(step)(0.1, 1.5, 0.99)


# ---- integer and boolean leaves ----------------------------------------------------------

ENTRIES = registry.available()
INT_PARAMS = {"w": jnp.ones((3, 2)), "n": [jnp.zeros(2), jnp.array([1, 2], jnp.int32)]}
BOOL_PARAMS = {"w": jnp.ones((3, 2)), "flag": jnp.array(True)}


@pytest.mark.parametrize("entry", ENTRIES, ids=registry.ids(ENTRIES))
def test_integer_and_boolean_leaves_rejected(entry):
    tx = entry.build(registry.LR)
    with pytest.raises(TypeError, match=r"\['n'\]\[1\] has dtype int32"):
        tx.init(entry.params(INT_PARAMS))
    if entry.name == "set_to_zero":
        # the escape hatch: the scalar flag is labelled for set_to_zero, which keeps no
        # state, so the optimizer never sees it
        tx.init(entry.params(BOOL_PARAMS))
        return
    with pytest.raises(TypeError, match=r"\['flag'\] has dtype bool"):
        tx.init(entry.params(BOOL_PARAMS))


# ---- the step counter saturates -----------------------------------------------------------

TOP = np.iinfo(np.int32).max


def _set_counts(state, value):
    """Every int32 scalar of the state (the step counts) set to ``value``."""
    return jax.tree.map(
        lambda x: (
            jnp.asarray(value, jnp.int32)
            if getattr(x, "dtype", None) == jnp.int32 and jnp.ndim(x) == 0
            else x
        ),
        state,
    )


def test_adam_counter_saturates_and_stays_finite(maybe_jit):
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.1
    tx = funcopt.adam(lr, b1, b2, eps)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=4), jnp.float32)}
    state = _set_counts(tx.init(params), TOP - 2)
    update = maybe_jit(tx.update)
    m = np.zeros(4)
    v = np.zeros(4)
    for _ in range(5):
        g = rng.normal(size=4)
        u, state = update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        # by hand: at t ≈ 2³¹ the bias corrections 1 − βᵗ are exactly 1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        expected = -lr * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(np.asarray(u["w"]), expected, rtol=1e-5)
    counts = [x for x in jax.tree.leaves(state) if x.dtype == jnp.int32]
    assert len(counts) == 1 and all(int(c) == TOP for c in counts)  # one count per optimizer


@pytest.mark.parametrize("entry", ENTRIES, ids=registry.ids(ENTRIES))
def test_every_counter_saturates(entry):
    """Near 2³¹ − 1 no count wraps to a negative number and the outputs stay finite."""
    tx = entry.build(registry.LR)
    params = entry.params(PARAMS)
    state = _set_counts(tx.init(params), TOP - 2)
    g = jax.tree.map(lambda x: x + 0.5, PARAMS)
    for _ in range(4):
        u, state = tx.update(g, state, params)
        for x in jax.tree.leaves(u):
            assert np.all(np.isfinite(np.asarray(x)))
    for x in jax.tree.leaves(state):
        if getattr(x, "dtype", None) == jnp.int32:
            assert np.all(np.asarray(x) >= 0), "a counter wrapped around"
        elif jnp.issubdtype(getattr(x, "dtype", jnp.int32), jnp.floating):
            assert np.all(np.isfinite(np.asarray(x)))


# ---- non-finite gradients -------------------------------------------------------------------


def test_non_finite_gradient_poisons_state_unless_apply_if_finite():
    """Without apply_if_finite a NaN stays in Adam's moments; with it the step is skipped."""
    params = {"w": jnp.ones(2)}
    bad = {"w": jnp.array([jnp.nan, 1.0])}
    good = {"w": jnp.array([1.0, 1.0])}
    tx = funcopt.adam(0.1)
    _, state = tx.update(bad, tx.init(params), params)
    u, _ = tx.update(good, state, params)
    assert np.isnan(np.asarray(u["w"][0])) and np.isfinite(np.asarray(u["w"][1]))

    safe = funcopt.apply_if_finite(funcopt.adam(0.1), 3)
    s0 = safe.init(params)
    u, s1 = safe.update(bad, s0, params)
    np.testing.assert_array_equal(np.asarray(u["w"]), [0.0, 0.0])
    for a, b in zip(jax.tree.leaves(s1.inner_state), jax.tree.leaves(s0.inner_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    u, _ = safe.update(good, s1, params)
    np.testing.assert_allclose(np.asarray(u["w"]), [-0.1, -0.1], rtol=1e-5)  # Adam's first step


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: funcopt.schedule_free_adamw(1e-2, b1=0.0), r"b1 must be in \(0, 1\), got b1=0.0"),
        (lambda: funcopt.schedule_free_sgd(1e-2, b1=0.0), r"b1=0.0"),
        (lambda: funcopt.radam(1e-2, threshold=3.0), r"threshold=3.0"),
        (lambda: funcopt.rectify(funcopt.scale_by_adam(), threshold=2.0), r"threshold=2.0"),
    ],
)
def test_values_that_would_give_nan_are_rejected(make, message):
    """β = 0 in schedule-free (x = (y − (1 − β) z) / β) and a RAdam threshold below 4
    (√(ρ_t − 4)) would turn into NaN on the first steps: they are refused up front."""
    with pytest.raises(HyperParameterError, match=message):
        make()
