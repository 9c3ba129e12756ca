"""Transforms that wrap, combine or route other transforms.

Each wrapper takes gradient transformations (funcopt's or optax's: anything with
``init`` and ``update``) and returns a new one: run a chain with named states
(:func:`named_chain`), transform only some leaves (:func:`masked`, :func:`freeze`),
give parameter groups their own optimizers (:func:`partition`), or keep
hyper-parameters in the state (:func:`inject_hyperparams`). The wrappers that act
across steps (gradient accumulation, skipping non-finite steps, lookahead) live in
:mod:`funcopt.stepping` and are re-exported here. Names, signatures, defaults and
numerics follow optax.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt import stepping
from funcopt.base import (
    GradientTransformation,
    MaskedNode,
    OptState,
    Params,
    Updates,
    cached_factory,
    chain,
    compute_dtype,
    new_count,
    safe_increment,
    tree_map,
)
from funcopt.primitives import Mask, resolve_mask
from funcopt.stepping import *  # noqa: F403
from funcopt.stepping import _check_transform
from funcopt.transforms import stateless

__all__ = [
    *stepping.__all__,
    "InjectHyperparamsState",
    "MaskedNode",
    "MaskedState",
    "MultiTransformState",
    "PartitionState",
    "freeze",
    "inject_hyperparams",
    "masked",
    "multi_transform",
    "named_chain",
    "partition",
    "set_to_zero",
]


# ---- named chain -----------------------------------------------------------------------


@cached_factory
def named_chain(*transforms: tuple[str, Any]) -> GradientTransformation:
    """:func:`~funcopt.chain` whose state is a dict keyed by each member's name.

    ``u = T_k(… T_1(g))`` as in ``chain``; ``state[name]`` is that member's state.

    Args:
        *transforms: ``(name, transform)`` pairs; names must be unique.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.named_chain(("adam", funcopt.scale_by_adam()), ("lr", funcopt.scale(-0.1)))
        >>> sorted(tx.init(jnp.zeros(2)))
        ['adam', 'lr']
    """
    names = [name for name, _ in transforms]
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain: names must be unique, got names={names}")
    inner = chain(*(tx for _, tx in transforms))

    def init(params: Params) -> dict[str, OptState]:
        return dict(zip(names, inner.init(params), strict=True))

    def update(
        updates: Updates, state: dict[str, OptState], params: Params | None = None
    ) -> tuple[Updates, dict[str, OptState]]:
        updates, states = inner.update(updates, tuple(state[n] for n in names), params)
        return updates, dict(zip(names, states, strict=True))

    return GradientTransformation(init, update)


# ---- masking -----------------------------------------------------------------------------


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner state, with :class:`MaskedNode` where masked out."""

    inner_state: OptState


def _keep_tree(mask: Mask, tree: Any) -> Any:
    """The mask (resolved against ``tree``) with Python bools at its leaves."""
    return jax.tree.map(bool, resolve_mask(mask, tree))


def _hide(tree: Any, keep: Any) -> Any:
    return tree_map(lambda k, x: x if k else MaskedNode(), keep, tree, names=("mask", "tree"))


@cached_factory
def masked(inner: Any, mask: Mask) -> GradientTransformation:
    r"""Apply ``inner`` to the leaves selected by ``mask``; pass the others through unchanged.

    $$ u_i = \begin{cases} T(g)_i & \text{mask}_i \\ g_i & \text{otherwise} \end{cases} $$

    ``inner`` sees (and keeps state for) only the selected leaves; the others are
    replaced by :class:`MaskedNode` in what it receives.

    Args:
        inner: the transform to apply where the mask is True.
        mask: a pytree of bools with the structure of the params or a prefix of it (a
            bool for a whole subtree), or a function of the params (of the updates in
            ``update``) returning one. Must be concrete, not traced.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.masked(funcopt.scale(2.0), {"w": True, "b": False})
        >>> g = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx.update(g, tx.init(g))[0]["b"]
        Array([1., 1.], dtype=float32)
    """
    _check_transform("masked", inner)

    def init(params: Params) -> MaskedState:
        return MaskedState(inner_state=inner.init(_hide(params, _keep_tree(mask, params))))

    def update(
        updates: Updates, state: MaskedState, params: Params | None = None
    ) -> tuple[Updates, MaskedState]:
        keep = _keep_tree(mask, updates)
        new, inner_state = inner.update(
            _hide(updates, keep),
            state.inner_state,
            None if params is None else _hide(params, keep),
        )
        out = tree_map(
            lambda k, n, g: n if k else g, keep, new, updates, names=("mask", "inner", "updates")
        )
        return out, MaskedState(inner_state=inner_state)

    return GradientTransformation(init, update)


@cached_factory
def set_to_zero() -> GradientTransformation:
    r"""Map every update to zero, $u = 0$, keeping shapes and dtypes (freezes parameters).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.set_to_zero()
        >>> g = {"w": jnp.array([1.0, -2.0]), "step": jnp.array(3, jnp.int32)}
        >>> tx.update(g, tx.init(g))[0]
        {'step': Array(0, dtype=int32), 'w': Array([0., 0.], dtype=float32)}
    """
    return stateless(jnp.zeros_like)


@cached_factory
def freeze(mask: bool | Any) -> GradientTransformation:
    """Zero the updates where ``mask`` is True, so those parameters stay fixed.

    ``masked(set_to_zero(), mask)``; chain it before an optimizer to also keep the
    frozen leaves out of the optimizer's statistics' effect on the parameters.

    Args:
        mask: a bool (freeze all or nothing) or a pytree of bools, as in :func:`masked`.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.freeze({"w": True, "b": False})
        >>> g = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx.update(g, tx.init(g))[0]["w"]
        Array([0., 0.], dtype=float32)
    """
    return masked(set_to_zero(), mask)


# ---- parameter groups --------------------------------------------------------------------


class PartitionState(NamedTuple):
    """State of :func:`partition`: each group's (masked) inner state, keyed by label."""

    inner_states: dict[Hashable, OptState]


MultiTransformState = PartitionState
"""optax's older name for :class:`PartitionState`."""


@cached_factory
def partition(
    transforms: Mapping[Hashable, Any], param_labels: Any | Callable[[Params], Any]
) -> GradientTransformation:
    """Give each group of parameters its own transform.

    ``u_i = T_{label_i}(g)_i``: each transform runs, as :func:`masked`, on the leaves
    whose label is its key, and keeps state only for them.

    Args:
        transforms: a mapping from label to transform.
        param_labels: a pytree of labels with the params' structure (or a prefix of
            it), or a function of the params (of the updates in ``update``) returning
            one. Every label must be a key of ``transforms``.

    Example (no weight decay on biases and norm scales, i.e. 1-d leaves):
        >>> import jax, jax.numpy as jnp, funcopt
        >>> labels = lambda p: jax.tree.map(lambda x: "decay" if x.ndim > 1 else "plain", p)
        >>> tx = funcopt.partition(
        ...     {"decay": funcopt.adamw(1e-3, weight_decay=0.1), "plain": funcopt.adam(1e-3)},
        ...     labels)
        >>> state = tx.init({"w": jnp.ones((2, 2)), "b": jnp.zeros(2)})
    """
    for label, tx in transforms.items():
        _check_transform(f"partition[{label!r}]", tx)

    def groups(tree: Any) -> dict[Hashable, GradientTransformation]:
        labels = param_labels(tree) if callable(param_labels) else param_labels
        unknown = set(jax.tree.leaves(labels)) - set(transforms)
        if unknown:
            raise ValueError(
                f"partition: labels {sorted(map(repr, unknown))} have no transform; "
                f"transforms has keys {sorted(map(repr, transforms))}"
            )
        return {
            group: masked(tx, jax.tree.map(lambda label, g=group: label == g, labels))
            for group, tx in transforms.items()
        }

    def init(params: Params) -> PartitionState:
        return PartitionState({g: tx.init(params) for g, tx in groups(params).items()})

    def update(
        updates: Updates, state: PartitionState, params: Params | None = None
    ) -> tuple[Updates, PartitionState]:
        new_states = {}
        for group, tx in groups(updates).items():
            updates, new_states[group] = tx.update(updates, state.inner_states[group], params)
        return updates, PartitionState(new_states)

    return GradientTransformation(init, update)


multi_transform = partition
"""optax's older name for :func:`partition`."""


# ---- hyper-parameters in the state -------------------------------------------------------


class InjectHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams`.

    Attributes:
        count: updates seen so far (schedules are read at it).
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


def _as_hyperparam(value: Any, dtype: Any) -> jax.Array:
    """An array; a float that is not already a strongly typed array becomes ``dtype``."""
    if isinstance(value, jax.Array) and not getattr(value, "weak_type", False):
        return value
    x = jnp.asarray(value)
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x


@cached_factory
def inject_hyperparams(
    inner_factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Make a factory's numeric arguments live in the state, so they can change at run time.

    ``inject_hyperparams(adam)(learning_rate=1e-3)`` behaves as ``adam(1e-3)``, but its
    state holds ``hyperparams["learning_rate"]`` (and ``b1``, ``b2``, …) as arrays and
    each ``update`` rebuilds the inner transform from them. So a jitted train step
    reads the current values from the state: changing one does not recompile, a batch
    of them can be ``vmap``-ped, and ``jax.grad`` can differentiate with respect to
    one. A callable argument is a schedule ``count -> value``, evaluated at the step
    count (0 at the first update) and stored in ``hyperparams`` too.

    Assign a new value as an array of the stored dtype (``jnp.asarray(1e-4,
    jnp.float32)``): a Python float is weakly typed, which ``jit`` traces anew once.

    Unlike optax, float hyper-parameters are stored in at least float32 even for
    bfloat16 params: optax casts them to the params' dtype, which rounds Adam's
    ``b2 = 0.999`` to 1.0 and makes every update NaN.

    Args:
        inner_factory: a function returning a transform (funcopt's or optax's).
        static_args: names of callable arguments that are not schedules.
        hyperparam_dtype: dtype for float hyper-parameters (default: the widest float
            dtype of the params, at least float32). Strongly typed arrays keep theirs.

    Returns:
        A factory with the signature of ``inner_factory``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.inject_hyperparams(funcopt.sgd)(learning_rate=0.1)
        >>> state = tx.init(jnp.zeros(2))
        >>> state.hyperparams["learning_rate"] = jnp.asarray(0.5)
        >>> tx.update(jnp.ones(2), state)[0]
        Array([-0.5, -0.5], dtype=float32)
    """
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static <= set(signature.parameters):
        raise ValueError(
            f"inject_hyperparams: static_args={sorted(static)} must name parameters of "
            f"{getattr(inner_factory, '__name__', inner_factory)!r}: "
            f"{sorted(signature.parameters)}"
        )

    @cached_factory
    @functools.wraps(inner_factory)
    def factory(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        schedules, numeric, fixed = {}, {}, {}
        for name, value in bound.arguments.items():
            if name in static or isinstance(value, bool):
                fixed[name] = value
            elif callable(value):
                schedules[name] = value
            elif isinstance(value, numbers.Real | np.ndarray | jax.Array):
                numeric[name] = value
            else:
                fixed[name] = value

        def values_at(hyperparams: Mapping[str, Any], count: jax.Array, dtype: Any) -> dict:
            values = {k: _as_hyperparam(v, dtype) for k, v in hyperparams.items()}
            values.update({k: _as_hyperparam(f(count), dtype) for k, f in schedules.items()})
            return values

        def init(params: Params) -> InjectHyperparamsState:
            count = new_count()
            hp = values_at(numeric, count, _hyperparam_dtype(params, hyperparam_dtype))
            inner_state = inner_factory(**fixed, **hp).init(params)
            return InjectHyperparamsState(count=count, hyperparams=hp, inner_state=inner_state)

        def update(
            updates: Updates, state: InjectHyperparamsState, params: Params | None = None
        ) -> tuple[Updates, InjectHyperparamsState]:
            dtype = _hyperparam_dtype(updates, hyperparam_dtype)
            hp = values_at(state.hyperparams, state.count, dtype)
            updates, inner_state = inner_factory(**fixed, **hp).update(
                updates, state.inner_state, params
            )
            return updates, InjectHyperparamsState(safe_increment(state.count), hp, inner_state)

        return GradientTransformation(init, update)

    return factory
