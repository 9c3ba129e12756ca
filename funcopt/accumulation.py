"""Wrappers that act across steps: accumulate micro-batches, skip non-finite steps.

Gradient accumulation (:class:`MultiSteps`, :class:`apply_every`) and skipping steps whose
gradient is not finite (:class:`apply_if_finite`, :func:`skip_not_finite`). A wrapper that
runs its inner transform only on some steps calls the inner's public ``init``/``update``,
so the inner keeps its own step count (it counts the steps it took, as in optax). Inner
transforms may be funcopt's or optax's; names, signatures, defaults and numerics follow
optax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import (
    GradientTransformation,
    OptState,
    Params,
    Updates,
    as_transform,
    expect_state,
    new_count,
    safe_increment,
)
from funcopt.lifting import compute_dtype, moment_like, up
from funcopt.trees import tree_map
from funcopt.validation import BOOL, DTYPE, integer
from funcopt.values import static

__all__ = [
    "ApplyEveryState",
    "ApplyIfFiniteState",
    "MultiSteps",
    "MultiStepsState",
    "apply_every",
    "apply_if_finite",
    "skip_not_finite",
]


# ---- shared helpers --------------------------------------------------------------------


def zero_output(
    tx: GradientTransformation,
    updates: Updates,
    state: OptState,
    params: Params | None,
    extra: dict[str, Any],
) -> Updates:
    """Zeros shaped like the updates ``tx.update`` would return (nothing is computed)."""
    shapes, _ = jax.eval_shape(lambda: tx.update(updates, state, params, **extra))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def num_not_finite(tree: Any) -> jax.Array:
    """How many entries of ``tree`` are NaN or ±Inf (an int32 scalar)."""
    counts = [jnp.sum(~jnp.isfinite(x), dtype=jnp.int32) for x in jax.tree.leaves(tree)]
    return sum(counts, jnp.zeros([], jnp.int32))


# ---- gradient accumulation -------------------------------------------------------------


class ApplyEveryState(NamedTuple):
    """State of :class:`apply_every`: position in the cycle and the running sum."""

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    grad_acc: Updates


class apply_every(GradientTransformation):
    r"""Sum updates over ``k`` steps; emit the sum every ``k``-th step and zeros otherwise.

    $$ a_t = g_t + [t \bmod k \ne 1]\, a_{t-1}, \qquad
       u_t = [t \bmod k = 0]\, a_t \quad (t = 1, 2, \dots) $$

    Transforms before it in a chain still update their state every step, so this is
    not a larger batch: use :class:`MultiSteps` for that.

    Args:
        k: the period, an integer ≥ 1; 1 passes every update through.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.apply_every(2)
        >>> state = tx.init(jnp.zeros(1))
        >>> for g in [1.0, 3.0, 5.0]:
        ...     u, state = tx.update(jnp.array([g]), state)
        ...     print(u)
        [0.]
        [4.]
        [0.]
    """

    State = ApplyEveryState

    k: int = static(1, integer(1))

    elementwise = True

    def init_state(self, params: Params) -> OptState:
        return ApplyEveryState(count=new_count(), grad_acc=jax.tree.map(moment_like, params))

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        k = self.k
        c = state.count % k
        acc = tree_map(
            lambda g, a: (up(g) + jnp.where(c != 0, up(a), 0)).astype(a.dtype),
            updates,
            state.grad_acc,
            names=("updates", "state.grad_acc"),
        )
        out = jax.tree.map(lambda a, g: jnp.where(c == k - 1, a, 0).astype(g.dtype), acc, updates)
        return out, ApplyEveryState(count=safe_increment(state.count) % k, grad_acc=acc)


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps`.

    Attributes:
        mini_step: micro-batches accumulated since the last emitted update.
        gradient_step: updates emitted so far (the inner transform's step).
        inner_opt_state: the inner transform's state.
        acc_grads: the running mean (or sum) of the current micro-batches' gradients, in
            ``accumulator_dtype``.
        skip_state: what ``should_skip_update_fn`` last returned as its second value.
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: OptState
    acc_grads: Updates
    skip_state: Any = ()


def skip_not_finite(
    updates: Updates, gradient_step: jax.Array, params: Params | None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A ``should_skip_update_fn`` for :class:`MultiSteps`: skip a NaN or Inf micro-batch.

    Returns ``(should_skip, {"should_skip": …, "num_not_finite": …})``.

    Args:
        updates: the micro-batch's gradients, a pytree of arrays.
        gradient_step: the number of inner updates emitted so far (unused).
        params: the current parameters, or ``None`` (unused).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> grads = {"w": jnp.array([1.0, jnp.nan, jnp.inf])}
        >>> skip, info = funcopt.skip_not_finite(grads, jnp.array(0), None)
        >>> skip, info["num_not_finite"]
        (Array(True, dtype=bool), Array(2, dtype=int32))
    """
    del gradient_step, params
    n = num_not_finite(updates)
    return n > 0, {"should_skip": n > 0, "num_not_finite": n}


def _no_skip(updates: Updates, gradient_step: jax.Array, params: Params | None) -> Any:
    del updates, gradient_step, params
    return jnp.asarray(False), ()


class MultiSteps(GradientTransformation):
    r"""Gradient accumulation: one inner update per ``k`` micro-batches.

    Each call adds the gradient to a running mean (Welford's
    $\bar g_n = \bar g_{n-1} + (g_n - \bar g_{n-1}) / n$, or a sum) and returns
    zeros; the ``k``-th call passes the mean (cast to the gradients' dtype) to the inner
    transform, returns its update and resets the mean. With equal micro-batches this is
    the step of one big batch. The inner update is only computed on the ``k``-th call,
    and the inner transform keeps its own state (``state.inner_opt_state``).

    ``MultiSteps(...)`` is itself a transform (``init``/``update``);
    :meth:`gradient_transformation` returns it, as optax's does an ``(init, update)`` pair.

    Args:
        opt: the inner transform (funcopt's or optax's).
        every_k_schedule: ``k``, an integer ≥ 1, or a function of the number of emitted
            updates (``gradient_step``) returning it.
        use_grad_mean: average (True) or sum the micro-batches' gradients.
        should_skip_update_fn: ``f(updates, gradient_step, params) -> (skip, info)``;
            a skipped micro-batch leaves the state as it was (``info`` is kept in
            ``skip_state``), e.g. :func:`skip_not_finite`.
        accumulator_dtype: dtype the running mean is stored and computed in (computed in
            the gradient's dtype where that is wider; complex gradients keep a complex
            accumulator); ``None``: the parameters' dtypes.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> opt = funcopt.MultiSteps(funcopt.scale(-1.0), every_k_schedule=2)
        >>> state = opt.init(jnp.zeros(1))
        >>> u, state = opt.update(jnp.array([1.0]), state)
        >>> u, state = opt.update(jnp.array([3.0]), state)  # −(1 + 3) / 2
        >>> u, opt.has_updated(state)
        (Array([-2.], dtype=float32), Array(True, dtype=bool))
    """

    State = MultiStepsState

    opt: GradientTransformation
    every_k_schedule: int | Callable[[jax.Array], Any] = static(kind=integer(1, schedule=True))
    use_grad_mean: bool = static(True, BOOL)
    should_skip_update_fn: Callable[..., Any] | None = static(None)
    accumulator_dtype: Any = static(jnp.dtype(jnp.float32), DTYPE)

    def __init__(
        self,
        opt: Any,
        every_k_schedule: int | Callable[[jax.Array], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: Callable[..., Any] | None = None,
        accumulator_dtype: Any = jnp.float32,
    ) -> None:
        object.__setattr__(self, "opt", as_transform(opt, "MultiSteps: opt"))
        object.__setattr__(self, "every_k_schedule", every_k_schedule)
        object.__setattr__(self, "use_grad_mean", use_grad_mean)
        object.__setattr__(self, "should_skip_update_fn", should_skip_update_fn)
        object.__setattr__(self, "accumulator_dtype", accumulator_dtype)
        self.__post_init__()

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return self.opt.elementwise and self.should_skip_update_fn is None

    @property
    def inner_opt(self) -> GradientTransformation:
        """The inner transform."""
        return self.opt

    def _skip(self, updates: Updates, step: jax.Array, params: Params | None) -> Any:
        return (self.should_skip_update_fn or _no_skip)(updates, step, params)

    def _acc_dtype(self, p: Any) -> Any:
        """The accumulator's dtype for a leaf of dtype ``p``."""
        dtype = jnp.result_type(p)
        if self.accumulator_dtype is None:
            return dtype
        if jnp.issubdtype(dtype, jnp.complexfloating):
            return jnp.promote_types(self.accumulator_dtype, dtype)
        return self.accumulator_dtype

    def _accumulate(self, g: Any, acc: jax.Array, n: jax.Array) -> jax.Array:
        g = jnp.asarray(g)
        wide = jnp.promote_types(acc.dtype, compute_dtype(g.dtype))
        a, x = acc.astype(wide), g.astype(wide)
        return a + (x - a) / (n + 1).astype(wide) if self.use_grad_mean else a + x

    def init_state(self, params: Params) -> OptState:
        step = new_count()
        _, skip_state = self._skip(jax.tree.map(moment_like, params), step, params)
        return MultiStepsState(
            mini_step=new_count(),
            gradient_step=step,
            inner_opt_state=self.opt.init(params),
            acc_grads=jax.tree.map(lambda p: moment_like(p, self._acc_dtype(p)), params),
            skip_state=skip_state,
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        every = self.every_k_schedule
        k = every(state.gradient_step) if callable(every) else every
        skip, skip_state = self._skip(updates, state.gradient_step, params)
        skip = jnp.asarray(skip)
        if (skip.dtype, skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                "MultiSteps: should_skip_update_fn must return a bool scalar first, got "
                f"dtype {skip.dtype} and shape {skip.shape}"
            )
        mean = tree_map(
            lambda g, a: self._accumulate(g, a, state.mini_step),
            updates,
            state.acc_grads,
            names=("updates", "state.acc_grads"),
        )
        # The inner transform sees the mean in the gradients' dtypes (as optax).
        given = jax.tree.map(lambda m, g: m.astype(jnp.result_type(g)), mean, updates)
        emit = state.mini_step == k - 1
        inner = self.opt

        def step() -> tuple[Updates, OptState]:
            return inner.update(given, state.inner_opt_state, params, **extra)

        def hold() -> tuple[Updates, OptState]:
            zeros = zero_output(inner, given, state.inner_opt_state, params, extra)
            return zeros, state.inner_opt_state

        out, inner_state = jax.lax.cond(emit & ~skip, step, hold)
        acc = jax.tree.map(
            lambda m, a: jnp.where(skip, a, jnp.where(emit, 0, m).astype(a.dtype)),
            mean,
            state.acc_grads,
        )
        return out, MultiStepsState(
            mini_step=jnp.where(skip, state.mini_step, safe_increment(state.mini_step) % k),
            gradient_step=jnp.where(
                emit & ~skip, safe_increment(state.gradient_step), state.gradient_step
            ),
            inner_opt_state=inner_state,
            acc_grads=acc,
            skip_state=skip_state,
        )

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """True right after a call that emitted an inner update.

        Args:
            state: a :class:`MultiStepsState`.
        """
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformation:
        """This accumulator as a transform: itself (it already is one, and a value)."""
        return self


# ---- non-finite gradients ----------------------------------------------------------------


class ApplyIfFiniteState(NamedTuple):
    """State of :class:`apply_if_finite`.

    Attributes:
        notfinite_count: consecutive non-finite updates so far (0 after a finite one).
        last_finite: whether the last update was finite.
        total_notfinite: non-finite updates since ``init`` (never reset).
        inner_state: the inner transform's state.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: OptState


class apply_if_finite(GradientTransformation):
    r"""Skip a step whose gradient holds a NaN or an Inf: zero update, state untouched.

    $$ u_t, s_t = \begin{cases} T(g_t, s_{t-1}) & g_t \text{ finite, or } n_t > N \\
       (0,\ s_{t-1}) & \text{otherwise} \end{cases} $$

    with $n_t$ the number of non-finite gradients in a row up to $t$ and $N$ =
    ``max_consecutive_errors``. Without it, a single non-finite gradient poisons a
    stateful optimizer for good: Adam's ``m ← β₁ m + (1 − β₁) g`` and
    ``v ← β₂ v + (1 − β₂) g²`` become NaN, and since ``β · NaN = NaN`` every later update
    is NaN too, whatever the gradients. With it, the inner transform never sees that
    gradient. After more than ``max_consecutive_errors`` non-finite steps in a row it
    gives up and applies the step (so a persistent problem is not hidden forever).

    Args:
        inner: the transform to protect (funcopt's or optax's).
        max_consecutive_errors: how many non-finite steps in a row to skip, an integer ≥ 0.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.apply_if_finite(funcopt.scale_by_adam(), max_consecutive_errors=3)
        >>> u, state = tx.update(jnp.array([jnp.nan]), tx.init(jnp.zeros(1)))
        >>> u, state.total_notfinite
        (Array([0.], dtype=float32), Array(1, dtype=int32))
    """

    State = ApplyIfFiniteState

    inner: GradientTransformation
    max_consecutive_errors: int = static(kind=integer(0))

    def check(self) -> None:
        object.__setattr__(self, "inner", as_transform(self.inner, "apply_if_finite: inner"))

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return self.inner.elementwise

    def init_state(self, params: Params) -> OptState:
        return ApplyIfFiniteState(
            notfinite_count=new_count(),
            last_finite=jnp.asarray(True),
            total_notfinite=new_count(),
            inner_state=self.inner.init(params),
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        inner = self.inner
        finite = num_not_finite(updates) == 0
        in_a_row = jnp.where(finite, 0, safe_increment(state.notfinite_count))

        def step() -> tuple[Updates, OptState]:
            return inner.update(updates, state.inner_state, params, **extra)

        def hold() -> tuple[Updates, OptState]:
            return zero_output(inner, updates, state.inner_state, params, extra), state.inner_state

        out, inner_state = jax.lax.cond(
            finite | (in_a_row > self.max_consecutive_errors), step, hold
        )
        total = jnp.where(finite, state.total_notfinite, safe_increment(state.total_notfinite))
        return out, ApplyIfFiniteState(in_a_row, finite, total, inner_state)
