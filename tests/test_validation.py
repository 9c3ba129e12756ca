"""Kinds of hyper-parameter (funcopt.validation): what each accepts, returns and refuses.

Every numeric kind turns Python, numpy and concrete 0-d jax scalars into Python numbers
(``float``; ``int`` for :func:`integer`), refuses bools, ``None`` (unless optional),
strings, non-scalar arrays, complex numbers, NaN, ±inf and values out of its range with a
:class:`HyperParameterError` naming the argument and the value, and lets traced values
through unchecked. Then the flags, dtypes and anything kinds, :func:`hyperparameters`
and :func:`concrete_number`. The messages are the ones the module's docstrings show.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcopt.validation import (
    ANY,
    BOOL,
    DECAY,
    DTYPE,
    NONNEGATIVE,
    POSITIVE,
    PROBABILITY,
    RATE,
    REAL,
    HyperParameterError,
    Kind,
    concrete_number,
    hyperparameters,
    integer,
    interval,
    one_of,
)

# (id, kind, a valid value, values out of its range, the range as the message writes it)
NUMERIC = [
    ("RATE", RATE, 0.5, [-0.5], "[0, inf)"),
    ("DECAY", DECAY, 0.5, [1.0, -0.5, 1.5], "[0, 1)"),
    ("NONNEGATIVE", NONNEGATIVE, 0.5, [-0.5, -1e-300], "[0, inf)"),
    ("POSITIVE", POSITIVE, 0.5, [0.0, -0.5], "(0, inf)"),
    ("PROBABILITY", PROBABILITY, 0.5, [1.5, -0.25], "[0, 1]"),
    ("REAL", REAL, -0.5, [], "(-inf, inf)"),
    (
        "interval",
        interval(-1.0, 2.0, low_inclusive=False, high_inclusive=True),
        0.5,
        [-1.0, 2.5],
        "(-1, 2]",
    ),
    ("integer", integer(2), 3, [1, 0, -4], "[2, inf) and integral"),
]
NUMERIC_IDS = [row[0] for row in NUMERIC]
FLOAT_KINDS = [row for row in NUMERIC if row[0] != "integer"]
FLOAT_IDS = [row[0] for row in FLOAT_KINDS]

# The forms a scalar may come in: Python, numpy scalars, 0-d numpy and jax arrays.
FORMS = {
    "python": lambda v: v,
    "python-float": float,
    "np.float32": np.float32,
    "np.float64": np.float64,
    "np-0d": np.asarray,
    "jax-0d": jnp.asarray,
    "jax-0d-float32": lambda v: jnp.asarray(v, jnp.float32),
    "jax-0d-bfloat16": lambda v: jnp.asarray(v, jnp.bfloat16),
}

NOT_SCALARS = {
    "True": True,
    "False": False,
    "np.bool_": np.bool_(True),
    "np-0d-bool": np.array(False),
    "jax-0d-bool": jnp.array(True),
    "None": None,
    "str": "0.5",
    "list": [0.5],
    "np-vector": np.ones(2),
    "jax-vector": jnp.ones((1,)),
    "jax-matrix": jnp.ones((2, 3)),
    "complex": 0.5 + 0j,
    "np.complex64": np.complex64(0.5),
    "jax-0d-complex": jnp.asarray(0.5 + 0j),
    "object": object(),
}

NON_FINITE = {
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "np.float32-nan": np.float32(np.nan),
    "np-inf": np.inf,
    "jax-inf": jnp.float32(jnp.inf),
    "jax-nan": jnp.asarray(jnp.nan),
}


def _refused(kind, name, value):
    with pytest.raises(HyperParameterError) as err:
        kind(name, value)
    assert isinstance(err.value, ValueError)
    return str(err.value)


# ---- numeric kinds: accepted and normalised ----------------------------------------------


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize(("name", "kind", "valid", "out", "text"), NUMERIC, ids=NUMERIC_IDS)
def test_scalars_become_python_numbers(name, kind, valid, out, text, form):
    got = kind("x", FORMS[form](valid))
    assert got == valid
    assert type(got) is (int if name == "integer" else float)


def test_decay_of_a_numpy_float32():
    got = DECAY("b1", np.float32(0.5))
    assert got == 0.5 and isinstance(got, float)


@pytest.mark.parametrize(("name", "kind", "valid", "out", "text"), FLOAT_KINDS, ids=FLOAT_IDS)
def test_integers_become_floats(name, kind, valid, out, text):
    one = 0 if name == "DECAY" else 1  # an integer in every range
    for value in (one, np.int32(one), np.int64(one), jnp.asarray(one, jnp.int32)):
        got = kind("x", value)
        assert got == one and type(got) is float


@pytest.mark.parametrize(
    ("kind", "inside", "outside"),
    [
        (DECAY, [0.0, 0.999999], [1.0]),
        (PROBABILITY, [0.0, 1.0], [1.0000001]),
        (POSITIVE, [1e-30], [0.0, -0.0]),
        (NONNEGATIVE, [0.0, -0.0], [-1e-300]),
        (interval(-1.0, 2.0, low_inclusive=False, high_inclusive=True), [2.0], [-1.0]),
        (interval(0.0, 1.0, high_inclusive=True), [0.0, 1.0], []),
        (interval(0.0, 1.0, low_inclusive=False), [], [0.0, 1.0]),
        (interval(high=0.0), [-1e9, -0.5], [0.0]),
    ],
    ids=["DECAY", "PROBABILITY", "POSITIVE", "NONNEGATIVE", "(-1, 2]", "[0, 1]", "(0, 1)", "<0"],
)
def test_ends_of_the_interval(kind, inside, outside):
    for value in inside:
        assert kind("x", value) == value
    for value in outside:
        _refused(kind, "x", value)


def test_other_real_numbers_are_numbers():
    assert REAL("x", Fraction(1, 4)) == 0.25
    assert type(REAL("x", np.int8(-3))) is float
    assert REAL("x", jnp.asarray(7, jnp.int32)) == 7.0


# ---- numeric kinds: refused, naming the argument and the value ----------------------------


@pytest.mark.parametrize(("name", "kind", "valid", "out", "text"), NUMERIC, ids=NUMERIC_IDS)
def test_out_of_range_values_are_refused_naming_them(name, kind, valid, out, text):
    for value in out:
        msg = _refused(kind, "b1", value)
        shown = int(value) if name == "integer" else float(value)
        assert msg == f"b1 must be in {text}, got b1={shown!r}"


def test_messages_of_the_docstrings():
    assert _refused(interval(0.0, 1.0), "b1", 1.5) == "b1 must be in [0, 1), got b1=1.5"
    assert _refused(DECAY, "beta", 1) == "beta must be in [0, 1), got beta=1.0"


@pytest.mark.parametrize("value", list(NOT_SCALARS), ids=list(NOT_SCALARS))
@pytest.mark.parametrize(("name", "kind", "valid", "out", "text"), NUMERIC, ids=NUMERIC_IDS)
def test_non_scalars_are_refused_naming_them(name, kind, valid, out, text, value):
    bad = NOT_SCALARS[value]
    msg = _refused(kind, "lr", bad)
    assert msg.startswith(f"lr must be {kind.description}, got lr="), msg
    if isinstance(bad, bool | np.bool_):
        assert msg.endswith(f"lr={bad!r}, a bool")
    elif np.ndim(bad) > 0 and not isinstance(bad, list):
        assert msg.endswith(f"an array of shape {np.shape(bad)}")
    else:
        assert repr(bad) in msg


@pytest.mark.parametrize("value", list(NON_FINITE), ids=list(NON_FINITE))
@pytest.mark.parametrize(("name", "kind", "valid", "out", "text"), FLOAT_KINDS, ids=FLOAT_IDS)
def test_nan_and_inf_are_refused_naming_them(name, kind, valid, out, text, value):
    bad = NON_FINITE[value]
    msg = _refused(kind, "eps", bad)
    assert msg == f"eps must be in {text}, got eps={float(bad)!r}"


@pytest.mark.parametrize("value", list(NON_FINITE), ids=list(NON_FINITE))
def test_nan_and_inf_steps_are_refused_naming_them(value):
    with pytest.raises(HyperParameterError, match=r"\bk must be in \[1, inf\)"):
        integer(1)("k", NON_FINITE[value])


@pytest.mark.parametrize("kind", [REAL, integer(1)], ids=["REAL", "integer"])
def test_an_int_too_large_for_a_float_is_refused_naming_it(kind):
    with pytest.raises(HyperParameterError, match="x must be"):
        kind("x", 10**400)


# ---- numeric kinds: optional, schedules, traced values -----------------------------------


def test_none_only_where_optional():
    for kind in (interval(0.0, 1.0, optional=True), integer(1, optional=True)):
        assert kind("x", None) is None
        assert kind.description.endswith(" or None")
    for kind in (RATE, DECAY, integer(1), interval()):
        assert "got x=None (a NoneType)" in _refused(kind, "x", None)


def test_schedules_only_where_a_schedule_may_be_given():
    def schedule(count):
        return 0.1

    assert RATE("learning_rate", schedule) is schedule
    assert integer(1, schedule=True)("k", schedule) is schedule
    assert RATE.description == "a number in [0, inf) or a schedule"
    for kind in (DECAY, NONNEGATIVE, integer(1)):
        assert "(a function)" in _refused(kind, "x", schedule)


@pytest.mark.parametrize(("name", "kind", "valid", "out", "text"), NUMERIC, ids=NUMERIC_IDS)
def test_traced_values_pass_unchecked(name, kind, valid, out, text):
    seen = []

    def check(x):
        got = kind("x", x)
        seen.append(got is x)
        return got

    for value in [valid, *out]:  # out of range, but traced: not inspected
        x = jnp.asarray(value, jnp.float32)
        np.testing.assert_array_equal(jax.jit(check)(x), x)
    xs = jnp.asarray([valid, *out], jnp.float32)
    np.testing.assert_array_equal(jax.vmap(check)(xs), xs)
    assert jax.grad(lambda x: 2.0 * check(x))(jnp.float32(valid)) == 2.0
    assert seen and all(seen)  # the tracer itself came back, under jit, vmap and grad


# ---- integer -------------------------------------------------------------------------------


def test_integer_accepts_integral_floats():
    k = integer(1)
    assert k("k", 4.0) == 4 and type(k("k", 4.0)) is int  # the docstring's example
    assert k("k", 1e4) == 10_000 and type(k("k", 1e4)) is int
    assert k("k", np.float32(3.0)) == 3 and type(k("k", np.float32(3.0))) is int
    assert k("k", jnp.asarray(7, jnp.int32)) == 7
    assert integer(0)("steps", 0) == 0
    assert integer(-2)("offset", -2) == -2


def test_integer_refuses_fractions_and_bools():
    k = integer(1)
    assert _refused(k, "k", 2.5) == "k must be in [1, inf) and integral, got k=2.5"
    assert _refused(k, "k", np.float32(1.5)) == "k must be in [1, inf) and integral, got k=1.5"
    assert _refused(k, "k", 0.0) == "k must be in [1, inf) and integral, got k=0"
    assert _refused(k, "k", True) == "k must be an integer in [1, inf), got k=True, a bool"
    assert k.description == "an integer in [1, inf)"


# ---- flags, dtypes, anything ----------------------------------------------------------------


def test_bool_accepts_true_and_false_only():
    assert BOOL("nesterov", True) is True and BOOL("nesterov", False) is False
    assert BOOL("nesterov", np.bool_(True)) is True  # a Python bool
    for bad in (1, 0, 1.0, None, "True", np.array(True), jnp.array(False), [True]):
        msg = _refused(BOOL, "nesterov", bad)
        assert msg.startswith("nesterov must be True or False, got nesterov="), msg
    assert _refused(BOOL, "nesterov", 1) == "nesterov must be True or False, got nesterov=1 (a int)"
    assert BOOL.description == "True or False"


def test_flags_and_dtypes_are_structure_and_must_be_concrete():
    with pytest.raises(HyperParameterError, match="nesterov must be True or False"):
        jax.jit(lambda flag: BOOL("nesterov", flag))(True)
    with pytest.raises(HyperParameterError, match="mu_dtype must be a float dtype or None"):
        DTYPE("mu_dtype", jnp.ones(3))


def test_integer_keeps_large_ints_exact():
    assert integer(0)("steps", 2**53 + 1) == 2**53 + 1


def test_dtype_normalises_with_jnp_dtype():
    assert DTYPE("mu_dtype", None) is None
    for given, want in (
        ("float32", jnp.float32),
        (np.float16, jnp.float16),
        (jnp.bfloat16, jnp.bfloat16),
        (jnp.complex64, jnp.complex64),
    ):
        got = DTYPE("mu_dtype", given)
        assert got == jnp.dtype(want) and isinstance(got, np.dtype)
    # moments are never integers (they would be truncated); "1e-3" is a numpy format error
    for bad in ("nope", "1e-3", 3, 1.5, True, object(), [1], jnp.int8, "int32", bool):
        msg = _refused(DTYPE, "mu_dtype", bad)
        assert msg.startswith("mu_dtype must be a float dtype or None, got mu_dtype="), msg
        assert repr(bad) in msg
    assert DTYPE.description == "a float dtype or None"


def test_any_returns_the_value_itself():
    for value in (None, "x", object(), [1, 2], jnp.ones(3), float("nan"), True):
        assert ANY("mask", value) is value
    assert ANY.description == "anything"


def test_descriptions():
    assert [k.description for k in (RATE, DECAY, NONNEGATIVE, POSITIVE, PROBABILITY, REAL)] == [
        "a number in [0, inf) or a schedule",
        "a number in [0, 1)",
        "a number in [0, inf)",
        "a number in (0, inf)",
        "a number in [0, 1]",
        "a number in (-inf, inf)",
    ]
    assert integer(0, optional=True, schedule=True).description == (
        "an integer in [0, inf) or a schedule or None"
    )
    kind = interval(0.0, 1.0)
    assert isinstance(kind, Kind) and kind("b1", 0.5) == kind.check("b1", 0.5) == 0.5
    assert issubclass(HyperParameterError, ValueError)


# ---- hyperparameters ------------------------------------------------------------------------


STEPS = integer(1)


@hyperparameters(beta=DECAY, steps=STEPS, nesterov=BOOL)
def momentum(learning_rate, beta=0.9, steps=10, *, nesterov=False, extra=None):
    """A stand-in optimizer."""
    return learning_rate, beta, steps, nesterov, extra


def test_hyperparameters_checks_and_normalises_by_name():
    assert momentum(0.1) == (0.1, 0.9, 10, False, None)
    got = momentum(0.1, np.float32(0.5), 4.0, nesterov=np.bool_(True))
    assert got == (0.1, 0.5, 4, True, None)
    assert [type(x) for x in got[1:4]] == [float, int, bool]
    assert momentum(0.1, steps=jnp.asarray(3))[2] == 3  # by keyword
    # undeclared arguments pass unchanged
    assert momentum(-1.0, extra="anything")[::4] == (-1.0, "anything")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: momentum(0.1, 1), "beta must be in [0, 1), got beta=1.0"),
        (lambda: momentum(0.1, beta=1.5), "beta must be in [0, 1), got beta=1.5"),
        (lambda: momentum(0.1, 0.5, 2.5), "steps must be in [1, inf) and integral, got steps=2.5"),
        (
            lambda: momentum(0.1, nesterov=1),
            "nesterov must be True or False, got nesterov=1 (a int)",
        ),
    ],
)
def test_hyperparameters_errors_name_the_argument(call, message):
    with pytest.raises(HyperParameterError, match=f"^{re.escape(message)}$"):
        call()


def test_hyperparameters_checks_defaults_and_traced_arguments():
    @hyperparameters(beta=DECAY)
    def bad_default(beta=1.0):
        return beta

    with pytest.raises(HyperParameterError, match=r"beta=1\.0"):
        bad_default()
    assert bad_default(0.5) == 0.5
    assert float(jax.jit(lambda b: momentum(0.1, b)[1])(2.0)) == 2.0  # traced: unchecked


def test_hyperparameters_keeps_the_function_and_its_kinds():
    assert momentum.__name__ == "momentum" and momentum.__doc__ == "A stand-in optimizer."
    assert momentum.__hyperparameters__ == {"beta": DECAY, "steps": STEPS, "nesterov": BOOL}


def test_hyperparameters_refuses_names_the_function_does_not_have():
    with pytest.raises(TypeError, match=r"hyperparameters: f has no arguments \['gamma'\]"):

        @hyperparameters(beta=DECAY, gamma=DECAY)
        def f(beta=0.9):
            return beta

    with pytest.raises(TypeError, match=r"\['a', 'b'\]"):
        hyperparameters(b=REAL, a=REAL)(lambda x: x)


# ---- concrete_number -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (np.float32(0.5), 0.5),
        (3, 3.0),
        (-2.5, -2.5),
        (np.int64(7), 7.0),
        (np.array(0.25), 0.25),
        (jnp.asarray(2), 2.0),
        (jnp.asarray(0.5, jnp.bfloat16), 0.5),
        (Fraction(3, 4), 0.75),
        (True, None),
        (np.bool_(False), None),
        (np.array(True), None),
        (jnp.array(True), None),
        ("1", None),
        (None, None),
        (0.5 + 0j, None),
        (np.complex64(1), None),
        (jnp.asarray(1 + 0j), None),
        (jnp.ones(2), None),
        (np.ones((1, 1)), None),
        ([1.0], None),
    ],
)
def test_concrete_number(value, want):
    got = concrete_number(value)
    assert got == want and type(got) is type(want)


def test_concrete_number_of_non_finite_and_traced_values():
    assert math.isnan(concrete_number(float("nan")))  # a number: range checks refuse it
    assert concrete_number(np.float32(-np.inf)) == -math.inf
    seen = []
    jax.jit(lambda x: seen.append(concrete_number(x)) or x)(1.0)
    assert seen == [None]


def test_one_of_names_the_options():
    kind = one_of("hard", "smooth")
    assert kind("mode", "smooth") == "smooth"
    assert kind.description == "one of 'hard', 'smooth'"
    for bad in ("soft", 1, None, ["hard"]):
        msg = _refused(kind, "mode", bad)
        assert msg == f"mode must be one of 'hard', 'smooth', got mode={bad!r}", msg
