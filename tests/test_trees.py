"""Tree structure (funcopt.trees): mismatches named by path, states checked, masks resolved.

Structure errors are raised while tracing, so they run eagerly and under ``jit``
(``maybe_jit``) and must give the same message: a tree of updates, params or state that
does not match names the first differing path and prints both structures (node types
included), and a state made by another optimizer, another configuration or for other
parameters is refused. Then ``apply_updates`` (dtypes kept, ``None`` leaves, optax's
result), ``check_float_leaves`` and the mask helpers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.tree_util import Partial
from oracle import random_params

import funcopt
from funcopt import MaskedNode, StructureError, check_state
from funcopt.trees import check_float_leaves, is_mask_function, resolve_mask

PARAMS = {"w": jnp.ones((3, 2)), "b": [jnp.zeros(2), jnp.ones(())]}
WRONG_KEY = {"w": jnp.ones((3, 2)), "c": [jnp.zeros(2), jnp.ones(())]}
WRONG_SHAPE = {"w": jnp.ones((3, 2)), "b": [jnp.zeros(5), jnp.ones(())]}

# Every core primitive whose state has the parameters' structure, and the chain paths.
STATEFUL = {
    "scale_by_momentum": lambda: funcopt.scale_by_momentum(0.9),
    "trace-nesterov": lambda: funcopt.trace(0.9, nesterov=True),
    "scale_by_rms": lambda: funcopt.scale_by_rms(0.9),
    "precondition": lambda: funcopt.precondition(
        funcopt.scale_by_momentum(0.5), funcopt.second_moment(0.9)
    ),
    "scale_by_stddev": lambda: funcopt.scale_by_stddev(0.9),
    "scale_by_adam": lambda: funcopt.scale_by_adam(),
    "sgd-momentum": lambda: funcopt.sgd(0.1, 0.9),
    "rmsprop": lambda: funcopt.rmsprop(0.1),
    "adam": lambda: funcopt.adam(0.1),
    "adamw": lambda: funcopt.adamw(0.1),
}


def _structure_message_ok(msg: str) -> None:
    assert "['c']" in msg or "['b']" in msg, msg  # the first differing path
    assert msg.count("PyTreeDef") >= 2, msg  # both structures


@pytest.mark.parametrize("name", list(STATEFUL))
def test_update_structure_differs_from_state(name, maybe_jit):
    tx = STATEFUL[name]()
    state = tx.init(PARAMS)
    with pytest.raises(StructureError) as err:
        maybe_jit(tx.update)(WRONG_KEY, state)
    _structure_message_ok(str(err.value))


@pytest.mark.parametrize("name", list(STATEFUL))
def test_update_shape_differs_from_state(name, maybe_jit):
    tx = STATEFUL[name]()
    state = tx.init(PARAMS)
    with pytest.raises(StructureError, match=r"\['b'\]\[0\]") as err:
        maybe_jit(tx.update)(WRONG_SHAPE, state)
    assert "(5,)" in str(err.value) and "(2,)" in str(err.value)


def test_update_structure_differs_from_params(maybe_jit):
    tx = funcopt.add_decayed_weights(0.1)
    with pytest.raises(StructureError) as err:
        maybe_jit(tx.update)(WRONG_KEY, tx.init(PARAMS), PARAMS)
    _structure_message_ok(str(err.value))
    assert "params" in str(err.value)


def test_apply_updates_structure_and_shape(maybe_jit):
    with pytest.raises(StructureError) as err:
        maybe_jit(funcopt.apply_updates)(PARAMS, WRONG_KEY)
    _structure_message_ok(str(err.value))
    with pytest.raises(StructureError, match=r"shape mismatch at \['b'\]\[0\]"):
        maybe_jit(funcopt.apply_updates)(PARAMS, WRONG_SHAPE)


def test_message_names_node_types():
    """Two states with the same leaves but different state types are told apart."""
    sgd_state = funcopt.sgd(0.1, 0.9).init(PARAMS)
    with pytest.raises(StructureError, match=r"at \[0\], state has TraceState .*where"):
        check_state(funcopt.rmsprop(0.1), sgd_state, PARAMS)


# ---- a state from another optimizer or configuration ---------------------------------

OTHER_CONFIG = [
    # (the optimizer that made the state, the one it is given to, message pattern)
    (lambda: funcopt.sgd(0.1, 0.9), lambda: funcopt.adam(0.1), r"TraceState.*CountState"),
    (lambda: funcopt.sgd(0.1), lambda: funcopt.sgd(0.1, 0.9), r"EmptyState.*TraceState"),
    (lambda: funcopt.adam(0.1), lambda: funcopt.adamw(0.1), r"\[2\] that state lacks"),
    (
        lambda: funcopt.rmsprop(0.1),
        lambda: funcopt.rmsprop(0.1, centered=True),
        r"SecondMomentState.*VarianceState",
    ),
    (lambda: funcopt.gdm(0.1, 0.9), lambda: funcopt.sgd(0.1, 0.9), r"MomentumState.*TraceState"),
]


@pytest.mark.parametrize("case", range(len(OTHER_CONFIG)))
def test_state_from_other_configuration(case, maybe_jit):
    make_old, make_new, pattern = OTHER_CONFIG[case]
    state = make_old().init(PARAMS)
    with pytest.raises(StructureError, match=pattern):
        maybe_jit(make_new().update)(PARAMS, state, PARAMS)


WRAPPERS = {
    "masked": lambda: funcopt.masked(funcopt.adam(0.1), {"w": True, "b": True}),
    "partition": lambda: funcopt.partition({"x": funcopt.adam(0.1)}, "x"),
    "MultiSteps": lambda: funcopt.MultiSteps(funcopt.adam(0.1), 2),
    "apply_if_finite": lambda: funcopt.apply_if_finite(funcopt.adam(0.1), 2),
    "inject_hyperparams": lambda: funcopt.inject_hyperparams(funcopt.adam)(0.1),
}


@pytest.mark.parametrize("made_by", WRAPPERS)
def test_a_wrapper_given_another_wrappers_state_names_the_wrapper(made_by, maybe_jit):
    """Before 0.2 this was ``AttributeError: 'tuple' object has no attribute ...``."""
    state = WRAPPERS[made_by]().init(PARAMS)
    for given_to, make in WRAPPERS.items():
        if given_to == made_by:
            continue
        with pytest.raises(StructureError, match=rf"state has \w+ \({made_by}'s\)"):
            maybe_jit(make().update)(PARAMS, state, PARAMS)


def test_state_for_other_params(maybe_jit):
    tx = funcopt.adam(0.1)
    state = tx.init(WRONG_SHAPE)
    path = r"state\[0\]\.inner_state\.numerator\[0\]\.mu\['b'\]\[0\]"
    with pytest.raises(StructureError, match=path + r" has shape \(5,\)"):
        maybe_jit(tx.update)(PARAMS, state, PARAMS)


def test_check_state():
    tx = funcopt.adamw(0.1)
    check_state(tx, tx.init(PARAMS), PARAMS)  # a matching state passes
    with pytest.raises(
        StructureError,
        match=r"tx.init\(params\) has \[2\] that state lacks",
    ):
        check_state(tx, funcopt.adam(0.1).init(PARAMS), PARAMS)
    with jax.enable_x64(True):
        state64 = tx.init(jax.tree.map(lambda x: x.astype(jnp.float64), PARAMS))
    with pytest.raises(StructureError, match=r"dtype float64.*dtype float32"):
        check_state(tx, state64, PARAMS)


# ---- apply_updates ---------------------------------------------------------------------


def test_apply_updates_keeps_each_parameters_dtype(maybe_jit):
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2), "c": jnp.ones(2, jnp.float16)}
    updates = {
        "a": jnp.full(2, 0.5),  # float32 onto bfloat16
        "b": jnp.full(2, 0.5, jnp.bfloat16),  # bfloat16 onto float32
        "c": jnp.full(2, 0.5, jnp.float16),
    }
    got = maybe_jit(funcopt.apply_updates)(params, updates)
    assert {k: v.dtype for k, v in got.items()} == {k: v.dtype for k, v in params.items()}
    for k in params:
        np.testing.assert_array_equal(np.asarray(got[k], np.float32), [1.5, 1.5])


def test_apply_updates_sums_in_the_wider_dtype():
    """A float32 step onto a bfloat16 parameter is added in float32, then rounded once."""
    p = jnp.array([1.0], jnp.bfloat16)
    u = jnp.array([2**-8 + 2**-20], jnp.float32)  # just over half a bfloat16 ulp at 1
    got = funcopt.apply_updates(p, u)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32), [1 + 2**-7])
    # rounding the step to bfloat16 first would lose the 2⁻²⁰ and round 1 + 2⁻⁸ to even: 1
    assert float(p[0] + u.astype(jnp.bfloat16)[0]) == 1.0


def test_apply_updates_none_leaves_stay_none(maybe_jit):
    params = {"w": jnp.array([1.0, 2.0]), "b": None, "n": [None, jnp.zeros(())]}
    updates = {"w": jnp.array([0.5, -1.0]), "b": None, "n": [None, jnp.ones(())]}
    got = maybe_jit(funcopt.apply_updates)(params, updates)
    assert got["b"] is None and got["n"][0] is None
    np.testing.assert_array_equal(got["w"], [1.5, 1.0])
    np.testing.assert_array_equal(got["n"][1], 1.0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_apply_updates_equals_optax(dtype):
    params = random_params(0, dtype)
    updates = jax.tree.map(lambda x: x.astype(jnp.float32) * 1e-2, random_params(1, dtype))
    got = funcopt.apply_updates(params, updates)
    want = optax.apply_updates(params, updates)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


# ---- check_float_leaves ------------------------------------------------------------------


def test_check_float_leaves_accepts_inexact_leaves_and_none():
    check_float_leaves(
        {
            "w": jnp.zeros(2),
            "h": jnp.zeros(2, jnp.bfloat16),
            "z": jnp.zeros(2, jnp.complex64),
            "x": 1.0,  # a Python float is a float leaf
            "n": None,  # not a leaf
        }
    )


@pytest.mark.parametrize(
    ("tree", "name", "message"),
    [
        ({"step": jnp.array(3)}, "params", r"params\['step'\] has dtype int32"),
        ([jnp.zeros(1), {"f": np.array(True)}], "params", r"params\[1\]\['f'\] has dtype bool"),
        ({"i": 3}, "params", r"params\['i'\] has dtype int32"),  # a Python int
        (jnp.array([1, 2]), "updates", r"^updates has dtype int32"),  # a single leaf: no path
    ],
    ids=["int-array", "bool", "python-int", "root"],
)
def test_check_float_leaves_names_the_first_non_float_leaf(tree, name, message):
    with pytest.raises(TypeError, match=message) as err:
        check_float_leaves(tree, name)
    assert "set_to_zero" in str(err.value) and "masked" in str(err.value)  # the way out


# ---- masks: trees of bools or functions of the params --------------------------------------


def _labels(a, b, params):
    return {"w": a, "b": b}


def test_is_mask_function():
    assert is_mask_function(lambda params: {"w": True})
    assert is_mask_function(Partial(_labels))  # a callable pytree without leaves
    # a callable pytree whose leaves are bools (or arrays) is a tree, as in optax
    assert not is_mask_function(Partial(_labels, True, np.bool_(False)))
    assert not is_mask_function(Partial(_labels, jnp.array(True), jnp.array(False)))
    assert not is_mask_function({"w": True, "b": False})
    assert not is_mask_function(True)


def test_resolve_mask_calls_a_function_and_keeps_a_tree():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    by_ndim = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    assert resolve_mask(by_ndim, params) == {"w": True, "b": False}
    assert resolve_mask({"w": False, "b": True}, params) == {"w": False, "b": True}
    assert resolve_mask(True, params) is True  # a prefix: one flag for the whole tree
    tree = Partial(_labels, True, False)
    assert resolve_mask(tree, params) is tree  # a tree, not called


def test_resolve_mask_cuts_a_full_tree_mask_to_masked_node_placeholders():
    """Inside partition/masked, leaves owned by other transforms are MaskedNode()s."""
    params = {"w": jnp.ones(2), "b": MaskedNode(), "c": {"x": jnp.ones(1), "y": MaskedNode()}}
    full = {"w": True, "b": False, "c": {"x": False, "y": True}}
    assert resolve_mask(full, params) == {
        "w": True,
        "b": MaskedNode(),
        "c": {"x": False, "y": MaskedNode()},
    }
    # a mask that does not fit is returned as is, for the caller's structure check
    other = {"w": True, "z": False}
    assert resolve_mask(other, params) is other
