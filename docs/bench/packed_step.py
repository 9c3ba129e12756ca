"""Packed train step against tree steps: compile seconds, step ms, memory plan, numbers.

For each model and optimizer, four donated train steps (value_and_grad + update + apply)
are built and measured in one process:

- ``optax tree``: the hand-written optax step on the pytree (the reference of every ratio);
- ``funcopt tree``: :func:`funcopt.make_train_step`;
- ``funcopt packed``: :func:`funcopt.make_packed_train_step` (views at opaque offsets; for
  every optimizer here, a kernel fed the gradient leaf by leaf, as by default);
- ``packed, XLA only`` (not by default): the same with ``fused=False``: the gradient
  concatenated into packed buffers and the optimizer compiled by XLA;
- ``packed (static)``: the previous packed step, static slices of the buffers behind
  optimization barriers and the gradient tree packed (kept here to measure the change);
- ``model only, tree`` / ``model only, packed`` (not by default): the loss's forward and
  backward alone, on the tree and through :func:`funcopt.packed_value_and_grad`, the
  floor under any optimizer's train step.

Compile is ``.lower(...).compile()`` of a fresh function (median of ``--compile-rounds``),
the variants in a shuffled order each round;
step times are medians over ``--rounds`` rounds, the variants interleaved in each round;
plan is XLA's buffer plan (:func:`funcopt.bench_workloads.planned_bytes`) over
params + grads + state; ``max rel diff`` compares the packed parameters after the timed
steps with ``funcopt tree``'s from the same start.

    python docs/bench/packed_step.py              # 1000-leaf and 300-leaf models
    python docs/bench/packed_step.py --tiny       # seconds: 40 and 20 leaves
    python docs/bench/packed_step.py --models transformer --optimizers adam  # 148 leaves
    python docs/bench/packed_step.py --models mlp --optimizers adam --leaves 100
    python docs/bench/packed_step.py --optimizers adam --variants "optax tree" \
        "funcopt packed" "model only, tree" "model only, packed"      # the model's floor
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcopt
from funcopt.bench_compile import hlo_lines
from funcopt.bench_workloads import many_loss, planned_bytes

OPTIMIZERS: dict[str, Callable[[Any], Any]] = {
    "adam": lambda m: m.adam(1e-3),
    "sgd-momentum": lambda m: m.sgd(1e-2, momentum=0.9),
    "lion": lambda m: m.lion(1e-4),
    "rmsprop": lambda m: m.rmsprop(1e-3),
    # through traced programs (funcopt/fused_program.py): no hand-written kernel
    "nadam": lambda m: m.nadam(1e-3),
    "amsgrad": lambda m: m.amsgrad(1e-3),
    "adabelief": lambda m: m.adabelief(1e-3),
}

WIDTH = 32  # every weight is WIDTH × WIDTH
MLP_BATCH = 16


def mlp_loss(ws: list[jax.Array], x: jax.Array) -> jax.Array:
    """A deep tanh MLP without biases: every leaf a 2-D weight."""
    for w in ws:
        x = jnp.tanh(x @ w)
    return jnp.mean(jnp.square(x - 0.5))


VOCAB, D_MODEL, HEADS, SEQ, BATCH = 256, 64, 4, 32, 8


def transformer_params(layers: int, rng: np.random.Generator) -> dict[str, Any]:
    """A pre-LN decoder: 12 leaves a block (two LayerNorms, q k v o, a 4x MLP), plus the
    token and position embeddings and the final LayerNorm: 12 · layers + 4 leaves."""

    def dense(a: int, b: int) -> jax.Array:
        return jnp.asarray(rng.standard_normal((a, b), dtype=np.float32) / np.sqrt(a))

    d, f = D_MODEL, 4 * D_MODEL
    blocks = [
        {
            "ln1": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
            "attn": {"q": dense(d, d), "k": dense(d, d), "v": dense(d, d), "o": dense(d, d)},
            "ln2": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
            "mlp": {"w1": dense(d, f), "b1": jnp.zeros(f), "w2": dense(f, d), "b2": jnp.zeros(d)},
        }
        for _ in range(layers)
    ]
    return {
        "embed": dense(VOCAB, d),
        "pos": dense(SEQ, d),
        "blocks": blocks,
        "ln_f": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
    }


def _layer_norm(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), -1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]


def transformer_loss(params: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Next-token cross-entropy of a causal transformer (embedding tied to the output)."""
    b, t = tokens.shape
    x = params["embed"][tokens] + params["pos"][:t]
    mask = jnp.tril(jnp.ones((t, t), bool))
    hd = D_MODEL // HEADS
    for blk in params["blocks"]:
        h = _layer_norm(blk["ln1"], x)
        q, k, v = (
            (h @ blk["attn"][n]).reshape(b, t, HEADS, hd).transpose(0, 2, 1, 3) for n in "qkv"
        )
        att = jnp.where(mask, q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd), -1e9)
        y = (jax.nn.softmax(att, -1) @ v).transpose(0, 2, 1, 3).reshape(b, t, D_MODEL)
        x = x + y @ blk["attn"]["o"]
        h = _layer_norm(blk["ln2"], x)
        x = x + jax.nn.gelu(h @ blk["mlp"]["w1"] + blk["mlp"]["b1"]) @ blk["mlp"]["w2"]
        x = x + blk["mlp"]["b2"]
    logits = _layer_norm(params["ln_f"], x) @ params["embed"].T
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))


def model(name: str, leaves: int) -> tuple[Callable[..., Any], Any, jax.Array]:
    rng = np.random.default_rng(0)
    if name == "transformer":  # ``leaves`` is the number of blocks here
        tokens = jnp.asarray(rng.integers(0, VOCAB, (BATCH, SEQ), dtype=np.int32))
        return transformer_loss, transformer_params(leaves, rng), tokens
    shape = (WIDTH, WIDTH)
    if name == "many":  # funcopt bench's per-leaf model, leaves of 32 × 32
        params = [rng.standard_normal(shape, dtype=np.float32) * 0.1 for _ in range(leaves)]
        x = rng.standard_normal(shape, dtype=np.float32)
        return many_loss, [jnp.asarray(p) for p in params], jnp.asarray(x)
    scale = 1.0 / np.sqrt(WIDTH)
    params = [rng.standard_normal(shape, dtype=np.float32) * scale for _ in range(leaves)]
    x = rng.standard_normal((MLP_BATCH, WIDTH), dtype=np.float32)
    return mlp_loss, [jnp.asarray(p) for p in params], jnp.asarray(x)


def static_packed_step(loss_fn: Callable[..., Any], tx: Any) -> Any:
    """The packed step as it was before funcopt.views: static slices behind barriers."""

    def step(params: Any, opt_state: Any, *batch: Any) -> tuple[Any, ...]:
        layout = params.layout
        tree = jax.lax.optimization_barrier(funcopt.unpack(params))
        value, g_tree = jax.value_and_grad(loss_fn)(tree, *batch)
        grads = funcopt.pack(jax.lax.optimization_barrier(g_tree), layout).buffers
        updates, inner = tx.update(grads, opt_state.inner, params.buffers)
        new = funcopt.Packed(tuple(funcopt.apply_updates(params.buffers, updates)), layout)
        return new, opt_state._replace(inner=inner), value

    return jax.jit(step, donate_argnums=(0, 1))


def copy(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


def build(variant: str, loss_fn: Any, opt: str, params: Any) -> tuple[Any, list[Any]]:
    if variant == "optax tree":
        otx = OPTIMIZERS[opt](optax)

        def optax_step(p: Any, s: Any, *b: Any) -> Any:
            loss, g = jax.value_and_grad(loss_fn)(p, *b)
            u, s = otx.update(g, s, p)
            return optax.apply_updates(p, u), s, loss

        p = copy(params)
        return jax.jit(optax_step, donate_argnums=(0, 1)), [p, otx.init(p)]
    if variant == "model only, tree":  # the floor: forward + backward, no optimizer

        def tree_grad(p: Any, s: Any, *b: Any) -> Any:
            return jax.value_and_grad(loss_fn)(p, *b)

        return jax.jit(tree_grad), [copy(params), None]
    if variant == "model only, packed":

        def packed_grad(p: Any, s: Any, *b: Any) -> Any:
            return funcopt.packed_value_and_grad(loss_fn)(p, *b)

        return jax.jit(packed_grad), [funcopt.pack(params), None]
    tx = OPTIMIZERS[opt](funcopt)
    if variant == "funcopt tree":
        p = copy(params)
        return funcopt.make_train_step(loss_fn, tx), [p, tx.init(p)]
    packed = funcopt.pack(params)
    state = funcopt.packed_init(tx, packed)
    if variant == "funcopt packed":
        return funcopt.make_packed_train_step(loss_fn, tx), [packed, state]
    if variant == "packed, XLA only":
        return funcopt.make_packed_train_step(loss_fn, tx, fused=False), [packed, state]
    return static_packed_step(loss_fn, tx), [packed, state]


def measure(
    model_name: str,
    leaves: int,
    opt: str,
    variants: list[str],
    rounds: int,
    inner: int,
    compile_rounds: int = 1,
) -> list[dict[str, Any]]:
    loss_fn, params, x = model(model_name, leaves)
    state = jax.eval_shape(OPTIMIZERS[opt](funcopt).init, params)
    pgs = sum(2 * int(p.size) * 4 for p in jax.tree.leaves(params))  # p + g, float32
    pgs += sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in jax.tree.leaves(state))
    built = {v: build(v, loss_fn, opt, params) for v in variants}
    compiled: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(compile_rounds):  # a fresh function each time: no cache of JAX's is hit
        for v in random.sample(variants, len(variants)):
            fn, args = built[v] if r == 0 else build(v, loss_fn, opt, params)
            t0 = time.perf_counter()
            c = fn.lower(*args, x).compile()
            seconds[v].append(time.perf_counter() - t0)
            compiled.setdefault(v, c)
    for v in variants:
        rows[v] = {
            "compile_s": statistics.median(seconds[v]),
            "hlo": hlo_lines(compiled[v].as_text() or ""),
            "plan": (planned_bytes(compiled[v]) or 0) / pgs,
        }
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            c, args = compiled[v], built[v][1]
            keep = v.startswith("model only")  # nothing donated, nothing to carry
            out = c(*args, x)
            jax.block_until_ready(out)
            args[:2] = args[:2] if keep else out[:2]
            t0 = time.perf_counter()
            for _ in range(inner):
                out = c(*args, x)
                args[:2] = args[:2] if keep else out[:2]
            jax.block_until_ready(out)
            times[v].append((time.perf_counter() - t0) / inner * 1e3)
    steps = rounds * (inner + 1)
    ref = built["funcopt tree"][1][0] if "funcopt tree" in built else None
    result = []
    base = rows.get("optax tree")
    base_ms = statistics.median(times["optax tree"]) if base else None
    for v in variants:
        n = len(jax.tree.leaves(params))
        row = {"model": model_name, "leaves": n, "opt": opt, "variant": v, **rows[v]}
        row["step_ms"] = statistics.median(times[v])
        if base is not None and base_ms is not None:
            row["compile_x"] = row["compile_s"] / base["compile_s"]
            row["step_x"] = row["step_ms"] / base_ms
            row["plan_vs_optax"] = row["plan"] / base["plan"]
        if ref is not None and "packed" in v and not v.startswith("model only"):
            got = funcopt.unpack(built[v][1][0])
            row["max_rel_diff"] = max(
                float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
                for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True)
            )
        row["steps"] = steps
        result.append(row)
    return result


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | leaves | optimizer | variant | compile s | × optax | step ms | × optax "
        "| plan × (p+g+s) | plan × optax | HLO lines | max rel diff vs funcopt tree |"
    )
    out = [head, "|" + " --- |" * 12]
    for r in rows:
        diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else "—"
        out.append(
            f"| {r['model']} | {r['leaves']} | {r['opt']} | {r['variant']} "
            f"| {r['compile_s']:.2f} | {r.get('compile_x', float('nan')):.2f} "
            f"| {r['step_ms']:.3f} | {r.get('step_x', float('nan')):.2f} "
            f"| {r['plan']:.2f} | {r.get('plan_vs_optax', float('nan')):.2f} "
            f"| {r['hlo']} | {diff} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="40 and 20 leaves, 3 rounds")
    ap.add_argument(
        "--models", nargs="+", default=["many", "mlp"], choices=["many", "mlp", "transformer"]
    )
    ap.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    ap.add_argument("--leaves", type=int, help="leaves of many and mlp (default 1000 / 300)")
    ap.add_argument("--blocks", type=int, help="transformer blocks (default 12: 148 leaves)")
    ap.add_argument("--rounds", type=int, help="timed rounds (default 7, --tiny 3)")
    ap.add_argument("--inner", type=int, default=10, help="steps per timed round")
    ap.add_argument("--compile-rounds", type=int, default=1, help="compiles of each variant")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["optax tree", "funcopt tree", "funcopt packed", "packed (static)"],
    )
    args = ap.parse_args()
    default_leaves = {"many": 40, "mlp": 20, "transformer": 2}
    if not args.tiny:
        default_leaves = {"many": 1000, "mlp": 300, "transformer": 12}
    rounds = args.rounds or (3 if args.tiny else 7)
    rows = []
    for m in args.models:
        for opt in args.optimizers:
            given = args.blocks if m == "transformer" else args.leaves
            leaves = given or default_leaves[m]
            variants = list(args.variants)
            rows += measure(m, leaves, opt, variants, rounds, args.inner, args.compile_rounds)
            print(markdown(rows[-len(args.variants) :]), flush=True)
    print(
        f"\nall rows ({rounds} rounds × {args.inner} steps, {args.compile_rounds} compiles;"
        " medians):\n"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
