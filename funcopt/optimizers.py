"""The chapter's optimizers, each a short composition of :mod:`funcopt.primitives`.

No optimizer here has math of its own: each reads, in order, like the update equations
of the chapter. Signatures and defaults follow optax wherever optax has the same
optimizer, so ``funcopt.adam(1e-3)`` and ``optax.adam(1e-3)`` are interchangeable.
"""

from __future__ import annotations

from typing import Any

from funcopt.base import GradientTransformation, ScalarOrSchedule, cached_factory, chain, identity
from funcopt.primitives import (
    Mask,
    add_decayed_weights,
    bias_correction,
    scale_by_learning_rate,
    scale_by_momentum,
    scale_by_rms,
    scale_by_stddev,
)

__all__ = ["adam", "adamw", "gd", "gdm", "rmsprop", "scale_by_adam", "sgd"]


@cached_factory
def gd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    r"""Plain gradient descent: $\theta_{t+1} = \theta_t - \eta\, g_t$."""
    return scale_by_learning_rate(learning_rate)


@cached_factory
def gdm(learning_rate: ScalarOrSchedule, momentum: float = 0.0) -> GradientTransformation:
    r"""The chapter's gradient descent with (damped) momentum.

    $$ m_t = \beta\, m_{t-1} + (1 - \beta)\, g_t, \qquad \theta_{t+1} = \theta_t - \eta\, m_t $$

    ``momentum=0`` is plain gradient descent. Note the ``1 − β`` damping: this is not
    the heavy-ball momentum of :func:`sgd`.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.gdm(learning_rate=3.0, momentum=0.9)
        >>> state = tx.init({"w": jnp.zeros(2)})
    """
    return chain(
        scale_by_momentum(momentum, damped=True),  # m = β m + (1 − β) g
        scale_by_learning_rate(learning_rate),  # θ ← θ − η m
    )


@cached_factory
def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""Stochastic gradient descent with optional heavy-ball or Nesterov momentum.

    $$ m_t = \beta\, m_{t-1} + g_t, \qquad \theta_{t+1} = \theta_t - \eta\, m_t $$

    (with ``nesterov``: $\theta_{t+1} = \theta_t - \eta (\beta m_t + g_t)$). Equal to
    ``optax.sgd`` and to ``torch.optim.SGD(momentum=β, nesterov=...)``.
    """
    return chain(
        scale_by_momentum(momentum, damped=False, nesterov=nesterov, moment_dtype=accumulator_dtype)
        if momentum is not None
        else identity(),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""RMSProp: normalise each coordinate by the RMS of its recent gradients.

    $$ v_t = \beta\, v_{t-1} + (1 - \beta)\, g_t^2, \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{g_t}{\sqrt{v_t + \epsilon}} $$

    ``eps=0`` is the chapter's RMSProp exactly; ``eps_in_sqrt=False`` puts ε outside
    the root as ``torch.optim.RMSprop`` does. ``centered`` divides by the standard
    deviation instead, and ``momentum`` adds a heavy-ball trace after the learning
    rate (as optax does). Equal to ``optax.rmsprop`` with the same arguments.
    """
    precondition = (scale_by_stddev if centered else scale_by_rms)(
        decay,
        eps,
        eps_in_sqrt=eps_in_sqrt,
        bias_correction=bias_correction,
        initial_scale=initial_scale,
    )
    return chain(
        precondition,  # g / sqrt(v + ε)
        scale_by_learning_rate(learning_rate),  # −η ·
        scale_by_momentum(momentum, damped=False, nesterov=nesterov)
        if momentum is not None
        else identity(),
    )


@cached_factory
def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Adam's direction: bias-corrected momentum over bias-corrected RMS.

    $$ m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
       u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon} $$

    Built as ``scale_by_rms`` (which measures ``v`` on the raw gradient) applied to a
    ``numerator`` that is ``scale_by_momentum`` followed by ``bias_correction``. See
    ``docs/design.md`` for why a plain chain of the two is not Adam.
    """
    first_moment = chain(
        scale_by_momentum(b1, damped=True, moment_dtype=mu_dtype),  # m = β₁ m + (1 − β₁) g
        bias_correction(b1),  # m̂ = m / (1 − β₁ᵗ)
    )
    return scale_by_rms(  # m̂ / (sqrt(v̂) + ε)
        b2,  # v = β₂ v + (1 − β₂) g²
        eps,
        eps_in_sqrt=False,
        eps_root=eps_root,
        bias_correction=True,  # v̂ = v / (1 − β₂ᵗ)
        numerator=first_moment,
    )


@cached_factory
def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Adam (Kingma & Ba, 2015), exactly as in the chapter.

    $$ \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon},
       \quad \hat m_t = \frac{m_t}{1-\beta_1^t},\quad \hat v_t = \frac{v_t}{1-\beta_2^t} $$

    with ``m`` and ``v`` the exponential averages of ``g`` and ``g²`` (see
    :func:`scale_by_adam`) and ``t`` counted from 1 at the first update.

    Args:
        learning_rate: η, a number or a schedule.
        b1: β₁ in ``[0, 1)``.
        b2: β₂ in ``[0, 1)``.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε added inside the root (helps when differentiating through Adam).
        mu_dtype: dtype of the first moment (e.g. ``jnp.bfloat16`` to save memory).

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adam(0.1)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        >>> updates, state = tx.update(grads, state, params)
        >>> funcopt.apply_updates(params, updates)["w"]
        Array([ 0.9, -1.9], dtype=float32)
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype),  # m̂ / (sqrt(v̂) + ε)
        scale_by_learning_rate(learning_rate),  # θ ← θ − η ·
    )


@cached_factory
def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 1e-4,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""AdamW (Loshchilov & Hutter): Adam with decoupled weight decay.

    $$ \theta_{t+1} = \theta_t - \eta \left( \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}
       + \lambda\, \theta_t \right) $$

    The decay is added after Adam's preconditioner, so it is not rescaled by
    ``1/sqrt(v̂)`` as an L2 term in the loss would be. ``mask`` selects the leaves that
    decay (see :func:`add_decayed_weights`).
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype),  # m̂ / (sqrt(v̂) + ε)
        add_decayed_weights(weight_decay, mask),  # + λ θ
        scale_by_learning_rate(learning_rate),  # θ ← θ − η ·
    )
