"""Across devices: the optimizer state follows the parameters' sharding.

Runs in a subprocess with 8 CPU devices (``--xla_force_host_platform_device_count=8``):

1. Parameters sharded over a ``data`` axis of an explicit mesh: ``tx.init`` (eager and
   under ``jit``) gives every per-parameter state leaf the parameter's sharding, with no
   user code; the jitted train step returns the state with the same sharding, its
   compiled HLO has no all-gather (nothing is gathered on one device), and the results
   equal a single-device run.
2. ZeRO-style: parameters replicated, state sharded over ``data`` by
   ``jax.jit(..., out_shardings=...)`` on ``init`` and ``update``; same results.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

HERE = Path(__file__).parent
NAMES = ("sgd-nesterov", "rmsprop", "rmsprop-centered", "adam", "adamw")
SHAPES = {"w": (16, 4), "b": (8,)}
STEPS = 5


def _loss(params: Any, target: Any) -> jax.Array:
    return sum(
        jnp.sum(jnp.square(p - t))
        for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(target), strict=True)
    )


def _problem() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}
    target = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}
    return params, target


def _step(tx: Any) -> Any:
    import funcopt

    def step(params: Any, state: Any, target: Any) -> tuple[Any, Any]:
        grads = jax.grad(_loss)(params, target)
        updates, state = tx.update(grads, state, params)
        return funcopt.apply_updates(params, updates), state

    return step


def _run(step: Any, params: Any, state: Any, target: Any) -> tuple[Any, Any]:
    for _ in range(STEPS):
        params, state = step(params, state, target)
    return params, state


def _close(a: Any, b: Any) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def _per_param_leaves(state: Any, params: Any) -> list[tuple[Any, Any]]:
    """(state leaf, parameter) pairs for state leaves shaped like a parameter."""
    by_shape = {p.shape: p for p in jax.tree.leaves(params)}
    return [
        (x, by_shape[x.shape])
        for x in jax.tree.leaves(state)
        if jnp.ndim(x) and x.shape in by_shape
    ]


def main() -> None:
    """Runs in the 8-device subprocess."""
    import registry
    from jax.sharding import AxisType, Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    assert jax.device_count() == 8
    entries = {e.name: e for e in registry.available()}
    params0, target = _problem()

    # ---- 1. parameters sharded over an explicit mesh ------------------------------
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
    spec = {"w": P("data", None), "b": P("data")}
    with jax.set_mesh(mesh):
        shard = {k: NamedSharding(mesh, s) for k, s in spec.items()}
        params = jax.device_put(params0, shard)
        tgt = jax.device_put(target, shard)
        followers = []
        for name, entry in entries.items():
            tx = entry.build(1e-2)
            for how, init in (("eager", tx.init), ("jit", jax.jit(tx.init))):
                try:
                    pairs = _per_param_leaves(init(params), params)
                    ok = bool(pairs) and all(x.sharding == p.sharding for x, p in pairs)
                except Exception:
                    ok = False
                if ok:
                    followers.append(f"{name}:{how}")
        print("FOLLOWERS " + " ".join(followers))
        for name in NAMES:
            tx = entries[name].build(1e-2)
            step = jax.jit(_step(tx))
            # (laid out like the params explicitly, so this checks the step alone)
            by_shape = {p.shape: p.sharding for p in jax.tree.leaves(params)}
            state = jax.tree.map(
                lambda x: jax.device_put(x, by_shape.get(x.shape, NamedSharding(mesh, P()))),
                tx.init(params),
            )
            hlo = step.lower(params, state, tgt).compile().as_text()
            assert "all-gather" not in hlo, f"{name}: the step gathers state"
            got_p, got_s = _run(step, params, state, tgt)
            for x, y in zip(jax.tree.leaves(got_s), jax.tree.leaves(state), strict=True):
                assert x.sharding == y.sharding, f"{name}: the step changed a state sharding"
            assert all(got_p[k].sharding == shard[k] for k in spec)
            # the single-device run
            ref_p, ref_s = _run(jax.jit(_step(tx)), params0, tx.init(params0), target)
            _close((got_p, got_s), (ref_p, ref_s))

    # ---- 2. ZeRO: replicated params, state sharded over the data axis --------------
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, P())
    params = jax.device_put(params0, replicated)
    tgt = jax.device_put(target, replicated)
    for name in NAMES:
        tx = entries[name].build(1e-2)
        state_sharding = jax.tree.map(
            lambda x: NamedSharding(
                mesh, P("data") if jnp.ndim(x) and x.shape[0] % 8 == 0 else P()
            ),
            jax.eval_shape(tx.init, params0),
        )
        param_sharding = jax.tree.map(lambda _: replicated, params0)
        init = jax.jit(tx.init, out_shardings=state_sharding)
        step = jax.jit(_step(tx), out_shardings=(param_sharding, state_sharding))
        got_p, got_s = _run(step, params, init(params), tgt)
        sharded = [x for x in jax.tree.leaves(got_s) if jnp.ndim(x)]
        assert sharded and all(x.sharding.spec == P("data") for x in sharded), name
        assert all(not x.sharding.is_fully_replicated for x in sharded)
        assert all(p.sharding.is_fully_replicated for p in jax.tree.leaves(got_p))
        ref_p, ref_s = _run(jax.jit(_step(tx)), params0, tx.init(params0), target)
        _close((got_p, got_s), (ref_p, ref_s))
    print("OK")


@pytest.fixture(scope="module")
def child_output() -> str:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_sharding as t; t.main()"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_step_keeps_sharding_without_gathers_and_zero_layout(child_output):
    """Train step: no all-gather, state sharding kept, ZeRO layout; results as 1 device."""
    assert child_output.strip().endswith("OK"), child_output


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("how", ["eager", "jit"])
def test_init_state_takes_the_params_sharding(child_output, name, how):
    line = next(x for x in child_output.splitlines() if x.startswith("FOLLOWERS"))
    assert f"{name}:{how}" in line.split()[1:], line
