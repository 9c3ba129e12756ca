"""Layer-wise optimizers: steps rescaled per leaf by a ratio of norms.

LAMB and LARS rescale each leaf's step by the trust ratio ``‖θ‖ / ‖u‖``
(:class:`~funcopt.scale_by_trust_ratio`); NovoGrad normalises each leaf by the running RMS
of its gradient's norm (:class:`~funcopt.scale_by_layerwise_rms`). None of them is
elementwise, so in packed mode they run on the tree view. Signatures, defaults and numerics
are optax's; recurring arguments are described in the glossary (``docs/glossary.md``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import GradientTransformation, ScalarOrSchedule, Updates
from funcopt.combine import chain
from funcopt.lifting import Leafwise, abs2, real_dtype
from funcopt.moments import trace
from funcopt.preconditioners import scale_by_adam
from funcopt.scaling import add_decayed_weights, scale_by_learning_rate, scale_by_trust_ratio
from funcopt.trees import MASK, Mask
from funcopt.validation import BOOL, DECAY, DTYPE, NONNEGATIVE, RATE, hyperparameters
from funcopt.values import hyper

__all__ = ["LayerwiseRmsState", "lamb", "lars", "novograd", "scale_by_layerwise_rms"]


@hyperparameters(
    learning_rate=RATE, b1=DECAY, b2=DECAY, eps=NONNEGATIVE, eps_root=NONNEGATIVE,
    weight_decay=RATE, mask=MASK, mu_dtype=DTYPE,
)  # fmt: skip
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

    Equal to ``optax.lamb``. Arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([3.0, -4.0])}
        >>> tx = funcopt.lamb(0.1)
        >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)
        >>> round(float(jnp.linalg.norm(updates["w"])), 4)  # each leaf's step is η ‖θ‖
        0.5
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype),  # m̂ / (√v̂ + ε)
        add_decayed_weights(weight_decay, mask),  # + λ θ
        scale_by_trust_ratio(),  # · ‖θ‖ / ‖r‖
        scale_by_learning_rate(learning_rate),
    )


@hyperparameters(
    learning_rate=RATE, weight_decay=RATE, weight_decay_mask=MASK, trust_coefficient=NONNEGATIVE,
    eps=NONNEGATIVE, trust_ratio_mask=MASK, momentum=DECAY, nesterov=BOOL, mu_dtype=DTYPE,
)  # fmt: skip
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

    The masks (``True``: every leaf) select the leaves that decay and that are rescaled.
    Equal to ``optax.lars``.

    Args:
        weight_decay_mask: which leaves decay, as ``mask`` in the glossary (``True``:
            every leaf).
        trust_coefficient: ``c`` ≥ 0 (a leaf whose ``θ`` or ``r`` is zero keeps ratio 1).
        eps: ε ≥ 0 added to ``‖r_t‖``.
        trust_ratio_mask: which leaves are rescaled, as ``weight_decay_mask``.
        momentum: β in ``[0, 1)`` of the heavy-ball trace.

    Other arguments: see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([3.0, -4.0])}  # ‖θ‖ = 5
        >>> tx = funcopt.lars(0.1, trust_coefficient=1.0)
        >>> updates, state = tx.update({"w": jnp.array([0.3, -0.4])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [2.7, -3.6]
    """
    from funcopt.wrappers import masked

    ratio: Any = scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps)
    if trust_ratio_mask is not True and trust_ratio_mask is not None:
        ratio = masked(ratio, trust_ratio_mask)
    decay_mask = None if weight_decay_mask is True else weight_decay_mask
    return chain(
        add_decayed_weights(weight_decay, decay_mask),  # r = g + λ θ
        ratio,  # · c ‖θ‖ / (‖r‖ + ε)
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov, mu_dtype),  # m = β m + ·
    )


@hyperparameters(
    learning_rate=RATE, b1=DECAY, b2=DECAY, eps=NONNEGATIVE, eps_root=NONNEGATIVE,
    weight_decay=RATE, mu_dtype=DTYPE,
)  # fmt: skip
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

    with one ``ν`` per leaf. Equal to ``optax.novograd``. Arguments: see the glossary
    (``b1`` is the trace's decay, ``b2`` each leaf's ``ν``'s).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = funcopt.novograd(0.1)
        >>> updates, state = tx.update({"w": jnp.array([3.0, -4.0])}, tx.init(params), params)
        >>> [round(x, 4) for x in funcopt.apply_updates(params, updates)["w"].tolist()]
        [0.94, -1.92]
    """
    return chain(
        scale_by_layerwise_rms(b2, eps, eps_root),  # g / (√ν + ε)
        add_decayed_weights(weight_decay),  # + λ θ
        trace(b1, mu_dtype=mu_dtype),  # m = β₁ m + ·
        scale_by_learning_rate(learning_rate),
    )


class LayerwiseRmsState(NamedTuple):
    """State of :class:`scale_by_layerwise_rms`: one second moment per leaf."""

    nu: Updates


class scale_by_layerwise_rms(Leafwise):
    r"""NovoGrad's normalisation: divide each leaf by the running RMS of its norm.

    $$ \nu_1 = \lVert g_1 \rVert^2,\quad
       \nu_t = \beta \nu_{t-1} + (1-\beta) \lVert g_t \rVert^2,\quad
       u_t = \frac{g_t}{\sqrt{\nu_t + \epsilon_{root}} + \epsilon} $$

    with one scalar ``ν`` per leaf (layer) instead of one per coordinate.

    Args:
        decay: β in ``[0, 1)``, decay of each leaf's ``ν`` (unused at the first step).
        eps: ε ≥ 0 outside the root.
        eps_root: ε ≥ 0 inside the root.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_layerwise_rms()
        >>> u, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
        >>> state.inner_state.nu  # one scalar per leaf: ‖g‖² = 25
        Array(25., dtype=float32)
        >>> [round(x, 4) for x in u.tolist()]  # g / ‖g‖
        [0.6, 0.8]

    Reference: Ginsburg et al., Stochastic Gradient Methods with Layer-wise Adaptive
    Moments, 2019.
    """

    decay: float = hyper(DECAY, 0.25)
    eps: float = hyper(NONNEGATIVE, 1e-6)
    eps_root: float = hyper(NONNEGATIVE, 0.0)

    State = LayerwiseRmsState
    reads_count = True
    elementwise = False

    def init_leaf(self, p: jax.Array) -> LayerwiseRmsState:
        return LayerwiseRmsState(jnp.zeros([], real_dtype(jnp.result_type(p))))

    def leaf(
        self, g: jax.Array, s: LayerwiseRmsState, *, t: Any
    ) -> tuple[jax.Array, LayerwiseRmsState]:
        sq = jnp.sum(abs2(g))
        nu = jnp.where(t == 1, sq, self.decay * s.nu + (1 - self.decay) * sq)
        return g / (jnp.sqrt(nu + self.eps_root) + self.eps), LayerwiseRmsState(nu)
