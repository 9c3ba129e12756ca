"""The README's runnable snippets run (so the front page never rots)."""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def _user_code_may_broadcast():
    """README code is user code: rank promotion (banned inside funcopt's tests) is allowed."""
    with jax.numpy_rank_promotion("allow"):
        yield


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_quick_start_trains():
    namespace: dict = {}
    exec(_blocks()[0], namespace)
    params, state = namespace["params"], namespace["state"]
    x = jnp.arange(12.0).reshape(4, 3) / 10
    y = x @ jnp.array([[1.0], [-2.0], [0.5]]) + 0.3
    losses = []
    for _ in range(200):
        params, state, value = namespace["step"](params, state, x, y)
        losses.append(float(value))
    assert losses[-1] < 0.01 * losses[0]


def test_composition_snippets_build_working_transforms():
    block = next(b for b in _blocks() if "funcopt inside optax" in b)
    statements = re.split(r"\n(?=tx = )", block.strip())
    assert len(statements) == 3
    params = {"w": jnp.ones(3)}
    for statement in statements:
        namespace: dict = {}
        exec("import funcopt, optax\n" + statement, namespace)
        tx = namespace["tx"]
        updates, _ = tx.update(params, tx.init(params), params)
        assert updates["w"].shape == (3,)


def test_speed_snippet_runs_the_quick_start_model():
    namespace: dict = {}
    exec(_blocks()[0], namespace)
    block = next(b for b in _blocks() if "make_packed_train_step" in b)
    exec(block, namespace)
    x = jnp.arange(12.0).reshape(4, 3) / 10
    y = x @ jnp.array([[1.0], [-2.0], [0.5]]) + 0.3
    packed, state = namespace["packed"], namespace["state"]
    losses = []
    for _ in range(200):
        packed, state, value = namespace["step"](packed, state, x, y)
        losses.append(float(value))
    assert losses[-1] < 0.01 * losses[0]
