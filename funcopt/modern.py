"""Two modern optimizers: Muon (orthogonalised momentum) and schedule-free AdamW.

Both match ``optax.contrib`` (``muon``, ``schedule_free_adamw``) numerically. Muon is a
composition: momentum, then :func:`scale_by_orthogonalization`, then the width scaling
of :func:`scale_by_shape`, on the matrices; :func:`funcopt.nadamw` on every other leaf.
Schedule-free is a wrapper (:func:`schedule_free`) around any base optimizer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt import schedules, wrappers
from funcopt.base import (
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Updates,
    cached_factory,
    chain,
    check_decays,
    check_nonnegative,
    check_range,
    safe_increment,
)
from funcopt.optimizers import _debiased_momentum, adamw, nadamw
from funcopt.primitives import (
    Mask,
    add_decayed_weights,
    coef,
    scale_by_learning_rate,
    scale_by_rms,
    store,
    up,
)
from funcopt.transforms import stateless

__all__ = [
    "ScheduleFreeState",
    "muon",
    "orthogonalize_via_newton_schulz",
    "scale_by_muon",
    "scale_by_orthogonalization",
    "scale_by_shape",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
]

_NS_PRESETS = {
    "standard": (3.4445, -4.7750, 2.0315),
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}


# ---- Muon -----------------------------------------------------------------------------


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: Any = _NS_PRESETS["standard"],
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: float = 1e-8,
) -> jax.Array:
    r"""Push the singular values of a matrix towards 1 with a quintic Newton–Schulz map.

    $$ X_0 = G / (\lVert G\rVert + \epsilon), \qquad
       X_{k+1} = a X_k + (b A_k + c A_k^2) X_k,\quad A_k = X_k X_k^\top $$

    ``ns_coeffs`` is one ``(a, b, c)`` used ``ns_steps`` times, or one triple per step.
    ``preconditioning`` picks the initial norm (``"frobenius"`` or ``"spectral"``).

    Args:
        x: the matrix ``G`` (2-D); a tall one is transposed for the iteration and back.
        ns_coeffs: one ``(a, b, c)`` triple, or an ``(n, 3)`` array of per-step triples
            (then all ``n`` are applied and ``ns_steps`` is ignored). The string presets
            are resolved by :func:`scale_by_orthogonalization`, not here.
        ns_steps: iterations ≥ 1 of a single triple.
        preconditioning: ``"frobenius"`` or ``"spectral"``, the norm ``G`` is divided by.
        eps: ε ≥ 0 added to that norm.

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
    if x.ndim != 2:
        raise ValueError(f"orthogonalize_via_newton_schulz needs a matrix, got shape {x.shape}")
    coeffs = jnp.asarray(ns_coeffs, x.dtype)
    if coeffs.ndim == 1:
        coeffs = jnp.broadcast_to(coeffs, (ns_steps, 3))
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    norm = jnp.linalg.norm(x, ord={"frobenius": "fro", "spectral": 2}[preconditioning])
    x = x / (norm + jnp.asarray(eps, x.dtype))

    def step(x: jax.Array, c: jax.Array) -> tuple[jax.Array, None]:
        a = x @ x.T
        return c[0] * x + (c[1] * a + c[2] * a @ a) @ x, None

    x = jax.lax.scan(step, x, coeffs, unroll=True)[0]
    return x.T if transposed else x


@cached_factory
def scale_by_orthogonalization(
    ns_coeffs: Any = _NS_PRESETS["standard"],
    ns_steps: int = 5,
    eps: float = 1e-8,
    preconditioning: str = "frobenius",
    adaptive: bool = False,
) -> GradientTransformation:
    r"""Replace each matrix by its Newton–Schulz orthogonalisation :math:`O(G)`.

    $$ u_t = O(g_t), \qquad \text{or, with ``adaptive``,}\quad
       u_t = \langle g_t, O(g_t)\rangle\, O(g_t) $$

    Every leaf must be a matrix (see :func:`orthogonalize_via_newton_schulz`).

    Args:
        ns_coeffs: ``(a, b, c)`` or a tuple of one triple per step, or ``"standard"`` /
            ``"dion"``.
        ns_steps: iterations ≥ 1 (with per-step triples, the last ``ns_steps`` are used).
        eps: ε ≥ 0 added to the initial norm.
        preconditioning: ``"frobenius"`` or ``"spectral"`` (optax's ``"aol"`` and
            ``"schatten"`` are not provided).
        adaptive: scale by the dual norm ``⟨g, O(g)⟩`` (Pethick et al., 2024).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> g = {"w": jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])}
        >>> tx = funcopt.scale_by_orthogonalization("dion")
        >>> tx.update(g, tx.init(g))[0]["w"].round(1)  # singular values 3, 1 → 1, 1
        Array([[1., 0.],
               [0., 1.],
               [0., 0.]], dtype=float32)
    """
    coeffs = _NS_PRESETS[ns_coeffs] if isinstance(ns_coeffs, str) else ns_coeffs
    shape = jnp.shape(jnp.asarray(coeffs))
    if len(shape) not in (1, 2) or shape[-1] != 3:
        raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got ns_coeffs={ns_coeffs!r}")
    if len(shape) == 2:
        if shape[0] < ns_steps:
            raise ValueError(f"ns_coeffs has {shape[0]} triples, fewer than ns_steps={ns_steps}")
        coeffs = coeffs[-ns_steps:]
    check_range("ns_steps", ns_steps, 1)
    check_nonnegative("eps", eps)
    if preconditioning not in ("frobenius", "spectral"):
        raise ValueError(
            "preconditioning must be 'frobenius' or 'spectral', "
            f"got preconditioning={preconditioning!r}"
        )

    def leaf(g: jax.Array) -> jax.Array:
        x = up(g)
        o = orthogonalize_via_newton_schulz(x, coeffs, ns_steps, preconditioning, eps)
        return store(jnp.sum(x * o) * o if adaptive else o, g.dtype)

    return stateless(leaf)


@cached_factory
def scale_by_shape(consistent_rms: float | None = None) -> GradientTransformation:
    r"""Muon's width scaling of an ``(n_in, n_out)`` matrix update.

    $$ u_t = \sqrt{\max(1, n_{out}/n_{in})}\; g_t \quad\text{or, with ``consistent_rms``
       } r:\quad u_t = r \sqrt{\max(n_{in}, n_{out})}\; g_t $$

    (the second gives updates of RMS ``r``, matching AdamW's, Liu et al. 2025). Every
    leaf must be a matrix.

    Args:
        consistent_rms: the target RMS ``r`` ≥ 0, or ``None`` for the first scaling.

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
    check_nonnegative("consistent_rms", consistent_rms if consistent_rms is not None else 0.0)

    def leaf(g: jax.Array) -> jax.Array:
        n_in, n_out = g.shape
        if consistent_rms is None:
            factor = max(1.0, n_out / n_in) ** 0.5
        else:
            factor = max(n_in, n_out) ** 0.5 * consistent_rms
        return store(up(g) * factor, g.dtype)

    return stateless(leaf)


@cached_factory
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
) -> GradientTransformation:
    r"""Muon's direction on matrices: orthogonalised bias-corrected (Nesterov) momentum.

    $$ u_t = O(\hat m_t), \qquad \hat m_t = \beta \tfrac{m_t}{1-\beta^{t+1}} +
       (1-\beta)\tfrac{g_t}{1-\beta^t}\ \text{(Nesterov) or } \tfrac{m_t}{1-\beta^t} $$

    Args:
        ns_coeffs: Newton–Schulz coefficients, as in :func:`scale_by_orthogonalization`.
        ns_steps: Newton–Schulz iterations ≥ 1.
        beta: β in ``[0, 1)``, decay of the momentum ``m``.
        eps: ε ≥ 0 added to the norm before the Newton–Schulz iteration.
        mu_dtype: dtype ``m`` is stored in (default: the parameter's).
        nesterov: use the Nesterov look-ahead ``m̂`` (see :func:`nesterov_momentum`).
        adaptive: scale ``O(m̂)`` by ``⟨m̂, O(m̂)⟩``.
        preconditioning: ``"frobenius"`` or ``"spectral"``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> g = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> tx = funcopt.scale_by_muon()
        >>> u, state = tx.update(g, tx.init(g))
        >>> # the first m̂ is a multiple of g, and O ignores the scale
        >>> bool(jnp.allclose(u, funcopt.orthogonalize_via_newton_schulz(g), atol=1e-5))
        True
    """
    check_decays(beta=beta)
    return chain(
        _debiased_momentum(beta, mu_dtype, nesterov=nesterov),  # m̂
        scale_by_orthogonalization(ns_coeffs, ns_steps, eps, preconditioning, adaptive),  # O(m̂)
    )


def _muon_labels(params: Params) -> Any:
    """``"muon"`` for matrices, ``"adam"`` for every other leaf."""
    return jax.tree.map(lambda x: "muon" if jnp.ndim(x) == 2 else "adam", params)


@cached_factory
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
    consistent_rms: float | None = None,
) -> GradientTransformation:
    r"""Muon (Jordan et al., 2024): orthogonalised momentum on 2-D weights, AdamW elsewhere.

    For each matrix :math:`W` of shape ``(n_in, n_out)``:

    $$ W_{t+1} = W_t - \eta\big(s\, O(\hat m_t) + \lambda W_t\big), \qquad
       s = \sqrt{\max(1, n_{out}/n_{in})} $$

    with :math:`O` the Newton–Schulz orthogonalisation (:func:`scale_by_muon`); every
    other leaf follows ``nadamw(adam_learning_rate, adam_b1, adam_b2, eps, ...)`` (plain
    AdamW with ``nesterov=False``), as in ``optax.contrib.muon``, which it matches.
    Not provided: ``muon_weight_dimension_numbers`` (higher-rank weights) and the
    ``"aol"``/``"schatten"`` preconditionings.

    Args:
        learning_rate: η ≥ 0 of the matrices, a number or a schedule (also the other
            leaves' rate unless ``adam_learning_rate`` is given).
        ns_coeffs: Newton–Schulz coefficients, as in :func:`scale_by_orthogonalization`.
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
        adaptive: scale ``O(m̂)`` by ``⟨m̂, O(m̂)⟩`` (see :func:`scale_by_orthogonalization`).
        preconditioning: ``"frobenius"`` or ``"spectral"``.
        adam_b1: β₁ in ``[0, 1)`` of the AdamW on the other leaves.
        adam_b2: β₂ in ``[0, 1)`` of the AdamW on the other leaves.
        adam_eps_root: ε ≥ 0 inside the root of the AdamW on the other leaves.
        adam_weight_decay: λ ≥ 0 of the AdamW on the other leaves (no mask: all of them).
        adam_learning_rate: the other leaves' rate, a number or a schedule (default:
            ``learning_rate``).
        consistent_rms: ``None`` for the ``√max(1, n_out/n_in)`` scaling, or the target
            update RMS ``r`` ≥ 0 (see :func:`scale_by_shape`).

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
    check_decays(beta=beta, adam_b1=adam_b1, adam_b2=adam_b2)
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
        ),
        scale_by_shape(consistent_rms),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
    adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
    adam = (nadamw if nesterov else adamw)(
        adam_lr, adam_b1, adam_b2, eps, adam_eps_root, mu_dtype, adam_weight_decay
    )
    return wrappers.partition({"muon": matrices, "adam": adam}, _muon_labels)


# ---- schedule-free --------------------------------------------------------------------


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free`.

    Attributes:
        b1: the interpolation β (kept so evaluation parameters can be recovered).
        weight_sum: Σ of the averaging weights so far.
        step_count: the count the learning-rate schedule is read at (from 1).
        max_lr: the largest learning rate so far.
        base_optimizer_state: the wrapped optimizer's state.
        z: the base optimizer's iterate.
    """

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: OptState
    z: Params


def _lowest_float(params: Params) -> Any:
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    return min(dtypes, key=lambda d: d.itemsize) if dtypes else jnp.float32


@cached_factory
def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    r"""Schedule-free wrapper (Defazio et al., 2024): averaging replaces the LR schedule.

    The base optimizer steps ``z``; the model is evaluated at the average ``x`` and the
    gradient is taken at the interpolation ``y`` (the parameters this wrapper updates):

    $$ z_{t+1} = z_t + \Delta(g(y_t)),\quad
       c_{t+1} = \frac{\gamma_{max}^p}{\sum_{k \le t+1} \gamma_{max,k}^p},\quad
       x_{t+1} = (1-c_{t+1}) x_t + c_{t+1} z_{t+1},\quad
       y_{t+1} = \beta x_{t+1} + (1-\beta) z_{t+1} $$

    ``x`` is recomputed from ``y`` and ``z``; get it with :func:`schedule_free_eval_params`.

    Args:
        base_optimizer: the transform that steps ``z`` (with its own learning rate).
        learning_rate: the rate γ whose running maximum weights the average.
        b1: β in ``(0, 1)``, the interpolation between ``x`` and ``z``.
        weight_lr_power: ``p`` ≥ 0.
        state_dtype: dtype of ``z`` (default: the parameters').

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.schedule_free(funcopt.sgd(0.5), 0.5, b1=0.5)
        >>> y = jnp.array([1.0])
        >>> state = tx.init(y)
        >>> for _ in range(2):  # z: 1 → 0 → −1; x averages z_1, z_2; y = (x + z) / 2
        ...     u, state = tx.update(jnp.array([2.0]), state, y)
        ...     y = funcopt.apply_updates(y, u)
        >>> y, state.z, funcopt.schedule_free_eval_params(state, y)
        (Array([-0.75], dtype=float32), Array([-1.], dtype=float32), Array([-0.5], dtype=float32))

    Reference: Defazio et al., The Road Less Scheduled, 2024.
    """
    # x is recovered from y and z by dividing by β: β = 0 would give 0 / 0.
    check_range("b1", b1, 0.0, 1.0, low_inclusive=False)
    check_nonnegative("weight_lr_power", weight_lr_power)

    def init(params: Params) -> ScheduleFreeState:
        dtype = _lowest_float(params)
        z = jax.tree.map(lambda p: jnp.array(p, dtype=state_dtype or jnp.result_type(p)), params)
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update(
        updates: Updates, state: ScheduleFreeState, params: Params | None = None
    ) -> tuple[Updates, ScheduleFreeState]:
        if params is None:
            raise ValueError("schedule_free needs the current parameters (y)")
        dtype = state.max_lr.dtype
        lr = learning_rate(state.step_count) if callable(learning_rate) else learning_rate
        max_lr = jnp.maximum(state.max_lr, jnp.asarray(lr, dtype))
        weight = max_lr**weight_lr_power
        total = state.weight_sum + weight
        c = jnp.where(
            jnp.isnan(weight) | jnp.isnan(total),
            jnp.full(weight.shape, jnp.nan, dtype),
            jnp.nan_to_num(weight / total, nan=0.0, posinf=jnp.inf),
        )
        step, base_state = base_optimizer.update(updates, state.base_optimizer_state, params)
        z = jax.tree.map(lambda z, u: (z + u.astype(z.dtype)).astype(z.dtype), state.z, step)

        def leaf(y: jax.Array, z_old: jax.Array, z: jax.Array) -> jax.Array:
            z_old, z, ck = z_old.astype(y.dtype), z.astype(y.dtype), c.astype(y.dtype)
            x = (y - coef(1.0 - b1, y) * z_old) / coef(b1, y)  # recover x from y and z
            x = (1.0 - ck) * x + ck * z  # average in the new z
            return coef(b1, y) * x + coef(1.0 - b1, y) * z - y  # new y, as an update

        out = jax.tree.map(leaf, params, state.z, z)
        new_state = ScheduleFreeState(
            b1=state.b1,
            weight_sum=total,
            step_count=safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )
        return out, new_state

    return GradientTransformation(init, update)


def schedule_free_eval_params(state: OptState, params: Params) -> Params:
    r"""The averaged parameters ``x = (y − (1 − β) z) / β`` to evaluate a schedule-free model.

    Args:
        state: a :class:`ScheduleFreeState`, or any state containing exactly one (e.g.
            the state of a chain).
        params: the current (interpolated) parameters ``y``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.chain(funcopt.clip(1.0), funcopt.schedule_free_sgd(0.1, b1=0.5))
        >>> y = jnp.array([1.0, -2.0])
        >>> state = tx.init(y)
        >>> for _ in range(2):
        ...     u, state = tx.update(jnp.array([4.0, -4.0]), state, y)  # clipped to ±1
        ...     y = funcopt.apply_updates(y, u)
        >>> [round(v, 4) for v in funcopt.schedule_free_eval_params(state, y).tolist()]
        [0.85, -1.85]
    """
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, ScheduleFreeState))
        if isinstance(s, ScheduleFreeState)
    ]
    if len(found) != 1:
        raise ValueError(
            "schedule_free_eval_params needs a state holding one ScheduleFreeState, "
            f"found {len(found)}"
        )
    sf = found[0]
    return jax.tree.map(
        lambda y, z: (y - (1 - sf.b1.astype(y.dtype)) * z.astype(y.dtype)) / sf.b1.astype(y.dtype),
        params,
        sf.z,
    )


def _warmup(learning_rate: Any, warmup_steps: int | None) -> Any:
    if warmup_steps is None:
        return learning_rate
    return schedules.warmup_constant_schedule(0.0, learning_rate, warmup_steps)


@cached_factory
def schedule_free_adamw(
    learning_rate: float = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    r"""Schedule-free AdamW: :func:`schedule_free` around AdamW without momentum.

    $$ \Delta_t = -\gamma_t \Big(\frac{g_t}{\sqrt{\hat v_t} + \epsilon} + \lambda y_t\Big) $$

    The momentum lives in the interpolation ``b1``; ``warmup_steps`` ramps γ linearly
    from 0. Evaluate at :func:`schedule_free_eval_params`. Equal to
    ``optax.contrib.schedule_free_adamw``.

    Args:
        learning_rate: the peak γ ≥ 0.
        warmup_steps: steps ≥ 0 of linear warm-up from 0 (``None``: none). 0 gives
            γ = 0 throughout, as :func:`warmup_constant_schedule` does.
        b1: β in ``(0, 1)``, the interpolation between ``x`` and ``z``.
        b2: β₂ in ``[0, 1)``, decay of the second moment ``v``.
        eps: ε ≥ 0 added outside the root.
        weight_decay: λ ≥ 0, applied at ``y`` and multiplied by γ.
        weight_lr_power: ``p`` ≥ 0 of the averaging weights (see :func:`schedule_free`).
        state_dtype: dtype of ``z`` (default: the parameters').

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.schedule_free_adamw(1e-3, warmup_steps=100)
        >>> params = {"w": jnp.ones(3)}
        >>> state = tx.init(params)
        >>> x = funcopt.schedule_free_eval_params(state, params)
        >>> x["w"]  # before any step x = y = z
        Array([1., 1., 1.], dtype=float32)
        >>> tx = funcopt.schedule_free_adamw(0.1)
        >>> u, state = tx.update({"w": jnp.array([2.0, -4.0, 0.0])}, tx.init(params), params)
        >>> [round(v, 4) for v in funcopt.apply_updates(params, u)["w"].tolist()]  # 1 − γ sign(g)
        [0.9, 1.1, 1.0]
    """
    check_decays(b2=b2)  # b1 is checked by schedule_free, in (0, 1)
    lr = _warmup(learning_rate, warmup_steps)
    base = chain(
        scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),  # g / (sqrt(v̂) + ε)
        add_decayed_weights(weight_decay),  # + λ y
        scale_by_learning_rate(lr),  # −γ ·
    )
    return schedule_free(base, lr, b1, weight_lr_power, state_dtype)


@cached_factory
def schedule_free_sgd(
    learning_rate: float = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    r"""Schedule-free SGD: :func:`schedule_free` around $\Delta_t = -\gamma_t (g_t + \lambda
    y_t)$. Equal to ``optax.contrib.schedule_free_sgd``.

    Args:
        learning_rate: the peak γ ≥ 0.
        warmup_steps: steps ≥ 0 of linear warm-up from 0 (``None``: none). 0 gives
            γ = 0 throughout, as :func:`warmup_constant_schedule` does.
        b1: β in ``(0, 1)``, the interpolation between ``x`` and ``z``.
        weight_decay: λ ≥ 0, applied at ``y`` (``None``: no decay term at all).
        weight_lr_power: ``p`` ≥ 0 of the averaging weights (see :func:`schedule_free`).
        state_dtype: dtype of ``z`` (default: the parameters').

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.schedule_free_sgd(0.1, weight_decay=0.5)
        >>> y = jnp.array([1.0, -2.0])
        >>> u, state = tx.update(jnp.array([2.0, -4.0]), tx.init(y), y)
        >>> [round(v, 4) for v in funcopt.apply_updates(y, u).tolist()]  # y − γ (g + λ y)
        [0.75, -1.5]
    """
    lr = _warmup(learning_rate, warmup_steps)
    decay = add_decayed_weights(weight_decay) if weight_decay is not None else None
    base = scale_by_learning_rate(lr) if decay is None else chain(decay, scale_by_learning_rate(lr))
    return schedule_free(base, lr, b1, weight_lr_power, state_dtype)
