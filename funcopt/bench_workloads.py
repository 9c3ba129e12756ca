"""What ``funcopt bench`` times: each implementation of each workload, ready to run.

Every implementation (:class:`Impl`) is built here, outside the timed region: funcopt in
tree and packed mode, optax (undonated and donated) and ``torch.optim`` (foreach and
fused), on the optimizer-only workloads and on full train steps. :mod:`funcopt.bench`
interleaves and times them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BASELINE",
    "Impl",
    "Workload",
    "adam_impls",
    "canonical_name",
    "describe",
    "planned_bytes",
    "select",
    "train_impls",
]

BASELINE = "optax donated"
"""The implementation every ratio is relative to."""


class Workload(NamedTuple):
    """One row group: ``kind`` is ``"adam"`` (optimizer step) or ``"train"``."""

    name: str
    kind: str
    leaves: int
    leaf_size: int
    model: str = ""


def canonical_name(name: str) -> str:
    """A workload name as compared: ASCII ``x`` for ``×``, case and spacing ignored."""
    return " ".join(name.replace("×", "x").lower().split())


def select(
    workloads: Sequence[Workload], names: Sequence[str] | None, size: str = ""
) -> list[Workload]:
    """The ``workloads`` that ``names`` name, in table order (all of them for ``None``).

    Names compare by :func:`canonical_name` (``adam 20x1k`` is ``adam 20×1k``), and a name
    may come split over several words, as an unquoted shell argument does (``train MLP``).
    An unknown name raises ``ValueError`` listing the valid ones.
    """
    if names is None:
        return list(workloads)
    by_key = {canonical_name(w.name): w for w in workloads}
    words = [word for name in names for word in name.split()]
    wanted: set[str] = set()
    unknown: list[str] = []
    pending: list[str] = []
    i = 0
    while i < len(words):
        for j in range(len(words), i, -1):  # the longest run of words that is a name
            key = canonical_name(" ".join(words[i:j]))
            if key in by_key:
                wanted.add(key)
                if pending:
                    unknown.append(" ".join(pending))
                    pending = []
                i = j
                break
        else:
            pending.append(words[i])
            i += 1
    if pending:
        unknown.append(" ".join(pending))
    if unknown or not wanted:
        valid = ", ".join(repr(w.name) for w in workloads)
        at = f" at the {size} size" if size else ""
        raise ValueError(
            f"unknown workload {', '.join(map(repr, unknown)) or '(none named)'}{at}; "
            f"the valid names are {valid} (x may stand for ×)"
        )
    return [w for w in workloads if canonical_name(w.name) in wanted]


def describe(w: Workload, cfg: dict[str, Any]) -> str:
    """One line on what a workload times, for ``funcopt bench --list-workloads``."""
    if w.kind == "adam":
        leaves = "1 leaf" if w.leaves == 1 else f"{w.leaves:,} leaves"
        return f"Adam step alone (gradients given), {leaves} of {w.leaf_size:,} parameters"
    if w.model == "mlp":
        return f"train step of an MLP {' → '.join(map(str, cfg['mlp']))}, batch {cfg['batch']}"
    return f"train step of a per-leaf model, {w.leaves:,} leaves of {w.leaf_size:,} parameters"


# ---- workloads ------------------------------------------------------------------------


class Impl:
    """A runnable implementation: ``compile()`` once, then ``step()`` repeatedly."""

    def __init__(
        self,
        name: str,
        compile_fn: Callable[[], float | None],
        step_fn: Callable[[], None],
        resident_bytes: int,
        plan_fn: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.name = name
        self.compile = compile_fn
        self.step = step_fn
        self.resident_bytes = resident_bytes
        self.plan = plan_fn
        self.times: list[float] = []


def leaf_shapes(w: Workload) -> list[tuple[int, ...]]:
    if w.leaf_size >= 1024 and w.leaf_size % 32 == 0 and w.leaves > 1:
        return [(32, w.leaf_size // 32)] * w.leaves
    return [(w.leaf_size,)] * w.leaves


def jax_params(shapes: Sequence[tuple[int, ...]], seed: int = 0) -> list[jax.Array]:
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.1) for s in shapes]


def nbytes(tree: Any) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def compiled_runner(
    fn: Any, args: list[Any], n_donated: int
) -> tuple[Callable[[], float], Callable[[], None], Callable[[], int | None]]:
    """compile() times ``fn.lower(*args).compile()``; step() runs it and rebinds outputs;
    plan() is the bytes XLA's buffer assignment holds at once (see :func:`planned_bytes`)."""
    holder: dict[str, Any] = {}

    def compile_() -> float:
        t0 = time.perf_counter()
        holder["c"] = fn.lower(*args).compile()
        return time.perf_counter() - t0

    def step() -> None:
        out = holder["c"](*args)
        jax.block_until_ready(out)
        args[:n_donated] = out[:n_donated]

    return compile_, step, lambda: planned_bytes(holder["c"])


def planned_bytes(compiled: Any) -> int | None:
    """What a compiled step holds at once by XLA's own buffer assignment: its arguments,
    the outputs that do not reuse a donated argument, and the temporaries (gradients,
    saved activations, copies). Exact and repeatable, unlike a process's RSS; ``None``
    where the backend gives no memory analysis."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


def adam_impls(w: Workload, names: Sequence[str]) -> list[Impl]:
    import optax

    import funcopt

    shapes = leaf_shapes(w)
    lr = 1e-3
    impls = []
    for name in names:
        if name.startswith("torch"):
            impl = torch_adam(name, shapes, lr)
            if impl is not None:
                impls.append(impl)
            continue
        params = jax_params(shapes)
        grads = jax_params(shapes, seed=1)
        if name == "funcopt packed":
            tx = funcopt.adam(lr)
            p = funcopt.pack(params)
            state = funcopt.packed_init(tx, p).inner  # the flat moments themselves

            # The gradients come as the tree a model's gradient is, as in any real train
            # step: packed into the parameters' layout inside the step, or read leaf by
            # leaf by Adam's kernel (as make_packed_train_step does).
            def packed_step(
                pb: Any, s: Any, g: Any, tx: Any = tx, layout: Any = p.layout
            ) -> tuple[Any, Any]:
                new, s = funcopt.packed_update_and_apply(tx, g, s, funcopt.Packed(pb, layout))
                return new.buffers, s

            fn = jax.jit(packed_step, donate_argnums=(0, 1))
            args: list[Any] = [p.buffers, state, grads]
        elif name == "funcopt fused":
            tx = funcopt.adam(lr)
            state = tx.init(params)

            def fused_step(p: Any, s: Any, g: Any, tx: Any = tx) -> Any:
                return funcopt.update_and_apply(tx, g, s, p)

            fn = jax.jit(fused_step, donate_argnums=(0, 1))
            args = [params, state, grads]
        else:
            tx = funcopt.adam(lr) if name.startswith("funcopt") else optax.adam(lr)
            apply = funcopt.apply_updates if name.startswith("funcopt") else optax.apply_updates
            state = tx.init(params)

            def tree_step(p: Any, s: Any, g: Any, tx: Any = tx, apply: Any = apply) -> Any:
                u, s = tx.update(g, s, p)
                return apply(p, u), s

            donate = (0, 1) if name != "optax" else ()
            fn = jax.jit(tree_step, donate_argnums=donate)
            args = [params, state, grads]
        resident = sum(nbytes(a) for a in args)
        compile_, step, plan = compiled_runner(fn, args, 2)
        impls.append(Impl(name, compile_, step, resident, plan))
    return impls


def import_torch() -> Any:
    """torch with its default OpenMP settings. ``OMP_WAIT_POLICY=PASSIVE`` (threads that
    sleep between parallel regions) made fused Adam 14x slower on 500 small leaves."""
    import torch

    return torch


def torch_adam(name: str, shapes: Sequence[tuple[int, ...]], lr: float) -> Impl | None:
    try:
        torch = import_torch()
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    params = [
        torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s, dtype=np.float32) * 0.1))
        for s in shapes
    ]
    g_rng = np.random.default_rng(1)
    for p in params:
        p.grad = torch.from_numpy(g_rng.standard_normal(p.shape, dtype=np.float32))
    kw = {"fused": True} if name == "torch fused" else {"foreach": True}
    opt = torch.optim.Adam(params, lr=lr, **kw)  # type: ignore[arg-type]
    opt.step()  # allocates the state
    resident = sum(p.numel() * 4 * 4 for p in params)  # p, g, m, v
    return Impl(name, lambda: None, opt.step, resident)


def many_loss(params: Sequence[jax.Array], x: jax.Array) -> jax.Array:
    """A per-leaf model: Σ_i mean((tanh(w_i ⊙ x_i) − 0.5)²), x_i a slice of the batch."""
    total = jnp.zeros([], jnp.float32)
    for w in params:
        xi = jax.lax.slice(x, (0,) * w.ndim, w.shape) if x.ndim == w.ndim else x
        total = total + jnp.mean(jnp.square(jnp.tanh(w * xi) - 0.5))
    return total


def mlp_loss(params: Sequence[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"][None, :])
    logits = x @ params[-1]["w"] + params[-1]["b"][None, :]
    return jnp.mean(jnp.square(logits - y))


def train_impls(w: Workload, names: Sequence[str], cfg: dict[str, Any]) -> list[Impl]:
    import optax

    import funcopt

    lr = 1e-3
    rng = np.random.default_rng(2)
    if w.model == "mlp":
        sizes = cfg["mlp"]
        x = rng.standard_normal((cfg["batch"], sizes[0]), dtype=np.float32)
        y = rng.standard_normal((cfg["batch"], sizes[-1]), dtype=np.float32)
        batch_np: tuple[np.ndarray, ...] = (x, y)
        loss_fn: Callable[..., Any] = mlp_loss

        def make_params() -> Any:
            r = np.random.default_rng(0)
            return [
                {
                    "w": jnp.asarray(r.standard_normal((a, b), dtype=np.float32) / np.sqrt(a)),
                    "b": jnp.zeros(b, jnp.float32),
                }
                for a, b in itertools.pairwise(sizes)
            ]
    else:
        shapes = leaf_shapes(w)
        batch_np = (rng.standard_normal(shapes[0], dtype=np.float32),)
        loss_fn = many_loss

        def make_params() -> Any:
            return jax_params(shapes)

    batch = tuple(jnp.asarray(b) for b in batch_np)
    impls = []
    for name in names:
        if name.startswith("torch"):
            impl = torch_train(name, w, cfg, make_params, batch_np, lr)
            if impl is not None:
                impls.append(impl)
            continue
        params = make_params()
        if name == "funcopt packed":
            tx = funcopt.adam(lr)
            packed = funcopt.pack(params)
            fn = funcopt.make_packed_train_step(loss_fn, tx)
            args: list[Any] = [packed, funcopt.packed_init(tx, packed), *batch]
        elif name in ("funcopt tree", "funcopt fused"):
            tx = funcopt.adam(lr)
            fn = funcopt.make_train_step(loss_fn, tx, fused=None if "fused" in name else False)
            args = [params, tx.init(params), *batch]
        else:
            otx = optax.adam(lr)

            def optax_step(p: Any, s: Any, *b: Any, otx: Any = otx) -> Any:
                loss, g = jax.value_and_grad(loss_fn)(p, *b)
                u, s = otx.update(g, s, p)
                return optax.apply_updates(p, u), s, loss

            fn = jax.jit(optax_step, donate_argnums=(0, 1) if name == BASELINE else ())
            args = [params, otx.init(params), *batch]
        resident = nbytes(args[:2])
        compile_, step, plan = compiled_runner(fn, args, 2)
        impls.append(Impl(name, compile_, step, resident, plan))
    return impls


def torch_train(
    name: str,
    w: Workload,
    cfg: dict[str, Any],
    make_params: Callable[[], Any],
    batch_np: tuple[np.ndarray, ...],
    lr: float,
) -> Impl | None:
    try:
        torch = import_torch()
    except ImportError:
        return None
    leaves = [
        torch.nn.Parameter(torch.from_numpy(np.array(p))) for p in jax.tree.leaves(make_params())
    ]
    batch = [torch.from_numpy(b) for b in batch_np]
    if w.model == "mlp":
        layers = [
            (leaves[i], leaves[i + 1]) for i in range(0, len(leaves), 2)
        ]  # (b, w): sorted keys

        def loss() -> Any:
            x, y = batch
            for b, wt in layers[:-1]:
                x = torch.relu(x @ wt + b)
            b, wt = layers[-1]
            return torch.mean(torch.square(x @ wt + b - y))
    else:

        def loss() -> Any:
            x = batch[0]
            total = torch.zeros(())
            for p in leaves:
                xi = x[tuple(slice(0, n) for n in p.shape)] if x.ndim == p.ndim else x
                total = total + torch.mean(torch.square(torch.tanh(p * xi) - 0.5))
            return total

    kw = {"fused": True} if name == "torch fused" else {"foreach": True}
    opt = torch.optim.Adam(leaves, lr=lr, **kw)  # type: ignore[arg-type]

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        loss().backward()
        opt.step()

    step()
    resident = sum(p.numel() * 4 * 4 for p in leaves)
    return Impl(name, lambda: None, step, resident)
