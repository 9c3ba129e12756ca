r"""Run an optimizer in other coordinates: real pairs for complex leaves, low-rank matrices.

:class:`split_real_and_imaginary` gives its inner transform each complex leaf as two real
leaves (its real and imaginary parts), so that an optimizer's statistics treat them as
separate parameters, and merges the steps back.

GaLore (:class:`scale_by_galore`, :func:`galore`) projects the gradient ``G`` of each weight
matrix onto its top ``r`` singular vectors, refreshed every ``update_proj_gap`` steps, runs
the inner optimizer on the small projected matrix (so its state is ``r × n`` instead of
``m × n``) and maps the step back:

$$ R_t = P_t^{H} G_t, \qquad u_t = s\, P_t\, \rho(R_t) \qquad (m \ge n;\
   G_t P_t \text{ and } \rho(\cdot)\, P_t^{H} \text{ when } m < n) $$
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import (
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Updates,
    as_transform,
    expect_state,
)
from funcopt.combine import chain
from funcopt.lifting import coef, up
from funcopt.preconditioners import scale_by_adam
from funcopt.scaling import add_decayed_weights, scale_by_learning_rate
from funcopt.trees import MASK, Mask, check_float_leaves, is_stand_in, tree_map
from funcopt.validation import (
    RATE,
    REAL,
    HyperParameterError,
    Kind,
    hyperparameters,
    integer,
)
from funcopt.values import hyper, static

__all__ = [
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "galore",
    "scale_by_galore",
    "split_real_and_imaginary",
]


# ---- complex leaves as real pairs -------------------------------------------------------


class SplitRealAndImaginaryArrays(NamedTuple):
    """A complex leaf as the inner transform of :class:`split_real_and_imaginary` sees it."""

    real: jax.Array
    imaginary: jax.Array


class SplitRealAndImaginaryState(NamedTuple):
    """State of :class:`split_real_and_imaginary`: the inner transform's state."""

    inner_state: OptState


def _split(x: Any) -> Any:
    if jnp.iscomplexobj(x):
        return SplitRealAndImaginaryArrays(jnp.real(x), jnp.imag(x))
    return x


def _merge(x: Any) -> Any:
    if isinstance(x, SplitRealAndImaginaryArrays):
        return jax.lax.complex(jnp.asarray(x.real), jnp.asarray(x.imaginary))
    return x


def _is_pair(x: Any) -> bool:
    return isinstance(x, SplitRealAndImaginaryArrays)


class split_real_and_imaginary(GradientTransformation):
    r"""Run ``inner`` on the real and imaginary parts of complex leaves as two real leaves.

    $$ z = x + iy \;\mapsto\; (x, y), \qquad u = T(g_x, g_y)_x + i\, T(g_x, g_y)_y $$

    Real leaves pass to ``inner`` as they are. So Adam, say, keeps a second moment for
    ``x`` and one for ``y`` rather than one of ``|z|²``. (JAX's gradient of a real loss in
    ``z`` is the conjugate of the steepest-ascent direction: conjugate it before
    ``update``.) Equal to ``optax.contrib.split_real_and_imaginary``; extra arguments of
    ``update`` reach ``inner``.

    Args:
        inner: the transform on real leaves (funcopt's or optax's).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.split_real_and_imaginary(funcopt.scale_by_sign())
        >>> z = jnp.array([3.0 - 0.5j])
        >>> tx.update(z, tx.init(z))[0]
        Array([1.-1.j], dtype=complex64)
    """

    State = SplitRealAndImaginaryState

    inner: GradientTransformation

    def check(self) -> None:
        object.__setattr__(self, "inner", as_transform(self.inner, "split_real_and_imaginary"))

    def init_state(self, params: Params) -> OptState:
        return SplitRealAndImaginaryState(self.inner.init(jax.tree.map(_split, params)))

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        pairs = jax.tree.map(_split, updates)
        params = None if params is None else jax.tree.map(_split, params)
        out, inner_state = self.inner.update(pairs, state.inner_state, params, **extra)
        return jax.tree.map(_merge, out, is_leaf=_is_pair), SplitRealAndImaginaryState(inner_state)


# ---- GaLore ------------------------------------------------------------------------------


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a leaf are the rows (``reduction_axis``) and the columns
    (``output_axis``) of the matrix GaLore projects (e.g. ``(0, (1, 2))`` for an attention
    weight of shape ``(embed, heads, head_dim)``); together they must be all the axes."""

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class GaLoreState(NamedTuple):
    """State of :class:`scale_by_galore`.

    Attributes:
        base_optimizer_state: the inner optimizer's state, on the projected matrices (and
            on the full leaves that are not projected).
        projector: per leaf, ``P`` (``m × r`` or ``n × r``), or a ``0 × 0`` array.
    """

    base_optimizer_state: OptState
    projector: Updates


def _is_spec(x: Any) -> bool:
    return x is None or isinstance(x, GaLoreDimensionNumbers)


def _axes(axis: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


class _Matrix(NamedTuple):
    """How a leaf of some shape is seen as an ``m × n`` matrix, and back."""

    order: tuple[int, ...]
    grouped: tuple[int, ...]
    m: int
    n: int

    @classmethod
    def of(cls, shape: tuple[int, ...], spec: GaLoreDimensionNumbers) -> _Matrix:
        ndim = len(shape)
        if ndim < 2:
            raise ValueError(f"GaLore projects leaves of rank ≥ 2, got shape {shape}")
        rows, cols = _axes(spec.reduction_axis, ndim), _axes(spec.output_axis, ndim)
        if set(rows) & set(cols) or set(rows) | set(cols) != set(range(ndim)):
            raise ValueError(
                f"GaLore: the reduction axes {rows} and output axes {cols} must split the "
                f"{ndim} axes of shape {shape} in two"
            )
        order = rows + cols
        m, n = math.prod(shape[a] for a in rows), math.prod(shape[a] for a in cols)
        return cls(order, tuple(shape[a] for a in order), m, n)

    def to2d(self, x: jax.Array) -> jax.Array:
        return x.transpose(self.order).reshape(self.m, self.n)

    def back(self, x: jax.Array) -> jax.Array:
        inverse = tuple(sorted(range(len(self.order)), key=self.order.__getitem__))
        return x.reshape(self.grouped).transpose(inverse)

    @property
    def left(self) -> bool:
        """Project the rows (``Pᴴ G``, for a tall or square matrix) or the columns."""
        return self.m >= self.n


def _check_dimension_numbers(name: str, value: Any) -> Any:
    if value is None or callable(value) or isinstance(value, GaLoreDimensionNumbers):
        return value
    if not all(_is_spec(x) for x in jax.tree.leaves(value, is_leaf=_is_spec)):
        raise HyperParameterError(
            f"{name} must be None, a GaLoreDimensionNumbers, a pytree of them (None to "
            f"skip a leaf) or a function of the params returning one, got {name}={value!r}"
        )
    return value


DIMENSION_NUMBERS = Kind(_check_dimension_numbers, "GaLore dimension numbers")


class scale_by_galore(GradientTransformation):
    r"""GaLore's low-rank step: the inner optimizer on projected gradients, mapped back.

    For each projected leaf seen as an ``m × n`` matrix ``G`` with ``m ≥ n``, every
    ``update_proj_gap`` steps (from the first) $P \leftarrow U_{:, :r}$ of the SVD
    $G = U \Sigma V^{H}$ (computed in at least float32, stored in the leaf's dtype), then

    $$ u = s\, P\, \rho(P^{H} G) $$

    with ρ the inner optimizer (for ``m < n``: ``P = V_{:, :r}`` and
    ``u = s ρ(G P) Pᴴ``). Leaves that are not projected go through ρ whole. ρ runs on
    the projected shapes, so it is given no params: use a direction such as
    :func:`~funcopt.scale_by_adam`, and :func:`galore`'s ``weight_decay`` for decay.
    Equal to ``optax.contrib.scale_by_galore`` (the step count is the composition's).

    Args:
        rank: ``r ≥ 1`` (at most ``min(m, n)`` is used).
        update_proj_gap: steps ≥ 1 between refreshes of the projectors.
        scale: ``s``, a factor on the steps.
        base_optimizer: ρ, funcopt's or optax's (``None``: ``scale_by_adam()``).
        weight_dimension_numbers: which leaves are projected, as which matrices:
            ``None`` (the 2-D leaves, rows × columns), one
            :class:`GaLoreDimensionNumbers` (for every leaf of rank ≥ 2), a pytree of
            them with the params' structure (``None`` to skip a leaf), or a function of
            the params returning one.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_galore(rank=1, base_optimizer=funcopt.identity())
        >>> g = {"w": jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), "b": jnp.ones(2)}
        >>> u, state = tx.update(g, tx.init(g))
        >>> u["w"]  # the best rank-1 approximation of G; b passes whole
        Array([[3., 0.],
               [0., 0.],
               [0., 0.]], dtype=float32)
        >>> state.inner_state.projector["w"].shape
        (3, 1)

    Reference: Zhao et al., GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
    Projection, 2024.
    """

    State = GaLoreState

    rank: int = static(128, integer(1))
    update_proj_gap: int = static(200, integer(1))
    scale: float = hyper(REAL, 1.0)
    base_optimizer: GradientTransformation | None = None
    weight_dimension_numbers: Any = static(None, DIMENSION_NUMBERS)

    reads_count = True

    def check(self) -> None:
        base = scale_by_adam() if self.base_optimizer is None else self.base_optimizer
        object.__setattr__(self, "base_optimizer", as_transform(base, "base_optimizer"))

    @property
    def _base(self) -> GradientTransformation:
        return self.base_optimizer  # type: ignore[return-value]  # set by check

    def dimension_numbers(self, tree: Any) -> Any:
        """Per leaf of ``tree``, its :class:`GaLoreDimensionNumbers` or ``None``."""
        spec = self.weight_dimension_numbers
        if spec is None:
            return jax.tree.map(lambda x: GaLoreDimensionNumbers() if x.ndim == 2 else None, tree)
        if isinstance(spec, GaLoreDimensionNumbers):
            return jax.tree.map(lambda x: spec if x.ndim >= 2 else None, tree)
        return spec(tree) if callable(spec) else spec

    def _map(self, f: Callable[..., Any], tree: Any, *rest: Any) -> Any:
        """``f(matrix, leaf, *others)`` per leaf of ``tree``, ``matrix`` ``None`` for a leaf
        that is not projected."""

        def leaf(spec: Any, x: Any, *ys: Any) -> Any:
            return f(None if spec is None else _Matrix.of(jnp.shape(x), spec), x, *ys)

        return jax.tree.map(leaf, self.dimension_numbers(tree), tree, *rest, is_leaf=_is_spec)

    def _shapes(self, mat: _Matrix | None, p: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A leaf's empty projector and the zeros its projected gradient is shaped like."""
        if mat is None:
            return jnp.zeros((0, 0), jnp.result_type(p)), jnp.zeros_like(p)
        r = min(self.rank, mat.m, mat.n)
        small = (r, mat.n) if mat.left else (mat.m, r)
        dtype = jnp.result_type(p)
        return jnp.zeros((mat.m if mat.left else mat.n, r), dtype), jnp.zeros(small, dtype)

    def init_state(self, params: Params) -> OptState:
        if is_stand_in(params) or not jax.tree.leaves(params):
            return GaLoreState(self._base.init(params), params)
        pairs = self._map(self._shapes, params)
        projector, proxy = jax.tree.transpose(
            jax.tree.structure(params), jax.tree.structure((0, 0)), pairs
        )
        return GaLoreState(self._base.init(proxy), projector)

    def _project(
        self, mat: _Matrix | None, g: jax.Array, projector: jax.Array, refresh: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """The projected gradient, and the projector (refreshed from ``g``'s SVD)."""
        if mat is None:
            return g, projector
        x = mat.to2d(up(g))
        r = min(self.rank, mat.m, mat.n)

        def fresh() -> jax.Array:
            u, _, vh = jnp.linalg.svd(x, full_matrices=False)
            basis = u[:, :r] if mat.left else vh[:r, :].conj().T
            return basis.astype(projector.dtype)

        projector = jax.lax.cond(refresh, fresh, lambda: projector)
        p = projector.astype(x.dtype)
        return (p.conj().T @ x if mat.left else x @ p), projector

    def _back(self, mat: _Matrix | None, g: jax.Array, low: jax.Array, projector: jax.Array) -> Any:
        if mat is None:
            return low
        low = up(low)
        p = projector.astype(low.dtype)
        full = mat.back(p @ low if mat.left else low @ p.conj().T)
        return coef(self.scale, full) * full

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        check_float_leaves(updates, "updates")  # no SVD of integers: they would be truncated
        if params is not None:  # no broadcasting: the updates have the params' shapes
            tree_map(lambda g, p: g, updates, params, names=("updates", "params"))
        refresh = (count - 1) % self.update_proj_gap == 0
        project = lambda mat, g, p: self._project(mat, g, p, refresh)
        pairs = self._map(project, updates, state.projector)
        low, projector = jax.tree.transpose(
            jax.tree.structure(updates), jax.tree.structure((0, 0)), pairs
        )
        steps, base_state = self._base.update(low, state.base_optimizer_state, None, **extra)
        out = self._map(self._back, updates, steps, projector)
        return out, GaLoreState(base_state, projector)


@hyperparameters(
    learning_rate=RATE, rank=integer(1), update_proj_gap=integer(1), scale=REAL,
    weight_decay=RATE, mask=MASK, weight_dimension_numbers=DIMENSION_NUMBERS,
)  # fmt: skip
def galore(
    learning_rate: ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: Any = None,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask | None = None,
    weight_dimension_numbers: Any = None,
) -> GradientTransformation:
    r"""GaLore (Zhao et al., 2024): full-parameter training with low-rank optimizer states.

    $$ \theta_{t+1} = \theta_t - \eta \left( s\, P_t\, \rho(P_t^{H} G_t) + \lambda\,
       \theta_t \right) $$

    ``chain(scale_by_galore(...), add_decayed_weights(λ, mask), scale_by_learning_rate(η))``
    (Adam in the subspace by default). Equal to ``optax.contrib.galore``. Arguments: see
    :class:`scale_by_galore` and the glossary.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)
        >>> params = {"w": jnp.ones((8, 4)), "b": jnp.ones(4)}
        >>> tx = funcopt.galore(0.01, rank=2)
        >>> state = tx.init(params)
        >>> for _ in range(5):
        ...     updates, state = tx.update(jax.grad(loss)(params), state, params)
        ...     params = funcopt.apply_updates(params, updates)
        >>> round(float(loss(params)), 2)  # from 36
        34.49
        >>> state[0].inner_state.projector["w"].shape  # Adam's moments of w are 2 × 4
        (8, 2)
    """
    return chain(
        scale_by_galore(rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers),
        add_decayed_weights(weight_decay, mask),  # + λ θ
        scale_by_learning_rate(learning_rate),  # θ ← θ − η ·
    )
