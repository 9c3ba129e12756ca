"""Which transforms funcopt's kernels compute, and with which scalars.

A kernel runs a step only where the transform is, by its structure, one the kernel
implements (a transform is a value: ``adam(1e-3)`` is a ``chain`` whose links can be read),
so that swapping the kernel in never changes what is computed. For each family this module
reads the plan out of the transform, computes the scalars of a step as funcopt's own
primitives compute them (so the kernel's float32 arithmetic is theirs), takes out of the
state the buffers the kernel updates and puts the new ones back, and writes the family's
equations in JAX (the kernels' derivatives, and the step of buffers too small to gain).

Families (``kind``, as ``enum Kind`` in ``funcopt/fused_adam.cc``): Adam and AdamW (the
one-pass kernel, for lone leaves and for packed buffers), and, for packed buffers whose
gradient arrives leaf by leaf, gradient descent (the chapter's GD and GDM, and ``sgd``
with heavy-ball or Nesterov momentum), Lion, RMSProp and AdaGrad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import CountState, OptState, safe_increment
from funcopt.combine import chain, identity, precondition
from funcopt.moments import (
    bias_correction,
    lion_momentum,
    scale_by_momentum,
    second_moment,
    sum_of_squares,
    trace,
)
from funcopt.scaling import add_decayed_weights, scale_by_learning_rate, scale_by_sign

__all__: list[str] = []

ADAM, ADAMW, SGD, MOMENTUM, NESTEROV, LION, RMSPROP, EMA, ADAGRAD = range(9)
"""The kernels' kinds, as ``enum Kind`` in ``fused_adam.cc``."""

_F32 = jnp.dtype(jnp.float32)


class AdamPlan(NamedTuple):
    """The hyper-parameters of an Adam or AdamW chain, as the kernel takes them.

    Attributes:
        direction: the ``precondition`` of bias-corrected moments (``scale_by_adam``).
        decay: the ``add_decayed_weights`` link, or ``None`` for Adam.
        rate: the ``scale_by_learning_rate`` link.
    """

    direction: precondition
    decay: add_decayed_weights | None
    rate: scale_by_learning_rate


def _debiased(tx: Any, moment: type) -> bool:
    """Whether ``tx`` is ``chain(moment(...), bias_correction(...))`` with default dtypes."""
    if type(tx) is not chain or len(tx.transforms) != 2:
        return False
    first: Any = tx.transforms[0]
    kinds = (type(first), type(tx.transforms[1]))
    if kinds != (moment, bias_correction):
        return False
    if moment is second_moment:
        return first.nu_dtype is None and _is_zero(first.initial_scale)
    return bool(first.mu_dtype is None)


def _is_zero(x: Any) -> bool:
    return isinstance(x, int | float) and x == 0


def adam_plan(tx: Any) -> AdamPlan | None:
    """``tx`` as the kernel's Adam, if it is ``adam``/``adamw`` (no mask, ``eps_root=0``,
    no ``mu_dtype``, no Nesterov) or the same chain written out; else ``None``."""
    if type(tx) is not chain or len(tx.transforms) not in (2, 3):
        return None
    direction, *middle, rate = tx.transforms
    if type(rate) is not scale_by_learning_rate or not rate.flip_sign:
        return None
    decay = middle[0] if middle else None
    if decay is not None and (type(decay) is not add_decayed_weights or decay.mask is not None):
        return None
    if type(direction) is not precondition or not direction.root:
        return None
    if not _is_zero(direction.eps_root):
        return None
    if not (
        _debiased(direction.numerator, scale_by_momentum)
        and _debiased(direction.denominator, second_moment)
    ):
        return None
    return AdamPlan(direction, decay, rate)


def _in_f32(x: Any) -> Any:
    """A hyper-parameter as funcopt's per-leaf equations see it for a float32 leaf: a Python
    number stays one (weakly typed), an array is cast to float32 first."""
    return x if isinstance(x, int | float) else jnp.asarray(x).astype(_F32)


def _at_step(hyper: Any, t: Any) -> Any:
    """A hyper-parameter's value at step ``t``: a schedule is read at ``t − 1``, the count
    before this step's increment, as the links read it."""
    return hyper(t - 1) if callable(hyper) else hyper


def coefficients(plan: AdamPlan, t: jax.Array) -> jax.Array:
    """The kernel's nine scalars of step ``t``, each computed as funcopt's primitives compute
    it (``scalars`` in the widest float, hyper-parameters in float32), so the kernel's
    arithmetic is theirs: ``[β₁, 1 − β₁, β₂, 1 − β₂, 1 − β₁ᵗ, 1 − β₂ᵗ, ε, λ, −η]``."""
    numerator: Any = plan.direction.numerator
    denominator: Any = plan.direction.denominator
    momentum, correct_m = numerator.transforms
    moment, correct_v = denominator.transforms
    wide = t.astype(jnp.result_type(float))
    b1, b2 = _in_f32(momentum.decay), _in_f32(moment.decay)
    lam = 0.0 if plan.decay is None else _at_step(plan.decay.weight_decay, t)
    values = [
        b1,
        1 - b1,
        b2,
        1 - b2,
        1 - correct_m.decay**wide,
        1 - correct_v.decay**wide,
        plan.direction.eps,
        lam,
        -_in_f32(_at_step(plan.rate.learning_rate, t)),
    ]
    return _stacked(values)


# ---- gradient descent, Lion, RMSProp, AdaGrad: packed buffers only ----------------------------


class SgdPlan(NamedTuple):
    """Gradient descent: ``gd(η)`` (the rate link alone), ``sgd(η)``, ``sgd(η, momentum=μ
    [, nesterov=True])`` (a ``trace``) or ``gdm(η, β)`` (a damped ``scale_by_momentum``).

    Attributes:
        momentum: the ``trace`` or ``scale_by_momentum`` link, or ``None``.
        rate: the ``scale_by_learning_rate`` link.
        lone: ``tx`` is the rate link itself (its state is the link's, not a chain's).
    """

    momentum: trace | scale_by_momentum | None
    rate: scale_by_learning_rate
    lone: bool = False


def sgd_plan(tx: Any) -> SgdPlan | None:
    """``tx`` as the kernel's gradient descent, if it is ``scale_by_learning_rate(η)`` or
    ``chain(identity() | trace(μ) | scale_by_momentum(β), scale_by_learning_rate(η))``
    with no ``mu_dtype``; else ``None``."""
    if type(tx) is scale_by_learning_rate:
        return SgdPlan(None, tx, lone=True) if tx.flip_sign else None
    if type(tx) is not chain or len(tx.transforms) != 2:
        return None
    links: Any = tx.transforms
    first, rate = links
    if type(rate) is not scale_by_learning_rate or not rate.flip_sign:
        return None
    if type(first) is identity:
        return SgdPlan(None, rate)
    if type(first) in (trace, scale_by_momentum) and first.mu_dtype is None:
        return SgdPlan(first, rate)
    return None


class LionPlan(NamedTuple):
    """``lion(η, b1, b2, weight_decay=λ)`` without a mask."""

    momentum: lion_momentum
    decay: add_decayed_weights
    rate: scale_by_learning_rate


def lion_plan(tx: Any) -> LionPlan | None:
    """``tx`` as the kernel's Lion, if it is ``chain(lion_momentum, scale_by_sign,
    add_decayed_weights (no mask), scale_by_learning_rate)`` with no ``mu_dtype``."""
    if type(tx) is not chain or len(tx.transforms) != 4:
        return None
    links: Any = tx.transforms
    momentum, sign, decay, rate = links
    kinds = (type(momentum), type(sign), type(decay), type(rate))
    if kinds != (lion_momentum, scale_by_sign, add_decayed_weights, scale_by_learning_rate):
        return None
    if momentum.mu_dtype is not None or decay.mask is not None or not rate.flip_sign:
        return None
    return LionPlan(momentum, decay, rate)


class RmspropPlan(NamedTuple):
    """``rmsprop(η, decay, eps[, eps_in_sqrt=False])`` (not centered, no momentum, no bias
    correction, ``v₀ = 0``) or ``adagrad(η, ...)``: the gradient over the root of an
    average (``second_moment``) or a sum (``sum_of_squares``) of its squares."""

    direction: precondition
    rate: scale_by_learning_rate


def rmsprop_plan(tx: Any) -> RmspropPlan | None:
    """``tx`` as the kernel's RMSProp or AdaGrad, if it is ``chain(precondition(identity(),
    second_moment(β) | sum_of_squares()), scale_by_learning_rate(η)[, identity()])`` with
    no ``nu_dtype`` and ``v₀ = 0`` for RMSProp."""
    if type(tx) is not chain or len(tx.transforms) not in (2, 3):
        return None
    links: Any = tx.transforms
    direction, rate, *tail = links
    if tail and type(tail[0]) is not identity:
        return None
    if type(rate) is not scale_by_learning_rate or not rate.flip_sign:
        return None
    if type(direction) is not precondition or not direction.root:
        return None
    moment: Any = direction.denominator
    if type(direction.numerator) is not identity:
        return None
    if type(moment) is sum_of_squares:
        return RmspropPlan(direction, rate)
    if type(moment) is not second_moment:
        return None
    if moment.nu_dtype is not None or not _is_zero(moment.initial_scale):
        return None
    return RmspropPlan(direction, rate)


# ---- a step of any family --------------------------------------------------------------------


class Step(NamedTuple):
    """One step of a kernel family, taken out of the transform's state.

    Attributes:
        kind: the kernel's kind.
        coef: its float32 scalars for this step.
        states: the state trees the kernel updates, in the kernel's order (each with the
            parameters' structure).
        rebuild: the new optimizer state, given the new state trees.
    """

    kind: int
    coef: jax.Array
    states: tuple[Any, ...]
    rebuild: Callable[[tuple[Any, ...]], OptState]


def _shared_count(state: tuple[Any, ...]) -> tuple[int | None, Any]:
    """The chain's step count: a chain of leafwise links keeps it in the first link that
    reads it (a schedule), and every later link reads that one. ``(index, t)`` with ``t``
    the count after this step, or ``(None, None)`` when no link counts."""
    for i, s in enumerate(state):
        if isinstance(s, CountState):
            return i, safe_increment(s.count)
    return None, None


def _stacked(values: list[Any]) -> jax.Array:
    return jnp.stack([jnp.asarray(v).astype(_F32) for v in values])


def _adam_step(plan: AdamPlan, state: Any) -> Step:
    first, *rest = state
    inner = first.inner_state
    (mu_state, c_m), (nu_state, c_v) = inner.numerator, inner.denominator
    t = safe_increment(first.count)

    def rebuild(new: tuple[Any, ...]) -> OptState:
        m, v = new
        done = inner._replace(
            numerator=(mu_state._replace(mu=m), c_m),
            denominator=(nu_state._replace(nu=v), c_v),
        )
        return (CountState(t, done), *rest)

    kind = ADAM if plan.decay is None else ADAMW
    return Step(kind, coefficients(plan, t), (mu_state.mu, nu_state.nu), rebuild)


def _links_step(
    state: tuple[Any, ...], hypers: tuple[Any, ...]
) -> tuple[list[Any], Callable[[tuple[Any, ...]], tuple[Any, ...]]]:
    """The values of a chain's scheduled ``hypers`` at this step (read at ``t − 1``, as
    the links read them), and the state with the shared count advanced."""
    at, t = _shared_count(state)
    if any(callable(h) for h in hypers) and at is None:  # pragma: no cover - by construction
        raise AssertionError("a scheduled link without a step count")
    values = [_at_step(h, t) for h in hypers]

    def advanced(links: tuple[Any, ...]) -> tuple[Any, ...]:
        if at is None:
            return links
        return (*links[:at], links[at]._replace(count=t), *links[at + 1 :])

    return values, advanced


def _sgd_step(plan: SgdPlan, state: Any) -> Step:
    links = (state,) if plan.lone else tuple(state)
    (eta,), advanced = _links_step(links, (plan.rate.learning_rate,))
    neg_eta = -_in_f32(eta)
    momentum = plan.momentum
    if momentum is None:
        done = advanced(links)
        return Step(SGD, _stacked([neg_eta]), (), lambda new: done[0] if plan.lone else done)
    first, *rest = links
    if isinstance(momentum, trace):  # m = μ m + g
        kind = NESTEROV if momentum.nesterov else MOMENTUM
        mu = _in_f32(momentum.decay)
        return Step(
            kind,
            _stacked([mu, neg_eta]),
            (first.trace,),
            lambda new: advanced((first._replace(trace=new[0]), *rest)),
        )
    b = _in_f32(momentum.decay)  # m = β m + (1 − β) g
    return Step(
        EMA,
        _stacked([b, 1 - b, neg_eta]),
        (first.mu,),
        lambda new: advanced((first._replace(mu=new[0]), *rest)),
    )


def _lion_step(plan: LionPlan, state: Any) -> Step:
    (lam, eta), advanced = _links_step(state, (plan.decay.weight_decay, plan.rate.learning_rate))
    mu_state, *rest = state
    b1, b2 = _in_f32(plan.momentum.b1), _in_f32(plan.momentum.b2)
    coef = _stacked([b1, 1 - b1, b2, 1 - b2, lam, -_in_f32(eta)])

    def rebuild(new: tuple[Any, ...]) -> OptState:
        return advanced((mu_state._replace(mu=new[0]), *rest))

    return Step(LION, coef, (mu_state.mu,), rebuild)


def _rmsprop_step(plan: RmspropPlan, state: Any) -> Step:
    (eta,), advanced = _links_step(state, (plan.rate.learning_rate,))
    pre, *rest = state
    moment: Any = plan.direction.denominator
    eps_root, eps = plan.direction.eps_root, plan.direction.eps
    if type(moment) is sum_of_squares:  # v = v + g²
        acc = pre.denominator

        def rebuild_sum(new: tuple[Any, ...]) -> OptState:
            done = acc._replace(sum_of_squares=new[0])
            return advanced((pre._replace(denominator=done), *rest))

        coef = _stacked([eps_root, eps, -_in_f32(eta)])
        return Step(ADAGRAD, coef, (acc.sum_of_squares,), rebuild_sum)
    nu_state = pre.denominator  # v = β v + (1 − β) g²
    b = _in_f32(moment.decay)
    coef = _stacked([b, 1 - b, eps_root, eps, -_in_f32(eta)])

    def rebuild(new: tuple[Any, ...]) -> OptState:
        return advanced((pre._replace(denominator=nu_state._replace(nu=new[0])), *rest))

    return Step(RMSPROP, coef, (nu_state.nu,), rebuild)


_SEGMENTED: tuple[tuple[Callable[[Any], Any], Callable[[Any, Any], Step]], ...] = (
    (sgd_plan, _sgd_step),
    (lion_plan, _lion_step),
    (rmsprop_plan, _rmsprop_step),
)
"""The families a kernel computes only on packed buffers: (plan reader, step)."""


def _family(tx: Any, segmented: bool) -> tuple[Any, Callable[[Any, Any], Step]] | None:
    """``(plan, step)`` of the family ``tx`` belongs to, or ``None``."""
    adam = adam_plan(tx)
    if adam is not None:
        return adam, _adam_step
    if segmented:
        for read, split in _SEGMENTED:
            plan = read(tx)
            if plan is not None:
                return plan, split
    return None


def kernel_step(tx: Any, state: Any, segmented: bool) -> Step | None:
    """``tx``'s step from ``state`` as a kernel family's, or ``None`` (``segmented``: on
    packed buffers whose gradient comes leaf by leaf, where GD, SGD, Lion, RMSProp and
    AdaGrad run too; else Adam and AdamW only)."""
    found = _family(tx, segmented)
    return None if found is None else found[1](found[0], state)


def computes(tx: Any, segmented: bool) -> bool:
    """Whether a kernel computes ``tx``'s step (``segmented``: on packed buffers whose
    gradient comes leaf by leaf)."""
    return _family(tx, segmented) is not None


# ---- the families' equations in JAX -----------------------------------------------------------


def reference(kind: int, g: Any, p: Any, states: tuple[Any, ...], c: Any) -> tuple[Any, ...]:
    """A kernel's equations in JAX: ``(new_p, *new_states)`` (its derivatives, and the step
    of buffers too small for the kernel to gain)."""
    if kind in (ADAM, ADAMW):
        b1, a1, b2, a2, w1, w2, eps, lam, neg_eta = c
        m, v = states
        m = b1 * m + a1 * g
        v = b2 * v + a2 * (g * g)
        u = (m / w1) / (jnp.sqrt(v / w2) + eps)
        if kind == ADAMW:
            u = u + lam * p
        return p + neg_eta * u, m, v
    if kind == SGD:
        (neg_eta,) = c
        return (p + neg_eta * g,)
    if kind == EMA:
        b, a, neg_eta = c
        m = b * states[0] + a * g
        return p + neg_eta * m, m
    if kind in (MOMENTUM, NESTEROV):
        mu, neg_eta = c
        m = mu * states[0] + g
        u = mu * m + g if kind == NESTEROV else m
        return p + neg_eta * u, m
    if kind in (RMSPROP, ADAGRAD):
        if kind == RMSPROP:
            b, a, eps_root, eps, neg_eta = c
            v = b * states[0] + a * (g * g)
        else:
            eps_root, eps, neg_eta = c
            v = states[0] + g * g
        return p + neg_eta * (g / (jnp.sqrt(v + eps_root) + eps)), v
    b1, a1, b2, a2, lam, neg_eta = c
    m = states[0]
    u = jnp.sign(b1 * m + a1 * g) + lam * p
    return p + neg_eta * u, b2 * m + a2 * g
