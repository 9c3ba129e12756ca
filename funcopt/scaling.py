"""Scaling: step sizes, decoupled weight decay, signs and per-layer ratios.

Each is one :class:`~funcopt.lifting.Leafwise` primitive. The learning rate is always the
last factor of an optimizer, applied by :class:`scale_by_learning_rate`, which flips the
sign so that :func:`~funcopt.apply_updates` can *add* the result.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Updates,
)
from funcopt.clipping import global_norm
from funcopt.combine import chain
from funcopt.lifting import Leafwise, abs2, coef, second_moment_like, up
from funcopt.trees import MASK, Mask, resolve_mask, tree_map
from funcopt.validation import BOOL, DECAY, NONNEGATIVE, POSITIVE, RATE, REAL, one_of
from funcopt.values import hyper, static

__all__ = [
    "DeltaRmsState",
    "add_decayed_weights",
    "normalize_by_update_norm",
    "scale",
    "scale_by_delta_rms",
    "scale_by_learning_rate",
    "scale_by_param_block_rms",
    "scale_by_sign",
    "scale_by_trust_ratio",
    "squash",
]


class scale(Leafwise):
    r"""Multiply by a constant: $u_t = s\, g_t$.

    Args:
        step_size: ``s``, any finite number (``scale(-lr)`` is a descent step).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale(2.0)
        >>> tx.update(jnp.array([1.0, -3.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 2., -6.], dtype=float32)
    """

    step_size: float = hyper(REAL)

    def leaf(self, g: jax.Array) -> jax.Array:
        return self.step_size * g


class scale_by_learning_rate(Leafwise):
    r"""Scale by the learning rate and turn a gradient into a descent step.

    $$ u_t = -\eta_t\, g_t $$

    where ``η_t = learning_rate(t − 1)`` for a schedule (read from 0 at the first update),
    else the constant. ``flip_sign=False`` gives ``+η g``. Only a schedule reads the step
    count.

    Args:
        learning_rate: η ≥ 0, a number or a function of the step count.
        flip_sign: negate, so the result is added to the parameters.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_learning_rate(funcopt.linear_schedule(1.0, 0.0, 4))
        >>> state = tx.init(jnp.zeros(1))
        >>> for _ in range(3):  # η = 1, 0.75, 0.5 at counts 0, 1, 2
        ...     u, state = tx.update(jnp.array([2.0]), state)
        ...     print(u)
        [-2.]
        [-1.5]
        [-1.]
    """

    learning_rate: ScalarOrSchedule = hyper(RATE)
    flip_sign: bool = static(True, BOOL)

    @property
    def reads_count(self) -> bool:  # type: ignore[override]
        return callable(self.learning_rate)

    def scalars(self, count: Any) -> dict[str, Any]:
        lr = self.learning_rate
        return {"eta": lr(count - 1) if callable(lr) else lr}

    def leaf(self, g: jax.Array, *, eta: Any) -> jax.Array:
        return -eta * g if self.flip_sign else eta * g


class add_decayed_weights(Leafwise):
    r"""Add decoupled weight decay to the update: $u_t = g_t + \lambda\, \theta_t$.

    Placed after Adam's preconditioner and before the learning rate, it gives AdamW's
    $\theta \leftarrow \theta - \eta (\hat m / (\sqrt{\hat v} + \epsilon) + \lambda \theta)$.

    Args:
        weight_decay: λ ≥ 0, a number or a schedule (read at ``t − 1``, as a learning rate).
        mask: which leaves decay (True) and which do not (False): a pytree of bools
            with the parameters' structure, or a function of the params returning one
            (e.g. to skip biases and norm scales); ``None`` decays every leaf.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([10.0]), "b": jnp.array([10.0])}
        >>> grads = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> tx = funcopt.add_decayed_weights(0.1, mask={"w": True, "b": False})
        >>> u, _ = tx.update(grads, tx.init(params), params)
        >>> u["w"], u["b"]  # 1 + 0.1 · 10 where masked in, 1 elsewhere
        (Array([2.], dtype=float32), Array([1.], dtype=float32))
    """

    weight_decay: ScalarOrSchedule = hyper(RATE, 0.0)
    mask: Mask | None = static(None)

    needs_params = True

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return self.mask is None

    @property
    def reads_count(self) -> bool:  # type: ignore[override]
        return callable(self.weight_decay)

    def scalars(self, count: Any) -> dict[str, Any]:
        wd = self.weight_decay
        return {"lam": wd(count - 1) if callable(wd) else wd}

    def leaf(self, g: jax.Array, *, lam: Any, p: jax.Array) -> jax.Array:
        return g + lam * p

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        decayed, state = super().apply(updates, state, params, count)
        if self.mask is None:
            return decayed, state
        keep = resolve_mask(self.mask, params)
        out = tree_map(
            lambda d, g, k: d if k else g,
            decayed,
            updates,
            keep,
            names=("updates", "updates", "mask"),
        )
        return out, state


def _descend(
    direction: GradientTransformation,
    learning_rate: Any,
    weight_decay: Any = None,
    mask: Any = None,
) -> GradientTransformation:
    """``chain(direction, + λ θ, −η ·)``, the tail of AdamW and its relatives; no decay
    link when ``weight_decay`` is None. (Shared by the optimizer modules, not exported.)"""
    if weight_decay is None:
        return chain(direction, scale_by_learning_rate(learning_rate))
    return chain(
        direction, add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate)
    )


_DESCENT_ARGS = dict(learning_rate=RATE, weight_decay=RATE, mask=MASK)
"""The kinds of :func:`_descend`'s arguments, for the ``@hyperparameters`` of the optimizers
that end with it."""

_ADAM_ARGS = dict(b1=DECAY, b2=DECAY, eps=NONNEGATIVE, eps_root=NONNEGATIVE)
"""The kinds of Adam's moment arguments, shared by Adam's relatives."""


class scale_by_sign(Leafwise):
    r"""Keep only the sign of each coordinate: $u_t = \operatorname{sign}(g_t)$ (0 at 0).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_sign()
        >>> tx.update(jnp.array([-3.0, 0.0, 0.5]), tx.init(jnp.zeros(3)))[0]
        Array([-1.,  0.,  1.], dtype=float32)

    Reference: Bernstein et al., signSGD, 2018.
    """

    def leaf(self, g: jax.Array) -> jax.Array:
        return jnp.sign(g)


class squash(Leafwise):
    r"""Lion's output map: the sign, or a smooth or linear-near-zero version of it.

    $$ u_t = \operatorname{sign}(g_t) \ (\text{hard}), \qquad
       \tanh(\beta g_t) \ (\text{smooth}), \qquad
       \operatorname{clip}(g_t, -1, 1) \ (\text{refined}) $$

    Args:
        mode: ``"hard"``, ``"smooth"`` or ``"refined"`` (linear below 1 in magnitude).
        smooth_beta: β > 0 of the smooth mode.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> g = jnp.array([-3.0, 0.5])
        >>> funcopt.squash("refined").update(g, funcopt.squash().init(g))[0]
        Array([-1. ,  0.5], dtype=float32)
    """

    mode: str = static("hard", one_of("hard", "smooth", "refined"))
    smooth_beta: float = hyper(POSITIVE, 1.0)

    def leaf(self, g: jax.Array) -> jax.Array:
        if self.mode == "smooth":
            return jnp.tanh(self.smooth_beta * g)
        if self.mode == "refined":
            return jnp.clip(g, -1, 1)
        return jnp.sign(g)


class normalize_by_update_norm(GradientTransformation):
    r"""Divide the whole update by its global norm: $u_t = s\, g_t / (\lVert g_t\rVert + \epsilon)$.

    Args:
        scale_factor: ``s``, the norm of the result (any finite number).
        eps: ε ≥ 0 added to the norm.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.normalize_by_update_norm(eps=0.0)
        >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
        {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
    """

    scale_factor: float = hyper(REAL, 1.0)
    eps: float = hyper(NONNEGATIVE, 1e-6)

    def init_state(self, params: Params) -> OptState:
        return EmptyState()

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        del params, count, extra
        norm = global_norm(updates)
        factor = coef(self.scale_factor, norm) / (norm + coef(self.eps, norm))
        return jax.tree.map(lambda g: up(g) * coef(factor, up(g)), updates), state


class scale_by_trust_ratio(Leafwise):
    r"""Rescale each leaf by the ratio of its parameter norm to its update norm (LARS/LAMB).

    $$ u_t = g_t \cdot \frac{c\, \max(\lVert\theta\rVert, n_{min})}
                            {\max(\lVert g_t\rVert, n_{min}) + \epsilon} $$

    and $u_t = g_t$ where either norm is zero (a fresh or a vanishing layer).

    Args:
        min_norm: floor ``n_min`` ≥ 0 of both norms.
        trust_coefficient: ``c`` ≥ 0.
        eps: ε ≥ 0 added to the update norm.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_trust_ratio()
        >>> g, theta = jnp.array([0.3, 0.4]), jnp.array([3.0, 4.0])
        >>> tx.update(g, tx.init(theta), theta)[0]  # ‖θ‖ / ‖g‖ = 5 / 0.5 = 10
        Array([3., 4.], dtype=float32)

    Reference: You et al., Large Batch Training of Convolutional Networks, 2017.
    """

    min_norm: float = hyper(NONNEGATIVE, 0.0)
    trust_coefficient: float = hyper(NONNEGATIVE, 1.0)
    eps: float = hyper(NONNEGATIVE, 0.0)

    needs_params = True
    elementwise = False

    def leaf(self, g: jax.Array, *, p: jax.Array) -> jax.Array:
        p_norm = jnp.maximum(jnp.sqrt(jnp.sum(abs2(p))), self.min_norm)
        g_norm = jnp.maximum(jnp.sqrt(jnp.sum(abs2(g))), self.min_norm)
        ratio = self.trust_coefficient * p_norm / (g_norm + self.eps)
        return g * jnp.where((p_norm == 0) | (g_norm == 0), jnp.ones_like(ratio), ratio)


class scale_by_param_block_rms(Leafwise):
    r"""Multiply each leaf by the RMS of its parameter block (Adafactor's relative step).

    $$ u_t = g_t \cdot \max\big(\sqrt{\mathrm{mean}(|\theta|^2)},\ s_{min}\big) $$

    Args:
        min_scale: the floor ``s_min`` ≥ 0 of the RMS (keeps zero-initialised
            parameters moving).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_param_block_rms()
        >>> g = jnp.array([1.0, 2.0])
        >>> tx.update(g, tx.init(g), jnp.array([3.0, -3.0]))[0]  # RMS(θ) = 3
        Array([3., 6.], dtype=float32)
        >>> tx.update(g, tx.init(g), jnp.zeros(2))[0]  # the floor s_min = 1e-3
        Array([0.001, 0.002], dtype=float32)
    """

    min_scale: float = hyper(NONNEGATIVE, 1e-3)

    needs_params = True
    elementwise = False

    def leaf(self, g: jax.Array, *, p: jax.Array) -> jax.Array:
        rms = jnp.sqrt(jnp.mean(abs2(p)))
        return g * jnp.where(rms <= self.min_scale, self.min_scale, rms)


class DeltaRmsState(NamedTuple):
    """State of :class:`scale_by_delta_rms`: the average of squared outputs (optax's name)."""

    e_x: Updates


class scale_by_delta_rms(Leafwise):
    r"""Adadelta's numerator: multiply by the RMS of the previous outputs.

    $$ u_t = \sqrt{x_{t-1} + \epsilon}\; g_t, \qquad x_t = \rho\, x_{t-1} + (1-\rho)\, |u_t|^2 $$

    After ``precondition(identity(), second_moment(ρ), eps_root=ε)`` it is Adadelta,
    whose step has the units of the parameters.

    Args:
        rho: ρ in ``[0, 1)``, decay of the average ``x`` of squared outputs.
        eps: ε ≥ 0 inside the root; the first step is ``√ε · g``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_delta_rms(rho=0.5, eps=1.0)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u, state.e_x  # √(0 + 1) · 2, then x = 0.5 · 2²
        (Array([2.], dtype=float32), Array([2.], dtype=float32))

    Reference: Zeiler, ADADELTA: An Adaptive Learning Rate Method, 2012.
    """

    rho: float = hyper(DECAY, 0.9)
    eps: float = hyper(NONNEGATIVE, 1e-6)

    State = DeltaRmsState

    def init_leaf(self, p: jax.Array) -> DeltaRmsState:
        return DeltaRmsState(second_moment_like(p))

    def leaf(self, g: jax.Array, s: DeltaRmsState) -> tuple[jax.Array, DeltaRmsState]:
        u = jnp.sqrt(s.e_x + self.eps) * g
        return u, DeltaRmsState(self.rho * s.e_x + (1 - self.rho) * abs2(u))
