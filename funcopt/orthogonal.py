"""Muon: orthogonalised momentum on the matrices, AdamW on every other leaf.

Muon replaces the momentum of a weight matrix by (an approximation of) the orthogonal
factor of its polar decomposition, computed with a few Newton–Schulz iterations
(:func:`~funcopt.orthogonalize_via_newton_schulz`, in :mod:`funcopt.newton_schulz`, with
:class:`~funcopt.MuonDimensionNumbers` for weights of other ranks), then rescales it by
the matrix's shape
(:class:`scale_by_shape`). :func:`muon` is a :class:`~funcopt.partition`: that chain on
the 2-D leaves, :func:`~funcopt.adamw` on the others, as ``optax.contrib.muon``, which it
matches. Complex matrices are orthogonalised with the conjugate transpose.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from funcopt.base import GradientTransformation, Params, ScalarOrSchedule
from funcopt.combine import chain
from funcopt.lifting import Leafwise
from funcopt.newton_schulz import (
    _NS_PRESETS,
    DIMS,
    NS_COEFFS,
    PRECONDITIONING,
    MuonDimensionNumbers,
    WeightDimensionNumbers,
    _fans,
    _leaf_dims,
    _require_matrix,
    orthogonalize_via_newton_schulz,
)
from funcopt.optimizers import adamw
from funcopt.preconditioners import debiased_momentum
from funcopt.scaling import add_decayed_weights, scale_by_learning_rate
from funcopt.trees import MASK, Mask, structure
from funcopt.validation import (
    BOOL,
    DECAY,
    DTYPE,
    NONNEGATIVE,
    RATE,
    HyperParameterError,
    hyperparameters,
    integer,
    interval,
)
from funcopt.values import _Static, hyper, static
from funcopt.wrappers import partition

__all__ = [
    "muon",
    "scale_by_muon",
    "scale_by_orthogonalization",
    "scale_by_shape",
]


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
        _require_matrix("scale_by_orthogonalization", g.shape, dims)
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
        _require_matrix("scale_by_shape", g.shape, dims)
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
        treedef = structure(params)
        per_leaf = _leaf_dims(self.spec, params) or []
        return treedef.unflatten(["adam" if o["dims"] is None else "muon" for o in per_leaf])


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
