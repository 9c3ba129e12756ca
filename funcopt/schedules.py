"""Schedules: plain functions from the step count to a hyper-parameter value.

A schedule is any function ``count -> value``; the count lives in the state of the
transform that reads it (``scale_by_learning_rate`` passes 0 at the first update), so
``funcopt.adam(funcopt.cosine_decay_schedule(1e-3, 10_000))`` just works. The
factories below keep optax's names, argument order, defaults and numerics, so
migrating is a change of import; any of them can also be handed to optax.

Step arguments (``transition_steps``, ``warmup_steps``, boundaries, ...) must be
concrete numbers and are validated when the schedule is built: an invalid one raises
:class:`~funcopt.base.HyperParameterError` (a ``ValueError``) naming the argument and
its value. Where optax silently falls back (a negative ``transition_begin`` treated as
0, a negative ``transition_steps`` as a constant) funcopt raises instead. Values
(``init_value``, ``peak_value``, ...) may be traced arrays.

Notation: ``t`` is the count, ``I`` the initial value, ``E`` the end value,
``B`` the transition begin and ``T`` the number of transition steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from funcopt.base import (
    HyperParameterError,
    Schedule,
    cached_factory,
    check_nonnegative,
    check_range,
    concrete_number,
)

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]

Scalar = float | jax.Array
"""A value a schedule returns: a Python number or a (possibly traced) scalar array."""


# ---- helpers -------------------------------------------------------------------------


def _check_steps(name: str, value: Any, *, positive: bool = False) -> None:
    """A number of steps must be a concrete number, ``≥ 0`` (or ``> 0``)."""
    if concrete_number(value) is None:
        raise HyperParameterError(f"{name} must be a concrete number, got {name}={value!r}")
    check_range(name, value, 0.0, low_inclusive=not positive)


def _as_float(count: Any) -> jax.Array:
    """The count as a float array, so step arithmetic cannot overflow int32."""
    return jnp.asarray(count, dtype=float)


def _sorted_pieces(boundaries_and_scales: Mapping[int, float] | None) -> list[tuple[int, float]]:
    """``{step: scale}`` sorted by step; steps ``≥ 0`` and scales ``≥ 0`` are checked."""
    pieces = sorted((boundaries_and_scales or {}).items())
    for step, factor in pieces:
        _check_steps("a boundary step in boundaries_and_scales", step)
        check_nonnegative(f"boundaries_and_scales[{step!r}]", factor)
    return pieces


def _ratio(end_value: Scalar, peak_value: Scalar) -> Scalar:
    """``end / peak``, or 0 when ``peak`` is 0 (concrete or traced)."""
    peak = concrete_number(peak_value)
    if peak is not None:
        return 0.0 if peak == 0 else end_value / peak_value
    nonzero = peak_value != 0
    return jnp.where(nonzero, end_value / jnp.where(nonzero, peak_value, 1.0), 0.0)


def _linear_interpolate(start: Any, end: Any, pct: jax.Array) -> jax.Array:
    """``start + (end − start) · pct``."""
    return (end - start) * pct + start


def _cosine_interpolate(start: Any, end: Any, pct: jax.Array) -> jax.Array:
    """``end + (start − end) · (1 + cos(π · pct)) / 2``."""
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)


_INTERPOLATIONS: dict[str, Callable[[Any, Any, jax.Array], jax.Array]] = {
    "linear": _linear_interpolate,
    "cosine": _cosine_interpolate,
}


# ---- basic shapes --------------------------------------------------------------------


@cached_factory
def constant_schedule(value: Scalar) -> Schedule:
    r"""The same value at every step: $v(t) = v$.

    Args:
        value: the value returned at every step (a number or a scalar array).

    Example:
        >>> import funcopt
        >>> funcopt.constant_schedule(0.5)(100)
        0.5
    """
    return lambda count: value


@cached_factory
def polynomial_schedule(
    init_value: Scalar,
    end_value: Scalar,
    power: Scalar,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    r"""Polynomial transition from ``init_value`` to ``end_value`` over ``T`` steps.

    $$ v(t) = (I - E) \left(1 - \frac{\min(\max(t - B, 0), T)}{T}\right)^{p} + E $$

    so ``v = I`` for ``t ≤ B`` and ``v = E`` for ``t ≥ B + T``.

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
    _check_steps("transition_steps", transition_steps)
    _check_steps("transition_begin", transition_begin)
    if transition_steps == 0:
        return constant_schedule(init_value)

    def schedule(count: Any) -> jax.Array:
        t = jnp.clip(_as_float(count) - transition_begin, 0, transition_steps)
        frac = (transition_steps - t) / transition_steps  # exactly 0 at the end, never < 0
        return (init_value - end_value) * frac**power + end_value

    return schedule


@cached_factory
def linear_schedule(
    init_value: Scalar, end_value: Scalar, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    r"""Linear transition from ``init_value`` to ``end_value`` over ``T`` steps.

    $$ v(t) = I + (E - I)\, \frac{\min(\max(t - B, 0), T)}{T} $$

    :func:`polynomial_schedule` with ``power=1``; arguments as there.

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
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


@cached_factory
def exponential_decay(
    init_value: Scalar,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
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
    _check_steps("transition_steps", transition_steps)
    _check_steps("transition_begin", transition_begin)
    check_nonnegative("decay_rate", decay_rate)
    if transition_steps == 0 or concrete_number(decay_rate) == 0:
        return constant_schedule(init_value)

    def schedule(count: Any) -> jax.Array:
        elapsed = _as_float(count) - transition_begin
        p = elapsed / transition_steps
        if staircase:
            p = jnp.floor(p)
        value = jnp.where(elapsed <= 0, init_value, init_value * jnp.power(decay_rate, p))
        if end_value is None:
            return value
        return jnp.where(
            decay_rate < 1, jnp.maximum(value, end_value), jnp.minimum(value, end_value)
        )

    return schedule


@cached_factory
def cosine_decay_schedule(
    init_value: Scalar, decay_steps: int, alpha: Scalar = 0.0, exponent: Scalar = 1.0
) -> Schedule:
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
    _check_steps("decay_steps", decay_steps, positive=True)

    def schedule(count: Any) -> jax.Array:
        t = jnp.minimum(_as_float(count), decay_steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * t / decay_steps))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


# ---- piecewise -----------------------------------------------------------------------


@cached_factory
def piecewise_constant_schedule(
    init_value: Scalar, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    r"""``init_value`` multiplied by every scale whose boundary has been reached.

    $$ v(t) = I \prod_{i:\ t \ge b_i} s_i $$

    Args:
        init_value: ``I``.
        boundaries_and_scales: ``{b_i: s_i}`` with steps ``b_i ≥ 0`` and scales
            ``s_i ≥ 0``.

    Example:
        >>> import funcopt
        >>> sched = funcopt.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.1})
        >>> print(f"{sched(9):.2f} {sched(10):.2f} {sched(25):.3f}")
        1.00 0.10 0.010
    """
    pieces = _sorted_pieces(boundaries_and_scales)

    def schedule(count: Any) -> Any:
        value = init_value
        for step, factor in pieces:
            value = jnp.where(jnp.asarray(count) >= step, value * factor, value)
        return value

    return schedule


@cached_factory
def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: Scalar,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
    r"""Interpolate between the accumulated values of a piecewise-constant schedule.

    With boundaries ``0 = b_0 < b_1 < … < b_n`` and values ``v_0 = I``,
    ``v_i = v_{i-1} s_i``, for ``b_i ≤ t < b_{i+1}``:

    $$ v(t) = f\!\left(v_i, v_{i+1}, \frac{t - b_i}{\max(b_{i+1} - b_i, 1)}\right) $$

    and ``v(t) = v_n`` for ``t ≥ b_n``, where ``f(a, b, x) = a + (b − a) x``
    (``"linear"``) or ``b + (a − b)(1 + cos πx)/2`` (``"cosine"``). Note that the scales
    multiply: ``{4: 0.1, 8: 0.1}`` goes from ``I`` to ``0.1 I`` then to ``0.01 I``.

    Args:
        interpolate_type: ``"linear"`` or ``"cosine"``.
        init_value: ``I``.
        boundaries_and_scales: ``{b_i: s_i}`` with ``b_i ≥ 0`` and ``s_i ≥ 0``.

    Example:
        >>> import funcopt
        >>> sched = funcopt.piecewise_interpolate_schedule("linear", 1.0, {4: 0.5})
        >>> print(f"{sched(2):.2f} {sched(4):.2f}")
        0.75 0.50
    """
    if interpolate_type not in _INTERPOLATIONS:
        raise HyperParameterError(
            "interpolate_type must be 'linear' or 'cosine', "
            f"got interpolate_type={interpolate_type!r}"
        )
    interpolate = _INTERPOLATIONS[interpolate_type]
    pieces = _sorted_pieces(boundaries_and_scales)
    bounds = [0, *(step for step, _ in pieces)]
    factors = [1.0]
    for _, factor in pieces:
        factors.append(factors[-1] * factor)

    def schedule(count: Any) -> Any:
        t = _as_float(count)
        value = init_value * factors[-1]
        for i in reversed(range(len(pieces))):  # the earliest segment containing t wins
            start, end = bounds[i], bounds[i + 1]
            pct = jnp.clip((t - start) / max(end - start, 1), 0, 1)
            segment = interpolate(init_value * factors[i], init_value * factors[i + 1], pct)
            value = jnp.where(t < end, segment, value)
        return value

    return schedule


@cached_factory
def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    r"""Run ``schedules`` one after another, switching at ``boundaries``.

    $$ v(t) = s_k(t - b_k) \quad \text{for } b_k \le t < b_{k+1},
       \qquad b_0 = 0,\ b_{n} = \infty $$

    Each schedule sees the count since its own start.

    Args:
        schedules: ``n`` schedules.
        boundaries: ``n − 1`` non-decreasing steps ``≥ 0``.

    Example:
        >>> import funcopt
        >>> warm = funcopt.linear_schedule(0.0, 1.0, transition_steps=10)
        >>> decay = funcopt.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
        >>> sched = funcopt.join_schedules([warm, decay], [10])
        >>> print(f"{sched(5):.2f} {sched(20):.2f}")
        0.50 0.50
    """
    schedules, boundaries = tuple(schedules), tuple(boundaries)
    if len(boundaries) != len(schedules) - 1 or not schedules:
        raise HyperParameterError(
            f"join_schedules needs one boundary fewer than schedules, got "
            f"{len(schedules)} schedules and boundaries={boundaries!r}"
        )
    for i, step in enumerate(boundaries):
        _check_steps(f"boundaries[{i}]", step)
        if i and step < boundaries[i - 1]:
            raise HyperParameterError(
                f"boundaries must be non-decreasing, got boundaries={boundaries!r}"
            )

    def schedule(count: Any) -> Any:
        value = schedules[0](count)
        for step, later in zip(boundaries, schedules[1:], strict=True):
            value = jnp.where(jnp.asarray(count) < step, value, later(count - step))
        return value

    return schedule


# ---- warm-up and restarts ------------------------------------------------------------


@cached_factory
def warmup_constant_schedule(init_value: Scalar, peak_value: Scalar, warmup_steps: int) -> Schedule:
    r"""Linear warm-up from ``init_value`` to ``peak_value``, then constant.

    $$ v(t) = I + (P - I) \min(t / W, 1) $$

    Args:
        init_value: ``I``.
        peak_value: ``P``, reached at step ``W`` and kept after.
        warmup_steps: ``W ≥ 0``; 0 gives the constant ``I`` (not ``P``), as in optax.

    Example:
        >>> import funcopt
        >>> sched = funcopt.warmup_constant_schedule(0.0, 1.0, warmup_steps=4)
        >>> print(f"{sched(0):.2f} {sched(2):.2f} {sched(4):.2f} {sched(100):.2f}")
        0.00 0.50 1.00 1.00
    """
    _check_steps("warmup_steps", warmup_steps)
    return linear_schedule(init_value, peak_value, warmup_steps)


@cached_factory
def warmup_cosine_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    decay_steps: int,
    end_value: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> Schedule:
    r"""Linear warm-up to ``peak_value``, then cosine decay to ``end_value``.

    $$ v(t) = \begin{cases} I + (P - I)\, t / W & t < W \\
       E + (P - E) \left(\tfrac12\left(1 + \cos \frac{\pi \min(t - W,\ D - W)}{D - W}
       \right)\right)^{p} & t \ge W \end{cases} $$

    Args:
        init_value: ``I``.
        peak_value: ``P``, reached at step ``W``.
        warmup_steps: ``W ≥ 0``.
        decay_steps: ``D > W``, the total length *including* the warm-up.
        end_value: ``E``.
        exponent: ``p``, as in :func:`cosine_decay_schedule`.

    Example:
        >>> import funcopt
        >>> sched = funcopt.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, end_value=0.1)
        >>> print(f"{sched(5):.2f} {sched(10):.2f} {sched(110):.2f}")
        0.50 1.00 0.10
    """
    _check_steps("warmup_steps", warmup_steps)
    _check_steps("decay_steps", decay_steps, positive=True)
    if decay_steps <= warmup_steps:
        raise HyperParameterError(
            "decay_steps counts the warm-up too, so it must exceed warmup_steps, got "
            f"decay_steps={decay_steps!r}, warmup_steps={warmup_steps!r}"
        )
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    decay = cosine_decay_schedule(
        peak_value, decay_steps - warmup_steps, _ratio(end_value, peak_value), exponent
    )
    return join_schedules((warmup, decay), (warmup_steps,))


@cached_factory
def warmup_exponential_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    r"""Linear warm-up to ``peak_value``, then :func:`exponential_decay` from it.

    $$ v(t) = \begin{cases} I + (P - I)\, t / W & t < W \\
       P\, r^{(t - W - B)/T} & t \ge W \end{cases} $$

    (held at ``P`` for ``B`` steps after the warm-up; staircase and ``end_value`` as
    in :func:`exponential_decay`, whose arguments the last five are).

    Args:
        init_value: ``I``.
        peak_value: ``P``, reached at step ``W``.
        warmup_steps: ``W ≥ 0``.
        transition_steps: ``T ≥ 0``, the decay period; 0 holds ``P`` after the warm-up.
        decay_rate: ``r ≥ 0``; 0 holds ``P`` after the warm-up (as in optax).
        transition_begin: ``B ≥ 0``, steps to hold ``P`` after the warm-up.
        staircase: decay in whole steps of ``T``.
        end_value: bound on the value (from below when ``r < 1``, from above when
            ``r > 1``), or ``None``.

    Example:
        >>> import funcopt
        >>> sched = funcopt.warmup_exponential_decay_schedule(
        ...     0.0, 1.0, warmup_steps=2, transition_steps=10, decay_rate=0.5
        ... )
        >>> print(f"{sched(1):.2f} {sched(2):.2f} {sched(12):.2f} {sched(22):.2f}")
        0.50 1.00 0.50 0.25
    """
    _check_steps("warmup_steps", warmup_steps)
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    decay = exponential_decay(
        peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    return join_schedules((warmup, decay), (warmup_steps,))


@cached_factory
def sgdr_schedule(cosine_kwargs: Iterable[dict[str, Any]]) -> Schedule:
    r"""SGD with warm restarts: warm-up cosine cycles run back to back.

    Cycle ``k`` is ``warmup_cosine_decay_schedule(**cosine_kwargs[k])`` and lasts its
    ``decay_steps``; it sees the count since its own start (see :func:`join_schedules`).

    Args:
        cosine_kwargs: one dict of :func:`warmup_cosine_decay_schedule` arguments per
            cycle (at least one), each with ``decay_steps``.

    Reference: Loshchilov & Hutter, *SGDR: Stochastic Gradient Descent with Warm
    Restarts*, 2017.

    Example:
        >>> import funcopt
        >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)
        >>> sched = funcopt.sgdr_schedule([cycle, cycle])
        >>> print(f"{sched(9):.2f} {sched(11):.2f} {sched(12):.2f}")
        0.04 0.50 1.00
    """
    cycles = [dict(kwargs) for kwargs in cosine_kwargs]
    if not cycles:
        raise HyperParameterError("sgdr_schedule needs at least one cycle, got cosine_kwargs=[]")
    schedules = [warmup_cosine_decay_schedule(**kwargs) for kwargs in cycles]  # validates
    starts = [0]
    for kwargs in cycles:
        starts.append(starts[-1] + kwargs["decay_steps"])
    return join_schedules(schedules, starts[1:-1])


# ---- one-cycle -----------------------------------------------------------------------


def _check_onecycle(transition_steps: int, pct_start: float, div_factor: float) -> None:
    _check_steps("transition_steps", transition_steps, positive=True)
    check_range("pct_start", pct_start, 0.0, 1.0, high_inclusive=True)
    check_range("div_factor", div_factor, 0.0, low_inclusive=False)


@cached_factory
def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: Scalar,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    r"""One-cycle policy with cosine phases (Smith & Topin, 2017).

    With ``T₁ = ⌊pct_start · T⌋``: a cosine rise from ``P / div_factor`` to ``P`` over
    ``[0, T₁)``, then a cosine fall to ``P / (div_factor · final_div_factor)`` over
    ``[T₁, T)``, then constant; i.e. :func:`piecewise_interpolate_schedule` ``("cosine",
    P / div_factor, {T₁: div_factor, T: 1 / (div_factor · final_div_factor)})``.

    Args:
        transition_steps: ``T > 0``.
        peak_value: ``P``.
        pct_start: fraction of ``T`` spent rising, in ``[0, 1]``.
        div_factor: ``> 0``; the first value is ``P / div_factor``.
        final_div_factor: ``> 0``; the last value is the first divided by it.

    Example:
        >>> import funcopt
        >>> sched = funcopt.cosine_onecycle_schedule(100, peak_value=1.0)
        >>> print(f"{sched(0):.2f} {sched(30):.2f} {sched(100):.1e}")
        0.04 1.00 4.0e-06
    """
    _check_onecycle(transition_steps, pct_start, div_factor)
    check_range("final_div_factor", final_div_factor, 0.0, low_inclusive=False)
    return piecewise_interpolate_schedule(
        "cosine",
        peak_value / div_factor,
        {
            int(pct_start * transition_steps): div_factor,
            int(transition_steps): 1.0 / (div_factor * final_div_factor),
        },
    )


@cached_factory
def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: Scalar,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    r"""One-cycle policy with three linear phases (Smith, 2017).

    With ``T₁ = ⌊pct_start · T⌋``, ``T₂ = ⌊pct_final · T⌋`` and ``I = P / div_factor``:
    linear from ``I`` to ``P`` over ``[0, T₁)``, back to ``I`` over ``[T₁, T₂)``, to
    ``I / final_div_factor`` over ``[T₂, T)``, then constant. This is
    :func:`piecewise_interpolate_schedule` ``("linear", I, {T₁: div_factor,
    T₂: 1 / div_factor, T: 1 / final_div_factor})``.

    Args:
        transition_steps: ``T > 0``.
        peak_value: ``P``.
        pct_start: fraction of ``T`` spent rising, in ``[0, 1]``.
        pct_final: fraction of ``T`` at the end of the fall, in ``[pct_start, 1]``.
        div_factor: ``> 0``.
        final_div_factor: ``> 0``.

    Example:
        >>> import funcopt
        >>> sched = funcopt.linear_onecycle_schedule(100, peak_value=1.0)
        >>> print(f"{sched(0):.2f} {sched(30):.2f} {sched(85):.2f}")
        0.04 1.00 0.04
    """
    _check_onecycle(transition_steps, pct_start, div_factor)
    check_range("pct_final", pct_final, pct_start, 1.0, high_inclusive=True)
    check_range("final_div_factor", final_div_factor, 0.0, low_inclusive=False)
    return piecewise_interpolate_schedule(
        "linear",
        peak_value / div_factor,
        {
            int(pct_start * transition_steps): div_factor,
            int(pct_final * transition_steps): 1.0 / div_factor,
            transition_steps: 1.0 / final_div_factor,
        },
    )
