r"""Polyak-type steps: the step size is read from the loss value (``update(..., value=loss)``).

If the smallest value $f^\star$ of the loss is known (0 for a model that can fit its data),
the distance to it tells how far to go. Polyak's step size is the step of gradient descent
that would reach $f^\star$ if the loss were its linearisation at $\theta_t$:

$$ \eta_t = \frac{f(\theta_t) - f^\star}{\lVert g_t \rVert^2}, \qquad
   \theta_{t+1} = \theta_t - \eta_t\, g_t $$

(capped at a largest step, :func:`polyak_sgd`). MoMo (model-based momentum) does the same
on the *average* of the past linearisations $f(\theta_s) + \langle g_s, \theta - \theta_s
\rangle$, an exponential average of the losses $\bar f_t$, of the gradients $d_t$ (the
momentum) and of $\gamma_t = \langle g, \theta\rangle$, and takes the truncated
proximal step on that model, at most the learning rate:

$$ \tau_t = \min\Big(\alpha,\ \frac{(\bar f_t + \langle d_t, \theta_t\rangle - \gamma_t
   - f^\star)_+}{\lVert d_t \rVert^2}\Big), \qquad \theta_{t+1} = \theta_t - \tau_t\, d_t $$

:class:`scale_by_momo` is that step around any direction; :func:`momo` gives it a momentum
and :func:`momo_adam` Adam's preconditioned momentum. All of them need the loss ``value=``
at each update (``jax.value_and_grad``); it reaches them through :func:`~funcopt.chain`,
every funcopt wrapper and ``nnx.Optimizer.update(model, grads, value=loss)``.

References: Polyak, Introduction to Optimization, 1987; Loizou et al., Stochastic Polyak
Step-size for SGD, 2021; Schaipp et al., MoMo: Momentum Models for Adaptive Learning
Rates, 2024.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Updates,
    as_transform,
    expect_state,
)
from funcopt.combine import chain, precondition
from funcopt.lifting import Leafwise, coef, compute_dtype, map_leaves, moment_like, require_params
from funcopt.moments import MomentumState, bias_correction, scale_by_momentum, second_moment
from funcopt.scaling import scale_by_learning_rate
from funcopt.trees import check_float_leaves, tree_map
from funcopt.validation import (
    BOOL,
    DECAY,
    DTYPE,
    NONNEGATIVE,
    RATE,
    REAL,
    hyperparameters,
    one_of,
)
from funcopt.values import hyper, static

__all__ = [
    "MomoState",
    "momentum_from_first",
    "momo",
    "momo_adam",
    "polyak_sgd",
    "scale_by_momo",
    "scale_by_polyak",
]

_TINY = float(np.finfo(np.float64).eps)
"""A squared norm at most this takes no step (optax's threshold)."""
_VARIANT = one_of("sps", "sps+")


# ---- whole-tree scalars ----------------------------------------------------------------


def _vdot(a: Any, b: Any, names: tuple[str, str]) -> jax.Array:
    """$\\sum \\mathrm{Re}(\\bar a\\, b)$ over all the leaves, in at least float32 (the
    widest leaf's precision); 0 for a tree with no leaves."""

    def leaf(x: Any, y: Any) -> jax.Array:
        x, y = jnp.asarray(x), jnp.asarray(y)
        with jax.numpy_dtype_promotion("standard"):  # bfloat16 params with float32 steps
            dtype = compute_dtype(jnp.promote_types(x.dtype, y.dtype))
        x, y = x.astype(dtype), y.astype(dtype)
        return jnp.sum(jnp.real(jnp.conj(x) * y) if jnp.iscomplexobj(x) else x * y)

    sums = jax.tree.leaves(tree_map(leaf, a, b, names=names))
    if not sums:
        return jnp.zeros([], jnp.float32)
    dtype = max((s.dtype for s in sums), key=lambda d: d.itemsize)
    total = sums[0].astype(dtype)
    for s in sums[1:]:
        total = total + s.astype(dtype)
    return total


def _scalar_dtype(params: Params) -> Any:
    """The dtype of a transform's scalar statistics: the widest real precision of the
    parameters, at least float32."""
    dtypes = [jnp.finfo(compute_dtype(jnp.result_type(p))).dtype for p in jax.tree.leaves(params)]
    return max(dtypes, key=lambda d: d.itemsize, default=jnp.dtype(jnp.float32))


def _loss_value(tx: Any, extra: dict[str, Any], dtype: Any) -> jax.Array:
    """The loss passed as ``value=``, a scalar in ``dtype``; a clear error without it."""
    value = extra.get("value")
    if value is None:
        raise TypeError(
            f"{type(tx).__name__} needs the loss value: call "
            "update(grads, state, params, value=loss), e.g. with jax.value_and_grad"
        )
    value = jnp.asarray(value)
    if value.ndim:
        raise ValueError(f"{type(tx).__name__}: value= must be a scalar loss, got {value.shape}")
    return value.astype(dtype)


# ---- Polyak's step ---------------------------------------------------------------------


class scale_by_polyak(GradientTransformation):
    r"""Scale the updates by Polyak's step size, from the loss passed as ``value=``.

    $$ \gamma_t = \min\Big(\frac{f(\theta_t) - f^\star}{\lVert g_t \rVert^2 + \epsilon},\
       \gamma_{\max}\Big), \qquad u_t = \gamma_t\, g_t $$

    with $(f - f^\star)_+$ in the numerator for ``variant="sps+"``, and $\gamma_t = 0$ where
    ``‖g‖² + ε`` is at most float64's machine epsilon. ``‖g‖`` is the norm of the whole
    tree. No sign flip (see :func:`polyak_sgd`). Equal to ``optax.scale_by_polyak``.

    Args:
        f_min: $f^\star$, a lower bound of the loss (any finite number).
        max_learning_rate: $\gamma_{\max} \ge 0$, the largest step size.
        eps: ε ≥ 0 added to the squared norm.
        variant: ``"sps"`` or ``"sps+"`` (the positive part of the gap).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_polyak()
        >>> g = jnp.array([3.0, 4.0])
        >>> tx.update(g, tx.init(g), value=5.0)[0]  # γ = 5 / 25
        Array([0.6, 0.8], dtype=float32)

    Reference: Loizou et al., Stochastic Polyak Step-size for SGD: An Adaptive Learning
    Rate for Fast Convergence, 2021; Garrigos et al., Function Value Learning, 2023 (sps+).
    """

    f_min: float = hyper(REAL, 0.0)
    max_learning_rate: float = hyper(NONNEGATIVE, 1.0)
    eps: float = hyper(NONNEGATIVE, 0.0)
    variant: str = static("sps", _VARIANT)

    def init_state(self, params: Params) -> OptState:
        check_float_leaves(params)
        return EmptyState()

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        norm2 = _vdot(updates, updates, ("updates", "updates"))
        gap = _loss_value(self, extra, norm2.dtype) - coef(self.f_min, norm2)
        if self.variant == "sps+":
            gap = jnp.maximum(gap, 0)
        denominator = norm2 + coef(self.eps, norm2)
        flat = denominator <= _TINY  # no step, and a finite derivative there
        ratio = gap / jnp.where(flat, 1, denominator)
        step = jnp.where(flat, 0, jnp.minimum(ratio, coef(self.max_learning_rate, norm2)))
        return map_leaves(lambda g: coef(step, g) * g, updates), EmptyState()


@hyperparameters(
    max_learning_rate=NONNEGATIVE, scaling=RATE, f_min=REAL, eps=NONNEGATIVE, variant=_VARIANT
)
def polyak_sgd(
    max_learning_rate: float = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    r"""SGD with Polyak's step size (SPS_max), read from the loss passed as ``value=``.

    $$ x_t = -s_t\, g_t, \qquad \gamma_t = \min\Big(\frac{f(\theta_t) - f^\star}
       {\lVert x_t \rVert^2 + \epsilon},\ \gamma_{\max}\Big), \qquad
       \theta_{t+1} = \theta_t + \gamma_t\, x_t $$

    ``chain(scale_by_learning_rate(s), scale_by_polyak(f*, γ_max, ε, variant))``, as optax:
    the norm is that of the scaled gradient, so with ``s = 1`` (the default) the step is
    Polyak's $\min((f - f^\star) / (\lVert g\rVert^2 + \epsilon), \gamma_{\max})$. Equal to
    ``optax.polyak_sgd``. The loss must be bounded below by ``f_min``: a wrong guess
    diverges or stalls.

    Args:
        scaling: $s \ge 0$, a factor on the gradient, a number or a schedule (read from 0
            at the first update).

    Other arguments: see :class:`scale_by_polyak`.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> f = lambda x: jnp.sum(x**2)  # f* = 0; Polyak's step is 1/4: x halves
        >>> tx, x = funcopt.polyak_sgd(), jnp.array([1.0, 2.0, 3.0])
        >>> state = tx.init(x)
        >>> for _ in range(3):
        ...     value, grad = jax.value_and_grad(f)(x)
        ...     updates, state = tx.update(grad, state, x, value=value)
        ...     x = funcopt.apply_updates(x, updates)
        ...     print(f(x))
        3.5
        0.875
        0.21875

    Reference: Loizou et al., Stochastic Polyak Step-size for SGD: An Adaptive Learning
    Rate for Fast Convergence, 2021.
    """
    return chain(
        scale_by_learning_rate(scaling),
        scale_by_polyak(f_min, max_learning_rate, eps, variant),
    )


# ---- MoMo ------------------------------------------------------------------------------


class momentum_from_first(Leafwise):
    r"""A damped average of the gradients started at the first one (MoMo's momentum).

    $$ m_1 = g_1, \qquad m_t = \beta\, m_{t-1} + (1 - \beta)\, g_t, \qquad u_t = m_t $$

    Unbiased from the first step without a bias correction (which would give
    $(\beta g_1 + g_2) / (1 + \beta)$ at ``t = 2``, not $\beta g_1 + (1-\beta) g_2$).

    Args:
        decay: β in ``[0, 1)``.
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.momentum_from_first(0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> for g in (4.0, 2.0):  # m = 4, then ½ · 4 + ½ · 2
        ...     u, state = tx.update(jnp.array([g]), state)
        >>> u
        Array([3.], dtype=float32)
    """

    decay: float = hyper(DECAY, 0.9)
    mu_dtype: Any = static(None, DTYPE)

    State = MomentumState
    reads_count = True

    def init_leaf(self, p: jax.Array) -> MomentumState:
        return MomentumState(mu=moment_like(p, self.mu_dtype))

    def leaf(self, g: jax.Array, s: MomentumState, *, t: Any) -> tuple[jax.Array, MomentumState]:
        beta = jnp.where(t == 1, 0, coef(self.decay, g))
        mu = beta * s.mu + (1 - beta) * g
        return mu, MomentumState(mu)


class MomoState(NamedTuple):
    """State of :class:`scale_by_momo`: the direction's state and three scalars, the
    averages of the loss (``barf``) and of ``⟨g, θ⟩`` (``gamma``) and the lower bound
    (``lb``), in the parameters' precision (at least float32)."""

    direction: OptState
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array


class scale_by_momo(GradientTransformation):
    r"""MoMo's step: the truncated proximal step on an average of linear models of the loss.

    $$ \bar f_t = \beta \bar f_{t-1} + (1-\beta) f(\theta_t), \quad
       \gamma_t = \beta \gamma_{t-1} + (1-\beta) \langle g_t, \theta_t \rangle, \quad
       d_t = \text{direction}(g_t) $$

    $$ h_t = (1+\alpha\lambda)(\bar f_t - \rho_t f^\star - \gamma_t)
       + \langle d_t, \theta_t \rangle, \quad
       \tau_t = \min\Big(\frac{\alpha}{\rho_t},\ \frac{(h_t)_+}
       {\langle d_t, D_t^{-1} d_t\rangle}\Big), \quad
       u_t = -\frac{\alpha\lambda}{1+\alpha\lambda}\, \theta_t - \tau_t\, D_t^{-1} d_t $$

    The direction is a momentum ``d`` (``D = 1``), or a :class:`~funcopt.precondition`
    whose numerator is ``d`` and whose denominator gives ``D = √v + ε``; its average must
    weigh the gradients as β does here. With ``debias=False`` every average starts at its
    first sample and ``ρ = 1`` (:func:`momo`); with ``debias=True`` they start at 0 and
    $\rho_t = 1 - \beta^t$ (:func:`momo_adam`). No step is taken where
    ``⟨d, D⁻¹d⟩`` is at most float64's machine epsilon. With ``adapt_lower_bound`` the
    bound $f^\star$ (never below ``lower_bound``) is lowered, before the step, to
    $c / (2\rho_t(1+\alpha\lambda))$ when $c = (1+\alpha\lambda)(\bar f_t - \gamma_t) +
    \langle d_t, \theta_t\rangle < (1+\alpha\lambda)\rho_t f^\star$, and set after it to
    $(\bar f_t + \langle d_t, \theta_t \rangle - \gamma_t - \tfrac12 \tau_t
    \langle d_t, D_t^{-1} d_t\rangle) / \rho_t$.

    Args:
        direction: the transform giving $d_t$ (and $D_t$, if a ``precondition``).
        beta: β in ``[0, 1)``, the weight of the past in the averages.
        learning_rate: α ≥ 0, the largest step, a number or a schedule (read from 0 at
            the first update).
        lower_bound: $f^\star$, a lower bound of the loss (0 for most losses).
        weight_decay: λ ≥ 0; the weights shrink by ``1 / (1 + αλ)`` each step, as in
            optax (the authors' code divides the whole step, $(\theta_t - \tau_t d_t) /
            (1 + \alpha\lambda)$).
        adapt_lower_bound: estimate $f^\star$ on the fly (when no good bound is known).
        debias: zero-started averages with $\rho_t = 1 - \beta^t$ (else started at the
            first sample, $\rho_t = 1$).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_momo(funcopt.momentum_from_first(0.9))
        >>> x = jnp.array([3.0, 4.0])  # f = ‖x‖² = 25, g = 2x: τ = 25 / 100
        >>> tx.update(2 * x, tx.init(x), x, value=25.0)[0]
        Array([-1.5, -2. ], dtype=float32)

    Reference: Schaipp, Ohana, Eickenberg, Defazio and Gower, MoMo: Momentum Models for
    Adaptive Learning Rates, ICML 2024.
    """

    direction: GradientTransformation
    beta: float = hyper(DECAY, 0.9)
    learning_rate: ScalarOrSchedule = hyper(RATE, 1.0)
    lower_bound: float = hyper(REAL, 0.0)
    weight_decay: float = hyper(NONNEGATIVE, 0.0)
    adapt_lower_bound: bool = static(False, BOOL)
    debias: bool = static(False, BOOL)

    State = MomoState
    reads_count = True

    def check(self) -> None:
        object.__setattr__(self, "direction", as_transform(self.direction, "direction"))

    def init_state(self, params: Params) -> OptState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)
        zero = jnp.zeros([], dtype)
        return MomoState(
            self.direction.init_state(params), zero, zero, jnp.asarray(self.lower_bound, dtype)
        )

    def _direction(
        self, updates: Updates, state: OptState, params: Params, count: Any, **extra: Any
    ) -> tuple[Updates, Updates, OptState]:
        """$d_t$, $D_t^{-1} d_t$ and the direction's new state."""
        tx = self.direction
        count = count if tx.reads_count else None
        if isinstance(tx, precondition):
            d, v, state = tx.statistics(updates, state, params, count, **extra)
            return d, map_leaves(tx.divide, d, v, names=("numerator", "denominator")), state
        d, state = tx.apply(updates, state, params, count, **extra)
        return d, d, state

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, MomoState)
        params = require_params(self, params)
        like = state.barf  # the scalars' dtype
        f = _loss_value(self, extra, like.dtype)
        beta = coef(self.beta, like)
        past = beta if self.debias else jnp.where(count == 1, 0, beta)
        barf = past * state.barf + (1 - past) * f
        gamma = past * state.gamma + (1 - past) * _vdot(updates, params, ("updates", "params"))
        d, step, inner = self._direction(updates, state.direction, params, count, **extra)
        norm2 = _vdot(d, step, ("direction", "step"))  # ⟨d, D⁻¹d⟩
        dot = _vdot(d, params, ("direction", "params"))  # ⟨d, θ⟩
        t = count.astype(jnp.result_type(float))
        rho = (1 - beta ** t.astype(like.dtype)) if self.debias else 1.0
        lr, floor = self.learning_rate, coef(self.lower_bound, like)
        alpha = coef(lr(count - 1) if callable(lr) else lr, like)
        c = 1 + alpha * coef(self.weight_decay, like)
        lb = state.lb
        if self.adapt_lower_bound:
            cap = c * (barf - gamma) + dot
            lb = jnp.where(cap < c * rho * lb, jnp.maximum(cap / (2 * rho * c), floor), lb)
        h = jnp.maximum(c * (barf - rho * lb - gamma) + dot, 0)
        flat = norm2 <= _TINY
        tau = jnp.minimum(alpha / rho, jnp.where(flat, 0, h / jnp.where(flat, 1, norm2)))
        if self.adapt_lower_bound:
            lb = jnp.maximum((barf + dot - gamma - 0.5 * tau * norm2) / rho, floor)
        shrink = (c - 1) / c  # αλ / (1 + αλ)

        def leaf(s: jax.Array, p: jax.Array) -> jax.Array:
            return -coef(shrink, p) * p - coef(tau, s) * s

        out = map_leaves(leaf, step, params, names=("step", "params"))
        return out, MomoState(inner, barf, gamma, jnp.asarray(lb, like.dtype))


_MOMO = dict(learning_rate=RATE, lower_bound=REAL, weight_decay=NONNEGATIVE, adapt_lower_bound=BOOL)


@hyperparameters(beta=DECAY, **_MOMO)
def momo(
    learning_rate: ScalarOrSchedule = 1.0,
    beta: float = 0.9,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformation:
    r"""MoMo: SGD with momentum and a Polyak step on the averaged model of the loss.

    $$ d_t = \beta d_{t-1} + (1-\beta) g_t, \qquad
       \tau_t = \min\Big(\alpha,\ \frac{((1+\alpha\lambda)(\bar f_t - f^\star - \gamma_t)
       + \langle d_t, \theta_t\rangle)_+}{\lVert d_t\rVert^2}\Big), \qquad
       \theta_{t+1} = \frac{\theta_t}{1+\alpha\lambda} - \tau_t\, d_t $$

    with $\bar f$, $\gamma$ and $d$ averages started at their first sample (see
    :class:`scale_by_momo`): ``scale_by_momo(momentum_from_first(β), β, ...)``. The
    learning rate is a cap, best chosen large; the loss must be passed as ``value=``.
    Equal to ``optax.contrib.momo``.

    Arguments: see :class:`scale_by_momo`.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> f = lambda x: jnp.sum(x**2)
        >>> tx, x = funcopt.momo(), jnp.array([1.0, 2.0, 3.0])
        >>> state = tx.init(x)
        >>> for _ in range(3):  # the first step is Polyak's, 1/4: x halves
        ...     value, grad = jax.value_and_grad(f)(x)
        ...     updates, state = tx.update(grad, state, x, value=value)
        ...     x = funcopt.apply_updates(x, updates)
        ...     print(f"{f(x):.4f}")
        3.5000
        3.3182
        3.1419

    Reference: Schaipp et al., MoMo: Momentum Models for Adaptive Learning Rates, 2024.
    """
    return scale_by_momo(
        momentum_from_first(beta),
        beta,
        learning_rate,
        lower_bound,
        weight_decay,
        adapt_lower_bound,
    )


@hyperparameters(b1=DECAY, b2=DECAY, eps=NONNEGATIVE, **_MOMO)
def momo_adam(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformation:
    r"""MoMo-Adam: Adam's preconditioned momentum with MoMo's step size.

    $$ D_t = \sqrt{\frac{v_t}{1-\beta_2^t}} + \epsilon, \qquad
       \tau_t = \min\Big(\frac{\alpha}{\rho_t},\ \frac{((1+\alpha\lambda)(\bar f_t -
       \rho_t f^\star - \gamma_t) + \langle m_t, \theta_t\rangle)_+}
       {\langle m_t, D_t^{-1} m_t\rangle}\Big), \qquad
       \theta_{t+1} = \frac{\theta_t}{1+\alpha\lambda} - \tau_t\, \frac{m_t}{D_t} $$

    with Adam's zero-started averages $m$, $v$ and $\bar f$, $\gamma$ (with β₁),
    $\rho_t = 1 - \beta_1^t$: ``scale_by_momo(precondition(scale_by_momentum(β₁),
    chain(second_moment(β₂), bias_correction(β₂)), eps=ε), β₁, ..., debias=True)``. The
    loss must be passed as ``value=``. Equal to ``optax.contrib.momo_adam``.

    Arguments: see :class:`scale_by_momo` and the glossary.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> f = lambda x: jnp.sum(x**2)
        >>> tx, x = funcopt.momo_adam(), jnp.array([1.0, 2.0, 3.0])
        >>> value, grad = jax.value_and_grad(f)(x)
        >>> updates, state = tx.update(grad, tx.init(x), x, value=value)
        >>> updates.round(4)  # capped: τ = α / ρ₁ = 0.1, times D⁻¹m = 0.1 sign(g)
        Array([-0.01, -0.01, -0.01], dtype=float32)

    Reference: Schaipp et al., MoMo: Momentum Models for Adaptive Learning Rates, 2024.
    """
    direction = precondition(
        scale_by_momentum(b1),  # m = β₁ m + (1 − β₁) g
        chain(second_moment(b2), bias_correction(b2)),  # v / (1 − β₂ᵗ)
        eps=eps,
    )
    return scale_by_momo(
        direction, b1, learning_rate, lower_bound, weight_decay, adapt_lower_bound, debias=True
    )
