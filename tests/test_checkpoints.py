"""funcopt.checkpoints: states saved by funcopt 0.1 load into 0.2.

``tests/data/v0.1-states.{json,npz}`` were written by funcopt 0.1.0 itself
(``tests/data/make_v01_states.py``): ten optimizers, three steps each, every state leaf with
its key path. Converted, each must equal the state funcopt 0.2 reaches on the same three
steps, and a run continued from it must go on as an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo

DATA = Path(__file__).resolve().parent / "data"
SAVED = json.loads((DATA / "v0.1-states.json").read_text())
ARRAYS = np.load(DATA / "v0.1-states.npz")
PARAMS = {k: jnp.asarray(v, jnp.float32) for k, v in SAVED["params"].items()}

CASES = {
    "sgd-momentum": lambda: fo.sgd(0.1, momentum=0.9),
    "gdm": lambda: fo.gdm(0.1, 0.9),
    "rmsprop": lambda: fo.rmsprop(0.01),
    "adam": lambda: fo.adam(0.01),
    "adamw": lambda: fo.adamw(0.01, weight_decay=0.1),
    "adam-schedule": lambda: fo.adam(fo.linear_schedule(0.01, 0.001, 10)),
    "nadam": lambda: fo.nadam(0.01),
    "amsgrad": lambda: fo.amsgrad(0.01),
    "adabelief": lambda: fo.adabelief(0.01),
    "lion": lambda: fo.lion(0.01),
}


def grads(p, k):
    return jax.tree.map(lambda x: jnp.sin(x * (k + 1.0)) + 0.1 * k, p)


def _run(tx, params, state, steps, first=0):
    for k in range(first, first + steps):
        u, state = tx.update(grads(params, k), state, params)
        params = fo.apply_updates(params, u)
    return params, state


def _old_state(name):
    return {e["path"]: ARRAYS[e["array"]] for e in SAVED["states"][name]["leaves"]}


def test_the_data_covers_every_case():
    assert set(SAVED["states"]) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_v01_state_converts_to_the_state_02_reaches(name):
    tx = CASES[name]()
    params, state = _run(tx, PARAMS, tx.init(PARAMS), 3)
    converted = fo.convert_v01_state(_old_state(name), tx, PARAMS)
    fo.check_state(tx, converted, PARAMS)
    for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # and training goes on from it as if never interrupted
    resumed, _ = _run(tx, params, converted, 5, first=3)
    straight, _ = _run(tx, PARAMS, tx.init(PARAMS), 8)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_a_nested_raw_tree_converts_too():
    """As restored without a target: named tuples become dicts keyed by field names."""
    old = {"0": {"v": {"b": jnp.ones(2), "w": jnp.ones((3, 2))}, "count": jnp.array(2),
                 "numerator": {"0": {"m": {"b": jnp.zeros(2), "w": jnp.zeros((3, 2))}},
                               "1": {"count": jnp.array(2)}}}, "1": {}}  # fmt: skip
    state = fo.convert_v01_state(old, fo.adam(0.01), PARAMS)
    assert int(state[0].count) == 2
    np.testing.assert_array_equal(state[0].inner_state.denominator[0].nu["w"], np.ones((3, 2)))


def test_a_state_of_another_optimizer_is_refused():
    with pytest.raises(fo.StructureError, match=r"no leaf of the 0\.1 state fills"):
        fo.convert_v01_state(_old_state("sgd-momentum"), fo.adam(0.01), PARAMS)
