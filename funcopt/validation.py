"""What a hyper-parameter may be: kinds that check and normalise concrete values.

Every numeric argument of a funcopt transform has a *kind* (a learning rate, a decay in
``[0, 1)``, a non-negative ε, a count of steps, a dtype, ...). A kind looks at the value
the user gave and either returns it normalised or raises :class:`HyperParameterError`
naming the argument and the value:

- Python, numpy and concrete jax scalars (0-d arrays included) become Python numbers, so
  ``adam(1)``, ``adam(1.0)`` and ``adam(np.float64(1.0))`` are one and the same value;
- bools, ``None`` (unless the argument is optional), strings, non-scalar arrays, NaN and
  ±inf are refused, as are numbers outside the kind's range;
- traced values (inside ``jit``, ``vmap`` or ``grad``) pass numeric kinds unchecked: they
  cannot be inspected, and tracing them is how an optimizer is swept or differentiated.
  Flags (``BOOL``) and dtypes (``DTYPE``) are structure, so they must be concrete.

Transforms declare the kind of each field (:func:`funcopt.values.hyper`); optimizers built by
composition declare theirs with :func:`hyperparameters`, so that an error names the
argument the user typed (``adagrad(eps=-1)`` says ``eps``, not the primitive's name).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import operator
from collections.abc import Callable
from typing import Any, NamedTuple, ParamSpec, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ANY",
    "BOOL",
    "DECAY",
    "DTYPE",
    "NONNEGATIVE",
    "POSITIVE",
    "PROBABILITY",
    "RATE",
    "REAL",
    "HyperParameterError",
    "Kind",
    "concrete_number",
    "hyperparameters",
    "integer",
    "interval",
    "one_of",
]


class HyperParameterError(ValueError):
    """A hyper-parameter given as a concrete value is not valid (type, shape or range)."""


def is_traced(value: Any) -> bool:
    """Whether ``value`` is (or holds) a tracer, so that it cannot be checked."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(value))


def concrete_number(value: Any) -> float | None:
    """``float(value)`` for a concrete real scalar (not a bool); ``None`` otherwise.

    Args:
        value: a Python, numpy or jax scalar (or anything else).

    Example:
        >>> import numpy as np
        >>> from funcopt.validation import concrete_number
        >>> concrete_number(np.float32(0.5)), concrete_number(True), concrete_number("1")
        (0.5, None, None)
    """
    if isinstance(value, bool | np.bool_) or isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # an int beyond float range: infinite, so never valid
            return -math.inf if operator.lt(value, 0) else math.inf
    if isinstance(value, np.ndarray | jax.Array) and value.ndim == 0:
        if not jnp.issubdtype(value.dtype, jnp.number) or jnp.iscomplexobj(value):
            return None
        try:
            return float(value)
        except (TypeError, jax.errors.ConcretizationTypeError):
            return None
    return None


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) > 0:
        return f"an array of shape {tuple(shape)}"
    return f"{value!r} (a {type(value).__name__})"


class Kind(NamedTuple):
    """A kind of hyper-parameter: ``check(name, value)`` returns the normalised value.

    Attributes:
        check: raises :class:`HyperParameterError` naming ``name`` for a bad concrete
            value, else returns the value normalised (a Python number for a scalar).
        description: what the kind accepts, in words (for errors and docs).
    """

    check: Callable[[str, Any], Any]
    description: str

    def __call__(self, name: str, value: Any) -> Any:
        return self.check(name, value)


def _interval_text(low: float | None, high: float | None, lo_in: bool, hi_in: bool) -> str:
    lo = "(-inf" if low is None else ("[" if lo_in else "(") + f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}" + ("]" if hi_in else ")")
    return f"{lo}, {hi}"


def interval(
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
    optional: bool = False,
    schedule: bool = False,
    integer: bool = False,
) -> Kind:
    """A real scalar in an interval (finite: NaN and ±inf are never valid).

    Args:
        low: the lower bound, or ``None`` for none.
        high: the upper bound, or ``None`` for none.
        low_inclusive: whether ``low`` itself is valid.
        high_inclusive: whether ``high`` itself is valid.
        optional: ``None`` is valid (and kept).
        schedule: a callable (a schedule of the step count) is valid (and kept, unchecked).
        integer: the value must be integral; it is returned as a Python ``int``.

    Example:
        >>> from funcopt.validation import interval
        >>> interval(0.0, 1.0)("b1", 0.5)
        0.5
        >>> interval(0.0, 1.0)("b1", 1.5)
        Traceback (most recent call last):
        ...
        funcopt.validation.HyperParameterError: b1 must be in [0, 1), got b1=1.5
    """
    text = _interval_text(low, high, low_inclusive, high_inclusive)
    what = ("an integer" if integer else "a number") + f" in {text}"
    if schedule:
        what += " or a schedule"
    if optional:
        what += " or None"

    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if is_traced(value):
            return value
        if callable(value) and schedule:
            return value
        if isinstance(value, bool | np.bool_):
            raise HyperParameterError(f"{name} must be {what}, got {name}={value!r}, a bool")
        x = concrete_number(value)
        if x is None:
            raise HyperParameterError(f"{name} must be {what}, got {name}={_describe(value)}")
        finite = math.isfinite(x)
        ok = finite
        if low is not None:
            ok = ok and (x >= low if low_inclusive else x > low)
        if high is not None:
            ok = ok and (x <= high if high_inclusive else x < high)
        whole = finite and x == int(x)
        if integer:
            ok = ok and whole
        if not ok:
            shown = int(x) if integer and whole else x
            raise HyperParameterError(
                f"{name} must be in {text}{' and integral' if integer else ''}, "
                f"got {name}={shown!r}"
            )
        if not integer:
            return x
        return int(value) if isinstance(value, numbers.Integral) else int(x)  # exact ints

    return Kind(check, what)


def integer(low: int = 1, *, optional: bool = False, schedule: bool = False) -> Kind:
    """An integer number of steps ``≥ low`` (integral floats such as ``1e4`` are accepted).

    Args:
        low: the smallest valid value.
        optional: ``None`` is valid.
        schedule: a callable (a function of a step count) is valid.

    Example:
        >>> from funcopt.validation import integer
        >>> integer(1)("k", 4.0)
        4
    """
    return interval(low, None, integer=True, optional=optional, schedule=schedule)


def one_of(*options: str) -> Kind:
    """One of a few names (a mode, a preset).

    Example:
        >>> from funcopt.validation import one_of
        >>> one_of("hard", "smooth")("mode", "soft")
        Traceback (most recent call last):
        ...
        funcopt.validation.HyperParameterError: mode must be one of 'hard', 'smooth', got ...
    """
    text = ", ".join(map(repr, options))

    def check(name: str, value: Any) -> str:
        if not (isinstance(value, str) and value in options):
            raise HyperParameterError(f"{name} must be one of {text}, got {name}={value!r}")
        return value

    return Kind(check, f"one of {text}")


def _check_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise HyperParameterError(f"{name} must be True or False, got {name}={_describe(value)}")


def _check_dtype(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.ndarray | jax.Array | jax.core.Tracer):
        raise HyperParameterError(
            f"{name} must be a float dtype or None, got {name}={_describe(value)}"
        )
    try:
        dtype = jnp.dtype(value)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):  # moments are never integers
        raise HyperParameterError(
            f"{name} must be a float dtype or None, got {name}={_describe(value)}"
        )
    return dtype


def _check_any(name: str, value: Any) -> Any:
    del name
    return value


RATE = interval(0.0, schedule=True)
"""A learning rate: a number ``≥ 0`` or a schedule."""
DECAY = interval(0.0, 1.0)
"""A decay rate β in ``[0, 1)``."""
NONNEGATIVE = interval(0.0)
"""A number ``≥ 0`` (an ε, a weight decay, a threshold)."""
POSITIVE = interval(0.0, low_inclusive=False)
"""A number ``> 0``."""
PROBABILITY = interval(0.0, 1.0, high_inclusive=True)
"""A number in ``[0, 1]``."""
REAL = interval()
"""Any finite real number."""
BOOL = Kind(_check_bool, "True or False")
"""A flag."""
DTYPE = Kind(_check_dtype, "a float dtype or None")
"""A float (or complex) dtype (normalised with ``jnp.dtype``) or ``None``."""
ANY = Kind(_check_any, "anything")
"""No check (structure such as masks and callables)."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def hyperparameters(**kinds: Kind) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Check and normalise a function's arguments by kind before it runs.

    The optimizers built by composition declare their arguments this way, so that a bad
    value is reported under the name the user typed, before any primitive sees it.

    Args:
        **kinds: a :class:`Kind` per argument name of the decorated function.

    Example:
        >>> from funcopt.validation import DECAY, hyperparameters
        >>> @hyperparameters(beta=DECAY)
        ... def momentum(beta=0.9):
        ...     return beta
        >>> momentum(1)  # normalised to a float
        Traceback (most recent call last):
        ...
        funcopt.validation.HyperParameterError: beta must be in [0, 1), got beta=1.0
        >>> momentum(0.5)
        0.5
    """

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        signature = inspect.signature(fn)
        unknown = set(kinds) - set(signature.parameters)
        if unknown:
            raise TypeError(f"hyperparameters: {fn.__name__} has no arguments {sorted(unknown)}")

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            for name, kind in kinds.items():
                bound.arguments[name] = kind(name, bound.arguments[name])
            return fn(*bound.args, **bound.kwargs)

        wrapper.__hyperparameters__ = kinds  # type: ignore[attr-defined]
        return wrapper

    return decorate
