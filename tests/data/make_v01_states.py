"""How tests/data/v0.1-states.{json,npz} were made, with funcopt 0.1.0 (kept for the record:
it runs only against 0.1). Each state is saved after 3 steps, leaves with their key paths."""

import json

import jax
import jax.numpy as jnp
import numpy as np

import funcopt as fo

params = {"w": jnp.arange(6.0).reshape(3, 2) / 5 - 0.4, "b": jnp.array([0.3, -0.2])}


def grads(p, k):
    return jax.tree.map(lambda x: jnp.sin(x * (k + 1.0)) + 0.1 * k, p)


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
out = {}
arrays = {}
for name, make in CASES.items():
    tx = make()
    p = params
    s = tx.init(p)
    for k in range(3):
        u, s = tx.update(grads(p, k), s, p)
        p = fo.apply_updates(p, u)
    leaves = jax.tree_util.tree_flatten_with_path(s)[0]
    entries = []
    for i, (path, x) in enumerate(leaves):
        key = f"{name}/{i}"
        arrays[key] = np.asarray(x)
        entries.append({"path": jax.tree_util.keystr(path), "array": key, "dtype": str(x.dtype)})
    out[name] = {"treedef": str(jax.tree.structure(s)), "leaves": entries}
np.savez("tests/data/v0.1-states.npz", **arrays)
json.dump(
    {
        "funcopt": "0.1.0",
        "params": {k: np.asarray(v).tolist() for k, v in params.items()},
        "grads": "sin(theta * (k + 1)) + 0.1 k for k = 0, 1, 2",
        "states": out,
    },
    open("tests/data/v0.1-states.json", "w"),
    indent=1,
)
print(json.dumps(out["adam"], indent=1)[:1500])
