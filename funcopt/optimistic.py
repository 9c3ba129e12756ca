r"""Optimistic gradient methods, for min-max games (GANs, saddle-point problems).

Plain gradient descent–ascent circles around the saddle point of a bilinear game; adding
a correction along the last change of the gradient (the "optimism") makes it converge.
One primitive, :class:`scale_by_optimistic_gradient`, carries the correction

$$ u_t = (\alpha + \beta)\, g_t - \beta\, g_{t-1} \qquad (g_0 = g_1), $$

and the optimizers are compositions: optimistic gradient descent is the primitive then
the learning rate, optimistic Adam is Adam's direction then the primitive then the rate.

Reference: Daskalakis et al., Training GANs with Optimism, 2018; Mokhtari et al., A
Unified Analysis of Extra-gradient and Optimistic Gradient Methods for Saddle Point
Problems, 2020.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import GradientTransformation, ScalarOrSchedule, Updates
from funcopt.combine import chain
from funcopt.lifting import Leafwise, moment_like
from funcopt.preconditioners import scale_by_adam
from funcopt.scaling import scale_by_learning_rate
from funcopt.validation import (
    BOOL,
    DECAY,
    DTYPE,
    NONNEGATIVE,
    RATE,
    REAL,
    hyperparameters,
    interval,
)
from funcopt.values import hyper

__all__ = [
    "OptimisticGradientState",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "scale_by_optimistic_gradient",
]


class OptimisticGradientState(NamedTuple):
    """State of :class:`scale_by_optimistic_gradient`: the last step's input."""

    previous_gradient: Updates


class scale_by_optimistic_gradient(Leafwise):
    r"""The optimistic correction: $u_t = (\alpha + \beta)\, g_t - \beta\, g_{t-1}$.

    At the first step there is no previous gradient and $g_0 = g_1$ (as optax, after
    its issue 1082), so that $u_1 = \alpha\, g_1$.

    Args:
        alpha: α, the weight of the current gradient (any finite number).
        beta: β, the weight of its last change (the "negative momentum").

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_optimistic_gradient(alpha=1.0, beta=1.0)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([1.0]), state)  # α g₁
        >>> u, state = tx.update(jnp.array([3.0]), state)  # 2 · 3 − 1
        >>> u
        Array([5.], dtype=float32)
    """

    alpha: float = hyper(REAL, 1.0)
    beta: float = hyper(REAL, 1.0)

    State = OptimisticGradientState
    reads_count = True

    def init_leaf(self, p: jax.Array) -> OptimisticGradientState:
        return OptimisticGradientState(moment_like(p))

    def leaf(
        self, g: jax.Array, s: OptimisticGradientState, *, t: Any
    ) -> tuple[jax.Array, OptimisticGradientState]:
        previous = jnp.where(t == 1, g, s.previous_gradient)
        return (self.alpha + self.beta) * g - self.beta * previous, OptimisticGradientState(g)


@hyperparameters(learning_rate=RATE, alpha=REAL, beta=REAL)
def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule, alpha: float = 1.0, beta: float = 1.0
) -> GradientTransformation:
    r"""Optimistic gradient descent, descent along the corrected gradient.

    $$ \theta_{t+1} = \theta_t - \eta\,\big((\alpha+\beta)\, g_t - \beta\, g_{t-1}\big) $$

    ``chain(scale_by_optimistic_gradient(α, β), scale_by_learning_rate(η))``; equal to
    ``optax.optimistic_gradient_descent``. Arguments: see
    :class:`scale_by_optimistic_gradient` and the glossary.

    Example:
        >>> import funcopt
        >>> funcopt.optimistic_gradient_descent(0.1, beta=0.5)
        chain(scale_by_optimistic_gradient(beta=0.5), scale_by_learning_rate(learning_rate=0.1))
    """
    return chain(scale_by_optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate))


_ADAM = dict(b1=DECAY, b2=DECAY, eps=NONNEGATIVE, eps_root=NONNEGATIVE, mu_dtype=DTYPE)


@hyperparameters(learning_rate=RATE, alpha=REAL, beta=REAL, nesterov=BOOL, **_ADAM)
def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""Optimistic Adam: the optimistic correction of Adam's direction.

    $$ d_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}, \qquad
       \theta_{t+1} = \theta_t - \eta\, \big((\alpha+\beta)\, d_t - \beta\, d_{t-1}\big) $$

    with NAdam's look-ahead ``m̂`` by default (``nesterov=True``, as optax). Equal to
    ``optax.optimistic_adam_v2``.

    Args:
        alpha: α, the weight of the current direction.
        beta: β, the weight of its last change.

    Other arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.optimistic_adam_v2(0.1)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(u.item(), 4)  # −η (1 + 0.9 · 0.1 / 0.19): NAdam's first step, α = 1
        -0.1474
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )


@hyperparameters(
    learning_rate=interval(0.0), optimism=interval(optional=True), nesterov=BOOL, **_ADAM
)
def optimistic_adam(
    learning_rate: float,
    optimism: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""Deprecated (as in optax): use :func:`optimistic_adam_v2`.

    $$ \theta_{t+1} = \theta_t - \big((\eta + o)\, d_t - o\, d_{t-1}\big) $$

    with ``d`` Adam's direction and the optimism ``o``: the learning rate is the α of
    :class:`scale_by_optimistic_gradient`, so it cannot be a schedule. Equal to
    ``optax.optimistic_adam``.

    Args:
        optimism: ``o``, the β of the correction (default: the learning rate).

    Other arguments: see the glossary.

    Example:
        >>> import warnings, funcopt
        >>> with warnings.catch_warnings(record=True):
        ...     tx = funcopt.optimistic_adam(0.1)
        >>> tx.transforms[1]
        scale_by_optimistic_gradient(alpha=0.1, beta=0.1)
    """
    warnings.warn(
        "`optimistic_adam` is deprecated, please use `optimistic_adam_v2` instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(
            learning_rate, learning_rate if optimism is None else optimism
        ),
        scale_by_learning_rate(1.0),  # the sign flip only
    )
