r"""Learning-rate-free methods: the step size is estimated online, from the run itself.

A good step size is about the distance ``D = ‖θ₀ − θ*‖`` to the solution over the size
of the gradients. ``D`` is unknown, but the gradients met so far, weighted by the steps
taken along them, give a lower bound of it; these methods grow a scalar estimate from
such a bound and step with it times a schedule that treats 1 as its peak:

- D-adaptation (:class:`dadapt_adamw`) estimates ``D`` from the weighted sum of the
  gradients ``s`` and each gradient's inner product with it,
  $d_{t+1} = \max(d_t, \sum_k \gamma_k \langle g_k, s_{k-1}\rangle / \lVert s_t\rVert_1)$;
- Prodigy (:class:`prodigy`) improves the estimate: gradients weighted by ``d`` itself,
  against the distance travelled ``⟨g_k, θ₀ − θ_k⟩``, make ``d`` grow geometrically;
- Mechanic (:class:`mechanize`) wraps any optimizer and tunes the scale ``S`` of its
  accumulated updates online, ``θ_t = θ₀ + S_t Σ_k u_k``, betting on a few time scales.

The estimates are scalars of the whole tree (inner products and norms over all leaves):
each method is one transform keeping them in its state (optax's fields), in the params'
lowest precision, at least float32. Prodigy and Mechanic read ``θ₀ − θ_t``, which stays 0
while the steps are below the params' resolution (a tiny first estimate times a small
learning rate, in float32): then the estimate does not grow, as in optax.
"""

from __future__ import annotations

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
    safe_increment,
    store,
)
from funcopt.clipping import global_norm
from funcopt.lifting import (
    abs2,
    compute_dtype,
    moment_like,
    real_dtype,
    require_params,
    second_moment_like,
    up,
)
from funcopt.trees import check_float_leaves, check_shapes, flatten, flatten_like
from funcopt.validation import (
    BOOL,
    DECAY,
    NONNEGATIVE,
    POSITIVE,
    RATE,
    HyperParameterError,
    Kind,
    integer,
    interval,
)
from funcopt.values import hyper, static

__all__ = [
    "DAdaptAdamWState",
    "MechanicState",
    "ProdigyState",
    "dadapt_adamw",
    "mechanize",
    "prodigy",
]


def _check_betas(name: str, value: Any) -> Any:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        shown = f"an array of shape {value.shape}" if hasattr(value, "shape") else repr(value)
        raise HyperParameterError(f"{name} must be a pair (b1, b2), got {name}={shown}")
    return tuple(DECAY(f"{name}[{i}]", b) for i, b in enumerate(value))


_BETAS = Kind(_check_betas, "a pair (b1, b2) of numbers in [0, 1)")  # as optax gives them


def _scalar_dtype(params: Params) -> Any:
    """The estimates' dtype: the params' lowest precision, at least float32 (optax's is
    the lowest itself, where bfloat16 would stall a running sum)."""
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    return real_dtype(min(dtypes, key=lambda d: d.itemsize)) if dtypes else jnp.float32


def _as(c: Any, x: jax.Array) -> Any:
    """A scalar ready to multiply ``x``: Python numbers stay weak, arrays take x's dtype."""
    return c if isinstance(c, int | float) else jnp.asarray(c).astype(x.dtype)


def _inner(a: jax.Array, b: jax.Array) -> jax.Array:
    """``Re ⟨a, b⟩ = Re Σ conj(a) b``: real, also for complex leaves."""
    return jnp.sum(jnp.real(jnp.conj(a) * b)) if jnp.iscomplexobj(a) else jnp.sum(a * b)


def _total(parts: list[jax.Array], dtype: Any) -> jax.Array:
    """The sum of per-leaf scalars in ``dtype`` (0 for no leaves)."""
    return sum((x.astype(dtype) for x in parts), jnp.zeros([], dtype))


def _adam_rate(d: jax.Array, learning_rate: Any, count: jax.Array, betas: Any) -> jax.Array:
    """``γ_t = d η_t √(1 − β₂ᵗ) / (1 − β₁ᵗ)``, with η read at ``count`` (0 at the first
    update) and ``t = count + 1``."""
    b1, b2 = betas
    lr = learning_rate(count) if callable(learning_rate) else learning_rate
    t = safe_increment(count).astype(d.dtype)
    correction = jnp.sqrt(1 - b2**t) / (1 - b1**t)
    return (d * jnp.asarray(lr, d.dtype) * correction).astype(d.dtype)


def _grown(d: jax.Array, numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``max(d, numerator / denominator)``; ``d`` itself while the denominator is 0 (no
    gradient yet, or a zero learning rate: optax's estimate becomes NaN there)."""
    safe = jnp.where(denominator > 0, denominator, 1)
    return jnp.where(denominator > 0, jnp.maximum(d, numerator / safe), d)


def _leaves(updates: Updates, trees: dict[str, Any]) -> tuple[Any, list[tuple[Any, ...]]]:
    """Per leaf of ``updates``, it and the leaves of ``trees`` there (shapes checked)."""
    g, treedef = flatten(updates)
    others = [flatten_like(treedef, t, updates, ("updates", n)) for n, t in trees.items()]
    check_shapes(g, treedef, others, ("updates", *trees))
    return treedef, list(zip(g, *others, strict=True))


def _unzip(rows: list[tuple[Any, ...]], n: int) -> list[list[Any]]:
    """Per-leaf tuples of ``n`` results as ``n`` lists of leaves."""
    return [[row[i] for row in rows] for i in range(n)]


def _copy(p: Any) -> jax.Array:
    """A copy of a parameter leaf in its own buffer (so params and state can be donated)."""
    return jnp.array(p, copy=True)


def _at_least_f32(p: jax.Array) -> jax.Array:
    """Zeros for a slow sum of gradients: at least float32, as a second moment (a change
    of 1 − √β₂ is below bfloat16's resolution), complex kept."""
    return moment_like(p, compute_dtype(jnp.result_type(p)))


def _adam_sums(params: Params) -> dict[str, Any]:
    """The parameter-sized buffers D-Adaptation's and Prodigy's Adam keep: ``m``, ``v``
    and the weighted sum of gradients ``s`` (at least float32)."""
    return {
        "exp_avg": jax.tree.map(moment_like, params),
        "exp_avg_sq": jax.tree.map(second_moment_like, params),
        "grad_sum": jax.tree.map(_at_least_f32, params),
    }


class DAdaptAdamWState(NamedTuple):
    """State of :class:`dadapt_adamw` (optax's fields): per leaf ``m``, ``v`` and ``s``;
    the estimate ``d`` (``estim_lr``), the numerator ``r`` and the count."""

    exp_avg: Updates
    exp_avg_sq: Updates
    grad_sum: Updates
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count


class dadapt_adamw(GradientTransformation):
    r"""D-Adapt AdamW: AdamW whose step size is the distance estimate ``d`` times η.

    With $\gamma_t = d_t \eta_t \sqrt{1-\beta_2^t} / (1-\beta_1^t)$ and
    $\beta = \sqrt{\beta_2}$:

    $$ r_t = \beta r_{t-1} + (1-\beta)\,\gamma_t
             \Big\langle g_t, \frac{s_{t-1}}{\sqrt{v_{t-1}}+\epsilon}\Big\rangle,\quad
       s_t = \beta s_{t-1} + (1-\beta)\,\gamma_t g_t,\quad
       d_{t+1} = \max\Big(d_t, \frac{r_t}{(1-\beta)\lVert s_t\rVert_1}\Big) $$

    $$ m_t = \beta_1 m_{t-1} + (1-\beta_1)\,\gamma_t g_t,\quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2)\,|g_t|^2,\quad
       u_t = -\frac{m_t}{\sqrt{v_t}+\epsilon} - \lambda \gamma_t \theta_t $$

    from ``d₁ = estim_lr0``; η is read at the step count from 0. Equal to
    ``optax.contrib.dadapt_adamw``, except that ``d`` is kept while ``‖s‖₁ = 0`` (optax's
    is NaN: at a zero gradient or a zero η), complex leaves have real inner products and
    ``|g|²``, ``s`` is kept in at least float32, and ``ε > 0`` (ε = 0 gives 0 / 0).

    Args:
        learning_rate: η ≥ 0, a factor on the estimated rate: a number, or a schedule
            peaking at 1 (e.g. a short warm-up, then a linear decay to 0).
        betas: (β₁, β₂), the decays of ``m`` and ``v``, each in ``[0, 1)``.
        eps: ε > 0 outside the root.
        estim_lr0: ``d₁`` > 0, the first (under-)estimate of the step size.
        weight_decay: λ ≥ 0, decoupled, scaled by ``γ_t``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.dadapt_adamw(estim_lr0=1e-3)
        >>> p = jnp.array([1.0, -2.0])  # on ‖θ‖² / 2, the distance to θ* = 0 is √5 ≈ 2.24
        >>> state = tx.init(p)
        >>> for _ in range(20):
        ...     u, state = tx.update(p, state, p)  # the gradient is θ
        ...     p = funcopt.apply_updates(p, u)
        >>> round(state.estim_lr.item(), 2)  # d grew from 1e-3 to about that distance
        2.28

    Reference: Defazio and Mishchenko, Learning-Rate-Free Learning by D-Adaptation,
    ICML 2023.
    """

    learning_rate: ScalarOrSchedule = hyper(RATE, 1.0)
    betas: tuple[float, float] = hyper(_BETAS, (0.9, 0.999))
    eps: float = hyper(POSITIVE, 1e-8)
    estim_lr0: float = hyper(POSITIVE, 1e-6)
    weight_decay: float = hyper(NONNEGATIVE, 0.0)

    State = DAdaptAdamWState

    def init_state(self, params: Params) -> DAdaptAdamWState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)
        return DAdaptAdamWState(
            **_adam_sums(params),
            estim_lr=jnp.asarray(self.estim_lr0, dtype),
            numerator_weighted=jnp.zeros([], dtype),
            count=jnp.zeros([], jnp.int32),
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, DAdaptAdamWState]:
        params = require_params(self, params)
        expect_state(self, state, DAdaptAdamWState)
        check_float_leaves(updates, "updates")
        beta = self.betas[1] ** 0.5
        d = state.estim_lr
        gamma = _adam_rate(d, self.learning_rate, state.count, self.betas)
        trees = {"state.exp_avg": state.exp_avg, "state.exp_avg_sq": state.exp_avg_sq}
        trees |= {"state.grad_sum": state.grad_sum, "params": params}
        treedef, leaves = _leaves(updates, trees)
        out, new, inners, norms = _unzip([self._leaf(gamma, *xs) for xs in leaves], 4)
        r = beta * state.numerator_weighted + (1 - beta) * gamma * _total(inners, d.dtype)
        d_new = _grown(d, r, (1 - beta) * _total(norms, d.dtype))
        m, v, s = (treedef.unflatten(x) for x in _unzip(new, 3))
        count = safe_increment(state.count)
        return treedef.unflatten(out), DAdaptAdamWState(m, v, s, d_new, r, count)

    def _leaf(self, gamma: jax.Array, *leaves: jax.Array) -> tuple[Any, ...]:
        """One leaf: its step, its new (m, v, s), and its parts of r and of ‖s‖₁."""
        (b1, b2), beta = self.betas, self.betas[1] ** 0.5
        _, m0, v0, s0, _ = leaves
        g, m, v, s, p = (up(x) for x in leaves)
        lr = _as(gamma, g)
        root = (jnp.sqrt(v) + _as(self.eps, v)).astype(g.dtype)  # √v + ε, before this step
        inner = _inner(g, s / root)
        m_st = store(b1 * m + (1 - b1) * lr * g, m0.dtype)
        v_st = store(b2 * v + (1 - b2) * abs2(g), v0.dtype)
        s_st = store(beta * s + (1 - beta) * lr * g, s0.dtype)
        root = (jnp.sqrt(up(v_st)) + _as(self.eps, v)).astype(g.dtype)
        u = -self.weight_decay * _as(gamma, p) * p - up(m_st) / root
        return u, (m_st, v_st, s_st), inner, jnp.sum(jnp.abs(up(s_st)))


class ProdigyState(NamedTuple):
    """State of :class:`prodigy` (optax's fields): per leaf ``m``, ``v``, ``s`` and ``θ₁``;
    the estimate ``d`` (``estim_lr``), the numerator ``r`` and the count."""

    exp_avg: Updates
    exp_avg_sq: Updates
    grad_sum: Updates
    params0: Params
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count


class prodigy(GradientTransformation):
    r"""Prodigy: D-adaptation with gradients weighted by the estimate, for a faster ``d``.

    With $\gamma_t = d_t \eta_t \sqrt{1-\beta_2^t} / (1-\beta_1^t)$ and $w_t = \gamma_t$
    ($w_t = d_t$ with ``safeguard_warmup``):

    $$ r_t = \beta_3 r_{t-1} + \frac{d_t}{d_1}\,\gamma_t
             \langle g_t, \theta_1 - \theta_t\rangle,\quad
       s_t = \beta_3 s_{t-1} + \frac{d_t}{d_1}\, w_t\, g_t,\quad
       d_{t+1} = \max\Big(d_t, c\,\frac{r_t}{\lVert s_t\rVert_1}\Big) $$

    $$ m_t = \beta_1 m_{t-1} + (1-\beta_1)\, d_t g_t,\quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2)\, d_t^2 |g_t|^2,\quad
       u_t = -\gamma_t \Big(\frac{m_t}{\sqrt{v_t} + d_{t+1}\epsilon} + \lambda\theta_t\Big) $$

    from ``d₁ = estim_lr0`` and the params ``θ₁`` given to ``init``; η is read at the
    step count from 0. Equal to ``optax.contrib.prodigy``, with the differences listed
    in :class:`dadapt_adamw`.

    Args:
        learning_rate: η ≥ 0, a factor on the estimated rate (a schedule peaking at 1).
        betas: (β₁, β₂), the decays of ``m`` and ``v``, each in ``[0, 1)``.
        beta3: β₃ in ``[0, 1)``, the decay of ``r`` and ``s`` (``None``: √β₂).
        eps: ε > 0, times ``d``, outside the root.
        estim_lr0: ``d₁`` > 0, the first (under-)estimate of the step size.
        estim_lr_coef: ``c`` > 0, a factor on each new estimate.
        weight_decay: λ ≥ 0, decoupled, scaled by ``γ_t``.
        safeguard_warmup: weight ``s`` by ``d`` instead of ``γ``, so that a warm-up
            from a small η does not inflate the estimate.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.prodigy(estim_lr0=1e-3)
        >>> p = jnp.array([1.0, -2.0])  # on ‖θ‖² / 2, as in dadapt_adamw's example
        >>> state = tx.init(p)
        >>> for _ in range(20):
        ...     u, state = tx.update(p, state, p)
        ...     p = funcopt.apply_updates(p, u)
        >>> round(state.estim_lr.item(), 2)
        0.73

    Reference: Mishchenko and Defazio, Prodigy: An Expeditiously Adaptive
    Parameter-Free Learner, ICML 2024.
    """

    learning_rate: ScalarOrSchedule = hyper(RATE, 1.0)
    betas: tuple[float, float] = hyper(_BETAS, (0.9, 0.999))
    beta3: float | None = hyper(interval(0.0, 1.0, optional=True), None)
    eps: float = hyper(POSITIVE, 1e-8)
    estim_lr0: float = hyper(POSITIVE, 1e-6)
    estim_lr_coef: float = hyper(POSITIVE, 1.0)
    weight_decay: float = hyper(NONNEGATIVE, 0.0)
    safeguard_warmup: bool = static(False, BOOL)

    State = ProdigyState

    def init_state(self, params: Params) -> ProdigyState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)
        return ProdigyState(
            **_adam_sums(params),
            params0=jax.tree.map(_copy, params),
            estim_lr=jnp.asarray(self.estim_lr0, dtype),
            numerator_weighted=jnp.zeros([], dtype),
            count=jnp.zeros([], jnp.int32),
        )

    def _beta3(self) -> Any:
        return self.betas[1] ** 0.5 if self.beta3 is None else self.beta3

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, ProdigyState]:
        params = require_params(self, params)
        expect_state(self, state, ProdigyState)
        check_float_leaves(updates, "updates")
        d = state.estim_lr
        gamma = _adam_rate(d, self.learning_rate, state.count, self.betas)
        trees = {"state.exp_avg": state.exp_avg, "state.exp_avg_sq": state.exp_avg_sq}
        trees |= {"state.grad_sum": state.grad_sum, "state.params0": state.params0}
        treedef, leaves = _leaves(updates, {**trees, "params": params})
        new, inners, norms = _unzip([self._moments(d, gamma, *xs) for xs in leaves], 3)
        r = self._beta3() * state.numerator_weighted
        r = r + (d / self.estim_lr0) * gamma * _total(inners, d.dtype)
        d_new = _grown(d, self.estim_lr_coef * r, _total(norms, d.dtype))
        out = [self._step(gamma, d_new, n, xs) for n, xs in zip(new, leaves, strict=True)]
        m, v, s = (treedef.unflatten(x) for x in _unzip(new, 3))
        count = safe_increment(state.count)
        return treedef.unflatten(out), ProdigyState(m, v, s, state.params0, d_new, r, count)

    def _moments(self, d: jax.Array, gamma: jax.Array, *leaves: jax.Array) -> tuple[Any, ...]:
        """One leaf: its new (m, v, s), and its parts of r and of ‖s‖₁."""
        b1, b2 = self.betas
        _, m0, v0, s0, _, _ = leaves
        g, m, v, s, x0, p = (up(x) for x in leaves)
        dg = _as(d, g) * g
        weight = _as(d if self.safeguard_warmup else gamma, g) * dg / self.estim_lr0
        m_st = store(b1 * m + (1 - b1) * dg, m0.dtype)
        v_st = store(b2 * v + (1 - b2) * abs2(dg), v0.dtype)
        s_st = store(self._beta3() * s + weight, s0.dtype)
        return (m_st, v_st, s_st), _inner(g, x0 - p), jnp.sum(jnp.abs(up(s_st)))

    def _step(self, gamma: Any, d: Any, new: Any, leaves: Any) -> jax.Array:
        """One leaf's ``−γ (m / (√v + d ε) + λ θ)``, from its new ``(m, v, s)``."""
        m, v, p = up(new[0]), up(new[1]), up(leaves[-1])
        root = (jnp.sqrt(v) + _as(d, v) * self.eps).astype(m.dtype)
        return -self.weight_decay * _as(gamma, p) * p - _as(gamma, m) * m / root


class MechanicState(NamedTuple):
    """State of :class:`mechanize` (optax's fields): the base optimizer's state, the count,
    ``r``, ``m``, ``v`` and the scales ``s`` (one of each per β), and ``θ₁`` (``x0``)."""

    base_optimizer_state: OptState
    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    r: jax.Array
    m: jax.Array
    v: jax.Array
    s: jax.Array
    x0: Params


class mechanize(GradientTransformation):
    r"""Mechanic: learn the scale ``S`` of a base optimizer's accumulated updates online.

    With $\theta_t = \theta_1 + S_t \Delta_{t-1}$, where $\Delta$ sums the base
    optimizer's updates $u_t$ and $S = \sum_i s_i$ sums one scale per time scale
    $\beta_i = 1 - 10^{-i}$ ($i = 1 \dots n$), each step rates the scale by
    $h_t = \langle \tilde g_t, \Delta_{t-1}\rangle$, where
    $\tilde g_t = g_t + \lambda S_t \lVert g_t\rVert \theta_t / (\lVert\theta_t\rVert +
    \epsilon)$, and bets on it (the clip at $m_i$ before this step):

    $$ r_i \leftarrow \beta_i r_i - s_i \operatorname{clip}(h_t, \pm m_i),\quad
       m_i \leftarrow \max(\beta_i m_i, |h_t| + \epsilon),\quad
       v_i \leftarrow \beta_i^2 v_i + h_t^2,\quad
       s_i \leftarrow \frac{s_{init}\, m_i / n + \max(0, r_i)}{\sqrt{v_i} + \epsilon} $$

    $$ \Delta_t = \Delta_{t-1} + u_t,\qquad \theta_{t+1} = \theta_1 + S_{t+1} \Delta_t $$

    ``Δ`` is recomputed as ``(θ_t − θ₁) / (S_t + ε)``, as in optax. The base optimizer
    sees the raw gradients and extra arguments of ``update``, with its own learning rate
    (1, or a schedule peaking at 1). Equal to ``optax.contrib.mechanize``, except that
    ``h`` is real for complex leaves, ``θ₁`` has a buffer of its own, and ``ε > 0``.

    Args:
        base_optimizer: the transform whose updates are scaled, funcopt's or optax's.
        weight_decay: λ ≥ 0, Mechanic's own (not the base optimizer's) decay.
        eps: ε > 0.
        s_init: ``s_init`` > 0, the scale ``S`` of the first step.
        num_betas: ``n ≥ 1``, the number of time scales β.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.mechanize(funcopt.sgd(1.0))
        >>> p = jnp.array([1.0, -2.0])
        >>> u, state = tx.update(jnp.array([2.0, -1.0]), tx.init(p), p)
        >>> [round(x / 1e-6, 4) for x in u.tolist()]  # the first step: s_init times SGD's
        [-2.0, 1.0]

    Reference: Cutkosky, Defazio and Mehta, Mechanic: A Learning Rate Tuner, NeurIPS
    2023.
    """

    base_optimizer: GradientTransformation
    weight_decay: float = hyper(NONNEGATIVE, 1e-2)
    eps: float = hyper(POSITIVE, 1e-8)
    s_init: float = hyper(POSITIVE, 1e-6)
    num_betas: int = static(6, integer(1))

    State = MechanicState

    def check(self) -> None:
        tx = as_transform(self.base_optimizer, "mechanize: base_optimizer")
        object.__setattr__(self, "base_optimizer", tx)

    def init_state(self, params: Params) -> MechanicState:
        check_float_leaves(params)
        dtype, n = _scalar_dtype(params), self.num_betas
        r, m, v = (jnp.zeros(n, dtype) for _ in range(3))  # three buffers
        s, x0 = jnp.full(n, self.s_init, dtype), jax.tree.map(_copy, params)
        count = jnp.zeros([], jnp.int32)
        return MechanicState(self.base_optimizer.init(params), count, r, m, v, s, x0)

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, MechanicState]:
        params = require_params(self, params)
        expect_state(self, state, MechanicState)
        check_float_leaves(updates, "updates")
        tx = self.base_optimizer  # on the raw gradients
        base, base_state = tx.update(updates, state.base_optimizer_state, params, **extra)
        dtype, eps = state.s.dtype, self.eps
        trees = {"params": params, "state.x0": state.x0, "base optimizer's updates": base}
        treedef, leaves = _leaves(updates, trees)
        first = state.count == 0  # start from the params of the first update, as optax
        x0s = [jnp.where(first, x, x0).astype(jnp.result_type(x0)) for _, x, x0, _ in leaves]
        x0_t = treedef.unflatten(x0s)
        scale = jnp.sum(state.s)
        norms = global_norm(updates).astype(dtype), global_norm(params).astype(dtype)
        decay = self.weight_decay * scale * norms[0] / (norms[1] + eps)

        def delta(x: jax.Array, x0: jax.Array) -> jax.Array:  # −Δ_{t−1}
            return (up(x0) - up(x)) / _as(scale + eps, up(x))

        hs = [
            _inner(up(g) + _as(decay, up(x)) * up(x), delta(x, x0))
            for (g, x, _, _), x0 in zip(leaves, x0s, strict=True)
        ]
        r, m, v, s = self._bet(state, _total(hs, dtype))
        new_scale = jnp.sum(s)

        def step(x: Any, x0: Any, u: Any) -> jax.Array:  # (θ₁ − θ) − S (−Δ_{t−1} − u)
            x, x0 = up(x), up(x0)
            return (x0 - x) - _as(new_scale, x) * (delta(x, x0) - up(u).astype(x.dtype))

        out = [step(x, x0, u) for (_, x, _, u), x0 in zip(leaves, x0s, strict=True)]
        count = safe_increment(state.count)
        return treedef.unflatten(out), MechanicState(base_state, count, r, m, v, s, x0_t)

    def _bet(self, state: MechanicState, h: jax.Array) -> tuple[jax.Array, ...]:
        """The per-β statistics and scales after the reward ``h`` (in optax's signs)."""
        dtype, eps = state.s.dtype, self.eps
        betas = jnp.asarray([1.0 - 0.1**i for i in range(1, self.num_betas + 1)], dtype)
        m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
        v = betas**2 * state.v + h**2
        r = betas * state.r + jnp.clip(h, -state.m, state.m) * state.s
        wealth = (self.s_init / self.num_betas) * m + jnp.maximum(0, r)
        return r, m, v, wealth / (jnp.sqrt(v) + eps)
