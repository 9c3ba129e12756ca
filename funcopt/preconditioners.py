"""The adaptive directions: one :class:`~funcopt.precondition` each, in equation order.

Every adaptive optimizer divides a statistic of the gradient (the gradient itself, or a
bias-corrected momentum) by the root of another (a second moment). Each direction below is
that one mechanism with its own two statistics, under optax's name and signature:

| direction | numerator | denominator |
| --- | --- | --- |
| `scale_by_rms` | `g` | `v`, the average of `g²` |
| `scale_by_adam` | `m̂`, the bias-corrected momentum | `v̂` |
| `scale_by_nadam` | the Nesterov look-ahead of `m̂` | `v̂` |
| `scale_by_amsgrad` | `m̂` | `max_{k≤t} v̂_k` |
| `scale_by_belief` | `m̂` | `ŝ`, the average of `(g − m)²` |
| `scale_by_yogi` | `m̂` | Yogi's additive `v̂` |
| `scale_by_adamax` | `m̂` | the infinity norm (no root) |
| `scale_by_rss` | `g` | `Σ g²` (Adagrad) |
| `scale_by_stddev` | `g` | `v̂ − m̂²` (centered RMSProp) |

RAdam is :func:`~funcopt.rectify` of Adam's direction; Adadelta multiplies RMSProp's by
:class:`~funcopt.scale_by_delta_rms`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import GradientTransformation, Updates
from funcopt.combine import chain, identity, precondition, rectify
from funcopt.lifting import Leafwise, abs2, compute_dtype, moment_like, second_moment_like
from funcopt.moments import (
    belief_moment,
    bias_correction,
    infinity_norm,
    nesterov_momentum,
    running_max,
    scale_by_momentum,
    second_moment,
    sum_of_squares,
    yogi_moment,
)
from funcopt.scaling import scale_by_delta_rms
from funcopt.validation import (
    BOOL,
    DECAY,
    DTYPE,
    NONNEGATIVE,
    hyperparameters,
    interval,
)
from funcopt.values import hyper, static

__all__ = [
    "VarianceState",
    "debiased_momentum",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_belief",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_stddev",
    "scale_by_yogi",
    "second_central_moment",
]

_ADAM = dict(b1=DECAY, b2=DECAY, eps=NONNEGATIVE, eps_root=NONNEGATIVE, mu_dtype=DTYPE)


@hyperparameters(b1=DECAY, mu_dtype=DTYPE, nesterov=BOOL)
def debiased_momentum(b1: float, mu_dtype: Any = None, nesterov: bool = False) -> Any:
    r"""Adam's numerator ``m̂ = m / (1 − β₁ᵗ)``, or with ``nesterov`` NAdam's look-ahead.

    ``chain(scale_by_momentum(β₁), bias_correction(β₁))``, or
    :class:`~funcopt.nesterov_momentum`.

    Args:
        b1: β₁ in ``[0, 1)``.
        mu_dtype: dtype ``m`` is stored in.
        nesterov: the Nesterov look-ahead.

    Example:
        >>> import funcopt
        >>> funcopt.debiased_momentum(0.9)
        chain(scale_by_momentum(), bias_correction(decay=0.9))
    """
    if nesterov:
        return nesterov_momentum(b1, mu_dtype)
    return chain(scale_by_momentum(b1, mu_dtype), bias_correction(b1))


def _debiased(moment: Any, decay: float, debias: bool = True) -> Any:
    return chain(moment, bias_correction(decay)) if debias else moment


@hyperparameters(
    decay=DECAY, eps=NONNEGATIVE, initial_scale=NONNEGATIVE, eps_in_sqrt=BOOL,
    bias_correction=BOOL,
)  # fmt: skip
def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""RMSProp's preconditioner: divide by the root of the average of squared gradients.

    $$ v_t = \beta\, v_{t-1} + (1 - \beta)\, |g_t|^2, \qquad
       u_t = \frac{g_t}{\sqrt{\hat v_t + \epsilon}} $$

    with ``v̂ = v / (1 − βᵗ)`` if ``bias_correction`` else ``v``, and ε outside the root
    (``g / (√v̂ + ε)``, torch's placement) with ``eps_in_sqrt=False``. Equal to
    ``optax.scale_by_rms``; ``eps=0`` is the chapter's RMSProp.

    Args:
        decay: β in ``[0, 1)``.
        eps: ε ≥ 0.
        initial_scale: ``v_0`` ≥ 0.
        eps_in_sqrt: ε inside the root (True) or outside.
        bias_correction: divide ``v`` by ``1 − βᵗ``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_rms(0.5, eps=0.0, bias_correction=True)
        >>> u, state = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
        >>> u  # v̂₁ = g², so u₁ = g / |g|
        Array([ 1., -1.], dtype=float32)
    """
    v = _debiased(second_moment(decay, initial_scale), decay, bias_correction)
    inside = eps if eps_in_sqrt else 0.0
    return precondition(identity(), v, eps=eps - inside, eps_root=inside)


class VarianceState(NamedTuple):
    """State of :class:`second_central_moment`: the averages ``mu`` of g and ``nu`` of |g|²."""

    mu: Updates
    nu: Updates


class second_central_moment(Leafwise):
    r"""The running variance of the gradient (centered RMSProp's denominator).

    $$ m_t = \beta m_{t-1} + (1-\beta) g_t,\quad v_t = \beta v_{t-1} + (1-\beta) |g_t|^2,
       \quad u_t = \max(\hat v_t - |\hat m_t|^2,\ 0) $$

    with the hats dividing by ``1 − βᵗ`` if ``bias_correction`` (both moments must be
    corrected before the difference), and the maximum because the weighted variance is
    ``≥ 0`` but ``v̂ − m̂²`` can round below 0 when ``g`` is constant.

    Args:
        decay: β in ``[0, 1)``, shared by ``m`` and ``v``.
        initial_scale: ``v_0`` ≥ 0 (``m_0`` is always 0).
        bias_correction: correct both moments.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.second_central_moment(0.5)
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0]  # v − m² = [1, 4]
        Array([1., 4.], dtype=float32)
    """

    decay: float = hyper(DECAY, 0.9)
    initial_scale: float = hyper(NONNEGATIVE, 0.0)
    bias_correction: bool = static(False, BOOL)

    State = VarianceState

    @property
    def reads_count(self) -> bool:  # type: ignore[override]
        return self.bias_correction

    def init_leaf(self, p: jax.Array) -> VarianceState:
        # The mean enters v − m², a difference of near equals: kept like v, in at least f32.
        return VarianceState(
            moment_like(p, compute_dtype(jnp.result_type(p))),
            second_moment_like(p, fill=self.initial_scale),
        )

    def scalars(self, count: Any) -> dict[str, Any]:
        if count is None:
            return {"weight": 1.0}
        return {"weight": 1 - self.decay ** count.astype(jnp.result_type(float))}

    def leaf(
        self, g: jax.Array, s: VarianceState, *, weight: Any
    ) -> tuple[jax.Array, VarianceState]:
        b = self.decay
        mu = b * s.mu + (1 - b) * g
        nu = b * s.nu + (1 - b) * abs2(g)
        return jnp.maximum(nu / weight - abs2(mu / weight), 0), VarianceState(mu, nu)


@hyperparameters(
    decay=DECAY, eps=NONNEGATIVE, initial_scale=NONNEGATIVE, eps_in_sqrt=BOOL,
    bias_correction=BOOL,
)  # fmt: skip
def scale_by_stddev(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""Centered RMSProp: divide by a running estimate of the gradient's standard deviation.

    $$ u_t = \frac{g_t}{\sqrt{\hat v_t - |\hat m_t|^2 + \epsilon}} $$

    (see :class:`second_central_moment`). Arguments as in :func:`scale_by_rms`; equal to
    ``optax.scale_by_stddev``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_stddev(0.5, eps=0.0)
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0]  # g / sqrt([1, 4])
        Array([ 2., -2.], dtype=float32)
    """
    inside = eps if eps_in_sqrt else 0.0
    variance = second_central_moment(decay, initial_scale, bias_correction)
    return precondition(identity(), variance, eps=eps - inside, eps_root=inside)


@hyperparameters(**_ADAM, nesterov=BOOL)
def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""Adam's direction: bias-corrected momentum over the root of the bias-corrected RMS.

    $$ m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) |g_t|^2,\quad
       u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon} $$

    ``nesterov`` uses NAdam's look-ahead numerator (:class:`~funcopt.nesterov_momentum`).
    Equal to ``optax.scale_by_adam``. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_adam()
        >>> updates, state = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
        >>> updates.round(4)  # m̂₁ = g, v̂₁ = g²: sign(g)
        Array([ 1., -1.], dtype=float32)
    """
    return precondition(  # m̂ / (√(v̂ + ε_root) + ε)
        debiased_momentum(b1, mu_dtype, nesterov),  # m̂ = m / (1 − β₁ᵗ), m = β₁ m + (1 − β₁) g
        _debiased(second_moment(b2), b2),  # v̂ = v / (1 − β₂ᵗ), v = β₂ v + (1 − β₂) |g|²
        eps=eps,
        eps_root=eps_root,
    )


@hyperparameters(**_ADAM)
def scale_by_nadam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""NAdam's direction: ``scale_by_adam(..., nesterov=True)``.

    $$ u_t = \frac{\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)}
                  {\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} $$

    Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_nadam()
        >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(x, 4) for x in u.tolist()]  # (0.9 / 1.9 + 1) · sign(g)
        [1.4737, -1.4737]
    """
    return scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=True)


@hyperparameters(**_ADAM, bias_correction_mu=BOOL, bias_correction_nu=BOOL)
def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> GradientTransformation:
    r"""AMSGrad's direction: Adam's, dividing by the largest second moment so far.

    $$ \hat v^{max}_t = \max(\hat v^{max}_{t-1}, \hat v_t), \qquad
       u_t = \frac{\hat m_t}{\sqrt{\hat v^{max}_t + \epsilon_{root}} + \epsilon} $$

    The maximum is taken over the bias-corrected ``v̂`` (as optax); torch's
    ``Adam(amsgrad=True)`` takes it over ``v`` and corrects afterwards. Equal to
    ``optax.scale_by_amsgrad``.

    Args:
        bias_correction_mu: divide ``m`` by ``1 − β₁ᵗ``.
        bias_correction_nu: divide ``v`` by ``1 − β₂ᵗ`` (before the running maximum).

    Other arguments: see the glossary (``b1``, ``b2``, ``eps``, ``eps_root``, ``mu_dtype``).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_amsgrad()
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0].round(4)  # sign(g)
        Array([ 1., -1.], dtype=float32)
    """
    return precondition(
        _debiased(scale_by_momentum(b1, mu_dtype), b1, bias_correction_mu),  # m̂
        chain(_debiased(second_moment(b2), b2, bias_correction_nu), running_max()),  # max v̂
        eps=eps,
        eps_root=eps_root,
    )


@hyperparameters(b1=DECAY, b2=DECAY, eps=NONNEGATIVE, mu_dtype=DTYPE)
def scale_by_adamax(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, mu_dtype: Any = None
) -> GradientTransformation:
    r"""Adamax's direction: bias-corrected momentum over the decayed infinity norm.

    $$ u_t = \frac{\hat m_t}{\max(|g_t| + \epsilon,\ \beta_2 u_{t-1})} $$

    Equal to ``optax.scale_by_adamax``. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_adamax()
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0].round(4)  # m̂₁ / u₁
        Array([ 1., -1.], dtype=float32)
    """
    return precondition(debiased_momentum(b1, mu_dtype), infinity_norm(b2, eps), root=False)


@hyperparameters(**_ADAM, nesterov=BOOL)
def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""AdaBelief's direction: Adam's with the variance of the surprise ``g − m``.

    $$ s_t = \beta_2 s_{t-1} + (1-\beta_2)|g_t - m_t|^2 + \epsilon_{root}, \qquad
       u_t = \frac{\hat m_t}{\sqrt{\hat s_t} + \epsilon} $$

    Here ``eps_root`` accumulates inside ``s`` (as in the paper and optax). Equal to
    ``optax.scale_by_belief``. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_belief()  # ŝ₁ = (g − m₁)² = (0.9 g)²
        >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(x, 4) for x in u.tolist()]  # sign(g) / 0.9
        [1.1111, -1.1111]
    """
    return precondition(
        debiased_momentum(b1, mu_dtype, nesterov),  # m̂
        _debiased(belief_moment(b1, b2, eps_root, mu_dtype), b2),  # ŝ
        eps=eps,
    )


@hyperparameters(**_ADAM, initial_accumulator_value=NONNEGATIVE)
def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Yogi's direction: Adam's with an additive second moment.

    $$ v_t = v_{t-1} - (1-\beta_2)\operatorname{sign}(v_{t-1} - |g_t|^2) |g_t|^2, \qquad
       u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} $$

    with ``v₀`` = ``initial_accumulator_value``. Deliberate difference from optax:
    ``m₀ = 0`` as in the paper's Algorithm 2 (optax starts ``m`` at ``v₀`` too; the two
    agree to ~10⁻⁶ after a few hundred steps).

    Args:
        initial_accumulator_value: ``v_0`` ≥ 0.

    Other arguments: see the glossary (``b1``, ``b2``, ``eps``, ``eps_root``, ``mu_dtype``).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_yogi()  # ε = 10⁻³ shows at 10⁻⁴
        >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(x, 3) for x in u.tolist()]
        [0.999, -1.0]
    """
    return precondition(
        debiased_momentum(b1, mu_dtype),  # m̂
        _debiased(yogi_moment(b2, initial_accumulator_value), b2),  # v̂
        eps=eps,
        eps_root=eps_root,
    )


@hyperparameters(**_ADAM, threshold=interval(4.0), nesterov=BOOL)
def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""RAdam's direction: Adam's, rectified (:func:`~funcopt.rectify`).

    $$ u_t = \begin{cases} r_t\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)
       & \rho_t \ge \text{threshold} \\ \hat m_t & \text{otherwise} \end{cases} $$

    Equal to ``optax.scale_by_radam``.

    Args:
        threshold: smallest ``ρ_t`` that takes the adaptive step (≥ 4; 5 as optax, 4 in
            the paper).

    Other arguments: see the glossary (``b1``, ``b2``, ``eps``, ``eps_root``, ``mu_dtype``,
    ``nesterov``).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_radam()
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0].round(4)  # ρ₁ < 5: m̂₁
        Array([ 2., -4.], dtype=float32)
    """
    adam = scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)
    return rectify(adam, b2, threshold)


@hyperparameters(initial_accumulator_value=NONNEGATIVE, eps=NONNEGATIVE)
def scale_by_rss(initial_accumulator_value: float = 0.1, eps: float = 1e-7) -> Any:
    r"""Adagrad's direction: divide by the root of all squared gradients so far.

    $$ s_t = s_{t-1} + |g_t|^2, \qquad u_t = \frac{g_t}{\sqrt{s_t + \epsilon}} $$

    Equal to ``optax.scale_by_rss``, except that optax returns 0 where ``s_t = 0`` (only
    possible with a zero initial value) and funcopt ``0 / √ε``, 0 too unless ε = 0.

    Args:
        initial_accumulator_value: ``s_0`` ≥ 0.
        eps: ε ≥ 0 inside the root.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_rss(0.0, eps=0.0)
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 1., -1.], dtype=float32)
    """
    return precondition(identity(), sum_of_squares(initial_accumulator_value), eps_root=eps)


@hyperparameters(rho=DECAY, eps=NONNEGATIVE)
def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> Any:
    r"""Adadelta's direction: RMSProp's, times the RMS of the previous steps.

    $$ v_t = \rho v_{t-1} + (1-\rho) |g_t|^2,\quad
       u_t = \frac{\sqrt{x_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t,\quad
       x_t = \rho x_{t-1} + (1-\rho) |u_t|^2 $$

    Equal to ``optax.scale_by_adadelta``.

    Args:
        rho: ρ in ``[0, 1)``, decay of both averages ``v`` and ``x``.
        eps: ε ≥ 0 inside both roots.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_adadelta()  # x₀ = 0: the first step is about √(ε / (1 − ρ))
        >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(x, 6) for x in u.tolist()]
        [0.003162, -0.003162]
    """
    return chain(
        precondition(identity(), second_moment(rho), eps_root=eps),  # g / √(v + ε)
        scale_by_delta_rms(rho, eps),  # · √(x + ε)
    )
