"""Composite schedules: warm-ups, warm restarts and one-cycle policies.

Each is built from the shapes of :mod:`funcopt.schedules` (a linear warm-up joined to a
decay, a piecewise interpolation) and, like them, is a value: a frozen dataclass
registered as a pytree whose leaves are the numbers given (``peak_value``,
``div_factor``, ...) and whose structure is the steps, so equal arguments give equal
schedules and a jitted function taking one traces once for all values. Names, argument
order, defaults and numerics are optax's; step arguments are validated as in
:mod:`funcopt.schedules` (concrete integers ``≥ 0``).

Notation: ``I`` the initial value, ``P`` the peak value, ``E`` the end value, ``W`` the
warm-up steps.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.schedules import (
    INTERPOLATION,
    INTERPOLATIONS,
    OPTIONAL_REAL,
    POSITIVE_STEPS,
    STEPS,
    FunctionSchedule,
    Schedule,
    as_float,
    concrete,
    cosine_decay_schedule,
    exponential_decay,
    fits,
    host_int,
    linear_schedule,
    pieces,
    reached,
    set_and_check,
)
from funcopt.validation import (
    BOOL,
    NONNEGATIVE,
    POSITIVE,
    PROBABILITY,
    REAL,
    HyperParameterError,
    Kind,
    concrete_number,
    interval,
)
from funcopt.values import hyper, static

__all__ = [
    "cosine_onecycle_schedule",
    "join_schedules",
    "linear_onecycle_schedule",
    "piecewise_interpolate_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]

FRACTION = concrete(PROBABILITY)


class piecewise_interpolate_schedule(Schedule):
    r"""Interpolate between the accumulated values of a piecewise-constant schedule.

    With boundaries ``0 = b_0 < b_1 < … < b_n`` and values ``v_0 = I``,
    ``v_i = v_{i-1} s_i``, for ``b_i ≤ t < b_{i+1}``:

    $$ v(t) = f\!\left(v_i, v_{i+1}, \frac{t - b_i}{\max(b_{i+1} - b_i, 1)}\right) $$

    and ``v(t) = v_n`` for ``t ≥ b_n``, where ``f(a, b, x) = a (1 − x) + b x``
    (``"linear"``) or ``a w + b (1 − w)`` with ``w = (1 + cos πx)/2`` (``"cosine"``).
    Note that the scales multiply: ``{4: 0.1, 8: 0.1}`` goes from ``I`` to ``0.1 I`` then
    to ``0.01 I``.

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

    interpolate_type: str = static(kind=INTERPOLATION)
    init_value: Any = hyper(REAL)
    boundaries: tuple[int, ...] = static(())
    scales: tuple[Any, ...] = ()

    def __init__(
        self,
        interpolate_type: str,
        init_value: Any,
        boundaries_and_scales: Mapping[int, Any] | None = None,
    ) -> None:
        split = pieces(boundaries_and_scales)
        set_and_check(self, interpolate_type=interpolate_type, init_value=init_value, **split)

    def __call__(self, count: Any) -> Any:
        values = [self.init_value]
        for factor in self.scales:
            values.append(values[-1] * factor)
        interpolate = INTERPOLATIONS[self.interpolate_type]
        t, bounds = as_float(count), (0, *self.boundaries)
        value = values[-1]
        for i in reversed(range(len(self.boundaries))):  # the earliest segment with t wins
            start, stop = bounds[i], bounds[i + 1]
            pct = jnp.clip((t - float(start)) / float(max(stop - start, 1)), 0.0, 1.0)
            segment = interpolate(values[i], values[i + 1], pct)
            value = jnp.where(reached(count, stop), value, segment)
        return value


def _check_schedules(name: str, value: Any) -> tuple[Any, ...]:
    """A tuple of schedules; plain functions (no pytree leaves) are wrapped as static."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise HyperParameterError(f"{name} must be a sequence of schedules, got {name}={value!r}")
    out = []
    for i, fn in enumerate(value):
        if not callable(fn):
            raise HyperParameterError(f"{name}[{i}] must be a schedule, got {name}[{i}]={fn!r}")
        opaque = jax.tree_util.treedef_is_leaf(jax.tree.structure(fn))
        out.append(FunctionSchedule(fn) if opaque and not isinstance(fn, Schedule) else fn)
    return tuple(out)


def _check_boundaries(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
        raise HyperParameterError(f"{name} must be a sequence of steps, got {name}={value!r}")
    return tuple(STEPS(f"{name}[{i}]", step) for i, step in enumerate(value))


class join_schedules(Schedule):
    r"""Run ``schedules`` one after another, switching at ``boundaries``.

    $$ v(t) = s_k(t - b_k) \quad \text{for } b_k \le t < b_{k+1},
       \qquad b_0 = 0,\ b_{n} = \infty $$

    Each schedule sees the count since its own start (a Python int stays one).

    Args:
        schedules: ``n`` schedules (funcopt's, optax's or plain functions).
        boundaries: ``n − 1`` non-decreasing steps ``≥ 0``.

    Example:
        >>> import funcopt
        >>> warm = funcopt.linear_schedule(0.0, 1.0, transition_steps=10)
        >>> decay = funcopt.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
        >>> sched = funcopt.join_schedules([warm, decay], [10])
        >>> print(f"{sched(5):.2f} {sched(20):.2f}")
        0.50 0.50
    """

    schedules: tuple[Any, ...] = dataclasses.field(
        metadata={"kind": Kind(_check_schedules, "schedules")}
    )
    boundaries: tuple[int, ...] = static(kind=Kind(_check_boundaries, "steps"))

    def check(self) -> None:
        schedules, boundaries = self.schedules, self.boundaries
        if len(boundaries) != len(schedules) - 1 or not schedules:
            raise HyperParameterError(
                f"join_schedules needs one boundary fewer than schedules, got "
                f"{len(schedules)} schedules and boundaries={boundaries!r}"
            )
        if any(b < a for a, b in itertools.pairwise(boundaries)):
            raise HyperParameterError(
                f"boundaries must be non-decreasing, got boundaries={boundaries!r}"
            )

    def __call__(self, count: Any) -> Any:
        value = self.schedules[0](count)
        for step, later in zip(self.boundaries, self.schedules[1:], strict=True):
            if not (host_int(count) or fits(count, step)):
                break  # an integer count of this dtype never reaches the step
            value = jnp.where(reached(count, step), later(_since(count, step)), value)
        return value


def _since(count: Any, step: int) -> Any:
    """``count − step``, Python ints kept, numpy ints in int64, floats never meeting an int."""
    if host_int(count):
        return int(count) - step if np.ndim(count) == 0 else np.asarray(count, np.int64) - step
    integer = jnp.issubdtype(jnp.asarray(count).dtype, jnp.integer)
    return count - (step if integer else float(step))


def _ratio(end_value: Any, peak_value: Any) -> Any:
    """``end / peak``, or 0 when ``peak`` is 0 (concrete or traced), as in optax."""
    peak = concrete_number(peak_value)
    if peak is not None:
        return 0.0 if peak == 0 else end_value / peak_value
    nonzero = peak_value != 0
    return jnp.where(nonzero, end_value / jnp.where(nonzero, peak_value, 1.0), 0.0)


def _warmup_then(count: Any, init: Any, peak: Any, steps: int, then: Schedule) -> Any:
    """A linear warm-up from ``init`` to ``peak`` over ``steps``, then ``then``."""
    warmup = linear_schedule.unchecked(
        init_value=init, end_value=peak, transition_steps=steps, transition_begin=0
    )
    return join_schedules.unchecked(schedules=(warmup, then), boundaries=(steps,))(count)


def warmup_constant_schedule(init_value: Any, peak_value: Any, warmup_steps: int) -> Schedule:
    r"""Linear warm-up from ``init_value`` to ``peak_value``, then constant.

    $$ v(t) = I + (P - I) \min(t / W, 1) $$

    This is ``linear_schedule(init_value, peak_value, warmup_steps)`` (and equal to it).

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
    peak_value = REAL("peak_value", peak_value)
    return linear_schedule(init_value, peak_value, STEPS("warmup_steps", warmup_steps))


class warmup_cosine_decay_schedule(Schedule):
    r"""Linear warm-up to ``peak_value``, then cosine decay to ``end_value``.

    $$ v(t) = \begin{cases} I (1 - t/W) + P\, t / W & t < W \\
       E + (P - E) \left(\tfrac12\left(1 + \cos \frac{\pi \min(t - W,\ D - W)}{D - W}
       \right)\right)^{p} & t \ge W \end{cases} $$

    Args:
        init_value: ``I``.
        peak_value: ``P``, reached at step ``W``.
        warmup_steps: ``W ≥ 0``.
        decay_steps: ``D > W``, the total length *including* the warm-up.
        end_value: ``E``.
        exponent: ``p``, as in :func:`~funcopt.cosine_decay_schedule`.

    Example:
        >>> import funcopt
        >>> sched = funcopt.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, end_value=0.1)
        >>> print(f"{sched(5):.2f} {sched(10):.2f} {sched(110):.2f}")
        0.50 1.00 0.10
    """

    init_value: Any = hyper(REAL)
    peak_value: Any = hyper(REAL)
    warmup_steps: int = static(kind=STEPS)
    decay_steps: int = static(kind=POSITIVE_STEPS)
    end_value: Any = hyper(REAL, 0.0)
    exponent: Any = hyper(REAL, 1.0)

    def check(self) -> None:
        if self.decay_steps <= self.warmup_steps:
            raise HyperParameterError(
                "decay_steps counts the warm-up too, so it must exceed warmup_steps, got "
                f"decay_steps={self.decay_steps!r}, warmup_steps={self.warmup_steps!r}"
            )

    def __call__(self, count: Any) -> Any:
        w, peak = self.warmup_steps, self.peak_value
        decay = cosine_decay_schedule.unchecked(
            init_value=peak,
            decay_steps=self.decay_steps - w,
            alpha=_ratio(self.end_value, peak),
            exponent=self.exponent,
        )
        return _warmup_then(count, self.init_value, peak, w, decay)


class warmup_exponential_decay_schedule(Schedule):
    r"""Linear warm-up to ``peak_value``, then :func:`~funcopt.exponential_decay` from it.

    $$ v(t) = \begin{cases} I (1 - t/W) + P\, t / W & t < W \\
       P\, r^{(t - W - B)/T} & t \ge W \end{cases} $$

    (held at ``P`` for ``B`` steps after the warm-up; staircase and ``end_value`` as
    in :func:`~funcopt.exponential_decay`, whose arguments the last five are).

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

    init_value: Any = hyper(REAL)
    peak_value: Any = hyper(REAL)
    warmup_steps: int = static(kind=STEPS)
    transition_steps: int = static(kind=STEPS)
    decay_rate: Any = hyper(NONNEGATIVE)
    transition_begin: int = static(0, STEPS)
    staircase: bool = static(False, BOOL)
    end_value: Any = hyper(OPTIONAL_REAL, None)

    def __call__(self, count: Any) -> Any:
        decay = exponential_decay.unchecked(
            init_value=self.peak_value,
            transition_steps=self.transition_steps,
            decay_rate=self.decay_rate,
            transition_begin=self.transition_begin,
            staircase=self.staircase,
            end_value=self.end_value,
        )
        return _warmup_then(count, self.init_value, self.peak_value, self.warmup_steps, decay)


def sgdr_schedule(cosine_kwargs: Iterable[dict[str, Any]]) -> Schedule:
    r"""SGD with warm restarts: warm-up cosine cycles run back to back.

    Cycle ``k`` is ``warmup_cosine_decay_schedule(**cosine_kwargs[k])`` and lasts its
    ``decay_steps``; it sees the count since its own start. The result is a
    :class:`~funcopt.join_schedules` of the cycles.

    Args:
        cosine_kwargs: one dict of :class:`warmup_cosine_decay_schedule` arguments per
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
    cycles = [warmup_cosine_decay_schedule(**kwargs) for kwargs in cosine_kwargs]  # validates
    if not cycles:
        raise HyperParameterError("sgdr_schedule needs at least one cycle, got cosine_kwargs=[]")
    starts = [0]
    for cycle in cycles:
        starts.append(starts[-1] + cycle.decay_steps)
    return join_schedules(tuple(cycles), tuple(starts[1:-1]))


# ---- one-cycle ------------------------------------------------------------------------


class cosine_onecycle_schedule(Schedule):
    r"""One-cycle policy with cosine phases (Smith & Topin, 2017).

    With ``T₁ = ⌊pct_start · T⌋``: a cosine rise from ``P / div_factor`` to ``P`` over
    ``[0, T₁)``, then a cosine fall to ``P / (div_factor · final_div_factor)`` over
    ``[T₁, T)``, then constant; i.e. :class:`~funcopt.piecewise_interpolate_schedule`
    ``("cosine", P / div_factor, {T₁: div_factor, T: 1 / (div_factor · final_div_factor)})``.

    Args:
        transition_steps: ``T > 0``.
        peak_value: ``P``.
        pct_start: fraction of ``T`` spent rising, in ``[0, 1]`` (structure: concrete).
        div_factor: ``> 0``; the first value is ``P / div_factor``.
        final_div_factor: ``> 0``; the last value is the first divided by it.

    Example:
        >>> import funcopt
        >>> sched = funcopt.cosine_onecycle_schedule(100, peak_value=1.0)
        >>> print(f"{sched(0):.2f} {sched(30):.2f} {sched(100):.1e}")
        0.04 1.00 4.0e-06
    """

    transition_steps: int = static(kind=POSITIVE_STEPS)
    peak_value: Any = hyper(REAL)
    pct_start: float = static(0.3, FRACTION)
    div_factor: Any = hyper(POSITIVE, 25.0)
    final_div_factor: Any = hyper(POSITIVE, 1e4)

    def __call__(self, count: Any) -> Any:
        steps, div = self.transition_steps, self.div_factor
        pieces = {
            int(self.pct_start * steps): div,
            int(steps): 1.0 / (div * self.final_div_factor),
        }
        return _onecycle(count, "cosine", self.peak_value / div, pieces)


class linear_onecycle_schedule(Schedule):
    r"""One-cycle policy with three linear phases (Smith, 2017).

    With ``T₁ = ⌊pct_start · T⌋``, ``T₂ = ⌊pct_final · T⌋`` and ``I = P / div_factor``:
    linear from ``I`` to ``P`` over ``[0, T₁)``, back to ``I`` over ``[T₁, T₂)``, to
    ``I / final_div_factor`` over ``[T₂, T)``, then constant. This is
    :class:`~funcopt.piecewise_interpolate_schedule` ``("linear", I, {T₁: div_factor,
    T₂: 1 / div_factor, T: 1 / final_div_factor})``.

    Args:
        transition_steps: ``T > 0``.
        peak_value: ``P``.
        pct_start: fraction of ``T`` spent rising, in ``[0, 1]`` (structure: concrete).
        pct_final: fraction of ``T`` at the end of the fall, in ``[pct_start, 1]``.
        div_factor: ``> 0``.
        final_div_factor: ``> 0``.

    Example:
        >>> import funcopt
        >>> sched = funcopt.linear_onecycle_schedule(100, peak_value=1.0)
        >>> print(f"{sched(0):.2f} {sched(30):.2f} {sched(85):.2f}")
        0.04 1.00 0.04
    """

    transition_steps: int = static(kind=POSITIVE_STEPS)
    peak_value: Any = hyper(REAL)
    pct_start: float = static(0.3, FRACTION)
    pct_final: float = static(0.85, FRACTION)
    div_factor: Any = hyper(POSITIVE, 25.0)
    final_div_factor: Any = hyper(POSITIVE, 1e4)

    def check(self) -> None:
        interval(self.pct_start, 1.0, high_inclusive=True)("pct_final", self.pct_final)

    def __call__(self, count: Any) -> Any:
        steps, div = self.transition_steps, self.div_factor
        pieces = {
            int(self.pct_start * steps): div,
            int(self.pct_final * steps): 1.0 / div,
            steps: 1.0 / self.final_div_factor,
        }
        return _onecycle(count, "linear", self.peak_value / div, pieces)


def _onecycle(count: Any, kind: str, init: Any, pieces: dict[int, Any]) -> Any:
    """Interpolate through ``pieces`` (a dict, so a repeated step keeps the last scale)."""
    steps = tuple(sorted(pieces))
    return piecewise_interpolate_schedule.unchecked(
        interpolate_type=kind,
        init_value=init,
        boundaries=steps,
        scales=tuple(pieces[s] for s in steps),
    )(count)
