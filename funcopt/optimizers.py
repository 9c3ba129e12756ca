"""The chapter's optimizers, each a short composition of :mod:`funcopt.primitives`.

No optimizer here has math of its own: each reads, in order, like the update equations
of the chapter. Signatures and defaults follow optax wherever optax has the same
optimizer, so ``funcopt.adam(1e-3)`` and ``optax.adam(1e-3)`` are interchangeable.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from funcopt import clipping, wrappers
from funcopt.base import (
    GradientTransformation,
    ScalarOrSchedule,
    cached_factory,
    chain,
    check_decays,
    identity,
)
from funcopt.primitives import (
    Mask,
    add_decayed_weights,
    bias_correction,
    scale,
    scale_by_learning_rate,
    scale_by_momentum,
    scale_by_rms,
    scale_by_stddev,
)
from funcopt.transforms import (
    belief_moment,
    divide,
    infinity_moment,
    lion_momentum,
    nesterov_momentum,
    rectify,
    running_max,
    scale_by_delta_rms,
    scale_by_factored_rms,
    scale_by_layerwise_rms,
    scale_by_param_block_rms,
    scale_by_sign,
    scale_by_trust_ratio,
    square,
    sum_of_squares,
    yogi_moment,
)

__all__ = [
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "amsgrad",
    "gd",
    "gdm",
    "lamb",
    "lars",
    "lion",
    "nadam",
    "nadamw",
    "noisy_sgd",
    "novograd",
    "radam",
    "rmsprop",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_nadam",
    "sgd",
    "sign_sgd",
    "signum",
    "yogi",
]


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
    check_decays(momentum=momentum)
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
    check_decays(momentum=momentum)
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
    check_decays(momentum=momentum)
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
    check_decays(b1=b1, b2=b2)
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
    check_decays(b1=b1, b2=b2)
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
    check_decays(b1=b1, b2=b2)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype),  # m̂ / (sqrt(v̂) + ε)
        add_decayed_weights(weight_decay, mask),  # + λ θ
        scale_by_learning_rate(learning_rate),  # θ ← θ − η ·
    )


# ======================================================================================
# Beyond the chapter. Each optimizer below keeps optax's signature and defaults and is
# a composition of funcopt.primitives and funcopt.transforms, in equation order.
# ======================================================================================


def _debiased_momentum(b1: float, mu_dtype: Any = None, nesterov: bool = False) -> Any:
    """``m̂ = m / (1 − β₁ᵗ)`` or, with ``nesterov``, its look-ahead (see nesterov_momentum)."""
    if nesterov:
        return nesterov_momentum(b1, mu_dtype)
    return chain(scale_by_momentum(b1, damped=True, moment_dtype=mu_dtype), bias_correction(b1))


def _second_moment(b2: float, debiased: bool = True) -> Any:
    """``v̂ = v / (1 − β₂ᵗ)`` with ``v`` the EMA of ``g²`` (``v`` itself if not debiased)."""
    return chain(
        square(),  # g²
        scale_by_momentum(b2, damped=True),  # v = β₂ v + (1 − β₂) g²
        bias_correction(b2) if debiased else identity(),  # v̂ = v / (1 − β₂ᵗ)
    )


def _masked(tx: Any, mask: Any) -> Any:
    """``tx`` on the leaves selected by ``mask`` (``True``: all of them)."""
    return tx if mask is True else wrappers.masked(tx, mask)


@cached_factory
def scale_by_nadam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""NAdam's direction: :func:`scale_by_adam` with the Nesterov look-ahead numerator.

    $$ u_t = \frac{\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)}
                  {\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} $$

    Equal to ``optax.scale_by_adam(..., nesterov=True)``.
    """
    check_decays(b1=b1, b2=b2)
    return scale_by_rms(
        b2,
        eps,
        eps_in_sqrt=False,
        eps_root=eps_root,
        bias_correction=True,  # v̂ = v / (1 − β₂ᵗ)
        numerator=nesterov_momentum(b1, mu_dtype),  # β₁ m̂ₜ₊₁ + (1 − β₁) ĝ
    )


@cached_factory
def nadam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""NAdam (Dozat, 2016): Adam with a Nesterov look-ahead first moment.

    $$ \theta_{t+1} = \theta_t - \eta\, \frac{\beta_1 \hat m_{t+1} + (1-\beta_1) \hat g_t}
       {\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} $$

    where the hats divide by ``1 − β₁ᵗ⁺¹`` and ``1 − β₁ᵗ``. Arguments as :func:`adam`.
    Equal to ``optax.nadam``. ``torch.optim.NAdam`` differs: it decays β₁ over time
    (``momentum_decay``) and no setting gives a constant β₁.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> state = funcopt.nadam(1e-3).init({"w": jnp.zeros(3)})
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        scale_by_nadam(b1, b2, eps, eps_root, mu_dtype), scale_by_learning_rate(learning_rate)
    )


@cached_factory
def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 1e-4,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""NAdamW: :func:`nadam` with decoupled weight decay, as :func:`adamw` is to adam.

    $$ \theta_{t+1} = \theta_t - \eta\,\big(\text{nadam direction} + \lambda \theta_t\big) $$

    Equal to ``optax.nadamw`` and to ``torch.optim.NAdam(decoupled_weight_decay=True)``
    up to torch's β₁ schedule (see :func:`nadam`).
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        scale_by_nadam(b1, b2, eps, eps_root, mu_dtype),
        add_decayed_weights(weight_decay, mask),  # + λ θ
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> GradientTransformation:
    r"""AMSGrad (Reddi et al., 2018): Adam dividing by the largest second moment so far.

    $$ \hat v^{max}_t = \max(\hat v^{max}_{t-1}, \hat v_t), \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat v^{max}_t + \epsilon_{root}}
       + \epsilon} $$

    The maximum is taken over the bias-corrected ``v̂`` (as optax); torch's
    ``Adam(amsgrad=True)`` takes it over ``v`` and corrects afterwards, which is the same
    composition with :func:`running_max` and :func:`bias_correction` swapped.
    ``bias_correction_mu`` / ``_nu`` turn off either correction. Equal to optax.amsgrad.
    """
    check_decays(b1=b1, b2=b2)
    numerator = chain(
        scale_by_momentum(b1, damped=True, moment_dtype=mu_dtype),  # m
        bias_correction(b1) if bias_correction_mu else identity(),  # m̂
    )
    return chain(
        divide(
            chain(_second_moment(b2, bias_correction_nu), running_max()),  # max v̂
            numerator,
            eps=eps,
            eps_root=eps_root,
        ),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def scale_by_adamax(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    r"""Adamax's direction: bias-corrected momentum over the decayed infinity norm.

    $$ u_t = \frac{\hat m_t}{\max(|g_t| + \epsilon, \beta_2 u_{t-1})} $$
    """
    check_decays(b1=b1, b2=b2)
    return divide(infinity_moment(b2, eps), _debiased_momentum(b1), sqrt=False)


@cached_factory
def adamax(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    r"""Adamax (Kingma & Ba, 2015, §7.1): Adam with the infinity norm in place of ``v``.

    $$ u_t = \max(|g_t| + \epsilon, \beta_2 u_{t-1}), \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{m_t / (1-\beta_1^t)}{u_t} $$

    Equal to ``optax.adamax`` and ``torch.optim.Adamax``.
    """
    check_decays(b1=b1, b2=b2)
    return chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))


@cached_factory
def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""Adamax with decoupled weight decay: $\theta \leftarrow \theta - \eta(\text{adamax} +
    \lambda\theta)$. Equal to ``optax.adamaxw``."""
    check_decays(b1=b1, b2=b2)
    return chain(
        scale_by_adamax(b1, b2, eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> GradientTransformation:
    r"""Adagrad (Duchi et al., 2011): divide by the root of all squared gradients so far.

    $$ s_t = s_{t-1} + g_t^2, \qquad \theta_{t+1} = \theta_t - \eta\, \frac{g_t}{\sqrt{s_t
       + \epsilon}} $$

    Equal to ``optax.adagrad``, except that optax returns 0 where ``s_t = 0`` (only
    possible with a zero initial value) and funcopt returns ``0 / sqrt(ε)``, 0 too unless
    ε = 0. ``torch.optim.Adagrad`` puts ε outside the root (equal for ε = 0).
    """
    return chain(
        divide(sum_of_squares(initial_accumulator_value), eps_root=eps),  # g / sqrt(s + ε)
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    weight_decay_mask: Mask | None = None,
) -> GradientTransformation:
    r"""Adadelta (Zeiler, 2012): a step with the units of the parameters.

    $$ v_t = \rho v_{t-1} + (1-\rho) g_t^2,\quad
       u_t = \frac{\sqrt{x_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t,\quad
       x_t = \rho x_{t-1} + (1-\rho) u_t^2,\quad \theta_{t+1} = \theta_t - \eta\, u_t $$

    ``learning_rate=None`` means η = 1, Zeiler's method (optax's ``None`` fails; torch's
    default is 1.0). Weight decay is added to the gradient first, as in optax and torch.
    Equal to ``optax.adadelta`` and ``torch.optim.Adadelta``.
    """
    check_decays(rho=rho)
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),  # g + λ θ
        divide(chain(square(), scale_by_momentum(rho)), eps_root=eps),  # g / sqrt(v + ε)
        scale_by_delta_rms(rho, eps),  # · sqrt(x + ε)
        scale_by_learning_rate(1.0 if learning_rate is None else learning_rate),
    )


@cached_factory
def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""AdaBelief (Zhuang et al., 2020): Adam with the variance of the surprise ``g − m``.

    $$ s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}, \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat s_t} + \epsilon} $$

    ``nesterov`` uses NAdam's numerator. Equal to ``optax.adabelief``; the state keeps
    ``m`` twice (numerator and :func:`belief_moment`), the price of composing.
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        divide(
            chain(belief_moment(b1, b2, eps_root), bias_correction(b2)),  # ŝ
            _debiased_momentum(b1, nesterov=nesterov),  # m̂
            eps=eps,
        ),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def radam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""RAdam (Liu et al., 2020): Adam whose step is rectified by :func:`rectify`.

    $$ \theta_{t+1} = \theta_t - \eta \begin{cases} r_t\, \hat m_t / (\sqrt{\hat v_t +
       \epsilon_{root}} + \epsilon) & \rho_t \ge \text{threshold} \\ \hat m_t &
       \text{otherwise} \end{cases} $$

    Equal to ``optax.radam``. ``torch.optim.RAdam`` adds ε to ``sqrt(v)`` before the
    bias correction (equal for ε = 0). The state keeps ``m`` twice (adaptive step and
    fallback), the price of a composable rectification.
    """
    check_decays(b1=b1, b2=b2)
    adaptive = (scale_by_nadam if nesterov else scale_by_adam)(b1, b2, eps, eps_root)
    return chain(
        rectify(adaptive, _debiased_momentum(b1, nesterov=nesterov), b2, threshold),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def yogi(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-3
) -> GradientTransformation:
    r"""Yogi (Zaheer et al., 2018): Adam with an additive second-moment update.

    $$ v_t = v_{t-1} - (1-\beta_2)\operatorname{sign}(v_{t-1} - g_t^2) g_t^2, \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} $$

    with ``v₀ = 10⁻⁶``. Deliberate difference from ``optax.yogi``: ``m₀ = 0`` as in the
    paper's Algorithm 2 (optax starts ``m`` at 10⁻⁶ too, so its first steps differ by
    about 10⁻⁵ relative; the trajectories agree to ~10⁻⁶ after a few hundred steps).
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        divide(
            chain(yogi_moment(b2, 1e-6), bias_correction(b2)),  # v̂
            _debiased_momentum(b1),  # m̂
            eps=eps,
        ),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any = None,
    weight_decay: float = 1e-3,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""Lion (Chen et al., 2023): the sign of a two-rate momentum, with decoupled decay.

    $$ u_t = \operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t), \quad
       m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t, \quad
       \theta_{t+1} = \theta_t - \eta (u_t + \lambda \theta_t) $$

    Equal to ``optax.lion``.
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        lion_momentum(b1, b2, mu_dtype),
        scale_by_sign(),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    r"""signSGD (Bernstein et al., 2018): $\theta_{t+1} = \theta_t - \eta\,
    \operatorname{sign}(g_t)$. Equal to ``optax.sign_sgd``."""
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


@cached_factory
def signum(
    learning_rate: ScalarOrSchedule, beta: float = 0.9, accumulator_dtype: Any = None
) -> GradientTransformation:
    r"""Signum (Bernstein et al., 2018): the sign of the (damped) momentum.

    $$ m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad \theta_{t+1} = \theta_t - \eta\,
       \operatorname{sign}(m_t) $$

    Equal to ``optax.signum``.
    """
    check_decays(beta=beta)
    return chain(
        scale_by_momentum(beta, damped=True, moment_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""LAMB (You et al., 2020): AdamW's step rescaled per layer by the trust ratio.

    $$ r_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} + \lambda \theta_t, \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{\lVert\theta_t\rVert}{\lVert r_t\rVert} r_t $$

    Equal to ``optax.lamb``.
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Any = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""LARS (You et al., 2017): heavy-ball SGD on layer-wise trust-ratio-scaled steps.

    $$ r_t = g_t + \lambda\theta_t,\quad
       m_t = \beta m_{t-1} + \eta\, \frac{c \lVert\theta_t\rVert}{\lVert r_t\rVert + \epsilon}
       r_t,\quad \theta_{t+1} = \theta_t - m_t $$

    The masks (``True``: every leaf) select the leaves that decay and that are
    rescaled. Equal to ``optax.lars``.
    """
    check_decays(momentum=momentum)
    return chain(
        _masked(add_decayed_weights(weight_decay), weight_decay_mask),
        _masked(
            scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps), trust_ratio_mask
        ),
        scale_by_learning_rate(learning_rate),
        scale_by_momentum(momentum, damped=False, nesterov=nesterov),
    )


@cached_factory
def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: float = 0.01,
    gamma: float = 0.55,
    key: Any = None,
) -> GradientTransformation:
    r"""Noisy SGD (Neelakantan et al., 2015): annealed Gaussian noise on the gradient.

    $$ \theta_{t+1} = \theta_t - \eta_{lr} (g_t + \sigma_t \xi_t), \qquad
       \sigma_t^2 = \frac{\eta}{t^\gamma},\ \xi_t \sim \mathcal N(0, I) $$

    Built on :func:`funcopt.add_noise`; optax's deprecated ``seed`` argument is not kept.
    Equal to ``optax.noisy_sgd`` with the same key.
    """
    return chain(clipping.add_noise(eta, gamma, key), scale_by_learning_rate(learning_rate))


@cached_factory
def novograd(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    r"""NovoGrad (Ginsburg et al., 2019): layer-wise normalised heavy-ball momentum.

    $$ \nu_t = \beta_2 \nu_{t-1} + (1-\beta_2) \lVert g_t\rVert^2\ (\nu_1 = \lVert g_1\rVert^2),
       \quad m_t = \beta_1 m_{t-1} + \frac{g_t}{\sqrt{\nu_t} + \epsilon} + \lambda\theta_t,
       \quad \theta_{t+1} = \theta_t - \eta\, m_t $$

    with one ``ν`` per leaf. Equal to ``optax.novograd``.
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        scale_by_layerwise_rms(b2, eps, eps_root),  # g / (sqrt(ν) + ε)
        add_decayed_weights(weight_decay),  # + λ θ
        scale_by_momentum(b1, damped=False),  # m = β₁ m + ·
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: float | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Mask | None = None,
) -> GradientTransformation:
    r"""Adafactor (Shazeer & Stern, 2018): factored second moments, relative step sizes.

    $$ u_t = \frac{g_t}{\sqrt{\hat V_t}}\ \text{(}\hat V\text{ factored, see
       scale\_by\_factored\_rms)},\quad u_t \leftarrow \frac{u_t}{\max(1,
       \mathrm{RMS}(u_t)/d)},\quad \theta_{t+1} = \theta_t - \eta\, \mathrm{RMS}(\theta_t)\, u_t $$

    then optional momentum and weight decay; each stage is skipped when its argument is
    ``None`` / ``False``. Equal to ``optax.adafactor``.
    """
    check_decays(momentum=momentum)
    return chain(
        scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps),
        clipping.clip_by_block_rms(clipping_threshold)
        if clipping_threshold is not None
        else identity(),
        scale_by_learning_rate(learning_rate, flip_sign=False)
        if learning_rate is not None
        else identity(),
        scale_by_param_block_rms() if multiply_by_parameter_scale else identity(),
        scale_by_momentum(momentum, damped=True, moment_dtype=dtype_momentum)
        if momentum is not None
        else identity(),
        add_decayed_weights(weight_decay_rate, weight_decay_mask)
        if weight_decay_rate is not None
        else identity(),
        scale(-1),  # descend
    )
