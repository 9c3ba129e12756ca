"""Pytrees that must match, and what to say when they do not.

A structure-checked ``jax.tree.map`` (:func:`tree_map`) that names the first differing
path, the comparison of a state with what ``init`` would build (:func:`check_state`),
the floating-point policy for parameters (:func:`check_float_leaves`), and
:func:`apply_updates`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import STATE_OWNERS, EmptyState, OptState, Params, StructureError, Updates
from funcopt.validation import HyperParameterError, Kind

__all__ = ["Mask", "MaskedNode", "apply_updates", "check_float_leaves", "check_state"]


class MaskedNode(NamedTuple):
    """Stands in for a subtree that a masked inner transform must not see (no leaves)."""


def is_masked_node(x: Any) -> bool:
    """Whether ``x`` is a :class:`MaskedNode` placeholder (``masked``/``partition``)."""
    return isinstance(x, MaskedNode)


def keystr(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def flatten(tree: Any) -> tuple[list[Any], Any]:
    """``jax.tree.flatten``, the tree definition typed loosely."""
    return jax.tree.flatten(tree)


def structure(tree: Any) -> Any:
    """``jax.tree.structure``, typed loosely."""
    return jax.tree.structure(tree)


def _children(x: Any) -> tuple[Any, list[tuple[Any, Any]]]:
    """The node type of ``x`` (None for a leaf) and its immediate ``(key, child)`` pairs."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    data = treedef.node_data()  # type: ignore[attr-defined]
    if data is None:  # ``x`` is a leaf
        return None, []
    return data[0], [(p[0], c) for p, c in pairs]


def _type_name(node_type: Any) -> str:
    """A node's type, and the transforms whose state it is (``MaskedState (masked's)``)."""
    if node_type is None:
        return "a leaf"
    owners = STATE_OWNERS.get(node_type)
    return node_type.__name__ + (f" ({' or '.join(owners)}'s)" if owners else "")


def first_difference(a: Any, b: Any, name_a: str, name_b: str) -> str | None:
    """Where two pytrees' structures first differ (depth first), in words; None if equal."""

    def walk(x: Any, y: Any, path: tuple[Any, ...]) -> str | None:
        tx, cx = _children(x)
        ty, cy = _children(y)
        at = keystr(path)
        if tx is not ty:
            return f"at {at}, {name_a} has {_type_name(tx)} where {name_b} has {_type_name(ty)}"
        kx, ky = [k for k, _ in cx], [k for k, _ in cy]
        for (k1, xc), (k2, yc) in zip(cx, cy, strict=False):
            if k1 != k2:
                return (
                    f"at {keystr((*path, k1))}, {name_a} has key {keystr((k1,))} "
                    f"where {name_b} has {keystr((k2,))}"
                )
            found = walk(xc, yc, (*path, k1))
            if found:
                return found
        if len(kx) != len(ky):
            longer, shorter, keys = (
                (name_a, name_b, kx) if len(kx) > len(ky) else (name_b, name_a, ky)
            )
            extra = keys[min(len(kx), len(ky))]
            return f"{longer} has {keystr((*path, extra))} that {shorter} lacks"
        if tx is not None and structure(x) != structure(y):
            return f"at {at}, the {_type_name(tx)} nodes carry different metadata"
        return None

    return walk(a, b, ())


def describe_mismatch(a: Any, b: Any, name_a: str, name_b: str) -> str:
    first = first_difference(a, b, name_a, name_b) or "the structures differ"
    return (
        f"pytree structure mismatch between {name_a} and {name_b}: {first}.\n"
        f"  {name_a}: {jax.tree.structure(a)}\n  {name_b}: {jax.tree.structure(b)}"
    )


def flatten_like(treedef: Any, tree: Any, reference: Any, names: tuple[str, str]) -> list[Any]:
    """``tree``'s leaves in the order of ``treedef`` (the structure of ``reference``).

    Raises :class:`StructureError` naming the first differing path.
    """
    try:
        return treedef.flatten_up_to(tree)  # type: ignore[no-any-return]
    except (ValueError, TypeError):
        raise StructureError(describe_mismatch(reference, tree, *names)) from None


def _shape(x: Any) -> tuple[int, ...] | None:
    """The shape of an array or a Python number; ``None`` for anything else (bools, masks)."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        return tuple(shape)
    if isinstance(x, int | float | complex) and not isinstance(x, bool):
        return ()
    return None


def check_shapes(
    leaves: list[Any], treedef: Any, others: list[list[Any]], labels: tuple[str, ...]
) -> None:
    """Each leaf of every ``others[i]`` must have the shape of the matching leaf (and be
    there: ``None``, an empty subtree, is flattened as a leaf by ``flatten_up_to``)."""
    for k, xs in enumerate(zip(leaves, *others, strict=True)):
        shape = _shape(xs[0])
        for i, x in enumerate(xs[1:]):
            if x is None and xs[0] is not None:
                path = treedef_paths(treedef)[k]
                raise StructureError(
                    f"missing leaf at {keystr(path)}: {labels[0]} has a leaf of shape "
                    f"{shape}, {labels[i + 1]} has None"
                )
            other = _shape(x)
            if shape is not None and other is not None and other != shape:
                path = treedef_paths(treedef)[k]
                raise StructureError(
                    f"shape mismatch at {keystr(path)}: {labels[0]} has shape {shape}, "
                    f"{labels[i + 1]} has shape {jnp.shape(x)}"
                )


def treedef_paths(treedef: Any) -> list[tuple[Any, ...]]:
    """The key path of each leaf of ``treedef``."""
    dummy = treedef.unflatten([0] * treedef.num_leaves)
    return [p for p, _ in jax.tree_util.tree_flatten_with_path(dummy)[0]]


def tree_map(f: Callable[..., Any], tree: Any, *rest: Any, names: tuple[str, ...] = ()) -> Any:
    """``jax.tree.map`` that reports a structure or shape mismatch by path.

    ``names`` label ``tree`` and each of ``rest`` in the error message
    (default ``"tree 0"``, ``"tree 1"``, ...).
    """
    labels = (*names, *(f"tree {i}" for i in range(len(names), len(rest) + 1)))
    leaves, treedef = flatten(tree)
    others = [
        flatten_like(treedef, other, tree, (labels[0], labels[i + 1]))
        for i, other in enumerate(rest)
    ]
    check_shapes(leaves, treedef, others, labels)
    return treedef.unflatten([f(*xs) for xs in zip(leaves, *others, strict=True)])


def leaf_dtype(x: Any) -> Any:
    dtype = getattr(x, "dtype", None)  # may be an extended dtype (a typed PRNG key)
    return dtype if dtype is not None else jnp.result_type(x)


def check_float_leaves(tree: Any, name: str = "params") -> None:
    """Raise ``TypeError`` naming the first leaf of ``tree`` that is not floating point.

    funcopt's policy: integer and boolean leaves are *rejected*, never silently
    rounded. An optimizer step on an integer would truncate it, and a boolean has no
    step at all. Every ``init`` that keeps per-leaf state calls this. To carry such
    leaves in the parameter tree, mask them out (``masked``/``multi_transform`` with
    ``set_to_zero``) or keep them out of the tree given to the optimizer. ``None``
    leaves are not leaves and are fine.

    Args:
        tree: the pytree to check.
        name: what to call it in the message.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> funcopt.check_float_leaves({"w": jnp.zeros(2)})  # fine
        >>> funcopt.check_float_leaves({"step": jnp.array(3)})
        Traceback (most recent call last):
        ...
        TypeError: params['step'] has dtype int32: funcopt optimizers only update ...
    """
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = leaf_dtype(x)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{name}{keystr(path) if path else ''} has dtype {dtype}: funcopt optimizers "
                "only update floating-point leaves. Route it to set_to_zero (multi_transform) "
                "or mask it out (masked) around every transform that would see it (an outer "
                "chain member sees it too), or remove it from the tree given to the optimizer."
            )


def compare_state(state: Any, expected: Any, what: str, *, dtypes: bool) -> None:
    """Raise :class:`StructureError` at the first difference of ``state`` and ``expected``."""
    if structure(state) != structure(expected):
        raise StructureError(
            "the optimizer state does not match this transform (was it made by another "
            "optimizer, another configuration, or for other parameters?): "
            + describe_mismatch(state, expected, "state", what)
        )
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    for (path, x), e in zip(flat, jax.tree.leaves(expected), strict=True):
        if jnp.shape(x) != e.shape or (dtypes and leaf_dtype(x) != e.dtype):
            raise StructureError(
                f"state{keystr(path) if path else ''} has shape {jnp.shape(x)} and dtype "
                f"{leaf_dtype(x)}, but {what} gives shape {e.shape} and dtype {e.dtype}: "
                "the state was made for other parameters or another configuration"
            )


def check_state(tx: Any, state: OptState, params: Params, *, dtypes: bool = True) -> None:
    """Raise :class:`StructureError` unless ``state`` could come from ``tx.init(params)``.

    Compares ``state`` with ``jax.eval_shape(tx.init, params)`` (nothing is computed):
    the tree structure, including the state types of every member of a chain, then
    each leaf's shape and (with ``dtypes=True``) dtype. Use it after restoring a
    checkpoint: a state saved from an optimizer of another configuration (another
    chain, momentum switched on, other parameter shapes) is reported with the first
    differing path, and a packed state saved for another layout by its
    :class:`~funcopt.LayoutStamp`. Give it the parameters of the model you train now
    (the template), not the restored ones. Hyper-parameter *values* are not part of the
    state and are not compared.

    Args:
        tx: the transform the state is meant for.
        state: the state to check (e.g. restored from a checkpoint).
        params: the parameters ``tx.init`` would be given (only shapes and dtypes count),
            or the :class:`~funcopt.Packed` parameters of
            :func:`~funcopt.make_packed_train_step` (whose state :func:`~funcopt.packed_init`
            makes).
        dtypes: also compare each leaf's dtype.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.zeros(2)}
        >>> funcopt.check_state(funcopt.adam(), funcopt.adam().init(params), params)  # fine
        >>> funcopt.check_state(funcopt.adam(), funcopt.sgd(0.1).init(params), params)
        Traceback (most recent call last):
        ...
        funcopt.base.StructureError: the optimizer state does not match this transform ...
    """
    from funcopt.packing import LayoutStamp, Packed, layout_of, packed_init  # builds on this

    if isinstance(params, Packed):  # the state of make_packed_train_step
        expected = jax.eval_shape(lambda p: packed_init(tx, p), params)
        compare_state(state, expected, "packed_init(tx, params)", dtypes=dtypes)
    else:
        compare_state(state, jax.eval_shape(tx.init, params), "tx.init(params)", dtypes=dtypes)

    stamps = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, LayoutStamp))
    for stamp in stamps:  # a packed state: the layout it was saved for
        if isinstance(stamp, LayoutStamp):
            stamp.check(getattr(params, "layout", None) or layout_of(params))


def apply_updates(params: Params, updates: Updates) -> Params:
    """``θ ← θ + u`` leaf by leaf; each result keeps its parameter's dtype.

    The sum is formed in the wider of the two dtypes, then cast back to the
    parameter's dtype (a bfloat16 parameter stays bfloat16). ``None`` leaves stay
    ``None``.

    Args:
        params: the parameters θ, a pytree of arrays.
        updates: the steps ``u``, a pytree with the parameters' structure and shapes
            (e.g. from ``tx.update``, already scaled and sign-flipped).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, 2.0]), "b": None}
        >>> updates = {"w": jnp.array([0.5, -1.0]), "b": None}
        >>> funcopt.apply_updates(params, updates)
        {'b': None, 'w': Array([1.5, 1. ], dtype=float32)}
    """

    def add(p: Any, u: Any) -> Any:
        if p is None:
            return None
        p = jnp.asarray(p)
        u = jnp.asarray(u)
        wide = p.dtype if p.dtype.itemsize >= u.dtype.itemsize else u.dtype
        return (p.astype(wide) + u.astype(wide)).astype(p.dtype)

    return tree_map(add, params, updates, names=("params", "updates"))


Mask = Any
"""A pytree of bools with the parameters' structure (or a prefix of it), or a function of
the params returning one."""


def is_mask_function(mask: Any) -> bool:
    """Whether ``mask`` is a function of the params rather than a tree of bools.

    optax's rule: a callable is a function unless it is a pytree whose leaves are bools or
    arrays (an Equinox module used as a mask is callable, and is a tree).
    """
    if not callable(mask):
        return False
    kinds = (bool, np.bool_, np.ndarray, jax.Array)
    return not any(isinstance(x, kinds) for x in jax.tree.leaves(mask))


def is_stand_in(params: Any) -> bool:
    """Whether ``params`` is one opaque object standing for a whole parameter tree.

    ``optax.tree.map_params`` calls ``init`` on such a placeholder to find where the state
    holds parameter-shaped trees; ``masked`` and ``partition`` then initialise their inner
    transforms with it as it is, since no mask or label can be resolved against it (as
    optax's do).
    """
    return (
        jax.tree_util.treedef_is_leaf(jax.tree.structure(params))
        and params is not None
        and not isinstance(params, jax.Array | np.ndarray | np.generic | int | float | complex)
        and not hasattr(params, "shape")
    )


def _check_mask(name: str, value: Any) -> Any:
    if value is None or is_mask_function(value):
        return value
    for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
        ok = isinstance(leaf, bool | np.bool_ | jax.core.Tracer) or (
            isinstance(leaf, np.ndarray | jax.Array) and leaf.shape == () and leaf.dtype == bool
        )
        if not ok:
            shape = getattr(leaf, "shape", ())
            shown = f"an array of shape {tuple(shape)}" if shape else repr(leaf)
            raise HyperParameterError(
                f"{name} must be {MASK.description}, got {name}{keystr(path) if path else ''}"
                f"={shown}"
            )
    return value


MASK = Kind(_check_mask, "a pytree of bools, a function of the params returning one, or None")
"""A mask (:data:`Mask`): each leaf a bool; or a function of the params; or ``None``."""


def resolve_mask(mask: Mask, params: Params) -> Any:
    """The mask as a pytree of bools: ``mask(params)`` if it is a function.

    Inside ``partition``/``masked`` the params hold :class:`MaskedNode` placeholders where
    other transforms own the leaves; a mask given for the full tree is cut to match (a
    mask that does not fit is returned as is, for the caller's structure check to report
    with its path).
    """
    if is_mask_function(mask):
        return mask(params)
    try:
        return jax.tree.map(lambda keep, x: x if is_masked_node(x) else keep, mask, params)
    except ValueError:
        return mask


_expected_states: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
"""Per transform (weakly: nothing is kept alive) and input signature, ``init``'s shapes."""


def check_against_init(tx: Any, state: OptState, updates: Updates, params: Params | None) -> None:
    """Raise :class:`StructureError` unless ``state`` has the structure ``tx.init`` gives.

    Compared once per input signature (at trace time, with ``jax.eval_shape``): the tree
    structure, state types included, then each leaf's shape, and its dtype when the
    params are given (without them ``init`` is only known for params like the updates).
    A transform that keeps nothing (``init`` gives :class:`EmptyState`) takes any state
    without leaves, as optax's stateless transforms do (``tx.update(g, None)``).
    """
    like = updates if params is None else params
    try:
        leaves, treedef = jax.tree.flatten(like)
        key = (treedef, tuple((jnp.shape(x), str(jnp.result_type(x))) for x in leaves))
        hash(key)
        cache = _expected_states.setdefault(tx, {})
    except TypeError:
        return
    if key not in cache:
        try:
            cache[key] = jax.eval_shape(tx.init, like)
        except Exception:  # an init that needs concrete values, or bad params: no check
            cache[key] = None
        if len(cache) > 16:
            cache.pop(next(iter(cache)))
    expected = cache[key]
    if isinstance(expected, EmptyState) and not jax.tree.leaves(state):
        return
    if expected is not None:
        what = "init(params)" if params is not None else "init(params like the updates)"
        compare_state(state, expected, what, dtypes=params is not None)
