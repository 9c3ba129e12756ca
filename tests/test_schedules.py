"""The schedules of funcopt.schedules against optax's, step by step, and in optimizers.

constant, polynomial, linear, exponential_decay, cosine_decay and piecewise_constant are
each built twice from the same arguments, once from ``funcopt`` and once from ``optax``
(the names are shared), and compared at every step ``0..N`` (which crosses all
boundaries) plus a few huge counts, eagerly and under ``jit``/``vmap``. Then an optimizer
runs 1000 steps with a schedule as its learning rate and is compared with the optax
optimizer fed optax's schedule. Schedules are values: equal arguments give equal,
hash-equal schedules, and a jitted function taking one as an argument traces once for
any values. The ends of interpolations are exact (eagerly, under ``jit`` and as a traced
argument) and counts and steps beyond int32 work. The composite schedules are tested in
``test_schedules_composite.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from support import (
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

X64_IDS = {
    "polynomial",
    "exponential-staircase",
    "cosine-alpha-exponent",
}

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
]


@pytest.mark.parametrize("build", [row[1] for row in SCHEDULES], ids=[row[0] for row in SCHEDULES])
def test_matches_optax_at_every_step(build, maybe_jit):
    assert_schedule_matches_optax(build, maybe_jit)


@pytest.mark.parametrize(
    ("build", "counts", "expected"),
    [
        # the formulas written out at their boundaries (independent of both libraries)
        (lambda: funcopt.polynomial_schedule(1.0, 0.0, 2, 10, 5), [5, 10, 15], [1, 0.25, 0]),
        (lambda: funcopt.exponential_decay(2.0, 4, 0.5, 2, True), [2, 5, 6, 10], [2, 2, 1, 0.5]),
        (lambda: funcopt.cosine_decay_schedule(1.0, 10, 0.2), [0, 5, 10, 20], [1, 0.6, 0.2, 0.2]),
    ],
)
def test_formulas_by_hand(build, counts, expected):
    assert_schedule_values(build(), counts, expected)


def test_equal_arguments_give_equal_values():
    a, b = funcopt.linear_schedule(1, 0, 10), funcopt.linear_schedule(1.0, 0.0, 10)
    assert a == b and hash(a) == hash(b)
    assert funcopt.linear_schedule(1.0, 0.0, 1e4) == funcopt.linear_schedule(1.0, 0.0, 10_000)
    assert funcopt.cosine_decay_schedule(1.0, 10) == funcopt.cosine_decay_schedule(1, 10.0)
    assert funcopt.cosine_decay_schedule(1.0, 10) != funcopt.cosine_decay_schedule(1.0, 11)
    assert funcopt.cosine_decay_schedule(1.0, 10) != funcopt.cosine_decay_schedule(2.0, 10)
    assert_builds_equal_values(SCHEDULES)
    # inside an optimizer too: the optimizers compare equal
    assert funcopt.adam(funcopt.linear_schedule(1e-3, 0, 10)) == funcopt.adam(
        funcopt.linear_schedule(0.001, 0.0, 10.0)
    )
    assert "linear_schedule(init_value=1.0, end_value=0.0, transition_steps=10)" in repr(a)


@pytest.mark.parametrize("build", [row[1] for row in SCHEDULES], ids=[row[0] for row in SCHEDULES])
def test_a_schedule_passed_to_jit_traces_once_for_any_values(build):
    assert_schedule_traces_once(build)


@pytest.mark.parametrize("build", [row[1] for row in SCHEDULES], ids=[row[0] for row in SCHEDULES])
def test_jit_and_eager_agree_and_are_never_negative(build):
    assert_jit_and_eager_agree_and_are_never_negative(build)


@pytest.mark.parametrize(
    ("build", "ends"),
    [
        (lambda: funcopt.linear_schedule(0.0, 3e-4, 1_000), {0: 0.0, 1_000: 3e-4, 5_000: 3e-4}),
        (lambda: funcopt.linear_schedule(3e-4, 0.0, 777, 5), {0: 3e-4, 5: 3e-4, 782: 0.0}),
        (lambda: funcopt.linear_schedule(0.1, 0.7, 3), {0: 0.1, 3: 0.7}),
        (lambda: funcopt.polynomial_schedule(0.0, 3e-4, 2.5, 999), {0: 0.0, 999: 3e-4}),
    ],
)
def test_ends_are_exact_under_jit_and_eager(build, ends):
    assert_ends_are_exact(build(), ends)


def test_counts_beyond_int32():
    # issue: ``decay_steps`` past int32 overflowed; optax gives 975.528
    theirs = optax.cosine_decay_schedule(1000.0, decay_steps=int(1e10))(int(1e9))
    for count in (int(1e9), 1e9, jnp.float32(1e9)):
        ours = funcopt.cosine_decay_schedule(1000.0, decay_steps=int(1e10))(count)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
        np.testing.assert_allclose(ours, 975.528, rtol=1e-6)
    # a float count of 3e9, eagerly and under jit, and a Python int past int32 (in float32)
    for build in (
        lambda lib: lib.cosine_decay_schedule(1.0, int(1e10)),
        lambda lib: lib.linear_schedule(1.0, 0.0, 4 * 10**9, 10**9),
    ):
        assert_matches_optax_at_3e9(build)  # optax overflows on the linear one without x64
    # boundaries past int32 with int32 counts are never reached; with larger counts they are
    sched = funcopt.piecewise_constant_schedule(1.0, {2**32: 0.5})
    assert float(jax.jit(sched)(jnp.int32(2**31 - 1))) == 1.0
    assert float(sched(3e9)) == 1.0 and float(sched(5e9)) == 0.5 and float(sched(5 * 10**9)) == 0.5


X64_BIG = [
    lambda lib: lib.cosine_decay_schedule(1.0, int(1e10)),
    lambda lib: lib.linear_schedule(1.0, 0.0, 4 * 10**9, 10**9),
    lambda lib: lib.polynomial_schedule(1.0, 0.1, 2, 4 * 10**9),
    lambda lib: lib.exponential_decay(1.0, 10**9, 0.5, 2**31, True),
    lambda lib: lib.piecewise_constant_schedule(1.0, {2**32: 0.5, 3 * 10**9: 0.1}),
]


@pytest.mark.parametrize("build", X64_BIG)
def test_int64_counts_beyond_int32_match_optax(build, x64):
    assert_int64_counts_match_optax(build)


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
        (lambda: funcopt.linear_schedule(1.0, 0.0, 10.5), "transition_steps=10.5"),
        (lambda: funcopt.cosine_decay_schedule(1.0, True), "decay_steps=True"),
        (lambda: funcopt.constant_schedule(float("nan")), "value=nan"),
        (lambda: funcopt.linear_schedule(None, 0.0, 10), "init_value=None"),
        (
            lambda: jax.jit(lambda n: funcopt.cosine_decay_schedule(1.0, n))(10),
            "decay_steps must be concrete",
        ),
    ],
)
def test_invalid_arguments_raise_naming_them(build, message):
    assert_raises_naming(build, message)


# (id, funcopt optimizer of a schedule, optax optimizer of a schedule, schedule builder).
OPTIMIZERS = [
    (
        "gd",
        funcopt.gd,
        optax.sgd,
        lambda lib: lib.piecewise_constant_schedule(0.05, {300: 0.5, 700: 0.2}),
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


def test_modules_split_the_names():
    names = [*funcopt.schedules.__all__, *funcopt.schedules_composite.__all__]
    assert len(names) == len(set(names)) == 14
    assert all(getattr(funcopt, name) is not None for name in names)


@pytest.mark.parametrize("name", funcopt.schedules.__all__)
def test_signature_is_optax(name):
    assert_signature_matches_optax(name, kinds=False)
