"""The chapter's optimizers, and the sign methods: each a short composition in equation order.

No optimizer here has math of its own: each is a :func:`~funcopt.chain` of the primitives
whose equations it states, ending with :class:`~funcopt.scale_by_learning_rate`.
Signatures and defaults follow optax wherever optax has the same optimizer, so
``funcopt.adam(1e-3)`` and ``optax.adam(1e-3)`` are interchangeable. Arguments that
recur (``learning_rate``, ``b1``, ``mu_dtype``, ...) are described once, in the glossary
of the documentation (``docs/glossary.md``).
"""

from __future__ import annotations

from typing import Any

from funcopt.base import GradientTransformation, ScalarOrSchedule
from funcopt.clipping import add_noise
from funcopt.combine import chain, identity
from funcopt.moments import lion_momentum, scale_by_momentum, trace
from funcopt.preconditioners import scale_by_adam, scale_by_rms, scale_by_stddev
from funcopt.scaling import add_decayed_weights, scale_by_learning_rate, scale_by_sign, squash
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
    "adam", "adamw", "gd", "gdm", "lion", "noisy_sgd", "rmsprop", "scale_by_lion", "sgd",
    "sign_sgd", "signum",
]  # fmt: skip

OPTIONAL_DECAY = interval(0.0, 1.0, optional=True)
_ADAM = dict(
    learning_rate=RATE, b1=DECAY, b2=DECAY, eps=NONNEGATIVE, eps_root=NONNEGATIVE,
    mu_dtype=DTYPE, nesterov=BOOL,
)  # fmt: skip


def _dtype_alias(mu_dtype: Any, accumulator_dtype: Any) -> Any:
    """``mu_dtype``, or optax's ``accumulator_dtype`` for it (not both)."""
    if mu_dtype is not None and accumulator_dtype is not None:
        raise TypeError("give mu_dtype or optax's name for it, accumulator_dtype, not both")
    return accumulator_dtype if mu_dtype is None else mu_dtype


@hyperparameters(learning_rate=RATE)
def gd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    r"""Plain gradient descent: $\theta_{t+1} = \theta_t - \eta\, g_t$.

    Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.gd(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.8, -1.6]
    """
    return scale_by_learning_rate(learning_rate)


@hyperparameters(learning_rate=RATE, momentum=DECAY, mu_dtype=DTYPE)
def gdm(
    learning_rate: ScalarOrSchedule, momentum: float = 0.0, mu_dtype: Any = None
) -> GradientTransformation:
    r"""The chapter's gradient descent with (damped) momentum.

    $$ m_t = \beta\, m_{t-1} + (1 - \beta)\, g_t, \qquad \theta_{t+1} = \theta_t - \eta\, m_t $$

    ``momentum=0`` is plain gradient descent. Note the ``1 − β`` damping: this is not the
    heavy-ball momentum of :func:`sgd`.

    Args:
        momentum: β in ``[0, 1)``, decay of the damped average ``m`` (``m_0 = 0``).

    Other arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.gdm(learning_rate=3.0, momentum=0.9)
        >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, tx.init({"w": jnp.zeros(2)}))
        >>> [round(x, 4) for x in updates["w"].tolist()]  # −η (1 − β) g at the first step
        [-0.3, 0.6]
        >>> tx == funcopt.chain(funcopt.scale_by_momentum(0.9), funcopt.scale_by_learning_rate(3))
        True
    """
    return chain(
        scale_by_momentum(momentum, mu_dtype),  # m = β m + (1 − β) g
        scale_by_learning_rate(learning_rate),  # θ ← θ − η m
    )


@hyperparameters(
    learning_rate=RATE, momentum=OPTIONAL_DECAY, nesterov=BOOL, mu_dtype=DTYPE,
    accumulator_dtype=DTYPE,
)  # fmt: skip
def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    mu_dtype: Any = None,
    *,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""Stochastic gradient descent with optional heavy-ball or Nesterov momentum.

    $$ m_t = \beta\, m_{t-1} + g_t, \qquad \theta_{t+1} = \theta_t - \eta\, m_t $$

    (with ``nesterov``: $\theta_{t+1} = \theta_t - \eta (\beta m_t + g_t)$). Equal to
    ``optax.sgd`` and to ``torch.optim.SGD(momentum=β, nesterov=...)``.

    Args:
        momentum: β in ``[0, 1)`` of the (undamped) trace (:class:`~funcopt.trace`), or
            ``None`` for no momentum and no momentum state.
        accumulator_dtype: optax's name for ``mu_dtype`` (give one of the two).

    Other arguments: see the glossary.

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
    mu_dtype = _dtype_alias(mu_dtype, accumulator_dtype)
    return chain(
        trace(momentum, nesterov, mu_dtype) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )


@hyperparameters(
    learning_rate=RATE, decay=DECAY, eps=NONNEGATIVE, initial_scale=NONNEGATIVE,
    eps_in_sqrt=BOOL, centered=BOOL, momentum=OPTIONAL_DECAY, nesterov=BOOL,
    bias_correction=BOOL, mu_dtype=DTYPE,
)  # fmt: skip
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

    ``eps=0`` is the chapter's RMSProp exactly; ``eps_in_sqrt=False`` puts ε outside the
    root as ``torch.optim.RMSprop`` does. ``centered`` divides by the standard deviation
    instead (:func:`~funcopt.scale_by_stddev`), and ``momentum`` adds a heavy-ball trace
    after the learning rate (as optax does). Equal to ``optax.rmsprop``.

    Args:
        decay: β in ``[0, 1)``, decay of the average ``v`` of ``g²``.
        eps: ε ≥ 0, inside the root unless ``eps_in_sqrt=False``.
        initial_scale: ``v_0`` ≥ 0 (0 as in optax and torch).
        eps_in_sqrt: ``g / sqrt(v + ε)`` (True, optax) or ``g / (sqrt(v) + ε)`` (torch).
        centered: divide by ``sqrt(v − m²)``, with ``m`` the average of ``g``.
        momentum: β in ``[0, 1)`` of a heavy-ball trace of the scaled steps, or ``None``.
        bias_correction: divide ``v`` (and ``m`` when centered) by ``1 − βᵗ``.

    Other arguments: see the glossary (``nesterov`` and ``mu_dtype`` are the trace's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.rmsprop(0.1)  # first step: v = 0.1 g², so |Δθ| = 0.1 / sqrt(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params))
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.6838, -1.6838]
    """
    direction = scale_by_stddev if centered else scale_by_rms
    return chain(
        direction(decay, eps, initial_scale, eps_in_sqrt, bias_correction),  # g / √(v + ε)
        scale_by_learning_rate(learning_rate),  # −η ·
        trace(momentum, nesterov, mu_dtype) if momentum is not None else identity(),
    )


@hyperparameters(**_ADAM)
def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""Adam (Kingma & Ba, 2015), exactly as in the chapter.

    $$ \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon},
       \quad \hat m_t = \frac{m_t}{1-\beta_1^t},\quad \hat v_t = \frac{v_t}{1-\beta_2^t} $$

    with ``m`` and ``v`` the exponential averages of ``g`` and ``g²``
    (:func:`~funcopt.scale_by_adam`) and ``t`` counted from 1 at the first update.
    ``nesterov=True`` is NAdam. Arguments: see the glossary.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adam(0.1)
        >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        >>> updates, state = tx.update(grads, tx.init(params), params)
        >>> funcopt.apply_updates(params, updates)["w"].round(4)
        Array([ 0.9, -1.9], dtype=float32)
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),  # m̂ / (√v̂ + ε)
        scale_by_learning_rate(learning_rate),  # θ ← θ − η ·
    )


@hyperparameters(**_ADAM, weight_decay=RATE, mask=MASK)
def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 1e-4,
    mask: Mask | None = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""AdamW (Loshchilov & Hutter): Adam with decoupled weight decay.

    $$ \theta_{t+1} = \theta_t - \eta \left( \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}
       + \lambda\, \theta_t \right) $$

    The decay is added after Adam's preconditioner, so it is not rescaled by
    ``1/sqrt(v̂)`` as an L2 term in the loss would be. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.adamw(0.1, weight_decay=0.5)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.85, -1.8]
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),  # m̂ / (√v̂ + ε)
        add_decayed_weights(weight_decay, mask),  # + λ θ
        scale_by_learning_rate(learning_rate),  # θ ← θ − η ·
    )


# ---- sign methods ---------------------------------------------------------------------


@hyperparameters(learning_rate=RATE)
def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    r"""signSGD (Bernstein et al., 2018): $\theta_{t+1} = \theta_t - \eta\,
    \operatorname{sign}(g_t)$. Equal to ``optax.sign_sgd``. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.sign_sgd(0.1)
        >>> updates, state = tx.update({"w": jnp.array([0.001, -50.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.9, -1.9]
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


@hyperparameters(learning_rate=RATE, beta=DECAY, mu_dtype=DTYPE, accumulator_dtype=DTYPE)
def signum(
    learning_rate: ScalarOrSchedule,
    beta: float = 0.9,
    mu_dtype: Any = None,
    *,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""Signum (Bernstein et al., 2018): the sign of the (damped) momentum.

    $$ m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad \theta_{t+1} = \theta_t - \eta\,
       \operatorname{sign}(m_t) $$

    Equal to ``optax.signum``.

    Args:
        beta: β in ``[0, 1)``, decay of the damped momentum ``m``.
        accumulator_dtype: optax's name for ``mu_dtype`` (give one of the two).

    Other arguments: see the glossary.

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
    mu_dtype = _dtype_alias(mu_dtype, accumulator_dtype)
    return chain(
        scale_by_momentum(beta, mu_dtype), scale_by_sign(), scale_by_learning_rate(learning_rate)
    )


@hyperparameters(b1=DECAY, b2=DECAY, mu_dtype=DTYPE)
def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any = None,
    *,
    mode: str = "hard",
    smooth_beta: float = 1.0,
) -> GradientTransformation:
    r"""Lion's direction: the (hard, smooth or refined) sign of a two-rate momentum.

    $$ u_t = S(\beta_1 m_{t-1} + (1-\beta_1) g_t), \qquad
       m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t $$

    ``chain(lion_momentum(β₁, β₂), squash(mode, smooth_beta))``, with ``S`` the sign, or
    ``tanh(β·)``, or a clip to ``[−1, 1]`` (see :class:`~funcopt.squash`). Equal to
    ``optax.scale_by_lion``. Arguments: see the glossary and :class:`~funcopt.squash`.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_lion(mode="smooth", smooth_beta=2.0)
        >>> u, _ = tx.update(jnp.array([5.0]), tx.init(jnp.zeros(1)))
        >>> round(u.item(), 4)  # tanh(2 · 0.1 · 5)
        0.7616
    """
    return chain(lion_momentum(b1, b2, mu_dtype), squash(mode, smooth_beta))


@hyperparameters(
    learning_rate=RATE, b1=DECAY, b2=DECAY, mu_dtype=DTYPE, weight_decay=RATE, mask=MASK
)
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
        b1: β₁ in ``[0, 1)``, the interpolation rate of the signed direction.
        b2: β₂ in ``[0, 1)``, the decay of the tracked momentum ``m``.

    Other arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.lion(0.1, weight_decay=0.5)
        >>> updates, state = tx.update({"w": jnp.array([0.001, -50.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.85, -1.8]
    """
    return chain(
        lion_momentum(b1, b2, mu_dtype),  # scale_by_lion's members, flat
        scale_by_sign(),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@hyperparameters(learning_rate=RATE, eta=NONNEGATIVE, gamma=NONNEGATIVE)
def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: float = 0.01,
    gamma: float = 0.55,
    key: Any = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    r"""Noisy SGD (Neelakantan et al., 2015): annealed Gaussian noise on the gradient.

    $$ \theta_{t+1} = \theta_t - \eta_{lr} (g_t + \sigma_t \xi_t), \qquad
       \sigma_t^2 = \frac{\eta}{t^\gamma},\ \xi_t \sim \mathcal N(0, I) $$

    Built on :class:`~funcopt.add_noise`. Equal to ``optax.noisy_sgd`` with the same key.

    Args:
        eta: η ≥ 0, the noise variance at the first step (not a learning rate).
        gamma: γ ≥ 0, how fast the variance decays.
        key: a PRNG key or an integer seed; ``None`` means seed 0.
        seed: optax's deprecated name for an integer ``key``.

    Other arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.noisy_sgd(0.1, eta=0.0)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.8, -1.6]
    """
    return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))
