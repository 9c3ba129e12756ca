"""funcopt.viz: the trajectory runner against the chapter's equations, the figures, extras.

The oracle is the chapter's update loop written out by hand in NumPy float64 with the
pathological loss's gradient derived by hand; nothing expected here comes from funcopt.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax.numpy as jnp
import numpy as np
import pytest

import funcopt
from funcopt import viz

W_INIT = (-4.0, 5.0)
STEPS = 300


# ---- the oracle: the chapter's equations, by hand --------------------------------------


def f(w: np.ndarray) -> float:
    return np.tanh(w[0]) ** 2 + 0.01 * abs(w[1]) + 1 / (1 + np.exp(-w[1]))


def grad_f(w: np.ndarray) -> np.ndarray:
    t = np.tanh(w[0])
    s = 1 / (1 + np.exp(-w[1]))
    return np.array([2 * t * (1 - t * t), 0.01 * np.sign(w[1]) + s * (1 - s)])


def chapter_run(optimizer: str, h: dict[str, float], steps: int = STEPS):
    """The chapter's GDM / RMSProp (no ε) / Adam loops, logged as in figures.md."""
    w = np.array(W_INIT, dtype=np.float64)
    m = np.zeros(2)
    v = np.zeros(2)
    t = 0
    params, losses = [w.copy()], [f(w)]
    for _ in range(steps):
        loss, g = f(w), grad_f(w)
        if optimizer == "GDM":
            beta = h.get("β", 0.0)
            m = beta * m + (1 - beta) * g
            w = w - h["η"] * m
        elif optimizer == "RMSProp":
            v = h["β"] * v + (1 - h["β"]) * g**2
            w = w - h["η"] * g / np.sqrt(v)
        elif optimizer == "Adam":
            t += 1
            b1, b2 = h["β1"], h["β2"]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            w = w - h["η"] * m_hat / (np.sqrt(v_hat) + 1e-8)
        else:
            raise ValueError(optimizer)
        params.append(w.copy())
        losses.append(loss)
    return np.array(params), np.array(losses)


# Every run of the four figures. Chaotic ones (figures.md: GD at η=3.0/2.5, RMSProp; in
# float64 too, RMSProp's ±η oscillation near the minimum amplifies the last bit) are
# compared over their first 20 steps only.
CHAOTIC = {("GDM", (("η", 3.0),)), ("GDM", (("η", 2.5),))}
RUNS = sorted(
    {(r.optimizer, r.hparams) for spec in viz.CHAPTER_FIGURES.values() for r in spec.runs},
    key=repr,
)
assert len(RUNS) == 12  # 2 + 2 + 4 + 4 runs, all different


def is_chaotic(optimizer: str, hparams) -> bool:
    return optimizer == "RMSProp" or (optimizer, hparams) in CHAOTIC


@pytest.mark.parametrize("optimizer,hparams", RUNS, ids=[f"{o}{dict(h)}" for o, h in RUNS])
def test_trajectory_equals_chapter_equations_float64(x64, optimizer, hparams):
    n = 20 if is_chaotic(optimizer, hparams) else STEPS
    want_p, want_l = chapter_run(optimizer, dict(hparams), n)
    tx = viz.make_optimizer(optimizer, dict(hparams))
    traj = viz.run_trajectory(tx, viz.pathological, W_INIT, n, dtype=jnp.float64)
    assert traj.params.dtype == jnp.float64
    assert traj.params.shape == (n + 1, 2) and traj.losses.shape == (n + 1,)
    np.testing.assert_allclose(np.asarray(traj.params), want_p, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.asarray(traj.losses), want_l, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("optimizer,hparams", RUNS, ids=[f"{o}{dict(h)}" for o, h in RUNS])
def test_figure_runs_in_float32_follow_the_float64_equations(optimizer, hparams):
    """The figures' own float32 runs: stable runs stay on the float64 path for 300 steps."""
    n = 20 if is_chaotic(optimizer, hparams) else STEPS
    if (optimizer, dict(hparams)["η"]) == ("Adam", 2.5):
        n = 200  # its late oscillation near the minimum amplifies float32 rounding
    tol = 1e-3 if n == 20 else 2e-3
    want_p, _ = chapter_run(optimizer, dict(hparams), n)
    traj = viz.run_trajectory(viz.make_optimizer(optimizer, dict(hparams)), steps=n)
    assert traj.params.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(traj.params, np.float64), want_p, atol=tol)


def test_logging_convention():
    """Start point with f there, then each new point with the loss before its update."""
    traj = viz.run_trajectory(funcopt.gd(0.5), steps=3)
    p = np.asarray(traj.params, np.float64)
    np.testing.assert_allclose(p[0], W_INIT)
    want = [f(np.array(W_INIT)), *(f(p[k]) for k in range(3))]
    np.testing.assert_allclose(np.asarray(traj.losses), want, rtol=1e-6)


def test_runner_accepts_optax(x64):
    import optax

    want_p, _ = chapter_run("GDM", {"η": 0.3}, 50)
    traj = viz.run_trajectory(optax.sgd(0.3), steps=50, dtype=jnp.float64)
    np.testing.assert_allclose(np.asarray(traj.params), want_p, rtol=1e-9, atol=1e-12)


def test_surfaces_by_hand():
    w = jnp.array([[0.5, -1.5], [3.0, 0.5], [1.0, 1.0]])
    a = np.asarray(w, np.float64)
    np.testing.assert_allclose(viz.pathological(w), [f(x) for x in a], rtol=1e-6)
    np.testing.assert_allclose(
        viz.rosenbrock(w), (1 - a[:, 0]) ** 2 + 100 * (a[:, 1] - a[:, 0] ** 2) ** 2, rtol=1e-6
    )
    np.testing.assert_allclose(
        viz.quadratic_bowl(w), 0.5 * a[:, 0] ** 2 + 5 * a[:, 1] ** 2, rtol=1e-6
    )
    assert float(viz.beale(jnp.array([3.0, 0.5]))) == 0.0  # its minimum
    assert float(viz.rosenbrock(jnp.array([1.0, 1.0]))) == 0.0


# ---- the chapter's qualitative claims, in numbers ---------------------------------------


def test_gdm_momentum_claims():
    """GDM η=3, β=0.9: escapes the first plateau, overshoots onto the lower plateau,
    escapes it between steps 60 and 80 by accumulating small gradients, and its
    oscillations around the minimum die down."""
    traj = viz.run_trajectory(viz.make_optimizer("GDM", {"η": 3.0, "β": 0.9}))
    loss = np.asarray(traj.losses, np.float64)
    w = np.asarray(traj.params, np.float64)
    assert loss[0] > 2.0 and loss[60] < 1.1  # off the first plateau by step 60
    assert np.all((loss[62:81] > 1.0) & (loss[62:81] < 1.1))  # the lower plateau, f ≈ 1
    assert loss[80] < loss[60]  # the loss drops between steps 60 and 80 ...
    step_w0 = np.abs(np.diff(w[:, 0]))
    assert np.all(np.diff(np.abs(w[60:81, 0])) < 0)  # ... while w0 heads to the minimum
    assert step_w0[79] > 2 * step_w0[59]  # with steps growing as momentum accumulates
    assert loss[100] < 0.5  # escaped
    assert np.ptp(loss[-100:]) < 1e-3  # oscillations have died down
    assert np.ptp(w[-50:, 0]) < 1e-2

    plain = np.asarray(viz.run_trajectory(viz.make_optimizer("GDM", {"η": 3.0})).losses)
    assert np.ptp(plain[-100:]) > 0.5  # without momentum it never settles


def test_rmsprop_oscillates_adam_damps():
    """Near the minimum RMSProp keeps stepping by about η per coordinate; Adam does not."""
    late = {}
    for name, h in [
        ("RMSProp", {"η": 0.3, "β": 0.9}),
        ("Adam", {"η": 0.3, "β1": 0.9, "β2": 0.999}),
    ]:
        w = np.asarray(viz.run_trajectory(viz.make_optimizer(name, h)).params, np.float64)
        late[name] = np.abs(np.diff(w[-100:], axis=0)).mean(axis=0)
    np.testing.assert_allclose(late["RMSProp"], 0.3, rtol=0.05)
    assert np.all(late["Adam"] < 1e-3)


# ---- the figures ------------------------------------------------------------------------

LABELS = {
    "momentum": ["GDM (η=3.0)", "GDM (η=3.0, β=0.9)"],
    "rmsprop": ["GDM (η=0.6)", "RMSProp (η=0.6, β=0.9)"],
    "adam": [
        "GDM (η=0.3)",
        "GDM (η=0.3, β=0.9)",
        "Adam (η=0.3, β1=0.9, β2=0.999)",
        "RMSProp (η=0.3, β=0.9)",
    ],
    "adam-large-lr": [
        "GDM (η=2.5)",
        "GDM (η=2.5, β=0.9)",
        "RMSProp (η=2.5, β=0.9)",
        "Adam (η=2.5, β1=0.9, β2=0.999)",
    ],
}
COLORS = {
    "momentum": ["red", "black"],
    "rmsprop": ["red", "black"],
    "adam": ["red", "gray", "blue", "black"],
    "adam-large-lr": ["red", "grey", "black", "blue"],
}
LIMITS = {
    "momentum": ((-5, 5), (-7, 7), None),
    "rmsprop": ((-5, 5), (-7, 7), (0, 2.5)),
    "adam": ((-5, 5), (-7, 7), None),
    "adam-large-lr": ((-8, 8), (-10, 6), None),
}


def plain(mathtext: str) -> str:
    """How matplotlib renders the chapter's mathtext labels, written in plain text."""
    for tex, char in [
        (r"$\eta$", "η"),
        (r"$\beta_1$", "β1"),
        (r"$\beta_2$", "β2"),
        (r"$\beta$", "β"),
    ]:
        mathtext = mathtext.replace(tex, char)
    return mathtext


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Run chapter_figures once; keep the paths it returns and the Figures it saved."""
    figures = {}
    build = viz.chapter_figure

    def recording(name, **kwargs):
        figures[name] = build(name, **kwargs)
        return figures[name]

    viz.chapter_figure = recording
    try:
        paths = viz.chapter_figures(tmp_path_factory.mktemp("figs"))
    finally:
        viz.chapter_figure = build
    return paths, figures


@pytest.mark.parametrize("name", list(LABELS))
def test_chapter_figure_contents(written, name):
    from matplotlib.colors import to_rgba

    fig = written[1][name]
    assert tuple(fig.get_size_inches()) == (11, 5)
    ax_s, ax_l = fig.axes[:2]
    xlim, ylim, loss_ylim = LIMITS[name]
    assert ax_s.get_xlim() == xlim and ax_s.get_ylim() == ylim
    if loss_ylim is not None:
        assert ax_l.get_ylim() == loss_ylim
    assert (ax_s.get_xlabel(), ax_s.get_ylabel()) == ("w0", "w1")
    assert (ax_l.get_xlabel(), ax_l.get_ylabel()) == ("steps", "loss")
    for ax in (ax_s, ax_l):
        labels = [plain(t.get_text()) for t in ax.get_legend().get_texts()]
        assert labels == LABELS[name]
        lines = ax.get_lines()
        assert [to_rgba(ln.get_color()) for ln in lines] == [to_rgba(c) for c in COLORS[name]]
        assert all(len(ln.get_xdata()) == STEPS + 1 for ln in lines)
    assert all(ln.get_marker() == "o" for ln in ax_s.get_lines())  # dots at each iterate
    grid = ax_l.xaxis.get_gridlines()[0]
    assert grid.get_visible() and grid.get_linestyle() == ":"
    contour = ax_s.collections[0]
    assert contour.get_cmap().name == "viridis"
    assert 15 <= len(contour.levels) <= 25  # "20 levels" (matplotlib picks nice ones)


def test_chapter_figures_written(written):
    paths, figures = written
    assert sorted(figures) == sorted(LABELS)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(f"chapter-{n}.{e}" for n in LABELS for e in ("png", "svg"))
    for p in paths:
        with open(p, "rb") as fh:
            head = fh.read(200)
        if p.endswith(".png"):
            assert head.startswith(b"\x89PNG")
        else:
            assert b"<svg" in head or b"<?xml" in head
        assert os.path.getsize(p) > 10_000


def test_plotting_functions_take_and_return_ax():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    traj = viz.run_trajectory(funcopt.gd(0.3), steps=5)
    assert viz.plot_surface(viz.beale, ax, extent=(-4, 4, -4, 4), n=10) is ax
    assert viz.plot_path(traj, ax, label="x") is ax
    assert viz.plot_loss(traj, ax) is ax


# ---- beyond the chapter ----------------------------------------------------------------


def test_sweep_matches_separate_runs(x64):
    lrs, betas, n = [0.3, 3.0], [0.0, 0.9], 40
    got = viz.sweep(lambda lr, b: funcopt.gdm(lr, b), lrs, betas, steps=n, dtype=jnp.float64)
    assert got.shape == (2, 2)
    for i, lr in enumerate(lrs):
        for j, b in enumerate(betas):
            w, _ = chapter_run("GDM", {"η": lr, "β": b}, n)
            np.testing.assert_allclose(float(got[i, j]), f(w[-1]), rtol=1e-9)
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    assert viz.plot_sweep(lrs, betas, got, ax) is ax
    assert len(ax.texts) == 4


def test_adam_effective_step(x64):
    b2, eta, n = 0.999, 0.3, 5
    got = np.asarray(viz.adam_effective_step(eta, 0.9, b2, steps=n, dtype=jnp.float64))
    assert got.shape == (n, 2)
    w, _ = chapter_run("Adam", {"η": eta, "β1": 0.9, "β2": b2}, n)
    v = np.zeros(2)
    for t in range(1, n + 1):
        v = b2 * v + (1 - b2) * grad_f(w[t - 1]) ** 2
        np.testing.assert_allclose(got[t - 1], eta / (np.sqrt(v / (1 - b2**t)) + 1e-8), rtol=1e-9)
    np.testing.assert_allclose(got[0], eta / (np.abs(grad_f(w[0])) + 1e-8), rtol=1e-9)
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    assert viz.plot_effective_step(got, ax, learning_rate=eta) is ax


def test_animate_race(tmp_path):
    from PIL import Image

    runs = [
        viz.Run("GDM", (("η", 2.5), ("β", 0.9)), "grey"),
        viz.Run("Adam", (("η", 2.5),), "blue"),
    ]
    out = viz.animate_race(runs, tmp_path / "race.gif", steps=20, frames=5, fps=5)
    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames == 5


def test_import_funcopt_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, funcopt; assert 'matplotlib' not in sys.modules; funcopt.viz.pathological"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
