"""Bad input across the whole public API gives a clear error or the correct result.

The families of bad input (issue 14), each over every factory or every registry row:

- hyper-parameters: every argument of every public factory that declares a kind is probed
  with NaN, ±inf (as Python, numpy 0-d and jax values), bools, ``None``, strings, complex
  numbers, arrays of the wrong shape and foreign objects; each must raise
  :class:`HyperParameterError` naming the argument the user typed. Out-of-range values
  name the optimizer's own argument; traced values pass unchecked (``jit``/``vmap``);
- structure: integer and boolean leaves, gradients that would broadcast against their
  parameter (``()`` or ``(1, …)``), ``None`` gradient leaves, states cast to another
  dtype are refused; Python-float gradient leaves act as 0-d arrays;
- step counters saturate at 2³¹ − 1; non-finite gradients poison Adam unless
  apply_if_finite skips them; values that would give NaN on the first steps are refused.

States of another optimizer, wrapper or parameter tree are in ``test_trees.py``; packed
states of another layout in ``test_packing.py``; checkpoints restored for another
template in ``test_checkpoint.py``; donation in ``test_properties.py`` (a buffer per
state leaf) and ``test_train.py`` (arrays of the transform are never donated).
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import registry
from oracle import assert_rel_close

import funcopt
from funcopt import HyperParameterError, StructureError
from funcopt.values import Value

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
    # issue 14: the argument the user typed, not the primitive's
    (lambda: funcopt.adagrad(0.1, eps=-1), "eps", "-1.0"),
    (lambda: funcopt.adafactor(eps=-1), "eps", "-1.0"),
    (lambda: funcopt.muon(0.1, adam_b1=2), "adam_b1", "2.0"),
    (lambda: funcopt.sgd(np.array(-1.0)), "learning_rate", "-1.0"),
    (lambda: funcopt.adam(b1=np.array(1.5)), "b1", "1.5"),
    # issue 14: never validated before
    (lambda: funcopt.rmsprop(0.1, initial_scale=-1), "initial_scale", "-1.0"),
    (lambda: funcopt.scale(float("nan")), "step_size", "nan"),
    (lambda: funcopt.adafactor(decay_offset=-5), "decay_offset", "-5"),
    (lambda: funcopt.MultiSteps(funcopt.sgd(0.1), every_k_schedule=2.5), "every_k_schedule", "2.5"),
    (lambda: funcopt.apply_every(k=2.5), "k", "2.5"),
    (lambda: funcopt.muon(0.1, ns_steps=2.5), "ns_steps", "2.5"),
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


# Every factory with declared kinds, probed argument by argument. ``REQUIRED`` gives the
# arguments that have no default (valid values, so that only the probed one is bad).
SGD = funcopt.sgd(0.1)
REQUIRED = {
    "learning_rate": 0.1, "b1": 0.9, "decay": 0.9, "opt": SGD, "inner": SGD, "tx": SGD,
    "fast_optimizer": SGD, "base_optimizer": SGD, "adaptive": funcopt.scale_by_adam(),
    "numerator": funcopt.scale_by_momentum(), "denominator": funcopt.second_moment(),
    "every_k_schedule": 2, "max_consecutive_errors": 3, "clipping": 0.1, "eta": 0.01,
    "gamma": 0.55, "max_delta": 1.0, "threshold": 1.0, "max_norm": 1.0, "value": 1.0,
    "init_value": 1.0, "end_value": 0.1, "peak_value": 2.0, "decay_steps": 10,
    "transition_steps": 10, "warmup_steps": 2, "decay_rate": 0.5, "power": 1.0,
    "interpolate_type": "linear", "step_size": 0.5, "sync_period": 2, "slow_step_size": 0.5,
    "transforms": {"a": SGD}, "param_labels": "a", "schedules": [funcopt.constant_schedule(1.0)],
    "boundaries": [], "new_tensors": jnp.ones(2), "old_tensors": jnp.zeros(2), "steps": 1,
    "update_period": 2, "mask": True, "init_step": ("heuristic", 1e-6),
    "direction": funcopt.scale_by_momentum(),
    "optimizer": SGD, "adv_optimizer": SGD,
}  # fmt: skip


def _declared_kinds(obj):
    """The factory's arguments that declare a kind (a Value's fields, or ``@hyperparameters``)."""
    if isinstance(obj, type) and issubclass(obj, Value) and dataclasses.is_dataclass(obj):
        kinds = {f.name: f.metadata.get("kind") for f in dataclasses.fields(obj)}
    elif hasattr(obj, "__hyperparameters__"):
        kinds = obj.__hyperparameters__
    else:
        return {}
    arguments = inspect.signature(obj).parameters
    return {arg: kind for arg, kind in kinds.items() if kind is not None and arg in arguments}


FACTORIES = [name for name in funcopt.__all__ if _declared_kinds(getattr(funcopt, name))]


def _bad_values(kind):
    """Values no kind accepts, and those its description rules out."""
    values = ["1e-3", jnp.ones(2), np.ones(2), object()]
    if kind.description.startswith(("a number", "an integer")):
        inf = float("inf")
        values += [float("nan"), inf, -inf, np.array(inf), np.float32(-inf), jnp.asarray(np.nan)]
        values += [True, np.bool_(False), 1 + 2j]
        if "None" not in kind.description:
            values.append(None)
    elif kind.description.startswith("True or False"):
        values += [None, 1, 0.5]
    return values


def test_every_factory_is_probed():
    assert len(FACTORIES) >= 90
    assert {"adam", "muon", "adafactor", "schedule_free_adamw", "lamb", "MultiSteps"} <= set(
        FACTORIES
    )


@pytest.mark.parametrize("name", FACTORIES)
def test_every_bad_value_of_every_argument_is_refused(name):
    make = getattr(funcopt, name)
    signature = inspect.signature(make)
    required = {
        arg: REQUIRED[arg]
        for arg, p in signature.parameters.items()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    make(**required)  # the valid base case builds
    for arg, kind in _declared_kinds(make).items():
        for bad in _bad_values(kind):
            with pytest.raises(HyperParameterError, match=rf"\b{arg}(\[[^]]*\])*=") as err:
                make(**{**required, arg: bad})
            assert isinstance(err.value, ValueError)


def test_masks_are_checked_where_they_are_given():
    """A mask is a pytree of bools, a function of the params, or None."""
    for bad, shown in [("1e-3", r"mask='1e-3'"), ({"w": 1.0}, r"mask\['w'\]=1.0")]:
        with pytest.raises(HyperParameterError, match=shown):
            funcopt.masked(SGD, bad)
        with pytest.raises(HyperParameterError, match=shown):
            funcopt.adamw(0.1, mask=bad)
    with pytest.raises(HyperParameterError, match=r"weight_decay_mask=an array of shape \(2,\)"):
        funcopt.lars(0.1, weight_decay_mask=jnp.ones(2))
    for good in (None, True, {"w": np.bool_(True)}, {"w": jnp.asarray(False)}, lambda p: p):
        funcopt.adamw(0.1, mask=good)


def test_dtype_arguments_must_be_float_dtypes():
    for bad in ("1e-3", jnp.int32, "int8", 1.5):
        with pytest.raises(HyperParameterError, match=r"mu_dtype must be a float dtype"):
            funcopt.adam(0.1, mu_dtype=bad)
    assert funcopt.adam(0.1, mu_dtype="bfloat16") == funcopt.adam(0.1, mu_dtype=jnp.bfloat16)


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
    if entry.name in {"set_to_zero", "selective_transform"}:
        # the escape hatch: the scalar flag is labelled for set_to_zero (frozen), which
        # keeps no state, so the optimizer never sees it
        tx.init(entry.params(BOOL_PARAMS))
        return
    with pytest.raises(TypeError, match=r"\['flag'\] has dtype bool"):
        tx.init(entry.params(BOOL_PARAMS))


# ---- gradients that do not fit their parameters ----------------------------------------


def _grads(entry, **change):
    """The registry's gradients (as the row expects them), with ``change``'s leaves."""
    b = [jnp.full(2, 0.5), jnp.asarray(1.5)]
    g = {"w": jnp.full((3, 2), 0.5), "b": b}
    for key, value in change.items():
        if key == "w":
            g["w"] = value
        else:
            g["b"] = [b[0], value]
    return g


@pytest.mark.parametrize("entry", ENTRIES, ids=registry.ids(ENTRIES))
def test_gradients_must_fit_the_parameters(entry, maybe_jit):
    """No broadcasting, no silent truncation, no missing leaf, in every optimizer."""
    tx = entry.build(registry.LR)
    params = entry.params(PARAMS)
    state = tx.init(params)
    update = maybe_jit(tx.update)
    with pytest.raises(TypeError, match=r"\['w'\] has dtype int32"):
        update(_grads(entry, w=jnp.ones((3, 2), jnp.int32)), state, params)
    for shape in [(1, 2), (3, 1)]:  # each would broadcast against (3, 2)
        with pytest.raises(StructureError, match=r"\['w'\].* shape \(3, 2\)"):
            update(_grads(entry, w=jnp.ones(shape)), state, params)
    # (a mask function of the updates, as in optax, sees a scalar: the state then differs)
    with pytest.raises(StructureError, match=r"\['w'\]"):
        update(_grads(entry, w=jnp.ones(())), state, params)
    with pytest.raises(StructureError, match=r"\['b'\]\[1\]"):  # by update or apply_updates
        updates, _ = update(_grads(entry, b1=None), state, params)
        funcopt.apply_updates(params, updates)
    # a Python float is a 0-d array
    as_float, _ = tx.update(_grads(entry, b1=1.5), state, params)
    as_array, _ = tx.update(_grads(entry), state, params)
    chex.assert_trees_all_equal(as_float, as_array)


STATEFUL = [e for e in ENTRIES if e.name not in {"gd", "sgd", "sign_sgd", "noisy_sgd"}]


@pytest.mark.parametrize("entry", STATEFUL, ids=registry.ids(STATEFUL))
def test_a_state_cast_to_another_dtype_is_refused(entry):
    """A state whose float leaves were cast (to bf16, say) would run on in the wrong dtype."""
    tx = entry.build(registry.LR)
    params = entry.params(PARAMS)
    state = tx.init(params)
    assert any(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(state))
    cast = jax.tree.map(
        lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, state
    )
    with pytest.raises(StructureError, match=r"dtype bfloat16.*dtype float32"):
        tx.update(_grads(entry), cast, params)


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
