"""The chapter's optimizers against three independent oracles.

1. optax: 1000 steps on random nested pytrees (float32 ≤ 1e-5, float64 ≤ 1e-10).
2. torch.optim (CPU): SGD (momentum, Nesterov), RMSprop, Adam, AdamW in float64.
3. The chapter's equations, written out here by hand, including the trajectories
   behind its figures on its loss surface (figures.md), in float64.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from oracle import assert_rel_close, random_params, run

import funcopt

# (id, funcopt factory, optax factory). gdm has no optax twin, but
# gdm(η, β) ≡ sgd(η (1 − β), β): the damped average is (1 − β) × the heavy-ball trace.
OPTAX_TABLE = [
    ("gd", lambda: funcopt.gd(0.05), lambda: optax.sgd(0.05)),
    ("gdm", lambda: funcopt.gdm(0.05, 0.9), lambda: optax.sgd(0.05 * (1 - 0.9), 0.9)),
    ("sgd-momentum", lambda: funcopt.sgd(0.02, 0.9), lambda: optax.sgd(0.02, 0.9)),
    ("sgd-nesterov", lambda: funcopt.sgd(0.02, 0.9, True), lambda: optax.sgd(0.02, 0.9, True)),
    ("rmsprop", lambda: funcopt.rmsprop(0.01), lambda: optax.rmsprop(0.01)),
    (
        "rmsprop-torchlike",
        lambda: funcopt.rmsprop(0.01, decay=0.99, eps_in_sqrt=False),
        lambda: optax.rmsprop(0.01, decay=0.99, eps_in_sqrt=False),
    ),
    (
        "rmsprop-centered-momentum",
        lambda: funcopt.rmsprop(0.01, centered=True, momentum=0.9, nesterov=True),
        lambda: optax.rmsprop(0.01, centered=True, momentum=0.9, nesterov=True),
    ),
    (
        "rmsprop-debiased-scaled",
        lambda: funcopt.rmsprop(0.01, initial_scale=1.0, bias_correction=True),
        lambda: optax.rmsprop(0.01, initial_scale=1.0, bias_correction=True),
    ),
    ("adam", lambda: funcopt.adam(0.01), lambda: optax.adam(0.01)),
    (
        "adam-eps_root",
        lambda: funcopt.adam(0.01, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
        lambda: optax.adam(0.01, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
    ),
    (
        "adamw",
        lambda: funcopt.adamw(0.01, weight_decay=0.1),
        lambda: optax.adamw(0.01, weight_decay=0.1),
    ),
    (
        "adamw-mask",
        lambda: funcopt.adamw(
            0.01, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
        ),
        lambda: optax.adamw(
            0.01, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
        ),
    ),
    (
        "adam-schedule",
        lambda: funcopt.adam(optax.exponential_decay(0.02, 100, 0.5)),
        lambda: optax.adam(optax.exponential_decay(0.02, 100, 0.5)),
    ),
]
IDS = [row[0] for row in OPTAX_TABLE]


@pytest.mark.parametrize(("name", "ours", "theirs"), OPTAX_TABLE, ids=IDS)
def test_matches_optax_float32(name, ours, theirs):
    params = random_params(0)
    got, _ = run(ours(), params, 1000, funcopt.apply_updates)
    want, _ = run(theirs(), params, 1000, optax.apply_updates)
    assert_rel_close(got, want, 1e-5)


@pytest.mark.parametrize(("name", "ours", "theirs"), OPTAX_TABLE, ids=IDS)
def test_matches_optax_float64(name, ours, theirs, x64):
    params = random_params(0, jnp.float64)
    got, _ = run(ours(), params, 1000, funcopt.apply_updates)
    want, _ = run(theirs(), params, 1000, optax.apply_updates)
    chex.assert_trees_all_equal_dtypes(got, params)
    assert_rel_close(got, want, 1e-10)


# ---- torch.optim ---------------------------------------------------------------------

TORCH_TABLE = [
    (
        "sgd-momentum",
        lambda: funcopt.sgd(0.02, 0.9),
        lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9),
    ),
    (
        "sgd-nesterov",
        lambda: funcopt.sgd(0.02, 0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True),
    ),
    (
        "rmsprop",
        lambda: funcopt.rmsprop(0.01, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-8),
    ),
    (
        "rmsprop-centered",
        lambda: funcopt.rmsprop(0.01, decay=0.9, eps=1e-8, eps_in_sqrt=False, centered=True),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8, centered=True),
    ),
    ("adam", lambda: funcopt.adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    (
        "adamw",
        lambda: funcopt.adamw(0.01, weight_decay=0.05),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
    ),
]


def _grad_np(p: np.ndarray, step: int, i: int) -> np.ndarray:
    """A deterministic gradient for leaf i at step: stretched quadratic plus noise."""
    noise = np.random.default_rng(1000 * step + i).standard_normal(p.shape)
    return (0.5 + i) * (p - 0.3) + noise


@pytest.mark.parametrize(("name", "ours", "theirs"), TORCH_TABLE, ids=[r[0] for r in TORCH_TABLE])
def test_matches_torch(name, ours, theirs, x64):
    shapes = [(4, 3), (5,), ()]
    init = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(shapes)]
    tparams = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in init]
    topt = theirs(tparams)
    params = [jnp.asarray(x, jnp.float64) for x in init]
    tx = ours()
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(200):
        grads = [jnp.asarray(_grad_np(np.asarray(p), step, i)) for i, p in enumerate(params)]
        updates, state = update(grads, state, params)
        params = funcopt.apply_updates(params, updates)
        for i, tp in enumerate(tparams):
            tp.grad = torch.from_numpy(np.asarray(_grad_np(tp.detach().numpy(), step, i)))
        topt.step()
    want = [tp.detach().numpy() for tp in tparams]
    assert_rel_close([np.asarray(p) for p in params], want, 1e-10)


# ---- the chapter, by hand ------------------------------------------------------------


class ChapterGDM:
    """The chapter's GDM class, on a dict of numpy arrays."""

    def __init__(self, lr, momentum=0.0):
        self.lr, self.beta, self.m = lr, momentum, None

    def step(self, p, g):
        self.m = np.zeros_like(p) if self.m is None else self.m
        self.m = self.beta * self.m + (1 - self.beta) * g
        return p - self.lr * self.m


class ChapterRMSProp:
    def __init__(self, lr, beta=0.9):
        self.lr, self.beta, self.v = lr, beta, None

    def step(self, p, g):
        self.v = np.zeros_like(p) if self.v is None else self.v
        self.v = self.beta * self.v + (1 - self.beta) * g**2
        return p - self.lr * g / np.sqrt(self.v)


class ChapterAdam:
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, beta1, beta2, eps, weight_decay
        self.t, self.m, self.v = 0, None, None

    def step(self, p, g):
        self.t += 1
        self.m = np.zeros_like(p) if self.m is None else self.m
        self.v = np.zeros_like(p) if self.v is None else self.v
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g**2
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = self.v / (1 - self.b2**self.t)
        # AdamW: θ ← θ − η (m̂ / (√v̂ + ε) + λ θ); λ = 0 is Adam.
        return p - self.lr * (m_hat / (np.sqrt(v_hat) + self.eps) + self.wd * p)


def chapter_loss_np(w):
    """f(w0, w1) = tanh(w0)² + 0.01 |w1| + sigmoid(w1), and its gradient."""
    w0, w1 = w
    s = 1 / (1 + math.exp(-w1))
    f = math.tanh(w0) ** 2 + 0.01 * abs(w1) + s
    grad = np.array(
        [2 * math.tanh(w0) * (1 - math.tanh(w0) ** 2), 0.01 * np.sign(w1) + s * (1 - s)]
    )
    return f, grad


def chapter_loss_jax(w):
    return jnp.tanh(w[0]) ** 2 + 0.01 * jnp.abs(w[1]) + jax.nn.sigmoid(w[1])


def _trajectory_funcopt(tx, steps):
    w = jnp.array([-4.0, 5.0], jnp.float64)
    state = tx.init(w)
    path = [np.asarray(w)]

    @jax.jit
    def step(w, state):
        g = jax.grad(chapter_loss_jax)(w)
        u, state = tx.update(g, state, w)
        return funcopt.apply_updates(w, u), state

    for _ in range(steps):
        w, state = step(w, state)
        path.append(np.asarray(w))
    return np.array(path)


def _trajectory_chapter(opt, steps):
    w = np.array([-4.0, 5.0])
    path = [w]
    for _ in range(steps):
        _, g = chapter_loss_np(w)
        w = opt.step(w, g)
        path.append(w)
    return np.array(path)


# Every run of the four figures (figures.md). Chaotic ones are compared over their first
# steps only: two correct float64 implementations drift apart after that. Plain GD at
# η = 3.0 / 2.5 parts by 1e-9 near step 75-85; RMSProp parts once it reaches the w1
# balance point s(1 − s) = 0.01, where the gradient is rounding noise that g / sqrt(v)
# blows up to a full step (η = 0.6: step 90; η = 0.3: 118; η = 2.5: 44).
FIGURE_RUNS = [
    ("GDM η=3.0", lambda: funcopt.gd(3.0), lambda: ChapterGDM(3.0), 60),
    ("GDM η=3.0 β=0.9", lambda: funcopt.gdm(3.0, 0.9), lambda: ChapterGDM(3.0, 0.9), 300),
    ("GDM η=0.6", lambda: funcopt.gdm(0.6), lambda: ChapterGDM(0.6), 300),
    (
        "RMSProp η=0.6",
        lambda: funcopt.rmsprop(0.6, 0.9, eps=0.0),
        lambda: ChapterRMSProp(0.6, 0.9),
        80,
    ),
    ("GDM η=0.3", lambda: funcopt.gdm(0.3), lambda: ChapterGDM(0.3), 300),
    ("GDM η=0.3 β=0.9", lambda: funcopt.gdm(0.3, 0.9), lambda: ChapterGDM(0.3, 0.9), 300),
    (
        "Adam η=0.3",
        lambda: funcopt.adam(0.3, 0.9, 0.999),
        lambda: ChapterAdam(0.3, 0.9, 0.999),
        300,
    ),
    (
        "RMSProp η=0.3",
        lambda: funcopt.rmsprop(0.3, 0.9, eps=0.0),
        lambda: ChapterRMSProp(0.3, 0.9),
        100,
    ),
    ("GDM η=2.5", lambda: funcopt.gd(2.5), lambda: ChapterGDM(2.5), 60),
    ("GDM η=2.5 β=0.9", lambda: funcopt.gdm(2.5, 0.9), lambda: ChapterGDM(2.5, 0.9), 300),
    (
        "RMSProp η=2.5",
        lambda: funcopt.rmsprop(2.5, 0.9, eps=0.0),
        lambda: ChapterRMSProp(2.5, 0.9),
        35,
    ),
    (
        "Adam η=2.5",
        lambda: funcopt.adam(2.5, 0.9, 0.999),
        lambda: ChapterAdam(2.5, 0.9, 0.999),
        300,
    ),
]


@pytest.mark.parametrize(
    ("name", "ours", "chapter", "steps"), FIGURE_RUNS, ids=[r[0] for r in FIGURE_RUNS]
)
def test_chapter_figure_trajectories(name, ours, chapter, steps, x64):
    got = _trajectory_funcopt(ours(), steps)
    want = _trajectory_chapter(chapter(), steps)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("ours", "chapter"),
    [
        (lambda: funcopt.gdm(0.1, 0.8), lambda: ChapterGDM(0.1, 0.8)),
        (lambda: funcopt.rmsprop(0.01, 0.9, eps=0.0), lambda: ChapterRMSProp(0.01, 0.9)),
        (lambda: funcopt.adam(0.01, 0.8, 0.95, 1e-8), lambda: ChapterAdam(0.01, 0.8, 0.95, 1e-8)),
        (
            lambda: funcopt.adamw(0.01, 0.8, 0.95, 1e-8, weight_decay=0.3),
            lambda: ChapterAdam(0.01, 0.8, 0.95, 1e-8, weight_decay=0.3),
        ),
    ],
    ids=["gdm", "rmsprop", "adam", "adamw"],
)
def test_chapter_equations_on_random_gradients(ours, chapter, x64):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(6)
    grads = rng.standard_normal((50, 6)) * np.logspace(-3, 1, 6)
    opt, tx = chapter(), ours()
    p, state, theta = jnp.asarray(p0), tx.init(jnp.asarray(p0)), p0
    for g in grads:
        theta = opt.step(theta, g)
        u, state = tx.update(jnp.asarray(g), state, p)
        p = funcopt.apply_updates(p, u)
    np.testing.assert_allclose(np.asarray(p), theta, rtol=1e-12, atol=1e-14)


def test_adam_first_step_is_learning_rate_times_sign():
    """With m̂₁ = g₁ and v̂₁ = g₁², Adam's first step is η·sign(g) (up to ε)."""
    g = jnp.array([3.0, -0.01, 250.0])
    tx = funcopt.adam(0.1)
    u, _ = tx.update(g, tx.init(jnp.zeros(3)))
    np.testing.assert_allclose(u, -0.1 * np.sign(g), rtol=1e-5)


# ---- composition ---------------------------------------------------------------------


def test_plain_chain_of_momentum_and_rms_is_not_adam():
    """The pitfall the design avoids: RMS measured on m, not g, and no bias correction."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((3, 8))
    naive = funcopt.chain(
        funcopt.scale_by_momentum(0.9), funcopt.scale_by_rms(0.999, 1e-8, eps_in_sqrt=False)
    )
    debiased_chain = funcopt.chain(
        funcopt.scale_by_momentum(0.9),
        funcopt.bias_correction(0.9),
        funcopt.scale_by_rms(0.999, 1e-8, eps_in_sqrt=False, bias_correction=True),
    )
    exact = funcopt.scale_by_adam(0.9, 0.999)
    txs = (naive, debiased_chain, exact)
    states = [tx.init(jnp.zeros(8)) for tx in txs]
    opt, theta = ChapterAdam(lr=1.0), np.zeros(8)
    for g in grads:
        outs = []
        for k, tx in enumerate(txs):
            u, states[k] = tx.update(jnp.asarray(g, jnp.float32), states[k])
            outs.append(np.asarray(u))
        new_theta = opt.step(theta, g)
        want, theta = theta - new_theta, new_theta  # the chapter's Adam direction
    np.testing.assert_allclose(outs[2], want, rtol=1e-5)
    assert np.median(np.abs(outs[0] / want)) > 10  # missing bias correction: ~40x too big
    assert np.median(np.abs(outs[1] - want) / np.abs(want)) > 0.1  # v of m, not of g


# ---- interoperability ----------------------------------------------------------------


def test_funcopt_inside_optax_chain_and_optax_inside_funcopt_chain():
    params = random_params(3)
    a = optax.chain(optax.clip_by_global_norm(1.0), funcopt.adam(0.01))
    b = funcopt.chain(optax.clip_by_global_norm(1.0), funcopt.adam(0.01))
    c = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.01))
    pa, _ = run(a, params, 100, optax.apply_updates)
    pb, _ = run(b, params, 100, funcopt.apply_updates)
    pc, _ = run(c, params, 100, optax.apply_updates)
    assert_rel_close(pa, pc, 1e-6)
    assert_rel_close(pb, pc, 1e-6)


def test_flax_nnx_optimizer_accepts_funcopt():
    from flax import nnx

    def train(tx):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))

        @nnx.jit
        def step(model, opt):
            grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
            opt.update(model, grads)

        for _ in range(20):
            step(model, opt)
        return nnx.state(model, nnx.Param)

    chex.assert_trees_all_close(train(funcopt.adamw(0.05)), train(optax.adamw(0.05)), rtol=1e-6)


# ---- JAX transformations -------------------------------------------------------------


def test_vmap_over_learning_rates_equals_separate_runs():
    params = random_params(4)
    lrs = jnp.array([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3])
    train = lambda lr: run(funcopt.adam(lr), params, 50, funcopt.apply_updates)[0]
    batched = jax.jit(jax.vmap(train))(lrs)
    oracle = jax.jit(lambda lr: run(optax.adam(lr), params, 50, optax.apply_updates)[0])
    for i in range(len(lrs)):
        assert_rel_close(jax.tree.map(lambda x, i=i: x[i], batched), oracle(lrs[i]), 1e-5)


def test_grad_through_update_learns_the_learning_rate():
    """d loss(θ₁) / dη through one Adam step, against optax differentiated the same way."""
    params = random_params(5)
    loss = lambda p: sum(jnp.sum(jnp.square(x - 1.0)) for x in jax.tree.leaves(p))

    def meta_loss(lr, make, apply):
        tx = make(lr)
        state = tx.init(params)
        for _ in range(3):
            u, state = tx.update(jax.grad(loss)(params), state, params)
            new = apply(params, u)
        return loss(new)

    ours = jax.grad(meta_loss)(0.05, funcopt.adam, funcopt.apply_updates)
    theirs = jax.grad(meta_loss)(0.05, optax.adam, optax.apply_updates)
    assert float(ours) != 0.0
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


ALL_CORE = {
    "gd": lambda: funcopt.gd(0.1),
    "gdm": lambda: funcopt.gdm(0.1, 0.9),
    "sgd": lambda: funcopt.sgd(0.1, 0.9, nesterov=True),
    "rmsprop": lambda: funcopt.rmsprop(0.1, centered=True),
    "adam": lambda: funcopt.adam(0.1),
    "adamw": lambda: funcopt.adamw(0.1),
}


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("name", list(ALL_CORE))
def test_dtypes_are_kept_and_updates_finite(name, dtype, maybe_jit, strict_dtypes):
    with jax.enable_x64(dtype == "float64"):
        params = random_params(6, jnp.dtype(dtype))
        tx = ALL_CORE[name]()
        state = tx.init(params)
        update = maybe_jit(tx.update)
        for _ in range(3):
            updates, state = update(params, state, params)
            new = funcopt.apply_updates(params, updates)
        chex.assert_trees_all_equal_dtypes(new, params)
        chex.assert_trees_all_equal_dtypes(updates, params)
        chex.assert_tree_all_finite(new)


@pytest.mark.parametrize("name", list(ALL_CORE))
def test_none_leaves_scalars_and_empty_trees(name, maybe_jit):
    tx = ALL_CORE[name]()
    params = {
        "w": jnp.ones((2,)),
        "frozen": None,
        "s": jnp.float32(1.5),
        "empty": jnp.zeros((0, 3)),
    }
    state = tx.init(params)
    updates, state = maybe_jit(tx.update)(params, state, params)
    assert updates["frozen"] is None
    assert updates["empty"].shape == (0, 3)
    assert updates["s"].shape == ()
    empty_state = tx.init({})
    out, _ = maybe_jit(tx.update)({}, empty_state, {})
    assert out == {}


def _final_second_moment(param_dtype, v_dtype=None):
    """Adam's v after 300 steps of shrinking gradients (bf16 values, same for every run)."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((300, 16)) * 0.99 ** np.arange(300)[:, None]
    tx = funcopt.scale_by_rms(0.999, 1e-8, eps_in_sqrt=False, moment_dtype=v_dtype)
    state = tx.init(jnp.zeros(16, param_dtype))
    update = jax.jit(tx.update)
    for g in jnp.asarray(grads, jnp.bfloat16):
        _, state = update(g.astype(param_dtype), state)
    return np.asarray(state.v, np.float32), state.v.dtype


def test_bfloat16_params_keep_a_float32_second_moment():
    """Gradients shrink, so a v that cannot decay ends ~26% too large; ours tracks float32."""
    v16, dtype = _final_second_moment(jnp.bfloat16)
    v32, _ = _final_second_moment(jnp.float32)
    assert dtype == jnp.float32
    np.testing.assert_allclose(v16, v32, rtol=1e-5)


def test_a_bfloat16_second_moment_cannot_decay():
    """Why that default: stored in bf16, 0.999 v rounds back to v (1 − β₂ < half an ulp)."""
    v_bf16, _ = _final_second_moment(jnp.bfloat16, jnp.bfloat16)
    v32, _ = _final_second_moment(jnp.float32)
    assert np.min(v_bf16 / v32) > 1.05


# ---- hyper-parameter validation -------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "arg", "value"),
    [
        (lambda: funcopt.adam(-1.0), "learning_rate", "-1.0"),
        (lambda: funcopt.adam(1e-3, b1=1.0), "b1", "1.0"),
        (lambda: funcopt.adam(1e-3, b2=-0.1), "b2", "-0.1"),
        (lambda: funcopt.adam(1e-3, eps=-1e-8), "eps", "-1e-08"),
        (lambda: funcopt.gdm(0.1, momentum=1.5), "momentum", "1.5"),
        (lambda: funcopt.rmsprop(0.1, decay=2.0), "decay", "2.0"),
        (lambda: funcopt.adamw(0.1, weight_decay=-1.0), "weight_decay", "-1.0"),
        (lambda: funcopt.sgd(float("nan")), "learning_rate", "nan"),
        (lambda: funcopt.sgd(0.1, momentum=-0.5), "momentum", "-0.5"),
        (lambda: funcopt.rmsprop(0.1, momentum=1.0), "momentum", "1.0"),
        (lambda: funcopt.adamw(0.1, b1=1.2), "b1", "1.2"),
    ],
)
def test_bad_hyperparameters_raise_naming_argument_and_value(make, arg, value):
    with pytest.raises(ValueError, match=rf"{arg}={value}"):
        make()


def test_traced_hyperparameters_are_allowed():
    def step(lr, b1):
        tx = funcopt.adam(lr, b1=b1)
        u, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
        return u

    out = jax.jit(step)(0.1, 0.9)
    np.testing.assert_allclose(out, [-0.1, -0.1], rtol=1e-5)


def test_equal_arguments_give_equal_hashable_transforms():
    assert funcopt.adam(1e-3) == funcopt.adam(1e-3)
    assert hash(funcopt.adamw(1e-3, weight_decay=0.1)) == hash(
        funcopt.adamw(1e-3, weight_decay=0.1)
    )
    assert funcopt.adam(1e-3) != funcopt.adam(2e-3)
