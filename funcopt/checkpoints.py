"""Checkpoints: restoring an optimizer state saved by funcopt 0.1 into 0.2.

funcopt 0.2 changed the structure of optimizer states: transforms keep one step count, not
one per part, and moments carry optax's names (``mu``, ``nu``, ``trace``). A 0.2 state
holds the same numbers as a 0.1 state of the same optimizer, in another tree.
:func:`convert_v01_state` moves them over by name::

    raw = checkpointer.restore(path)            # the 0.1 state, as a raw tree (no target)
    state = funcopt.convert_v01_state(raw, tx, params)
    funcopt.check_state(tx, state, params)      # it now fits tx.init(params) exactly

Each leaf of the new state is taken from the old leaf of the same role (``m`` becomes
``mu``, ``trace`` or AdaBelief's ``prediction``, or ``nu`` where 0.1 built a second moment
from a momentum; ``v`` and ``s`` become ``nu``; ``max`` becomes ``nu_max``) and the same
place in the parameter tree, in order; the one count is the first of the old counts (they
were all equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from funcopt.base import OptState, Params, StructureError

__all__ = ["convert_v01_state"]

_RENAMED = {
    "m": ("mu", "trace", "prediction", "nu"),  # 0.1 also kept some second moments as m
    "v": ("nu",),
    "s": ("nu",),
    "max": ("nu_max",),
}
"""0.1 field name -> the 0.2 field names it may have become, in order of preference."""


def _key(k: Any) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _leaves_by_path(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, Mapping) and tree and all(isinstance(k, str) for k in tree):
        if all(k.startswith(("[", ".")) or k == "" for k in tree):  # {keystr: array}
            return [(_split(k), v) for k, v in tree.items()]
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(tuple(_key(k) for k in path), x) for path, x in flat]


def _split(keystr: str) -> tuple[str, ...]:
    """``"[0].numerator[0].m['b']"`` -> ``("0", "numerator", "0", "m", "b")``."""
    parts, token = [], ""
    for ch in keystr:
        if ch in ".[]'\"":
            if token:
                parts.append(token)
            token = ""
        else:
            token += ch
    if token:
        parts.append(token)
    return tuple(parts)


def _role_and_place(path: tuple[str, ...], places: list[tuple[str, ...]]) -> tuple[str, Any]:
    """The field name a leaf sits under and its place in the parameter tree."""
    for place in sorted(places, key=len, reverse=True):
        n = len(place)
        if len(path) > n and (n == 0 or path[-n:] == place):
            return path[len(path) - n - 1], place
    return path[-1] if path else "", None


def convert_v01_state(old_state: Any, tx: Any, params: Params) -> OptState:
    """The funcopt 0.2 state of ``tx`` holding the numbers of a funcopt 0.1 state.

    Args:
        old_state: the 0.1 state, as restored without a target (nested dicts, lists or
            tuples, with the 0.1 field names as keys where it had named tuples), or as a
            flat mapping from key paths (``jax.tree_util.keystr``) to arrays.
        tx: the 0.2 transform the state is for (the same optimizer and configuration
            that saved it).
        params: the parameters (their structure, shapes and dtypes).

    Returns:
        A state with the structure of ``tx.init(params)``.

    Raises:
        StructureError: naming a leaf of the new state that no old leaf fills.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.zeros(2)}
        >>> old = {"[0].v['w']": jnp.full(2, 4.0), "[0].count": jnp.array(3),
        ...        "[0].numerator[0].m['w']": jnp.ones(2),
        ...        "[0].numerator[1].count": jnp.array(3)}  # funcopt 0.1's Adam
        >>> state = funcopt.convert_v01_state(old, funcopt.adam(), params)
        >>> state[0].count, state[0].inner_state.denominator[0].nu["w"]
        (Array(3, dtype=int32), Array([4., 4.], dtype=float32))
    """
    template = tx.init(params)
    places = [
        tuple(_key(k) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    old = [(*_role_and_place(path, places), x) for path, x in _leaves_by_path(old_state)]
    used = [False] * len(old)
    new_flat = jax.tree_util.tree_flatten_with_path(template)[0]
    leaves = []
    for path, like in new_flat:
        role, place = _role_and_place(tuple(_key(k) for k in path), places)
        for i, (old_role, old_place, x) in enumerate(old):
            fits = old_role == role or role in _RENAMED.get(old_role, ())
            if fits and old_place == place and (role == "count" or not used[i]):
                used[i] = True
                leaves.append(jnp.asarray(x, like.dtype).reshape(like.shape))
                break
        else:
            raise StructureError(
                f"convert_v01_state: no leaf of the 0.1 state fills "
                f"{jax.tree_util.keystr(path)} (field {role!r}) of the 0.2 state: was it "
                "saved by the same optimizer and configuration?"
            )
    return jax.tree.unflatten(jax.tree.structure(template), leaves)
