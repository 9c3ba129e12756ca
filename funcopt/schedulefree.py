"""Schedule-free optimization: averaging of the iterates instead of a decaying schedule.

:class:`schedule_free` wraps any base optimizer (Defazio et al., 2024): the base steps a
sequence ``z``, the model is evaluated at a running average ``x`` of ``z``, and the
gradient is taken at an interpolation ``y`` of the two, which is what the wrapper's
updates move the parameters to. :func:`schedule_free_adamw` and
:func:`schedule_free_sgd` are the two common instances, equal to ``optax.contrib``'s;
:func:`schedule_free_eval_params` recovers ``x`` for evaluation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import (
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Updates,
    as_transform,
    expect_state,
    safe_increment,
)
from funcopt.combine import chain
from funcopt.lifting import coef, real_dtype, require_params, up
from funcopt.preconditioners import scale_by_rms
from funcopt.scaling import add_decayed_weights, scale_by_learning_rate
from funcopt.schedules_composite import warmup_constant_schedule
from funcopt.trees import check_float_leaves, tree_map
from funcopt.validation import (
    DECAY,
    DTYPE,
    NONNEGATIVE,
    RATE,
    hyperparameters,
    integer,
    interval,
)
from funcopt.values import hyper, static

__all__ = [
    "ScheduleFreeState",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
]

# x is recovered from y and z by dividing by β: β = 0 would give 0 / 0.
INTERPOLATION = interval(0.0, 1.0, low_inclusive=False)


class ScheduleFreeState(NamedTuple):
    """State of :class:`schedule_free` (optax's field names).

    Attributes:
        b1: the interpolation β (kept so evaluation parameters can be recovered).
        weight_sum: Σ of the averaging weights so far.
        step_count: the count the learning-rate schedule is read at (1 at the first
            update, as in optax).
        max_lr: the largest learning rate so far.
        base_optimizer_state: the wrapped optimizer's state.
        z: the base optimizer's iterate.
    """

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: OptState
    z: Params


def _scalar_dtype(params: Params) -> Any:
    """The dtype of the scalar statistics: the params' lowest precision, at least float32.

    (optax keeps them in the lowest dtype itself; in bfloat16 the sum of weights would
    stop growing after a few hundred steps.)
    """
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    lowest = min(dtypes, key=lambda d: d.itemsize) if dtypes else jnp.float32
    return real_dtype(lowest)


class schedule_free(GradientTransformation):
    r"""Schedule-free wrapper (Defazio et al., 2024): averaging replaces the LR schedule.

    The base optimizer steps ``z``; the model is evaluated at the average ``x`` and the
    gradient is taken at the interpolation ``y`` (the parameters this wrapper updates):

    $$ z_{t+1} = z_t + \Delta(g(y_t)),\quad
       c_{t+1} = \frac{\gamma_{max}^p}{\sum_{k \le t+1} \gamma_{max,k}^p},\quad
       x_{t+1} = (1-c_{t+1}) x_t + c_{t+1} z_{t+1},\quad
       y_{t+1} = \beta x_{t+1} + (1-\beta) z_{t+1} $$

    where ``γ_max`` is the largest learning rate so far (a schedule is read at the step
    count from 1, as in optax). ``x`` is recomputed from ``y`` and ``z``; get it with
    :func:`schedule_free_eval_params`. The base optimizer should have no momentum (the
    interpolation is the momentum); it runs every step and keeps its own state, counts
    included.

    Args:
        base_optimizer: the transform that steps ``z`` (with its own learning rate),
            funcopt's or optax's.
        learning_rate: the rate γ ≥ 0 (a number or a schedule) whose running maximum
            weights the average.
        b1: β in ``(0, 1)``, the interpolation between ``x`` and ``z``.
        weight_lr_power: ``p`` ≥ 0.
        state_dtype: dtype of ``z`` (default: the parameters').

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.schedule_free(funcopt.sgd(0.5), 0.5, b1=0.5)
        >>> y = jnp.array([1.0])
        >>> state = tx.init(y)
        >>> for _ in range(2):  # z: 1 → 0 → −1; x averages z_1, z_2; y = (x + z) / 2
        ...     u, state = tx.update(jnp.array([2.0]), state, y)
        ...     y = funcopt.apply_updates(y, u)
        >>> y, state.z, funcopt.schedule_free_eval_params(state, y)
        (Array([-0.75], dtype=float32), Array([-1.], dtype=float32), Array([-0.5], dtype=float32))

    Reference: Defazio et al., The Road Less Scheduled, 2024.
    """

    State = ScheduleFreeState

    base_optimizer: GradientTransformation
    learning_rate: ScalarOrSchedule = hyper(RATE)
    b1: float = hyper(INTERPOLATION, 0.9)
    weight_lr_power: float = hyper(NONNEGATIVE, 2.0)
    state_dtype: Any = static(None, DTYPE)

    def check(self) -> None:
        tx = as_transform(self.base_optimizer, "schedule_free: base_optimizer")
        object.__setattr__(self, "base_optimizer", tx)

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return self.base_optimizer.elementwise

    def init_state(self, params: Params) -> OptState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)

        def fresh_copy(p: Any) -> jax.Array:  # never the params' own buffer
            return jnp.array(p, dtype=self.state_dtype or jnp.result_type(p), copy=True)

        return ScheduleFreeState(
            b1=jnp.asarray(self.b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=self.base_optimizer.init(params),
            z=jax.tree.map(fresh_copy, params),
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        params = require_params(self, params)
        expect_state(self, state, self.State)
        dtype = state.max_lr.dtype
        lr = self.learning_rate
        lr = lr(state.step_count) if callable(lr) else lr
        max_lr = jnp.maximum(state.max_lr, jnp.asarray(lr).astype(dtype))
        weight = max_lr**self.weight_lr_power
        total = state.weight_sum + weight
        c = jnp.where(
            jnp.isnan(weight) | jnp.isnan(total),
            jnp.full(weight.shape, jnp.nan, dtype),
            jnp.nan_to_num(weight / total, nan=0.0, posinf=jnp.inf),
        )
        step, base_state = self.base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra
        )

        def new_z(z: jax.Array, u: jax.Array) -> jax.Array:
            return (up(z) + up(u)).astype(z.dtype)

        z = tree_map(new_z, state.z, step, names=("state.z", "base optimizer's updates"))

        def leaf(y: jax.Array, z_old: jax.Array, z: jax.Array) -> jax.Array:
            y32, z_old32, z32 = up(y), up(z_old), up(z)
            b1, ck = coef(self.b1, y32), c.astype(real_dtype(y32.dtype))
            x = (y32 - (1.0 - b1) * z_old32) / b1  # recover x from y and z
            x = (1.0 - ck) * x + ck * z32  # average in the new z
            return (b1 * x + (1.0 - b1) * z32 - y32).astype(jnp.result_type(y))  # new y − y

        out = tree_map(leaf, params, state.z, z, names=("params", "state.z", "state.z"))
        new_state = ScheduleFreeState(
            b1=state.b1,
            weight_sum=total,
            step_count=safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )
        return out, new_state


def schedule_free_eval_params(state: OptState, params: Params) -> Params:
    r"""The averaged parameters ``x = (y − (1 − β) z) / β`` to evaluate a schedule-free model.

    Args:
        state: a :class:`ScheduleFreeState`, or any state containing exactly one (e.g.
            the state of a chain).
        params: the current (interpolated) parameters ``y``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.chain(funcopt.clip(1.0), funcopt.schedule_free_sgd(0.1, b1=0.5))
        >>> y = jnp.array([1.0, -2.0])
        >>> state = tx.init(y)
        >>> for _ in range(2):
        ...     u, state = tx.update(jnp.array([4.0, -4.0]), state, y)  # clipped to ±1
        ...     y = funcopt.apply_updates(y, u)
        >>> [round(v, 4) for v in funcopt.schedule_free_eval_params(state, y).tolist()]
        [0.85, -1.85]
    """
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, ScheduleFreeState))
        if isinstance(s, ScheduleFreeState)
    ]
    if len(found) != 1:
        raise ValueError(
            "schedule_free_eval_params needs a state holding one ScheduleFreeState, "
            f"found {len(found)}"
        )
    sf = found[0]

    def leaf(y: jax.Array, z: jax.Array) -> jax.Array:
        b1 = sf.b1.astype(real_dtype(jnp.result_type(y)))
        return ((up(y) - (1 - b1) * up(z)) / b1).astype(jnp.result_type(y))

    return tree_map(leaf, params, sf.z, names=("params", "state.z"))


def _warmup(learning_rate: Any, warmup_steps: int | None) -> Any:
    if warmup_steps is None:
        return learning_rate
    return warmup_constant_schedule(0.0, learning_rate, warmup_steps)


@hyperparameters(
    learning_rate=RATE, warmup_steps=integer(0, optional=True), b1=INTERPOLATION, b2=DECAY,
    eps=NONNEGATIVE, weight_decay=RATE, weight_lr_power=NONNEGATIVE, state_dtype=DTYPE,
)  # fmt: skip
def schedule_free_adamw(
    learning_rate: float = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    r"""Schedule-free AdamW: :class:`schedule_free` around AdamW without momentum.

    $$ \Delta_t = -\gamma_t \Big(\frac{g_t}{\sqrt{\hat v_t} + \epsilon} + \lambda y_t\Big) $$

    The momentum lives in the interpolation ``b1``; ``warmup_steps`` ramps γ linearly
    from 0. Evaluate at :func:`schedule_free_eval_params`. Equal to
    ``optax.contrib.schedule_free_adamw``.

    Args:
        learning_rate: the peak γ ≥ 0.
        warmup_steps: steps ≥ 0 of linear warm-up from 0 (``None``: none). 0 gives
            γ = 0 throughout, as :func:`~funcopt.warmup_constant_schedule` does.
        b1: β in ``(0, 1)``, the interpolation between ``x`` and ``z``.
        b2: β₂ in ``[0, 1)``, decay of the second moment ``v``.
        eps: ε ≥ 0 added outside the root.
        weight_decay: λ ≥ 0, applied at ``y`` and multiplied by γ.
        weight_lr_power: ``p`` ≥ 0 of the averaging weights (see :class:`schedule_free`).
        state_dtype: dtype of ``z`` (default: the parameters').

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.schedule_free_adamw(1e-3, warmup_steps=100)
        >>> params = {"w": jnp.ones(3)}
        >>> state = tx.init(params)
        >>> x = funcopt.schedule_free_eval_params(state, params)
        >>> x["w"]  # before any step x = y = z
        Array([1., 1., 1.], dtype=float32)
        >>> tx = funcopt.schedule_free_adamw(0.1)
        >>> u, state = tx.update({"w": jnp.array([2.0, -4.0, 0.0])}, tx.init(params), params)
        >>> [round(v, 4) for v in funcopt.apply_updates(params, u)["w"].tolist()]  # 1 − γ sign(g)
        [0.9, 1.1, 1.0]
    """
    lr = _warmup(learning_rate, warmup_steps)
    base = chain(
        scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),  # g / (√v̂ + ε)
        add_decayed_weights(weight_decay),  # + λ y
        scale_by_learning_rate(lr),  # −γ ·
    )
    return schedule_free(base, lr, b1, weight_lr_power, state_dtype)


@hyperparameters(
    learning_rate=RATE, warmup_steps=integer(0, optional=True), b1=INTERPOLATION,
    weight_decay=interval(0.0, schedule=True, optional=True), weight_lr_power=NONNEGATIVE,
    state_dtype=DTYPE,
)  # fmt: skip
def schedule_free_sgd(
    learning_rate: float = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    r"""Schedule-free SGD: :class:`schedule_free` around $\Delta_t = -\gamma_t (g_t + \lambda
    y_t)$. Equal to ``optax.contrib.schedule_free_sgd``.

    Args:
        learning_rate: the peak γ ≥ 0.
        warmup_steps: steps ≥ 0 of linear warm-up from 0 (``None``: none). 0 gives
            γ = 0 throughout, as :func:`~funcopt.warmup_constant_schedule` does.
        b1: β in ``(0, 1)``, the interpolation between ``x`` and ``z``.
        weight_decay: λ ≥ 0, applied at ``y`` (``None``: no decay term at all).
        weight_lr_power: ``p`` ≥ 0 of the averaging weights (see :class:`schedule_free`).
        state_dtype: dtype of ``z`` (default: the parameters').

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.schedule_free_sgd(0.1, weight_decay=0.5)
        >>> y = jnp.array([1.0, -2.0])
        >>> u, state = tx.update(jnp.array([2.0, -4.0]), tx.init(y), y)
        >>> [round(v, 4) for v in funcopt.apply_updates(y, u).tolist()]  # y − γ (g + λ y)
        [0.75, -1.5]
    """
    lr = _warmup(learning_rate, warmup_steps)
    step = scale_by_learning_rate(lr)
    base = step if weight_decay is None else chain(add_decayed_weights(weight_decay), step)
    return schedule_free(base, lr, b1, weight_lr_power, state_dtype)
