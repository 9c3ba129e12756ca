r"""Dual averaging: the iterate is computed afresh from the start and the summed gradients.

Gradient descent adds its steps up in $\theta$; dual averaging keeps the weighted sum
$S_t$ of all gradients instead and computes the iterate from the start $\theta_0$ each
time. MADGRAD (Defazio and Jelassi, 2021) weights step $t$ by $\lambda_t = \eta\sqrt t$,
divides by the cube root of the weighted sum $G_t$ of squared gradients, and follows that
point with momentum on the parameters:

$$ z_t = \theta_0 - \frac{S_t}{G_t^{1/3} + \epsilon}, \qquad
   \theta_{t+1} = \beta\,\theta_t + (1-\beta)\, z_t $$

(:class:`scale_by_madgrad`, :func:`madgrad`). Signatures, defaults and numbers are
``optax.contrib``'s; the deliberate differences are stated where they occur.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import GradientTransformation, ScalarOrSchedule, Updates
from funcopt.combine import chain
from funcopt.lifting import Leafwise, abs2, compute_dtype, moment_like, second_moment_like
from funcopt.scaling import add_decayed_weights
from funcopt.validation import DECAY, NONNEGATIVE, RATE, hyperparameters
from funcopt.values import hyper

__all__ = ["MadgradState", "madgrad", "scale_by_madgrad"]


def _at_step(value: Any, count: Any) -> Any:
    """A hyper-parameter's value at this update: a schedule is read at ``t − 1``."""
    return value(count - 1) if callable(value) else value


class MadgradState(NamedTuple):
    """State of :class:`scale_by_madgrad`: the weighted sums of ``|g|²`` and of ``g``, and
    the starting point ``x0``."""

    grad_sum_sq: Updates
    s: Updates
    x0: Updates


class scale_by_madgrad(Leafwise):
    r"""MADGRAD: dual averaging from θ₀ with a cube-root scaling, and momentum on θ.

    $$ \lambda_t = (\eta + \epsilon)\sqrt{t},\quad S_t = S_{t-1} + \lambda_t g_t,\quad
       G_t = G_{t-1} + \lambda_t |g_t|^2,\quad
       z_t = \theta_0 - \frac{S_t}{G_t^{1/3} + \epsilon} $$
    $$ \theta_{t+1} = \beta\,\theta_t + (1-\beta)\, z_t, \qquad u_t = \theta_{t+1} - \theta_t $$

    The output is the whole step, learning rate and sign included. Equal to
    ``optax.contrib.scale_by_madgrad``, except that ``S`` and ``G`` are kept in at least
    float32, and ``G`` sums ``|g|²`` for complex ``g`` (optax's fails on them).

    Args:
        learning_rate: η ≥ 0, a number or a schedule (read at ``t − 1``).
        momentum: β in ``[0, 1)``, the weight of the current parameters.
        eps: ε ≥ 0, added to η and to the cube root.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_madgrad(1.0, momentum=0.5, eps=0.0)
        >>> p = jnp.array([0.0])  # z₁ = −g / |g|^{2/3}
        >>> tx.update(jnp.array([8.0]), tx.init(p), p)[0]
        Array([-1.], dtype=float32)

    Reference: Defazio and Jelassi, Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization, 2021.
    """

    learning_rate: ScalarOrSchedule = hyper(RATE)
    momentum: float = hyper(DECAY, 0.9)
    eps: float = hyper(NONNEGATIVE, 1e-6)

    State = MadgradState
    reads_count = True
    needs_params = True

    def init_leaf(self, p: jax.Array) -> MadgradState:
        total = moment_like(p, compute_dtype(jnp.result_type(p)))
        return MadgradState(second_moment_like(p), total, jnp.array(p, copy=True))

    def scalars(self, count: Any) -> dict[str, Any]:
        t = count.astype(jnp.result_type(float))
        return {"lam": (_at_step(self.learning_rate, count) + self.eps) * jnp.sqrt(t)}

    def leaf(
        self, g: jax.Array, s: MadgradState, *, lam: Any, p: jax.Array
    ) -> tuple[jax.Array, MadgradState]:
        squares = s.grad_sum_sq + lam * abs2(g)
        total = s.s + lam * g
        z = s.x0 - total / (jnp.cbrt(squares) + self.eps)
        following = self.momentum * p + (1 - self.momentum) * z
        return following - p, MadgradState(squares, total, s.x0)


@hyperparameters(learning_rate=RATE, momentum=DECAY, weight_decay=RATE, eps=NONNEGATIVE)
def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: ScalarOrSchedule = 0.0,
    eps: float = 1e-6,
) -> GradientTransformation:
    r"""MADGRAD (:class:`scale_by_madgrad`) on the L2-regularised gradient $g_t + \lambda\theta_t$.

    Equal to ``optax.contrib.madgrad`` on real numbers.

    Args:
        weight_decay: λ ≥ 0 of the L2 term added to the gradient (a number or a schedule).

    Other arguments: see :class:`scale_by_madgrad`.

    Example:
        >>> import funcopt
        >>> funcopt.madgrad(0.1, weight_decay=0.01)
        chain(add_decayed_weights(weight_decay=0.01), scale_by_madgrad(learning_rate=0.1))
    """
    return chain(add_decayed_weights(weight_decay), scale_by_madgrad(learning_rate, momentum, eps))
