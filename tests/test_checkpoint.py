"""Save an optimizer state, restore it in a fresh process, continue bit-identically.

The checkpoint library is ``flax.serialization`` (msgpack): ``to_bytes`` writes the
raw array bytes, ``from_bytes(target, data)`` restores into the structure of a target
built by ``tx.init``. For every row of the registry (and for packed mode) this test

1. runs 6 steps uninterrupted here;
2. saves params and state after step 3, and in a *new Python process* rebuilds the
   optimizer by name, restores, checks the state (``funcopt.check_state``) and runs
   steps 4–6;
3. requires the two results to be bit-identical.

Typed PRNG keys (``noisy_sgd``'s state) cannot be written by msgpack: they are saved
as their raw key data and re-wrapped on restore (``_keys_to_data``/``_data_to_keys``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import chex
import flax.serialization as ser
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import registry
from oracle import quadratic_grads, random_params

import funcopt

HERE = Path(__file__).parent
STEPS = 3
PACKED = ("adam", "lamb")  # one elementwise (flat buffers), one per-leaf (packed tree)
SHAPES = {"w": (2, 2)}  # one small leaf: few distinct shapes keep eager dispatch cheap

# msgpack needs to know every node type it writes: a packed state is a ``funcopt.Packed``
# (buffers are its data, the layout is static and comes from the restore target).
if hasattr(funcopt, "Packed"):
    ser.register_serialization_state(
        funcopt.Packed,
        lambda p: {str(i): b for i, b in enumerate(p.buffers)},
        lambda target, d: funcopt.Packed(
            tuple(ser.from_state_dict(b, d[str(i)]) for i, b in enumerate(target.buffers)),
            target.layout,
        ),
    )


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _data_to_keys(tree: Any, template: Any) -> Any:
    return jax.tree.map(
        lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
        tree,
        template,
    )


def _start(entry: registry.Entry) -> tuple[Any, Any, Any]:
    tx = entry.build(registry.LR)
    params = entry.params(random_params(0, shapes=SHAPES))
    return tx, params, tx.init(params)


def _train(entry: registry.Entry, tx: Any, params: Any, state: Any, first: int) -> Any:
    for step in range(first, first + STEPS):
        at = params.fast if entry.wrap else params
        u, state = tx.update(quadratic_grads(at, jnp.asarray(step)), state, params)
        params = funcopt.apply_updates(params, u)
    return params, state


def _loss(params: Any) -> jax.Array:
    return sum(jnp.sum(jnp.square(x - 0.3)) for x in jax.tree.leaves(params))


def _packed_start(name: str) -> tuple[Any, Any, Any]:
    tx = next(e for e in registry.available() if e.name == name).build(registry.LR)
    packed = funcopt.pack(random_params(0, shapes=SHAPES))
    return tx, packed, funcopt.packed_init(tx, packed)


def _packed_train(tx: Any, packed: Any, state: Any) -> Any:
    step = funcopt.make_packed_train_step(_loss, tx, donate=False)
    for _ in range(STEPS):
        packed, state, _ = step(packed, state)
    return packed.buffers, state


def _save(params: Any, state: Any) -> bytes:
    return ser.to_bytes({"params": params, "state": _keys_to_data(state)})


def _restore(data: bytes, params: Any, state: Any) -> tuple[Any, Any]:
    target = {"params": params, "state": _keys_to_data(state)}
    # msgpack gives numpy arrays: put them back on the device as jax arrays, or numpy
    # would do some of the next step's scalar arithmetic (with its own rounding).
    restored = jax.tree.map(jnp.asarray, ser.from_bytes(target, data))
    return restored["params"], _data_to_keys(restored["state"], state)


def _check_restored(tx: Any, params: Any, state: Any, template: Any) -> None:
    """The documented check after a restore: against the *template*, not the restored
    params (msgpack restores whatever shapes were saved, params and state alike)."""
    chex.assert_trees_all_equal_shapes_and_dtypes(params, template)
    funcopt.check_state(tx, state, template)


def resume(directory: str) -> None:
    """Run in the fresh process: restore each checkpoint, train on, save the result."""
    d = Path(directory)
    for entry in registry.available():
        tx, params0, state0 = _start(entry)
        params, state = _restore((d / f"{entry.name}.ckpt").read_bytes(), params0, state0)
        _check_restored(tx, params, state, params0)
        (d / f"{entry.name}.out").write_bytes(_save(*_train(entry, tx, params, state, STEPS)))
    for name in PACKED:
        tx, packed0, state0 = _packed_start(name)
        buffers, state = _restore((d / f"packed-{name}.ckpt").read_bytes(), packed0.buffers, state0)
        packed = funcopt.Packed(tuple(buffers), packed0.layout)
        (d / f"packed-{name}.out").write_bytes(_save(*_packed_train(tx, packed, state)))


def _assert_bit_identical(a: Any, b: Any, what: str) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), what


@pytest.mark.skipif(not hasattr(funcopt, "pack"), reason="funcopt.packing has no pack yet")
def test_resume_in_fresh_process_is_bit_identical(tmp_path):
    uninterrupted = {}
    for entry in registry.available():
        tx, params, state = _start(entry)
        params, state = _train(entry, tx, params, state, 0)
        (tmp_path / f"{entry.name}.ckpt").write_bytes(_save(params, state))
        uninterrupted[entry.name] = (entry, _train(entry, tx, params, state, STEPS))
    for name in PACKED:
        tx, packed, state = _packed_start(name)
        buffers, state = _packed_train(tx, packed, state)
        (tmp_path / f"packed-{name}.ckpt").write_bytes(_save(buffers, state))
        packed = funcopt.Packed(tuple(buffers), packed.layout)
        uninterrupted[f"packed-{name}"] = (None, _packed_train(tx, packed, state))

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_ENABLE_X64")}
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_checkpoint as t; "
    code += f"t.resume({str(tmp_path)!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    for name, (_, (params, state)) in uninterrupted.items():
        data = (tmp_path / f"{name}.out").read_bytes()
        got_params, got_state = _restore(data, params, state)
        _assert_bit_identical(
            (got_params, _keys_to_data(got_state)), (params, _keys_to_data(state)), name
        )


def test_restore_into_other_configuration_fails_clearly():
    params = random_params(0, shapes=SHAPES)
    data = _save(params, funcopt.adam(0.1).init(params))
    # another chain: the checkpoint library itself refuses, naming the path
    with pytest.raises(ValueError, match="size of the list"):
        _restore(data, params, funcopt.adamw(0.1).init(params))
    with pytest.raises(ValueError, match="field names"):
        _restore(data, params, funcopt.sgd(0.1, 0.9).init(params))
    # same structure, other parameter shapes: msgpack restores silently, check_state does not
    other = jax.tree.map(lambda x: jnp.zeros((*x.shape, 2)), params)
    _, state = _restore(data, other, funcopt.adam(0.1).init(other))
    path = r"state\[0\]\.inner_state\.numerator\[0\]\.mu\['w'\]"
    with pytest.raises(funcopt.StructureError, match=path + r" has shape \(2, 2\)"):
        funcopt.check_state(funcopt.adam(0.1), state, other)


@pytest.mark.parametrize("make", [lambda: funcopt.adam(0.1), lambda: funcopt.sgd(0.1)])
def test_a_checkpoint_for_other_shapes_fails_the_documented_check(make):
    """A (3, 2) checkpoint restored for a (4, 2) model: params and state come back (3, 2),
    consistent with each other, so only the template can tell (sgd keeps no state)."""
    tx = make()
    saved = {"w": jnp.ones((3, 2))}
    template = {"w": jnp.zeros((4, 2))}
    params, state = _restore(_save(saved, tx.init(saved)), template, tx.init(template))
    assert params["w"].shape == (3, 2)
    funcopt.check_state(tx, state, params)  # what the restored params cannot catch
    with pytest.raises(AssertionError, match=r"shape"):
        _check_restored(tx, params, state, template)
    if jax.tree.leaves(state):
        with pytest.raises(funcopt.StructureError, match=r"\['w'\] has shape \(3, 2\)"):
            funcopt.check_state(tx, state, template)
