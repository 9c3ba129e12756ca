"""Newton–Schulz orthogonalisation, the matrix function under Muon.

:func:`orthogonalize_via_newton_schulz` pushes every singular value of a matrix towards 1
with a few quintic iterations, keeping the singular vectors: an approximation of the polar
factor ``U Vᴴ`` of ``G = U S Vᴴ`` that costs matrix products only.
:class:`MuonDimensionNumbers` says how a weight of another rank (a convolution kernel,
attention heads) forms the matrices it is applied to. The transforms built on it are in
:mod:`funcopt.orthogonal`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import Params, StructureError
from funcopt.trees import keystr
from funcopt.validation import HyperParameterError, Kind, integer, is_traced, one_of

__all__ = ["MuonDimensionNumbers", "orthogonalize_via_newton_schulz"]

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


def _require_matrix(owner: str, shape: tuple[int, ...], dims: Any) -> None:
    """A ``ValueError`` naming ``owner`` unless a leaf of ``shape`` is a matrix or has
    dimension numbers saying how it forms one."""
    if len(shape) != 2 and dims is None:
        raise ValueError(
            f"{owner}: every leaf must be a matrix, got shape {shape}"
            " (weight_dimension_numbers says how a leaf of another rank forms one)"
        )


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
