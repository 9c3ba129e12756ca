"""Building blocks for the optimizers beyond the chapter.

Each is one small pure gradient transformation with the shape of
:mod:`funcopt.primitives`: a state ``NamedTuple`` above a typed, validating factory, a
per-leaf equation, ``init``/``update`` lifted over the pytree. Most are *moments*
(running statistics whose output is the statistic itself), meant to be combined by
:func:`divide`, which divides one transform's output by the root of another's, both
measured on the same incoming gradient. :func:`rectify` wraps any adaptive transform
with RAdam's variance rectification.

Notation as in :mod:`funcopt.primitives`: ``g`` the incoming update, ``t`` the step
count from 1, ``θ`` the parameters.
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
    Updates,
    cached_factory,
    check_decay,
    check_nonnegative,
    check_range,
    compute_dtype,
    identity,
    new_count,
    safe_increment,
    tree_map,
    zeros_like,
)
from funcopt.primitives import (
    coef,
    debias,
    ema,
    require_params,
    second_moment_zeros,
    store,
    up,
)

__all__ = [
    "BeliefMomentState",
    "DeltaRmsState",
    "DivideState",
    "FactoredState",
    "InfinityMomentState",
    "LayerwiseRmsState",
    "LionMomentumState",
    "NesterovMomentumState",
    "RectifyState",
    "RunningMaxState",
    "SumOfSquaresState",
    "YogiMomentState",
    "belief_moment",
    "divide",
    "infinity_moment",
    "lion_momentum",
    "nesterov_momentum",
    "rectify",
    "running_max",
    "scale_by_delta_rms",
    "scale_by_factored_rms",
    "scale_by_layerwise_rms",
    "scale_by_param_block_rms",
    "scale_by_sign",
    "scale_by_trust_ratio",
    "square",
    "sum_of_squares",
    "yogi_moment",
]


def stateless(leaf: Any, *, needs_params: str = "") -> GradientTransformation:
    """A transform with no state applying ``leaf(g)`` (or ``leaf(g, θ)``) to each leaf."""

    def init(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update(
        updates: Updates, state: EmptyState, params: Params | None = None
    ) -> tuple[Updates, EmptyState]:
        if not needs_params:
            return jax.tree.map(leaf, updates), state
        params = require_params(needs_params, params)
        return tree_map(leaf, updates, params, names=("updates", "params")), state

    return GradientTransformation(init, update)


def _moment(state_type: Any, leaf: Any, fill: float = 0.0) -> GradientTransformation:
    """A transform keeping one buffer ``s`` per leaf: ``s ← leaf(g, s)``, output ``s``.

    ``state_type`` is a one-field ``NamedTuple``; ``s_0`` is ``fill``; the output is ``s``
    in the update's dtype. Every such ``s`` here (a maximum, a sum or average of squares)
    is kept in at least float32, like :func:`funcopt.scale_by_rms`'s ``v``: in bfloat16,
    ``β s`` or ``s + g²`` with small ``g`` rounds back to ``s``.
    """
    (field,) = state_type._fields

    def init(params: Params) -> Any:
        return state_type(second_moment_zeros(params, None, fill))

    def update(updates: Updates, state: Any, params: Params | None = None) -> tuple[Updates, Any]:
        del params
        new = tree_map(leaf, updates, state[0], names=("updates", f"state.{field}"))
        return jax.tree.map(lambda g, s: s.astype(g.dtype), updates, new), state_type(new)

    return GradientTransformation(init, update)


# ---- element-wise maps ----------------------------------------------------------------


@cached_factory
def square() -> GradientTransformation:
    r"""Square each coordinate: $u_t = g_t^2$.

    The head of a second moment: ``chain(square(), scale_by_momentum(β₂))`` is Adam's
    ``v``, ready to feed :func:`divide` as its ``denominator``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.square()
        >>> tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))[0]
        Array([1., 4.], dtype=float32)
    """
    return stateless(lambda g: store(jnp.square(up(g)), g.dtype))


@cached_factory
def scale_by_sign() -> GradientTransformation:
    r"""Keep only the sign of each coordinate: $u_t = \operatorname{sign}(g_t)$ (0 at 0).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_sign()
        >>> tx.update(jnp.array([-3.0, 0.0, 0.5]), tx.init(jnp.zeros(3)))[0]
        Array([-1.,  0.,  1.], dtype=float32)

    Reference: Bernstein et al., signSGD, 2018.
    """
    return stateless(jnp.sign)


# ---- the combinator: one transform over the root of another --------------------------


class DivideState(NamedTuple):
    """State of :func:`divide`: the numerator's and the denominator's states."""

    numerator: OptState
    denominator: OptState


@cached_factory
def divide(
    denominator: GradientTransformation,
    numerator: GradientTransformation | None = None,
    *,
    eps: float = 0.0,
    eps_root: float = 0.0,
    sqrt: bool = True,
) -> GradientTransformation:
    r"""Divide one transform's output by the root of another's, both fed the same ``g``.

    $$ u_t = \frac{n_t}{\sqrt{d_t + \epsilon_{root}} + \epsilon}, \qquad
       n_t = N(g_t),\ d_t = D(g_t) $$

    (with ``sqrt=False``: $u_t = n_t / (d_t + \epsilon_{root} + \epsilon)$). ``D`` is a
    second-moment estimate such as ``chain(square(), scale_by_momentum(β₂),
    bias_correction(β₂))``; ``N`` defaults to the identity. This generalises
    :func:`funcopt.scale_by_rms` (whose ``v`` is fixed to the EMA of ``g²``) to any
    denominator: AMSGrad's running maximum, AdaBelief's ``(g − m)²``, Yogi's additive
    ``v``, Adagrad's sum, Adamax's infinity norm.

    Args:
        denominator: transform whose output ``d ≥ 0`` divides.
        numerator: transform whose output is divided (default: ``g`` itself).
        eps: ε ≥ 0 outside the root.
        eps_root: ε ≥ 0 inside the root.
        sqrt: take the square root of ``d`` (False for a first-order ``d``, Adamax).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.divide(funcopt.square())  # g / |g|
        >>> tx.update(jnp.array([-4.0, 2.0]), tx.init(jnp.zeros(2)))[0]
        Array([-1.,  1.], dtype=float32)
    """
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    num = numerator if numerator is not None else identity()

    def init(params: Params) -> DivideState:
        return DivideState(numerator=num.init(params), denominator=denominator.init(params))

    def update(
        updates: Updates, state: DivideState, params: Params | None = None
    ) -> tuple[Updates, DivideState]:
        n, num_state = num.update(updates, state.numerator, params)
        d, den_state = denominator.update(updates, state.denominator, params)

        def leaf(n: jax.Array, d: jax.Array) -> jax.Array:
            x = up(n)
            d = d.astype(x.dtype) + coef(eps_root, x)
            return store(x / ((jnp.sqrt(d) if sqrt else d) + coef(eps, x)), n.dtype)

        out = tree_map(leaf, n, d, names=("numerator", "denominator"))
        return out, DivideState(numerator=num_state, denominator=den_state)

    return GradientTransformation(init, update)


# ---- first moments ----------------------------------------------------------------------


class NesterovMomentumState(NamedTuple):
    """State of :func:`nesterov_momentum`: the running average ``m`` and the count."""

    m: Updates
    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count


@cached_factory
def nesterov_momentum(decay: float = 0.9, moment_dtype: Any = None) -> GradientTransformation:
    r"""Bias-corrected Nesterov look-ahead of a damped average (NAdam's numerator).

    $$ m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad
       u_t = \beta \frac{m_t}{1-\beta^{t+1}} + (1-\beta) \frac{g_t}{1-\beta^t} $$

    The non-Nesterov counterpart is ``chain(scale_by_momentum(β), bias_correction(β))``.

    Args:
        decay: β in ``[0, 1)``; 0 passes the gradient through.
        moment_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.nesterov_momentum(0.5)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> state.m, state.count  # m = 0.5 · 2
        (Array([1.], dtype=float32), Array(1, dtype=int32))
        >>> round(u.item(), 4)  # 0.5 · 1 / (1 − 0.5²) + 0.5 · 2 / (1 − 0.5) = 8/3
        2.6667

    Reference: Dozat, Incorporating Nesterov Momentum into Adam, 2016.
    """
    check_decay("decay", decay)

    def init(params: Params) -> NesterovMomentumState:
        return NesterovMomentumState(m=zeros_like(params, moment_dtype), count=new_count())

    def update(
        updates: Updates, state: NesterovMomentumState, params: Params | None = None
    ) -> tuple[Updates, NesterovMomentumState]:
        del params
        m = tree_map(
            lambda g, m: store(ema(m, g, decay), m.dtype),
            updates,
            state.m,
            names=("updates", "state.m"),
        )
        t = safe_increment(state.count)
        t_next = safe_increment(t)

        def leaf(g: jax.Array, m: jax.Array) -> jax.Array:
            m_hat, g_hat = debias(m, decay, t_next), debias(g, decay, t)
            return store(coef(decay, m_hat) * m_hat + coef(1 - decay, g_hat) * g_hat, g.dtype)

        return jax.tree.map(leaf, updates, m), NesterovMomentumState(m=m, count=t)

    return GradientTransformation(init, update)


class LionMomentumState(NamedTuple):
    """State of :func:`lion_momentum`: the running average ``m``."""

    m: Updates


@cached_factory
def lion_momentum(
    b1: float = 0.9, b2: float = 0.99, moment_dtype: Any = None
) -> GradientTransformation:
    r"""Lion's two-rate momentum: interpolate with one rate, track with another.

    $$ u_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t $$

    Followed by :func:`scale_by_sign` it is Lion's direction.

    Args:
        b1: β₁ in ``[0, 1)``, the interpolation rate of the output.
        b2: β₂ in ``[0, 1)``, the decay of the tracked average.
        moment_dtype: dtype ``m`` is stored in (default: the parameter's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.lion_momentum(b1=0.5, b2=0.9)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u, state.m  # 0.5 · 2 out, 0.1 · 2 kept
        (Array([1.], dtype=float32), Array([0.2], dtype=float32))

    Reference: Chen et al., Symbolic Discovery of Optimization Algorithms, 2023.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)

    def init(params: Params) -> LionMomentumState:
        return LionMomentumState(m=zeros_like(params, moment_dtype))

    def update(
        updates: Updates, state: LionMomentumState, params: Params | None = None
    ) -> tuple[Updates, LionMomentumState]:
        del params
        out = tree_map(
            lambda g, m: store(ema(m, g, b1), g.dtype),
            updates,
            state.m,
            names=("updates", "state.m"),
        )
        m = jax.tree.map(lambda g, m: store(ema(m, g, b2), m.dtype), updates, state.m)
        return out, LionMomentumState(m=m)

    return GradientTransformation(init, update)


# ---- second moments (denominators for `divide`) ----------------------------------------


class RunningMaxState(NamedTuple):
    """State of :func:`running_max`: the largest value seen per coordinate."""

    max: Updates


@cached_factory
def running_max() -> GradientTransformation:
    r"""The running element-wise maximum: $u_t = \max(u_{t-1}, g_t)$, $u_0 = 0$.

    After a bias-corrected second moment it is AMSGrad's $\max_{k \le t} \hat v_k$;
    before the bias correction it is torch's ``Adam(amsgrad=True)``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.running_max()
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.array([1.0, -2.0]), state)
        >>> u  # max(0, g): the negative entry stays at u_0 = 0
        Array([1., 0.], dtype=float32)
        >>> tx.update(jnp.array([0.5, 3.0]), state)[0]
        Array([1., 3.], dtype=float32)

    Reference: Reddi et al., On the Convergence of Adam and Beyond, 2018.
    """
    return _moment(
        RunningMaxState, lambda g, mx: store(jnp.maximum(mx.astype(g.dtype), g), mx.dtype)
    )


class InfinityMomentState(NamedTuple):
    """State of :func:`infinity_moment`: the decayed maximum ``u``."""

    nu: Updates


@cached_factory
def infinity_moment(decay: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    r"""Adamax's exponentially weighted infinity norm.

    $$ u_t = \max(|g_t| + \epsilon,\ \beta\, u_{t-1}), \qquad u_0 = 0 $$

    Divides Adamax's bias-corrected momentum via ``divide(..., sqrt=False)``.

    Args:
        decay: β in ``[0, 1)``.
        eps: ε ≥ 0 added to ``|g|``, keeps the output positive.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.infinity_moment(decay=0.5, eps=0.0)
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.array([-4.0, 1.0]), state)
        >>> u
        Array([4., 1.], dtype=float32)
        >>> tx.update(jnp.array([1.0, 1.0]), state)[0]  # max(|g|, 0.5 · u)
        Array([2., 1.], dtype=float32)

    Reference: Kingma & Ba, Adam, 2015, Section 7.1.
    """
    check_decay("decay", decay)
    check_nonnegative("eps", eps)

    def leaf(g: jax.Array, u: jax.Array) -> jax.Array:
        x = up(g)
        new = jnp.maximum(jnp.abs(x) + coef(eps, x), coef(decay, x) * u.astype(x.dtype))
        return store(new, u.dtype)

    return _moment(InfinityMomentState, leaf)


class BeliefMomentState(NamedTuple):
    """State of :func:`belief_moment`: the average ``m`` and the belief ``s``."""

    m: Updates
    s: Updates


@cached_factory
def belief_moment(
    b1: float = 0.9, b2: float = 0.999, eps_root: float = 1e-16, moment_dtype: Any = None
) -> GradientTransformation:
    r"""AdaBelief's second moment: the EMA of the squared surprise ``(g − m)²``.

    $$ m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
       s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}, \qquad u_t = s_t $$

    It keeps its own copy of ``m`` (the numerator keeps another, identical one), so
    that it composes with any numerator through :func:`divide`.

    Args:
        b1: β₁ in ``[0, 1)`` of the prediction ``m``.
        b2: β₂ in ``[0, 1)`` of ``s``.
        eps_root: ε ≥ 0 added to ``s`` at every step (accumulates, as in the paper).
        moment_dtype: dtype ``m`` is stored in (default: the parameter's); ``s`` is kept in
            at least float32.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.belief_moment(b1=0.5, b2=0.5, eps_root=0.0)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> state.m, u  # m = 0.5 · 2 = 1, s = 0.5 · (2 − 1)²
        (Array([1.], dtype=float32), Array([0.5], dtype=float32))

    Reference: Zhuang et al., AdaBelief Optimizer, 2020, Algorithm 2.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps_root", eps_root)

    def init(params: Params) -> BeliefMomentState:
        return BeliefMomentState(
            m=zeros_like(params, moment_dtype), s=second_moment_zeros(params, None)
        )

    def update(
        updates: Updates, state: BeliefMomentState, params: Params | None = None
    ) -> tuple[Updates, BeliefMomentState]:
        del params
        m = tree_map(
            lambda g, m: store(ema(m, g, b1), m.dtype),
            updates,
            state.m,
            names=("updates", "state.m"),
        )

        def leaf(g: jax.Array, m: jax.Array, s: jax.Array) -> jax.Array:
            surprise = jnp.square(up(g) - m.astype(up(g).dtype))
            new = ema(s, surprise, b2)
            return store(new + coef(eps_root, new), s.dtype)

        s = jax.tree.map(leaf, updates, m, state.s)
        out = jax.tree.map(lambda g, s: s.astype(g.dtype), updates, s)
        return out, BeliefMomentState(m=m, s=s)

    return GradientTransformation(init, update)


class YogiMomentState(NamedTuple):
    """State of :func:`yogi_moment`: the second moment ``v``."""

    v: Updates


@cached_factory
def yogi_moment(
    decay: float = 0.999, initial_accumulator_value: float = 1e-6
) -> GradientTransformation:
    r"""Yogi's additive second moment: ``v`` moves towards ``g²`` by at most ``(1 − β) g²``.

    $$ v_t = v_{t-1} - (1-\beta)\, \operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2, \qquad
       u_t = v_t $$

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
    check_decay("decay", decay)
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)

    def leaf(g: jax.Array, v: jax.Array) -> jax.Array:
        g2 = jnp.square(up(g))
        v_ = v.astype(g2.dtype)
        return store(v_ - coef(1 - decay, g2) * jnp.sign(v_ - g2) * g2, v.dtype)

    return _moment(YogiMomentState, leaf, fill=initial_accumulator_value)


class SumOfSquaresState(NamedTuple):
    """State of :func:`sum_of_squares`: the accumulated ``Σ g²``."""

    sum_of_squares: Updates


@cached_factory
def sum_of_squares(initial_accumulator_value: float = 0.1) -> GradientTransformation:
    r"""Adagrad's accumulator: $u_t = s_t = s_{t-1} + g_t^2$, $s_0$ = the initial value.

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
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)

    def leaf(g: jax.Array, s: jax.Array) -> jax.Array:
        return store(jnp.square(up(g)) + s.astype(up(g).dtype), s.dtype)

    return _moment(SumOfSquaresState, leaf, fill=initial_accumulator_value)


class DeltaRmsState(NamedTuple):
    """State of :func:`scale_by_delta_rms`: the running average of squared outputs."""

    e_x: Updates


@cached_factory
def scale_by_delta_rms(rho: float = 0.9, eps: float = 1e-6) -> GradientTransformation:
    r"""Adadelta's numerator: multiply by the RMS of the previous outputs.

    $$ u_t = \sqrt{x_{t-1} + \epsilon}\; g_t, \qquad x_t = \rho\, x_{t-1} + (1-\rho)\, u_t^2 $$

    After ``divide(chain(square(), scale_by_momentum(ρ)), eps_root=ε)`` it is Adadelta,
    whose step has the units of the parameters.

    Args:
        rho: ρ in ``[0, 1)``, decay of the average ``x`` of squared outputs.
        eps: ε ≥ 0 inside the root; the first step is ``√ε · g``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_delta_rms(rho=0.5, eps=1.0)
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u, state.e_x  # √(0 + 1) · 2, then x = 0.5 · 2²
        (Array([2.], dtype=float32), Array([2.], dtype=float32))
        >>> round(tx.update(jnp.array([2.0]), state)[0].item(), 4)  # √(2 + 1) · 2
        3.4641

    Reference: Zeiler, ADADELTA: An Adaptive Learning Rate Method, 2012.
    """
    check_decay("rho", rho)
    check_nonnegative("eps", eps)

    def init(params: Params) -> DeltaRmsState:
        return DeltaRmsState(second_moment_zeros(params, None))

    def update(
        updates: Updates, state: DeltaRmsState, params: Params | None = None
    ) -> tuple[Updates, DeltaRmsState]:
        del params

        def leaf(g: jax.Array, x: jax.Array) -> jax.Array:
            x_ = up(x)
            return store(jnp.sqrt(x_ + coef(eps, x_)) * up(g).astype(x_.dtype), g.dtype)

        out = tree_map(leaf, updates, state.e_x, names=("updates", "state.e_x"))
        e_x = jax.tree.map(
            lambda u, x: store(ema(x, jnp.square(up(u)), rho), x.dtype), out, state.e_x
        )
        return out, DeltaRmsState(e_x)

    return GradientTransformation(init, update)


class LayerwiseRmsState(NamedTuple):
    """State of :func:`scale_by_layerwise_rms`: one second moment per leaf, the count."""

    nu: Updates
    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count


@cached_factory
def scale_by_layerwise_rms(
    decay: float = 0.25, eps: float = 1e-6, eps_root: float = 0.0
) -> GradientTransformation:
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
        >>> state.nu  # one scalar per leaf: ‖g‖² = 25
        Array(25., dtype=float32)
        >>> [round(x, 4) for x in u.tolist()]  # g / ‖g‖
        [0.6, 0.8]

    Reference: Ginsburg et al., Stochastic Gradient Methods with Layer-wise Adaptive
    Moments, 2019.
    """
    check_decay("decay", decay)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params: Params) -> LayerwiseRmsState:
        return LayerwiseRmsState(
            nu=jax.tree.map(lambda p: jnp.zeros([], compute_dtype(jnp.result_type(p))), params),
            count=new_count(),
        )

    def update(
        updates: Updates, state: LayerwiseRmsState, params: Params | None = None
    ) -> tuple[Updates, LayerwiseRmsState]:
        del params
        t = safe_increment(state.count)

        def moment(g: jax.Array, nu: jax.Array) -> jax.Array:
            sq = jnp.linalg.norm(up(g)) ** 2
            return store(jnp.where(t == 1, sq, ema(nu, sq, decay)), nu.dtype)

        def leaf(g: jax.Array, nu: jax.Array) -> jax.Array:
            x = up(g)
            root = jnp.sqrt(nu.astype(x.dtype) + coef(eps_root, x))
            return store(x / (root + coef(eps, x)), g.dtype)

        nu = jax.tree.map(moment, updates, state.nu)
        return jax.tree.map(leaf, updates, nu), LayerwiseRmsState(nu=nu, count=t)

    return GradientTransformation(init, update)


# ---- Adafactor ------------------------------------------------------------------------


class FactoredState(NamedTuple):
    """State of :func:`scale_by_factored_rms`.

    Per leaf: row and column statistics for factored leaves, a full ``v`` otherwise;
    the unused buffers are one-element placeholders, so the type never changes.
    """

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    v_row: Updates
    v_col: Updates
    v: Updates


def _factored_dims(shape: tuple[int, ...], factored: bool, min_size: int) -> Any:
    """The (second largest, largest) axes of a leaf worth factoring, else ``None``."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_size:
        return None
    return int(order[-2]), int(order[-1])


def _unzip(treedef: Any, tuples: list[tuple], n: int) -> tuple:
    """``n`` trees from a list of per-leaf ``n``-tuples."""
    return tuple(treedef.unflatten([x[k] for x in tuples]) for k in range(n))


def _decay_rate_pow(step: jax.Array, exponent: Any = 0.8) -> jax.Array:
    """Adafactor's increasing decay ``1 − (t + 1)^(−exponent)`` at step ``t`` (from 0)."""
    t = safe_increment(step).astype(jnp.float32)  # saturates instead of wrapping
    return 1.0 - t ** -jnp.asarray(exponent, jnp.float32)


@cached_factory
def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
) -> GradientTransformation:
    r"""Adafactor's second moment: row and column averages instead of a full matrix.

    With $\beta_t = 1 - (t - t_0)^{-c}$ and $G = g^2 + \epsilon$, a leaf whose two largest
    axes are at least ``min_dim_size_to_factor`` keeps only

    $$ R_t = \beta_t R_{t-1} + (1-\beta_t)\,\mathrm{mean}_{cols} G, \quad
       C_t = \beta_t C_{t-1} + (1-\beta_t)\,\mathrm{mean}_{rows} G, \quad
       u_t = g_t \Big/ \sqrt{R_t C_t / \mathrm{mean}(R_t)} $$

    and any other leaf a full $v_t = \beta_t v_{t-1} + (1-\beta_t) G$, $u_t = g_t/\sqrt{v_t}$.

    Args:
        factored: factor leaves of rank ≥ 2 at all (False keeps a full ``v`` everywhere).
        decay_rate: the exponent ``c`` > 0 of the decay schedule.
        step_offset: ``t_0``, steps to subtract from the count.
        min_dim_size_to_factor: factor only if the second largest axis is at least this
            long (≥ 1).
        epsilon: ε ≥ 0 added to ``g²``.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_factored_rms(min_dim_size_to_factor=2)
        >>> state = tx.init({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)})
        >>> jax.tree.map(jnp.shape, (state.v_row, state.v_col, state.v))  # (1,): unused
        ({'b': (1,), 'w': (2,)}, {'b': (1,), 'w': (3,)}, {'b': (3,), 'w': (1,)})
        >>> grads = {"w": jnp.full((2, 3), 2.0), "b": jnp.array([1.0, -2.0, 3.0])}
        >>> tx.update(grads, state)[0]["b"]  # β_1 = 0, so the first step is g / |g|
        Array([ 1., -1.,  1.], dtype=float32)

    Reference: Shazeer & Stern, Adafactor, ICML 2018.
    """
    check_range("decay_rate", decay_rate, 0.0, low_inclusive=False)
    check_nonnegative("epsilon", epsilon)
    check_range("min_dim_size_to_factor", min_dim_size_to_factor, 1)

    def dims(x: jax.Array) -> Any:
        return _factored_dims(jnp.shape(x), factored, min_dim_size_to_factor)

    def init(params: Params) -> FactoredState:
        def buffers(p: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
            dtype, shape = compute_dtype(jnp.result_type(p)), jnp.shape(p)
            placeholder = jnp.zeros((1,), dtype)
            d = dims(p)
            if d is None:
                return placeholder, placeholder, jnp.zeros(shape, dtype)
            row = jnp.zeros(tuple(n for i, n in enumerate(shape) if i != d[1]), dtype)
            col = jnp.zeros(tuple(n for i, n in enumerate(shape) if i != d[0]), dtype)
            return row, col, placeholder

        leaves, treedef = jax.tree.flatten(params)
        triples = [buffers(p) for p in leaves]
        rows, cols, vs = _unzip(treedef, triples, 3)
        return FactoredState(count=new_count(), v_row=rows, v_col=cols, v=vs)

    def update(
        updates: Updates, state: FactoredState, params: Params | None = None
    ) -> tuple[Updates, FactoredState]:
        del params
        beta = _decay_rate_pow(state.count - step_offset, decay_rate)

        def leaf(g: jax.Array, row: jax.Array, col: jax.Array, v: jax.Array) -> tuple:
            x = up(g)
            b = beta.astype(x.dtype)
            g2 = jnp.square(x) + coef(epsilon, x)
            d = dims(g)
            if d is None:
                v = store(b * v + (1 - b) * g2, v.dtype)
                return store(x * v.astype(x.dtype) ** -0.5, g.dtype), row, col, v
            d1, d0 = d
            row = store(b * row + (1 - b) * jnp.mean(g2, axis=d0), row.dtype)
            col = store(b * col + (1 - b) * jnp.mean(g2, axis=d1), col.dtype)
            row_mean = jnp.mean(row, axis=d1 - 1 if d1 > d0 else d1, keepdims=True)
            row_factor = (row.astype(x.dtype) / row_mean) ** -0.5
            col_factor = col.astype(x.dtype) ** -0.5
            out = x * jnp.expand_dims(row_factor, d0) * jnp.expand_dims(col_factor, d1)
            return store(out, g.dtype), row, col, v

        leaves, treedef = jax.tree.flatten(updates)
        others = [
            treedef.flatten_up_to(s)  # type: ignore[attr-defined]
            for s in (state.v_row, state.v_col, state.v)
        ]
        results = [leaf(*xs) for xs in zip(leaves, *others, strict=True)]
        out, rows, cols, vs = _unzip(treedef, results, 4)
        return out, FactoredState(safe_increment(state.count), rows, cols, vs)

    return GradientTransformation(init, update)


@cached_factory
def scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    r"""Multiply each leaf by the RMS of its parameter block (Adafactor's relative step).

    $$ u_t = g_t \cdot \max\big(\sqrt{\mathrm{mean}(\theta^2)},\ s_{min}\big) $$

    Args:
        min_scale: the floor ``s_min`` ≥ 0 of the RMS (keeps zero-initialised
            parameters moving).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_param_block_rms()
        >>> g = jnp.array([1.0, 2.0])
        >>> tx.update(g, tx.init(g), jnp.array([3.0, -3.0]))[0]  # RMS(θ) = 3
        Array([3., 6.], dtype=float32)
        >>> tx.update(g, tx.init(g), jnp.zeros(2))[0]  # the floor s_min = 1e-3
        Array([0.001, 0.002], dtype=float32)
    """
    check_nonnegative("min_scale", min_scale)

    def leaf(g: jax.Array, p: jax.Array) -> jax.Array:
        x = up(g)
        rms = jnp.sqrt(jnp.mean(jnp.square(p.astype(x.dtype))))
        return store(x * jnp.where(rms <= coef(min_scale, x), coef(min_scale, x), rms), g.dtype)

    return stateless(leaf, needs_params="scale_by_param_block_rms")


# ---- layer-wise trust ratio -----------------------------------------------------------


@cached_factory
def scale_by_trust_ratio(
    min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
) -> GradientTransformation:
    r"""Rescale each leaf by the ratio of its parameter norm to its update norm (LARS/LAMB).

    $$ u_t = g_t \cdot \frac{c\, \max(\lVert\theta\rVert, n_{min})}
                            {\max(\lVert g_t\rVert, n_{min}) + \epsilon} $$

    and $u_t = g_t$ where either norm is zero (a fresh or a vanishing layer).

    Args:
        min_norm: floor ``n_min`` ≥ 0 of both norms.
        trust_coefficient: ``c`` ≥ 0.
        eps: ε ≥ 0 added to the update norm.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_trust_ratio()
        >>> g, theta = jnp.array([0.3, 0.4]), jnp.array([3.0, 4.0])
        >>> tx.update(g, tx.init(theta), theta)[0]  # ‖θ‖ / ‖g‖ = 5 / 0.5 = 10
        Array([3., 4.], dtype=float32)

    Reference: You et al., Large Batch Training of Convolutional Networks, 2017.
    """
    check_nonnegative("min_norm", min_norm)
    check_nonnegative("trust_coefficient", trust_coefficient)
    check_nonnegative("eps", eps)

    def leaf(g: jax.Array, p: jax.Array) -> jax.Array:
        x = up(g)
        floor = coef(min_norm, x)
        p_norm = jnp.maximum(jnp.linalg.norm(p.astype(x.dtype)), floor)
        g_norm = jnp.maximum(jnp.linalg.norm(x), floor)
        ratio = coef(trust_coefficient, x) * p_norm / (g_norm + coef(eps, x))
        zero = jnp.logical_or(p_norm == 0, g_norm == 0)
        return store(x * jnp.where(zero, jnp.ones_like(ratio), ratio), g.dtype)

    return stateless(leaf, needs_params="scale_by_trust_ratio")


# ---- rectification --------------------------------------------------------------------


class RectifyState(NamedTuple):
    """State of :func:`rectify`: the count and the two wrapped transforms' states."""

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    adaptive: OptState
    fallback: OptState


@cached_factory
def rectify(
    adaptive: GradientTransformation,
    fallback: GradientTransformation | None = None,
    b2: float = 0.999,
    threshold: float = 5.0,
) -> GradientTransformation:
    r"""RAdam's variance rectification, around any adaptive transform.

    With $\rho_\infty = 2/(1-\beta_2) - 1$ and
    $\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)$ (the length of the SMA
    approximating the EMA of ``g²``):

    $$ u_t = \begin{cases} r_t\, A(g_t) & \rho_t \ge \text{threshold} \\
                           F(g_t) & \text{otherwise} \end{cases}, \qquad
       r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} $$

    Both transforms are updated every step. ``A`` is the adaptive step (e.g.
    :func:`funcopt.scale_by_adam`), ``F`` its un-preconditioned fallback (e.g.
    bias-corrected momentum; default identity). RAdam is
    ``rectify(scale_by_adam(β₁, β₂), chain(scale_by_momentum(β₁), bias_correction(β₁)), β₂)``;
    the same wrapper rectifies AdaBelief, Yogi or AMSGrad (optax never made this
    composable, optax issue #24).

    Args:
        adaptive: the transform whose variance is rectified.
        fallback: the transform used while the variance estimate is unreliable.
        b2: the β₂ ∈ ``[0, 1)`` of the adaptive transform's second moment.
        threshold: smallest ``ρ_t`` for the adaptive step (≥ 4; 5 in optax, 4 in the paper).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.rectify(funcopt.scale_by_sign(), b2=0.999)  # fallback: identity
        >>> state = tx.init(jnp.zeros(1))
        >>> for t in range(1, 7):  # ρ_t < 5 for t ≤ 5: g passes through, then r_6 · sign(g)
        ...     u, state = tx.update(jnp.array([2.0]), state)
        ...     print(t, round(u.item(), 4))
        1 2.0
        2 2.0
        3 2.0
        4 2.0
        5 2.0
        6 0.0257

    Reference: Liu et al., On the Variance of the Adaptive Learning Rate and Beyond, 2020.
    """
    check_decay("b2", b2)
    # r_t has a factor sqrt(ρ_t − 4): a threshold below 4 would take roots of negatives.
    check_range("threshold", threshold, 4.0)
    fb = fallback if fallback is not None else identity()
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def init(params: Params) -> RectifyState:
        return RectifyState(
            count=new_count(), adaptive=adaptive.init(params), fallback=fb.init(params)
        )

    def update(
        updates: Updates, state: RectifyState, params: Params | None = None
    ) -> tuple[Updates, RectifyState]:
        a, a_state = adaptive.update(updates, state.adaptive, params)
        f, f_state = fb.update(updates, state.fallback, params)
        t = safe_increment(state.count)
        tf = t.astype(jnp.result_type(float))  # float64 under x64, as optax
        b2t = jnp.asarray(b2, tf.dtype) ** tf
        rho = rho_inf - 2 * tf * b2t / (1 - b2t)
        r = jnp.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))

        def leaf(a: jax.Array, f: jax.Array) -> jax.Array:
            x = up(a)
            return jnp.where(rho >= threshold, store(r.astype(x.dtype) * x, a.dtype), f)

        out = tree_map(leaf, a, f, names=("adaptive", "fallback"))
        return out, RectifyState(count=t, adaptive=a_state, fallback=f_state)

    return GradientTransformation(init, update)
