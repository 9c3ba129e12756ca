r"""Nesterov momentum estimated from gradients: Adan.

Nesterov's method evaluates the gradient at an extrapolated point $\theta_t - \eta\beta
m_{t-1}$. Adan (Xie et al., 2022) estimates that gradient without a second evaluation,
from the change of the gradient, $g_t + (1-\beta_2)(g_t - g_{t-1})$, and uses it in both
of Adam's averages: the numerator averages $g$ and its change separately,

$$ u_t = \frac{\hat m_t + (1-\beta_2)\,\hat v_t}{\sqrt{\hat n_t} + \epsilon}, \quad
   v_t = \beta_2 v_{t-1} + (1-\beta_2)(g_t - g_{t-1}), \quad
   n_t = \beta_3 n_{t-1} + (1-\beta_3)\,|g_t + (1-\beta_2)(g_t - g_{t-1})|^2 $$

(:class:`adan_momentum` over the second moment of :class:`nesterov_estimate`;
:func:`scale_by_adan`, :func:`adan`). Signatures, defaults and numbers are ``optax``'s;
the one deliberate difference (a second copy of $g_{t-1}$) is stated at
:func:`scale_by_adan`. Notation as in :mod:`funcopt.moments`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import GradientTransformation, ScalarOrSchedule, Updates
from funcopt.combine import chain, precondition
from funcopt.lifting import Leafwise, moment_like
from funcopt.moments import bias_correction, second_moment
from funcopt.scaling import _ADAM_ARGS, _DESCENT_ARGS, _descend
from funcopt.trees import Mask
from funcopt.validation import DECAY, hyperparameters
from funcopt.values import hyper

__all__ = [
    "AdanMomentumState",
    "NesterovEstimateState",
    "adan",
    "adan_momentum",
    "nesterov_estimate",
    "scale_by_adan",
]


class AdanMomentumState(NamedTuple):
    """State of :class:`adan_momentum`: the averages ``m`` of g and ``v`` of its change,
    and the last gradient ``g``."""

    m: Updates
    v: Updates
    g: Updates


class adan_momentum(Leafwise):
    r"""Adan's numerator: the averages of the gradient and of its change, combined.

    $$ d_t = g_t - g_{t-1}\ (d_1 = 0),\quad m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) d_t,\quad u_t = \hat m_t + (1-\beta_2) \hat v_t $$

    with the hats dividing by ``1 − β₁ᵗ`` and ``1 − β₂ᵗ``.

    Args:
        b1: β₁ in ``[0, 1)`` of ``m``.
        b2: β₂ in ``[0, 1)`` of ``v``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.adan_momentum(b1=0.5, b2=0.5)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u, tx.update(jnp.array([4.0]), state)[0]  # 2; then 2.5/0.75 + 0.5 · 1/0.75
        (Array([2.], dtype=float32), Array([4.], dtype=float32))

    Reference: Xie et al., Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models, 2022, Algorithm 1.
    """

    b1: float = hyper(DECAY, 0.98)
    b2: float = hyper(DECAY, 0.92)

    State = AdanMomentumState
    reads_count = True

    def init_leaf(self, p: jax.Array) -> AdanMomentumState:
        return AdanMomentumState(moment_like(p), moment_like(p), moment_like(p))

    def scalars(self, count: Any) -> dict[str, Any]:
        t = count.astype(jnp.result_type(float))
        return {"first": t == 1, "c1": 1 - self.b1**t, "c2": 1 - self.b2**t}

    def leaf(
        self, g: jax.Array, s: AdanMomentumState, *, first: Any, c1: Any, c2: Any
    ) -> tuple[jax.Array, AdanMomentumState]:
        d = jnp.where(first, 0, g - s.g)
        m = self.b1 * s.m + (1 - self.b1) * g
        v = self.b2 * s.v + (1 - self.b2) * d
        return m / c1 + (1 - self.b2) * v / c2, AdanMomentumState(m, v, g)


class NesterovEstimateState(NamedTuple):
    """State of :class:`nesterov_estimate`: the last gradient."""

    previous_gradient: Updates


class nesterov_estimate(Leafwise):
    r"""Adan's Nesterov estimate of the next gradient: $u_t = g_t + (1-\beta)(g_t - g_{t-1})$.

    At the first step there is no previous gradient and $u_1 = g_1$.

    Args:
        decay: the β₂ of Adan, in ``[0, 1)``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.nesterov_estimate(0.5)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u, tx.update(jnp.array([4.0]), state)[0]  # 2, then 4 + 0.5 · 2
        (Array([2.], dtype=float32), Array([5.], dtype=float32))
    """

    decay: float = hyper(DECAY, 0.92)

    State = NesterovEstimateState
    reads_count = True

    def init_leaf(self, p: jax.Array) -> NesterovEstimateState:
        return NesterovEstimateState(moment_like(p))

    def leaf(
        self, g: jax.Array, s: NesterovEstimateState, *, t: Any
    ) -> tuple[jax.Array, NesterovEstimateState]:
        d = jnp.where(t == 1, 0, g - s.previous_gradient)
        return g + (1 - self.decay) * d, NesterovEstimateState(g)


@hyperparameters(**_ADAM_ARGS, b3=DECAY)
def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    r"""Adan's direction: Nesterov momentum estimated from the change of the gradient.

    $$ u_t = \frac{\hat m_t + (1-\beta_2)\hat v_t}{\sqrt{\hat n_t + \epsilon_{root}} + \epsilon},
       \qquad n_t = \beta_3 n_{t-1} + (1-\beta_3)\,|g_t + (1-\beta_2)(g_t - g_{t-1})|^2 $$

    (:class:`adan_momentum` over the bias-corrected second moment of
    :class:`nesterov_estimate`). Equal to ``optax.scale_by_adan``; each branch keeps its
    own copy of ``g_{t−1}`` (one buffer more than optax: a denominator cannot read the
    numerator's state).

    Args:
        b3: β₃ in ``[0, 1)``, the decay of ``n``.

    Other arguments: see :class:`adan_momentum` and the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_adan()
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0].round(4)
        Array([ 1., -1.], dtype=float32)
    """
    return precondition(
        adan_momentum(b1, b2),  # m̂ + (1 − β₂) v̂
        chain(nesterov_estimate(b2), second_moment(b3), bias_correction(b3)),  # n̂
        eps=eps,
        eps_root=eps_root,
    )


@hyperparameters(**_ADAM_ARGS, **_DESCENT_ARGS, b3=DECAY)
def adan(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""Adan: :func:`scale_by_adan`, decoupled weight decay, the learning rate.

    $$ \theta_{t+1} = \theta_t - \eta\Big(\frac{\hat m_t + (1-\beta_2)\hat v_t}
       {\sqrt{\hat n_t + \epsilon_{root}} + \epsilon} + \lambda\theta_t\Big) $$

    Equal to ``optax.adan`` (the paper divides by ``1 + λη`` instead of adding ``λθ``).
    Arguments: see :func:`scale_by_adan` and the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = funcopt.adan(0.1)
        >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(params), params)
        >>> [round(x, 4) for x in u.tolist()]  # −η sign(g)
        [-0.1, 0.1]
    """
    direction = scale_by_adan(b1, b2, b3, eps, eps_root)
    return _descend(direction, learning_rate, weight_decay, mask)
