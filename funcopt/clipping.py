"""Clipping, cleaning and constraints: transforms that bound or perturb the updates.

The per-leaf ones are :class:`~funcopt.lifting.Leafwise` primitives (one equation per
leaf); :class:`clip_by_global_norm` and :class:`add_noise` look at the whole tree. Names,
arguments and numerics follow optax. Arithmetic runs in at least float32 and each result
keeps its leaf's dtype; ``None`` leaves are left alone; norms of complex leaves use
``|g|²``. Clipping normally goes first in a chain::

    tx = funcopt.chain(funcopt.clip_by_global_norm(1.0), funcopt.adam(1e-3))
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import (
    STATE_OWNERS,
    EmptyState,
    GradientTransformation,
    HyperParameterError,
    OptState,
    Params,
    Updates,
    expect_state,
    safe_increment,
)
from funcopt.lifting import Leafwise, abs2, coef, real_dtype, up
from funcopt.trees import check_float_leaves
from funcopt.validation import NONNEGATIVE, POSITIVE, Kind, is_traced
from funcopt.values import hyper, static

__all__ = [
    "AddNoiseState",
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


# ---- the global norm -------------------------------------------------------------------


@jax.custom_jvp
def _sqrt(s: jax.Array) -> jax.Array:
    """``√s`` whose derivative at ``s = 0`` is 0 rather than ∞ (so 0 · ∞ is no NaN).

    A custom derivative rather than ``where`` around the root: the forward computation
    is one ``sqrt``, which XLA does not copy into every fusion that reads the norm.
    """
    return jnp.sqrt(s)


@_sqrt.defjvp
def _sqrt_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> Any:
    (s,), (ds,) = primals, tangents
    root = jnp.sqrt(s)
    positive = s > 0
    return root, ds * jnp.where(positive, 0.5 / jnp.where(positive, root, 1), 0)


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
    sums = [jnp.sum(abs2(up(x))) for x in jax.tree.leaves(updates)]
    if not sums:
        return jnp.zeros([], jnp.float32)
    dtype = max((s.dtype for s in sums), key=lambda d: d.itemsize)
    total = sums[0].astype(dtype)
    for s in sums[1:]:
        total = total + s.astype(dtype)
    return _sqrt(total)


# ---- element-wise clipping -------------------------------------------------------------


class clip(Leafwise):
    r"""Clip each coordinate to ``[−max_delta, max_delta]``: $u = \min(\max(g, -c), c)$.

    Args:
        max_delta: ``c ≥ 0``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.clip(1.0)
        >>> tx.update(jnp.array([-3.0, 0.5, 2.0]), tx.init(None))[0]
        Array([-1. ,  0.5,  1. ], dtype=float32)
    """

    max_delta: float = hyper(NONNEGATIVE)

    def leaf(self, g: jax.Array) -> jax.Array:
        return jnp.clip(g, -self.max_delta, self.max_delta)


class clip_by_block_rms(Leafwise):
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

    threshold: float = hyper(POSITIVE)

    elementwise = False

    def leaf(self, g: jax.Array) -> jax.Array:
        rms = jnp.sqrt(jnp.mean(abs2(g)))
        return g / jnp.maximum(1, rms / self.threshold)


# ---- norm clipping ---------------------------------------------------------------------


class clip_by_global_norm(GradientTransformation):
    r"""Scale all updates together so that their :func:`global_norm` is at most ``max_norm``.

    $$ u = g \cdot \min\left(1,\ \frac{c}{\|g\|}\right) $$

    The factor is exactly 1 when ``‖g‖ ≤ c``, so an all-zero gradient gives zeros (also
    for ``c = 0``, where optax returns NaN), and its derivative is finite there too. The
    factor is one scalar computed once per update, so a step's compiled size grows
    linearly with the number of leaves.

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

    max_norm: float = hyper(NONNEGATIVE)

    def init_state(self, params: Params) -> OptState:
        check_float_leaves(params)
        return EmptyState()

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        del state, params, count, extra
        norm = global_norm(updates)
        c = coef(self.max_norm, norm)
        # Exactly 1 where ‖g‖ ≤ c; the inner ``where`` keeps the unused branch's derivative
        # finite there (the zero tree, c = 0). Only scalars are selected: the root itself
        # has a custom derivative (``_sqrt``), so XLA does not copy the sum of squares into
        # every leaf's fusion, as it did with a ``where`` around the root (quadratic HLO).
        over = norm > c
        factor = jnp.where(over, c / jnp.where(over, norm, 1), 1)

        def leaf(g: jax.Array) -> jax.Array:
            x = up(g)
            return (x * coef(factor, x)).astype(jnp.result_type(g))

        return jax.tree.map(leaf, updates), EmptyState()


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
    return jnp.sqrt(jnp.sum(abs2(x), axis=axis, keepdims=True))


def _check_axis(name: str, value: Any) -> Any:
    if value is None:
        return None
    ints = (int, np.integer)
    if isinstance(value, ints) and not isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, tuple | list) and all(
        isinstance(a, ints) and not isinstance(a, bool | np.bool_) for a in value
    ):
        return tuple(int(a) for a in value)
    raise HyperParameterError(
        f"{name} must be None, an int or a tuple of ints, got {name}={value!r}"
    )


_AXIS = Kind(_check_axis, "None, an int or a tuple of ints")


class adaptive_grad_clip(Leafwise):
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

    clipping: float = hyper(NONNEGATIVE)
    eps: float = hyper(NONNEGATIVE, 1e-3)
    axis: Axis = static(None, _AXIS)

    needs_params = True
    elementwise = False

    def leaf(self, g: jax.Array, *, p: jax.Array) -> jax.Array:
        g_norm = _unit_norm(g, self.axis)
        p_norm = _unit_norm(p, self.axis).astype(g_norm.dtype)
        max_norm = self.clipping * jnp.maximum(p_norm, self.eps)
        clipped = g * (max_norm / jnp.maximum(g_norm, 1e-6))
        return jnp.where(g_norm < max_norm, g, clipped)


# ---- cleaning and constraints ----------------------------------------------------------


class ZeroNansState(NamedTuple):
    """State of :class:`zero_nans`: per leaf, whether the last update had a NaN."""

    found_nan: Any


class zero_nans(Leafwise):
    r"""Replace NaNs by zeros: $u = 0$ where $g$ is NaN, else $g$.

    The state records, per leaf, whether the last update had a NaN (for logging; the
    transform itself does not read it). Run on packed buffers
    (:mod:`funcopt.packing`), it records one flag per buffer.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.zero_nans()
        >>> u, s = tx.update(jnp.array([1.0, jnp.nan]), tx.init(jnp.zeros(2)))
        >>> u, s.found_nan
        (Array([1., 0.], dtype=float32), Array(True, dtype=bool))
    """

    def leaf(self, g: jax.Array) -> jax.Array:
        return jnp.where(jnp.isnan(g), jnp.zeros_like(g), g)

    def init_state(self, params: Params) -> OptState:
        check_float_leaves(params)
        return ZeroNansState(found_nan=jax.tree.map(lambda p: jnp.zeros([], bool), params))

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, ZeroNansState)
        out, _ = super().apply(updates, EmptyState(), params, count)
        found = jax.tree.map(lambda g: jnp.any(jnp.isnan(g)), updates)
        return out, ZeroNansState(found_nan=found)


STATE_OWNERS.setdefault(ZeroNansState, []).append("zero_nans")


class keep_params_nonnegative(Leafwise):
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

    needs_params = True

    def leaf(self, g: jax.Array, *, p: jax.Array) -> jax.Array:
        theta = p.astype(g.dtype)
        return jnp.where(theta + g < 0, -theta, g)


# ---- noise -----------------------------------------------------------------------------


class AddNoiseState(NamedTuple):
    """State of :class:`add_noise`: the step count and the key for the next draw."""

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    rng_key: jax.Array


def _is_typed_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _check_key(name: str, value: Any) -> Any:
    if value is None or is_traced(value):
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return int(value)
    if _is_typed_key(value) and value.ndim == 0:
        return value
    integer = isinstance(value, jax.Array | np.ndarray) and jnp.issubdtype(value.dtype, jnp.integer)
    if integer and value.ndim == 0:  # a seed made an array, as inject_hyperparams does
        return value
    if isinstance(value, jax.Array | np.ndarray) and value.dtype == np.uint32 and value.ndim == 1:
        return value
    raise HyperParameterError(
        f"{name} must be an integer seed, a PRNG key (typed, or a raw uint32 key) or None, "
        f"got {name}={value!r}"
    )


_KEY = Kind(_check_key, "an integer seed, a PRNG key or None")


def _new_key(key: Any) -> jax.Array:
    """A fresh typed PRNG key array from a seed, a typed key or a raw ``uint32`` key."""
    if key is None:
        return jax.random.key(0)
    if _is_typed_key(key):
        data = jnp.array(jax.random.key_data(key), copy=True)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))
    if isinstance(key, jax.Array | np.ndarray) and key.ndim == 0:  # a seed made an array
        return jax.random.key(key)  # (inject_hyperparams injects an integer seed, as optax)
    if isinstance(key, jax.Array | np.ndarray):
        return jax.random.wrap_key_data(jnp.array(key, copy=True))
    return jax.random.key(key)


class add_noise(GradientTransformation):
    r"""Add annealed Gaussian noise to the updates (Neelakantan et al., 2015).

    $$ u_t = g_t + \sigma_t\, \xi_t, \qquad \sigma_t^2 = \frac{\eta}{t^{\gamma}},
       \qquad \xi_t \sim \mathcal N(0, I), \qquad t = 1, 2, \dots $$

    The draws are the same as ``optax.add_noise`` with the same key: each step splits
    the key in two, keeps one half for the next step and splits the other into one
    key per leaf (in ``jax.tree.leaves`` order). The transform keeps the key as given;
    each ``init`` makes a fresh key array of it.

    Args:
        eta: ``η ≥ 0``, the noise variance at the first step.
        gamma: ``γ ≥ 0``, how fast the variance decays (the paper uses 0.55).
        key: a PRNG key (typed, or a raw ``uint32[2]``) or an integer seed; ``None``
            means seed 0.
        seed: deprecated (as in optax): an integer seed, in place of ``key``.

    Reference: Neelakantan et al., *Adding Gradient Noise Improves Learning for Very
    Deep Networks*, 2015.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.add_noise(eta=0.01, gamma=0.55, key=0)
        >>> u, state = tx.update(jnp.zeros(3), tx.init(jnp.zeros(3)))
        >>> u.shape, int(state.count)
        ((3,), 1)
    """

    State = AddNoiseState

    eta: float = hyper(NONNEGATIVE)
    gamma: float = hyper(NONNEGATIVE)
    key: Any = static(None, _KEY)

    def __init__(
        self,
        eta: float | jax.Array,
        gamma: float | jax.Array,
        key: jax.Array | int | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        if seed is not None:
            if key is not None:
                raise ValueError("add_noise: only one of seed or key can be specified")
            warnings.warn(
                'add_noise: "seed" is deprecated, use "key"', DeprecationWarning, stacklevel=2
            )
            key = _KEY("seed", seed)
        object.__setattr__(self, "eta", eta)
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "key", key)
        self.__post_init__()

    def init_state(self, params: Params) -> OptState:
        check_float_leaves(params)
        return AddNoiseState(count=jnp.zeros([], jnp.int32), rng_key=_new_key(self.key))

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        del params, count, extra
        expect_state(self, state, self.State)
        check_float_leaves(updates, "updates")  # no Gaussian noise of an integer dtype
        t = safe_increment(state.count)
        sigmas: dict[Any, jax.Array] = {}  # σ_t once per precision

        def sigma(x: jax.Array) -> jax.Array:
            real = real_dtype(x.dtype)
            if real not in sigmas:
                eta, gamma = coef(self.eta, x), coef(self.gamma, x)
                sigmas[real] = jnp.sqrt(eta / t.astype(real) ** gamma)
            return sigmas[real]

        next_key, draw_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(draw_key, len(leaves))

        def leaf(g: jax.Array, k: jax.Array) -> jax.Array:
            g = jnp.asarray(g)
            x = up(g)
            noise = jax.random.normal(k, g.shape, g.dtype).astype(x.dtype)
            return (x + sigma(x) * noise).astype(g.dtype)

        out = [leaf(g, k) for g, k in zip(leaves, keys, strict=True)]
        return jax.tree.unflatten(treedef, out), AddNoiseState(count=t, rng_key=next_key)
