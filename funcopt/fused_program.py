"""Any elementwise optimizer's packed step through a kernel: the step as a small program.

A packed train step that takes each buffer's gradient leaf by leaf, instead of
concatenating it into a packed copy, needs a kernel that reads the leaves' gradients where
they are (``funcopt/fused_adam.cc`` has hand-written ones for Adam, gradient descent, Lion,
RMSProp and AdaGrad). For every other elementwise transform this module writes the kernel's
work from the transform itself: it traces ``tx.update`` followed by ``apply_updates`` on
stand-in buffers (one length per buffer, so that each array can be told apart by its
shape) and splits the trace in two:

- the *scalar* part (step counts, schedules, bias corrections, anything that does not
  depend on a buffer's elements) is computed by XLA as usual, from the real state; the
  scalars the elementwise part reads are the program's coefficients;
- the *elementwise* part of each buffer becomes a list of float32 instructions
  (``OPS``: add, multiply, root, select, compare, ...) that ``funcopt/fused_program.cc``
  runs block by block over the buffer, gradient segment by gradient segment, writing
  the new parameters and state in place.

So the kernel computes the transform's own equations, whatever they are; a step it cannot
write this way (a reduction over a buffer, as in ``apply_if_finite``; a loop; a state
that is not float32) is refused with the reason, and the step concatenates the gradient
as before. The same instructions, run in JAX (:func:`run`), are the kernel's
derivatives and the step of buffers too small for the kernel to gain. As XLA compiles
the pure step, a division by a scalar is a multiply by its reciprocal and a product
feeding a sum is a fused multiply-add (the first product of a sum of two); other
operations (XLA's own ``exp``, ``log``, reciprocal square roots) can round differently, by
an ulp, from XLA's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core

__all__: list[str] = []

_F32 = jnp.dtype(jnp.float32)
_BOOL = jnp.dtype(bool)
_STAND_IN = 7919
"""The stand-in length of buffer ``b`` is ``_STAND_IN + b``: no scalar state has it."""


def _as_bool(x: Any) -> Any:
    return x.astype(_F32)


def _truth(x: Any) -> Any:
    return x != 0


OPS: dict[str, tuple[int, Callable[..., Any]]] = {
    "copy": (0, lambda a: a),
    "add": (1, lax.add),
    "sub": (2, lax.sub),
    "mul": (3, lax.mul),
    "div": (4, lax.div),
    "neg": (5, lax.neg),
    "sqrt": (6, lax.sqrt),
    "rsqrt": (7, lax.rsqrt),
    "max": (8, lax.max),
    "min": (9, lax.min),
    "abs": (10, lax.abs),
    "sign": (11, lax.sign),
    "exp": (12, lax.exp),
    "log": (13, lax.log),
    "pow": (14, lax.pow),
    "select_n": (15, lambda a, b, c: jnp.where(_truth(a), c, b)),
    "gt": (16, lambda a, b: _as_bool(a > b)),
    "ge": (17, lambda a, b: _as_bool(a >= b)),
    "lt": (18, lambda a, b: _as_bool(a < b)),
    "le": (19, lambda a, b: _as_bool(a <= b)),
    "eq": (20, lambda a, b: _as_bool(a == b)),
    "ne": (21, lambda a, b: _as_bool(a != b)),
    "and": (22, lambda a, b: _as_bool(_truth(a) & _truth(b))),
    "or": (23, lambda a, b: _as_bool(_truth(a) | _truth(b))),
    "not": (24, lambda a: _as_bool(a == 0)),
    "is_finite": (25, lambda a: _as_bool(lax.is_finite(a))),
    "cbrt": (26, lax.cbrt),
    "tanh": (27, lax.tanh),
    "log1p": (28, lax.log1p),
    "expm1": (29, lax.expm1),
    "logistic": (30, lax.logistic),
    "rem": (31, lax.rem),
    "fma": (32, lambda a, b, c: a * b + c),
    "nonzero": (33, lambda a: _as_bool(a != 0)),
}
"""The kernel's operations (``enum Op`` in ``fused_program.cc``): code and JAX meaning, on
float32 values, booleans as 1.0 and 0.0."""

_NAMES = {code: name for name, (code, _) in OPS.items()}
_ALIASES = {"copy", "copy_p", "reshape", "broadcast_in_dim", "squeeze", "expand_dims"}
"""Primitives that, from a buffer to the buffer's own shape, change nothing."""
_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


class Refused(Exception):
    """A step the kernel's programs cannot compute, with the reason."""


class Program(NamedTuple):
    """One buffer's instructions (hashable: a static argument of the kernel's call).

    Attributes:
        code: five integers per instruction: op, destination slot, operands a, b, c.
        outputs: the slot written into each output buffer.
        replaces: the input slot each output buffer overwrites (1 for p, 2 + j for state j).
        states: how many state buffers the kernel takes (slots ``2 .. 1 + states``).
        coefs: how many coefficients (the slots after the states).
        registers: how many scratch slots (the slots after the coefficients).
    """

    code: tuple[int, ...]
    outputs: tuple[int, ...]
    replaces: tuple[int, ...]
    states: int
    coefs: int
    registers: int


def run(program: Program, g: Any, p: Any, states: Sequence[Any], coef: Any) -> tuple[Any, ...]:
    """A program's instructions in JAX, on whole buffers: its outputs."""
    slots: list[Any] = [g, p, *states, *(coef[j] for j in range(program.coefs))]
    slots += [None] * program.registers
    code = program.code
    for i in range(0, len(code), 5):
        op, dst, *operands = code[i : i + 5]
        slots[dst] = OPS[_NAMES[op]][1](*(slots[s] for s in operands if s >= 0))
    return tuple(jnp.broadcast_to(slots[s], p.shape).astype(_F32) for s in program.outputs)


# ---- tracing a step ----------------------------------------------------------------------


class _Elem(NamedTuple):
    """A value of one buffer's elementwise part: node ``node`` of buffer ``buffer``."""

    buffer: int
    node: int


class _Uniform(NamedTuple):
    """An array of a buffer's shape that holds one scalar everywhere (a broadcast)."""

    value: Any


def _bind(eqn: Any, ins: Sequence[Any]) -> list[Any]:
    """An equation of the trace applied to ``ins``, as ``jax.core.eval_jaxpr`` does it."""
    params = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(params, tuple):  # jax before 0.7: (subfuns, params)
        subfuns, params = params
        out = eqn.primitive.bind(*subfuns, *ins, **params)
    else:
        out = eqn.primitive.bind(*ins, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


class _Builder:
    """The walk over a traced step: scalar equations are computed, on the real values;
    elementwise ones are written down, a list of nodes per buffer."""

    def __init__(self, buffers: int) -> None:
        # A node: ("in", k) for the k-th input (0 g, 1 p, 2 + j state j) or (op, operands),
        # operands ("n", node) or ("c", coefficient).
        self.nodes: list[list[Any]] = [[("in", 0), ("in", 1)] for _ in range(buffers)]
        self.state_inputs: list[list[int]] = [[] for _ in range(buffers)]  # state positions
        self.coefs: list[Any] = []
        self._coef_at: dict[int, int] = {}

    def buffer_of(self, aval: Any) -> int | None:
        """The buffer an array of this shape belongs to, or ``None`` (the scalar part)."""
        shape: tuple[int, ...] = tuple(getattr(aval, "shape", ()))
        if len(shape) == 1 and 0 <= shape[0] - _STAND_IN < len(self.nodes):
            return int(shape[0] - _STAND_IN)
        return None

    def coef(self, value: Any) -> tuple[str, int]:
        key = id(value)
        if key not in self._coef_at:
            self._coef_at[key] = len(self.coefs)
            self.coefs.append(value)
        return ("c", self._coef_at[key])

    def node(self, b: int, op: str, *operands: Any) -> _Elem:
        refs = []
        for x in operands:
            if isinstance(x, _Elem):
                if x.buffer != b:
                    raise Refused("an operation mixes two buffers")
                refs.append(("n", x.node))
            else:
                value = x.value if isinstance(x, _Uniform) else x
                if jnp.shape(value):
                    raise Refused(f"an array of shape {jnp.shape(value)} read by every element")
                refs.append(self.coef(value))
        self.nodes[b].append((op, tuple(refs)))
        return _Elem(b, len(self.nodes[b]) - 1)

    # -- the walk --

    def walk(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        env: dict[Any, Any] = {}

        def read(v: Any) -> Any:
            return v.val if isinstance(v, core.Literal) else env[v]

        env.update(zip(jaxpr.constvars, consts, strict=True))
        env.update(zip(jaxpr.invars, args, strict=True))
        for eqn in jaxpr.eqns:
            outs = self.equation(eqn, [read(v) for v in eqn.invars])
            env.update(zip(eqn.outvars, outs, strict=True))
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn: Any, ins: list[Any]) -> list[Any]:
        name = eqn.primitive.name
        avals = [v.aval for v in eqn.outvars]
        shaped = [self.buffer_of(a) for a in avals]
        if not any(isinstance(x, _Elem | _Uniform) for x in ins) and all(b is None for b in shaped):
            return _bind(eqn, ins)
        inner = next((eqn.params[k] for k in _CALL_PARAMS if k in eqn.params), None)
        if inner is not None:
            closed = inner if isinstance(inner, core.ClosedJaxpr) else None
            jaxpr = closed.jaxpr if closed else inner
            return self.walk(jaxpr, closed.consts if closed else (), ins)
        if name == "cond":
            return self.cond(eqn, ins)
        if len(avals) != 1:
            raise Refused(f"{name} over a buffer")
        elems = [x for x in ins if isinstance(x, _Elem)]
        if not elems:  # uniform arrays: the scalar's equation, still one scalar
            return [self.uniform(name, eqn, ins, shaped[0])]
        if shaped[0] is None:
            raise Refused(f"{name} turns a buffer into shape {avals[0].shape}")
        if avals[0].dtype not in (_F32, _BOOL):
            raise Refused(f"{avals[0].dtype} values in a buffer's step (the kernel is float32)")
        return [self.elementwise(name, eqn.params, ins, shaped[0])]

    def uniform(self, name: str, eqn: Any, ins: list[Any], b: int | None) -> Any:
        scalars = [x.value if isinstance(x, _Uniform) else x for x in ins]
        if b is None:
            raise Refused(f"{name} reduces a buffer to a scalar")
        if name in _ALIASES:
            if jnp.shape(scalars[0]):
                raise Refused(f"{name} of an array into a buffer")
            return _Uniform(scalars[0])
        if name in OPS or name in ("square", "integer_pow", "clamp", "convert_element_type"):
            return _Uniform(_bind(eqn, scalars)[0])
        raise Refused(f"{name} over a buffer")

    def elementwise(self, name: str, params: dict[str, Any], ins: list[Any], b: int) -> Any:
        x = ins[0]
        if name in _ALIASES:
            return x
        if name == "convert_element_type":
            if params["new_dtype"] == _F32:
                return x  # from float32 or bool, which are float32 here
            if params["new_dtype"] == _BOOL:
                return self.node(b, "nonzero", x)
            raise Refused(f"a conversion to {params['new_dtype']}")
        if name == "square":
            return self.node(b, "mul", x, x)
        if name == "integer_pow":  # as lax lowers it: by squaring, 1/x^|y| for y < 0
            y, acc = abs(params["y"]), None
            while y:
                if y & 1:
                    acc = x if acc is None else self.node(b, "mul", acc, x)
                y >>= 1
                if y:
                    x = self.node(b, "mul", x, x)
            if acc is None:
                return _Uniform(jnp.float32(1))
            return self.node(b, "div", jnp.float32(1), acc) if params["y"] < 0 else acc
        if name == "clamp":  # clamp(lo, x, hi) = min(max(x, lo), hi)
            lo, v, hi = ins
            return self.node(b, "min", self.node(b, "max", v, lo), hi)
        if name == "select_n":
            if len(ins) != 3:
                raise Refused("a select of more than two cases")
            return self.node(b, "select_n", *ins)
        if name not in OPS:
            raise Refused(f"{name} over a buffer")
        return self.node(b, name, *ins)

    def cond(self, eqn: Any, ins: list[Any]) -> list[Any]:
        index, *operands = ins
        branches = eqn.params["branches"]
        if isinstance(index, _Elem | _Uniform) or len(branches) != 2:
            raise Refused("a cond over a buffer")
        outs = [self.walk(br.jaxpr, br.consts, operands) for br in branches]
        pred = jnp.asarray(index) != 0
        done: list[Any] = []
        for no, yes in zip(*outs, strict=True):
            elems = [x for x in (no, yes) if isinstance(x, _Elem)]
            if elems:
                done.append(self.node(elems[0].buffer, "select_n", pred, no, yes))
            elif isinstance(no, _Uniform) or isinstance(yes, _Uniform):
                values = [x.value if isinstance(x, _Uniform) else x for x in (no, yes)]
                done.append(_Uniform(lax.select(pred, values[1], values[0])))
            else:
                done.append(lax.select(pred, yes, no))
        return done


# ---- from the nodes to a program ---------------------------------------------------------


def _rewritten(nodes: list[Any], builder: _Builder) -> list[Any]:
    """As XLA compiles the same equations: a division by a scalar is a multiply by its
    reciprocal; a product used once, feeding a sum, is a fused multiply-add (the first
    product of the sum)."""
    nodes = list(nodes)
    for i, (op, refs) in enumerate(nodes):
        if op == "div" and refs[1][0] == "c" and refs[0][0] == "n":
            inverse = 1 / jnp.asarray(builder.coefs[refs[1][1]], _F32)
            nodes[i] = ("mul", (refs[0], builder.coef(inverse)))
    uses = [0] * len(nodes)
    for op, refs in nodes:
        if op != "in":
            for kind, j in refs:
                uses[j] += kind == "n"
    for i, (op, refs) in enumerate(nodes):
        if op != "add":
            continue
        for first, other in (refs, refs[::-1]):
            if first[0] == "n" and nodes[first[1]][0] == "mul" and uses[first[1]] == 1:
                nodes[i] = ("fma", (*nodes[first[1]][1], other))
                uses[first[1]] = 0
                break
    return nodes


def _program(nodes: list[Any], inputs: dict[int, int], wanted: list[tuple[int, int]],
             coefs: int) -> Program:  # fmt: skip
    """The instructions computing ``wanted`` (``(node, aliased input slot)`` per output)
    from the nodes; ``inputs``: input node -> slot. Registers are reused once dead."""
    live = {n for n, _ in wanted}
    order = []
    for i in range(len(nodes) - 1, -1, -1):  # what the outputs need, latest first
        if i in live and nodes[i][0] != "in":
            order.append(i)
            live |= {j for kind, j in nodes[i][1] if kind == "n"}
    order.reverse()
    last = {}
    for i in order:
        for kind, j in nodes[i][1]:
            if kind == "n":
                last[j] = i
    first_register = 2 + len([s for s in inputs.values() if s >= 2]) + coefs
    slot_of = dict(inputs)
    free: list[int] = []
    registers = 0
    code: list[int] = []
    outputs = {n for n, _ in wanted}

    def register() -> int:
        nonlocal registers
        if free:
            return free.pop()
        registers += 1
        return first_register + registers - 1

    def operand(ref: tuple[str, int]) -> int:
        kind, j = ref
        return slot_of[j] if kind == "n" else first_register - coefs + j

    for i in order:
        op, refs = nodes[i]
        args = [operand(r) for r in refs]
        for kind, j in refs:
            if kind == "n" and last.get(j) == i and j not in outputs and nodes[j][0] != "in":
                free.append(slot_of[j])
                last.pop(j)
        slot_of[i] = register()
        code += [OPS[op][0], slot_of[i], *args, *[-1] * (3 - len(args))]
    out_slots = []
    for n, alias in wanted:
        s = slot_of[n]
        if nodes[n][0] == "in" and s != alias:  # another input: copy it before it is overwritten
            s = register()
            code += [OPS["copy"][0], s, slot_of[n], -1, -1]
        out_slots.append(s)
    states = first_register - coefs - 2
    replaces = tuple(alias for _, alias in wanted)
    return Program(tuple(code), tuple(out_slots), replaces, states, coefs, registers)


class Traced(NamedTuple):
    """A packed step as scalars and programs.

    Attributes:
        coef: the coefficients (float32, at least one).
        programs: one per buffer, or ``None`` where the buffer's step needs no kernel.
        states: per buffer, the state buffers its program takes.
        rebuild: ``(new_buffers, new_state)`` from the programs' outputs, per buffer.
    """

    coef: Any
    programs: tuple[Program | None, ...]
    states: tuple[tuple[Any, ...], ...]
    rebuild: Callable[[Sequence[Sequence[Any]]], tuple[tuple[Any, ...], Any]]


def trace(tx: Any, state: Any, buffers: Sequence[Any]) -> Traced:
    """``tx``'s step on packed ``buffers`` (float32, 1-D) from ``state`` as programs;
    raises :class:`Refused` (with the reason) where its elementwise part cannot be one."""
    n = len(buffers)
    stand_in = tuple(jax.ShapeDtypeStruct((_STAND_IN + b,), _F32) for b in range(n))
    init = jax.eval_shape(tx.init, stand_in)
    treedef: Any
    real_def: Any
    out_def: Any
    fake, treedef = jax.tree.flatten(init)
    real, real_def = jax.tree.flatten(state)
    if real_def != treedef:
        raise Refused("the state is not tx.init's structure")

    def step(g: Any, s: Any, p: Any) -> Any:
        from funcopt.trees import apply_updates

        updates, s = tx.update(g, s, p)
        return apply_updates(p, updates), s

    closed, out_shape = jax.make_jaxpr(step, return_shape=True)(stand_in, init, stand_in)
    builder = _Builder(n)
    args: list[Any] = [_Elem(b, 0) for b in range(n)]
    for i, (f, r) in enumerate(zip(fake, real, strict=True)):
        b = builder.buffer_of(f)
        if b is None:
            args.append(r)
            continue
        if jnp.result_type(r) != _F32 or jnp.shape(r) != jnp.shape(buffers[b]):
            raise Refused(f"a state buffer of {jnp.result_type(r)} (the kernel is float32)")
        builder.nodes[b].append(("in", 2 + len(builder.state_inputs[b])))
        builder.state_inputs[b].append(i)
        args.append(_Elem(b, len(builder.nodes[b]) - 1))
    args += [_Elem(b, 1) for b in range(n)]
    outs = builder.walk(closed.jaxpr, closed.consts, args)
    out_leaves, out_def = jax.tree.flatten(out_shape)
    # Output k is either computed (a scalar), or uniform, or buffer b's node.
    rewritten = [_rewritten(builder.nodes[b], builder) for b in range(n)]
    coefs = max(1, len(builder.coefs))  # (the kernel takes at least one)
    programs: list[Program | None] = []
    per_buffer: list[list[int]] = []  # for each buffer, the outputs its program writes
    for b, nodes in enumerate(rewritten):
        slot = {i: 2 + j for j, i in enumerate(builder.state_inputs[b])}  # state pos -> slot
        inputs = {k: node[1] for k, node in enumerate(nodes) if node[0] == "in"}
        wanted, which = [], []
        for k, x in enumerate(outs):
            if not isinstance(x, _Elem) or x.buffer != b:
                continue
            position = k - n  # the state leaf this output replaces (k < n: buffer k)
            alias = 1 if k < n else slot.get(position, -1)
            if nodes[x.node][0] == "in" and inputs[x.node] == alias:
                continue  # unchanged: the input itself
            if alias < 0:
                raise Refused("a state buffer the kernel cannot write in place")
            wanted.append((x.node, alias))
            which.append(k)
        per_buffer.append(which)
        programs.append(_program(nodes, inputs, wanted, coefs) if wanted else None)
    coef = jnp.stack([jnp.asarray(c).astype(_F32) for c in builder.coefs] or [jnp.zeros((), _F32)])
    states = tuple(tuple(real[i] for i in builder.state_inputs[b]) for b in range(n))

    def rebuild(results: Sequence[Sequence[Any]]) -> tuple[tuple[Any, ...], Any]:
        done: list[Any] = []
        written = {k: v for b in range(n) for k, v in zip(per_buffer[b], results[b], strict=True)}
        for k, (x, shape) in enumerate(zip(outs, out_leaves, strict=True)):
            if k in written:
                done.append(written[k])
            elif isinstance(x, _Elem):  # p or a state buffer, unchanged
                j = builder.nodes[x.buffer][x.node][1]
                done.append(buffers[x.buffer] if j == 1 else states[x.buffer][j - 2])
            elif isinstance(x, _Uniform):
                b = builder.buffer_of(shape)
                assert b is not None  # a uniform array has a buffer's shape
                done.append(jnp.full(jnp.shape(buffers[b]), x.value, shape.dtype))
            else:
                done.append(jnp.asarray(x, shape.dtype))
        new_buffers, new_state = out_def.unflatten(done)
        return tuple(new_buffers), new_state

    return Traced(coef, tuple(programs), states, rebuild)


@functools.lru_cache(maxsize=256)
def _refusal_cached(tx: Any, buffers: tuple[tuple[int, ...], ...]) -> str | None:
    return _refusal(tx, buffers)


def _refusal(tx: Any, buffers: tuple[tuple[int, ...], ...]) -> str | None:
    shapes = tuple(jax.ShapeDtypeStruct(s, _F32) for s in buffers)
    try:
        jax.eval_shape(lambda b: trace(tx, tx.init(b), b).coef, shapes)
    except Refused as e:
        return str(e)
    return None


def refusal(tx: Any, buffers: Sequence[Any]) -> str | None:
    """Why ``tx``'s step on these packed float32 buffers cannot be programs (``None``
    when it can)."""
    shapes = tuple(tuple(jnp.shape(b)) for b in buffers)
    try:
        return _refusal_cached(tx, shapes)
    except TypeError:  # a transform holding arrays is not hashable
        return _refusal(tx, shapes)
