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
    compute_dtype,
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
    r"""Plain gradient descent: $\theta_{t+1} = \theta_t - \eta\, g_t$.

    Args:
        learning_rate: η ≥ 0, a number or a schedule (a function of the step count,
            read from 0).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.gd(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η g
        [0.8, -1.6]
    """
    return scale_by_learning_rate(learning_rate)


@cached_factory
def gdm(
    learning_rate: ScalarOrSchedule, momentum: float = 0.0, mu_dtype: Any = None
) -> GradientTransformation:
    r"""The chapter's gradient descent with (damped) momentum.

    $$ m_t = \beta\, m_{t-1} + (1 - \beta)\, g_t, \qquad \theta_{t+1} = \theta_t - \eta\, m_t $$

    ``momentum=0`` is plain gradient descent. Note the ``1 − β`` damping: this is not
    the heavy-ball momentum of :func:`sgd`.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        momentum: β in ``[0, 1)``, decay of the damped average ``m`` (``m_0 = 0``); 0 is
            plain gradient descent.
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.gdm(learning_rate=3.0, momentum=0.9)
        >>> state = tx.init({"w": jnp.zeros(2)})
        >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, state)
        >>> [round(x, 4) for x in updates["w"].tolist()]  # −η (1 − β) g at the first step
        [-0.3, 0.6]
    """
    check_decays(momentum=momentum)
    return chain(
        scale_by_momentum(momentum, damped=True, moment_dtype=mu_dtype),  # m = β m + (1 − β) g
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

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        momentum: β in ``[0, 1)`` of the (undamped) heavy-ball trace ``m`` (``m_0 = 0``),
            or ``None`` for no momentum and no momentum state.
        nesterov: step along the look-ahead ``β m_t + g_t`` (ignored without momentum).
        accumulator_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.sgd(0.1, momentum=0.9)
        >>> state = tx.init(params)
        >>> for _ in range(2):  # m = g, then m = 0.9 g + g: θ moves by 0.1 · 2.9 g
        ...     updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, state)
        ...     params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]
        [0.71, -1.71]
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
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""RMSProp: normalise each coordinate by the RMS of its recent gradients.

    $$ v_t = \beta\, v_{t-1} + (1 - \beta)\, g_t^2, \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{g_t}{\sqrt{v_t + \epsilon}} $$

    ``eps=0`` is the chapter's RMSProp exactly; ``eps_in_sqrt=False`` puts ε outside
    the root as ``torch.optim.RMSprop`` does. ``centered`` divides by the standard
    deviation instead, and ``momentum`` adds a heavy-ball trace after the learning
    rate (as optax does). Equal to ``optax.rmsprop`` with the same arguments.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        decay: β in ``[0, 1)``, decay of the average ``v`` of ``g²``.
        eps: ε ≥ 0, inside the root unless ``eps_in_sqrt=False``.
        initial_scale: ``v_0`` (0 as in optax and torch; 1 in some TensorFlow RMSProps).
        eps_in_sqrt: ``g / sqrt(v + ε)`` (True, optax) or ``g / (sqrt(v) + ε)`` (False,
            torch).
        centered: divide by ``sqrt(v − m²)``, with ``m`` the average of ``g``, instead of
            by ``sqrt(v)``.
        momentum: β in ``[0, 1)`` of a heavy-ball trace of the scaled steps, or ``None``.
        nesterov: use the Nesterov look-ahead of that trace.
        bias_correction: divide ``v`` (and ``m`` when centered) by ``1 − βᵗ``.
        mu_dtype: dtype the momentum trace is stored in (default: the parameter's); ``v``
            stays in at least float32.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.rmsprop(0.1)  # first step: v = 0.1 g², so |Δθ| = 0.1 / sqrt(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params))
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]
        [0.6838, -1.6838]
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
        scale_by_momentum(momentum, damped=False, nesterov=nesterov, moment_dtype=mu_dtype)
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

    Args:
        b1: β₁ in ``[0, 1)``, decay of the first moment ``m``.
        b2: β₂ in ``[0, 1)``, decay of the second moment ``v``.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added inside the root (helps when differentiating through Adam).
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_adam()
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params))
        >>> [round(x, 4) for x in updates["w"].tolist()]  # m̂₁ = g, v̂₁ = g²: sign(g)
        [1.0, -1.0]
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
        >>> funcopt.apply_updates(params, updates)["w"].round(4)
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

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, decay of the second moment.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added inside the root.
        mu_dtype: dtype of the first moment (default: the parameter's).
        weight_decay: λ ≥ 0; the decay is multiplied by η like the rest of the step.
        mask: which leaves decay: a pytree of bools shaped like the params, or a function
            of the params returning one; ``None`` decays every leaf.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adamw(0.1, weight_decay=0.5)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η (sign(g) + λ θ)
        [0.85, -1.8]
    """
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
        scale_by_momentum(b2, damped=True, moment_dtype=compute_dtype),  # v = β₂ v + (1 − β₂) g²
        bias_correction(b2) if debiased else identity(),  # v̂ = v / (1 − β₂ᵗ)
    )


def _masked(tx: Any, mask: Any) -> Any:
    """``tx`` on the leaves selected by ``mask`` (``True`` or ``None``: all of them)."""
    return tx if mask is True or mask is None else wrappers.masked(tx, mask)


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

    Args:
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, decay of the second moment.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added inside the root.
        mu_dtype: dtype of the first moment (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_nadam()
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params))
        >>> [round(x, 4) for x in updates["w"].tolist()]  # (0.9 / 1.9 + 1) · sign(g)
        [1.4737, -1.4737]
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

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, decay of the second moment.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added inside the root.
        mu_dtype: dtype of the first moment (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> state = funcopt.nadam(1e-3).init({"w": jnp.zeros(3)})
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.nadam(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # first step 1.4737 η: see scale_by_nadam
        [0.8526, -1.8526]
    """
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

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, decay of the second moment.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added inside the root.
        mu_dtype: dtype of the first moment (default: the parameter's).
        weight_decay: λ ≥ 0; the decay is multiplied by η like the rest of the step.
        mask: which leaves decay: a pytree of bools shaped like the params, or a function
            of the params returning one; ``None`` decays every leaf.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.nadamw(0.1, weight_decay=0.5)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − 0.1 (1.4737 sign(g) + 0.5 θ)
        [0.8026, -1.7526]
    """
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

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, decay of the second moment.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added inside the root.
        mu_dtype: dtype of the first moment (default: the parameter's).
        bias_correction_mu: divide ``m`` by ``1 − β₁ᵗ``.
        bias_correction_nu: divide ``v`` by ``1 − β₂ᵗ`` (before the running maximum).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.amsgrad(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # first step as Adam's: η sign(g)
        [0.9, -1.9]
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
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, mu_dtype: Any = None
) -> GradientTransformation:
    r"""Adamax's direction: bias-corrected momentum over the decayed infinity norm.

    $$ u_t = \frac{\hat m_t}{\max(|g_t| + \epsilon, \beta_2 u_{t-1})} $$

    Args:
        b1: β₁ in ``[0, 1)``, decay of the (bias-corrected) first moment.
        b2: β₂ in ``[0, 1)``, decay of the infinity norm ``u`` (``u_0 = 0``).
        eps: ε ≥ 0 added to ``|g|`` inside the maximum, which keeps ``u`` positive.
        mu_dtype: dtype the first moment ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_adamax()
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params))
        >>> [round(x, 4) for x in updates["w"].tolist()]  # m̂₁ / u₁ = g / |g|
        [1.0, -1.0]
    """
    check_decays(b1=b1, b2=b2)
    return divide(infinity_moment(b2, eps), _debiased_momentum(b1, mu_dtype), sqrt=False)


@cached_factory
def adamax(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Adamax (Kingma & Ba, 2015, §7.1): Adam with the infinity norm in place of ``v``.

    $$ u_t = \max(|g_t| + \epsilon, \beta_2 u_{t-1}), \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{m_t / (1-\beta_1^t)}{u_t} $$

    Equal to ``optax.adamax`` and ``torch.optim.Adamax``.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, decay of the infinity norm ``u``.
        eps: ε ≥ 0 added to ``|g|`` inside the maximum.
        mu_dtype: dtype the first moment ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adamax(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η sign(g) at the first step
        [0.9, -1.9]
    """
    return chain(scale_by_adamax(b1, b2, eps, mu_dtype), scale_by_learning_rate(learning_rate))


@cached_factory
def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    mask: Mask | None = None,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Adamax with decoupled weight decay: $\theta \leftarrow \theta - \eta(\text{adamax} +
    \lambda\theta)$. Equal to ``optax.adamaxw``.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, decay of the infinity norm ``u``.
        eps: ε ≥ 0 added to ``|g|`` inside the maximum.
        weight_decay: λ ≥ 0; the decay is multiplied by η like the rest of the step.
        mask: which leaves decay: a pytree of bools shaped like the params, or a function
            of the params returning one; ``None`` decays every leaf.
        mu_dtype: dtype the first moment ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adamaxw(0.1, weight_decay=0.5)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η (sign(g) + λ θ)
        [0.85, -1.8]
    """
    return chain(
        scale_by_adamax(b1, b2, eps, mu_dtype),
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

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        initial_accumulator_value: ``s_0`` ≥ 0.
        eps: ε ≥ 0 added inside the root.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adagrad(0.1, initial_accumulator_value=0.0)
        >>> state = tx.init(params)
        >>> for _ in range(2):  # s = g², then 2 g²: θ moves by 0.1 (1 + 1/√2) sign(g)
        ...     updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, state)
        ...     params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]
        [0.8293, -1.8293]
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

    Args:
        learning_rate: η ≥ 0, a number or a schedule; ``None`` means η = 1.
        rho: ρ in ``[0, 1)``, decay of both averages ``v`` and ``x``.
        eps: ε ≥ 0 added inside both roots.
        weight_decay: λ ≥ 0 of an L2 term ``λ θ`` added to the gradient before scaling.
        weight_decay_mask: which leaves decay: a pytree of bools shaped like the params,
            or a function of the params returning one; ``None`` decays every leaf.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adadelta()  # x₀ = 0: the first step is about sqrt(ε / (1 − ρ))
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 6) for x in updates["w"].tolist()]
        [-0.003162, 0.003162]
    """
    check_decays(rho=rho)
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),  # g + λ θ
        divide(
            chain(square(), scale_by_momentum(rho, moment_dtype=compute_dtype)), eps_root=eps
        ),  # g / sqrt(v + ε), v in at least float32
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
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""AdaBelief (Zhuang et al., 2020): Adam with the variance of the surprise ``g − m``.

    $$ s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}, \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat s_t} + \epsilon} $$

    ``nesterov`` uses NAdam's numerator. Equal to ``optax.adabelief``; the state keeps
    ``m`` twice (numerator and :func:`belief_moment`), the price of composing.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment ``m``.
        b2: β₂ in ``[0, 1)``, decay of the belief ``s``.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added to ``s`` at every step (it accumulates, as in the paper).
        nesterov: use NAdam's look-ahead numerator (keyword only).
        mu_dtype: dtype both copies of ``m`` are stored in (default: the parameter's;
            keyword only).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adabelief(0.1)  # ŝ₁ = (g − m₁)² = (0.9 g)²
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η sign(g) / 0.9
        [0.8889, -1.8889]
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        divide(
            chain(belief_moment(b1, b2, eps_root, mu_dtype), bias_correction(b2)),  # ŝ
            _debiased_momentum(b1, mu_dtype, nesterov=nesterov),  # m̂
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
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""RAdam (Liu et al., 2020): Adam whose step is rectified by :func:`rectify`.

    $$ \theta_{t+1} = \theta_t - \eta \begin{cases} r_t\, \hat m_t / (\sqrt{\hat v_t +
       \epsilon_{root}} + \epsilon) & \rho_t \ge \text{threshold} \\ \hat m_t &
       \text{otherwise} \end{cases} $$

    Equal to ``optax.radam``. ``torch.optim.RAdam`` adds ε to ``sqrt(v)`` before the
    bias correction (equal for ε = 0). The state keeps ``m`` twice (adaptive step and
    fallback), the price of a composable rectification.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, decay of the second moment; it also sets ``ρ_t``.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added inside the root.
        threshold: smallest ``ρ_t`` that takes the adaptive step (5 as optax, 4 in the
            paper); below it the step is the bias-corrected momentum ``m̂``.
        nesterov: use NAdam's look-ahead numerator in both branches (keyword only).
        mu_dtype: dtype both copies of ``m`` are stored in (default: the parameter's;
            keyword only).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.radam(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # ρ₁ = 1 < 5: θ − η m̂₁ = θ − η g
        [0.8, -1.6]
    """
    adaptive = (scale_by_nadam if nesterov else scale_by_adam)(b1, b2, eps, eps_root, mu_dtype)
    return chain(
        rectify(adaptive, _debiased_momentum(b1, mu_dtype, nesterov=nesterov), b2, threshold),
        scale_by_learning_rate(learning_rate),
    )


@cached_factory
def yogi(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Yogi (Zaheer et al., 2018): Adam with an additive second-moment update.

    $$ v_t = v_{t-1} - (1-\beta_2)\operatorname{sign}(v_{t-1} - g_t^2) g_t^2, \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} $$

    with ``v₀ = 10⁻⁶``. Deliberate difference from ``optax.yogi``: ``m₀ = 0`` as in the
    paper's Algorithm 2 (optax starts ``m`` at 10⁻⁶ too, so its first steps differ by
    about 10⁻⁵ relative; the trajectories agree to ~10⁻⁶ after a few hundred steps).

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, rate of the additive second moment ``v``.
        eps: ε ≥ 0 added outside the root (larger than Adam's by default).
        mu_dtype: dtype the first moment ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.yogi(0.1)  # ε = 10⁻³ and v₀ = 10⁻⁶ show at 10⁻⁴
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # about Adam's θ − η sign(g)
        [0.9001, -1.9]
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        divide(
            chain(yogi_moment(b2, 1e-6), bias_correction(b2)),  # v̂
            _debiased_momentum(b1, mu_dtype),  # m̂
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

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, the interpolation rate of the signed direction.
        b2: β₂ in ``[0, 1)``, the decay of the tracked momentum ``m``.
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).
        weight_decay: λ ≥ 0; the decay is multiplied by η like the signed step.
        mask: which leaves decay: a pytree of bools shaped like the params, or a function
            of the params returning one; ``None`` decays every leaf.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.lion(0.1, weight_decay=0.5)
        >>> updates, state = tx.update({"w": jnp.array([0.001, -50.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η (sign(g) + λ θ)
        [0.85, -1.8]
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
    \operatorname{sign}(g_t)$. Equal to ``optax.sign_sgd``.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.sign_sgd(0.1)
        >>> updates, state = tx.update({"w": jnp.array([0.001, -50.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # each coordinate moves by exactly η
        [0.9, -1.9]
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


@cached_factory
def signum(
    learning_rate: ScalarOrSchedule, beta: float = 0.9, accumulator_dtype: Any = None
) -> GradientTransformation:
    r"""Signum (Bernstein et al., 2018): the sign of the (damped) momentum.

    $$ m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad \theta_{t+1} = \theta_t - \eta\,
       \operatorname{sign}(m_t) $$

    Equal to ``optax.signum``.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        beta: β in ``[0, 1)``, decay of the damped momentum ``m`` (``m_0 = 0``).
        accumulator_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.signum(0.1)
        >>> state = tx.init(params)
        >>> for g in ([1.0, -1.0], [-0.5, 0.5]):  # m₂ = 0.09 − 0.05 keeps the sign of g₁
        ...     updates, state = tx.update({"w": jnp.array(g)}, state)
        ...     params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]
        [0.8, -1.8]
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
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""LAMB (You et al., 2020): AdamW's step rescaled per layer by the trust ratio.

    $$ r_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} + \lambda \theta_t, \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{\lVert\theta_t\rVert}{\lVert r_t\rVert} r_t $$

    Equal to ``optax.lamb``.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the first moment.
        b2: β₂ in ``[0, 1)``, decay of the second moment.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added inside the root.
        weight_decay: λ ≥ 0, added to Adam's direction before the trust ratio.
        mask: which leaves decay: a pytree of bools shaped like the params, or a function
            of the params returning one; ``None`` decays every leaf.
        mu_dtype: dtype the first moment ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([3.0, -4.0])}
        >>> tx = funcopt.lamb(0.1)
        >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)
        >>> round(float(jnp.linalg.norm(updates["w"])), 4)  # each leaf's step is η ‖θ‖
        0.5
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype),
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
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""LARS (You et al., 2017): heavy-ball SGD on layer-wise trust-ratio-scaled steps.

    $$ r_t = g_t + \lambda\theta_t,\quad
       m_t = \beta m_{t-1} + \eta\, \frac{c \lVert\theta_t\rVert}{\lVert r_t\rVert + \epsilon}
       r_t,\quad \theta_{t+1} = \theta_t - m_t $$

    The masks (``True``: every leaf) select the leaves that decay and that are
    rescaled. Equal to ``optax.lars``.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        weight_decay: λ ≥ 0 of the ``λ θ`` added to the gradient before the trust ratio.
        weight_decay_mask: which leaves decay: ``True`` or ``None`` (every leaf), a pytree of bools
            shaped like the params, or a function of the params returning one.
        trust_coefficient: ``c`` ≥ 0 (a leaf whose ``θ`` or ``r`` is zero keeps ratio 1).
        eps: ε ≥ 0 added to ``‖r_t‖``.
        trust_ratio_mask: which leaves are rescaled, as ``weight_decay_mask``.
        momentum: β in ``[0, 1)`` of the heavy-ball trace ``m``.
        nesterov: use the Nesterov look-ahead of that trace.
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([3.0, -4.0])}  # ‖θ‖ = 5
        >>> tx = funcopt.lars(0.1, trust_coefficient=1.0)
        >>> updates, state = tx.update({"w": jnp.array([0.3, -0.4])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η c ‖θ‖ g / ‖g‖
        [2.7, -3.6]
    """
    check_decays(momentum=momentum)
    return chain(
        _masked(add_decayed_weights(weight_decay), weight_decay_mask),
        _masked(
            scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps), trust_ratio_mask
        ),
        scale_by_learning_rate(learning_rate),
        scale_by_momentum(momentum, damped=False, nesterov=nesterov, moment_dtype=mu_dtype),
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

    Args:
        learning_rate: η_lr ≥ 0, a number or a schedule; it scales the noise too.
        eta: η ≥ 0, the noise variance at the first step (not a learning rate).
        gamma: γ ≥ 0, how fast the variance decays.
        key: a PRNG key or an integer seed; ``None`` means seed 0.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.noisy_sgd(0.1, eta=0.0)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # no noise: plain gradient descent
        [0.8, -1.6]
        >>> tx = funcopt.noisy_sgd(0.1, key=42)  # the same key draws the same noise
        >>> g = {"w": jnp.zeros(2)}
        >>> a, _ = tx.update(g, tx.init(params))
        >>> b, _ = tx.update(g, tx.init(params))
        >>> bool(jnp.all(a["w"] == b["w"])), bool(jnp.any(a["w"] != 0))
        (True, True)
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
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""NovoGrad (Ginsburg et al., 2019): layer-wise normalised heavy-ball momentum.

    $$ \nu_t = \beta_2 \nu_{t-1} + (1-\beta_2) \lVert g_t\rVert^2\ (\nu_1 = \lVert g_1\rVert^2),
       \quad m_t = \beta_1 m_{t-1} + \frac{g_t}{\sqrt{\nu_t} + \epsilon} + \lambda\theta_t,
       \quad \theta_{t+1} = \theta_t - \eta\, m_t $$

    with one ``ν`` per leaf. Equal to ``optax.novograd``.

    Args:
        learning_rate: η ≥ 0, a number or a schedule.
        b1: β₁ in ``[0, 1)``, decay of the (undamped) heavy-ball momentum ``m``.
        b2: β₂ in ``[0, 1)``, decay of each leaf's ``ν``.
        eps: ε ≥ 0 added outside the root.
        eps_root: ε ≥ 0 added inside the root.
        weight_decay: λ ≥ 0 of the ``λ θ`` added to the normalised gradient (every leaf).
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.novograd(0.1)
        >>> updates, state = tx.update({"w": jnp.array([3.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η g / ‖g‖ at the first step
        [0.94, -1.92]
    """
    check_decays(b1=b1, b2=b2)
    return chain(
        scale_by_layerwise_rms(b2, eps, eps_root),  # g / (sqrt(ν) + ε)
        add_decayed_weights(weight_decay),  # + λ θ
        scale_by_momentum(b1, damped=False, moment_dtype=mu_dtype),  # m = β₁ m + ·
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

    Args:
        learning_rate: η ≥ 0, a number or a schedule; ``None`` means η = 1.
        min_dim_size_to_factor: factor a leaf of rank ≥ 2 only if its second largest
            axis is at least this long; other leaves keep a full ``V``.
        decay_rate: the exponent ``c`` > 0 of the decay ``β_t = 1 − t^{−c}``.
        decay_offset: steps subtracted from the count in ``β_t`` (with a fresh state,
            any offset > 0 gives NaN for the first steps, as in optax).
        multiply_by_parameter_scale: multiply each leaf's step by ``max(RMS(θ), 10⁻³)``.
        clipping_threshold: ``d`` > 0, the largest RMS a leaf's step may keep, or
            ``None`` for no clipping.
        momentum: β in ``[0, 1)`` of a damped average of the scaled steps (no bias
            correction), or ``None``.
        dtype_momentum: dtype that average is stored in.
        weight_decay_rate: λ ≥ 0 of ``λ θ`` added after the learning rate (so not
            multiplied by η), or ``None``.
        eps: ε ≥ 0 added to ``g²``.
        factored: ``False`` keeps a full ``V`` for every leaf.
        weight_decay_mask: which leaves decay: a pytree of bools shaped like the
            params, or a function of the params returning one; ``None`` decays every leaf.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([2.0, -2.0])}  # RMS(θ) = 2
        >>> tx = funcopt.adafactor(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η RMS(θ) sign(g)
        [1.8, -1.8]
        >>> state = tx.init({"m": jnp.zeros((256, 128))})  # factored: row and column stats
        >>> state[0].v_row["m"].shape, state[0].v_col["m"].shape
        ((128,), (256,))
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
