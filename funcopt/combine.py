"""Combinators: transforms in sequence, and statistics of one gradient put together.

- :func:`chain` runs transforms in sequence: each sees the previous one's output.
- :class:`precondition` is the one way statistics are combined: a numerator and a
  denominator, both statistics of the *same* incoming gradient, give
  ``N(g) / (√(D(g) + ε_root) + ε)``. Adam, RMSProp, AMSGrad, AdaBelief, Yogi, Adamax,
  Adagrad, Adadelta, NAdam and RAdam are all a ``precondition`` of two short chains.
- :class:`rectify` is RAdam's variance rectification of a ``precondition``.

Why a fork: in a chain every member sees the previous output, so
``chain(scale_by_momentum(b1), scale_by_rms(b2))`` would average the squares of the
*momentum*, which is not Adam (``docs/design.md``). Both branches of a ``precondition`` see
the gradient itself.

All of them share the step count: a member that reads it gets the count of the outermost
transform, so an optimizer keeps one count (in the state of the first member that reads it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import (
    CountState,
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    StructureError,
    Updates,
    as_transform,
    expect_state,
)
from funcopt.lifting import coef, map_leaves
from funcopt.validation import BOOL, DECAY, NONNEGATIVE, interval
from funcopt.values import hyper, static

__all__ = [
    "PreconditionState",
    "chain",
    "identity",
    "named_chain",
    "precondition",
    "rectify",
]


class identity(GradientTransformation):
    """The transform that returns its input unchanged: ``u = g``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.identity()
        >>> tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))
        (Array([ 1., -2.], dtype=float32), EmptyState())
    """

    elementwise = True

    def init_state(self, params: Params) -> OptState:
        return EmptyState()

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        return updates, EmptyState()


def _run(
    tx: GradientTransformation,
    updates: Updates,
    state: OptState,
    params: Any,
    count: Any,
    extra: dict[str, Any],
) -> tuple[Updates, OptState]:
    """``tx.apply`` with the count if it reads one."""
    return tx.apply(updates, state, params, count if tx.reads_count else None, **extra)


class chain(GradientTransformation):
    """Apply transforms in sequence: ``u = T_k(… T_2(T_1(g)))``.

    The state is the tuple of the members' states. Members may be funcopt or optax
    transforms (anything with ``init`` and ``update``). The members that read the step
    count share one: it is kept in a :class:`~funcopt.base.CountState` around the state of
    the first of them. Extra keyword arguments of ``update`` reach every member (an optax
    member only if it accepts them, as in ``optax.chain``).

    Args:
        *transforms: the gradient transformations to apply, first to last (none gives
            the identity).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.chain(funcopt.scale(2.0), funcopt.scale(-0.1))
        >>> u, state = tx.update(jnp.array([1.0, -3.0]), tx.init(jnp.zeros(2)))
        >>> u, len(state)  # −0.1 · (2 · g), one state per member
        (Array([-0.2,  0.6], dtype=float32), 2)
        >>> tx
        chain(scale(step_size=2.0), scale(step_size=-0.1))
    """

    transforms: tuple[GradientTransformation, ...]

    def __init__(self, *transforms: Any) -> None:
        members = tuple(as_transform(tx, f"chain: argument {i}") for i, tx in enumerate(transforms))
        object.__setattr__(self, "transforms", members)
        self.__post_init__()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.transforms))})"

    @property
    def reads_count(self) -> bool:  # type: ignore[override]
        return any(tx.reads_count for tx in self.transforms)

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return all(tx.elementwise for tx in self.transforms)

    def _counter(self) -> int:
        return next(i for i, tx in enumerate(self.transforms) if tx.reads_count)

    def _expect(self, state: OptState) -> None:
        if not isinstance(state, tuple) or len(state) != len(self.transforms):
            raise StructureError(
                f"chain of {len(self.transforms)} transforms got a state of type "
                f"{type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, tuple) else "")
                + f", not a tuple of {len(self.transforms)} states: was it made by the same "
                "chain's init?"
            )

    def attach_count(self, state: OptState, count: jax.Array) -> OptState:
        i = self._counter()
        return (*state[:i], CountState(count, state[i]), *state[i + 1 :])

    def detach_count(self, state: OptState) -> tuple[jax.Array, OptState]:
        self._expect(state)
        i = self._counter()
        if not isinstance(state[i], CountState):
            raise StructureError(
                f"chain: member {i} ({type(self.transforms[i]).__name__}) keeps the chain's "
                f"step count, so state[{i}] must be a CountState, got "
                f"{type(state[i]).__name__}: was the state made by the same chain's init?"
            )
        return state[i].count, (*state[:i], state[i].inner_state, *state[i + 1 :])

    def init_state(self, params: Params) -> OptState:
        return tuple(tx.init_state(params) for tx in self.transforms)

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        self._expect(state)
        new_state = []
        for tx, s in zip(self.transforms, state, strict=True):
            updates, s = _run(tx, updates, s, params, count, extra)
            new_state.append(s)
        return updates, tuple(new_state)


class named_chain(chain):
    """:func:`chain` whose state is a dict keyed by each member's name.

    ``u = T_k(… T_1(g))`` as in ``chain``; ``state[name]`` is that member's state.

    Args:
        *transforms: ``(name, transform)`` pairs; names must be unique.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.named_chain(("adam", funcopt.scale_by_adam()), ("lr", funcopt.scale(-0.1)))
        >>> sorted(tx.init(jnp.zeros(2)))
        ['adam', 'lr']
    """

    names: tuple[str, ...] = static(())

    def __init__(self, *transforms: tuple[str, Any]) -> None:
        names = tuple(name for name, _ in transforms)
        if len(set(names)) != len(names):
            raise ValueError(f"named_chain: names must be unique, got names={list(names)}")
        object.__setattr__(self, "names", names)
        super().__init__(*(tx for _, tx in transforms))

    def __repr__(self) -> str:
        pairs = ", ".join(
            f"({n!r}, {tx!r})" for n, tx in zip(self.names, self.transforms, strict=True)
        )
        return f"named_chain({pairs})"

    def _as_tuple(self, state: OptState) -> OptState:
        if not isinstance(state, dict) or set(state) != set(self.names):
            raise StructureError(
                f"named_chain with names {list(self.names)} got a state of type "
                f"{type(state).__name__}"
                + (f" with keys {sorted(state)}" if isinstance(state, dict) else "")
            )
        return tuple(state[n] for n in self.names)

    def _as_dict(self, state: OptState) -> OptState:
        return dict(zip(self.names, state, strict=True))

    def attach_count(self, state: OptState, count: jax.Array) -> OptState:
        return self._as_dict(super().attach_count(self._as_tuple(state), count))

    def detach_count(self, state: OptState) -> tuple[jax.Array, OptState]:
        count, inner = super().detach_count(self._as_tuple(state))
        return count, self._as_dict(inner)

    def init_state(self, params: Params) -> OptState:
        return self._as_dict(super().init_state(params))

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        updates, inner = super().apply(updates, self._as_tuple(state), params, count, **extra)
        return updates, self._as_dict(inner)


# ---- combining statistics ------------------------------------------------------------


class PreconditionState(NamedTuple):
    """State of :class:`precondition`: the numerator's and the denominator's states."""

    numerator: OptState
    denominator: OptState


class precondition(GradientTransformation):
    r"""Divide one statistic of the gradient by the root of another: the adaptive step.

    $$ u_t = \frac{n_t}{\sqrt{d_t + \epsilon_{root}} + \epsilon}, \qquad
       n_t = N(g_t),\quad d_t = D(g_t) $$

    (with ``root=False``: $u_t = n_t / (d_t + \epsilon_{root} + \epsilon)$). Both ``N``
    and ``D`` are fed the same incoming gradient ``g``. ``D`` is a second-moment estimate
    such as ``chain(second_moment(β₂), bias_correction(β₂))``, or AMSGrad's running
    maximum, AdaBelief's ``(g − m)²``, Yogi's additive ``v``, Adagrad's sum, Adamax's
    infinity norm; ``N`` is the gradient itself (:func:`identity`) or a momentum.

    Args:
        numerator: the transform whose output is divided (e.g. bias-corrected momentum).
        denominator: the transform whose output ``d ≥ 0`` divides.
        eps: ε ≥ 0 outside the root.
        eps_root: ε ≥ 0 inside the root.
        root: take the square root of ``d`` (False for a first-order ``d``, Adamax).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.precondition(funcopt.identity(), funcopt.second_moment(0.5))
        >>> tx.update(jnp.array([-4.0, 2.0]), tx.init(jnp.zeros(2)))[0]  # g / sqrt(½ g²)
        Array([-1.4142135,  1.4142135], dtype=float32)
    """

    State = PreconditionState

    numerator: GradientTransformation
    denominator: GradientTransformation
    eps: float = hyper(NONNEGATIVE, 0.0)
    eps_root: float = hyper(NONNEGATIVE, 0.0)
    root: bool = static(True, BOOL)

    def check(self) -> None:
        object.__setattr__(self, "numerator", as_transform(self.numerator, "numerator"))
        object.__setattr__(self, "denominator", as_transform(self.denominator, "denominator"))

    @property
    def reads_count(self) -> bool:  # type: ignore[override]
        return self.numerator.reads_count or self.denominator.reads_count

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return self.numerator.elementwise and self.denominator.elementwise

    def init_state(self, params: Params) -> OptState:
        return PreconditionState(
            self.numerator.init_state(params), self.denominator.init_state(params)
        )

    def statistics(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, Updates, PreconditionState]:
        """The numerator and denominator of this step, and the new state."""
        expect_state(self, state, self.State)
        n, n_state = _run(self.numerator, updates, state.numerator, params, count, extra)
        d, d_state = _run(self.denominator, updates, state.denominator, params, count, extra)
        return n, d, PreconditionState(n_state, d_state)

    def divide(self, n: jax.Array, d: jax.Array) -> jax.Array:
        """One leaf of ``n / (√(d + ε_root) + ε)``."""
        d = d + coef(self.eps_root, d)
        return n / ((jnp.sqrt(d) if self.root else d) + coef(self.eps, d))

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        n, d, new_state = self.statistics(updates, state, params, count, **extra)
        return map_leaves(self.divide, n, d, names=("numerator", "denominator")), new_state


class rectify(GradientTransformation):
    r"""RAdam's variance rectification of an adaptive step.

    With $\rho_\infty = 2/(1-\beta_2) - 1$ and
    $\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)$ (the length of the simple moving
    average that approximates the EMA of ``g²``):

    $$ u_t = \begin{cases} r_t\, \dfrac{n_t}{\sqrt{d_t + \epsilon_{root}} + \epsilon}
       & \rho_t \ge \text{threshold} \\ n_t & \text{otherwise} \end{cases}, \qquad
       r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} $$

    where ``n`` and ``d`` are the numerator and denominator of ``adaptive``, a
    :class:`precondition`. RAdam is ``rectify(scale_by_adam(β₁, β₂), β₂)``; the same wrapper
    rectifies AdaBelief, Yogi or AMSGrad.

    Args:
        adaptive: the :class:`precondition` whose variance is rectified.
        b2: the β₂ ∈ ``[0, 1)`` of its second moment.
        threshold: smallest ``ρ_t`` that takes the adaptive step (≥ 4, where ``r_t`` is
            real; 5 in optax, 4 in the paper).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.rectify(funcopt.scale_by_adam(), b2=0.999)
        >>> state = tx.init(jnp.zeros(1))
        >>> for t in range(1, 7):  # ρ_t < 5 for t ≤ 5: m̂ = g passes through, then r_6 · sign(g)
        ...     u, state = tx.update(jnp.array([2.0]), state)
        ...     print(t, round(u.item(), 4))
        1 2.0
        2 2.0
        3 2.0
        4 2.0
        5 2.0
        6 0.0257

    Reference: Liu et al., On the Variance of the Adaptive Learning Rate and Beyond, 2020.
    """

    adaptive: precondition
    b2: float = hyper(DECAY, 0.999)
    threshold: float = hyper(interval(4.0), 5.0)

    reads_count = True

    def check(self) -> None:
        if not isinstance(self.adaptive, precondition):
            raise TypeError(
                f"rectify: adaptive must be a precondition, got {type(self.adaptive).__name__}"
            )

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return self.adaptive.elementwise

    def init_state(self, params: Params) -> OptState:
        return self.adaptive.init_state(params)

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        n, d, new_state = self.adaptive.statistics(updates, state, params, count, **extra)
        t = count.astype(jnp.result_type(float))  # float64 under x64, as optax
        rho_inf = 2.0 / (1.0 - self.b2) - 1.0  # in Python float64 for a number, as optax
        b2t = jnp.asarray(self.b2, t.dtype) ** t
        rho = rho_inf - 2 * t * b2t / (1 - b2t)
        r = jnp.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        adaptive = rho >= self.threshold

        def leaf(n: jax.Array, d: jax.Array) -> jax.Array:
            return jnp.where(adaptive, coef(r, n) * self.adaptive.divide(n, d), n)

        return map_leaves(leaf, n, d, names=("numerator", "denominator")), new_state
