"""update_and_apply and the one-pass Adam kernel: the numbers of the pure-JAX step and of
optax, the state tx.init made, and every transformation the step is used under."""

from __future__ import annotations

import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcopt
import funcopt.fused_plans
from funcopt.bench_workloads import many_loss, planned_bytes
from funcopt.fused import MIN_SEGMENTED, MIN_SIZE, PROGRAM_TARGET, SEGMENTS_TARGET, TARGET

needs_kernel = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None,
    reason="no C++ compiler on this machine: the kernel cannot be built",
)
pytestmark = [
    needs_kernel,
    pytest.mark.skipif(
        jax.default_backend() != "cpu", reason="the kernel is XLA:CPU's; elsewhere pure JAX runs"
    ),
]

CLOSE = dict(rtol=2e-6, atol=1e-6)
"""Kernel against pure step: float32 rounding, a few ulps of the parameters' scale (0.3),
compounded over 20 steps (XLA's own regrouping of the same divisions differs as much)."""

BIG = (2048, 256)  # 524,288 elements: MIN_SIZE, so the default runs it through the kernel
assert BIG[0] * BIG[1] >= MIN_SIZE


def make_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.standard_normal(BIG), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(256), jnp.float32),
        "none": None,
    }


def loss_fn(params, x):
    """A convex loss with coordinates of many scales (non-chaotic: runs compare closely)."""
    w, b = params["w"], params["b"]
    return 0.5 * jnp.sum(x[:, None] * jnp.square(w - 0.3)) + jnp.sum(jnp.abs(b) ** 1.5)


X = jnp.logspace(-2, 1, BIG[0], dtype=jnp.float32)

TRANSFORMS = {
    "adam": funcopt.adam(3e-2),
    "adamw": funcopt.adamw(3e-2, weight_decay=0.1),
    "adam, schedule": funcopt.adam(funcopt.cosine_decay_schedule(5e-2, 20)),
    "adamw, scheduled decay": funcopt.adamw(
        1e-2, b1=0.8, b2=0.99, eps=1e-6, weight_decay=funcopt.linear_schedule(0.1, 0.0, 20)
    ),
    "adam, array hyper-parameters": funcopt.adam(jnp.asarray(2e-2), b1=jnp.asarray(0.85)),
    "adam written out": funcopt.chain(
        funcopt.scale_by_adam(0.9, 0.999, 1e-8), funcopt.scale_by_learning_rate(3e-2)
    ),
}


def kernel_calls(step, *args) -> int:
    """How many times the compiled step calls the kernel."""
    return step.lower(*args).compile().as_text().count(f'custom_call_target="{TARGET}"')


def run(tx, steps: int, fused, params=None):
    step = funcopt.make_train_step(loss_fn, tx, fused=fused)
    params = make_params() if params is None else params
    state = tx.init(params)
    losses = []
    for _ in range(steps):
        params, state, loss = step(params, state, X)
        losses.append(float(loss))
    return params, state, losses


def test_the_kernel_builds_here():
    assert funcopt.fused_adam_available(), funcopt.fused._load()


@pytest.mark.parametrize("name", TRANSFORMS)
def test_kernel_step_equals_the_pure_jax_step(name):
    """20 steps, every leaf through the kernel, against tx.update + apply_updates in XLA:
    the same numbers to float32 rounding, and the state tx.init made (same structure,
    types and dtypes)."""
    tx = TRANSFORMS[name]
    assert funcopt.fused_plans.adam_plan(tx) is not None
    fused = run(tx, 20, True)
    pure = run(tx, 20, False)
    chex.assert_trees_all_equal_structs(fused[1], pure[1])
    chex.assert_trees_all_equal_dtypes(fused[:2], pure[:2])
    chex.assert_trees_all_close(fused[:2], pure[:2], **CLOSE)
    np.testing.assert_allclose(fused[2], pure[2], rtol=2e-6)
    assert fused[2][-1] < 0.9 * fused[2][0]  # and it trains


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (funcopt.adam(3e-2), optax.adam(3e-2)),
        (funcopt.adamw(3e-2, weight_decay=0.1), optax.adamw(3e-2, weight_decay=0.1)),
    ],
    ids=["adam", "adamw"],
)
def test_kernel_step_equals_optax(ours, theirs):
    """The independent oracle: optax's hand-written step, 20 steps."""
    params, state, losses = run(ours, 20, True)
    p, s = make_params(), theirs.init(make_params())

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p, X)
        u, s = theirs.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    want = []
    for _ in range(20):
        p, s, loss = step(p, s)
        want.append(float(loss))
    # optax rounds in another order: near a minimum, where Adam's step is m̂/√v̂ of tiny
    # moments, a few coordinates end a few float32 ulps of the learning rate apart.
    chex.assert_trees_all_close(params, p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses, want, rtol=1e-5)
    mu = optax.tree_utils.tree_get(s, "mu")
    chex.assert_trees_all_close(state[0].mu, mu, rtol=1e-5, atol=1e-6)  # read by name too


def test_default_runs_large_float32_leaves_through_the_kernel():
    """The compiled train step calls the kernel once per large leaf (the 256-element bias
    stays in XLA); not at all with fused=False, for a masked AdamW, for SGD or for
    bfloat16 parameters."""
    params = make_params()
    for tx, fused, calls in [
        (funcopt.adam(1e-3), None, 1),
        (funcopt.adam(1e-3), True, 2),
        (funcopt.adam(1e-3), False, 0),
        (funcopt.adamw(1e-3, mask={"w": True, "b": False, "none": None}), None, 0),
        (funcopt.adam(1e-3, eps_root=1e-8), None, 0),
        (funcopt.adam(1e-3, nesterov=True), None, 0),
        (funcopt.sgd(1e-3, momentum=0.9), None, 0),
    ]:
        step = funcopt.make_train_step(loss_fn, tx, fused=fused)
        assert kernel_calls(step, params, tx.init(params), X) == calls, (tx, fused)
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    step = funcopt.make_train_step(loss_fn, funcopt.adam(1e-3))
    assert kernel_calls(step, half, funcopt.adam(1e-3).init(half), X) == 0


def test_kernel_writes_in_place():
    """Donated, the kernel's outputs are its inputs' buffers: the compiled train step copies
    no parameter or moment (the loss, which reads the parameters, is made an operand of the
    kernel so that it is computed before they are overwritten), and every byte of the
    parameters and state is reused by the outputs."""
    params, tx = make_params(), funcopt.adam(1e-3)
    state = tx.init(params)
    step = funcopt.make_train_step(loss_fn, tx, fused=True)
    compiled = step.lower(params, state, X).compile()
    assert " copy(" not in compiled.as_text()
    resident = sum(x.nbytes for x in jax.tree.leaves((params, state)))
    assert compiled.memory_analysis().alias_size_in_bytes == resident


def test_fused_true_says_why_it_cannot_run():
    params = make_params()
    with pytest.raises(ValueError, match=r"^fused=True, but .*not funcopt\.adam or funcopt\.adamw"):
        funcopt.update_and_apply(funcopt.sgd(0.1), params, funcopt.sgd(0.1).init(params), params,
                                 fused=True)  # fmt: skip
    packed = funcopt.pack(many_leaves())
    tx = funcopt.apply_if_finite(funcopt.adam(0.1), 3)  # counts non-finite values: int32
    step = funcopt.make_packed_train_step(many_convex, tx, fused=True)
    refusal = r"^fused=True, but the fused kernel cannot run this step: apply_if_finite's"
    with pytest.raises(ValueError, match=refusal + r" step is not a program of elementwise.*int32"):
        step(packed, funcopt.packed_init(tx, packed), MANY_X)
    half = jax.tree.map(lambda x: x.astype(jnp.float16), params)
    tx = funcopt.adam(0.1)
    with pytest.raises(ValueError, match="float32 grads, got float16"):
        funcopt.update_and_apply(tx, half, tx.init(half), half, fused=True)


def test_mismatched_gradients_get_funcopt_error():
    """A gradient tree of another structure is refused as by tx.update, with the path."""
    params, tx = make_params(), funcopt.adam(0.1)
    grads = {"w": params["w"], "b": params["b"]}
    with pytest.raises(funcopt.StructureError):
        funcopt.update_and_apply(tx, grads, tx.init(params), params, fused=True)


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "no-jit"])
def test_update_and_apply_without_jit_too(jit):
    """Called eagerly or under the user's own jit, one step equals the pure one."""
    params, tx = make_params(), funcopt.adamw(0.05, weight_decay=0.3)
    grads = jax.grad(loss_fn)(params, X)

    def fn(g, s, p, fused):
        return funcopt.update_and_apply(tx, g, s, p, fused=fused)

    call = jax.jit(fn, static_argnums=3) if jit else fn
    got = call(grads, tx.init(params), params, True)
    want = call(grads, tx.init(params), params, False)
    chex.assert_trees_all_close(got, want, **CLOSE)


def test_vmapped_ensemble_equals_per_member_steps():
    """jax.vmap of the jitted step (an ensemble, with a learning rate per member through
    the state's count differing): each member's row of the kernel gets its own scalars."""
    tx = funcopt.adam(funcopt.linear_schedule(0.1, 0.01, 10))
    members = [make_params(seed) for seed in range(3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *members)
    states = [tx.init(p) for p in members]
    for k, s in enumerate(states):  # members at different steps of the schedule
        states[k] = (s[0]._replace(count=jnp.int32(2 * k)), *s[1:])
    stacked_state = jax.tree.map(lambda *x: jnp.stack(x), *states)
    step = funcopt.make_train_step(loss_fn, tx, fused=True)
    ensemble = jax.vmap(step, in_axes=(0, 0, None))
    got_p, got_s, _ = ensemble(stacked, stacked_state, X)
    pure = funcopt.make_train_step(loss_fn, tx, fused=False)
    for k in range(3):
        want_p, want_s, _ = pure(members[k], states[k], X)
        row = jax.tree.map(lambda x, k=k: x[k], (got_p, got_s))
        chex.assert_trees_all_close(row, (want_p, want_s), **CLOSE)


def test_differentiates_through_the_step():
    """A meta-gradient through one kernel step (w.r.t. the params and the learning rate)
    equals the pure step's: the kernel's derivative is that of the same equations."""

    x = X[:300]  # fused=True: the kernel runs on leaves of any size

    def after_one_step(params, lr, fused):
        tx = funcopt.adam(lr)
        grads = jax.grad(loss_fn)(params, x)
        new, _ = funcopt.update_and_apply(tx, grads, tx.init(params), params, fused=fused)
        return loss_fn(new, x)

    params = make_params()
    params["w"] = params["w"][:300]
    got = jax.grad(after_one_step, argnums=(0, 1))(params, jnp.float32(0.05), True)
    want = jax.grad(after_one_step, argnums=(0, 1))(params, jnp.float32(0.05), False)
    # The two primal steps differ by float32 ulps, which the derivative of √v̂ at tiny v̂
    # magnifies: 1e-4 relative over these 77k elements (7e-4 at one of 524k), where a
    # wrong rule is off by O(1).
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)


def test_packed_train_step_calls_the_kernel_per_buffer():
    """make_packed_train_step's elementwise mode: one kernel call per buffer (here one per
    leaf shape), the same numbers as without it."""
    tx = funcopt.adam(3e-2)
    runs = []
    for fused in (True, False):
        packed = funcopt.pack({k: v for k, v in make_params().items() if v is not None})
        state = funcopt.packed_init(tx, packed)
        step = funcopt.make_packed_train_step(loss_fn, tx, fused=fused)
        assert kernel_calls(step, packed, state, X) == (len(packed.buffers) if fused else 0)
        for _ in range(10):
            packed, state, loss = step(packed, state, X)
        runs.append((funcopt.unpack(packed), float(loss)))
    chex.assert_trees_all_close(runs[0], runs[1], **CLOSE)
    with pytest.raises(ValueError, match="elementwise"):
        funcopt.make_packed_train_step(loss_fn, tx, fused=True, elementwise=False)


def many_leaves(seed: int = 0) -> list:
    """A many-leaf model's parameters: 80 matrices of 32 × 32 sharing one packed buffer of
    81,920 elements (over MIN_SEGMENTED), and an empty leaf."""
    rng = np.random.default_rng(seed)
    leaves = [jnp.asarray(rng.standard_normal((32, 32)), jnp.float32) for _ in range(80)]
    return [*leaves, jnp.zeros((0, 32), jnp.float32)]


assert MIN_SEGMENTED <= 80 * 32 * 32 < MIN_SIZE
MANY_X = jnp.asarray(np.random.default_rng(1).standard_normal((32, 32)), jnp.float32)


def many_convex(params, x):
    """A convex loss of the same leaves, for comparing runs closely (``many_loss``'s tanh
    makes coordinates whose gradient crosses zero, where Adam magnifies float32 ulps)."""
    return sum(0.5 * jnp.sum(jnp.abs(x) * jnp.square(w - 0.3)) for w in params if w.size)


def gradients_through_one_step(loss, tx):
    """Reverse mode through an unjitted packed step: the gradient of ``loss`` after one step
    of ``tx`` with respect to the starting buffers, by default (``fused=None``) and
    concatenating (``fused=False``)."""
    start = funcopt.pack(many_leaves())

    def after_one_step(buffers, fused):
        packed = funcopt.Packed(buffers, start.layout)
        step = funcopt.make_packed_train_step(loss, tx, jit=False, fused=fused)
        new, _, _ = step(packed, funcopt.packed_init(tx, packed), MANY_X)
        return loss(funcopt.unpack(new), MANY_X)

    return tuple(jax.grad(after_one_step)(start.buffers, fused) for fused in (None, False))


def vmapped_equals_members(tx, target: str, tolerance: dict) -> None:
    """jax.vmap of the packed step over two members makes one call of ``target`` and equals
    each member's own concatenating step within ``tolerance``."""
    members = [funcopt.pack(many_leaves(seed)) for seed in range(2)]
    states = [funcopt.packed_init(tx, p) for p in members]
    step = funcopt.make_packed_train_step(many_convex, tx, jit=False)
    ensemble = jax.jit(jax.vmap(step, in_axes=(0, 0, None)))
    stacked = [jax.tree.map(lambda *x: jnp.stack(x), *t) for t in (members, states)]
    assert ensemble.lower(*stacked, MANY_X).as_text().count(target) == 1
    got, _, _ = ensemble(*stacked, MANY_X)
    pure = funcopt.make_packed_train_step(many_convex, tx, jit=False, fused=False)
    for k in range(2):
        want, _, _ = pure(members[k], states[k], MANY_X)
        chex.assert_trees_all_close([b[k] for b in got.buffers], list(want.buffers), **tolerance)


def planned_ratio(compiled, params, state) -> float:
    """XLA's buffer plan over params + grads + state (donated: outputs reuse the inputs)."""
    resident = sum(x.nbytes for x in jax.tree.leaves((params, state, params)))
    return planned_bytes(compiled) / resident


DECAYING = funcopt.linear_schedule(0.05, 0.01, 10)
FAMILIES = {  # every kernel family of a packed buffer, with optax's twin where it has one
    "adam": (funcopt.adam(3e-2), optax.adam(3e-2)),
    "adamw": (
        funcopt.adamw(1e-2, b1=0.8, weight_decay=0.2),
        optax.adamw(1e-2, b1=0.8, weight_decay=0.2),
    ),
    "gd, schedule": (funcopt.gd(DECAYING), optax.sgd(DECAYING)),
    "gdm": (funcopt.gdm(0.05, 0.9), optax.sgd(0.05 * (1 - 0.9), 0.9)),  # a damped average
    "sgd": (funcopt.sgd(0.05), optax.sgd(0.05)),
    "sgd-momentum": (funcopt.sgd(0.02, momentum=0.9), optax.sgd(0.02, momentum=0.9)),
    "sgd-nesterov, schedule": (
        funcopt.sgd(DECAYING, momentum=0.8, nesterov=True),
        optax.sgd(DECAYING, momentum=0.8, nesterov=True),
    ),
    "lion": (
        funcopt.lion(3e-3, b1=0.8, weight_decay=0.1),
        optax.lion(3e-3, b1=0.8, weight_decay=0.1),
    ),
    "lion, scheduled decay": (
        funcopt.lion(DECAYING, weight_decay=funcopt.linear_schedule(0.2, 0.0, 10)),
        None,
    ),
    "rmsprop": (funcopt.rmsprop(1e-2), optax.rmsprop(1e-2)),
    "adagrad": (funcopt.adagrad(0.05), optax.adagrad(0.05)),
    "rmsprop, eps outside the root, schedule": (
        funcopt.rmsprop(DECAYING, decay=0.8, eps=1e-6, eps_in_sqrt=False),
        optax.rmsprop(DECAYING, decay=0.8, eps=1e-6, eps_in_sqrt=False),
    ),
}


@pytest.mark.parametrize(("tx", "oracle"), list(FAMILIES.values()), ids=list(FAMILIES))
def test_packed_step_feeds_the_kernel_leaf_gradients(tx, oracle):
    """A packed buffer of many leaves gets its gradient leaf by leaf (one segmented kernel
    call, no packed gradient buffer: XLA's plan is params + grads + state, where the
    concatenated gradient costs a quarter to a half more), with the numbers of the tree
    step and of optax."""
    x = MANY_X
    packed = funcopt.pack(many_leaves())
    state = funcopt.packed_init(tx, packed)
    step = funcopt.make_packed_train_step(many_convex, tx)
    compiled = step.lower(packed, state, x).compile()
    text = compiled.as_text()
    assert text.count(f'custom_call_target="{SEGMENTS_TARGET}"') == 1
    assert text.count(f'custom_call_target="{TARGET}"') == 0
    assert " copy(" not in text
    assert planned_ratio(compiled, packed.buffers, state) < 1.1
    concatenated = funcopt.make_packed_train_step(many_convex, tx, fused=False)
    assert (
        planned_ratio(concatenated.lower(packed, state, x).compile(), packed.buffers, state) > 1.2
    )

    params = many_leaves()
    pure = funcopt.make_train_step(many_convex, tx, fused=False)
    pure_state = tx.init(params)
    theirs = many_leaves()
    their_state = oracle.init(theirs) if oracle else None

    @jax.jit
    def their_step(p, s):
        updates, s = oracle.update(jax.grad(many_convex)(p, x), s, p)
        return optax.apply_updates(p, updates), s

    for _ in range(10):
        packed, state, loss = compiled(packed, state, x)
        params, pure_state, pure_loss = pure(params, pure_state, x)
        if oracle:
            theirs, their_state = their_step(theirs, their_state)
    chex.assert_trees_all_close(funcopt.unpack(packed), params, **CLOSE)
    chex.assert_trees_all_close(state.inner, packed_moments(pure_state), **CLOSE)
    if oracle:
        chex.assert_trees_all_close(funcopt.unpack(packed), theirs, rtol=1e-5, atol=1e-6)
    assert float(loss) == pytest.approx(float(pure_loss), rel=1e-6)


def packed_moments(tree_state):
    """The tree step's state with each list of per-leaf moments packed into the layout's
    buffers (counts as they are): the packed step's state, if the two steps agree."""
    layout = funcopt.pack(many_leaves()).layout

    def packed(x):
        return tuple(funcopt.pack(x, layout).buffers) if isinstance(x, list) else x

    return jax.tree.map(packed, tree_state, is_leaf=lambda x: isinstance(x, list))


@pytest.mark.parametrize("fused", [None, False], ids=["kernel", "packed-gradient"])
@pytest.mark.parametrize(
    ("tx", "kernel"),
    [
        (funcopt.adamw(1e-2, weight_decay=0.1), True),
        (funcopt.sgd(1e-2, momentum=0.9), True),
        (funcopt.rmsprop(1e-2, centered=True), True),  # a traced program (fused_program)
        (funcopt.apply_if_finite(funcopt.adam(1e-2), 3), False),
    ],
    ids=["adamw", "sgd-momentum", "rmsprop-centered", "apply_if_finite"],
)
def test_packed_update_and_apply_equals_the_tree_step(tx, kernel, fused):
    """packed_update_and_apply on a tree gradient (leaf by leaf into a kernel, else packed
    first) equals the tree step over three steps, jitted and donated; the kernel runs for
    AdamW, SGD and centered RMSProp (a traced program), not for apply_if_finite (its test
    of the whole gradient is no program of elementwise operations)."""
    params = many_leaves()
    grads = jax.grad(many_convex)(params, MANY_X)
    packed = funcopt.pack(many_leaves())

    def step(p, s, g):
        return funcopt.packed_update_and_apply(tx, g, s, p, fused=fused)

    jitted = jax.jit(step, donate_argnums=(0, 1))
    state = tx.init(packed.buffers)
    text = jitted.lower(packed, state, grads).compile().as_text()
    calls = sum(text.count(f'custom_call_target="{t}"') for t in (SEGMENTS_TARGET, PROGRAM_TARGET))
    assert calls == int(kernel and fused is None)
    want, want_s = params, tx.init(params)
    for _ in range(3):  # steps after the first read the packed state
        want, want_s = funcopt.update_and_apply(tx, grads, want_s, want, fused=False)
        packed, state = jitted(packed, state, grads)
    chex.assert_trees_all_close(funcopt.unpack(packed), want, **CLOSE)


def test_packed_update_and_apply_names_a_mismatched_gradient():
    tx = funcopt.adam(1e-2)
    packed = funcopt.pack(many_leaves())
    grads = jax.grad(many_convex)(many_leaves(), MANY_X)
    with pytest.raises(funcopt.StructureError, match="layout"):
        funcopt.packed_update_and_apply(tx, grads[:-2], tx.init(packed.buffers), packed)
    grads[3] = grads[3][:16]
    with pytest.raises(funcopt.StructureError, match="shape"):
        funcopt.packed_update_and_apply(tx, grads, tx.init(packed.buffers), packed)


@pytest.mark.parametrize("name", ["adam", "sgd", "lion"])
def test_vmapped_packed_ensemble_equals_per_member_steps(name):
    """jax.vmap of the packed step: the segmented call takes each member's row of the
    buffers, of the coefficients and of every leaf gradient (with two, no and one state
    buffers)."""
    vmapped_equals_members(FAMILIES[name][0], SEGMENTS_TARGET, CLOSE)


@pytest.mark.parametrize("tx", [funcopt.adam(0.05), funcopt.sgd(0.05, momentum=0.9)])
def test_packed_step_through_the_segmented_kernel_differentiates(tx):
    """Reverse mode through an unjitted packed step (the segmented call's derivative is
    that of the same equations on the concatenated gradient) equals the concatenating
    step's."""
    got, want = gradients_through_one_step(many_loss, tx)
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)


def test_float32_params_under_x64():
    """With x64 on, funcopt computes 1 − βᵗ in float64 and rounds it for float32 leaves:
    the kernel's coefficients are rounded the same way."""
    with jax.enable_x64(True):
        params = make_params()
        assert params["w"].dtype == jnp.float32
        tx = funcopt.adam(0.05)
        grads = jax.grad(loss_fn)(params, X)
        state = tx.init(params)
        for _ in range(3):
            got = funcopt.update_and_apply(tx, grads, state, params, fused=True)
            want = funcopt.update_and_apply(tx, grads, state, params, fused=False)
            chex.assert_trees_all_close(got, want, **CLOSE)
            params, state = want
