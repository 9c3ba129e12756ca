"""Schedules: values that map the step count to a hyper-parameter.

A schedule is any function ``count -> value`` (a plain function is one); the transform that
reads it passes the count (0 at the first update), so
``funcopt.adam(funcopt.cosine_decay_schedule(1e-3, 10_000))`` just works. These keep
optax's names, argument order, defaults and numerics (and can be handed to optax), and each
is a *value* (:class:`Schedule`): equal arguments give equal, hash-equal schedules; numbers
are pytree leaves (possibly traced), steps and flags static, so a jitted function taking a
schedule traces once for all values. Step arguments must be concrete integers ``≥ 0``
(``1e4`` is accepted), checked when built: an invalid one raises
:class:`~funcopt.validation.HyperParameterError` naming it, also where optax silently falls
back (a negative ``transition_begin`` as 0, a negative ``transition_steps`` as a constant).

Numerics: the count is made a float before any arithmetic (no int32 overflow: a count of
``3e9``, or int64 under x64, works) and boundaries are compared exactly. Interpolations are
convex combinations ``a (1 − w) + b w`` with ``w`` exactly 0 and 1 at the ends: end values
are exact, eagerly and under ``jit``, and never negative between non-negative ends.
Notation: ``t`` the count, ``I`` the initial value, ``E`` the end value, ``B`` the
transition begin, ``T`` the number of transition steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.validation import (
    BOOL,
    NONNEGATIVE,
    REAL,
    HyperParameterError,
    Kind,
    concrete_number,
    integer,
    interval,
    is_traced,
    one_of,
)
from funcopt.values import Value, hyper, static

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "exponential_decay",
    "linear_schedule",
    "piecewise_constant_schedule",
    "polynomial_schedule",
]


# ---- the base class --------------------------------------------------------------------


class Schedule(Value):
    """The base of funcopt's schedules: a frozen dataclass, a pytree, equal by value.

    Subclasses declare numbers with :func:`~funcopt.values.hyper` (leaves) and steps with
    :func:`~funcopt.values.static`, may add ``check``, and implement ``__call__(count)``
    (see :class:`~funcopt.values.Value` for what they inherit).
    """

    def __call__(self, count: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")


class FunctionSchedule(Schedule):
    """A user's plain function inside a composite schedule (static: it has no leaves)."""

    fn: Callable[[Any], Any] = static()

    def __call__(self, count: Any) -> Any:
        return self.fn(count)

    def __repr__(self) -> str:
        return repr(self.fn)


# ---- kinds and helpers ------------------------------------------------------------------


def concrete(kind: Kind) -> Kind:
    """``kind``, refusing traced values: for static structure (step counts, fractions)."""

    def check(name: str, value: Any) -> Any:
        if is_traced(value):
            raise HyperParameterError(f"{name} must be concrete (it is structure), got a tracer")
        return kind(name, value)

    return Kind(check, f"{kind.description} (concrete)")


STEPS, POSITIVE_STEPS = concrete(integer(0)), concrete(integer(1))  # concrete steps ≥ 0, ≥ 1
OPTIONAL_REAL = interval(optional=True)


def as_float(count: Any) -> jax.Array:
    """The count as a float array, so step arithmetic cannot overflow int32."""
    return jnp.asarray(count, dtype=float)


def host_int(count: Any) -> bool:
    """A Python or numpy integer (scalar or array), compared and shifted with numpy."""
    host = isinstance(count, int | np.integer | np.ndarray) and not isinstance(count, bool)
    return host and np.asarray(count).dtype.kind in "iu"


def reached(count: Any, step: int) -> Any:
    """``count ≥ step``: exact for integer counts of any width, floats compared as floats."""
    if host_int(count):
        return np.asarray(count, np.int64) >= step
    count = jnp.asarray(count)
    if not jnp.issubdtype(count.dtype, jnp.integer):
        return count >= float(step)
    return count >= step if fits(count, step) else jnp.zeros(count.shape, bool)


def fits(count: Any, step: int) -> bool:
    """Whether ``step`` is in the range of a jax count's dtype (always, for floats)."""
    dtype = jnp.asarray(count).dtype
    return not jnp.issubdtype(dtype, jnp.integer) or step <= jnp.iinfo(dtype).max


def progress(count: Any, steps: int, begin: int = 0) -> jax.Array:
    """``min(max(t − B, 0), T) / T``: exactly 0 up to ``B``, exactly 1 from ``B + T``."""
    elapsed = jnp.clip(as_float(count) - float(begin), 0.0, float(steps))
    return jnp.where(elapsed >= float(steps), 1.0, elapsed / float(steps))


def mix(start: Any, end: Any, w: Any) -> Any:
    """``start (1 − w) + end w``: exact at ``w ∈ {0, 1}``, between the two in between."""
    return start * (1 - w) + end * w


def _cosine_mix(start: Any, end: Any, pct: Any) -> Any:
    return mix(end, start, 0.5 * (1 + jnp.cos(jnp.pi * pct)))


INTERPOLATIONS: dict[str, Callable[[Any, Any, Any], Any]] = {"linear": mix, "cosine": _cosine_mix}


INTERPOLATION = one_of(*INTERPOLATIONS)
"""The kind of an ``interpolate_type`` argument: ``'linear'`` or ``'cosine'``."""


def pieces(boundaries_and_scales: Mapping[Any, Any] | None) -> dict[str, tuple[Any, ...]]:
    """``{step: scale}`` as sorted ``boundaries`` and ``scales``, each checked ``≥ 0``."""
    items = []
    for step, factor in (boundaries_and_scales or {}).items():
        try:
            step = STEPS("step", step)
        except HyperParameterError:
            raise HyperParameterError(
                f"boundaries_and_scales: a step must be an integer ≥ 0, got step={step!r}"
            ) from None
        items.append((step, NONNEGATIVE(f"boundaries_and_scales[{step!r}]", factor)))
    items.sort(key=lambda item: item[0])
    return {"boundaries": tuple(s for s, _ in items), "scales": tuple(f for _, f in items)}


def set_and_check(obj: Schedule, **fields: Any) -> None:
    for name, value in fields.items():
        object.__setattr__(obj, name, value)
    obj.__post_init__()


# ---- basic shapes -----------------------------------------------------------------------


class constant_schedule(Schedule):
    r"""The same value at every step: $v(t) = v$.

    Args:
        value: the value returned at every step (a number or a scalar array).

    Example:
        >>> import funcopt
        >>> funcopt.constant_schedule(0.5)(100)
        0.5
    """

    value: Any = hyper(REAL)

    def __call__(self, count: Any) -> Any:
        return self.value


class polynomial_schedule(Schedule):
    r"""Polynomial transition from ``init_value`` to ``end_value`` over ``T`` steps.

    $$ v(t) = I\, w + E\,(1 - w), \qquad
       w = \left(1 - \frac{\min(\max(t - B, 0), T)}{T}\right)^{p} $$

    (optax's $(I - E)\, w + E$ with exact ends): ``I`` up to ``B``, ``E`` from ``B + T``.

    Args:
        init_value: ``I``.
        end_value: ``E``.
        power: the exponent ``p`` (1 is linear).
        transition_steps: ``T ≥ 0``; 0 gives the constant ``I``.
        transition_begin: ``B ≥ 0``, steps to hold ``I`` before the transition.

    Example:
        >>> import funcopt
        >>> sched = funcopt.polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
        >>> print(f"{sched(5):.2f} {sched(10):.2f}")
        0.25 0.00
    """

    init_value: Any = hyper(REAL)
    end_value: Any = hyper(REAL)
    power: Any = hyper(REAL)
    transition_steps: int = static(kind=STEPS)
    transition_begin: int = static(0, STEPS)

    def __call__(self, count: Any) -> Any:
        if self.transition_steps == 0:
            return self.init_value
        w = (1 - progress(count, self.transition_steps, self.transition_begin)) ** self.power
        return mix(self.end_value, self.init_value, w)


class linear_schedule(Schedule):
    r"""Linear transition from ``init_value`` to ``end_value`` over ``T`` steps.

    $$ v(t) = I\,(1 - f) + E\, f, \qquad f = \frac{\min(\max(t - B, 0), T)}{T} $$

    :class:`polynomial_schedule` with ``power=1``: exactly ``I`` up to ``B``, ``E`` from
    ``B + T``.

    Args:
        init_value: ``I``, the value up to step ``B``.
        end_value: ``E``, the value from step ``B + T`` on.
        transition_steps: ``T ≥ 0``; 0 gives the constant ``I``.
        transition_begin: ``B ≥ 0``, steps to hold ``I`` before the transition.

    Example:
        >>> import funcopt
        >>> sched = funcopt.linear_schedule(1.0, 0.0, transition_steps=4)
        >>> print(f"{sched(1):.2f} {sched(9):.2f}")
        0.75 0.00
        >>> sched = funcopt.linear_schedule(0.0, 1.0, transition_steps=4, transition_begin=2)
        >>> print(f"{sched(2):.2f} {sched(4):.2f} {sched(6):.2f}")
        0.00 0.50 1.00
        >>> sched == funcopt.linear_schedule(0, 1, 4.0, 2)  # a value
        True
    """

    init_value: Any = hyper(REAL)
    end_value: Any = hyper(REAL)
    transition_steps: int = static(kind=STEPS)
    transition_begin: int = static(0, STEPS)

    def __call__(self, count: Any) -> Any:
        if self.transition_steps == 0:
            return self.init_value
        f = progress(count, self.transition_steps, self.transition_begin)
        return mix(self.init_value, self.end_value, f)


class exponential_decay(Schedule):
    r"""Exponential decay by ``decay_rate`` every ``T`` steps after a delay ``B``.

    $$ v(t) = I\, r^{p}, \qquad p = \frac{t - B}{T}
       \quad (\lfloor (t - B)/T \rfloor \text{ if staircase}) $$

    with ``v = I`` for ``t ≤ B``. If ``end_value`` is given, it bounds the value:
    from below when ``r < 1``, from above when ``r > 1``.

    Args:
        init_value: ``I``.
        transition_steps: ``T ≥ 0``; 0 gives the constant ``I``.
        decay_rate: ``r ≥ 0``; 0 gives the constant ``I`` (as in optax).
        transition_begin: ``B ≥ 0``.
        staircase: decay in whole steps of ``T``.
        end_value: the bound described above, or ``None``.

    Example:
        >>> import funcopt
        >>> sched = funcopt.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
        >>> print(f"{sched(20):.2f}")
        0.25
    """

    init_value: Any = hyper(REAL)
    transition_steps: int = static(kind=STEPS)
    decay_rate: Any = hyper(NONNEGATIVE)
    transition_begin: int = static(0, STEPS)
    staircase: bool = static(False, BOOL)
    end_value: Any = hyper(OPTIONAL_REAL, None)

    def __call__(self, count: Any) -> Any:
        init, rate, end = self.init_value, self.decay_rate, self.end_value
        known = concrete_number(rate)  # None when traced
        if self.transition_steps == 0 or known == 0:
            return init
        elapsed = as_float(count) - float(self.transition_begin)
        p = elapsed / float(self.transition_steps)
        if self.staircase:
            p = jnp.floor(p)
        value = jnp.where(elapsed <= 0, init, init * jnp.power(rate, p))
        if end is not None and known is not None:
            value = (jnp.maximum if known < 1 else jnp.minimum)(value, end)
        elif end is not None:
            value = jnp.where(rate < 1, jnp.maximum(value, end), jnp.minimum(value, end))
        return value if known is not None else jnp.where(rate == 0, init, value)


class cosine_decay_schedule(Schedule):
    r"""Cosine decay from ``init_value`` to ``alpha · init_value`` over ``T`` steps.

    $$ v(t) = I \left[(1 - \alpha) \left(\tfrac12 \left(1 + \cos \frac{\pi \min(t, T)}{T}
       \right)\right)^{p} + \alpha\right] $$

    Args:
        init_value: ``I``.
        decay_steps: ``T > 0``.
        alpha: the final value as a fraction of ``I``.
        exponent: ``p``, sharpens (``> 1``) or flattens (``< 1``) the curve.

    Reference: Loshchilov & Hutter, *SGDR: Stochastic Gradient Descent with Warm
    Restarts*, 2017.

    Example:
        >>> import funcopt
        >>> sched = funcopt.cosine_decay_schedule(1.0, decay_steps=100)
        >>> print(f"{sched(50):.2f} {sched(100):.2f}")
        0.50 0.00
    """

    init_value: Any = hyper(REAL)
    decay_steps: int = static(kind=POSITIVE_STEPS)
    alpha: Any = hyper(REAL, 0.0)
    exponent: Any = hyper(REAL, 1.0)

    def __call__(self, count: Any) -> Any:
        steps = float(self.decay_steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(as_float(count), steps) / steps))
        return self.init_value * ((1 - self.alpha) * cosine**self.exponent + self.alpha)


# ---- piecewise --------------------------------------------------------------------------


class piecewise_constant_schedule(Schedule):
    r"""``init_value`` multiplied by every scale whose boundary has been reached.

    $$ v(t) = I \prod_{i:\ t \ge b_i} s_i $$

    Args:
        init_value: ``I``.
        boundaries_and_scales: ``{b_i: s_i}`` with steps ``b_i ≥ 0`` and scales
            ``s_i ≥ 0`` (kept as the fields ``boundaries``, static, and ``scales``, leaves).

    Example:
        >>> import funcopt
        >>> sched = funcopt.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.1})
        >>> print(f"{sched(9):.2f} {sched(10):.2f} {sched(25):.3f}")
        1.00 0.10 0.010
    """

    init_value: Any = hyper(REAL)
    boundaries: tuple[int, ...] = static(())
    scales: tuple[Any, ...] = ()

    def __init__(
        self, init_value: Any, boundaries_and_scales: Mapping[int, Any] | None = None
    ) -> None:
        set_and_check(self, init_value=init_value, **pieces(boundaries_and_scales))

    def __call__(self, count: Any) -> Any:
        value = self.init_value
        for step, factor in zip(self.boundaries, self.scales, strict=True):
            value = jnp.where(reached(count, step), value * factor, value)
        return value
