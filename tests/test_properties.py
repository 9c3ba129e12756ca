"""Properties every optimizer and wrapper in the registry must have, on random pytrees.

Hypothesis draws nested dicts, lists and tuples whose leaves are scalars, zero-size and
small arrays of float32 and bfloat16 (float64 in the x64 variant). For each row of
``registry.ENTRIES``, two steps of ``init``/``update``:

* are pure: the same inputs give bit-identical outputs, and the (numpy) inputs are
  left unchanged;
* give the same result under ``jax.jit`` as eagerly, within float rounding, where the
  jitted program is donated the params and ``init``'s state (every state leaf has a buffer
  of its own);
* keep the structure: updates have the gradients' tree and dtypes, the state after
  two steps has the tree, shapes and dtypes of ``init``'s;
* map finite inputs to finite outputs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import assert_distinct_buffers

import funcopt

ENTRIES = registry.available()
SHAPES = [(), (0,), (3,), (2, 3), (1, 4, 2), (2, 0)]
# jit may fuse (e.g. contract a·b + c to an FMA) where eager does not: allow rounding.
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12, np.dtype(ml_dtypes.bfloat16): 2e-2}


def test_registry_complete():
    """Every optimizer and wrapper the registry lists exists in funcopt."""
    assert not registry.missing(), f"funcopt lacks: {', '.join(registry.missing())}"


def _leaf(dtypes: list[Any]) -> st.SearchStrategy[Any]:
    def make(shape: tuple[int, ...], seed: int, dtype: Any) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=shape).astype(dtype)

    return st.builds(make, st.sampled_from(SHAPES), st.integers(0, 2**16), st.sampled_from(dtypes))


def trees(dtypes: list[Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(["w", "b", "scale", "x"])
    return st.recursive(
        _leaf(dtypes),
        lambda kids: st.one_of(
            st.dictionaries(keys, kids, min_size=1, max_size=3),
            st.lists(kids, min_size=1, max_size=3),
            st.tuples(kids, kids),
        ),
        max_leaves=5,
    )


def _grads_like(params: Any) -> Any:
    rng = np.random.default_rng(7)
    return jax.tree.map(lambda p: (0.5 * p + rng.normal(size=p.shape)).astype(p.dtype), params)


def _two_updates(tx: Any, grads: Any, state: Any, p: Any) -> tuple[Any, ...]:
    """``(u₁, s₁, u₂, s₂)``: two updates from ``state`` with the same gradients."""
    u1, s1 = tx.update(grads, state, p)
    u2, s2 = tx.update(grads, s1, p)
    return u1, s1, u2, s2


def _two_steps(entry: registry.Entry, grads: Any, params: Any) -> tuple[Any, ...]:
    tx = entry.build(registry.LR)
    p = entry.params(params)
    s0 = tx.init(p)
    return (s0, *_two_updates(tx, grads, s0, p))


def _two_steps_jitted_and_donated(entry: registry.Entry, grads: Any, params: Any) -> Any:
    """``_two_steps`` in one jitted program (``init`` inside it too) that is donated the
    params and a state ``init`` made outside: so that program also shows ``init`` gives
    every state leaf a buffer of its own, which a train step donating both needs
    (schedule-free's ``z`` is a copy of the params, not them)."""
    tx = entry.build(registry.LR)
    p = jax.tree.map(jnp.array, entry.params(params))  # device copies, to be donated
    state = tx.init(p)
    assert_distinct_buffers(state, p)

    @functools.partial(jax.jit, donate_argnums=(1, 2))
    def go(g: Any, p: Any, s: Any) -> tuple[Any, Any]:
        steps = (tx.init(p), *_two_updates(tx, g, s, p))
        return steps, funcopt.apply_updates(p, steps[3])

    steps, _ = go(grads, p, state)
    return steps


def _plain(x: Any) -> np.ndarray:
    """A numpy copy of a leaf (typed PRNG keys as their raw key data)."""
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def _np(tree: Any) -> Any:
    return jax.tree.map(_plain, tree)


def _bit_identical(a: Any, b: Any) -> bool:
    la, lb = jax.tree.leaves(_np(a)), jax.tree.leaves(_np(b))
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        for x, y in zip(la, lb, strict=True)
    )


def _assert_close(actual: Any, expected: Any) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for x, y in zip(jax.tree.leaves(_np(actual)), jax.tree.leaves(_np(expected)), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        if not (np.issubdtype(x.dtype, np.inexact) or x.dtype == ml_dtypes.bfloat16):
            np.testing.assert_array_equal(x, y)
            continue
        rtol = RTOL.get(x.dtype, 2e-5)
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        scale = max(1.0, float(np.max(np.abs(y64), initial=0.0)))
        np.testing.assert_allclose(x64, y64, rtol=rtol, atol=rtol * scale)


def _check(entry: registry.Entry, params: Any, *, jit: bool) -> None:
    grads = _grads_like(params)
    before = (_np(params), _np(grads))

    eager = _two_steps(entry, grads, params)
    again = _two_steps(entry, grads, params)
    # pure: same inputs, bit-identical outputs; inputs untouched
    assert _bit_identical(eager, again), "two identical calls gave different results"
    assert _bit_identical((params, grads), before), "init/update modified their inputs"

    if jit:  # jit equals eager within float rounding, from a donated state
        _assert_close(_two_steps_jitted_and_donated(entry, grads, params), eager)

    s0, u1, s1, u2, s2 = eager
    # structure and dtypes preserved
    expected_u = entry.params(grads)
    for u in (u1, u2):
        assert jax.tree.structure(u) == jax.tree.structure(expected_u)
        for a, g in zip(jax.tree.leaves(u), jax.tree.leaves(expected_u), strict=True):
            assert a.shape == g.shape and a.dtype == g.dtype, (a.dtype, g.dtype)
    for s in (s1, s2):
        assert jax.tree.structure(s) == jax.tree.structure(s0)
        for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(s0), strict=True):
            assert jnp.shape(a) == jnp.shape(b) and a.dtype == b.dtype
    # finite in, finite out
    for x in jax.tree.leaves(_np((u1, s1, u2, s2))):
        if np.issubdtype(x.dtype, np.inexact) or x.dtype == ml_dtypes.bfloat16:
            assert np.all(np.isfinite(x.astype(np.float64))), x


def _fixed_tree(dtype: Any, low: Any) -> Any:
    """Every container kind, a scalar, a zero-size array, and a low-precision leaf."""
    rng = np.random.default_rng(0)
    return {
        "dense": {
            "w": rng.normal(size=(3, 2)).astype(dtype),
            "b": rng.normal(size=3).astype(dtype),
        },
        "seq": [rng.normal(size=()).astype(dtype), rng.normal(size=(0,)).astype(dtype)],
        "pair": (rng.normal(size=(1, 4, 2)).astype(low), rng.normal(size=(2, 0)).astype(dtype)),
    }


@pytest.mark.parametrize("entry", ENTRIES, ids=registry.ids(ENTRIES))
def test_jit_matches_eager(entry):
    _check(entry, _fixed_tree(np.float32, ml_dtypes.bfloat16), jit=True)


CORE = [e for e in ENTRIES if e.name in registry.CORE]


@pytest.mark.parametrize("entry", CORE, ids=registry.ids(CORE))
def test_jit_matches_eager_float64(entry, x64):
    _check(entry, _fixed_tree(np.float64, np.float64), jit=True)


@pytest.mark.parametrize("entry", ENTRIES, ids=registry.ids(ENTRIES))
@settings(max_examples=2)
@given(params=trees([np.float32, ml_dtypes.bfloat16]))
def test_properties_float32_bfloat16(entry, params):
    _check(entry, params, jit=False)


@pytest.mark.parametrize("entry", ENTRIES, ids=registry.ids(ENTRIES))
@settings(max_examples=1, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=trees([np.float64]))
def test_properties_float64(entry, params, x64):
    _check(entry, params, jit=False)


def test_the_buffer_check_catches_a_state_that_holds_the_params():
    """The donation check above fails on what it guards against: a state leaf that is a
    param (as schedule-free's ``z`` would be without its copy), or two leaves that are one."""
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    with pytest.raises(AssertionError, match="params' buffer"):
        assert_distinct_buffers({"z": params["w"]}, params)
    m = jnp.zeros(3)
    with pytest.raises(AssertionError, match="share a buffer"):
        assert_distinct_buffers((m, m), params)
    assert_distinct_buffers({"z": jnp.copy(params["w"])}, params)
