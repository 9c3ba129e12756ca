r"""Momentum mixtures: a fast and a slow momentum (AdEMAMix) in Adam's numerator.

An exponential average forgets a gradient after about $1/(1-\beta)$ steps; a single β
cannot both follow the recent gradients and remember old ones. AdEMAMix (Pagliardini et
al., 2024) adds a slow average, not bias-corrected, to Adam's fast one,

$$ m_{1,t} = \beta_1 m_{1,t-1} + (1-\beta_1)\, g_t, \quad
   m_{2,t} = \beta_3 m_{2,t-1} + (1-\beta_3)\, g_t, \quad
   u_t = \frac{\hat m_{1,t} + \alpha\, m_{2,t}}{\sqrt{\hat v_t} + \epsilon} $$

(:class:`ema_mixture`, :func:`scale_by_ademamix`, :func:`ademamix`), usually with β₃ and α
warmed up by schedules. Its simplified form (Morwani et al., 2025) keeps one heavy-ball
trace $m_t = \beta_1 m_{t-1} + g_t$ and mixes in the current gradient, $m_t + \alpha g_t$
(:class:`trace_mixture`, :func:`scale_by_simplified_ademamix`,
:func:`simplified_ademamix`).

Signatures, defaults and numbers are ``optax.contrib``'s; the deliberate differences are
stated where they occur. Notation as in :mod:`funcopt.moments`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import GradientTransformation, ScalarOrSchedule, Updates
from funcopt.combine import chain, precondition
from funcopt.lifting import Leafwise, moment_like
from funcopt.moments import bias_correction, second_moment
from funcopt.scaling import _ADAM_ARGS, _DESCENT_ARGS, _descend
from funcopt.trees import Mask
from funcopt.validation import DECAY, DTYPE, RATE, hyperparameters, interval
from funcopt.values import hyper, static

__all__ = [
    "EmaMixtureState",
    "TraceMixtureState",
    "ademamix",
    "ema_mixture",
    "scale_by_ademamix",
    "scale_by_simplified_ademamix",
    "simplified_ademamix",
    "trace_mixture",
]

DECAY_OR_SCHEDULE = interval(0.0, 1.0, schedule=True)


def _at_step(value: Any, count: Any) -> Any:
    """A hyper-parameter's value at this update: a schedule is read at ``t − 1``."""
    return value(count - 1) if callable(value) else value


class EmaMixtureState(NamedTuple):
    """State of :class:`ema_mixture`: the fast average ``m1`` and the slow ``m2``."""

    m1: Updates
    m2: Updates


class ema_mixture(Leafwise):
    r"""AdEMAMix's numerator: a bias-corrected fast average plus α times a slow one.

    $$ m_{1,t} = \beta_1 m_{1,t-1} + (1-\beta_1) g_t,\quad
       m_{2,t} = \beta_3 m_{2,t-1} + (1-\beta_3) g_t,\quad
       u_t = \frac{m_{1,t}}{1-\beta_1^t} + \alpha\, m_{2,t} $$

    The slow average is not bias-corrected: it fills in over ~1/(1 − β₃) steps.

    Args:
        b1: β₁ in ``[0, 1)``, the fast decay.
        b3: β₃ in ``[0, 1)`` or a schedule (read at ``t − 1``), the slow decay.
        alpha: α ≥ 0 or a schedule, the weight of the slow average.
        mu_dtype: dtype both averages are stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.ema_mixture(b1=0.5, b3=0.9, alpha=10.0)
        >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]  # 2 + 10 · 0.1 · 2
        Array([4.], dtype=float32)

    Reference: Pagliardini, Ablin and Grangier, The AdEMAMix Optimizer: Better, Faster,
    Older, 2024.
    """

    b1: float = hyper(DECAY, 0.9)
    b3: ScalarOrSchedule = hyper(DECAY_OR_SCHEDULE, 0.9999)
    alpha: ScalarOrSchedule = hyper(RATE, 6.0)
    mu_dtype: Any = static(None, DTYPE)

    State = EmaMixtureState
    reads_count = True

    def init_leaf(self, p: jax.Array) -> EmaMixtureState:
        return EmaMixtureState(moment_like(p, self.mu_dtype), moment_like(p, self.mu_dtype))

    def scalars(self, count: Any) -> dict[str, Any]:
        t = count.astype(jnp.result_type(float))
        b3, alpha = _at_step(self.b3, count), _at_step(self.alpha, count)
        return {"weight": 1 - self.b1**t, "b3": b3, "alpha": alpha}

    def leaf(
        self, g: jax.Array, s: EmaMixtureState, *, weight: Any, b3: Any, alpha: Any
    ) -> tuple[jax.Array, EmaMixtureState]:
        m1 = self.b1 * s.m1 + (1 - self.b1) * g
        m2 = b3 * s.m2 + (1 - b3) * g
        return m1 / weight + alpha * m2, EmaMixtureState(m1, m2)


@hyperparameters(**_ADAM_ARGS, b3=DECAY_OR_SCHEDULE, alpha=RATE, mu_dtype=DTYPE)
def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 6.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""AdEMAMix's direction: Adam's, with a mixture of a fast and a slow momentum.

    $$ u_t = \frac{\hat m_{1,t} + \alpha\, m_{2,t}}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} $$

    (:class:`ema_mixture` over Adam's ``v̂``). Equal to ``optax.contrib.scale_by_ademamix``,
    except that ``v`` is kept in at least float32 (optax: in ``mu_dtype``). Arguments:
    see :class:`ema_mixture` and the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_ademamix(alpha=0.0)  # Adam's first step: sign(g)
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0].round(4)
        Array([ 1., -1.], dtype=float32)
    """
    return precondition(
        ema_mixture(b1, b3, alpha, mu_dtype),  # m̂₁ + α m₂
        chain(second_moment(b2), bias_correction(b2)),  # v̂
        eps=eps,
        eps_root=eps_root,
    )


@hyperparameters(**_ADAM_ARGS, **_DESCENT_ARGS, b3=DECAY_OR_SCHEDULE, alpha=RATE, mu_dtype=DTYPE)
def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""AdEMAMix: AdamW with :func:`scale_by_ademamix`'s direction.

    $$ \theta_{t+1} = \theta_t - \eta \Big(\frac{\hat m_{1,t} + \alpha\, m_{2,t}}
       {\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} + \lambda \theta_t\Big) $$

    Equal to ``optax.contrib.ademamix`` (α = 5 here, 6 in ``scale_by_ademamix``, as optax).
    Arguments: see :class:`ema_mixture` and the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = funcopt.ademamix(0.1, b3=0.9)
        >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(params), params)
        >>> [round(x, 4) for x in u.tolist()]  # −η (1 + α (1 − β₃)) sign(g)
        [-0.15, 0.15]
    """
    direction = scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype)
    return _descend(direction, learning_rate, weight_decay, mask)


class TraceMixtureState(NamedTuple):
    """State of :class:`trace_mixture`: the heavy-ball trace ``m``."""

    m: Updates


class trace_mixture(Leafwise):
    r"""Simplified AdEMAMix's numerator: a heavy-ball trace plus α times the gradient.

    $$ m_t = \beta m_{t-1} + g_t, \qquad u_t = m_t + \alpha\, g_t $$

    Args:
        decay: β in ``[0, 1)``.
        alpha: α ≥ 0 or a schedule (read at ``t − 1``).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.trace_mixture(0.5, alpha=2.0)
        >>> tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))[0]  # m = 1, + 2 · 1
        Array([3.], dtype=float32)

    Reference: Morwani et al., Connections between Schedule-Free Optimizers, AdEMAMix, and
    Accelerated SGD Variants, 2025.
    """

    decay: float = hyper(DECAY, 0.99)
    alpha: ScalarOrSchedule = hyper(RATE, 0.0)

    State = TraceMixtureState

    @property
    def reads_count(self) -> bool:  # type: ignore[override]
        return callable(self.alpha)

    def init_leaf(self, p: jax.Array) -> TraceMixtureState:
        return TraceMixtureState(moment_like(p))

    def scalars(self, count: Any) -> dict[str, Any]:
        return {"alpha": _at_step(self.alpha, count)}

    def leaf(
        self, g: jax.Array, s: TraceMixtureState, *, alpha: Any
    ) -> tuple[jax.Array, TraceMixtureState]:
        m = self.decay * s.m + g
        return m + alpha * g, TraceMixtureState(m)


@hyperparameters(**_ADAM_ARGS, alpha=RATE)
def scale_by_simplified_ademamix(
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    r"""Simplified AdEMAMix's direction: one heavy-ball trace, mixed with the gradient.

    $$ u_t = \frac{m_t + \alpha\, g_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon},
       \qquad m_t = \beta_1 m_{t-1} + g_t $$

    (:class:`trace_mixture` over Adam's ``v̂`` with β₂). Equal to
    ``optax.contrib.scale_by_simplified_ademamix`` on real numbers; on complex ones ``v``
    averages ``|g|²`` (optax: ``g²``, a complex number). Arguments: ``b1`` is the β of
    :class:`trace_mixture`; see there and the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_simplified_ademamix(alpha=1.0)  # (g + g) / |g|
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))[0].round(4)
        Array([ 2., -2.], dtype=float32)
    """
    return precondition(
        trace_mixture(b1, alpha),  # m + α g
        chain(second_moment(b2), bias_correction(b2)),  # v̂
        eps=eps,
        eps_root=eps_root,
    )


@hyperparameters(**_ADAM_ARGS, **_DESCENT_ARGS, alpha=RATE)
def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""Simplified AdEMAMix: :func:`scale_by_simplified_ademamix`, weight decay, the rate.

    $$ \theta_{t+1} = \theta_t - \eta \Big(\frac{m_t + \alpha g_t}
       {\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} + \lambda \theta_t\Big) $$

    Equal to ``optax.contrib.simplified_ademamix`` (on real numbers). Arguments: see
    :class:`trace_mixture` and the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = funcopt.simplified_ademamix(0.1)
        >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(params), params)
        >>> [round(x, 4) for x in u.tolist()]  # α = 0: −η g / |g|
        [-0.1, 0.1]
    """
    direction = scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root)
    return _descend(direction, learning_rate, weight_decay, mask)
