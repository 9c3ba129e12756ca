"""Test bodies shared by several test files, each called with that file's own rows.

The oracles themselves (random params, gradient functions, the scan driver, relative
errors) live in ``oracle.py``; here what several modules' tests check the same way:

- wrappers (masked, partition, MultiSteps, inject_hyperparams, lookahead, chain, ...):
  1000 steps against optax, an extra argument of update reaching the inner transform
  (the ``times_value`` spy), one trace for any hyper-parameter values, a donated train
  step, a bfloat16 run under strict promotion, the signature against optax's;
- state: a buffer per state leaf (so it can be donated), accumulators that stay float32
  for bfloat16 parameters;
- schedules against optax's at every count, traced once, exact at their ends, past int32
  and inside an optimizer;
- optimizers: twins written once for funcopt and optax, compared in float64, and the
  update equations written out in NumPy as the oracle (real and complex).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import (
    assert_rel_close,
    quadratic_grads,
    random_params,
    run,
    run_against_optax,
    wave_grads,
    wavy_grads,
)

import funcopt


def not_scalars(params: Any) -> Any:
    """A weight-decay mask: True for every leaf but the scalars."""
    return jax.tree.map(lambda x: x.ndim > 0, params)


# ---- wrappers --------------------------------------------------------------------------


def assert_matches_optax(
    ours: Any,
    theirs: Any,
    params: Any,
    grads: Callable[[Any, jax.Array], Any] = wavy_grads,
    theirs_params: Any = None,
) -> None:
    """1000 steps of ``ours`` and of the optax ``theirs`` from ``params`` (``theirs_params``
    where optax's params are another type) agree, leaf by leaf, to 1e-5 in float32."""
    got, want = run_against_optax(ours, theirs, params, 1000, grads, theirs_params)
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in got)
    assert_rel_close(got, want, 1e-5)


def times_value() -> optax.GradientTransformationExtraArgs:
    """An optax transform that reads an extra argument of update (``value=``)."""

    def update(updates, state, params=None, *, value, **extra):
        return jax.tree.map(lambda g: g * value, updates), state

    return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


def assert_value_reaches_times_value(
    tx: Any,
    maybe_jit: Callable,
    wrap: Callable[[Any], Any] = lambda p: p,
    read: Callable[[Any], Any] = lambda u: u,
) -> None:
    """``value=3`` given to ``tx.update`` reaches the ``times_value`` inside ``tx``: the
    update (``read`` from what ``tx`` returns) is 3 g. ``wrap`` makes the params ``tx``
    expects (LookaheadParams, say) from the gradients' tree."""
    grads = {"w": jnp.array([1.0, -2.0])}
    params = wrap(grads)
    update = maybe_jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
    u, _ = update(grads, tx.init(params), params, jnp.asarray(3.0))
    chex.assert_trees_all_close(read(u), {"w": jnp.array([3.0, -6.0])})


def assert_one_trace_for_any_values(
    make: Callable[[float], Any], params: Any, grads: Any = None
) -> None:
    """``make(x)`` for three values of x, passed to one jitted step, traces it once: the
    numeric hyper-parameters are leaves. ``grads`` default to the params."""
    traces = []

    @jax.jit
    def step(tx, params, grads):
        traces.append(None)
        return tx.update(grads, tx.init(params), params)[0]

    for x in (0.1, 0.2, 0.3):
        step(make(x), params, params if grads is None else grads)
    assert len(traces) == 1  # one trace, not one per value


def assert_donated_train_step_matches_plain(tx: Any) -> None:
    """Four steps of ``make_train_step`` with donation equal four without."""
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    loss = lambda p, x: jnp.sum((p["w"] * x) ** 2) + jnp.sum((p["b"] - x[:2]) ** 2)
    donated = funcopt.make_train_step(loss, tx)
    plain = funcopt.make_train_step(loss, tx, donate=False)
    p, s = params, tx.init(params)
    q, r = jax.tree.map(jnp.copy, (params, tx.init(params)))
    for _ in range(4):
        p, s, _ = donated(p, s, jnp.ones(3))
        q, r, _ = plain(q, r, jnp.ones(3))
    chex.assert_trees_all_close((p, s), (q, r))


def assert_bfloat16_run_stays_bfloat16(tx: Any, shapes: Any) -> None:
    """Three steps on bfloat16 params of ``shapes`` (run under the ``strict_dtypes``
    fixture): the params stay bfloat16 and finite."""
    params = random_params(6, jnp.bfloat16, shapes)
    got, _ = run(tx, params, 3, funcopt.apply_updates, wavy_grads)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(got))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(got))


def assert_signature_matches_optax(
    name: str, kinds: bool = True, skip: Collection[str] = ()
) -> None:
    """``funcopt.<name>`` takes optax's arguments, in order, with optax's defaults (and
    kinds, unless ``kinds`` is false), leaving out the names in ``skip``."""

    def params(f):
        return [
            (p.name, p.kind, p.default) if kinds else (p.name, p.default)
            for p in inspect.signature(f).parameters.values()
            if p.name not in skip
        ]

    assert params(getattr(funcopt, name)) == params(getattr(optax, name))


# ---- state -------------------------------------------------------------------------------


def assert_distinct_buffers(state: Any, params: Any) -> None:
    """Every leaf of ``state`` has a buffer of its own, shared with no other leaf and with
    none of ``params``', so both can be donated to a step."""

    def pointers(tree: Any) -> list[int]:
        return [x.unsafe_buffer_pointer() for x in jax.tree.leaves(tree)]

    ours = pointers(state)
    assert len(set(ours)) == len(ours), "two state leaves share a buffer"
    assert not set(ours) & set(pointers(params)), "a state leaf shares the params' buffer"


def assert_state_buffers_donatable(
    tx: Any,
    params: Any,
    grads_of: Callable[[Any], Any] = lambda p: quadratic_grads(p, jnp.asarray(0)),
) -> None:
    """``tx.init`` allocates a buffer per state leaf, none shared with another or with the
    params, so a jitted step donating both runs (twice, staying finite). ``grads_of`` gives
    the gradient at the params inside the step."""
    state = tx.init(params)
    assert_distinct_buffers(state, params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s):
        u, s = tx.update(grads_of(p), s, p)
        return funcopt.apply_updates(p, u), s

    params = jax.tree.map(jnp.copy, params)
    for _ in range(2):
        params, state = step(params, state)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))


def assert_bf16_statistics_stay_float32(tx: Any, first: int) -> None:
    """For bfloat16 params, one jitted step gives bfloat16 updates and keeps the state's
    dtypes; the only bfloat16 state leaves are ``first`` first moments per param leaf
    (accumulators of squares and maxima stay float32)."""
    params = {"w": jnp.ones((8, 8), jnp.bfloat16), "b": jnp.ones(8, jnp.bfloat16)}
    state = tx.init(params)
    grads = jax.tree.map(lambda p: p * 0.5, params)
    updates, new = jax.jit(tx.update)(grads, state, params)
    assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(jnp.bfloat16)}
    old_dtypes = [x.dtype for x in jax.tree.leaves(state)]
    assert [x.dtype for x in jax.tree.leaves(new)] == old_dtypes  # stable across steps
    floats = [x for x in jax.tree.leaves(new) if jnp.issubdtype(x.dtype, jnp.floating)]
    low = [x for x in floats if x.dtype == jnp.bfloat16]
    assert len(low) == first * len(jax.tree.leaves(params))


# ---- schedules ---------------------------------------------------------------------------

N = 130  # past the last boundary of every schedule in test_schedules*.py
COUNTS = [*range(N), 1_000_000, 2**31 - 1]
SMALL = {"w": (4, 3), "b": ()}
# Counts past int32, in int64.
BIG_COUNTS = [0, 10**9, 2**31 + 3, 3 * 10**9, 2**32 + 7, 5 * 10**9, 10**10]

Build = Callable[[Any], Any]  # the library (funcopt or optax) -> a schedule


def optax_values(build: Build) -> np.ndarray:
    values = jax.vmap(build(optax))(jnp.asarray(COUNTS, jnp.int32))
    return np.broadcast_to(np.asarray(values, np.float64), (len(COUNTS),))


def assert_schedule_matches_optax(build: Build, maybe_jit: Callable) -> None:
    """At every count of ``COUNTS``, eagerly (plain Python ints) or jitted and vmapped,
    with strict dtype promotion."""
    want = optax_values(build)  # optax does not run under strict dtype promotion
    with jax.numpy_dtype_promotion("strict"):
        ours = build(funcopt)
        if maybe_jit is jax.jit:
            got = np.asarray(jax.jit(jax.vmap(ours))(jnp.asarray(COUNTS, jnp.int32)), np.float64)
        else:
            got = np.array([float(ours(c)) for c in COUNTS])  # plain Python ints
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())


def assert_schedule_values(sched: Callable, counts: list, expected: list) -> None:
    """The formulas written out at their boundaries (independent of both libraries)."""
    np.testing.assert_allclose([float(sched(c)) for c in counts], expected, rtol=1e-6, atol=1e-7)


def assert_builds_equal_values(schedules: list[tuple[str, Build]]) -> None:
    """Every builder, twice: equal, hash equal, and not the same object."""
    for _, build in schedules:
        first, second = build(funcopt), build(funcopt)
        assert first == second and hash(first) == hash(second) and first is not second


def assert_schedule_traces_once(build: Build) -> None:
    """A schedule passed to jit traces once for any values, and its values are optax's."""
    traces = []

    @jax.jit
    def values(schedule, counts):
        traces.append(None)
        return jax.vmap(schedule)(counts)

    counts = jnp.asarray(COUNTS, jnp.int32)
    first = build(funcopt)
    leaves, treedef = jax.tree.flatten(first)
    assert leaves, "a schedule's numbers are pytree leaves"
    doubled = jax.tree.unflatten(treedef, [2 * x for x in leaves])  # other values, same steps
    values(first, counts)
    values(doubled, counts)
    assert len(traces) == 1
    # and the values through a traced schedule are optax's
    got = np.broadcast_to(np.asarray(values(first, counts), np.float64), (len(COUNTS),))
    want = optax_values(build)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())


def assert_jit_and_eager_agree_and_are_never_negative(build: Build) -> None:
    ours = build(funcopt)
    eager = np.array([float(ours(c)) for c in COUNTS])
    jitted = np.asarray(jax.jit(jax.vmap(ours))(jnp.asarray(COUNTS, jnp.int32)), np.float64)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
    assert (eager >= 0).all() and (jitted >= 0).all()


def assert_ends_are_exact(sched: Callable, ends: dict[int, float]) -> None:
    """At each count of ``ends``, the float32 value exactly: eagerly, jitted, jitted with
    a traced count, and with the schedule as a traced argument."""
    as_argument = jax.jit(lambda s, c: s(c))
    for count, want in ends.items():
        exact = np.float32(want)
        assert np.float32(sched(count)) == exact, count
        assert np.float32(jax.jit(sched)(count)) == exact, count
        assert np.float32(jax.jit(lambda c, s=sched: s(c))(jnp.int32(count))) == exact, count
        assert np.float32(as_argument(sched, count)) == exact, count


def assert_matches_optax_at_3e9(build: Build) -> None:
    """A float count of 3e9, eagerly and under jit, and a Python int past int32 (in
    float32), against optax in float64 (optax itself overflows there without x64)."""
    with jax.enable_x64(True):
        want = float(build(optax)(3e9))
    np.testing.assert_allclose(build(funcopt)(3e9), want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(build(funcopt))(3e9), want, rtol=1e-6)
    np.testing.assert_allclose(build(funcopt)(3 * 10**9), want, rtol=1e-6)


def assert_int64_counts_match_optax(build: Build) -> None:
    """int64 counts past int32 (under the ``x64`` fixture), jitted and eagerly."""
    counts = jnp.asarray(BIG_COUNTS, jnp.int64)
    want = np.asarray(jax.vmap(build(optax))(counts))
    for got in (jax.jit(jax.vmap(build(funcopt)))(counts), jax.vmap(build(funcopt))(counts)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-15)


def assert_matches_optax_in_float64(build: Build) -> None:
    """At every count of ``COUNTS`` in int64 (under the ``x64`` fixture), in float64."""
    counts = jnp.asarray(COUNTS, jnp.int64)
    got = np.asarray(jax.jit(jax.vmap(build(funcopt)))(counts))
    want = np.asarray(jax.vmap(build(optax))(counts))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def assert_raises_naming(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(funcopt.HyperParameterError, match=message):
        build()
    assert issubclass(funcopt.HyperParameterError, ValueError)


def assert_optimizer_with_schedule_matches_optax(
    ours: Callable[[Any], Any], theirs: Callable[[Any], Any], build: Build
) -> None:
    """1000 steps of ``ours`` fed funcopt's schedule against ``theirs`` fed optax's."""
    params = random_params(0, shapes=SMALL)  # compiling the 1000-step scan is the cost
    got, want = run_against_optax(
        ours(build(funcopt)), theirs(build(optax)), params, 1000, wave_grads
    )
    assert_rel_close(got, want, 1e-5)


# ---- optimizers: twins written once, equations by hand ---------------------------------


class FuncoptAsOptax:
    """``funcopt`` under optax's names (``o.contrib.adopt`` is ``funcopt.adopt``), so that
    one row ``lambda o: o.contrib.adopt(…)`` builds both twins; ``o.<name>_schedule`` is
    taken from ``schedules`` (optax's: both twins then read the same schedule values)."""

    def __init__(self, schedules: Any = funcopt) -> None:
        self.schedules = schedules

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_schedule"):
            return getattr(self.schedules, name)
        return self if name == "contrib" else getattr(funcopt, name)


def assert_twins_match_in_float64(
    make: Callable[[Any], Any], tol: float = 1e-12, steps: int = 300
) -> None:
    """``make(funcopt)`` and ``make(optax)`` (a row as for :class:`FuncoptAsOptax`, fed
    optax's schedules) over ``steps`` float64 steps (under the ``x64`` fixture)."""
    params = random_params(0, jnp.float64)
    got, want = run_against_optax(make(FuncoptAsOptax(optax)), make(optax), params, steps)
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(got))
    assert_rel_close(got, want, tol)


def assert_follows_equations(
    tx: Any, make_reference: Callable[[], Any], dtype: Any, maybe_jit: Callable, steps: int = 6
) -> None:
    """``steps`` updates of ``tx`` on one (4, 3) leaf of ``dtype`` (float64 or complex128,
    under the ``x64`` fixture) equal ``make_reference()(g, p)``, the update equations
    written out in NumPy, each step fed the same gradient and parameters."""
    rng = np.random.default_rng(3)
    shape = (steps, 4, 3)
    grads = rng.normal(size=shape)
    if dtype == np.complex128:
        grads = grads + 1j * rng.normal(size=shape)
    p = np.asarray(rng.normal(size=shape[1:]), dtype)
    params, state, reference = jnp.asarray(p), tx.init(jnp.asarray(p)), make_reference()
    update = maybe_jit(tx.update)
    for g in grads:
        u, state = update(jnp.asarray(g, dtype), state, params)
        want = reference(g, p)
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-10, atol=1e-13)
        params, p = funcopt.apply_updates(params, u), p + want
