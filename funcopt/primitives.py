"""The chapter's building blocks, each a small pure gradient transformation.

Every primitive has the same shape: a state ``NamedTuple`` right above a typed factory
that validates its concrete arguments, a per-leaf equation in a small named function,
and ``init``/``update`` closures that lift it over the pytree. Arithmetic runs in at
least float32 (so ``β₂ = 0.999`` is not rounded to 1 for bfloat16 parameters) and each
result is stored back in its buffer's dtype.

Notation: ``g`` is the incoming update (the gradient at the head of a chain), ``t`` the
step count, counted from 1 at the first update, ``θ`` the parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Updates,
    cached_factory,
    check_decay,
    check_float_leaves,
    check_nonnegative,
    compute_dtype,
    identity,
    is_masked_node,
    new_count,
    safe_increment,
    tree_map,
    zeros_like,
)

__all__ = [
    "AddDecayedWeightsState",
    "BiasCorrectionState",
    "MomentumState",
    "RmsState",
    "ScaleByLearningRateState",
    "StddevState",
    "add_decayed_weights",
    "bias_correction",
    "scale",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_rms",
    "scale_by_stddev",
]


# ---- per-leaf equations ----------------------------------------------------------------


def up(x: jax.Array) -> jax.Array:
    """``x`` in the dtype optimizer arithmetic runs in (at least float32)."""
    return x.astype(compute_dtype(x.dtype))


def coef(c: Any, x: jax.Array) -> Any:
    """A coefficient ready to multiply ``x``: Python numbers stay weakly typed."""
    return c if isinstance(c, int | float) else jnp.asarray(c).astype(x.dtype)


def ema(avg: jax.Array, x: jax.Array, decay: Any) -> jax.Array:
    """``decay · avg + (1 − decay) · x``, computed in at least float32."""
    x = up(x)
    return coef(decay, x) * avg.astype(x.dtype) + coef(1 - decay, x) * x


def heavy_ball(avg: jax.Array, x: jax.Array, decay: Any) -> jax.Array:
    """``decay · avg + x`` (the undamped trace of optax.sgd and torch.optim.SGD)."""
    x = up(x)
    return coef(decay, x) * avg.astype(x.dtype) + x


def debias(x: jax.Array, decay: Any, count: jax.Array) -> jax.Array:
    """``x / (1 − decay^t)``: turns a zero-started exponential average into a weighted mean."""
    x = up(x)
    return x / (1 - jnp.asarray(decay).astype(x.dtype) ** count.astype(x.dtype))


def store(x: jax.Array, dtype: Any) -> jax.Array:
    """Round ``x`` to the dtype it is kept in; later steps use the stored value."""
    return x.astype(dtype)


def second_moment_zeros(params: Params, dtype: Any, fill: Any = 0.0) -> Updates:
    """Buffers for a running average of squares: ``dtype``, or at least float32.

    A second moment changes by a relative ``1 − β₂`` (0.001) per step, less than half
    a bfloat16 ulp (2⁻⁹), so stored in bfloat16 it could never decay; by default it is
    kept in float32 for low-precision parameters.
    """
    return zeros_like(params, dtype or compute_dtype, fill)


def require_params(name: str, params: Params | None) -> Params:
    """``params``, or a ``ValueError`` saying that transform ``name`` needs them."""
    if params is None:
        raise ValueError(f"{name} needs the current parameters: call update(grads, state, params)")
    return params


# ---- momentum ------------------------------------------------------------------------


class MomentumState(NamedTuple):
    """State of :func:`scale_by_momentum`: the running average ``m``."""

    m: Updates


@cached_factory
def scale_by_momentum(
    decay: float = 0.9,
    *,
    damped: bool = True,
    nesterov: bool = False,
    moment_dtype: Any = None,
) -> GradientTransformation:
    r"""Replace the gradient by a running average of past gradients.

    With ``damped=True`` (the chapter's GDM, Adam's first moment):

    $$ m_t = \beta\, m_{t-1} + (1 - \beta)\, g_t, \qquad u_t = m_t $$

    With ``damped=False`` (the heavy-ball trace of ``optax.sgd`` and
    ``torch.optim.SGD``): $m_t = \beta\, m_{t-1} + g_t$.
    With ``nesterov=True`` the output looks one step ahead:
    $u_t = \beta\, m_t + (1 - \beta)\, g_t$ (damped) or $u_t = \beta\, m_t + g_t$.
    $m_0 = 0$.

    Args:
        decay: β in ``[0, 1)``; 0 passes the gradient through.
        damped: weight the new gradient by ``1 − β`` (True) or by 1 (False).
        nesterov: use the Nesterov look-ahead output.
        moment_dtype: dtype ``m`` is stored in (default: the parameter's); the
            output is computed from the stored, rounded ``m``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_momentum(0.5)
        >>> u, s = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u
        Array([1.], dtype=float32)
    """
    check_decay("decay", decay)
    accumulate = ema if damped else heavy_ball

    def init(params: Params) -> MomentumState:
        return MomentumState(m=zeros_like(params, moment_dtype))

    def update(
        updates: Updates, state: MomentumState, params: Params | None = None
    ) -> tuple[Updates, MomentumState]:
        del params
        m = tree_map(
            lambda g, m: store(accumulate(m, g, decay), m.dtype),
            updates,
            state.m,
            names=("updates", "state.m"),
        )
        if nesterov:
            out = jax.tree.map(lambda g, m: store(accumulate(m, g, decay), g.dtype), updates, m)
        else:
            out = jax.tree.map(lambda g, m: m.astype(g.dtype), updates, m)
        return out, MomentumState(m=m)

    return GradientTransformation(init, update)


# ---- bias correction -----------------------------------------------------------------


class BiasCorrectionState(NamedTuple):
    """State of :func:`bias_correction`: the number of updates seen."""

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count


@cached_factory
def bias_correction(decay: float) -> GradientTransformation:
    r"""Divide a zero-started exponential average by the weight it has gathered.

    $$ \hat m_t = \frac{m_t}{1 - \beta^t}, \qquad t = 1, 2, \dots $$

    After ``t`` steps, ``m_t = (1 − β) Σ_{k=1..t} β^{t−k} g_k`` and the weights sum to
    ``1 − β^t``; dividing by it gives a proper weighted mean (``\hat m_1 = g_1``).
    The count saturates at the int32 maximum, where the factor is 1.

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
    check_decay("decay", decay)

    def init(params: Params) -> BiasCorrectionState:
        check_float_leaves(params)
        return BiasCorrectionState(count=new_count())

    def update(
        updates: Updates, state: BiasCorrectionState, params: Params | None = None
    ) -> tuple[Updates, BiasCorrectionState]:
        del params
        t = safe_increment(state.count)
        out = jax.tree.map(lambda m: store(debias(m, decay, t), m.dtype), updates)
        return out, BiasCorrectionState(count=t)

    return GradientTransformation(init, update)


# ---- RMS scaling ---------------------------------------------------------------------


class RmsState(NamedTuple):
    """State of :func:`scale_by_rms`: second moment ``v``, count, the numerator's state."""

    v: Updates
    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    numerator: OptState


def _inverse_root(v: jax.Array, eps: Any, eps_root: Any, eps_in_sqrt: bool) -> jax.Array:
    if eps_in_sqrt:
        return jax.lax.rsqrt(v + eps)
    return 1 / (jnp.sqrt(v + eps_root) + eps)


@cached_factory
def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    *,
    eps_in_sqrt: bool = True,
    eps_root: float = 0.0,
    bias_correction: bool = False,
    initial_scale: float = 0.0,
    numerator: GradientTransformation | None = None,
    moment_dtype: Any = None,
) -> GradientTransformation:
    r"""Divide by the root of a running average of squared gradients.

    $$ v_t = \beta\, v_{t-1} + (1 - \beta)\, g_t^2, \qquad
       u_t = \frac{n_t}{\sqrt{\hat v_t} + \epsilon} $$

    where ``\hat v_t = v_t / (1 − β^t)`` if ``bias_correction`` else ``v_t``, and
    ``n_t`` is the output of ``numerator`` applied to the same gradient ``g_t``
    (default: ``g_t`` itself, which is RMSProp). ``v`` is always measured on the raw
    incoming gradient, never on the numerator's output: this is what lets Adam be
    written as ``scale_by_rms(β₂, numerator=bias-corrected momentum)``.

    Args:
        decay: β in ``[0, 1)``.
        eps: ε ≥ 0; the chapter's RMSProp has ε = 0.
        eps_in_sqrt: put ε inside the root, ``n / sqrt(v̂ + ε)`` (optax's default), or
            outside, ``n / (sqrt(v̂) + ε)`` (torch.optim and Adam).
        eps_root: ε inside the root when ``eps_in_sqrt=False`` (Adam's ``eps_root``).
        bias_correction: divide ``v`` by ``1 − β^t``.
        initial_scale: ``v_0`` (0 in the chapter; 1 in some TensorFlow RMSProps).
        numerator: transform whose output is scaled (default: identity).
        moment_dtype: dtype ``v`` is stored in (default: the parameter's, at least
            float32: see :func:`second_moment_zeros`).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_rms(0.5, eps=0.0, bias_correction=True)
        >>> u, state = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
        >>> u, state.v  # v̂₁ = g², so u₁ = g / |g|
        (Array([ 1., -1.], dtype=float32), Array([2., 8.], dtype=float32))
    """
    check_decay("decay", decay)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    num = numerator if numerator is not None else identity()

    def init(params: Params) -> RmsState:
        return RmsState(
            v=second_moment_zeros(params, moment_dtype, fill=initial_scale),
            count=new_count(),
            numerator=num.init(params),
        )

    def update(
        updates: Updates, state: RmsState, params: Params | None = None
    ) -> tuple[Updates, RmsState]:
        v = tree_map(
            lambda g, v: store(ema(v, jnp.square(up(g)), decay), v.dtype),
            updates,
            state.v,
            names=("updates", "state.v"),
        )
        t = safe_increment(state.count)
        n, num_state = num.update(updates, state.numerator, params)

        def leaf(n: jax.Array, v: jax.Array) -> jax.Array:
            v_hat = debias(v, decay, t) if bias_correction else up(v)
            return store(up(n) * _inverse_root(v_hat, eps, eps_root, eps_in_sqrt), n.dtype)

        return jax.tree.map(leaf, n, v), RmsState(v=v, count=t, numerator=num_state)

    return GradientTransformation(init, update)


class StddevState(NamedTuple):
    """State of :func:`scale_by_stddev`: first moment ``m``, second moment ``v``, count."""

    m: Updates
    v: Updates
    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count


@cached_factory
def scale_by_stddev(
    decay: float = 0.9,
    eps: float = 1e-8,
    *,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    initial_scale: float = 0.0,
) -> GradientTransformation:
    r"""Divide by a running estimate of the gradient's standard deviation (centered RMSProp).

    $$ m_t = \beta m_{t-1} + (1-\beta) g_t,\quad v_t = \beta v_{t-1} + (1-\beta) g_t^2,\quad
       u_t = \frac{g_t}{\sqrt{\hat v_t - \hat m_t^2 + \epsilon}} $$

    (ε outside the root when ``eps_in_sqrt=False``). Arguments as :func:`scale_by_rms`.

    Args:
        decay: β in ``[0, 1)``, shared by ``m`` and ``v``.
        eps: ε ≥ 0.
        eps_in_sqrt: put ε inside the root (default) or outside, ``g / (sqrt(var) + ε)``.
        bias_correction: divide ``m`` and ``v`` by ``1 − β^t`` before taking the variance.
        initial_scale: ``v_0`` (``m_0`` is always 0).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_stddev(0.5, eps=0.0)
        >>> u, state = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
        >>> state.m, state.v  # var = v − m² = [1, 4]
        (Array([ 1., -2.], dtype=float32), Array([2., 8.], dtype=float32))
        >>> u
        Array([ 2., -2.], dtype=float32)
    """
    check_decay("decay", decay)
    check_nonnegative("eps", eps)

    def init(params: Params) -> StddevState:
        return StddevState(
            m=zeros_like(params),
            v=second_moment_zeros(params, None, initial_scale),
            count=new_count(),
        )

    def update(
        updates: Updates, state: StddevState, params: Params | None = None
    ) -> tuple[Updates, StddevState]:
        del params
        m = tree_map(
            lambda g, m: store(ema(m, g, decay), m.dtype),
            updates,
            state.m,
            names=("updates", "state.m"),
        )
        v = tree_map(
            lambda g, v: store(ema(v, jnp.square(up(g)), decay), v.dtype),
            updates,
            state.v,
            names=("updates", "state.v"),
        )
        t = safe_increment(state.count)

        def leaf(g: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
            if bias_correction:
                m, v = debias(m, decay, t), debias(v, decay, t)
            else:
                m, v = up(m), up(v)
            # A weighted variance is ≥ 0; v̂ − m̂² can round below 0 when g is constant.
            var = jnp.maximum(v - jnp.square(m), 0)
            return store(up(g) * _inverse_root(var, eps, 0.0, eps_in_sqrt), g.dtype)

        return jax.tree.map(leaf, updates, m, v), StddevState(m=m, v=v, count=t)

    return GradientTransformation(init, update)


# ---- step sizes and weight decay -----------------------------------------------------


@cached_factory
def scale(step_size: Any) -> GradientTransformation:
    r"""Multiply by a constant: $u_t = s\, g_t$.

    Args:
        step_size: ``s``, a number or scalar array (any sign: ``scale(-lr)`` is a descent
            step).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale(2.0)
        >>> tx.update(jnp.array([1.0, -3.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 2., -6.], dtype=float32)
    """

    def init(params: Params) -> EmptyState:
        check_float_leaves(params)
        return EmptyState()

    def update(
        updates: Updates, state: EmptyState, params: Params | None = None
    ) -> tuple[Updates, EmptyState]:
        del params
        return jax.tree.map(
            lambda g: store(coef(step_size, up(g)) * up(g), g.dtype), updates
        ), state

    return GradientTransformation(init, update)


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate`: the step count the schedule is read at."""

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count


def learning_rate_at(learning_rate: ScalarOrSchedule, count: jax.Array) -> Any:
    """The value of a learning rate (a number or a schedule) at step ``count``."""
    return learning_rate(count) if callable(learning_rate) else learning_rate


@cached_factory
def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    r"""Scale by the learning rate and turn a gradient into a descent step.

    $$ u_t = -\eta_t\, g_t $$

    where ``η_t = learning_rate(count)`` for a schedule (count starts at 0), else the
    constant. ``flip_sign=False`` gives ``+η g``. Only a schedule keeps state (the
    count, :class:`ScaleByLearningRateState`); a constant is :func:`scale` by ``∓η``
    with an empty state, as in optax: one state leaf and one kernel fewer per step.

    Args:
        learning_rate: η ≥ 0, a number or a function of the step count.
        flip_sign: negate, so the result is added to the parameters.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_learning_rate(funcopt.linear_schedule(1.0, 0.0, 4))
        >>> state = tx.init(jnp.zeros(1))
        >>> for _ in range(3):  # η = 1, 0.75, 0.5 at counts 0, 1, 2
        ...     u, state = tx.update(jnp.array([2.0]), state)
        ...     print(u)
        [-2.]
        [-1.5]
        [-1.]
    """
    check_nonnegative("learning_rate", learning_rate)
    sign = -1 if flip_sign else 1
    if not callable(learning_rate):
        return scale(sign * learning_rate)

    def init(params: Params) -> ScaleByLearningRateState:
        check_float_leaves(params)
        return ScaleByLearningRateState(count=new_count())

    def update(
        updates: Updates, state: ScaleByLearningRateState, params: Params | None = None
    ) -> tuple[Updates, ScaleByLearningRateState]:
        del params
        eta = learning_rate_at(learning_rate, state.count)
        out = jax.tree.map(lambda g: store(coef(sign * eta, up(g)) * up(g), g.dtype), updates)
        return out, ScaleByLearningRateState(count=safe_increment(state.count))

    return GradientTransformation(init, update)


class AddDecayedWeightsState(NamedTuple):
    """:func:`add_decayed_weights` keeps no state."""


Mask = Any
"""A pytree of bools with the parameters' structure, or a function of params to one."""


def resolve_mask(mask: Mask, params: Params) -> Any:
    """The mask as a pytree of bools: ``mask(params)`` if it is a function.

    Inside ``partition``/``masked`` the params hold :class:`~funcopt.MaskedNode`
    placeholders where other transforms own the leaves; a mask given for the full tree is
    cut to match (a mask that does not fit is returned as is, for the caller's structure
    check to report with its path).
    """
    if callable(mask):
        return mask(params)
    try:
        return jax.tree.map(lambda keep, x: x if is_masked_node(x) else keep, mask, params)
    except ValueError:
        return mask


@cached_factory
def add_decayed_weights(
    weight_decay: float = 0.0, mask: Mask | Callable[[Params], Any] | None = None
) -> GradientTransformation:
    r"""Add decoupled weight decay to the update: $u_t = g_t + \lambda\, \theta_t$.

    Placed after Adam's preconditioner and before the learning rate, it gives AdamW's
    $\theta \leftarrow \theta - \eta (\hat m / (\sqrt{\hat v} + \epsilon) + \lambda \theta)$.

    Args:
        weight_decay: λ ≥ 0.
        mask: which leaves decay (True) and which do not (False): a pytree of bools
            with the parameters' structure, or a function of the params returning one
            (e.g. to skip biases and norm scales).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([10.0]), "b": jnp.array([10.0])}
        >>> grads = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> tx = funcopt.add_decayed_weights(0.1, mask={"w": True, "b": False})
        >>> u, _ = tx.update(grads, tx.init(params), params)
        >>> u["w"], u["b"]  # 1 + 0.1 · 10 where masked in, 1 elsewhere
        (Array([2.], dtype=float32), Array([1.], dtype=float32))
    """
    check_nonnegative("weight_decay", weight_decay)

    def init(params: Params) -> AddDecayedWeightsState:
        check_float_leaves(params)
        return AddDecayedWeightsState()

    def update(
        updates: Updates, state: AddDecayedWeightsState, params: Params | None = None
    ) -> tuple[Updates, AddDecayedWeightsState]:
        params = require_params("add_decayed_weights", params)

        def leaf(g: jax.Array, p: jax.Array) -> jax.Array:
            x = up(g)
            return store(x + coef(weight_decay, x) * p.astype(x.dtype), g.dtype)

        decayed = tree_map(leaf, updates, params, names=("updates", "params"))
        if mask is None:
            return decayed, state
        keep = resolve_mask(mask, params)
        out = tree_map(
            lambda d, g, k: d if k else g,
            decayed,
            updates,
            keep,
            names=("updates", "updates", "mask"),
        )
        return out, state

    return GradientTransformation(init, update)
