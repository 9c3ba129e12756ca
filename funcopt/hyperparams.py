"""Hyper-parameters kept in the optimizer state, so that they can change at run time.

:func:`inject_hyperparams` turns a factory (``funcopt.adam``, ``optax.adam``, any function
or transform class returning a transform) into one whose numeric arguments live in the
state (``state.hyperparams``) as arrays, and whose schedules are evaluated at the step
count into the same place. A jitted step reads them from the state: changing one does not
recompile, a batch of them can be ``vmap``-ped, and ``jax.grad`` can differentiate with
respect to one. Names, signatures and the state follow optax.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import (
    GradientTransformation,
    OptState,
    Params,
    Updates,
    as_transform,
    expect_state,
    new_count,
    safe_increment,
)
from funcopt.lifting import compute_dtype
from funcopt.validation import DTYPE
from funcopt.values import static

__all__ = ["InjectHyperparamsState", "inject_hyperparams"]


class InjectHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams`.

    Attributes:
        count: updates seen so far (schedules are read at it: 0 at the first update).
        hyperparams: the numeric hyper-parameters by name, as arrays; edit them
            between steps to change the inner transform without recompiling.
        inner_state: the inner transform's state.
    """

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    hyperparams: dict[str, jax.Array]
    inner_state: OptState


def _hyperparam_dtype(tree: Any, override: Any) -> Any:
    """``override`` if given, else the widest float dtype of ``tree``, at least float32."""
    if override is not None:
        return jnp.dtype(override)
    floats = [
        jnp.result_type(x)
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    return compute_dtype(max(floats, key=lambda d: d.itemsize, default=jnp.float32))


def _as_hyperparam(value: Any, dtype: Any, copy: bool = False) -> jax.Array:
    """An array; a float that is not already a strongly typed array becomes ``dtype``.

    With ``copy``, always a fresh buffer (``init``: no state leaf shares a buffer with the
    transform's own leaves, or with another state leaf).
    """
    if isinstance(value, jax.Array) and not getattr(value, "weak_type", False):
        return jnp.array(value, copy=True) if copy else value
    x = jnp.asarray(value)
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(dtype)
    return jnp.array(x, copy=True) if copy else x


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    return isinstance(value, numbers.Real | np.ndarray | np.generic | jax.Array)


def _normalise(value: Any) -> Any:
    """numpy scalars as Python numbers, so equal arguments make equal transforms."""
    if isinstance(value, np.generic):
        return value.item()
    return value


class InjectedHyperparams(GradientTransformation):
    """What the factory made by :func:`inject_hyperparams` returns (see there).

    A value: the factory is static, the numeric arguments are pytree leaves (so a
    jitted function given this transform traces once for all their values), schedules
    and the other arguments are static.

    Attributes:
        inner_factory: the wrapped factory.
        numeric: the numeric arguments by name (their values at ``init``).
        schedules: ``(name, schedule)`` pairs, evaluated at the count each step.
        fixed: ``(name, value)`` pairs passed unchanged (flags, dtypes, masks, static args).
        hyperparam_dtype: dtype of float hyper-parameters, or None (see
            :func:`inject_hyperparams`).
    """

    State = InjectHyperparamsState
    made_by = "inject_hyperparams"

    inner_factory: Callable[..., Any] = static()
    numeric: dict[str, Any]
    schedules: tuple[tuple[str, Callable[..., Any]], ...] = static(())
    fixed: tuple[tuple[str, Any], ...] = static(())
    hyperparam_dtype: Any = static(None, DTYPE)

    def check(self) -> None:
        object.__setattr__(self, "numeric", {k: _normalise(v) for k, v in self.numeric.items()})
        # Build the inner transform once, so that a bad argument is reported now.
        at_zero = {k: f(new_count()) for k, f in self.schedules}
        self.inner({**self.numeric, **at_zero})

    def __repr__(self) -> str:
        name = getattr(self.inner_factory, "__qualname__", None) or repr(self.inner_factory)
        args = {**dict(self.fixed), **self.numeric, **dict(self.schedules)}
        try:
            parameters = inspect.signature(self.inner_factory).parameters
        except (TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        shown = []
        for key in parameters or args:
            if key not in args:
                continue
            p = parameters.get(key) if parameters else None
            value = args[key]
            if p is not None and p.default is not p.empty and _same(value, p.default):
                continue
            shown.append(f"{key}={value!r}")
        return f"inject_hyperparams({name})({', '.join(shown)})"

    def inner(self, hyperparams: Mapping[str, Any]) -> GradientTransformation:
        """The inner transform with these hyper-parameter values."""
        values = {**dict(self.fixed), **hyperparams}
        signature = inspect.signature(self.inner_factory)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, p in signature.parameters.items():
            if name not in values:
                continue
            if p.kind is p.POSITIONAL_ONLY:
                args.append(values[name])
            elif p.kind is p.VAR_POSITIONAL:
                args.extend(values[name])
            elif p.kind is p.VAR_KEYWORD:
                kwargs.update(values[name])
            else:
                kwargs[name] = values[name]
        where = f"inject_hyperparams: {getattr(self.inner_factory, '__name__', 'inner_factory')}"
        return as_transform(self.inner_factory(*args, **kwargs), where)

    def _values(self, stored: Mapping[str, Any], count: jax.Array, dtype: Any, copy: bool) -> dict:
        values = {k: _as_hyperparam(v, dtype, copy) for k, v in stored.items()}
        values.update({k: _as_hyperparam(f(count), dtype, copy) for k, f in self.schedules})
        return values

    def init_state(self, params: Params) -> OptState:
        count = new_count()
        dtype = _hyperparam_dtype(params, self.hyperparam_dtype)
        hp = self._values(self.numeric, count, dtype, copy=True)
        inner_state = self.inner(hp).init(params)
        return InjectHyperparamsState(count=count, hyperparams=hp, inner_state=inner_state)

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        dtype = _hyperparam_dtype(updates, self.hyperparam_dtype)
        hp = self._values(state.hyperparams, state.count, dtype, copy=False)
        updates, inner_state = self.inner(hp).update(updates, state.inner_state, params, **extra)
        return updates, InjectHyperparamsState(safe_increment(state.count), hp, inner_state)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(type(a) is type(b) and a == b)
    except Exception:  # arrays
        return False


def inject_hyperparams(
    inner_factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    r"""Make a factory's numeric arguments live in the state, so they can change at run time.

    ``inject_hyperparams(adam)(learning_rate=1e-3)`` behaves as ``adam(1e-3)``, but its
    state holds ``hyperparams["learning_rate"]`` (and ``b1``, ``b2``, …) as arrays and
    each ``update`` rebuilds the inner transform from them:

    $$ u_t, s_t = T_{h}(g_t, s_{t-1}), \qquad h = \text{state.hyperparams}
       \ (\text{a schedule } f:\ h = f(\text{count})) $$

    So a jitted train step reads the current values from the state: changing one does
    not recompile, a batch of them can be ``vmap``-ped, and ``jax.grad`` can differentiate
    with respect to one. A callable argument is a schedule ``count -> value``, evaluated
    at the step count (0 at the first update) and stored in ``hyperparams`` too.
    Booleans, ``None``, dtypes, strings and the ``static_args`` are passed unchanged.

    Assign a new value as an array of the stored dtype (``jnp.asarray(1e-4,
    jnp.float32)``): a Python float is weakly typed, which ``jit`` traces anew once.

    Unlike optax, float hyper-parameters are stored in at least float32 even for
    bfloat16 params: optax casts them to the params' dtype, which rounds Adam's
    ``b2 = 0.999`` to 1.0 and makes every update NaN.

    Args:
        inner_factory: a function (or transform class) returning a transform, funcopt's
            or optax's.
        static_args: names of callable arguments that are not schedules.
        hyperparam_dtype: dtype for float hyper-parameters (default: the widest float
            dtype of the params, at least float32). Strongly typed arrays keep theirs.

    Returns:
        A factory with the signature of ``inner_factory``; what it returns is a
        transform value (equal arguments give equal transforms) whose state is an
        :class:`InjectHyperparamsState`.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.inject_hyperparams(funcopt.scale)(step_size=-0.1)
        >>> state = tx.init(jnp.zeros(2))
        >>> state.hyperparams["step_size"] = jnp.asarray(-0.5)
        >>> tx.update(jnp.ones(2), state)[0]
        Array([-0.5, -0.5], dtype=float32)
    """
    fixed_names = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not fixed_names <= set(signature.parameters):
        raise ValueError(
            f"inject_hyperparams: static_args={sorted(fixed_names)} must name parameters of "
            f"{getattr(inner_factory, '__name__', inner_factory)!r}: "
            f"{sorted(signature.parameters)}"
        )
    DTYPE("hyperparam_dtype", hyperparam_dtype)

    @functools.wraps(inner_factory)
    def factory(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        schedules, numeric, fixed = [], {}, []
        for name, value in bound.arguments.items():
            if name in fixed_names or isinstance(value, bool | np.bool_ | type | np.dtype):
                fixed.append((name, value))
            elif _is_numeric(value):
                numeric[name] = value
            elif callable(value) and not isinstance(value, GradientTransformation):
                schedules.append((name, value))
            else:
                fixed.append((name, value))
        return InjectedHyperparams(
            inner_factory=inner_factory,
            numeric=numeric,
            schedules=tuple(schedules),
            fixed=tuple(fixed),
            hyperparam_dtype=hyperparam_dtype,
        )

    return factory
