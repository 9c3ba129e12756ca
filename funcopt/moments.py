"""Moments: running statistics of the gradient, each one equation per leaf.

A moment's output is the statistic itself (``m``, ``v``, a maximum, a sum), so that moments
compose: in a :func:`~funcopt.chain` (``second_moment`` then ``bias_correction``) and as the
numerator and denominator of a :class:`~funcopt.precondition`. First moments are stored in
the parameter's dtype (or ``mu_dtype``); statistics of ``|g|²`` in at least float32 and in
the real dtype for complex parameters (:func:`funcopt.lifting.second_moment_like`).

Notation: ``g`` the incoming update (the gradient at the head of a chain), ``t`` the step
number (1 at the first update), ``θ`` the parameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import Updates
from funcopt.lifting import Leafwise, abs2, moment_like, second_moment_like
from funcopt.validation import BOOL, DECAY, DTYPE, NONNEGATIVE
from funcopt.values import hyper, static

__all__ = [
    "BeliefState",
    "InfinityNormState",
    "MomentumState",
    "RunningMaxState",
    "SecondMomentState",
    "SumOfSquaresState",
    "TraceState",
    "YogiMomentState",
    "belief_moment",
    "bias_correction",
    "infinity_norm",
    "lion_momentum",
    "nesterov_momentum",
    "running_max",
    "scale_by_momentum",
    "second_moment",
    "sum_of_squares",
    "trace",
    "yogi_moment",
]


# ---- first moments ----------------------------------------------------------------------


class MomentumState(NamedTuple):
    """State of :class:`scale_by_momentum` (and the other damped first moments): ``mu``."""

    mu: Updates


class scale_by_momentum(Leafwise):
    r"""The chapter's momentum: replace the gradient by its exponential average.

    $$ m_t = \beta\, m_{t-1} + (1 - \beta)\, g_t, \qquad u_t = m_t, \qquad m_0 = 0 $$

    The damped average of the chapter's GDM and of Adam's first moment (the heavy-ball
    trace ``m = β m + g`` of ``optax.sgd`` is :class:`trace`).

    Args:
        decay: β in ``[0, 1)``; 0 passes the gradient through.
        mu_dtype: dtype ``m`` is stored in (default: the parameter's); the output is the
            stored, rounded ``m``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_momentum(0.5)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u, state.mu
        (Array([1.], dtype=float32), Array([1.], dtype=float32))
    """

    decay: float = hyper(DECAY, 0.9)
    mu_dtype: Any = static(None, DTYPE)

    State = MomentumState

    def init_leaf(self, p: jax.Array) -> MomentumState:
        return MomentumState(mu=moment_like(p, self.mu_dtype))

    def leaf(self, g: jax.Array, s: MomentumState) -> tuple[jax.Array, MomentumState]:
        mu = self.decay * s.mu + (1 - self.decay) * g
        return mu, MomentumState(mu)


class TraceState(NamedTuple):
    """State of :class:`trace`: the heavy-ball trace (optax's name)."""

    trace: Updates


class trace(Leafwise):
    r"""Heavy-ball momentum, as ``optax.trace``, ``optax.sgd`` and ``torch.optim.SGD``.

    $$ m_t = \beta\, m_{t-1} + g_t, \qquad u_t = m_t
       \quad (\text{Nesterov: } u_t = \beta\, m_t + g_t) $$

    Args:
        decay: β in ``[0, 1)``.
        nesterov: use the Nesterov look-ahead output.
        mu_dtype: dtype the trace is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.trace(0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> for _ in range(2):  # m = g, then 0.5 g + g
        ...     u, state = tx.update(jnp.array([2.0]), state)
        >>> u
        Array([3.], dtype=float32)
    """

    decay: float = hyper(DECAY, 0.9)
    nesterov: bool = static(False, BOOL)
    mu_dtype: Any = static(None, DTYPE)

    State = TraceState

    def init_leaf(self, p: jax.Array) -> TraceState:
        return TraceState(trace=moment_like(p, self.mu_dtype))

    def leaf(self, g: jax.Array, s: TraceState) -> tuple[jax.Array, TraceState]:
        m = self.decay * s.trace + g
        return (self.decay * m + g if self.nesterov else m), TraceState(m)


class nesterov_momentum(Leafwise):
    r"""Bias-corrected Nesterov look-ahead of a damped average (NAdam's numerator).

    $$ m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad
       u_t = \beta \frac{m_t}{1-\beta^{t+1}} + (1-\beta) \frac{g_t}{1-\beta^t} $$

    The non-Nesterov counterpart is ``chain(scale_by_momentum(β), bias_correction(β))``.

    Args:
        decay: β in ``[0, 1)``.
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.nesterov_momentum(0.5)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(u.item(), 4)  # 0.5 · 1 / (1 − 0.5²) + 0.5 · 2 / (1 − 0.5) = 8/3
        2.6667

    Reference: Dozat, Incorporating Nesterov Momentum into Adam, 2016.
    """

    decay: float = hyper(DECAY, 0.9)
    mu_dtype: Any = static(None, DTYPE)

    State = MomentumState
    reads_count = True

    def init_leaf(self, p: jax.Array) -> MomentumState:
        return MomentumState(mu=moment_like(p, self.mu_dtype))

    def scalars(self, count: Any) -> dict[str, Any]:
        t = count.astype(jnp.result_type(float))
        return {"c": 1 - self.decay**t, "c_next": 1 - self.decay ** (t + 1)}

    def leaf(
        self, g: jax.Array, s: MomentumState, *, c: Any, c_next: Any
    ) -> tuple[jax.Array, MomentumState]:
        b = self.decay
        mu = b * s.mu + (1 - b) * g
        return b * mu / c_next + (1 - b) * g / c, MomentumState(mu)


class lion_momentum(Leafwise):
    r"""Lion's two-rate momentum: interpolate with one rate, track with another.

    $$ u_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t $$

    Followed by :class:`~funcopt.scale_by_sign` it is Lion's direction.

    Args:
        b1: β₁ in ``[0, 1)``, the interpolation rate of the output.
        b2: β₂ in ``[0, 1)``, the decay of the tracked average.
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.lion_momentum(b1=0.5, b2=0.9)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u, state.mu  # 0.5 · 2 out, 0.1 · 2 kept
        (Array([1.], dtype=float32), Array([0.2], dtype=float32))

    Reference: Chen et al., Symbolic Discovery of Optimization Algorithms, 2023.
    """

    b1: float = hyper(DECAY, 0.9)
    b2: float = hyper(DECAY, 0.99)
    mu_dtype: Any = static(None, DTYPE)

    State = MomentumState

    def init_leaf(self, p: jax.Array) -> MomentumState:
        return MomentumState(mu=moment_like(p, self.mu_dtype))

    def leaf(self, g: jax.Array, s: MomentumState) -> tuple[jax.Array, MomentumState]:
        u = self.b1 * s.mu + (1 - self.b1) * g
        return u, MomentumState(self.b2 * s.mu + (1 - self.b2) * g)


# ---- bias correction --------------------------------------------------------------------


class bias_correction(Leafwise):
    r"""Divide a zero-started exponential average by the weight it has gathered.

    $$ \hat m_t = \frac{m_t}{1 - \beta^t}, \qquad t = 1, 2, \dots $$

    After ``t`` steps ``m_t = (1 − β) Σ_{k=1..t} β^{t−k} g_k``, whose weights sum to
    ``1 − β^t``: dividing by it gives a proper weighted mean (``\hat m_1 = g_1``).

    Args:
        decay: the β of the average being corrected, in ``[0, 1)``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.bias_correction(0.9)
        >>> m1 = 0.1 * jnp.array([2.0, -4.0])  # m after one step of β = 0.9 on g
        >>> u, state = tx.update(m1, tx.init(jnp.zeros(2)))
        >>> u.round(4), state.count
        (Array([ 2., -4.], dtype=float32), Array(1, dtype=int32))
    """

    decay: float = hyper(DECAY)

    reads_count = True

    def scalars(self, count: Any) -> dict[str, Any]:
        return {"weight": 1 - self.decay ** count.astype(jnp.result_type(float))}

    def leaf(self, g: jax.Array, *, weight: Any) -> jax.Array:  # weight = 1 − βᵗ
        return g / weight


# ---- second moments ---------------------------------------------------------------------


class SecondMomentState(NamedTuple):
    """State of :class:`second_moment`: ``nu``, the average of ``|g|²``."""

    nu: Updates


class second_moment(Leafwise):
    r"""The exponential average of squared gradients, RMSProp's and Adam's ``v``.

    $$ v_t = \beta\, v_{t-1} + (1 - \beta)\, |g_t|^2, \qquad u_t = v_t $$

    ``|g|²`` is ``g · conj(g)`` for complex ``g``. The denominator of
    :func:`~funcopt.scale_by_rms` and :func:`~funcopt.scale_by_adam`.

    Args:
        decay: β in ``[0, 1)``.
        initial_scale: ``v_0`` ≥ 0 (0 in the chapter; 1 in some TensorFlow RMSProps).
        nu_dtype: dtype ``v`` is stored in (default: at least float32, real).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.second_moment(0.5)
        >>> tx.update(jnp.array([2.0, 1j]), tx.init(jnp.zeros(2, jnp.complex64)))[1].nu
        Array([2. , 0.5], dtype=float32)
    """

    decay: float = hyper(DECAY, 0.999)
    initial_scale: float = hyper(NONNEGATIVE, 0.0)
    nu_dtype: Any = static(None, DTYPE)

    State = SecondMomentState

    def init_leaf(self, p: jax.Array) -> SecondMomentState:
        return SecondMomentState(nu=second_moment_like(p, self.nu_dtype, self.initial_scale))

    def leaf(self, g: jax.Array, s: SecondMomentState) -> tuple[jax.Array, SecondMomentState]:
        nu = self.decay * s.nu + (1 - self.decay) * abs2(g)
        return nu, SecondMomentState(nu)


class RunningMaxState(NamedTuple):
    """State of :class:`running_max`: the largest value seen per coordinate."""

    nu_max: Updates


class running_max(Leafwise):
    r"""The running element-wise maximum: $u_t = \max(u_{t-1}, g_t)$, $u_0 = 0$.

    After a bias-corrected second moment it is AMSGrad's $\max_{k \le t} \hat v_k$;
    before the bias correction it is torch's ``Adam(amsgrad=True)``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.running_max()
        >>> u, state = tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))
        >>> u  # max(0, g): the negative entry stays at u_0 = 0
        Array([1., 0.], dtype=float32)

    Reference: Reddi et al., On the Convergence of Adam and Beyond, 2018.
    """

    State = RunningMaxState

    def init_leaf(self, p: jax.Array) -> RunningMaxState:
        return RunningMaxState(nu_max=second_moment_like(p))

    def leaf(self, g: jax.Array, s: RunningMaxState) -> tuple[jax.Array, RunningMaxState]:
        top = jnp.maximum(s.nu_max, g)
        return top, RunningMaxState(top)


class InfinityNormState(NamedTuple):
    """State of :class:`infinity_norm`: the decayed maximum ``nu`` (optax's name)."""

    nu: Updates


class infinity_norm(Leafwise):
    r"""Adamax's exponentially weighted infinity norm.

    $$ u_t = \max(|g_t| + \epsilon,\ \beta\, u_{t-1}), \qquad u_0 = 0 $$

    The denominator of Adamax, via ``precondition(..., root=False)``.

    Args:
        decay: β in ``[0, 1)``.
        eps: ε ≥ 0 added to ``|g|``, keeps the output positive.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.infinity_norm(decay=0.5, eps=0.0)
        >>> u, state = tx.update(jnp.array([-4.0, 1.0]), tx.init(jnp.zeros(2)))
        >>> tx.update(jnp.array([1.0, 1.0]), state)[0]  # max(|g|, 0.5 · u)
        Array([2., 1.], dtype=float32)

    Reference: Kingma & Ba, Adam, 2015, Section 7.1.
    """

    decay: float = hyper(DECAY, 0.999)
    eps: float = hyper(NONNEGATIVE, 1e-8)

    State = InfinityNormState

    def init_leaf(self, p: jax.Array) -> InfinityNormState:
        return InfinityNormState(nu=second_moment_like(p))

    def leaf(self, g: jax.Array, s: InfinityNormState) -> tuple[jax.Array, InfinityNormState]:
        nu = jnp.maximum(jnp.abs(g) + self.eps, self.decay * s.nu)
        return nu, InfinityNormState(nu)


class BeliefState(NamedTuple):
    """State of :class:`belief_moment`: the prediction ``m`` of ``g`` and the belief ``nu``."""

    prediction: Updates
    nu: Updates


class belief_moment(Leafwise):
    r"""AdaBelief's second moment: the average of the squared surprise ``|g − m|²``.

    $$ m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
       s_t = \beta_2 s_{t-1} + (1-\beta_2)|g_t - m_t|^2 + \epsilon_{root}, \qquad u_t = s_t $$

    It keeps its own prediction ``m`` (the numerator keeps the momentum), so that it
    composes with any numerator through :class:`~funcopt.precondition`.

    Args:
        b1: β₁ in ``[0, 1)`` of the prediction ``m``.
        b2: β₂ in ``[0, 1)`` of ``s``.
        eps_root: ε ≥ 0 added to ``s`` at every step (it accumulates, as in the paper).
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.belief_moment(b1=0.5, b2=0.5, eps_root=0.0)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> state.prediction, u  # m = 0.5 · 2 = 1, s = 0.5 · (2 − 1)²
        (Array([1.], dtype=float32), Array([0.5], dtype=float32))

    Reference: Zhuang et al., AdaBelief Optimizer, 2020, Algorithm 2.
    """

    b1: float = hyper(DECAY, 0.9)
    b2: float = hyper(DECAY, 0.999)
    eps_root: float = hyper(NONNEGATIVE, 1e-16)
    mu_dtype: Any = static(None, DTYPE)

    State = BeliefState

    def init_leaf(self, p: jax.Array) -> BeliefState:
        return BeliefState(moment_like(p, self.mu_dtype), second_moment_like(p))

    def leaf(self, g: jax.Array, s: BeliefState) -> tuple[jax.Array, BeliefState]:
        m = self.b1 * s.prediction + (1 - self.b1) * g
        nu = self.b2 * s.nu + (1 - self.b2) * abs2(g - m) + self.eps_root
        return nu, BeliefState(m, nu)


class YogiMomentState(NamedTuple):
    """State of :class:`yogi_moment`: the second moment ``nu``."""

    nu: Updates


class yogi_moment(Leafwise):
    r"""Yogi's additive second moment: ``v`` moves towards ``|g|²`` by at most ``(1 − β)|g|²``.

    $$ v_t = v_{t-1} - (1-\beta)\, \operatorname{sign}(v_{t-1} - |g_t|^2)\, |g_t|^2,
       \qquad u_t = v_t $$

    Args:
        decay: β in ``[0, 1)``.
        initial_accumulator_value: ``v_0`` ≥ 0.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.yogi_moment(decay=0.5, initial_accumulator_value=1.0)
        >>> tx.update(jnp.array([2.0, 0.0]), tx.init(jnp.zeros(2)))[0]  # 1 + 0.5 · 4, 1 − 0
        Array([3., 1.], dtype=float32)

    Reference: Zaheer et al., Adaptive Methods for Nonconvex Optimization, 2018.
    """

    decay: float = hyper(DECAY, 0.999)
    initial_accumulator_value: float = hyper(NONNEGATIVE, 1e-6)

    State = YogiMomentState

    def init_leaf(self, p: jax.Array) -> YogiMomentState:
        return YogiMomentState(second_moment_like(p, fill=self.initial_accumulator_value))

    def leaf(self, g: jax.Array, s: YogiMomentState) -> tuple[jax.Array, YogiMomentState]:
        g2 = abs2(g)
        nu = s.nu - (1 - self.decay) * jnp.sign(s.nu - g2) * g2
        return nu, YogiMomentState(nu)


class SumOfSquaresState(NamedTuple):
    """State of :class:`sum_of_squares`: the accumulated ``Σ |g|²`` (optax's name)."""

    sum_of_squares: Updates


class sum_of_squares(Leafwise):
    r"""Adagrad's accumulator: $u_t = s_t = s_{t-1} + |g_t|^2$, $s_0$ = the initial value.

    Args:
        initial_accumulator_value: ``s_0`` ≥ 0.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.sum_of_squares(initial_accumulator_value=0.0)
        >>> state = tx.init(jnp.zeros(2))
        >>> for _ in range(2):
        ...     u, state = tx.update(jnp.array([1.0, -2.0]), state)
        >>> u  # two steps of [1, 4]
        Array([2., 8.], dtype=float32)

    Reference: Duchi et al., Adaptive Subgradient Methods, JMLR 2011.
    """

    initial_accumulator_value: float = hyper(NONNEGATIVE, 0.1)

    State = SumOfSquaresState

    def init_leaf(self, p: jax.Array) -> SumOfSquaresState:
        return SumOfSquaresState(second_moment_like(p, fill=self.initial_accumulator_value))

    def leaf(self, g: jax.Array, s: SumOfSquaresState) -> tuple[jax.Array, SumOfSquaresState]:
        total = s.sum_of_squares + abs2(g)
        return total, SumOfSquaresState(total)
