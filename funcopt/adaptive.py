"""The adaptive optimizers beyond the chapter: a direction, weight decay, the learning rate.

Each optimizer is ``chain(direction, [add_decayed_weights], scale_by_learning_rate)``,
where the direction is one of :mod:`funcopt.preconditioners` (a
:class:`~funcopt.precondition` of two statistics of the gradient). Signatures, defaults
and numerics are optax's; recurring arguments are described in the glossary
(``docs/glossary.md``).
"""

from __future__ import annotations

from typing import Any

from funcopt.base import GradientTransformation, ScalarOrSchedule
from funcopt.combine import chain
from funcopt.preconditioners import (
    scale_by_adadelta,
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_belief,
    scale_by_radam,
    scale_by_rss,
    scale_by_yogi,
)
from funcopt.scaling import _descend, add_decayed_weights, scale_by_learning_rate
from funcopt.trees import MASK, Mask
from funcopt.validation import (
    BOOL,
    DECAY,
    DTYPE,
    NONNEGATIVE,
    RATE,
    hyperparameters,
    interval,
)

__all__ = [
    "adabelief",
    "adadelta",
    "adagrad",
    "adamax",
    "adamaxw",
    "amsgrad",
    "nadam",
    "nadamw",
    "radam",
    "yogi",
]

_ADAM = dict(
    learning_rate=RATE, b1=DECAY, b2=DECAY, eps=NONNEGATIVE, eps_root=NONNEGATIVE, mu_dtype=DTYPE
)
_DECAY = dict(weight_decay=RATE, mask=MASK)


@hyperparameters(**_ADAM)
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

    where the hats divide by ``1 − β₁ᵗ⁺¹`` and ``1 − β₁ᵗ`` (:func:`~funcopt.scale_by_nadam`).
    Equal to ``optax.nadam``. ``torch.optim.NAdam`` differs: it decays β₁ over time
    (``momentum_decay``) and no setting gives a constant β₁. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.nadam(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.8526, -1.8526]
    """
    return _descend(scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=True), learning_rate)


@hyperparameters(**_ADAM, **_DECAY)
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
    r"""NAdamW: :func:`nadam` with decoupled weight decay, as :func:`~funcopt.adamw` is to adam.

    $$ \theta_{t+1} = \theta_t - \eta\,\big(\text{nadam direction} + \lambda \theta_t\big) $$

    Equal to ``optax.nadamw``. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.nadamw(0.1, weight_decay=0.5)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.8026, -1.7526]
    """
    direction = scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=True)
    return _descend(direction, learning_rate, weight_decay, mask)


@hyperparameters(**_ADAM, bias_correction_mu=BOOL, bias_correction_nu=BOOL)
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

    $$ \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\max_{k \le t} \hat v_k +
       \epsilon_{root}} + \epsilon} $$

    Equal to ``optax.amsgrad``; see :func:`~funcopt.scale_by_amsgrad`, whose
    ``bias_correction_mu``/``_nu`` these are. Other arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.amsgrad(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.9, -1.9]
    """
    direction = scale_by_amsgrad(
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        bias_correction_mu=bias_correction_mu,
        bias_correction_nu=bias_correction_nu,
    )
    return _descend(direction, learning_rate)


@hyperparameters(learning_rate=RATE, b1=DECAY, b2=DECAY, eps=NONNEGATIVE, mu_dtype=DTYPE)
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

    Equal to ``optax.adamax`` and ``torch.optim.Adamax``. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adamax(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.9, -1.9]
    """
    return _descend(scale_by_adamax(b1, b2, eps, mu_dtype), learning_rate)


@hyperparameters(learning_rate=RATE, b1=DECAY, b2=DECAY, eps=NONNEGATIVE, mu_dtype=DTYPE, **_DECAY)
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
    \lambda\theta)$. Equal to ``optax.adamaxw``. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adamaxw(0.1, weight_decay=0.5)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.85, -1.8]
    """
    return _descend(scale_by_adamax(b1, b2, eps, mu_dtype), learning_rate, weight_decay, mask)


@hyperparameters(learning_rate=RATE, initial_accumulator_value=NONNEGATIVE, eps=NONNEGATIVE)
def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> GradientTransformation:
    r"""Adagrad (Duchi et al., 2011): divide by the root of all squared gradients so far.

    $$ s_t = s_{t-1} + g_t^2, \qquad \theta_{t+1} = \theta_t - \eta\, \frac{g_t}{\sqrt{s_t
       + \epsilon}} $$

    Equal to ``optax.adagrad`` (see :func:`~funcopt.scale_by_rss` for the one difference
    at ``s = 0``). ``torch.optim.Adagrad`` puts ε outside the root (equal for ε = 0).

    Args:
        initial_accumulator_value: ``s_0`` ≥ 0.
        eps: ε ≥ 0 added inside the root.

    Other arguments: see the glossary.

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
    return _descend(scale_by_rss(initial_accumulator_value, eps), learning_rate)


@hyperparameters(
    learning_rate=interval(0.0, optional=True, schedule=True), rho=DECAY, eps=NONNEGATIVE,
    weight_decay=RATE, weight_decay_mask=MASK,
)  # fmt: skip
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
        weight_decay_mask: which leaves decay, as ``mask`` in the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adadelta()  # x₀ = 0: the first step is about sqrt(ε / (1 − ρ))
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 6) for x in updates["w"].tolist()]
        [-0.003162, 0.003162]
    """
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),  # g + λ θ
        scale_by_adadelta(rho, eps),  # √(x + ε) g / √(v + ε)
        scale_by_learning_rate(1.0 if learning_rate is None else learning_rate),
    )


@hyperparameters(**_ADAM, nesterov=BOOL)
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

    Equal to ``optax.adabelief`` (:func:`~funcopt.scale_by_belief`); ``eps_root``
    accumulates in ``s``, as in the paper. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adabelief(0.1)  # ŝ₁ = (g − m₁)² = (0.9 g)²
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.8889, -1.8889]
    """
    direction = scale_by_belief(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)
    return _descend(direction, learning_rate)


@hyperparameters(**_ADAM, threshold=interval(4.0), nesterov=BOOL)
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
    r"""RAdam (Liu et al., 2020): Adam whose step is rectified by :func:`~funcopt.rectify`.

    $$ \theta_{t+1} = \theta_t - \eta \begin{cases} r_t\, \hat m_t / (\sqrt{\hat v_t +
       \epsilon_{root}} + \epsilon) & \rho_t \ge \text{threshold} \\ \hat m_t &
       \text{otherwise} \end{cases} $$

    Equal to ``optax.radam``. ``torch.optim.RAdam`` adds ε to ``sqrt(v)`` before the
    bias correction (equal for ε = 0). Arguments: as in :func:`~funcopt.scale_by_radam`.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.radam(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.8, -1.6]
    """
    direction = scale_by_radam(b1, b2, eps, eps_root, threshold, mu_dtype, nesterov=nesterov)
    return _descend(direction, learning_rate)


@hyperparameters(**_ADAM, initial_accumulator_value=NONNEGATIVE)
def yogi(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Yogi (Zaheer et al., 2018): Adam with an additive second-moment update.

    $$ v_t = v_{t-1} - (1-\beta_2)\operatorname{sign}(v_{t-1} - g_t^2) g_t^2, \qquad
       \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} $$

    See :func:`~funcopt.scale_by_yogi` (``m₀ = 0``, a deliberate difference from optax).
    Arguments: as there.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.yogi(0.1)  # ε = 10⁻³ and v₀ = 10⁻⁶ show at 10⁻⁴
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.9001, -1.9]
    """
    direction = scale_by_yogi(b1, b2, eps, eps_root, initial_accumulator_value, mu_dtype)
    return _descend(direction, learning_rate)
