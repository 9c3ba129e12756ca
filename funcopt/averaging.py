"""Slow copies of the weights: Lookahead, and the target-network updates of RL.

:class:`lookahead` keeps slow weights that follow the fast ones every ``k`` steps;
:func:`incremental_update` (Polyak averaging) and :func:`periodic_update` (a hard copy
every ``n`` steps) maintain a target network. Inner transforms may be funcopt's or optax's;
names, signatures, defaults and numerics follow optax.
"""

from __future__ import annotations

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
from funcopt.lifting import coef, up
from funcopt.trees import tree_map
from funcopt.validation import BOOL, PROBABILITY, hyperparameters, integer
from funcopt.values import hyper, static

__all__ = [
    "LookaheadParams",
    "LookaheadState",
    "incremental_update",
    "lookahead",
    "periodic_update",
]


class LookaheadState(NamedTuple):
    """State of :class:`lookahead`: the fast optimizer's state and steps since the last sync."""

    fast_state: OptState
    steps_since_sync: jax.Array


class LookaheadParams(NamedTuple):
    """The fast weights (take gradients here) and the slow weights (evaluate these)."""

    fast: Params
    slow: Params

    @classmethod
    def init_synced(cls, params: Params) -> LookaheadParams:
        """Fast and slow weights both equal to ``params``, in distinct buffers.

        ``slow`` is a copy, so that a jitted step may donate both (one buffer cannot be
        donated twice).

        Args:
            params: the initial weights.
        """
        return cls(fast=params, slow=jax.tree.map(jnp.copy, params))


class lookahead(GradientTransformation):
    r"""Lookahead (Zhang et al., 2019): ``k`` fast steps forward, then one step back.

    The fast weights θ take ``fast_optimizer``'s steps; every ``sync_period``-th step the
    slow weights φ move toward them and the fast weights restart from there:

    $$ \phi \leftarrow \phi + \alpha\,(\theta - \phi), \qquad \theta \leftarrow \phi $$

    Params are :class:`LookaheadParams`; the gradient is taken at ``params.fast``, and
    the returned updates (a ``LookaheadParams``) must be applied unchanged. The fast
    optimizer runs every step and keeps its own state (``state.fast_state``).

    Args:
        fast_optimizer: the inner transform (funcopt's or optax's).
        sync_period: ``k``, an integer ≥ 1.
        slow_step_size: α in ``[0, 1]``.
        reset_state: re-initialise the fast optimizer's state at each sync.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.lookahead(funcopt.scale(-1.0), sync_period=2, slow_step_size=0.5)
        >>> params = funcopt.LookaheadParams.init_synced(jnp.zeros(1))
        >>> state = tx.init(params)
        >>> for _ in range(2):  # θ: 0 → 1 → 2, then φ = 0 + ½ (2 − 0) = 1 and θ = φ
        ...     u, state = tx.update(jnp.array([-1.0]), state, params)
        ...     params = funcopt.apply_updates(params, u)
        >>> params.fast, params.slow
        (Array([1.], dtype=float32), Array([1.], dtype=float32))
    """

    State = LookaheadState

    fast_optimizer: GradientTransformation
    sync_period: int = static(kind=integer(1))
    slow_step_size: float = hyper(PROBABILITY)
    reset_state: bool = static(False, BOOL)

    def check(self) -> None:
        fast = as_transform(self.fast_optimizer, "lookahead: fast_optimizer")
        object.__setattr__(self, "fast_optimizer", fast)

    def init_state(self, params: Params) -> OptState:
        fast = getattr(params, "fast", params)  # plain params are taken as the fast ones
        return LookaheadState(
            fast_state=self.fast_optimizer.init(fast), steps_since_sync=new_count()
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        if params is None or not (hasattr(params, "fast") and hasattr(params, "slow")):
            raise ValueError("lookahead needs update(grads, state, params: LookaheadParams)")
        expect_state(self, state, self.State)
        alpha = self.slow_step_size
        step, fast_state = self.fast_optimizer.update(
            updates, state.fast_state, params.fast, **extra
        )
        sync = state.steps_since_sync == self.sync_period - 1
        # θ + step − φ: how far the fast weights would be ahead of the slow ones.
        ahead = tree_map(
            lambda u, f, s: up(f) + up(u) - up(s),
            step,
            params.fast,
            params.slow,
            names=("updates", "params.fast", "params.slow"),
        )
        slow = jax.tree.map(
            lambda d, s: jnp.where(sync, coef(alpha, d) * d, 0).astype(s.dtype),
            ahead,
            params.slow,
        )
        fast = jax.tree.map(
            lambda d, u: jnp.where(sync, up(u) - coef(1 - alpha, d) * d, up(u)).astype(u.dtype),
            ahead,
            step,
        )
        if self.reset_state:
            fresh = self.fast_optimizer.init(params.fast)
            fast_state = jax.tree.map(lambda s, s0: jnp.where(sync, s0, s), fast_state, fresh)
        steps = safe_increment(state.steps_since_sync) % self.sync_period
        return LookaheadParams(fast=fast, slow=slow), LookaheadState(fast_state, steps)


@hyperparameters(step_size=PROBABILITY)
def incremental_update(new_tensors: Params, old_tensors: Params, step_size: Any) -> Params:
    r"""Polyak averaging of parameters (target networks).

    $$ \bar\theta \leftarrow s\,\theta + (1 - s)\,\bar\theta $$

    Args:
        new_tensors: the latest parameters θ.
        old_tensors: the running average θ̄ (the result keeps its dtypes).
        step_size: s in ``[0, 1]``; 1 copies θ, 0 keeps θ̄ (may be traced).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> target = jnp.array([0.0, 4.0])
        >>> funcopt.incremental_update(jnp.array([1.0, 0.0]), target, step_size=0.25)
        Array([0.25, 3.  ], dtype=float32)
    """

    def leaf(new: jax.Array, old: jax.Array) -> jax.Array:
        x = up(jnp.asarray(new))
        old = jnp.asarray(old)
        return (coef(step_size, x) * x + coef(1 - step_size, x) * up(old)).astype(old.dtype)

    return tree_map(leaf, new_tensors, old_tensors, names=("new_tensors", "old_tensors"))


@hyperparameters(update_period=integer(1))
def periodic_update(
    new_tensors: Params, old_tensors: Params, steps: Any, update_period: Any
) -> Params:
    r"""``new_tensors`` when ``steps`` is a multiple of ``update_period``, else ``old_tensors``.

    $$ \bar\theta \leftarrow \begin{cases} \theta & n \bmod T = 0 \\ \bar\theta &
       \text{otherwise} \end{cases} $$

    The hard target-network update of DQN; works under ``jit`` with a traced ``steps``.

    Args:
        new_tensors: the latest parameters θ.
        old_tensors: the target parameters θ̄, with the same structure, shapes and dtypes.
        steps: the current step ``n`` (an integer, possibly traced); 0 is a multiple of
            any period.
        update_period: ``T``, how many steps apart the copies happen, an integer ``≥ 1``
            (a concrete value out of range raises :class:`HyperParameterError`).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> new, old = jnp.array([1.0]), jnp.array([0.0])
        >>> funcopt.periodic_update(new, old, steps=4, update_period=2)
        Array([1.], dtype=float32)
        >>> funcopt.periodic_update(new, old, steps=5, update_period=2)
        Array([0.], dtype=float32)
    """
    return jax.lax.cond(
        jnp.mod(steps, update_period) == 0, lambda: new_tensors, lambda: old_tensors
    )
