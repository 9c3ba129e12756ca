"""Wrappers that act across steps: accumulate, skip, and keep slow weights.

Gradient accumulation (:class:`MultiSteps`, :func:`apply_every`), skipping steps whose
gradient is not finite (:func:`apply_if_finite`, :func:`skip_not_finite`), and slow
copies of the weights (:func:`lookahead`, :func:`incremental_update`,
:func:`periodic_update`). Inner transforms may be funcopt's or optax's; names,
signatures, defaults and numerics follow optax. Re-exported by :mod:`funcopt.wrappers`.
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
    cached_factory,
    check_nonnegative,
    check_range,
    new_count,
    safe_increment,
    tree_map,
    zeros_like,
)
from funcopt.primitives import coef, store, up

__all__ = [
    "ApplyEveryState",
    "ApplyIfFiniteState",
    "LookaheadParams",
    "LookaheadState",
    "MultiSteps",
    "MultiStepsState",
    "apply_every",
    "apply_if_finite",
    "incremental_update",
    "lookahead",
    "periodic_update",
    "skip_not_finite",
]


# ---- shared helpers --------------------------------------------------------------------


def _check_transform(where: str, tx: Any) -> None:
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(f"{where}: got {type(tx).__name__}, not a gradient transformation")


def _zero_output(tx: Any, updates: Updates, state: OptState, params: Params | None) -> Updates:
    """Zeros shaped like the updates ``tx.update`` would return (nothing is computed)."""
    shapes, _ = jax.eval_shape(tx.update, updates, state, params)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _num_not_finite(tree: Any) -> jax.Array:
    """How many entries of ``tree`` are NaN or ±Inf (an int32 scalar)."""
    counts = [jnp.sum(~jnp.isfinite(x), dtype=jnp.int32) for x in jax.tree.leaves(tree)]
    return sum(counts, jnp.zeros([], jnp.int32))


# ---- gradient accumulation -------------------------------------------------------------


class ApplyEveryState(NamedTuple):
    """State of :func:`apply_every`: position in the cycle and the running sum."""

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    grad_acc: Updates


@cached_factory
def apply_every(k: int = 1) -> GradientTransformation:
    r"""Sum updates over ``k`` steps; emit the sum every ``k``-th step and zeros otherwise.

    $$ a_t = g_t + [t \bmod k \ne 1]\, a_{t-1}, \qquad
       u_t = [t \bmod k = 0]\, a_t \quad (t = 1, 2, \dots) $$

    Transforms before it in a chain still update their state every step, so this is
    not a larger batch: use :class:`MultiSteps` for that.

    Args:
        k: period ≥ 1; 1 passes every update through.

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
    check_range("k", k, 1)

    def init(params: Params) -> ApplyEveryState:
        return ApplyEveryState(count=new_count(), grad_acc=zeros_like(params))

    def update(
        updates: Updates, state: ApplyEveryState, params: Params | None = None
    ) -> tuple[Updates, ApplyEveryState]:
        del params
        c = state.count % k
        acc = tree_map(
            lambda g, a: store(up(g) + jnp.where(c != 0, up(a), 0), a.dtype),
            updates,
            state.grad_acc,
            names=("updates", "state.grad_acc"),
        )
        out = jax.tree.map(lambda a, g: jnp.where(c == k - 1, a, 0).astype(g.dtype), acc, updates)
        return out, ApplyEveryState(count=safe_increment(state.count) % k, grad_acc=acc)

    return GradientTransformation(init, update)


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps`.

    Attributes:
        mini_step: micro-batches accumulated since the last emitted update.
        gradient_step: updates emitted so far (the inner transform's step).
        inner_opt_state: the inner transform's state.
        acc_grads: the running mean (or sum) of the current micro-batches' gradients.
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
    n = _num_not_finite(updates)
    return n > 0, {"should_skip": n > 0, "num_not_finite": n}


def _no_skip(updates: Updates, gradient_step: jax.Array, params: Params | None) -> Any:
    del updates, gradient_step, params
    return jnp.asarray(False), ()


class MultiSteps:
    r"""Gradient accumulation: one inner update per ``k`` micro-batches.

    Each call adds the gradient to a running mean (Welford's
    $\bar g_n = \bar g_{n-1} + (g_n - \bar g_{n-1}) / n$, or a sum) and returns
    zeros; the ``k``-th call passes the mean to the inner transform, returns its
    update and resets the mean. With equal micro-batches this is the step of one big
    batch. The inner update is only computed on the ``k``-th call.

    Args:
        opt: the inner transform.
        every_k_schedule: ``k`` ≥ 1, or a function of the number of emitted updates
            (``gradient_step``) returning it.
        use_grad_mean: average (True) or sum the micro-batches' gradients.
        should_skip_update_fn: ``f(updates, gradient_step, params) -> (skip, info)``;
            a skipped micro-batch leaves the state as it was (``info`` is kept in
            ``skip_state``), e.g. :func:`skip_not_finite`.
        accumulator_dtype: dtype of the running mean.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> opt = funcopt.MultiSteps(funcopt.sgd(1.0), every_k_schedule=2)
        >>> state = opt.init(jnp.zeros(1))
        >>> u, state = opt.update(jnp.array([1.0]), state)
        >>> u, state = opt.update(jnp.array([3.0]), state)
        >>> u, opt.has_updated(state)
        (Array([-2.], dtype=float32), Array(True, dtype=bool))
    """

    def __init__(
        self,
        opt: Any,
        every_k_schedule: int | Callable[[jax.Array], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: Callable[..., Any] | None = None,
        accumulator_dtype: Any = jnp.float32,
    ) -> None:
        _check_transform("MultiSteps", opt)
        if not callable(every_k_schedule):
            check_range("every_k_schedule", every_k_schedule, 1)
        self._opt = opt
        self._every_k = every_k_schedule
        self._use_grad_mean = use_grad_mean
        self._should_skip = should_skip_update_fn or _no_skip
        self._accumulator_dtype = accumulator_dtype

    @property
    def inner_opt(self) -> Any:
        return self._opt

    def _accumulate(self, g: jax.Array, acc: jax.Array, n: jax.Array) -> jax.Array:
        a = up(acc)
        g = g.astype(a.dtype)
        new = a + (g - a) / (n + 1).astype(a.dtype) if self._use_grad_mean else a + g
        return store(new, acc.dtype)

    def init(self, params: Params) -> MultiStepsState:
        step = new_count()
        _, skip_state = self._should_skip(zeros_like(params), step, params)
        return MultiStepsState(
            mini_step=new_count(),
            gradient_step=step,
            inner_opt_state=self._opt.init(params),
            acc_grads=zeros_like(params, self._accumulator_dtype),
            skip_state=skip_state,
        )

    def update(
        self, updates: Updates, state: MultiStepsState, params: Params | None = None
    ) -> tuple[Updates, MultiStepsState]:
        k = self._every_k(state.gradient_step) if callable(self._every_k) else self._every_k
        skip, skip_state = self._should_skip(updates, state.gradient_step, params)
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
        mean = jax.tree.map(lambda a, g: a.astype(g.dtype), mean, updates)
        zeros = _zero_output(self._opt, mean, state.inner_opt_state, params)
        emit = state.mini_step == k - 1

        def step(_: None) -> tuple[Updates, OptState]:
            return self._opt.update(mean, state.inner_opt_state, params)

        def hold(_: None) -> tuple[Updates, OptState]:
            return zeros, state.inner_opt_state

        out, inner_state = jax.lax.cond(emit & ~skip, step, hold, None)
        accumulated = MultiStepsState(
            mini_step=safe_increment(state.mini_step) % k,
            gradient_step=jnp.where(emit, safe_increment(state.gradient_step), state.gradient_step),
            inner_opt_state=inner_state,
            acc_grads=jax.tree.map(
                lambda a: jnp.where(emit, 0, a).astype(self._accumulator_dtype), mean
            ),
            skip_state=skip_state,
        )
        new_state = jax.tree.map(
            lambda old, new: jnp.where(skip, old, new),
            state._replace(skip_state=skip_state),
            accumulated,
        )
        return out, new_state

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """True right after a call that emitted an inner update."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformation:
        """This accumulator as an ``(init, update)`` pair."""
        return GradientTransformation(self.init, self.update)


# ---- non-finite gradients ----------------------------------------------------------------


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`.

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


@cached_factory
def apply_if_finite(inner: Any, max_consecutive_errors: int) -> GradientTransformation:
    """Skip a step whose gradient holds a NaN or an Inf: zero update, state untouched.

    Without it, a single non-finite gradient poisons a stateful optimizer for good:
    Adam's ``m ← β₁ m + (1 − β₁) g`` and ``v ← β₂ v + (1 − β₂) g²`` become NaN, and
    since ``β · NaN = NaN`` every later update is NaN too, whatever the gradients.
    With it, the inner transform never sees that gradient. After more than
    ``max_consecutive_errors`` non-finite steps in a row it gives up and applies the
    step (so a persistent problem is not hidden forever).

    Args:
        inner: the transform to protect.
        max_consecutive_errors: how many non-finite steps in a row to skip (≥ 0).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.apply_if_finite(funcopt.adam(0.1), max_consecutive_errors=3)
        >>> u, state = tx.update(jnp.array([jnp.nan]), tx.init(jnp.zeros(1)))
        >>> u, state.total_notfinite
        (Array([0.], dtype=float32), Array(1, dtype=int32))
    """
    _check_transform("apply_if_finite", inner)
    check_nonnegative("max_consecutive_errors", max_consecutive_errors)

    def init(params: Params) -> ApplyIfFiniteState:
        return ApplyIfFiniteState(
            notfinite_count=new_count(),
            last_finite=jnp.asarray(True),
            total_notfinite=new_count(),
            inner_state=inner.init(params),
        )

    def update(
        updates: Updates, state: ApplyIfFiniteState, params: Params | None = None
    ) -> tuple[Updates, ApplyIfFiniteState]:
        finite = _num_not_finite(updates) == 0
        in_a_row = jnp.where(finite, 0, safe_increment(state.notfinite_count))
        zeros = _zero_output(inner, updates, state.inner_state, params)
        out, inner_state = jax.lax.cond(
            finite | (in_a_row > max_consecutive_errors),
            lambda: inner.update(updates, state.inner_state, params),
            lambda: (zeros, state.inner_state),
        )
        total = jnp.where(finite, state.total_notfinite, safe_increment(state.total_notfinite))
        return out, ApplyIfFiniteState(in_a_row, finite, total, inner_state)

    return GradientTransformation(init, update)


# ---- slow weights ------------------------------------------------------------------------


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`: the fast optimizer's state and steps since the last sync."""

    fast_state: OptState
    steps_since_sync: jax.Array


class LookaheadParams(NamedTuple):
    """The fast weights (take gradients here) and the slow weights (evaluate these)."""

    fast: Params
    slow: Params

    @classmethod
    def init_synced(cls, params: Params) -> LookaheadParams:
        """Fast and slow weights both equal to ``params``."""
        return cls(fast=params, slow=params)


@cached_factory
def lookahead(
    fast_optimizer: Any,
    sync_period: int,
    slow_step_size: float,
    reset_state: bool = False,
) -> GradientTransformation:
    r"""Lookahead (Zhang et al., 2019): ``k`` fast steps forward, then one step back.

    The fast weights take ``fast_optimizer``'s steps; every ``sync_period``-th step the
    slow weights move toward them and the fast weights restart from there:

    $$ \phi \leftarrow \phi + \alpha\,(\theta - \phi), \qquad \theta \leftarrow \phi $$

    Params are :class:`LookaheadParams`; the gradient is taken at ``params.fast``, and
    the returned updates (a ``LookaheadParams``) must be applied unchanged.

    Args:
        fast_optimizer: the inner transform.
        sync_period: ``k`` ≥ 1.
        slow_step_size: α in ``[0, 1]``.
        reset_state: re-initialise the fast optimizer's state at each sync.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.lookahead(funcopt.sgd(1.0), sync_period=2, slow_step_size=0.5)
        >>> params = funcopt.LookaheadParams.init_synced(jnp.zeros(1))
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     u, state = tx.update(jnp.array([-1.0]), state, params)
        ...     params = funcopt.apply_updates(params, u)
        >>> params.slow
        Array([1.], dtype=float32)
    """
    _check_transform("lookahead", fast_optimizer)
    check_range("sync_period", sync_period, 1)
    check_range("slow_step_size", slow_step_size, 0.0, 1.0, high_inclusive=True)

    def init(params: Params) -> LookaheadState:
        fast = getattr(params, "fast", params)  # plain params are taken as the fast ones
        return LookaheadState(fast_state=fast_optimizer.init(fast), steps_since_sync=new_count())

    def update(
        updates: Updates, state: LookaheadState, params: Params | None = None
    ) -> tuple[LookaheadParams, LookaheadState]:
        if params is None or not (hasattr(params, "fast") and hasattr(params, "slow")):
            raise ValueError("lookahead needs update(grads, state, params: LookaheadParams)")
        step, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast)
        sync = state.steps_since_sync == sync_period - 1
        # θ + step − φ: how far the fast weights would be ahead of the slow ones.
        ahead = tree_map(
            lambda u, f, s: up(f) + up(u) - up(s),
            step,
            params.fast,
            params.slow,
            names=("updates", "params.fast", "params.slow"),
        )
        slow = jax.tree.map(
            lambda d, s: jnp.where(sync, coef(slow_step_size, d) * d, 0).astype(s.dtype),
            ahead,
            params.slow,
        )
        fast = jax.tree.map(
            lambda d, u: jnp.where(sync, up(u) - coef(1 - slow_step_size, d) * d, up(u)).astype(
                u.dtype
            ),
            ahead,
            step,
        )
        if reset_state:
            fresh = fast_optimizer.init(params.fast)
            fast_state = jax.tree.map(lambda s, s0: jnp.where(sync, s0, s), fast_state, fresh)
        count = safe_increment(state.steps_since_sync) % sync_period
        return LookaheadParams(fast=fast, slow=slow), LookaheadState(fast_state, count)

    return GradientTransformation(init, update)


def incremental_update(new_tensors: Params, old_tensors: Params, step_size: Any) -> Params:
    r"""Polyak averaging of parameters (target networks): $\bar\theta \leftarrow
    s\,\theta + (1 - s)\,\bar\theta$.

    Args:
        new_tensors: the latest parameters θ.
        old_tensors: the running average θ̄ (the result keeps its dtypes).
        step_size: s in ``[0, 1]``; 1 copies θ, 0 keeps θ̄.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> target = jnp.array([0.0, 4.0])
        >>> funcopt.incremental_update(jnp.array([1.0, 0.0]), target, step_size=0.25)
        Array([0.25, 3.  ], dtype=float32)
    """
    check_range("step_size", step_size, 0.0, 1.0, high_inclusive=True)

    def leaf(new: jax.Array, old: jax.Array) -> jax.Array:
        x = up(jnp.asarray(new))
        return store(coef(step_size, x) * x + coef(1 - step_size, x) * up(old), old.dtype)

    return tree_map(leaf, new_tensors, old_tensors, names=("new_tensors", "old_tensors"))


def periodic_update(
    new_tensors: Params, old_tensors: Params, steps: Any, update_period: Any
) -> Params:
    """``new_tensors`` when ``steps`` is a multiple of ``update_period``, else ``old_tensors``.

    The hard target-network update of DQN; works under ``jit`` with a traced ``steps``.

    Args:
        new_tensors: the latest parameters.
        old_tensors: the target parameters, with the same structure, shapes and dtypes.
        steps: the current step (an integer, possibly traced); 0 is a multiple of any
            period.
        update_period: how many steps apart the copies happen, ``≥ 1`` (a concrete value
            out of range raises :class:`HyperParameterError`).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> new, old = jnp.array([1.0]), jnp.array([0.0])
        >>> funcopt.periodic_update(new, old, steps=4, update_period=2)
        Array([1.], dtype=float32)
        >>> funcopt.periodic_update(new, old, steps=5, update_period=2)
        Array([0.], dtype=float32)
    """
    check_range("update_period", update_period, 1)
    return jax.lax.cond(
        jnp.mod(steps, update_period) == 0, lambda: new_tensors, lambda: old_tensors
    )
