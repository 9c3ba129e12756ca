"""funcopt.fused_program: any elementwise optimizer's packed step as a traced program, run by
the kernel over the leaves' gradients. Oracle: the same packed step with the gradient
concatenated (XLA's compilation of tx.update + apply_updates, itself held to tree mode and
to optax by tests/test_packing.py and tests/test_oracles.py)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from registry import available
from test_fused import (
    MANY_X,
    gradients_through_one_step,
    many_convex,
    many_leaves,
    needs_kernel,
    planned_ratio,
    vmapped_equals_members,
)

import funcopt
from funcopt import fused_plans, fused_program
from funcopt.fused import PROGRAM_TARGET, SEGMENTS_TARGET

pytestmark = [
    needs_kernel,
    pytest.mark.skipif(
        jax.default_backend() != "cpu", reason="the kernel is XLA:CPU's; elsewhere pure JAX runs"
    ),
]

ROUNDING = dict(rtol=1e-5, atol=1e-6)
"""Program against XLA's step after a few steps: float32 rounding (XLA's own exp, log and
reciprocal roots round by an ulp differently), compounded; a wrong operation is off by O(1)."""

REFUSED = {"apply_if_finite": "int32"}  # counts the non-finite gradients: a sum of integers


def _programmed() -> dict:
    """Every elementwise registry row that no hand-written kernel computes."""
    rows = {}
    for entry in available():
        tx = entry.build(1e-2)
        if funcopt.is_elementwise(tx) and not fused_plans.computes(tx, True):
            rows[entry.name] = tx
    return rows


PROGRAMMED = _programmed()


def calls(compiled, target: str) -> int:
    return compiled.as_text().count(f'custom_call_target="{target}"')


def run(tx, steps: int, fused, seed: int = 0, **elementwise):
    packed = funcopt.pack(many_leaves(seed))
    state = funcopt.packed_init(tx, packed, **elementwise)
    step = funcopt.make_packed_train_step(many_convex, tx, fused=fused, **elementwise)
    compiled = step.lower(packed, state, MANY_X).compile()
    ratio = planned_ratio(compiled, packed.buffers, state)
    for _ in range(steps):
        packed, state, loss = compiled(packed, state, MANY_X)
    return compiled, ratio, (packed, state, loss)


def test_the_programmed_rows_are_the_rest_of_the_registry():
    assert len(PROGRAMMED) >= 20
    assert {"nadam", "amsgrad", "adabelief", "rmsprop-centered", "MultiSteps"} <= set(PROGRAMMED)


@pytest.mark.parametrize("name", sorted(PROGRAMMED))
def test_every_elementwise_optimizer_runs_as_a_program(name):
    """One program call per packed buffer, no packed copy of the gradient (XLA's plan is
    params + grads + state), and the numbers of the concatenating step over 5 steps; the
    rows refused say why, and concatenate."""
    tx = PROGRAMMED[name]
    got, ratio, (packed, state, loss) = run(tx, 5, None)
    want, want_ratio, (w_packed, w_state, w_loss) = run(tx, 5, False)
    assert calls(want, PROGRAM_TARGET) == 0
    if name in REFUSED:
        assert REFUSED[name] in fused_program.refusal(tx, packed.buffers)
        assert calls(got, PROGRAM_TARGET) == 0
        return
    assert fused_program.refusal(tx, packed.buffers) is None
    assert calls(got, PROGRAM_TARGET) == 1 and calls(got, SEGMENTS_TARGET) == 0
    assert ratio < 1.1 < 1.15 < want_ratio
    chex.assert_trees_all_equal_structs(state, w_state)
    chex.assert_trees_all_close((packed, state), (w_packed, w_state), **ROUNDING)
    assert float(loss) == pytest.approx(float(w_loss), rel=1e-5)


def exotic(decay: float = 0.9) -> optax.GradientTransformation:
    """An elementwise transform of the operations the tracer rewrites or walks into: an
    integer power, clip, a select, sign and abs, a cond on the step count over the
    buffers, exp/tanh/log1p, a reciprocal power, an unchanged state buffer, a stored
    gradient and a buffer reset to a constant."""

    def init(params):
        def fill(x):  # a new buffer each (donated, none may be another's)
            return jax.tree.map(lambda p: jnp.full_like(p, x), params)

        return {"count": jnp.zeros([], jnp.int32), "m": fill(0), "g": fill(0), "one": fill(1),
                "z": fill(1)}  # fmt: skip

    def update(grads, state, params):
        count = state["count"] + 1

        def leaf(g, m, one, p):
            m = jnp.where(g > 0, decay * m + g**3, jnp.clip(m, -0.5, 0.5) - jnp.sign(g) * abs(p))
            u = jax.lax.cond(
                count % 2 == 0,
                lambda: m / (1 + jnp.exp(-g)) + (1 + g * g) ** -2,
                lambda: jnp.tanh(m) * jnp.log1p(g * g) * one,
            )
            return -0.1 * u, m

        treedef = jax.tree.structure(grads)
        parts = (jax.tree.leaves(x) for x in (grads, state["m"], state["one"], params))
        out = [leaf(*x) for x in zip(*parts, strict=True)]
        updates, m = (treedef.unflatten([o[k] for o in out]) for k in (0, 1))
        zeros = jax.tree.map(jnp.zeros_like, grads)
        new = {"count": count, "m": m, "g": grads, "one": state["one"], "z": zeros}
        return updates, new

    return optax.GradientTransformation(init, update)


def _forced_elementwise_runs(tx, steps: int) -> list:
    """``steps`` packed steps of a foreign ``tx`` declared elementwise, through the program
    and concatenating (each checked to be what it says): the final (packed, state) of each."""
    out = []
    for fused in (None, False):
        compiled, _, (packed, state, _) = run(tx, steps, fused, elementwise=True)
        assert calls(compiled, PROGRAM_TARGET) == int(fused is None)
        out.append((packed, state))
    return out


def test_a_foreign_transform_of_exotic_operations():
    """An optax-style transform of our own (forced elementwise): the tracer walks its cond,
    jnp.where, clip, integer and negative powers; equal to XLA's step over 4 steps (both
    branches of the cond)."""
    program, concatenating = _forced_elementwise_runs(exotic(), 4)
    chex.assert_trees_all_close(program, concatenating, **ROUNDING)


def test_optax_own_adam_runs_as_a_program():
    """optax.adam itself (forced elementwise, as packed_init allows): its own code traced,
    bit for bit in most coordinates, within rounding everywhere."""
    program, concatenating = _forced_elementwise_runs(optax.adam(1e-2), 5)
    chex.assert_trees_all_close(program, concatenating, **ROUNDING)


@pytest.mark.parametrize(
    ("tx", "why"),
    [
        (funcopt.apply_if_finite(funcopt.adam(1e-2), 3), "int32"),
        (funcopt.adam(1e-2, mu_dtype=jnp.bfloat16), "bfloat16"),
        (funcopt.lamb(1e-2), "reduce"),  # a per-leaf norm (not elementwise at all)
    ],
    ids=["apply_if_finite", "bf16 moments", "lamb"],
)
def test_a_step_that_is_not_a_program_is_refused_with_the_reason(tx, why):
    packed = funcopt.pack(many_leaves())
    assert why in fused_program.refusal(tx, packed.buffers)
    step = funcopt.make_packed_train_step(many_convex, tx, elementwise=True, fused=True)
    with pytest.raises(ValueError, match=f"not a program of elementwise operations: .*{why}"):
        step.lower(packed, funcopt.packed_init(tx, packed, elementwise=True), MANY_X)


@pytest.mark.parametrize("name", ["nadam", "rmsprop-centered"])
def test_vmapped_programs_equal_per_member_steps(name):
    """jax.vmap of the packed step: one program call, a row of coefficients per member."""
    vmapped_equals_members(PROGRAMMED[name], PROGRAM_TARGET, ROUNDING)


def test_a_program_step_differentiates():
    """Reverse mode through an unjitted packed step: the program's derivative (its own
    instructions in JAX) equals the concatenating step's."""
    got, want = gradients_through_one_step(many_convex, funcopt.adabelief(0.05))
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)


def test_run_is_the_kernel_in_jax():
    """fused_program.run (the small buffers' step and the derivative) on a whole buffer
    equals the kernel on its segments: one step of NAdam, traced by hand."""
    tx = funcopt.nadam(1e-2)
    leaves = many_leaves()
    packed = funcopt.pack(leaves)
    buffers = tuple(packed.buffers)
    grads = jax.grad(many_convex)(leaves, MANY_X)
    g = funcopt.pack(grads, packed.layout).buffers[0]
    traced = fused_program.trace(tx, tx.init(buffers), buffers)
    program = traced.programs[0]
    by_jax = fused_program.run(program, g, buffers[0], traced.states[0], traced.coef)
    packed_step = funcopt.packed_update_and_apply(tx, grads, tx.init(buffers), packed)
    chex.assert_trees_all_close(by_jax[0], packed_step[0].buffers[0], **ROUNDING)


@settings(max_examples=4, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 300)), min_size=2, max_size=6),
    fused=st.sampled_from([True, None]),
)
def test_random_layouts_equal_the_concatenating_step(shapes, fused):
    """Over random leaf shapes (blocks of the kernel cut across leaves of any length), with
    the kernel forced on small buffers: AMSGrad's program equals XLA's step."""
    rng = np.random.default_rng(len(shapes))
    leaves = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    tx = funcopt.amsgrad(1e-2)

    def loss(params, x):
        return sum(jnp.sum(jnp.square(w - x)) for w in params)

    out = []
    for mode in (fused, False):
        p = funcopt.pack(leaves)
        s = funcopt.packed_init(tx, p)
        step = funcopt.make_packed_train_step(loss, tx, fused=mode)
        for _ in range(3):
            p, s, _ = step(p, s, 0.3)
        out.append(funcopt.unpack(p))
    chex.assert_trees_all_close(out[0], out[1], **ROUNDING)
