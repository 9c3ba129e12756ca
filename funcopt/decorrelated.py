r"""Decorrelated second moments: divide the gradient by statistics of the *previous* ones.

Adam's $\hat v_t$ contains the $g_t$ it divides, so the step and its scale are correlated
(a large $g_t$ is partly cancelled by its own $g_t^2$). The two methods here divide by a
second moment that stops at $t - 1$:

- ADOPT (Taniguchi et al., 2024; :class:`decorrelated_rms`, :func:`scale_by_adopt`,
  :func:`adopt`): normalise $g_t$ by $\sqrt{v_{t-1}}$, clip, *then* average the normalised
  gradients: $m_t = \beta_1 m_{t-1} + (1-\beta_1)\,\mathrm{clip}(g_t / \sqrt{v_{t-1}})$.
- ACProp (Zhuang et al., 2021; :class:`lagged_belief_moment`, :func:`scale_by_acprop`,
  :func:`acprop`): AdaBelief's centred second moment
  $s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_{t-1})^2$ of the previous step, with the
  raw gradient above it: $u_t = g_t / \sqrt{\hat s_{t-1}}$.

Signatures, defaults and numbers are ``optax.contrib``'s; the deliberate differences are
stated where they occur. Notation as in :mod:`funcopt.moments`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import GradientTransformation, HyperParameterError, ScalarOrSchedule, Updates
from funcopt.combine import chain, identity, precondition
from funcopt.lifting import Leafwise, abs2, moment_like, second_moment_like
from funcopt.moments import lion_momentum, scale_by_momentum
from funcopt.scaling import _ADAM_ARGS, _DESCENT_ARGS, _descend, scale_by_learning_rate
from funcopt.trees import Mask
from funcopt.validation import BOOL, DECAY, DTYPE, NONNEGATIVE, RATE, hyperparameters
from funcopt.values import hyper, static

__all__ = [
    "DecorrelatedRmsState",
    "LaggedBeliefState",
    "acprop",
    "adopt",
    "decorrelated_rms",
    "lagged_belief_moment",
    "scale_by_acprop",
    "scale_by_adopt",
]


def _fourth_root(step: jax.Array) -> jax.Array:
    """ADOPT's default clipping bound ``step^{1/4}``."""
    return step**0.25


# ---- ADOPT ------------------------------------------------------------------------------


class DecorrelatedRmsState(NamedTuple):
    """State of :class:`decorrelated_rms`: ``nu``, the average of ``|g|²``."""

    nu: Updates


class decorrelated_rms(Leafwise):
    r"""ADOPT's normalisation: divide by the second moment of the *previous* gradients.

    $$ u_t = \operatorname{clip}\Big(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},\ c(t-1)\Big),
       \qquad v_t = \beta v_{t-1} + (1-\beta) |g_t|^2 $$

    with $u_1 = 0$ and $v_1 = |g_1|^2$: ``v`` does not contain the ``g`` it divides, so
    the two are independent. Without ``clip_value_fn`` there is no clipping.

    Args:
        decay: β in ``[0, 1)``.
        eps: ε ≥ 0, the floor of ``√v``.
        clip_value_fn: ``c``, a function of the step index ``t − 1`` (a float) giving the
            clipping bound, or ``None``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.decorrelated_rms(0.5)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u, tx.update(jnp.array([-1.0]), state)[0]  # 0, then −1 / √4
        (Array([0.], dtype=float32), Array([-0.5], dtype=float32))

    Reference: Taniguchi et al., ADOPT: Modified Adam Can Converge with Any β₂ with the
    Optimal Rate, NeurIPS 2024.
    """

    decay: float = hyper(DECAY, 0.9999)
    eps: float = hyper(NONNEGATIVE, 1e-6)
    clip_value_fn: Callable[[jax.Array], Any] | None = static(None)

    State = DecorrelatedRmsState
    reads_count = True

    def check(self) -> None:
        if self.clip_value_fn is not None and not callable(self.clip_value_fn):
            raise HyperParameterError(
                "clip_value_fn must be a function or None, "
                f"got clip_value_fn={self.clip_value_fn!r}"
            )

    def init_leaf(self, p: jax.Array) -> DecorrelatedRmsState:
        return DecorrelatedRmsState(second_moment_like(p))

    def scalars(self, count: Any) -> dict[str, Any]:
        t = count.astype(jnp.result_type(float))
        if self.clip_value_fn is None:
            return {"t": t}
        return {"t": t, "bound": jnp.asarray(self.clip_value_fn(t - 1))}

    def leaf(
        self, g: jax.Array, s: DecorrelatedRmsState, *, t: Any, bound: Any = None
    ) -> tuple[jax.Array, DecorrelatedRmsState]:
        u = g / jnp.maximum(jnp.sqrt(s.nu), self.eps)
        if bound is not None:
            u = jnp.clip(u, -bound, bound)  # refuses complex numbers, as funcopt.clip
        nu = jnp.where(t == 1, abs2(g), self.decay * s.nu + (1 - self.decay) * abs2(g))
        return jnp.where(t == 1, 0, u), DecorrelatedRmsState(nu)


@hyperparameters(b1=DECAY, b2=DECAY, eps=NONNEGATIVE, mu_dtype=DTYPE, nesterov=BOOL,
                 use_clipping=BOOL)  # fmt: skip
def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] = _fourth_root,
) -> GradientTransformation:
    r"""ADOPT's direction: the average of the decorrelated, clipped normalised gradients.

    $$ x_t = \operatorname{clip}\big(g_t / \max(\sqrt{v_{t-1}}, \epsilon),\ (t-1)^{1/4}\big),
       \qquad m_t = \beta_1 m_{t-1} + (1-\beta_1) x_t, \qquad u_t = m_t $$

    (:class:`decorrelated_rms` then :class:`~funcopt.scale_by_momentum`; $x_1 = 0$). With
    ``nesterov`` the output is $\beta_1 m_t + (1-\beta_1) x_t$, which is
    $\beta_1^2 m_{t-1} + (1-\beta_1^2) x_t$: :class:`~funcopt.lion_momentum` with rates
    β₁² and β₁. Equal to ``optax.contrib.scale_by_adopt``, except that ``clip_value_fn``
    receives the step index as a float (optax: an int32, which ``x**0.25`` cannot take
    under strict dtype promotion) and that ``1 − β₂`` is not rounded to float32 (optax's
    is 1.7e-4 off for β₂ = 0.9999).

    Args:
        use_clipping: clip the normalised gradient to ``± clip_value_fn(t − 1)``.
        clip_value_fn: the clipping bound as a function of the step index.

    Other arguments: see the glossary (``b1`` and ``b2`` as in Adam).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_adopt()
        >>> state = tx.init(jnp.zeros(1))
        >>> for g in [2.0, 8.0]:  # u₁ = 0; u₂ = 0.1 · clip(8 / 2, ±1)
        ...     u, state = tx.update(jnp.array([g]), state)
        >>> u
        Array([0.1], dtype=float32)
    """
    normalised = decorrelated_rms(b2, eps, clip_value_fn if use_clipping else None)
    if nesterov:
        return chain(normalised, lion_momentum(b1 * b1, b1, mu_dtype))
    return chain(normalised, scale_by_momentum(b1, mu_dtype))


@hyperparameters(learning_rate=RATE, b1=DECAY, b2=DECAY, eps=NONNEGATIVE, mu_dtype=DTYPE,
                 nesterov=BOOL, use_clipping=BOOL)  # fmt: skip
def adopt(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] = _fourth_root,
) -> GradientTransformation:
    r"""ADOPT: $\theta_{t+1} = \theta_t - \eta\, m_t$ with :func:`scale_by_adopt`'s ``m``.

    Equal to ``optax.contrib.adopt``. Arguments: see :func:`scale_by_adopt` and the glossary.

    Example:
        >>> import funcopt
        >>> funcopt.adopt(0.1).transforms[1]
        scale_by_learning_rate(learning_rate=0.1)
    """
    direction = scale_by_adopt(
        b1,
        b2,
        eps,
        mu_dtype,
        nesterov=nesterov,
        use_clipping=use_clipping,
        clip_value_fn=clip_value_fn,
    )
    return chain(direction, scale_by_learning_rate(learning_rate))


# ---- ACProp -----------------------------------------------------------------------------


class LaggedBeliefState(NamedTuple):
    """State of :class:`lagged_belief_moment`: the prediction ``mu`` and the belief ``nu``."""

    mu: Updates
    nu: Updates


class lagged_belief_moment(Leafwise):
    r"""ACProp's denominator: AdaBelief's ``ŝ`` of the previous step (1 at the first).

    $$ u_t = \frac{s_{t-1}}{1-\beta_2^{t-1}}\ (u_1 = 1),\qquad
       s_t = \beta_2 s_{t-1} + (1-\beta_2)|g_t - m_{t-1}|^2 + \epsilon_{root},\qquad
       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t $$

    The surprise is measured against the prediction made before ``g_t`` (``m_{t−1}``, as
    optax and the authors' code; optax's docstring writes ``m_t``).

    Args:
        b1: β₁ in ``[0, 1)`` of the prediction ``m``.
        b2: β₂ in ``[0, 1)`` of ``s``.
        eps_root: ε ≥ 0 added to ``s`` at every step.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.lagged_belief_moment(b1=0.5, b2=0.5, eps_root=0.0)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u, tx.update(jnp.array([0.0]), state)[0]  # 1; then ŝ₁ = (½ · 2²) / ½
        (Array([1.], dtype=float32), Array([4.], dtype=float32))

    Reference: Zhuang et al., Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods, NeurIPS 2021.
    """

    b1: float = hyper(DECAY, 0.9)
    b2: float = hyper(DECAY, 0.999)
    eps_root: float = hyper(NONNEGATIVE, 1e-16)

    State = LaggedBeliefState
    reads_count = True

    def init_leaf(self, p: jax.Array) -> LaggedBeliefState:
        return LaggedBeliefState(moment_like(p), second_moment_like(p))

    def scalars(self, count: Any) -> dict[str, Any]:
        t = count.astype(jnp.result_type(float))
        return {"first": t == 1, "weight": 1 - self.b2 ** jnp.maximum(t - 1, 1)}

    def leaf(
        self, g: jax.Array, s: LaggedBeliefState, *, first: Any, weight: Any
    ) -> tuple[jax.Array, LaggedBeliefState]:
        previous = jnp.where(first, 1, s.nu / weight)  # ŝ_{t−1}
        mu = self.b1 * s.mu + (1 - self.b1) * g
        nu = self.b2 * s.nu + (1 - self.b2) * abs2(g - s.mu) + self.eps_root
        return previous, LaggedBeliefState(mu, nu)


@hyperparameters(**_ADAM_ARGS)
def scale_by_acprop(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-16, eps_root: float = 1e-16
) -> GradientTransformation:
    r"""ACProp's direction: the gradient over the root of the previous step's ``ŝ``.

    $$ u_t = \frac{g_t}{\sqrt{\hat s_{t-1}} + \epsilon} $$

    (:class:`lagged_belief_moment`; $u_1 = g_1 / (1 + \epsilon)$). Equal to
    ``optax.contrib.scale_by_acprop``. Arguments: see :class:`lagged_belief_moment` and
    the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_acprop()
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0]  # ŝ₀ = 1
        Array([ 2., -4.], dtype=float32)
    """
    return precondition(identity(), lagged_belief_moment(b1, b2, eps_root), eps=eps)


@hyperparameters(**_ADAM_ARGS, **_DESCENT_ARGS)
def acprop(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""ACProp: :func:`scale_by_acprop`, decoupled weight decay, the learning rate.

    $$ \theta_{t+1} = \theta_t - \eta \Big(\frac{g_t}{\sqrt{\hat s_{t-1}} + \epsilon}
       + \lambda \theta_t\Big) $$

    Equal to ``optax.contrib.acprop``. Arguments: see :class:`lagged_belief_moment` and
    the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = funcopt.acprop(0.1)
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(params), params)[0]
        Array([-0.2,  0.4], dtype=float32)
    """
    direction = scale_by_acprop(b1, b2, eps, eps_root)
    return _descend(direction, learning_rate, weight_decay, mask)
