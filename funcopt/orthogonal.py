"""Muon: orthogonalised momentum on the matrices, AdamW on every other leaf.

Muon replaces the momentum of a weight matrix by (an approximation of) the orthogonal
factor of its polar decomposition, computed with a few Newton–Schulz iterations
(:func:`orthogonalize_via_newton_schulz`), then rescales it by the matrix's shape
(:class:`scale_by_shape`). :func:`muon` is a :class:`~funcopt.partition`: that chain on
the 2-D leaves, :func:`~funcopt.adamw` on the others, as ``optax.contrib.muon``, which it
matches. Complex matrices are orthogonalised with the conjugate transpose.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import GradientTransformation, Params, ScalarOrSchedule, StructureError
from funcopt.combine import chain
from funcopt.lifting import Leafwise
from funcopt.optimizers import adamw
from funcopt.preconditioners import debiased_momentum
from funcopt.scaling import add_decayed_weights, scale_by_learning_rate
from funcopt.trees import MASK, Mask, keystr
from funcopt.validation import (
    BOOL,
    DECAY,
    DTYPE,
    NONNEGATIVE,
    RATE,
    HyperParameterError,
    Kind,
    hyperparameters,
    integer,
    interval,
    is_traced,
    one_of,
)
from funcopt.values import _Static, hyper, static
from funcopt.wrappers import partition

__all__ = [
    "MuonDimensionNumbers",
    "muon",
    "orthogonalize_via_newton_schulz",
    "scale_by_muon",
    "scale_by_orthogonalization",
    "scale_by_shape",
]

_NS_PRESETS: dict[str, Any] = {
    "standard": (3.4445, -4.7750, 2.0315),
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


def _check_coeffs(name: str, value: Any) -> Any:
    """A preset name, one ``(a, b, c)`` or ``(n, 3)`` triples, as (nested) float tuples."""
    if isinstance(value, str):
        if value not in _NS_PRESETS:
            raise HyperParameterError(
                f"{name} must be one of the presets {sorted(_NS_PRESETS)} or (a, b, c) "
                f"triples, got {name}={value!r}"
            )
        return _NS_PRESETS[value]
    if is_traced(value):
        return value
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise HyperParameterError(
            f"{name} must be (a, b, c) or a sequence of such triples, got {name}={value!r}"
        ) from None
    if array.ndim not in (1, 2) or array.shape[-1] != 3 or not np.all(np.isfinite(array)):
        raise HyperParameterError(
            f"{name} must have shape (3,) or (n, 3) with finite entries, got {name}={value!r}"
        )
    if array.ndim == 1:
        return tuple(float(c) for c in array)
    return tuple(tuple(float(c) for c in row) for row in array)


NS_COEFFS = Kind(_check_coeffs, "a preset name, (a, b, c), or (n, 3) triples")


PRECONDITIONING = one_of(*_PRECONDITIONINGS)


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a weight form the rows and the columns of the matrix Muon orthogonalises.

    A weight ``W`` used as ``x W = y`` has its reduction (input) axes first and its output
    axes second: the default ``(0, 1)`` of a 2-D weight. Every other axis is a batch
    axis: each slice along it is orthogonalised on its own. An axis may be negative; a
    tuple of axes is flattened into one matrix dimension (``(in, heads, out)`` with
    ``output_axis=(1, 2)`` is an ``in × (heads·out)`` matrix).

    Attributes:
        reduction_axis: the axis (or axes) of the matrix's rows, ``n_in``.
        output_axis: the axis (or axes) of its columns, ``n_out``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> conv = jnp.ones((3, 3, 16, 32))  # a conv kernel (h, w, in, out)
        >>> dims = funcopt.MuonDimensionNumbers(reduction_axis=2, output_axis=3)
        >>> funcopt.orthogonalize_via_newton_schulz(conv, dimension_numbers=dims).shape
        (3, 3, 16, 32)
    """

    reduction_axis: int | tuple[int, ...] = 0
    output_axis: int | tuple[int, ...] = 1


WeightDimensionNumbers = (
    MuonDimensionNumbers | Any | Callable[[Params], Any]
)  # one for every leaf, a tree of them (None: the 2-D default), or a function returning one


def _is_dims(x: Any) -> bool:
    return x is None or isinstance(x, MuonDimensionNumbers)


def _check_dims(name: str, value: Any) -> Any:
    if value is None or isinstance(value, MuonDimensionNumbers) or callable(value):
        return value
    for path, leaf in jax.tree_util.tree_flatten_with_path(value, is_leaf=_is_dims)[0]:
        if not _is_dims(leaf):
            raise HyperParameterError(
                f"{name} must be {DIMS.description}, "
                f"got {name}{keystr(path) if path else ''}={leaf!r}"
            )
    return value


DIMS = Kind(
    _check_dims,
    "a MuonDimensionNumbers, a pytree of them (None: not a Muon leaf), a function of the "
    "params returning one, or None",
)


def _matrix_axes(
    shape: tuple[int, ...], dims: MuonDimensionNumbers
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The batch, reduction and output axes of a weight of ``shape`` (non-negative)."""
    ndim = len(shape)

    def normal(name: str, axes: Any) -> tuple[int, ...]:
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        if not axes or any(not isinstance(a, int) or not -ndim <= a < ndim for a in axes):
            raise ValueError(
                f"MuonDimensionNumbers.{name}={axes} is not a non-empty set of axes of a "
                f"weight of shape {shape}"
            )
        return tuple(a % ndim for a in axes)

    reduction = normal("reduction_axis", dims.reduction_axis)
    output = normal("output_axis", dims.output_axis)
    if len(set(reduction + output)) < len(reduction) + len(output):
        raise ValueError(
            f"the reduction and output axes of {dims} overlap (or repeat) for a weight of "
            f"shape {shape}"
        )
    batch = tuple(a for a in range(ndim) if a not in reduction + output)
    return batch, reduction, output


def _fans(shape: tuple[int, ...], dims: MuonDimensionNumbers | None) -> tuple[int, int]:
    """``(n_in, n_out)``: the sizes of the matrix's reduction and output dimensions."""
    if dims is None:
        return shape[0], shape[1]
    _, reduction, output = _matrix_axes(shape, dims)
    return math.prod(shape[a] for a in reduction), math.prod(shape[a] for a in output)


def _leaf_dims(spec: Any, updates: Any) -> list[dict[str, Any]] | None:
    """``{"dims": ...}`` per leaf of ``updates``: ``spec`` applied to every leaf, called on
    the updates, or broadcast as a prefix tree (entries for masked-out leaves unused)."""
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, MuonDimensionNumbers):
        spec = spec(updates)
    if spec is None or isinstance(spec, MuonDimensionNumbers):
        return [{"dims": spec}] * len(jax.tree.leaves(updates))
    out: list[dict[str, Any]] = []
    try:
        jax.tree.map(
            lambda d, sub: out.extend([{"dims": d}] * len(jax.tree.leaves(sub))),
            spec,
            updates,
            is_leaf=_is_dims,
        )
    except ValueError as e:
        raise StructureError(
            f"weight_dimension_numbers must be a prefix of the updates' tree, of "
            f"MuonDimensionNumbers or None: {e}"
        ) from None
    return out


def _gram(x: jax.Array) -> jax.Array:
    """``X Xᴴ`` (the conjugate transpose for complex ``X``)."""
    return x @ x.conj().T


def _ns_step(x: jax.Array, a: jax.Array, c: jax.Array) -> jax.Array:
    """One quintic step ``c₀ X + (c₁ A + c₂ A²) X`` with ``A = X Xᴴ`` given."""
    return c[0] * x + (c[1] * a + c[2] * a @ a) @ x


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: Any = _NS_PRESETS["standard"],
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: float = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
) -> jax.Array:
    r"""Push the singular values of a matrix towards 1 with a quintic Newton–Schulz map.

    $$ X_0 = G / (\lVert G\rVert + \epsilon), \qquad
       X_{k+1} = a X_k + (b A_k + c A_k^2) X_k,\quad A_k = X_k X_k^{H} $$

    (``Xᴴ`` the conjugate transpose). Each step maps every singular value ``σ`` to
    ``aσ + bσ³ + cσ⁵`` and keeps the singular vectors, so the result approximates the
    polar factor ``U Vᴴ`` of ``G = U S Vᴴ``.

    Args:
        x: the matrix ``G`` (2-D, real or complex); a tall one is transposed for the
            iteration and back.
        ns_coeffs: one ``(a, b, c)`` used ``ns_steps`` times, an ``(n, 3)`` sequence of
            per-step triples (then all ``n`` are applied and ``ns_steps`` is ignored), or
            a preset name (``"standard"``, ``"dion"``).
        ns_steps: iterations ≥ 1 of a single triple.
        preconditioning: how ``G`` is normalised first: ``"frobenius"`` or
            ``"spectral"`` (divide by that norm plus ``eps``), ``"aol"`` (the first step
            rescales the rows of ``G`` by ``1/√(Σ_j |A_ij|)``, Boissin et al. 2025) or
            ``"schatten"`` (the first step divides by the Schatten-4 norm ``‖A‖_F^{1/2}``).
        eps: ε ≥ 0 added to that norm.
        dimension_numbers: for a weight of any rank, which axes are the matrix's rows
            and columns (:class:`MuonDimensionNumbers`); the others are batch axes, each
            slice orthogonalised on its own. ``None``: ``x`` is the matrix.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> g = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # singular values 3 and 1
        >>> o = funcopt.orthogonalize_via_newton_schulz(g)
        >>> o.shape, [round(s, 2) for s in jnp.linalg.svd(o, compute_uv=False).tolist()]
        ((3, 2), [1.13, 0.75])
        >>> o = funcopt.orthogonalize_via_newton_schulz(g, (1.5, -0.5, 0.0), ns_steps=20)
        >>> (o.T @ o).round(2)  # the classic cubic iteration converges to orthogonal
        Array([[1., 0.],
               [0., 1.]], dtype=float32)
    """
    if dimension_numbers is not None and not isinstance(dimension_numbers, MuonDimensionNumbers):
        raise TypeError(
            f"dimension_numbers must be a MuonDimensionNumbers or None, got {dimension_numbers!r}"
        )
    if jnp.ndim(x) != 2 and dimension_numbers is None:
        raise ValueError(
            f"orthogonalize_via_newton_schulz needs a matrix, got shape {jnp.shape(x)}: "
            "pass dimension_numbers to say which axes form it"
        )
    ns_coeffs = _check_coeffs("ns_coeffs", ns_coeffs)
    ns_steps = integer(1)("ns_steps", ns_steps)
    preconditioning = PRECONDITIONING("preconditioning", preconditioning)
    coeffs = jnp.asarray(ns_coeffs).astype(x.dtype)
    if coeffs.ndim == 1:
        coeffs = jnp.broadcast_to(coeffs, (ns_steps, 3))
    if dimension_numbers is None:
        return _newton_schulz(x, coeffs, preconditioning, eps)
    shape = jnp.shape(x)
    batch, reduction, output = _matrix_axes(shape, dimension_numbers)
    order = batch + reduction + output
    sizes = [shape[a] for a in order]
    nb, nr = len(batch), len(reduction)
    matrices = jnp.transpose(x, order).reshape(
        (math.prod(sizes[:nb]), math.prod(sizes[nb : nb + nr]), math.prod(sizes[nb + nr :]))
    )
    o = jax.vmap(lambda m: _newton_schulz(m, coeffs, preconditioning, eps))(matrices)
    return jnp.transpose(o.reshape(sizes), [int(a) for a in np.argsort(order)])


def _newton_schulz(x: jax.Array, coeffs: jax.Array, preconditioning: str, eps: Any) -> jax.Array:
    """The iteration on one matrix ``x``, one step per row of ``coeffs``."""
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    if preconditioning in ("frobenius", "spectral"):
        norm = jnp.linalg.norm(x, ord="fro" if preconditioning == "frobenius" else 2)
        x = x / (norm + eps)
    for k in range(coeffs.shape[0]):
        a = _gram(x)
        if k == 0 and preconditioning == "aol":
            s = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(a), axis=-1), eps))[:, None]
            x, a = x * s, a * s * s.T
        elif k == 0 and preconditioning == "schatten":
            s = jax.lax.rsqrt(jnp.maximum(jnp.linalg.norm(a, ord="fro"), eps))
            x, a = x * s, a * s**2
        x = _ns_step(x, a, coeffs[k])
    return x.T if transposed else x


class scale_by_orthogonalization(Leafwise):
    r"""Replace each matrix by its Newton–Schulz orthogonalisation :math:`O(G)`.

    $$ u_t = O(g_t), \qquad \text{or, with ``adaptive``,}\quad
       u_t = \mathrm{Re}\,\langle g_t, O(g_t)\rangle\, O(g_t), \quad
       \langle g, O\rangle = \textstyle\sum_{ij} \overline{g_{ij}}\, O_{ij} $$

    Every leaf must be a matrix (see :func:`orthogonalize_via_newton_schulz`).

    Args:
        ns_coeffs: ``(a, b, c)``, a sequence of one triple per step, or ``"standard"`` /
            ``"dion"``.
        ns_steps: iterations ≥ 1 (with per-step triples, the last ``ns_steps`` are used).
        eps: ε ≥ 0 added to the initial norm.
        preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
        adaptive: scale by the dual norm ``⟨g, O(g)⟩`` (Pethick et al., 2024).
        weight_dimension_numbers: how leaves of other ranks form matrices: one
            :class:`MuonDimensionNumbers` for every leaf, a tree of them shaped like the
            params (or a prefix of it; ``None`` entries: 2-D matrices), or a function of
            the updates returning such a tree. ``None``: every leaf is a matrix.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> g = {"w": jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])}
        >>> tx = funcopt.scale_by_orthogonalization("dion")
        >>> tx.update(g, tx.init(g))[0]["w"].round(1)  # singular values 3, 1 → 1, 1
        Array([[1., 0.],
               [0., 1.],
               [0., 0.]], dtype=float32)
    """

    ns_coeffs: Any = static(_NS_PRESETS["standard"], NS_COEFFS)
    ns_steps: int = static(5, integer(1))
    eps: float = hyper(NONNEGATIVE, 1e-8)
    preconditioning: str = static("frobenius", PRECONDITIONING)
    adaptive: bool = static(False, BOOL)
    weight_dimension_numbers: WeightDimensionNumbers | None = static(None, DIMS)

    elementwise = False

    def leaf_options(self, updates: Any) -> list[dict[str, Any]] | None:
        return _leaf_dims(self.weight_dimension_numbers, updates)

    def check(self) -> None:
        n = len(self.ns_coeffs) if isinstance(self.ns_coeffs[0], tuple) else None
        if n is not None and n < self.ns_steps:
            raise HyperParameterError(
                f"ns_coeffs has {n} triples, fewer than ns_steps={self.ns_steps}"
            )

    def leaf(self, g: jax.Array, dims: MuonDimensionNumbers | None = None) -> jax.Array:
        if g.ndim != 2 and dims is None:
            raise ValueError(
                f"scale_by_orthogonalization: every leaf must be a matrix, got shape {g.shape}"
                " (weight_dimension_numbers says how a leaf of another rank forms one)"
            )
        coeffs = self.ns_coeffs
        if isinstance(coeffs[0], tuple):
            coeffs = coeffs[-self.ns_steps :]
        o = orthogonalize_via_newton_schulz(
            g, coeffs, self.ns_steps, self.preconditioning, self.eps, dims
        )
        if not self.adaptive:
            return o
        return jnp.real(jnp.sum(g.conj() * o)) * o


class scale_by_shape(Leafwise):
    r"""Muon's width scaling of an ``(n_in, n_out)`` matrix update.

    $$ u_t = \sqrt{\max(1, n_{out}/n_{in})}\; g_t \quad\text{or, with ``consistent_rms``
       } r:\quad u_t = r \sqrt{\max(n_{in}, n_{out})}\; g_t $$

    (the second gives updates of RMS ``r``, matching AdamW's, Liu et al. 2025). Every
    leaf must be a matrix.

    Args:
        consistent_rms: the target RMS ``r`` ≥ 0, or ``None`` for the first scaling.
        weight_dimension_numbers: which axes give ``n_in`` and ``n_out`` for leaves of
            other ranks, as in :class:`scale_by_orthogonalization` (``None``: every leaf
            is an ``(n_in, n_out)`` matrix).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> g = jnp.ones((2, 8))
        >>> tx = funcopt.scale_by_shape()
        >>> tx.update(g, tx.init(g))[0][0, 0]  # √(8 / 2)
        Array(2., dtype=float32)
        >>> tx = funcopt.scale_by_shape(consistent_rms=0.25)
        >>> tx.update(g, tx.init(g))[0][0, 0]  # 0.25 · √8
        Array(0.70710677, dtype=float32)
    """

    consistent_rms: float | None = hyper(interval(0.0, optional=True), None)
    weight_dimension_numbers: WeightDimensionNumbers | None = static(None, DIMS)

    elementwise = False

    def leaf_options(self, updates: Any) -> list[dict[str, Any]] | None:
        return _leaf_dims(self.weight_dimension_numbers, updates)

    def leaf(self, g: jax.Array, dims: MuonDimensionNumbers | None = None) -> jax.Array:
        if g.ndim != 2 and dims is None:
            raise ValueError(
                f"scale_by_shape: every leaf must be a matrix, got shape {g.shape}"
                " (weight_dimension_numbers says how a leaf of another rank forms one)"
            )
        n_in, n_out = _fans(g.shape, dims)
        if self.consistent_rms is None:
            return jnp.sqrt(jnp.maximum(1, n_out / n_in)) * g
        return jnp.sqrt(jnp.maximum(n_in, n_out)) * self.consistent_rms * g


_MUON_ARGS = dict(
    ns_coeffs=NS_COEFFS, ns_steps=integer(1), beta=DECAY, eps=NONNEGATIVE, mu_dtype=DTYPE,
    nesterov=BOOL, adaptive=BOOL, preconditioning=PRECONDITIONING,
)  # fmt: skip


@hyperparameters(**_MUON_ARGS)
def scale_by_muon(
    ns_coeffs: Any = _NS_PRESETS["standard"],
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: WeightDimensionNumbers | None = None,
) -> GradientTransformation:
    r"""Muon's direction on matrices: orthogonalised bias-corrected (Nesterov) momentum.

    $$ u_t = O(\hat m_t), \qquad \hat m_t = \beta \tfrac{m_t}{1-\beta^{t+1}} +
       (1-\beta)\tfrac{g_t}{1-\beta^t}\ \text{(Nesterov) or } \tfrac{m_t}{1-\beta^t} $$

    ``chain(debiased_momentum(β, mu_dtype, nesterov), scale_by_orthogonalization(...))``.

    Args:
        ns_coeffs: Newton–Schulz coefficients, as in :class:`scale_by_orthogonalization`.
        ns_steps: Newton–Schulz iterations ≥ 1.
        beta: β in ``[0, 1)``, decay of the momentum ``m``.
        eps: ε ≥ 0 added to the norm before the Newton–Schulz iteration.
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).
        nesterov: use the Nesterov look-ahead ``m̂`` (see :class:`~funcopt.nesterov_momentum`).
        adaptive: scale ``O(m̂)`` by ``Re⟨m̂, O(m̂)⟩``.
        preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
        weight_dimension_numbers: how leaves of other ranks form matrices (see
            :class:`scale_by_orthogonalization`); ``None``: every leaf is a matrix.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> g = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> tx = funcopt.scale_by_muon()
        >>> u, state = tx.update(g, tx.init(g))
        >>> # the first m̂ is a multiple of g, and O ignores the scale
        >>> bool(jnp.allclose(u, funcopt.orthogonalize_via_newton_schulz(g), atol=1e-5))
        True
    """
    return chain(
        debiased_momentum(beta, mu_dtype, nesterov=nesterov),  # m̂
        scale_by_orthogonalization(  # O(m̂)
            ns_coeffs, ns_steps, eps, preconditioning, adaptive, weight_dimension_numbers
        ),
    )


def _muon_labels(params: Params) -> Any:
    """``"muon"`` for matrices, ``"adam"`` for every other leaf."""
    return jax.tree.map(lambda x: "muon" if jnp.ndim(x) == 2 else "adam", params)


class _LabelsFromDims:
    """``"muon"`` for the leaves ``spec`` gives dimension numbers, ``"adam"`` where it gives
    ``None``; a value (equal specs give equal labels, so equal ``muon`` s compile once)."""

    def __init__(self, spec: Any) -> None:
        self.spec, self._key = spec, _Static(spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LabelsFromDims) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __call__(self, params: Params) -> Any:
        spec = self.spec
        if callable(spec) and not isinstance(spec, MuonDimensionNumbers):
            spec = spec(params)

        def label(dims: Any, subtree: Any) -> Any:
            return jax.tree.map(lambda _: "adam" if dims is None else "muon", subtree)

        return jax.tree.map(label, spec, params, is_leaf=_is_dims)


OPTIONAL_RATE = interval(0.0, schedule=True, optional=True)


@hyperparameters(
    learning_rate=RATE, **_MUON_ARGS, weight_decay=RATE, weight_decay_mask=MASK,
    adam_b1=DECAY, adam_b2=DECAY, adam_eps_root=NONNEGATIVE, adam_weight_decay=RATE,
    adam_learning_rate=OPTIONAL_RATE, consistent_rms=interval(0.0, optional=True),
    muon_weight_dimension_numbers=DIMS,
)  # fmt: skip
def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = _NS_PRESETS["standard"],
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask: Mask | None = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: WeightDimensionNumbers | None = None,
    consistent_rms: float | None = None,
) -> GradientTransformation:
    r"""Muon (Jordan et al., 2024): orthogonalised momentum on 2-D weights, AdamW elsewhere.

    For each matrix :math:`W` of shape ``(n_in, n_out)``:

    $$ W_{t+1} = W_t - \eta\big(s\, O(\hat m_t) + \lambda W_t\big), \qquad
       s = \sqrt{\max(1, n_{out}/n_{in})} $$

    with :math:`O` the Newton–Schulz orthogonalisation (:func:`scale_by_muon`); every
    other leaf follows ``adamw(adam_learning_rate, adam_b1, adam_b2, eps, ...,
    nesterov=nesterov)``, as in ``optax.contrib.muon``, which it matches. Weights of
    other ranks (convolutions, attention heads) join Muon through
    ``muon_weight_dimension_numbers``.

    Args:
        learning_rate: η ≥ 0 of the matrices, a number or a schedule (also the other
            leaves' rate unless ``adam_learning_rate`` is given).
        ns_coeffs: Newton–Schulz coefficients, as in :class:`scale_by_orthogonalization`.
        ns_steps: Newton–Schulz iterations ≥ 1.
        beta: β in ``[0, 1)``, the matrices' momentum decay.
        eps: ε ≥ 0 of the Newton–Schulz normalisation, and also the AdamW ε of the other
            leaves.
        weight_decay: λ ≥ 0 of the matrices; the decay is multiplied by η.
        weight_decay_mask: which matrices decay: a pytree of bools shaped like the
            params (entries for non-matrix leaves are ignored), or a function of the
            params returning one (it sees the non-matrix leaves masked out); ``None``
            decays every matrix.
        mu_dtype: dtype of the first moments, Muon's and AdamW's (default: the params').
        nesterov: Nesterov look-ahead momentum for the matrices, and NAdamW rather than
            AdamW for the other leaves.
        adaptive: scale ``O(m̂)`` by ``Re⟨m̂, O(m̂)⟩`` (see
            :class:`scale_by_orthogonalization`).
        preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
        adam_b1: β₁ in ``[0, 1)`` of the AdamW on the other leaves.
        adam_b2: β₂ in ``[0, 1)`` of the AdamW on the other leaves.
        adam_eps_root: ε ≥ 0 inside the root of the AdamW on the other leaves.
        adam_weight_decay: λ ≥ 0 of the AdamW on the other leaves (no mask: all of them).
        adam_learning_rate: the other leaves' rate, a number or a schedule (default:
            ``learning_rate``).
        muon_weight_dimension_numbers: which leaves Muon takes and how each forms a
            matrix: a tree shaped like the params (or a prefix of it) of
            :class:`MuonDimensionNumbers` (Muon) and ``None`` (AdamW), one
            :class:`MuonDimensionNumbers` for every leaf, or a function of the params
            returning such a tree. ``None``: Muon on the 2-D leaves.
        consistent_rms: ``None`` for the ``√max(1, n_out/n_in)`` scaling, or the target
            update RMS ``r`` ≥ 0 (see :class:`scale_by_shape`).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.muon(0.02)
        >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
        >>> state = tx.init(params)
        >>> w_grad = jnp.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0] * 3])
        >>> grads = {"w": w_grad, "b": jnp.array([1.0, -1.0, 2.0])}
        >>> u, state = tx.update(grads, state, params)
        >>> # singular values 3, 2, 1 of the matrix's step, over −η, all pushed near 1
        >>> [round(s, 2) for s in jnp.linalg.svd(u["w"] / -0.02, compute_uv=False).tolist()]
        [1.12, 0.7, 0.68]
        >>> [round(x, 4) for x in u["b"].tolist()]  # NAdamW's first step, ≈ −η · 1.47 sign(g)
        [-0.0295, 0.0295, -0.0295]

    Reference: Jordan et al., Muon: An optimizer for hidden layers, 2024;
    Liu et al., Muon is Scalable for LLM Training, 2025.
    """
    dims = muon_weight_dimension_numbers
    matrices = chain(
        scale_by_muon(
            ns_coeffs,
            ns_steps,
            beta,
            eps,
            mu_dtype,
            nesterov=nesterov,
            adaptive=adaptive,
            preconditioning=preconditioning,
            weight_dimension_numbers=dims,
        ),
        scale_by_shape(consistent_rms, dims),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
    adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
    others = adamw(
        adam_lr,
        adam_b1,
        adam_b2,
        eps,
        adam_eps_root,
        mu_dtype,
        adam_weight_decay,
        nesterov=nesterov,
    )
    labels = _muon_labels if dims is None else _LabelsFromDims(dims)
    return partition({"muon": matrices, "adam": others}, labels)
