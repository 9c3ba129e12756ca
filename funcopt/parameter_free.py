r"""Learning-rate-free step sizes: the step is estimated from the run itself.

- Distance over gradients (DoG, Ivgi et al., 2023): the step is the largest distance
  moved from the start ``θ₀`` over the root of the sum of squared gradient norms, per
  layer (:class:`scale_by_distance_over_gradients`, LDoG) or for the whole tree
  (:class:`scale_by_dog`, :func:`dog`), from a first distance ``r_ε > 0``.
- DoWG (Khaled et al., 2023; :class:`scale_by_dowg`, :func:`dowg`): the same with each
  squared gradient norm weighted by the squared distance at its step.
- COCOB (Orabona and Tommasi, 2017; :class:`scale_by_cocob`, :func:`cocob`): per
  coordinate, a bet of a fraction of the reward won so far on the summed gradients; the
  step is the move to the new bet, not a multiple of the gradient.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import (
    GradientTransformation,
    HyperParameterError,
    OptState,
    Params,
    ScalarOrSchedule,
    Updates,
    expect_state,
)
from funcopt.clipping import global_norm
from funcopt.combine import chain, identity
from funcopt.lifting import Leafwise, abs2, coef, real_dtype, require_params, second_moment_like, up
from funcopt.scaling import add_decayed_weights, scale_by_learning_rate
from funcopt.trees import MASK, Mask, check_float_leaves, tree_map
from funcopt.validation import (
    DTYPE,
    NONNEGATIVE,
    POSITIVE,
    RATE,
    REAL,
    Kind,
    hyperparameters,
    interval,
    one_of,
)
from funcopt.values import hyper, static

__all__ = [
    "COCOBState",
    "DistanceOverGradientsState",
    "DoGState",
    "DoWGState",
    "cocob",
    "dog",
    "dowg",
    "scale_by_cocob",
    "scale_by_distance_over_gradients",
    "scale_by_dog",
    "scale_by_dowg",
]


def _first_distance(reps_rel: Any, norm: jax.Array) -> jax.Array:
    """The heuristic first distance ``r_ε (1 + ‖θ₀‖)`` (so that the first step is not 0)."""
    return reps_rel * (1 + norm)


def _dog_step_size(max_dist: jax.Array, grad_sum_of_squares: jax.Array, eps: Any) -> jax.Array:
    """DoG's step size ``d_t / √(G_t + ε)``."""
    return max_dist / jnp.sqrt(grad_sum_of_squares + eps)


class DistanceOverGradientsState(NamedTuple):
    """State of :class:`scale_by_distance_over_gradients`, per leaf: the largest distance
    from the start, the sum of squared gradient norms, and the start itself."""

    max_dist: Updates
    grad_sum_of_squares: Updates
    init_params: Updates


class scale_by_distance_over_gradients(Leafwise):
    r"""Layer-wise DoG (LDoG): scale each leaf by its distance travelled over its gradients.

    $$ d_t = \max(d_{t-1}, \lVert\theta_t - \theta_0\rVert),\quad
       G_t = G_{t-1} + \lVert g_t\rVert^2,\quad
       u_t = s\, \frac{d_t}{\sqrt{G_t + \epsilon}}\, g_t,\qquad
       d_0 = r_\epsilon (1 + \lVert\theta_0\rVert),\ G_0 = 0 $$

    One copy of the start θ₀ (in ``param_dtype``) and two scalars per leaf. No sign flip:
    use ``global_scale=-1.0`` for a descent step, as in optax. Equal to
    ``optax.scale_by_distance_over_gradients``, except that ``G`` is a 0-d scalar per
    leaf (optax's shape ``(1,)`` turned a scalar parameter's update into shape ``(1,)``).
    :class:`scale_by_dog` is the same step with one distance for the whole tree.

    Args:
        reps_rel: ``r_ε > 0``, the relative size of the first distance (1e-6; 1e-4 with
            batch norm, as the authors recommend).
        eps: ε ≥ 0 inside the root.
        param_dtype: dtype of the stored start θ₀ (complex parameters keep their own).
        global_scale: ``s``, a factor on every step (−1 for descent).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_distance_over_gradients(reps_rel=0.5, eps=0.0)
        >>> p = jnp.array([3.0, 4.0])  # ‖θ₀‖ = 5: d₀ = 0.5 · 6 = 3
        >>> u, _ = tx.update(jnp.array([0.0, 2.0]), tx.init(p), p)
        >>> u  # 3 / √4 · g
        Array([0., 3.], dtype=float32)

    Reference: Ivgi, Hinder and Carmon, DoG is SGD's Best Friend: A Parameter-Free
    Dynamic Step Size Schedule, 2023.
    """

    reps_rel: float = hyper(POSITIVE, 1e-6)
    eps: float = hyper(NONNEGATIVE, 1e-8)
    param_dtype: Any = static(jnp.dtype(jnp.float32), DTYPE)
    global_scale: float = hyper(REAL, 1.0)

    State = DistanceOverGradientsState
    needs_params = True
    elementwise = False

    def init_leaf(self, p: jax.Array) -> DistanceOverGradientsState:
        real = real_dtype(jnp.result_type(p))
        norm = jnp.sqrt(jnp.sum(abs2(up(p))))
        return DistanceOverGradientsState(
            _first_distance(self.reps_rel, norm).astype(real),
            jnp.zeros([], real),
            jnp.array(p, dtype=jnp.result_type(p) if jnp.iscomplexobj(p) else self.param_dtype),
        )

    def leaf(
        self, g: jax.Array, s: DistanceOverGradientsState, *, p: jax.Array
    ) -> tuple[jax.Array, DistanceOverGradientsState]:
        distance = jnp.sqrt(jnp.sum(abs2(p - s.init_params)))
        d = jnp.maximum(s.max_dist, distance)
        total = s.grad_sum_of_squares + jnp.sum(abs2(g))
        u = self.global_scale * _dog_step_size(d, total, self.eps) * g
        return u, DistanceOverGradientsState(d, total, s.init_params)


# ---- one step size for the whole tree ----------------------------------------------------


def _squared_norm(tree: Any) -> jax.Array:
    """``Σ |x|²`` over every leaf (:func:`~funcopt.global_norm` squared, without a root)."""
    sums = [jnp.sum(abs2(up(x))) for x in jax.tree.leaves(tree)]
    dtype = max((s.dtype for s in sums), key=lambda d: d.itemsize, default=jnp.float32)
    return sum((s.astype(dtype) for s in sums), jnp.zeros([], dtype))


def _scalar_dtype(params: Params) -> Any:
    """The params' lowest precision, at least float32 (optax's may be bfloat16)."""
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    return real_dtype(min(dtypes, key=lambda d: d.itemsize) if dtypes else jnp.float32)


class _GlobalStepSize(GradientTransformation):
    """``u_t = η_t g_t``, one ``η_t`` from the move from ``θ₀``: subclasses set ``State``
    (θ₀ first, then scalars), ``start`` and ``step``."""

    State: ClassVar[Any]

    def start(self, params: Params, dtype: Any) -> tuple[jax.Array, ...]:
        raise NotImplementedError  # the scalars at θ₀

    def step(self, s: Any, moved: Updates, g: Updates, t: Any) -> tuple[jax.Array, Any]:
        raise NotImplementedError  # (η_t, the new state) from θ_t − θ₀ and g_t

    def init_state(self, params: Params) -> OptState:
        check_float_leaves(params)
        start = jax.tree.map(lambda p: jnp.array(p, copy=True), params)  # never the params
        return self.State(start, *self.start(params, _scalar_dtype(params)))

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        params = require_params(self, params)
        expect_state(self, state, self.State)
        check_float_leaves(updates, "updates")
        names = ("params", "state.init_params")
        moved = tree_map(lambda p, p0: up(p) - up(p0), params, state.init_params, names=names)
        eta, state = self.step(state, moved, updates, count)

        def scaled(g: jax.Array, p: jax.Array) -> jax.Array:
            return up(g) * coef(eta, up(g))

        return tree_map(scaled, updates, params, names=("updates", "params")), state


def _check_init_step(name: str, value: Any) -> tuple[str, Any]:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise HyperParameterError(f"{name} must be a pair (tag, value), got {name}={value!r}")
    tag, number = value
    return one_of(*_INIT_STEPS)(f"{name}[0]", tag), POSITIVE(f"{name}[1]", number)


_INIT_STEPS = ("distance", "learning_rate", "heuristic")
OPTIONAL_POSITIVE = interval(0.0, low_inclusive=False, optional=True)
_INIT_STEP = Kind(_check_init_step, "a pair (tag, value > 0), tag one of " + str(_INIT_STEPS))


class DoGState(NamedTuple):
    """State of :class:`scale_by_dog`: θ₀, ``d_t``, ``G_t`` (optax's, less its first-step flag)."""

    init_params: Params
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


class scale_by_dog(_GlobalStepSize):
    r"""Distance over gradients (DoG): one step size for the whole tree.

    $$ d_t = \max(d_{t-1}, \lVert\theta_t - \theta_0\rVert),\quad
       G_t = G_{t-1} + \lVert g_t\rVert^2,\quad
       u_t = \frac{d_t}{\sqrt{G_t + \epsilon}}\, g_t $$

    with norms over all leaves together, ``G₀ = 0`` and ``d₀`` set by ``init_step``:
    ``("distance", r)`` gives ``d₀ = r``; ``("heuristic", α)`` gives
    ``d₀ = α (1 + ‖θ₀‖)`` (so ``init`` needs the real parameters); ``("learning_rate", η)``
    gives ``d₀ = 0`` and makes the first step ``η g₁``. No sign flip (:func:`dog` adds the
    learning rate). Equal to optax.contrib's (unexported) ``scale_by_dog``.

    Args:
        init_step: the pair ``(tag, value)`` above, ``value > 0``.
        eps: ε ≥ 0 inside the root.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_dog(("distance", 10.0), eps=0.0)
        >>> p = {"a": jnp.array([1.0]), "b": jnp.array([2.0])}
        >>> u, _ = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(p), p)
        >>> u["a"], u["b"]  # 10 / ‖(3, 4)‖ · g
        (Array([6.], dtype=float32), Array([8.], dtype=float32))

    Reference: Ivgi, Hinder and Carmon, DoG is SGD's Best Friend: A Parameter-Free
    Dynamic Step Size Schedule, 2023.
    """

    init_step_type: str = static(kind=one_of(*_INIT_STEPS))
    init_step_value: float = hyper(POSITIVE)
    eps: float = hyper(NONNEGATIVE, 1e-8)

    State = DoGState
    reads_count = True

    def __init__(self, init_step: tuple[str, float | jax.Array], eps: float = 1e-8) -> None:
        tag, value = _INIT_STEP("init_step", init_step)
        object.__setattr__(self, "init_step_type", tag)
        object.__setattr__(self, "init_step_value", value)
        object.__setattr__(self, "eps", eps)
        self.__post_init__()

    def __repr__(self) -> str:
        eps = "" if repr(self.eps) == "1e-08" else f", eps={self.eps!r}"
        return f"scale_by_dog(init_step={(self.init_step_type, self.init_step_value)!r}{eps})"

    def start(self, params: Params, dtype: Any) -> tuple[jax.Array, ...]:
        tag, value = self.init_step_type, self.init_step_value
        d0 = _first_distance(value, global_norm(params)) if tag == "heuristic" else value
        d0 = 0.0 if tag == "learning_rate" else d0
        return jnp.asarray(d0).astype(dtype), jnp.zeros([], dtype)

    def step(self, s: DoGState, moved: Updates, g: Updates, t: Any) -> tuple[jax.Array, DoGState]:
        dtype = s.max_dist.dtype
        d = jnp.maximum(s.max_dist, global_norm(moved).astype(dtype))
        total = s.sum_sq_norm_grads + _squared_norm(g).astype(dtype)
        eta = _dog_step_size(d, total, coef(self.eps, total))
        if self.init_step_type == "learning_rate":
            eta = jnp.where(t == 1, coef(self.init_step_value, eta), eta)
        return eta, DoGState(s.init_params, d, total)


class DoWGState(NamedTuple):
    """State of :class:`scale_by_dowg`: θ₀, ``v_t`` and ``r̄_t²`` (optax's fields)."""

    init_params: Params
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


class scale_by_dowg(_GlobalStepSize):
    r"""Distance over weighted gradients (DoWG): one step size for the whole tree.

    $$ \bar r_t^2 = \max(\bar r_{t-1}^2, \lVert\theta_t - \theta_0\rVert^2),\quad
       v_t = v_{t-1} + \bar r_t^2 \lVert g_t\rVert^2,\quad
       u_t = \frac{\bar r_t^2}{\sqrt{v_t} + \epsilon}\, g_t $$

    with norms over all leaves together, ``v₀ = 0`` and ``r̄₀²`` given (default: ε). No
    sign flip (:func:`dowg` adds the learning rate). Equal to optax.contrib's (unexported)
    ``scale_by_dowg``.

    Args:
        init_estim_sq_dist: ``r̄₀² > 0``, a first guess of the squared distance to the
            solution (``None``: ε).
        eps: ε > 0 in the denominator (and the default ``r̄₀²``).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_dowg(init_estim_sq_dist=4.0)
        >>> p = jnp.zeros(2)
        >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(p), p)
        >>> [round(x, 4) for x in u.tolist()]  # 4 / (√(4 · 25) + ε) · g
        [1.2, 1.6]

    Reference: Khaled, Mishchenko and Jin, DoWG Unleashed: An Efficient Universal
    Parameter-Free Gradient Descent Method, 2023.
    """

    init_estim_sq_dist: float | None = hyper(OPTIONAL_POSITIVE, None)
    eps: float = hyper(POSITIVE, 1e-4)

    State = DoWGState

    def start(self, params: Params, dtype: Any) -> tuple[jax.Array, ...]:
        r2 = self.eps if self.init_estim_sq_dist is None else self.init_estim_sq_dist
        return jnp.zeros([], dtype), jnp.asarray(r2).astype(dtype)

    def step(self, s: DoWGState, moved: Updates, g: Updates, t: Any) -> tuple[jax.Array, DoWGState]:
        dtype = s.estim_sq_dist.dtype
        r2 = jnp.maximum(s.estim_sq_dist, _squared_norm(moved).astype(dtype))
        v = r2 * _squared_norm(g).astype(dtype) + s.weighted_sq_norm_grads
        eta = r2 / (jnp.sqrt(v) + coef(self.eps, v))
        return eta, DoWGState(s.init_params, v, r2)


_DOG = dict(learning_rate=RATE, weight_decay=interval(0.0, schedule=True, optional=True), mask=MASK)


def _descend(step: GradientTransformation, learning_rate: Any, weight_decay: Any, mask: Any) -> Any:
    """``chain(+ λ θ, step, −η ·)``: the decay is an identity where ``weight_decay`` is None."""
    decay = identity() if weight_decay is None else add_decayed_weights(weight_decay, mask)
    return chain(decay, step, scale_by_learning_rate(learning_rate))


@hyperparameters(init_step=_INIT_STEP, eps=NONNEGATIVE, **_DOG)
def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: tuple[str, float] = ("heuristic", 1e-6),
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule | None = None,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""DoG: descent with :class:`scale_by_dog`'s step size, times a learning rate.

    $$ \theta_{t+1} = \theta_t - \eta\, \frac{d_t}{\sqrt{G_t + \epsilon}}
       \,(g_t + \lambda\,\theta_t) $$

    ``chain(add_decayed_weights(λ) or identity(), scale_by_dog(init_step, ε),
    scale_by_learning_rate(η))``; equal to ``optax.contrib.dog`` (the authors recommend
    averaging the iterates). Arguments: as in :class:`scale_by_dog`, others: the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.dog(init_step=("distance", 0.5))
        >>> p = jnp.array([1.0, 2.0])
        >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(p), p)
        >>> u  # −0.5 / ‖g‖ · g
        Array([-0.3, -0.4], dtype=float32)

    Reference: Ivgi, Hinder and Carmon, DoG is SGD's Best Friend: A Parameter-Free
    Dynamic Step Size Schedule, 2023.
    """
    return _descend(scale_by_dog(init_step, eps), learning_rate, weight_decay, mask)


@hyperparameters(init_estim_sq_dist=OPTIONAL_POSITIVE, eps=POSITIVE, **_DOG)
def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: float | None = None,
    eps: float = 1e-4,
    weight_decay: ScalarOrSchedule | None = None,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""DoWG: descent with :class:`scale_by_dowg`'s step size, times a learning rate.

    $$ \theta_{t+1} = \theta_t - \eta\, \frac{\bar r_t^2}{\sqrt{v_t} + \epsilon}
       \,(g_t + \lambda\,\theta_t) $$

    ``chain(add_decayed_weights(λ) or identity(), scale_by_dowg(r̄₀², ε),
    scale_by_learning_rate(η))``; equal to ``optax.contrib.dowg``. Arguments:
    ``init_estim_sq_dist`` and ``eps`` as in :class:`scale_by_dowg`, others: the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.dowg(init_estim_sq_dist=4.0)
        >>> p = jnp.zeros(2)
        >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(p), p)
        >>> [round(x, 4) for x in u.tolist()]  # −4 / (√(4 · 25) + 10⁻⁴) · g
        [-1.2, -1.6]

    Reference: Khaled, Mishchenko and Jin, DoWG Unleashed: An Efficient Universal
    Parameter-Free Gradient Descent Method, 2023.
    """
    return _descend(scale_by_dowg(init_estim_sq_dist, eps), learning_rate, weight_decay, mask)


# ---- coin betting ------------------------------------------------------------------------


class COCOBState(NamedTuple):
    """State of :class:`scale_by_cocob`, per coordinate: θ₁, C, L, G and R (optax's names)."""

    init_particles: Updates
    cumulative_gradients: Updates
    scale: Updates
    subgradients: Updates
    reward: Updates


def _inner(g: jax.Array, d: jax.Array) -> jax.Array:
    """``g · d``; for complex numbers (points of the plane) ``Re(conj(g) d)``."""
    return jnp.real(jnp.conj(g) * d) if jnp.iscomplexobj(g) else g * d


class scale_by_cocob(Leafwise):
    r"""COCOB-Backprop: coin betting on each coordinate (Orabona and Tommasi, Algorithm 2).

    $$ L_t = \max(L_{t-1}, |g_t|),\quad G_t = G_{t-1} + |g_t|,\quad
       R_t = \max(R_{t-1} - g_t (\theta_t - \theta_1),\ 0),\quad C_t = C_{t-1} - g_t $$
    $$ \theta_{t+1} = \theta_1 + \frac{C_t\,(L_t + R_t)}{L_t \max(G_t + L_t,\ \alpha L_t)},
       \qquad u_t = \theta_{t+1} - \theta_t $$

    from ``L₀ = ε``, ``G₀ = R₀ = C₀ = 0``: the output is the step itself. For complex
    parameters ``|g|`` is the modulus and ``g (θ − θ₁)`` is ``Re(conj(g) (θ − θ₁))`` (a bet
    in the plane); statistics are kept in at least float32. Equal to
    ``optax.contrib.scale_by_cocob`` on real parameters (optax's reward turns complex).

    Args:
        alpha: ``α ≥ 0``, which caps the fraction bet early in the run (the paper: 100).
        eps: ``ε > 0``, the first scale ``L₀`` (so that all-zero gradients give no 0 / 0).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_cocob(alpha=2.0)
        >>> p = jnp.array([1.0])
        >>> u, _ = tx.update(jnp.array([4.0]), tx.init(p), p)
        >>> u  # C = −4, L = G = 4: −4 · 4 / (4 · max(8, 8))
        Array([-0.5], dtype=float32)

    Reference: Orabona and Tommasi, Training Deep Networks without Learning Rates Through
    Coin Betting, 2017.
    """

    alpha: float = hyper(NONNEGATIVE, 100.0)
    eps: float = hyper(POSITIVE, 1e-8)

    State = COCOBState
    needs_params = True

    def init_leaf(self, p: jax.Array) -> COCOBState:
        sum_g, real = jax.lax.full_like(p, 0, dtype=up(p).dtype), second_moment_like
        return COCOBState(jnp.array(p, copy=True), sum_g, real(p, fill=self.eps), real(p), real(p))

    def leaf(self, g: jax.Array, s: COCOBState, *, p: jax.Array) -> tuple[jax.Array, COCOBState]:
        size = jnp.abs(g)
        scale = jnp.maximum(s.scale, size)
        subgradients = s.subgradients + size
        reward = jnp.maximum(s.reward - _inner(g, p - s.init_particles), 0)
        cumulative = s.cumulative_gradients - g
        bet = cumulative / (scale * jnp.maximum(subgradients + scale, self.alpha * scale))
        new = s.init_particles + bet * (scale + reward)
        return new - p, COCOBState(s.init_particles, cumulative, scale, subgradients, reward)


@hyperparameters(learning_rate=RATE, alpha=NONNEGATIVE, eps=POSITIVE, weight_decay=RATE, mask=MASK)
def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: float = 100.0,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
) -> GradientTransformation:
    r"""COCOB: coin betting on the (scaled, decayed) gradients.

    $$ \theta_{t+1} = \theta_1 + \frac{C_t\,(L_t + R_t)}{L_t \max(G_t + L_t,\ \alpha L_t)}
       \quad\text{for the gradients}\quad \eta\,(g_t + \lambda\,\theta_t) $$

    ``chain(add_decayed_weights(λ), scale_by_learning_rate(η, flip_sign=False),
    scale_by_cocob(α, ε))``: η scales the gradients bet on (a constant η changes the step
    only through ε); equal to ``optax.contrib.cocob``. Arguments: ``alpha`` and ``eps`` as
    in :class:`scale_by_cocob`; the others, see the glossary.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.cocob(alpha=2.0)
        >>> p = jnp.array([1.0])
        >>> u, _ = tx.update(jnp.array([4.0]), tx.init(p), p)
        >>> u
        Array([-0.5], dtype=float32)

    Reference: Orabona and Tommasi, Training Deep Networks without Learning Rates Through
    Coin Betting, 2017.
    """
    return chain(
        add_decayed_weights(weight_decay, mask),  # + λ θ
        scale_by_learning_rate(learning_rate, flip_sign=False),  # η ·
        scale_by_cocob(alpha, eps),  # the bet, as a step
    )
