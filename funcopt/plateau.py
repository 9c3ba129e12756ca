r"""Reduce the step when the loss stops improving (Keras's and torch's ``ReduceLROnPlateau``).

:class:`reduce_on_plateau` reads the loss from ``update(..., value=loss)``, averages it
over ``accumulation_size`` calls, and multiplies every update by a scale that drops by
``factor`` after ``patience`` averages without a relative improvement of ``rtol`` (plus
``atol``), then waits ``cooldown`` averages before counting again. Chain it after an
optimizer: ``chain(adam(1e-3), reduce_on_plateau())``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import GradientTransformation, OptState, Params, Updates, expect_state
from funcopt.lifting import up
from funcopt.validation import NONNEGATIVE, HyperParameterError, integer, interval
from funcopt.values import hyper

__all__ = ["ReduceLROnPlateauState", "reduce_on_plateau"]


class ReduceLROnPlateauState(NamedTuple):
    """State of :class:`reduce_on_plateau` (optax's fields, so ``optax.tree.get`` finds them).

    Attributes:
        scale: the factor on the updates (in the params' lowest float dtype).
        best_value: the best average loss so far (in the params' highest float dtype).
        plateau_count: averages since the last improvement (int32).
        cooldown_count: averages left to wait after a reduction (int32).
        count: losses gathered into the current average (int32).
        avg_value: the current average of the losses.
    """

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    avg_value: jax.Array


def _float_dtypes(params: Params) -> list[Any]:
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    return [d for d in dtypes if jnp.issubdtype(d, jnp.inexact)] or [jnp.dtype(float)]


def _lowest(dtypes: list[Any]) -> Any:
    return min(dtypes, key=lambda d: jnp.finfo(d).bits)


def _highest(dtypes: list[Any]) -> Any:
    return max(dtypes, key=lambda d: jnp.finfo(d).bits)


class reduce_on_plateau(GradientTransformation):
    r"""Scale the updates down by ``factor`` when the average loss stops improving.

    Every ``accumulation_size`` calls, with $\bar v$ the mean of their ``value=`` losses:

    $$ \text{improved} = \bar v < (1 - r_{tol})\, v_{best} - a_{tol}, \qquad
       s \leftarrow \max(f\, s,\ s_{min}) \ \text{after } p \text{ averages without} $$

    The plateau count restarts at each improvement and after each reduction; during the
    ``cooldown`` averages that follow a reduction it stays at 0. The output is
    $u = s\, g$ at every call, with the scale after this call's decision. Equal to
    ``optax.contrib.reduce_on_plateau``; ``update`` needs ``value=``, the loss.

    Args:
        factor: ``f`` in ``(0, 1)``, the reduction.
        patience: ``p ≥ 1``, averages without improvement before a reduction.
        rtol: ``r_tol`` in ``[0, 1]``, the relative improvement that counts.
        atol: ``a_tol ≥ 0``, the absolute improvement that counts (one of the two > 0).
        cooldown: averages ≥ 0 to wait after a reduction before counting again.
        accumulation_size: losses ≥ 1 averaged per decision (1 for a validation loss;
            more for noisy mini-batch losses).
        min_scale: ``s_min ≥ 0``, the smallest scale.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.reduce_on_plateau(factor=0.5, patience=2)
        >>> state = tx.init(jnp.zeros(1))
        >>> for loss in [1.0, 1.0, 1.0, 1.0, 1.0]:  # no improvement after the first
        ...     u, state = tx.update(jnp.ones(1), state, value=loss)
        ...     print(u)
        [1.]
        [1.]
        [0.5]
        [0.5]
        [0.25]

    Reference: the ``ReduceLROnPlateau`` callbacks of Keras and of PyTorch
    (``torch.optim.lr_scheduler``), here on the updates rather than on a learning rate.
    """

    State = ReduceLROnPlateauState

    factor: float = hyper(interval(0.0, 1.0, low_inclusive=False), 0.1)
    patience: int = hyper(integer(1), 10)
    rtol: float = hyper(interval(0.0, 1.0, high_inclusive=True), 1e-4)
    atol: float = hyper(NONNEGATIVE, 0.0)
    cooldown: int = hyper(integer(0), 0)
    accumulation_size: int = hyper(integer(1), 1)
    min_scale: float = hyper(NONNEGATIVE, 0.0)

    def check(self) -> None:
        if isinstance(self.rtol, float) and isinstance(self.atol, float):
            if self.rtol == 0.0 and self.atol == 0.0:
                raise HyperParameterError(
                    "rtol and atol: at least one must be positive, got rtol=0.0 and atol=0.0"
                )

    def init_state(self, params: Params) -> OptState:
        dtypes = _float_dtypes(params)
        high = _highest(dtypes)
        zero = jnp.zeros([], jnp.int32)
        return ReduceLROnPlateauState(
            scale=jnp.ones([], _lowest(dtypes)),
            best_value=jnp.full([], jnp.inf, high),
            plateau_count=zero,
            cooldown_count=jnp.zeros([], jnp.int32),
            count=jnp.zeros([], jnp.int32),
            avg_value=jnp.zeros([], high),
        )

    def decide(self, state: ReduceLROnPlateauState) -> ReduceLROnPlateauState:
        """The state after one decision on the completed average ``state.avg_value``."""
        avg, best = state.avg_value, state.best_value
        improved = avg < (1 - self.rtol) * best - self.atol
        plateau = jnp.where(improved, 0, state.plateau_count + 1).astype(jnp.int32)
        cooling = state.cooldown_count > 0
        reduce = ~cooling & (plateau == self.patience)
        scale = jnp.maximum(
            jnp.where(reduce, state.scale * self.factor, state.scale), self.min_scale
        )
        return ReduceLROnPlateauState(
            scale=jnp.where(cooling, state.scale, scale).astype(state.scale.dtype),
            best_value=jnp.where(improved, avg, best).astype(best.dtype),
            plateau_count=jnp.where(cooling | reduce, 0, plateau).astype(jnp.int32),
            cooldown_count=jnp.where(
                cooling, state.cooldown_count - 1, jnp.where(reduce, self.cooldown, 0)
            ).astype(jnp.int32),
            count=jnp.zeros([], jnp.int32),
            avg_value=jnp.zeros([], avg.dtype),
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        if "value" not in extra:
            raise TypeError(
                "reduce_on_plateau needs the loss: call update(updates, state, params, value=loss)"
            )
        dtype = state.avg_value.dtype
        n = state.count + 1
        value = jnp.asarray(extra["value"]).astype(dtype)
        avg = (state.count.astype(dtype) * state.avg_value + value) / n.astype(dtype)
        state = state._replace(avg_value=avg, count=n)
        state = jax.lax.cond(n == self.accumulation_size, self.decide, lambda s: s, state)
        out = jax.tree.map(lambda g: up(g) * state.scale.astype(up(g).dtype), updates)
        return out, state
