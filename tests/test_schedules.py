"""Schedules against optax's, step by step, and inside the core optimizers.

Every schedule is built twice from the same arguments, once from ``funcopt`` and once
from ``optax`` (the names are shared), and compared at every step ``0..N`` (which
crosses all boundaries) plus a few huge counts, eagerly and under ``jit``/``vmap``.
Then each core optimizer runs 1000 steps with a schedule as its learning rate and is
compared with the optax optimizer fed optax's schedule.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, random_params, run

import funcopt
from funcopt.base import HyperParameterError

N = 130  # past the last boundary of every schedule below
COUNTS = [*range(N), 1_000_000, 2**31 - 1]
SMALL = {"w": (4, 3), "b": ()}
X64_IDS = {
    "polynomial",
    "exponential-staircase",
    "cosine-alpha-exponent",
    "sgdr",
    "linear-onecycle",
}

CYCLES = [
    dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=30),
    dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=20, end_value=0.01),
    dict(init_value=0.0, peak_value=0.2, warmup_steps=10, decay_steps=40, exponent=2.0),
]

# (id, builder): the builder takes the library (funcopt or optax) and returns a schedule.
SCHEDULES = [
    ("constant", lambda lib: lib.constant_schedule(0.3)),
    ("polynomial", lambda lib: lib.polynomial_schedule(1.0, 0.01, 2, 50, 10)),
    ("polynomial-sqrt", lambda lib: lib.polynomial_schedule(0.2, 1.0, 0.5, 37)),
    ("polynomial-no-steps", lambda lib: lib.polynomial_schedule(1.0, 0.0, 1, 0)),
    ("linear", lambda lib: lib.linear_schedule(1.0, 0.1, 40, transition_begin=5)),
    ("exponential", lambda lib: lib.exponential_decay(0.5, 10, 0.8, transition_begin=5)),
    ("exponential-staircase", lambda lib: lib.exponential_decay(0.5, 7, 0.6, staircase=True)),
    ("exponential-floor", lambda lib: lib.exponential_decay(1.0, 10, 0.5, end_value=0.2)),
    ("exponential-growth-cap", lambda lib: lib.exponential_decay(0.1, 10, 1.5, 3, False, 0.9)),
    ("exponential-zero-rate", lambda lib: lib.exponential_decay(0.7, 10, 0.0)),
    ("cosine", lambda lib: lib.cosine_decay_schedule(1.0, 60)),
    ("cosine-alpha-exponent", lambda lib: lib.cosine_decay_schedule(2.0, 77, 0.1, 2.0)),
    (
        "piecewise-constant",
        lambda lib: lib.piecewise_constant_schedule(1.0, {25: 0.1, 10: 0.5, 40: 3.0, 41: 0.0}),
    ),
    ("piecewise-constant-empty", lambda lib: lib.piecewise_constant_schedule(0.4)),
    (
        "interpolate-linear",
        lambda lib: lib.piecewise_interpolate_schedule("linear", 1.0, {10: 0.5, 30: 0.1, 31: 4}),
    ),
    (
        "interpolate-cosine-from-0",
        lambda lib: lib.piecewise_interpolate_schedule("cosine", 2.0, {0: 0.5, 45: 0.2}),
    ),
    ("interpolate-empty", lambda lib: lib.piecewise_interpolate_schedule("linear", 0.3)),
    (
        "join",
        lambda lib: lib.join_schedules(
            [
                lib.linear_schedule(0.0, 1.0, 10),
                lib.cosine_decay_schedule(1.0, 20),
                lib.constant_schedule(0.05),
            ],
            [10, 40],
        ),
    ),
    ("warmup-constant", lambda lib: lib.warmup_constant_schedule(0.0, 1.0, 15)),
    (
        "warmup-cosine",
        lambda lib: lib.warmup_cosine_decay_schedule(0.0, 1.0, 10, 60, 0.05, 1.5),
    ),
    ("warmup-cosine-no-warmup", lambda lib: lib.warmup_cosine_decay_schedule(0.5, 1.0, 0, 50)),
    ("warmup-cosine-zero-peak", lambda lib: lib.warmup_cosine_decay_schedule(0.5, 0.0, 5, 50)),
    (
        "warmup-exponential",
        lambda lib: lib.warmup_exponential_decay_schedule(0.0, 1.0, 10, 8, 0.7, 5, True, 0.1),
    ),
    (
        "warmup-exponential-plain",
        lambda lib: lib.warmup_exponential_decay_schedule(0.1, 1, 7, 9, 0.5),
    ),
    ("sgdr", lambda lib: lib.sgdr_schedule(CYCLES)),
    ("cosine-onecycle", lambda lib: lib.cosine_onecycle_schedule(80, 1.0)),
    ("cosine-onecycle-custom", lambda lib: lib.cosine_onecycle_schedule(97, 0.5, 0.25, 10, 100)),
    ("linear-onecycle", lambda lib: lib.linear_onecycle_schedule(80, 1.0)),
    (
        "linear-onecycle-custom",
        lambda lib: lib.linear_onecycle_schedule(101, 0.5, 0.2, 0.7, 5.0, 50.0),
    ),
]


def optax_values(build):
    values = jax.vmap(build(optax))(jnp.asarray(COUNTS, jnp.int32))
    return np.broadcast_to(np.asarray(values, np.float64), (len(COUNTS),))


def wave_grads(params, step):
    """Gradient of a stretched quadratic plus a deterministic wave per coordinate.

    Like ``oracle.quadratic_grads`` (the quadratic contracts rounding differences, the
    wave keeps every coordinate's gradient changing sign and size) but without random
    draws, which make compiling the 1000-step scan several times slower.
    """
    leaves, treedef = jax.tree.flatten(params)
    t = step.astype(jnp.float32)
    out = []
    for i, p in enumerate(leaves):
        phase = jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape)
        out.append((0.5 + i) * (p - 0.3) + jnp.sin(0.7 * (i + 1) * t + phase))
    return jax.tree.unflatten(treedef, out)


@pytest.mark.parametrize("build", [row[1] for row in SCHEDULES], ids=[row[0] for row in SCHEDULES])
def test_matches_optax_at_every_step(build, maybe_jit):
    want = optax_values(build)  # optax does not run under strict dtype promotion
    with jax.numpy_dtype_promotion("strict"):
        ours = build(funcopt)
        if maybe_jit is jax.jit:
            got = np.asarray(jax.jit(jax.vmap(ours))(jnp.asarray(COUNTS, jnp.int32)), np.float64)
        else:
            got = np.array([float(ours(c)) for c in COUNTS])  # plain Python ints
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())


@pytest.mark.parametrize(
    ("build", "counts", "expected"),
    [
        # the formulas written out at their boundaries (independent of both libraries)
        (lambda: funcopt.polynomial_schedule(1.0, 0.0, 2, 10, 5), [5, 10, 15], [1, 0.25, 0]),
        (lambda: funcopt.exponential_decay(2.0, 4, 0.5, 2, True), [2, 5, 6, 10], [2, 2, 1, 0.5]),
        (lambda: funcopt.cosine_decay_schedule(1.0, 10, 0.2), [0, 5, 10, 20], [1, 0.6, 0.2, 0.2]),
        (
            lambda: funcopt.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.1}),
            [0, 2, 4, 6, 8, 9],
            [1, 0.55, 0.1, 0.055, 0.01, 0.01],
        ),
        (
            lambda: funcopt.warmup_cosine_decay_schedule(0.0, 2.0, 4, 14, 1.0),
            [0, 2, 4, 9, 14, 99],
            [0, 1, 2, 1.5, 1, 1],
        ),
    ],
)
def test_formulas_by_hand(build, counts, expected):
    sched = build()
    np.testing.assert_allclose([float(sched(c)) for c in counts], expected, rtol=1e-6, atol=1e-7)


def test_traced_values_are_accepted():
    # optax needs a concrete peak_value here (it compares it with 0 in Python).
    @jax.jit
    def value_at_50(peak):
        return funcopt.warmup_cosine_decay_schedule(0.0, peak, 10, 100, end_value=0.1)(50)

    want = optax.warmup_cosine_decay_schedule(0.0, 0.8, 10, 100, end_value=0.1)(50)
    np.testing.assert_allclose(value_at_50(jnp.float32(0.8)), want, rtol=1e-6)
    assert float(value_at_50(jnp.float32(0.0))) == 0.0


def test_equal_arguments_give_the_same_function():
    assert funcopt.cosine_decay_schedule(1.0, 10) is funcopt.cosine_decay_schedule(1.0, 10)
    assert funcopt.cosine_decay_schedule(1.0, 10) is not funcopt.cosine_decay_schedule(1.0, 11)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: funcopt.polynomial_schedule(1.0, 0.0, 1, -5), "transition_steps=-5"),
        (lambda: funcopt.linear_schedule(1.0, 0.0, 10, transition_begin=-1), "transition_begin=-1"),
        (lambda: funcopt.exponential_decay(1.0, -3, 0.5), "transition_steps=-3"),
        (lambda: funcopt.exponential_decay(1.0, 10, -0.5), "decay_rate=-0.5"),
        (lambda: funcopt.cosine_decay_schedule(1.0, 0), "decay_steps=0"),
        (lambda: funcopt.piecewise_constant_schedule(1.0, {10: -0.1}), r"\[10\]=-0.1"),
        (lambda: funcopt.piecewise_constant_schedule(1.0, {-5: 0.1}), "=-5"),
        (lambda: funcopt.piecewise_interpolate_schedule("cubic", 1.0), "interpolate_type='cubic'"),
        (
            lambda: funcopt.join_schedules([funcopt.constant_schedule(1.0)], [5]),
            r"boundaries=\(5,\)",
        ),
        (
            lambda: funcopt.join_schedules([funcopt.constant_schedule(1.0)] * 3, [9, 5]),
            r"boundaries=\(9, 5\)",
        ),
        (lambda: funcopt.warmup_constant_schedule(0.0, 1.0, -2), "warmup_steps=-2"),
        (lambda: funcopt.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10), "warmup_steps=-1"),
        (
            lambda: funcopt.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10),
            "decay_steps=10, warmup_steps=10",
        ),
        (lambda: funcopt.warmup_exponential_decay_schedule(0, 1, 5, 0, 2.0, -4), "begin=-4"),
        (lambda: funcopt.sgdr_schedule([]), "cosine_kwargs"),
        (lambda: funcopt.cosine_onecycle_schedule(0, 1.0), "transition_steps=0"),
        (lambda: funcopt.cosine_onecycle_schedule(10, 1.0, pct_start=1.5), "pct_start=1.5"),
        (lambda: funcopt.cosine_onecycle_schedule(10, 1.0, div_factor=0.0), "div_factor=0.0"),
        (lambda: funcopt.linear_onecycle_schedule(10, 1.0, 0.5, pct_final=0.4), "pct_final=0.4"),
        (lambda: funcopt.linear_onecycle_schedule(10, 1.0, final_div_factor=-1.0), "=-1.0"),
    ],
)
def test_invalid_arguments_raise_naming_them(build, message):
    with pytest.raises(HyperParameterError, match=message):
        build()
    assert issubclass(HyperParameterError, ValueError)


# (id, funcopt optimizer of a schedule, optax optimizer of a schedule, schedule builder).
# gdm has no optax twin, but gdm(η, β) ≡ sgd(η (1 − β), β).
OPTIMIZERS = [
    (
        "gd",
        funcopt.gd,
        optax.sgd,
        lambda lib: lib.piecewise_constant_schedule(0.05, {300: 0.5, 700: 0.2}),
    ),
    (
        "gdm",
        lambda lr: funcopt.gdm(lr, 0.9),
        lambda lr: optax.sgd(lambda t: lr(t) * (1 - 0.9), 0.9),
        lambda lib: lib.linear_onecycle_schedule(1000, 0.1),
    ),
    (
        "sgd",
        lambda lr: funcopt.sgd(lr, 0.9, nesterov=True),
        lambda lr: optax.sgd(lr, 0.9, nesterov=True),
        lambda lib: lib.sgdr_schedule([dict(CYCLES[0], decay_steps=400), CYCLES[1], CYCLES[2]]),
    ),
    (
        "rmsprop",
        funcopt.rmsprop,
        optax.rmsprop,
        lambda lib: lib.warmup_exponential_decay_schedule(0.0, 0.01, 50, 100, 0.7),
    ),
    (
        "adam",
        funcopt.adam,
        optax.adam,
        lambda lib: lib.warmup_cosine_decay_schedule(0.0, 0.02, 100, 1000, 1e-4),
    ),
    (
        "adamw",
        lambda lr: funcopt.adamw(lr, weight_decay=0.1),
        lambda lr: optax.adamw(lr, weight_decay=0.1),
        lambda lib: lib.cosine_onecycle_schedule(1000, 0.02),
    ),
]


@pytest.mark.parametrize(
    ("ours", "theirs", "build"), [row[1:] for row in OPTIMIZERS], ids=[row[0] for row in OPTIMIZERS]
)
def test_optimizers_accept_schedules(ours, theirs, build):
    params = random_params(0, shapes=SMALL)  # compiling the 1000-step scan is the cost
    got, _ = run(ours(build(funcopt)), params, 1000, funcopt.apply_updates, wave_grads)
    want, _ = run(theirs(build(optax)), params, 1000, optax.apply_updates, wave_grads)
    assert_rel_close(got, want, 1e-5)


@pytest.mark.parametrize(
    "build",
    [row[1] for row in SCHEDULES if row[0] in X64_IDS],
    ids=[row[0] for row in SCHEDULES if row[0] in X64_IDS],
)
def test_matches_optax_in_float64(build, x64):
    counts = jnp.asarray(COUNTS, jnp.int64)
    got = np.asarray(jax.jit(jax.vmap(build(funcopt)))(counts))
    want = np.asarray(jax.vmap(build(optax))(counts))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", funcopt.schedules.__all__)
def test_signature_is_optax(name):
    ours, theirs = (
        inspect.signature(getattr(funcopt, name)),
        inspect.signature(getattr(optax, name)),
    )
    assert [(p.name, p.default) for p in ours.parameters.values()] == [
        (p.name, p.default) for p in theirs.parameters.values()
    ]
