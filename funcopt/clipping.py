"""Clipping, cleaning and constraints: transforms that bound or perturb the updates.

Each has the shape of :mod:`funcopt.primitives`: a state ``NamedTuple`` right above a
cached factory that validates its concrete arguments, a per-leaf equation, and
``init``/``update`` closures. Names, arguments and numerics follow optax. Arithmetic
runs in at least float32 and each result keeps its leaf's dtype; ``None`` leaves are
left alone. Clipping normally goes first in a chain::

    tx = funcopt.chain(funcopt.clip_by_global_norm(1.0), funcopt.adam(1e-3))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import (
    GradientTransformation,
    Params,
    Updates,
    cached_factory,
    check_nonnegative,
    check_range,
    new_count,
    safe_increment,
    tree_map,
)
from funcopt.primitives import coef, require_params, store, up

__all__ = [
    "AdaptiveGradClipState",
    "AddNoiseState",
    "ClipByBlockRmsState",
    "ClipByGlobalNormState",
    "ClipState",
    "NonNegativeParamsState",
    "ZeroNansState",
    "adaptive_grad_clip",
    "add_noise",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "global_norm",
    "keep_params_nonnegative",
    "zero_nans",
]

Axis = int | tuple[int, ...] | None


# ---- per-leaf equations ----------------------------------------------------------------


def _abs_sq(x: jax.Array) -> jax.Array:
    """``|x|²`` element-wise (real for complex ``x``), in at least float32."""
    x = up(jnp.asarray(x))
    return jnp.real(x * jnp.conj(x))


def _safe_sqrt(s: jax.Array) -> jax.Array:
    """``√s`` whose derivative at ``s = 0`` is 0 rather than ∞ (so 0 · ∞ is no NaN)."""
    positive = s > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1)), 0)


def global_norm(updates: Any) -> jax.Array:
    r"""The Euclidean norm of all the leaves together: $\|g\| = \sqrt{\sum_i |g_i|^2}$.

    Computed in at least float32 (the widest leaf's precision), 0 for a tree with no
    leaves, and differentiable everywhere (its gradient at the zero tree is 0).

    Args:
        updates: a pytree of arrays (``None`` leaves are skipped; a complex leaf
            contributes ``|g|²``).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> funcopt.global_norm({"a": jnp.array([3.0]), "b": jnp.array(4.0), "c": None})
        Array(5., dtype=float32)
    """
    sums = [jnp.sum(_abs_sq(x)) for x in jax.tree.leaves(updates)]
    if not sums:
        return jnp.zeros([], jnp.float32)
    dtype = max((s.dtype for s in sums), key=lambda d: d.itemsize)
    return _safe_sqrt(sum((s.astype(dtype) for s in sums), jnp.zeros([], dtype)))


# ---- element-wise clipping -------------------------------------------------------------


class ClipState(NamedTuple):
    """:func:`clip` keeps no state."""


@cached_factory
def clip(max_delta: float | jax.Array) -> GradientTransformation:
    r"""Clip each coordinate to ``[−max_delta, max_delta]``: $u = \min(\max(g, -c), c)$.

    Args:
        max_delta: ``c ≥ 0``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.clip(1.0)
        >>> tx.update(jnp.array([-3.0, 0.5, 2.0]), tx.init(None))[0]
        Array([-1. ,  0.5,  1. ], dtype=float32)
    """
    check_nonnegative("max_delta", max_delta)

    def init(params: Params) -> ClipState:
        del params
        return ClipState()

    def update(
        updates: Updates, state: ClipState, params: Params | None = None
    ) -> tuple[Updates, ClipState]:
        del params

        def leaf(g: jax.Array) -> jax.Array:
            x = up(g)
            c = coef(max_delta, x)
            return store(jnp.clip(x, -c, c), g.dtype)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init, update)


class ClipByBlockRmsState(NamedTuple):
    """:func:`clip_by_block_rms` keeps no state."""


@cached_factory
def clip_by_block_rms(threshold: float | jax.Array) -> GradientTransformation:
    r"""Scale each leaf (block) down so that its root-mean-square is at most ``threshold``.

    $$ u = \frac{g}{\max\left(1,\ \sqrt{\operatorname{mean}(|g|^2)} / c\right)} $$

    Args:
        threshold: ``c > 0``, the largest RMS a leaf may keep.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.clip_by_block_rms(1.0)
        >>> tx.update(jnp.array([3.0, -3.0]), tx.init(None))[0]
        Array([ 1., -1.], dtype=float32)
    """
    check_range("threshold", threshold, 0.0, low_inclusive=False)

    def init(params: Params) -> ClipByBlockRmsState:
        del params
        return ClipByBlockRmsState()

    def update(
        updates: Updates, state: ClipByBlockRmsState, params: Params | None = None
    ) -> tuple[Updates, ClipByBlockRmsState]:
        del params

        def leaf(g: jax.Array) -> jax.Array:
            x = up(g)
            rms = jnp.sqrt(jnp.mean(_abs_sq(x)))
            return store(x / jnp.maximum(1, rms / coef(threshold, rms)), g.dtype)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init, update)


# ---- norm clipping ---------------------------------------------------------------------


class ClipByGlobalNormState(NamedTuple):
    """:func:`clip_by_global_norm` keeps no state."""


@cached_factory
def clip_by_global_norm(max_norm: float | jax.Array) -> GradientTransformation:
    r"""Scale all updates together so that their :func:`global_norm` is at most ``max_norm``.

    $$ u = g \cdot \min\left(1,\ \frac{c}{\|g\|}\right) $$

    The factor is exactly 1 when ``‖g‖ ≤ c``, so an all-zero gradient gives zeros (also
    for ``c = 0``, where optax returns NaN), and its derivative is finite there too.

    Args:
        max_norm: ``c ≥ 0``.

    Reference: Pascanu et al., *On the difficulty of training recurrent neural
    networks*, 2013.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.clip_by_global_norm(1.0)
        >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
        {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
    """
    check_nonnegative("max_norm", max_norm)

    def init(params: Params) -> ClipByGlobalNormState:
        del params
        return ClipByGlobalNormState()

    def update(
        updates: Updates, state: ClipByGlobalNormState, params: Params | None = None
    ) -> tuple[Updates, ClipByGlobalNormState]:
        del params
        norm = global_norm(updates)
        c = coef(max_norm, norm)
        over = norm > c
        factor = jnp.where(over, c / jnp.where(over, norm, 1), 1)
        out = jax.tree.map(lambda g: store(up(g) * coef(factor, up(g)), g.dtype), updates)
        return out, state

    return GradientTransformation(init, update)


class AdaptiveGradClipState(NamedTuple):
    """:func:`adaptive_grad_clip` keeps no state."""


_UNIT_AXES = {2: (0,), 3: (0,), 4: (0, 1, 2), 5: (0, 1, 2, 3)}
"""Axes a unit spans, by rank: the inputs of a dense (IO), multi-head, conv (HWIO) or 3-D
conv (DHWIO) kernel; one unit per output."""


def _unit_norm(x: jax.Array, axis: Axis) -> jax.Array:
    """The L2 norm of each unit of ``x``, broadcastable against ``x``."""
    if axis is None:
        if sum(d != 1 for d in x.shape) <= 1:
            axis = tuple(range(x.ndim))  # scalars and vectors are one unit
        elif x.ndim in _UNIT_AXES:
            axis = _UNIT_AXES[x.ndim]
        else:
            raise ValueError(
                f"adaptive_grad_clip: no default units for a leaf of shape {x.shape}; "
                "pass axis= to say which axes a unit spans"
            )
    return jnp.sqrt(jnp.sum(_abs_sq(x), axis=axis, keepdims=True))


@cached_factory
def adaptive_grad_clip(
    clipping: float | jax.Array, eps: float = 1e-3, axis: Axis = None
) -> GradientTransformation:
    r"""Adaptive gradient clipping (AGC): bound each unit's gradient by its weight's norm.

    For each unit ``i`` (by default: a whole vector or scalar, a column of a dense
    kernel, an output filter of a convolution):

    $$ u_i = \begin{cases} g_i & \|g_i\| < \lambda \max(\|\theta_i\|, \epsilon) \\
       g_i\, \dfrac{\lambda \max(\|\theta_i\|, \epsilon)}{\max(\|g_i\|, 10^{-6})}
       & \text{otherwise} \end{cases} $$

    Args:
        clipping: ``λ ≥ 0``, the largest ratio of gradient norm to weight norm.
        eps: ``ε ≥ 0``, the weight norm assumed for zero-initialised weights.
        axis: the axes one unit spans (default: by rank as above; ranks above 5 need
            it).

    Reference: Brock et al., *High-Performance Large-Scale Image Recognition Without
    Normalization*, 2021.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.adaptive_grad_clip(0.1)
        >>> p = jnp.array([3.0, 4.0])
        >>> tx.update(jnp.array([6.0, 8.0]), tx.init(p), p)[0]
        Array([0.3, 0.4], dtype=float32)
    """
    check_nonnegative("clipping", clipping)
    check_nonnegative("eps", eps)

    def init(params: Params) -> AdaptiveGradClipState:
        del params
        return AdaptiveGradClipState()

    def update(
        updates: Updates, state: AdaptiveGradClipState, params: Params | None = None
    ) -> tuple[Updates, AdaptiveGradClipState]:
        params = require_params("adaptive_grad_clip", params)

        def leaf(g: jax.Array, p: jax.Array) -> jax.Array:
            x = up(g)
            g_norm = _unit_norm(x, axis)
            p_norm = _unit_norm(jnp.asarray(p), axis).astype(g_norm.dtype)
            max_norm = coef(clipping, g_norm) * jnp.maximum(p_norm, coef(eps, g_norm))
            clipped = x * (max_norm / jnp.maximum(g_norm, coef(1e-6, g_norm)))
            return store(jnp.where(g_norm < max_norm, x, clipped), g.dtype)

        return tree_map(leaf, updates, params, names=("updates", "params")), state

    return GradientTransformation(init, update)


# ---- cleaning and constraints ----------------------------------------------------------


class ZeroNansState(NamedTuple):
    """State of :func:`zero_nans`: per leaf, whether the last update had a NaN."""

    found_nan: Any


@cached_factory
def zero_nans() -> GradientTransformation:
    r"""Replace NaNs by zeros: $u = 0$ where $g$ is NaN, else $g$.

    The state records, per leaf, whether the last update had a NaN (for logging; the
    transform itself does not read it).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.zero_nans()
        >>> u, s = tx.update(jnp.array([1.0, jnp.nan]), tx.init(jnp.zeros(2)))
        >>> u, s.found_nan
        (Array([1., 0.], dtype=float32), Array(True, dtype=bool))
    """

    def init(params: Params) -> ZeroNansState:
        return ZeroNansState(found_nan=jax.tree.map(lambda p: jnp.zeros([], bool), params))

    def update(
        updates: Updates, state: ZeroNansState, params: Params | None = None
    ) -> tuple[Updates, ZeroNansState]:
        del params, state
        found = jax.tree.map(lambda g: jnp.any(jnp.isnan(g)), updates)
        out = jax.tree.map(lambda g: jnp.where(jnp.isnan(g), jnp.zeros_like(g), g), updates)
        return out, ZeroNansState(found_nan=found)

    return GradientTransformation(init, update)


class NonNegativeParamsState(NamedTuple):
    """:func:`keep_params_nonnegative` keeps no state."""


@cached_factory
def keep_params_nonnegative() -> GradientTransformation:
    r"""Stop the parameters from going negative: $u = -\theta$ where $\theta + u < 0$.

    Put it last in a chain, so that ``u`` is the final step. A parameter that is
    already negative is moved to 0.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.keep_params_nonnegative()
        >>> p = jnp.array([1.0, 2.0])
        >>> tx.update(jnp.array([-3.0, -1.0]), tx.init(p), p)[0]
        Array([-1., -1.], dtype=float32)
    """

    def init(params: Params) -> NonNegativeParamsState:
        del params
        return NonNegativeParamsState()

    def update(
        updates: Updates, state: NonNegativeParamsState, params: Params | None = None
    ) -> tuple[Updates, NonNegativeParamsState]:
        params = require_params("keep_params_nonnegative", params)

        def leaf(u: jax.Array, p: jax.Array) -> jax.Array:
            x, theta = up(u), up(jnp.asarray(p))
            theta = theta.astype(x.dtype)
            return store(jnp.where(theta + x < 0, -theta, x), u.dtype)

        return tree_map(leaf, updates, params, names=("updates", "params")), state

    return GradientTransformation(init, update)


# ---- noise -----------------------------------------------------------------------------


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`: the step count and the key for the next draw."""

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    rng_key: jax.Array


def _as_key(key: jax.Array | int | None) -> jax.Array:
    """A typed PRNG key from a typed key, a raw ``uint32[2]`` key, or an integer seed."""
    if key is None:
        return jax.random.key(0)
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32:
        return jax.random.wrap_key_data(key)
    return jax.random.key(key)


@cached_factory
def add_noise(
    eta: float | jax.Array, gamma: float | jax.Array, key: jax.Array | int | None = None
) -> GradientTransformation:
    r"""Add annealed Gaussian noise to the updates (Neelakantan et al., 2015).

    $$ u_t = g_t + \sigma_t\, \xi_t, \qquad \sigma_t^2 = \frac{\eta}{t^{\gamma}},
       \qquad \xi_t \sim \mathcal N(0, I), \qquad t = 1, 2, \dots $$

    The draws are the same as ``optax.add_noise`` with the same key: each step splits
    the key in two, keeps one half for the next step and splits the other into one
    key per leaf (in ``jax.tree.leaves`` order).

    Args:
        eta: ``η ≥ 0``, the noise variance at the first step.
        gamma: ``γ ≥ 0``, how fast the variance decays (the paper uses 0.55).
        key: a PRNG key (typed, or a raw ``uint32[2]``) or an integer seed; ``None``
            means seed 0.

    Reference: Neelakantan et al., *Adding Gradient Noise Improves Learning for Very
    Deep Networks*, 2015.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.add_noise(eta=0.01, gamma=0.55, key=0)
        >>> u, state = tx.update(jnp.zeros(3), tx.init(jnp.zeros(3)))
        >>> u.shape, int(state.count)
        ((3,), 1)
    """
    check_nonnegative("eta", eta)
    check_nonnegative("gamma", gamma)

    def init(params: Params) -> AddNoiseState:
        del params
        return AddNoiseState(count=new_count(), rng_key=_as_key(key))

    def update(
        updates: Updates, state: AddNoiseState, params: Params | None = None
    ) -> tuple[Updates, AddNoiseState]:
        del params
        t = safe_increment(state.count)
        sigma = jnp.sqrt(eta / t.astype(jnp.float32) ** gamma)
        next_key, draw_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(draw_key, len(leaves))

        def leaf(g: jax.Array, k: jax.Array) -> jax.Array:
            x = up(g)
            noise = jax.random.normal(k, jnp.shape(g), g.dtype).astype(x.dtype)
            return store(x + coef(sigma, x) * noise, g.dtype)

        out = jax.tree.unflatten(treedef, [leaf(g, k) for g, k in zip(leaves, keys, strict=True)])
        return out, AddNoiseState(count=t, rng_key=next_key)

    return GradientTransformation(init, update)
