r"""Sharpness and curvature: sharpness-aware minimisation (SAM) and Sophia.

:class:`sam` wraps an outer optimizer and an adversarial one, so that the outer step uses
the gradient at the worst nearby point, $\theta + \rho\, g / \lVert g\rVert$.
Sophia divides a momentum by an average of estimates of the Hessian's diagonal
(:class:`hutchinson_estimator_diag_hessian` averaged by :class:`hessian_diagonal_moment`,
floored by :class:`at_least`) and clips the ratio coordinate-wise.
"""

from __future__ import annotations

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
    as_transform,
    expect_state,
    new_count,
)
from funcopt.clipping import _KEY, _is_typed_key, _new_key, clip
from funcopt.combine import chain, precondition
from funcopt.lifting import Leafwise, coef, require_params, second_moment_like, up
from funcopt.preconditioners import debiased_momentum
from funcopt.scaling import (
    add_decayed_weights,
    normalize_by_update_norm,
    scale,
    scale_by_learning_rate,
)
from funcopt.trees import MASK, Mask, flatten, tree_map
from funcopt.validation import (
    BOOL,
    DECAY,
    DTYPE,
    NONNEGATIVE,
    RATE,
    hyperparameters,
    integer,
    interval,
)
from funcopt.values import hyper, static

__all__ = [
    "HessianMomentState", "HutchinsonState", "SAMState", "at_least", "hessian_diagonal_moment",
    "hutchinson_estimator_diag_hessian", "normalize", "sam", "scale_by_sophia", "sophia",
]  # fmt: skip


def normalize() -> GradientTransformation:
    r"""Divide the whole update by its global norm: $u = g / \lVert g\rVert$ (no ε).

    ``normalize_by_update_norm(1.0, eps=0.0)``, SAM's adversarial direction, as optax's.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.normalize()
        >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([-4.0])}, tx.init(None))[0]
        {'a': Array([0.6], dtype=float32), 'b': Array([-0.8], dtype=float32)}
    """
    return normalize_by_update_norm(1.0, eps=0.0)


class SAMState(NamedTuple):
    """State of :class:`sam`: the calls since the last outer step, the outer and adversarial
    optimizers' states, and the parameters at the start of the cycle (``None`` if opaque)."""

    steps_since_sync: jax.Array
    opt_state: OptState
    adv_state: OptState
    cache: Params | None


def _like(out: Updates, updates: Updates) -> Updates:
    """``out`` in the dtypes of ``updates`` (as both branches of a cycle must)."""
    return jax.tree.map(lambda o, g: jnp.asarray(o).astype(jnp.result_type(g)), out, updates)


class sam(GradientTransformation):
    r"""Sharpness-aware minimisation: adversarial steps up, then one outer step down.

    A cycle of ``k = sync_period`` calls starts at θ (kept in ``state.cache``). Calls
    ``1 … k − 1`` return the adversarial step negated (ascent:
    $\tilde\theta \leftarrow \tilde\theta - A(g)$); call ``k`` returns the outer step from
    θ on the gradient at $\tilde\theta$:

    $$ u = \theta - \tilde\theta + O(\nabla L(\tilde\theta)) $$

    Only outer steps change the outer state. With ``opaque_mode=True`` a whole cycle runs
    in one call, which needs ``grad_fn=f(params, i)`` (the gradient at the ``i``-th
    adversarial point) and returns the outer step. Equal to ``optax.contrib.sam``, except
    that ``sync_period=1`` is the outer optimizer itself (optax's undoes every other step
    there); extra arguments of ``update`` other than ``grad_fn`` reach both optimizers.

    Args:
        optimizer: the outer optimizer ``O`` (funcopt's or optax's).
        adv_optimizer: the adversarial optimizer ``A``, e.g.
            ``chain(normalize(), sgd(ρ))`` (whose step is ``−ρ g/‖g‖``, negated to ascend).
        sync_period: ``k ≥ 1``, calls per cycle (``k − 1`` adversarial steps).
        reset_state: reset the adversarial optimizer's state after each outer step.
        opaque_mode: run the adversarial steps inside ``update`` with ``grad_fn``, so the
            caller only ever sees outer steps (needed when the model has side effects
            per call, such as batch-norm statistics).
        batch_axis_name: in opaque mode, an axis name to ``pmean`` the adversarial
            gradients over (under ``pmap``/``shard_map``), or ``None``.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> loss = lambda p: jnp.sum(p**2)
        >>> tx = funcopt.sam(funcopt.sgd(0.1), funcopt.chain(funcopt.normalize(), funcopt.sgd(0.5)))
        >>> p = jnp.array([3.0, 4.0])
        >>> state = tx.init(p)
        >>> for _ in range(2):  # up to θ + 0.5 θ/‖θ‖ = (3.3, 4.4), then θ − 0.1 · 2 (3.3, 4.4)
        ...     u, state = tx.update(jax.grad(loss)(p), state, p)
        ...     p = funcopt.apply_updates(p, u)
        >>> p
        Array([2.34, 3.12], dtype=float32)

    Reference: Foret et al., Sharpness-Aware Minimization for Efficiently Improving
    Generalization, 2021.
    """

    State = SAMState

    optimizer: GradientTransformation
    adv_optimizer: GradientTransformation
    sync_period: int = static(2, integer(1))
    reset_state: bool = static(True, BOOL)
    opaque_mode: bool = static(False, BOOL)
    batch_axis_name: Any = static(None)  # an axis name (or names) of pmap/shard_map

    def check(self) -> None:
        object.__setattr__(self, "optimizer", as_transform(self.optimizer, "sam: optimizer"))
        adv = as_transform(self.adv_optimizer, "sam: adv_optimizer")
        object.__setattr__(self, "adv_optimizer", adv)

    def init_state(self, params: Params) -> OptState:
        return SAMState(
            steps_since_sync=new_count(),
            opt_state=self.optimizer.init(params),
            adv_state=self.adv_optimizer.init(params),
            cache=None if self.opaque_mode else jax.tree.map(jnp.copy, params),
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        params = require_params(self, params)
        grad_fn = extra.pop("grad_fn", None)
        if self.opaque_mode:
            return self._opaque(updates, state, params, grad_fn, **extra)
        first = state.steps_since_sync == 0
        last = state.steps_since_sync == self.sync_period - 1
        cache = jax.tree.map(lambda p, c: jnp.where(first, p, c), params, state.cache)

        def outer() -> tuple[Updates, OptState, OptState]:
            u, opt_state = self.optimizer.update(updates, state.opt_state, cache, **extra)
            out = jax.tree.map(lambda c, p, u: c - p + u, cache, params, u)  # θ − θ̃ + O(g)
            reset = self.adv_optimizer.init(params) if self.reset_state else state.adv_state
            return _like(out, updates), opt_state, reset

        def adversary() -> tuple[Updates, OptState, OptState]:
            a, adv_state = self.adv_optimizer.update(updates, state.adv_state, params, **extra)
            return _like(jax.tree.map(jnp.negative, a), updates), state.opt_state, adv_state

        out, opt_state, adv_state = jax.lax.cond(last, outer, adversary)
        steps = (state.steps_since_sync + 1) % self.sync_period
        return out, SAMState(steps, opt_state, adv_state, cache)

    def _opaque(
        self, updates: Updates, state: SAMState, params: Params, grad_fn: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        if grad_fn is None:
            raise ValueError(
                "sam with opaque_mode=True needs grad_fn: call update(grads, state, params, "
                "grad_fn=f) with f(params, i) the gradient at the i-th adversarial point"
            )
        point, g, adv_state = params, updates, state.adv_state
        for i in range(self.sync_period - 1):
            a, adv_state = self.adv_optimizer.update(g, adv_state, point, **extra)
            point = jax.tree.map(lambda p, a: (up(p) - a).astype(p.dtype), point, a)
            g = grad_fn(point, i)
            if self.batch_axis_name is not None:
                g = jax.lax.pmean(g, axis_name=self.batch_axis_name)
        if self.reset_state:
            adv_state = self.adv_optimizer.init(params)
        out, opt_state = self.optimizer.update(g, state.opt_state, params, **extra)
        return out, SAMState(new_count(), opt_state, adv_state, None)


class HutchinsonState(NamedTuple):
    """State of :class:`hutchinson_estimator_diag_hessian`: the PRNG key of the next draw."""

    key: jax.Array


class hutchinson_estimator_diag_hessian(GradientTransformation):
    r"""Hutchinson's estimate of the Hessian's diagonal: $\hat h = z \odot \nabla^2 f(\theta)\, z$.

    With Rademacher signs $z_i = \pm 1$, $\mathbb E[z \odot H z] = \operatorname{diag} H$
    (one forward-over-reverse pass). The updates are ignored; ``update`` needs the params
    and ``obj_fn=f``, the loss as a function of the params alone. The draws are optax's
    with the same key (split in two per call, then one key per leaf); each leaf's signs
    are in its own dtype.

    Args:
        random_seed: a PRNG key (typed, or a raw ``uint32[2]``) or an integer seed;
            ``None`` means seed 0. The state keeps a typed key typed and holds a raw
            ``uint32[2]`` key otherwise, as optax's does (a raw key converts to NumPy, so
            such a state can be compared and saved like any other).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> f = lambda p: jnp.sum(jnp.array([1.0, 2.0, 3.0]) * p**2)  # diag H = (2, 4, 6)
        >>> tx = funcopt.hutchinson_estimator_diag_hessian()
        >>> p = jnp.zeros(3)
        >>> tx.update(p, tx.init(p), p, obj_fn=f)[0]  # exact for a diagonal Hessian
        Array([2., 4., 6.], dtype=float32)

    Reference: Hutchinson, A Stochastic Estimator of the Trace of the Influence Matrix
    for Laplacian Smoothing Splines, 1990.
    """

    State = HutchinsonState

    random_seed: Any = static(None, _KEY)

    def init_state(self, params: Params) -> OptState:
        seed = self.random_seed
        if _is_typed_key(seed):
            return HutchinsonState(key=_new_key(seed))
        return HutchinsonState(key=jax.random.key_data(_new_key(seed)))

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        params = require_params(self, params)
        obj_fn = extra.get("obj_fn")
        if obj_fn is None:
            raise ValueError(
                "hutchinson_estimator_diag_hessian needs obj_fn: call update(grads, state, "
                "params, obj_fn=f) with f(params) the scalar loss"
            )
        key, draw = jax.random.split(state.key)
        leaves, treedef = flatten(params)
        keys = jax.random.split(draw, len(leaves))

        def sign(k: jax.Array, p: jax.Array) -> jax.Array:  # ±1, in the leaf's dtype
            return jax.random.rademacher(k, jnp.shape(p), jnp.float32).astype(jnp.result_type(p))

        signs = treedef.unflatten(list(map(sign, keys, leaves)))
        hvp = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        return jax.tree.map(lambda h, z: h * z, hvp, signs), HutchinsonState(key)


_HUTCHINSON = hutchinson_estimator_diag_hessian()


class HessianMomentState(NamedTuple):
    """State of :class:`hessian_diagonal_moment`: the average ``nu`` of the Hessian-diagonal
    estimates, and the estimator's state."""

    nu: Updates
    hessian_fn_state: OptState


class hessian_diagonal_moment(GradientTransformation):
    r"""An exponential average of Hessian-diagonal estimates, refreshed every ``k`` steps.

    $$ u_t = h_{t-1}, \qquad h_t = \begin{cases} \beta\, h_{t-1} + (1 - \beta)\, \hat h_t
       & (t - 1) \bmod k = 0 \\ h_{t-1} & \text{otherwise} \end{cases}, \qquad h_0 = 0 $$

    with $\hat h_t$ the output of ``hessian_diagonal_fn`` (given the gradient, the params and
    the extra arguments; run on refresh steps only). The output is the average *before*
    the refresh, as in optax's and Levanter's Sophia. ``h`` is kept in at least float32.

    Args:
        decay: β in ``[0, 1)`` (per refresh: per step it is ``1 − (1 − β)/k``).
        update_interval: ``k ≥ 1``, steps between refreshes.
        hessian_diagonal_fn: the estimator (funcopt's or optax's): any transform whose
            output is an estimate of the Hessian's diagonal.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.hessian_diagonal_moment(0.5, 2, hessian_diagonal_fn=funcopt.scale(4.0))
        >>> state = tx.init(jnp.zeros(1))
        >>> for _ in range(3):  # h: 0 → 2 (refresh), 2, → 0.5 · 2 + 0.5 · 4 = 3 (refresh)
        ...     u, state = tx.update(jnp.ones(1), state, jnp.zeros(1))
        >>> u, state.inner_state.nu
        (Array([2.], dtype=float32), Array([3.], dtype=float32))
    """

    State = HessianMomentState

    decay: float = hyper(DECAY, 0.99)
    update_interval: int = static(10, integer(1))
    hessian_diagonal_fn: GradientTransformation = _HUTCHINSON

    reads_count = True

    def check(self) -> None:
        fn = as_transform(self.hessian_diagonal_fn, "hessian_diagonal_fn")
        object.__setattr__(self, "hessian_diagonal_fn", fn)

    def init_state(self, params: Params) -> OptState:
        return HessianMomentState(
            nu=jax.tree.map(second_moment_like, params),
            hessian_fn_state=self.hessian_diagonal_fn.init(params),
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        params = require_params(self, params)

        def refresh(fn_state: OptState, nu: Updates) -> tuple[OptState, Updates]:
            h, fn_state = self.hessian_diagonal_fn.update(updates, fn_state, params, **extra)

            def average(h: jax.Array, n: jax.Array) -> jax.Array:
                b = coef(self.decay, up(n))
                return (b * up(n) + (1 - b) * up(h)).astype(n.dtype)

            return fn_state, tree_map(average, h, nu, names=("estimate", "state.nu"))

        due = (count - 1) % self.update_interval == 0
        fn_state, nu = jax.lax.cond(
            due, refresh, lambda s, n: (s, n), state.hessian_fn_state, state.nu
        )
        return jax.tree.map(up, state.nu), HessianMomentState(nu, fn_state)


class at_least(Leafwise):
    r"""Raise every coordinate to a floor: $u = \max(g, \epsilon)$.

    Args:
        minimum: ε, the floor (any finite number).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.at_least(0.5)
        >>> tx.update(jnp.array([-1.0, 0.2, 3.0]), tx.init(None))[0]
        Array([0.5, 0.5, 3. ], dtype=float32)
    """

    minimum: float = hyper(interval(), 0.0)

    def leaf(self, g: jax.Array) -> jax.Array:
        return jnp.maximum(g, coef(self.minimum, g))


class _report_win_rate(GradientTransformation):
    """Print, every ``every`` steps, the fraction of coordinates with ``|u| < threshold``
    (Sophia's "win rate"); the updates pass through."""

    threshold: float = hyper(NONNEGATIVE, 1.0)
    every: int = static(1, integer(1))

    reads_count = True

    def init_state(self, params: Params) -> OptState:
        return EmptyState()

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        leaves = jax.tree.leaves(updates)
        rate = sum(jnp.sum(jnp.abs(u) < self.threshold) for u in leaves) / max(
            sum(jnp.size(u) for u in leaves), 1
        )
        show = lambda: jax.debug.print("Sophia optimizer win rate: {}", rate)
        jax.lax.cond(count % self.every == 0, show, lambda: None)
        return updates, state


_SOPHIA = dict(
    b1=DECAY, b2=DECAY, eps=NONNEGATIVE, gamma=NONNEGATIVE, mu_dtype=DTYPE, verbose=BOOL,
    clip_threshold=interval(0.0, optional=True), update_interval=integer(1),
    print_win_rate_every_n_steps=integer(0),
)  # fmt: skip


@hyperparameters(**_SOPHIA)
def scale_by_sophia(
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: Any = _HUTCHINSON,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformation:
    r"""Sophia's direction: a momentum over a floored Hessian estimate, clipped.

    $$ u_t = \operatorname{clip}\!\left(\frac{\hat m_t}{\max(\gamma\, h_{t-1}, \epsilon)},
       \rho\right) $$

    with $\hat m$ Adam's momentum and $h$ from :class:`hessian_diagonal_moment`:
    ``precondition(debiased_momentum(β₁), chain(hessian_diagonal_moment(β₂, k, estimator),
    scale(γ), at_least(ε)), root=False)``, then ``clip(ρ)``. As optax's (with ``mu_dtype``,
    m̂ is taken from the stored ``m``, as in every funcopt momentum).

    Args:
        b1: β₁ in ``[0, 1)``, the momentum's decay.
        b2: β₂ in ``[0, 1)``, the Hessian average's decay per refresh.
        eps: ε ≥ 0, the floor of the denominator.
        gamma: γ ≥ 0, the scale of the Hessian estimate.
        clip_threshold: ρ ≥ 0, the largest coordinate of a step (``None``: no clipping).
        update_interval: ``k ≥ 1``, steps between Hessian estimates.
        hessian_diagonal_fn: the estimator; the default (Hutchinson's) needs ``obj_fn=``.
        mu_dtype: dtype ``m`` is stored in.
        verbose: print the fraction of unclipped coordinates (the "win rate", best in
            0.1–0.5 by the authors) every ``print_win_rate_every_n_steps`` ≥ 0 (0: never).
        print_win_rate_every_n_steps: see ``verbose``.

    Example:
        >>> import funcopt
        >>> tx = funcopt.scale_by_sophia(hessian_diagonal_fn=funcopt.identity())
        >>> tx.transforms[1]
        clip(max_delta=1.0)
    """
    curvature = chain(
        hessian_diagonal_moment(b2, update_interval, hessian_diagonal_fn),
        scale(gamma),  # γ h
        at_least(eps),  # max(γ h, ε)
    )
    parts: list[Any] = [precondition(debiased_momentum(b1, mu_dtype), curvature, root=False)]
    if verbose and clip_threshold is not None and print_win_rate_every_n_steps > 0:
        parts.append(_report_win_rate(clip_threshold, print_win_rate_every_n_steps))
    if clip_threshold is not None:
        parts.append(clip(clip_threshold))
    return chain(*parts)


@hyperparameters(learning_rate=RATE, weight_decay=RATE, weight_decay_mask=MASK, **_SOPHIA)
def sophia(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    weight_decay_mask: Mask | None = None,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: Any = _HUTCHINSON,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformation:
    r"""Sophia (Liu et al., 2023): a clipped step over a diagonal Hessian estimate.

    $$ \theta_{t+1} = \theta_t - \eta \left( \operatorname{clip}\!\left(
       \frac{\hat m_t}{\max(\gamma\, h_{t-1}, \epsilon)}, \rho\right) + \lambda\, \theta_t
       \right) $$

    ``chain(scale_by_sophia(...), add_decayed_weights(λ, weight_decay_mask),
    scale_by_learning_rate(η))``. With the default estimator (Sophia-H) ``update`` needs
    ``obj_fn=f``, the loss as a function of the params (``lambda p: loss(p, batch)``);
    every extra argument reaches the estimator. Equal to ``optax.contrib.sophia``.

    Args:
        weight_decay_mask: which leaves decay, as ``mask`` in the glossary.

    Other arguments: see :func:`scale_by_sophia` and the glossary.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> loss = lambda p: jnp.sum(jnp.array([1.0, 10.0]) * p**2)
        >>> tx = funcopt.sophia(0.1, weight_decay=0.0, update_interval=1)
        >>> p = jnp.array([1.0, 1.0])
        >>> state = tx.init(p)
        >>> for _ in range(3):
        ...     u, state = tx.update(jax.grad(loss)(p), state, p, obj_fn=loss)
        ...     p = funcopt.apply_updates(p, u)
        >>> [round(x, 4) for x in p.tolist()]  # clipped steps: −η ρ sign(m̂) while h is small
        [0.7, 0.7]

    Reference: Liu et al., Sophia: A Scalable Stochastic Second-order Optimizer for
    Language Model Pre-training, 2023.
    """
    direction = scale_by_sophia(
        b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn, mu_dtype,
        verbose, print_win_rate_every_n_steps,
    )  # fmt: skip
    return chain(
        direction,  # clip(m̂ / max(γ h, ε), ρ)
        add_decayed_weights(weight_decay, weight_decay_mask),  # + λ θ
        scale_by_learning_rate(learning_rate),  # θ ← θ − η ·
    )
