"""The composite schedules of funcopt.schedules_composite against optax's, and in optimizers.

piecewise_interpolate_schedule, join_schedules, the warm-ups, sgdr and the one-cycle
policies are each built twice from the same arguments, once from ``funcopt`` and once
from ``optax`` (the names are shared), and compared at every step ``0..N`` (which
crosses all boundaries) plus a few huge counts, eagerly and under ``jit``/``vmap``. Then
the core optimizers run 1000 steps with a composite schedule as their learning rate and
are compared with the optax optimizer fed optax's schedule. Composite schedules are
values (equal, hash-equal, one trace for any values); the ends of their pieces are
exact; counts and steps beyond int32 work, and a plain function is still a schedule
inside a composite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, random_params, run, wave_grads
from support import (
    SMALL,
    assert_builds_equal_values,
    assert_ends_are_exact,
    assert_int64_counts_match_optax,
    assert_jit_and_eager_agree_and_are_never_negative,
    assert_matches_optax_at_3e9,
    assert_matches_optax_in_float64,
    assert_optimizer_with_schedule_matches_optax,
    assert_raises_naming,
    assert_schedule_matches_optax,
    assert_schedule_traces_once,
    assert_schedule_values,
    assert_signature_matches_optax,
)

import funcopt

X64_IDS = {"sgdr", "linear-onecycle"}

CYCLES = [
    dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=30),
    dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=20, end_value=0.01),
    dict(init_value=0.0, peak_value=0.2, warmup_steps=10, decay_steps=40, exponent=2.0),
]

# (id, builder): the builder takes the library (funcopt or optax) and returns a schedule.
SCHEDULES = [
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


@pytest.mark.parametrize("build", [row[1] for row in SCHEDULES], ids=[row[0] for row in SCHEDULES])
def test_matches_optax_at_every_step(build, maybe_jit):
    assert_schedule_matches_optax(build, maybe_jit)


@pytest.mark.parametrize(
    ("build", "counts", "expected"),
    [
        # the formulas written out at their boundaries (independent of both libraries)
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
    assert_schedule_values(build(), counts, expected)


def test_traced_values_are_accepted():
    # optax needs a concrete peak_value here (it compares it with 0 in Python).
    @jax.jit
    def value_at_50(peak):
        return funcopt.warmup_cosine_decay_schedule(0.0, peak, 10, 100, end_value=0.1)(50)

    want = optax.warmup_cosine_decay_schedule(0.0, 0.8, 10, 100, end_value=0.1)(50)
    np.testing.assert_allclose(value_at_50(jnp.float32(0.8)), want, rtol=1e-6)
    assert float(value_at_50(jnp.float32(0.0))) == 0.0


def test_equal_arguments_give_equal_values():
    assert funcopt.warmup_constant_schedule(0.0, 1.0, 5) == funcopt.linear_schedule(0, 1, 5)
    assert_builds_equal_values(SCHEDULES)


@pytest.mark.parametrize("build", [row[1] for row in SCHEDULES], ids=[row[0] for row in SCHEDULES])
def test_a_schedule_passed_to_jit_traces_once_for_any_values(build):
    assert_schedule_traces_once(build)


def test_an_optimizer_holding_a_schedule_traces_once():
    traces = []

    @jax.jit
    def step(tx, grads, state):
        traces.append(None)
        return tx.update(grads, state)

    params = jnp.ones(3)
    for peak in (1e-3, 3e-3):
        tx = funcopt.adam(funcopt.warmup_cosine_decay_schedule(0.0, peak, 10, 100))
        step(tx, params, tx.init(params))
    assert len(traces) == 1


@pytest.mark.parametrize("build", [row[1] for row in SCHEDULES], ids=[row[0] for row in SCHEDULES])
def test_jit_and_eager_agree_and_are_never_negative(build):
    assert_jit_and_eager_agree_and_are_never_negative(build)


@pytest.mark.parametrize(
    ("build", "ends"),
    [
        (lambda: funcopt.warmup_constant_schedule(0.0, 3e-4, 1_000), {0: 0.0, 1_000: 3e-4}),
        (
            lambda: funcopt.warmup_cosine_decay_schedule(0.0, 3e-4, 1_000, 100_000),
            {0: 0.0, 1_000: 3e-4, 100_000: 0.0, 10**6: 0.0},
        ),
        (
            lambda: funcopt.warmup_cosine_decay_schedule(0.0, 3e-4, 1_000, 100_000, 1e-5),
            {0: 0.0, 1_000: 3e-4},
        ),
        (lambda: funcopt.warmup_exponential_decay_schedule(0.0, 3e-4, 999, 10, 0.9), {0: 0.0}),
        (
            lambda: funcopt.piecewise_interpolate_schedule("linear", 0.5, {7: 0.25}),
            {0: 0.5, 7: 0.125},
        ),
        (lambda: funcopt.piecewise_interpolate_schedule("cosine", 0.3, {7: 0.0}), {0: 0.3, 7: 0}),
    ],
)
def test_ends_are_exact_under_jit_and_eager(build, ends):
    assert_ends_are_exact(build(), ends)


def test_counts_beyond_int32():
    # a float count of 3e9, eagerly and under jit, and a Python int past int32 (in float32)
    for build in (lambda lib: lib.warmup_cosine_decay_schedule(0.0, 1.0, 2**31, 2**33),):
        assert_matches_optax_at_3e9(build)
    # boundaries past int32 with int32 counts are never reached; with larger counts they are
    joined = funcopt.join_schedules([funcopt.constant_schedule(1.0), lambda t: t * 1.0], [2**32])
    assert float(jax.jit(joined)(jnp.int32(7))) == 1.0
    assert float(joined(2**32 + 5)) == 5.0 and float(joined(2.0**32 + 5)) == 5.0


X64_BIG = [
    lambda lib: lib.piecewise_interpolate_schedule("linear", 1.0, {2**32: 0.5}),
    lambda lib: lib.warmup_cosine_decay_schedule(0.0, 1.0, 2**31, 2**33),
    lambda lib: lib.sgdr_schedule(
        [dict(init_value=0.0, peak_value=1.0, warmup_steps=2**31, decay_steps=2**32)] * 2
    ),
]


@pytest.mark.parametrize("build", X64_BIG)
def test_int64_counts_beyond_int32_match_optax(build, x64):
    assert_int64_counts_match_optax(build)


def test_plain_functions_are_schedules():
    def halving(count):
        return 0.1 * 0.5 ** (count // 100)

    params = random_params(0, shapes=SMALL)
    got, _ = run(funcopt.sgd(halving, 0.9), params, 300, funcopt.apply_updates, wave_grads)
    want, _ = run(optax.sgd(halving, 0.9), params, 300, optax.apply_updates, wave_grads)
    assert_rel_close(got, want, 1e-5)
    # inside a composite, and through jit as an argument (the function is static)
    joined = funcopt.join_schedules([halving, funcopt.constant_schedule(0.01)], [250])
    theirs = optax.join_schedules([halving, optax.constant_schedule(0.01)], [250])
    as_argument = jax.jit(lambda s, c: jax.vmap(s)(c))
    counts = jnp.arange(300, dtype=jnp.int32)
    np.testing.assert_allclose(as_argument(joined, counts), jax.vmap(theirs)(counts), rtol=1e-6)
    assert joined == funcopt.join_schedules([halving, funcopt.constant_schedule(0.01)], [250])
    # an optax schedule is a plain function too
    mixed = funcopt.join_schedules([optax.linear_schedule(0.0, 1.0, 10), halving], [10])
    np.testing.assert_allclose(mixed(5), 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    ("build", "message"),
    [
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
        (lambda: funcopt.join_schedules([1.0, 2.0], [5]), r"schedules\[0\]"),
    ],
)
def test_invalid_arguments_raise_naming_them(build, message):
    assert_raises_naming(build, message)


# (id, funcopt optimizer of a schedule, optax optimizer of a schedule, schedule builder).
# gdm has no optax twin, but gdm(η, β) ≡ sgd(η (1 − β), β).
OPTIMIZERS = [
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
    assert_optimizer_with_schedule_matches_optax(ours, theirs, build)


@pytest.mark.parametrize(
    "build",
    [row[1] for row in SCHEDULES if row[0] in X64_IDS],
    ids=[row[0] for row in SCHEDULES if row[0] in X64_IDS],
)
def test_matches_optax_in_float64(build, x64):
    assert_matches_optax_in_float64(build)


@pytest.mark.parametrize("name", funcopt.schedules_composite.__all__)
def test_signature_is_optax(name):
    assert_signature_matches_optax(name, kinds=False)
