"""The one table of every optimizer and wrapper funcopt has.

Each :class:`Entry` builds its transform from a learning rate (a number or a schedule).
The same rows drive

- the property, checkpoint, error and long-run tests (``available()``, at ``LR``);
- the oracle tests (``tests/test_oracles.py``), at each row's own ``lr``: the ``optax``
  twin (float32, and float64 where ``f64``), ``torch.optim`` in float64 where ``torch`` is
  given, and the paper's equations written out in NumPy where ``paper`` is given.

Rows with ``variant=True`` are other configurations of a row above, for the oracles only.
Rows name the funcopt attributes they need in ``requires``; ``missing()`` lists those
funcopt lacks and ``test_registry_complete`` fails on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
import optax.contrib

import funcopt as fo

LR = 1e-2


def _by_rank(p: Any) -> Any:
    """True for arrays of rank ≥ 1 (weights), False for scalars (a typical decay mask)."""
    return jax.tree.map(lambda x: x.ndim > 0, p)


def _matrices(p: Any) -> Any:
    """True for arrays of rank ≥ 2."""
    return jax.tree.map(lambda x: x.ndim > 1, p)


def _scalars(p: Any) -> Any:
    """True for scalars: the leaves frozen by the selective_transform row."""
    return jax.tree.map(lambda x: x.ndim == 0, p)


def _frozen_labels(p: Any) -> Any:
    return jax.tree.map(lambda x: "freeze" if x.ndim == 0 else "train", p)


def _labels(p: Any) -> Any:
    return jax.tree.map(lambda x: "adam" if x.ndim > 0 else "sgd", p)


class Entry(NamedTuple):
    name: str
    build: Callable[[Any], Any]  # learning rate (number or schedule) -> transform
    requires: tuple[str, ...]
    optax: Callable[[Any], Any] | None = None  # the same optimizer in optax
    wrap: Callable[[Any], Any] | None = None  # params as the transform expects them
    optax_wrap: Callable[[Any], Any] | None = None  # params as the optax twin expects them
    lr: float = LR  # the learning rate of the oracle runs
    f32: bool = True  # compared with optax over 1000 float32 steps (test_oracles)
    f64: bool = False  # also compared with optax in float64 (tolerance 1e-10)
    torch: Callable[[list, float], Any] | None = None  # (tensors, lr) -> torch.optim optimizer
    paper: Callable[[float], Any] | None = None  # lr -> per-leaf NumPy reference, .step(p, g)
    variant: bool = False  # another configuration of a row above: oracle tests only
    steps32: int = 1000  # float32 steps against optax (fewer for chaotic ones)

    def params(self, params: Any) -> Any:
        return self.wrap(params) if self.wrap else params

    def optax_params(self, params: Any) -> Any:
        return self.optax_wrap(params) if self.optax_wrap else params


def same(name: str, *, requires: tuple[str, ...] = (), **kw: Any) -> Callable[..., Entry]:
    """A row ``funcopt.<name>(lr, **kw)`` with ``optax.<name>(lr, **kw)`` as its twin."""

    def entry(label: str | None = None, **options: Any) -> Entry:
        twin = getattr(optax, name, None) or getattr(optax.contrib, name, None)
        return Entry(
            label or name,
            lambda lr: getattr(fo, name)(lr, **kw),
            (name, *requires),
            (lambda lr: twin(lr, **kw)) if twin is not None else None,
            **options,
        )

    return entry


# ---- paper references (NumPy, one object per leaf) ---------------------------------------


class ChapterGDM:
    """The chapter's GDM class: m = β m + (1 − β) g, θ ← θ − η m."""

    def __init__(self, lr: float, momentum: float = 0.0) -> None:
        self.lr, self.beta, self.m = lr, momentum, None

    def step(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.m = np.zeros_like(p) if self.m is None else self.m
        self.m = self.beta * self.m + (1 - self.beta) * g
        return p - self.lr * self.m


class ChapterRMSProp:
    """The chapter's RMSProp, no ε: v = β v + (1 − β) g², θ ← θ − η g / √v."""

    def __init__(self, lr: float, beta: float = 0.9) -> None:
        self.lr, self.beta, self.v = lr, beta, None

    def step(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.v = np.zeros_like(p) if self.v is None else self.v
        self.v = self.beta * self.v + (1 - self.beta) * g**2
        return p - self.lr * g / np.sqrt(self.v)


class ChapterAdam:
    """The chapter's Adam (and AdamW with λ ≠ 0), t from 1 at the first step."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0) -> None:
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, beta1, beta2, eps, weight_decay
        self.t, self.m, self.v = 0, None, None

    def step(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.t += 1
        self.m = np.zeros_like(p) if self.m is None else self.m
        self.v = np.zeros_like(p) if self.v is None else self.v
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g**2
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = self.v / (1 - self.b2**self.t)
        # AdamW: θ ← θ − η (m̂ / (√v̂ + ε) + λ θ); λ = 0 is Adam.
        return p - self.lr * (m_hat / (np.sqrt(v_hat) + self.eps) + self.wd * p)


class PaperYogi:
    """Zaheer et al. (2018), Algorithm 2, with m₀ = 0, v₀ = 10⁻⁶, bias-corrected as optax."""

    def __init__(self, lr: float, b1=0.9, b2=0.999, eps=1e-3) -> None:
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = self.v = None

    def step(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.t += 1
        self.m = np.zeros_like(p) if self.m is None else self.m
        self.v = np.full_like(p, 1e-6) if self.v is None else self.v
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.v - (1 - self.b2) * np.sign(self.v - g * g) * g * g
        m_hat, v_hat = self.m / (1 - self.b1**self.t), self.v / (1 - self.b2**self.t)
        return p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class LayerwiseDoG:
    """Ivgi et al. (2023), layer-wise DoG: η = max distance from θ₀ / √(Σ‖g‖² + ε)."""

    def __init__(self, lr: float, reps_rel=1e-4, eps=1e-8) -> None:
        self.lr, self.reps, self.eps = lr, reps_rel, eps
        self.start, self.d, self.total = None, 0.0, 0.0

    def step(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        if self.start is None:
            self.start, self.d = p.copy(), self.reps * (1 + np.linalg.norm(p))
        self.d = max(self.d, np.linalg.norm(p - self.start))
        self.total += np.linalg.norm(g) ** 2
        return p - self.lr * self.d / np.sqrt(self.total + self.eps) * g


class ZeilerAdadelta:
    """Zeiler (2012), Algorithm 1: no learning rate (η = 1)."""

    def __init__(self, lr: float, rho=0.95, eps=1e-6) -> None:
        del lr
        self.rho, self.eps, self.eg, self.ex = rho, eps, None, None

    def step(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.eg = np.zeros(p.shape) if self.eg is None else self.eg
        self.ex = np.zeros(p.shape) if self.ex is None else self.ex
        self.eg = self.rho * self.eg + (1 - self.rho) * np.abs(g) ** 2  # |g|²: complex too
        dx = -np.sqrt(self.ex + self.eps) / np.sqrt(self.eg + self.eps) * g
        self.ex = self.rho * self.ex + (1 - self.rho) * np.abs(dx) ** 2
        return p + dx


# ---- torch.optim (imported on use: it is slow to import) ---------------------------------


def _torch(name: str, **kw: Any) -> Callable[[list, float], Any]:
    def make(tensors: list, lr: float) -> Any:
        import torch

        return getattr(torch.optim, name)(tensors, lr=lr, **kw)

    return make


def _torch_amsgrad(lr: Any) -> Any:
    """torch's AMSGrad: the running max is over v, the bias correction after it."""
    return fo.chain(
        fo.precondition(
            fo.debiased_momentum(0.9),
            fo.chain(fo.second_moment(0.999), fo.running_max(), fo.bias_correction(0.999)),
            eps=1e-8,
        ),
        fo.scale_by_learning_rate(lr),
    )


def _lookahead_params(p: Any) -> Any:
    return fo.LookaheadParams.init_synced(p)


def _sam(lib: Any, contrib: Any, lr: Any) -> Any:
    """SAM over SGD with momentum, one normalised ascent step of 0.05 per cycle."""
    return contrib.sam(lib.sgd(lr, 0.9), lib.chain(contrib.normalize(), lib.sgd(0.05)))


def _no_state(params: Any) -> tuple[()]:
    return ()


def _squares(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
    """g², in at least float32 (jit would fuse a bfloat16 square into float32 math)."""

    def square(g: Any) -> Any:
        wide = g.astype(jax.numpy.float32) if jax.numpy.finfo(g.dtype).bits < 32 else g
        return wide * wide

    return jax.tree.map(square, updates), state


def _squared_grads(lib: Any) -> Any:
    """g², a stand-in estimate of the Hessian's diagonal, stateless as optax.stateless."""
    return lib.GradientTransformation(_no_state, _squares)


ENTRIES: list[Entry] = [
    # ---- the chapter's optimizers --------------------------------------------------------
    Entry(
        "gd",
        lambda lr: fo.gd(lr),
        ("gd",),
        lambda lr: optax.sgd(lr),
        lr=0.05,
        f64=True,
        paper=lambda lr: ChapterGDM(lr),
    ),
    # gdm(η, β) equals optax.sgd(η (1 − β), β): the damped average is (1 − β) × the trace.
    Entry(
        "gdm",
        lambda lr: fo.gdm(lr, 0.9),
        ("gdm",),
        lambda lr: optax.sgd((lambda c: 0.1 * lr(c)) if callable(lr) else 0.1 * lr, 0.9),
        lr=0.05,
        f64=True,
        paper=lambda lr: ChapterGDM(lr, 0.9),
    ),
    Entry("sgd", lambda lr: fo.sgd(lr), ("sgd",), lambda lr: optax.sgd(lr), lr=0.05),
    same("sgd", momentum=0.9)(
        "sgd-momentum", lr=0.02, f64=True, torch=_torch("SGD", momentum=0.9), variant=True
    ),
    same("sgd", momentum=0.9, nesterov=True)(
        "sgd-nesterov", lr=0.02, f64=True, torch=_torch("SGD", momentum=0.9, nesterov=True)
    ),
    same("rmsprop")(lr=0.01, f64=True),
    Entry(
        "rmsprop-chapter",
        lambda lr: fo.rmsprop(lr, 0.9, eps=0.0),
        ("rmsprop",),
        paper=lambda lr: ChapterRMSProp(lr, 0.9),
        variant=True,
    ),
    same("rmsprop", decay=0.99, eps_in_sqrt=False)(
        "rmsprop-torchlike",
        lr=0.01,
        f64=True,
        variant=True,
        torch=_torch("RMSprop", alpha=0.99, eps=1e-8),
    ),
    same("rmsprop", centered=True, eps_in_sqrt=False)(
        "rmsprop-centered-torchlike",
        lr=0.01,
        variant=True,
        torch=_torch("RMSprop", alpha=0.9, eps=1e-8, centered=True),
    ),
    same("rmsprop", centered=True, momentum=0.9, nesterov=True)(
        "rmsprop-centered", lr=0.01, f64=True
    ),
    same("rmsprop", initial_scale=1.0, bias_correction=True)(
        "rmsprop-debiased-scaled", lr=0.01, f64=True, variant=True
    ),
    same("adam")(
        lr=0.01, f64=True, torch=_torch("Adam"), paper=lambda lr: ChapterAdam(lr, 0.9, 0.999)
    ),
    same("adam", b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8)(
        "adam-eps_root", lr=0.01, f64=True, variant=True
    ),
    Entry(
        "adam-schedule",
        lambda lr: fo.adam(optax.exponential_decay(0.02, 100, 0.5)),
        ("adam",),
        lambda lr: optax.adam(optax.exponential_decay(0.02, 100, 0.5)),
        f64=True,
        variant=True,
    ),
    same("adamw", weight_decay=0.1)(
        lr=0.01,
        f64=True,
        torch=_torch("AdamW", weight_decay=0.1),
        paper=lambda lr: ChapterAdam(lr, 0.9, 0.999, weight_decay=0.1),
    ),
    same("adamw", weight_decay=0.1, mask=_by_rank)("adamw-mask", lr=0.01, f64=True),
    # ---- the adaptive optimizers beyond the chapter --------------------------------------
    same("nadam")(lr=0.01),
    same("nadam", b1=0.8, eps_root=1e-8)("nadam-eps_root", lr=0.01, variant=True),
    same("nadamw", weight_decay=0.1)(lr=0.01),
    same("amsgrad")(lr=0.01),
    same("amsgrad", bias_correction_mu=False, bias_correction_nu=False, eps_root=1e-8)(
        "amsgrad-uncorrected", lr=0.01, variant=True
    ),
    Entry(
        "amsgrad-torch-order",
        _torch_amsgrad,
        ("precondition", "running_max"),
        torch=_torch("Adam", amsgrad=True),
        variant=True,
    ),
    same("adamax")(lr=0.01, torch=_torch("Adamax")),
    same("adamaxw", weight_decay=0.1, mask=_matrices)(lr=0.01),
    same("adagrad")(lr=0.1),
    # torch: g / (√s + ε); optax and funcopt: g / √(s + ε): equal for ε = 0.
    same("adagrad", initial_accumulator_value=0.1, eps=0.0)(
        "adagrad-eps0",
        lr=0.1,
        variant=True,
        torch=_torch("Adagrad", initial_accumulator_value=0.1, eps=0.0),
    ),
    same("adadelta", weight_decay=0.01)(
        lr=1.0, torch=_torch("Adadelta", rho=0.9, eps=1e-6, weight_decay=0.01)
    ),
    Entry(
        "adadelta-zeiler",
        lambda lr: fo.adadelta(rho=0.95, eps=1e-6),
        ("adadelta",),
        paper=lambda lr: ZeilerAdadelta(lr, 0.95, 1e-6),
        variant=True,
    ),
    same("adabelief")(lr=0.01),
    same("adabelief", nesterov=True)("adabelief-nesterov", lr=0.01, variant=True),
    same("radam")(lr=0.01),
    same("radam", nesterov=True, threshold=4.0)("radam-nesterov", lr=0.01, variant=True),
    # torch adds ε to √v before dividing by √(1 − β₂ᵗ): equal for ε = 0.
    Entry(
        "radam-eps0",
        lambda lr: fo.radam(lr, eps=0.0),
        ("radam",),
        lr=0.01,
        torch=_torch("RAdam", eps=0.0),
        variant=True,
    ),
    same("yogi")(lr=0.01, paper=lambda lr: PaperYogi(lr)),
    # ---- Adam's relatives (optax.contrib's; optax's Adan) --------------------------------
    same("adopt")(lr=0.01, f64=True),
    same("adopt", b2=0.999, nesterov=True, use_clipping=False)(
        "adopt-nesterov-unclipped", lr=0.01, f64=True, variant=True
    ),
    same("ademamix", b3=0.999, weight_decay=0.1)(lr=0.01, f64=True),
    same("simplified_ademamix", alpha=1.0, weight_decay=0.1)(lr=0.001, f64=True),
    same("acprop", weight_decay=0.1)(lr=0.01, f64=True),
    same("adan", weight_decay=0.1)(lr=0.01, f64=True),
    # optax computes MADGRAD's √t from an int32 count in float32: 1e-8 apart in float64
    same("madgrad", weight_decay=0.01)(lr=0.01),
    # ---- sign methods, layer-wise, factored, noise ---------------------------------------
    same("lion", weight_decay=0.01)(f32=False),
    same("lion", weight_decay=0.1)("lion-decay", lr=0.001, variant=True),
    same("sign_sgd")(lr=0.003),
    same("signum")(f32=False),
    same("signum", beta=0.8)("signum-beta", lr=0.003, variant=True),
    same("lamb", weight_decay=0.01)(f32=False),
    same("lamb", weight_decay=0.1, mask=_matrices)("lamb-mask", lr=0.01, variant=True),
    same("lars")(f32=False),
    same("lars", weight_decay=0.01)("lars-decay", lr=0.5, variant=True),
    same(
        "lars",
        weight_decay=0.01,
        weight_decay_mask=_matrices,
        trust_ratio_mask=_matrices,
        nesterov=True,
    )("lars-masked-nesterov", lr=0.05, variant=True),
    same("novograd", weight_decay=0.01)(),
    same("adafactor", requires=("clip_by_block_rms",))(f32=False),
    same("adafactor", min_dim_size_to_factor=2, requires=("clip_by_block_rms",))(
        "adafactor-factored"
    ),
    Entry(
        "adafactor-momentum-decay",
        lambda lr: fo.adafactor(
            None,
            min_dim_size_to_factor=3,
            momentum=0.9,
            weight_decay_rate=0.01,
            clipping_threshold=None,
            decay_rate=0.7,
        ),
        ("adafactor",),
        lambda lr: optax.adafactor(
            None,
            min_dim_size_to_factor=3,
            momentum=0.9,
            weight_decay_rate=0.01,
            clipping_threshold=None,
            decay_rate=0.7,
        ),
        variant=True,
    ),
    same("adafactor", factored=False)("adafactor-unfactored", variant=True),
    Entry(
        "noisy_sgd",
        lambda lr: fo.noisy_sgd(lr, key=3),
        ("noisy_sgd", "add_noise"),
        lambda lr: optax.noisy_sgd(lr, key=3),
    ),
    # ---- modern --------------------------------------------------------------------------
    # Muon orthogonalises a noise-dominated momentum near the optimum, where one ulp
    # between two equal programs grows ~10× every ~50 steps: float32 over 200 steps only.
    Entry(
        "muon",
        lambda lr: fo.muon(lr),
        ("muon",),
        lambda lr: optax.contrib.muon(lr),
        steps32=200,
    ),
    # schedule-free methods replace the schedule: a constant rate with their own warmup
    Entry(
        "schedule_free_adamw",
        lambda lr: fo.schedule_free_adamw(LR, warmup_steps=1000),
        ("schedule_free_adamw",),
        lambda lr: optax.contrib.schedule_free_adamw(LR, warmup_steps=1000),
        f32=False,
    ),
    # ---- games and learning-rate-free steps ----------------------------------------------
    same("optimistic_gradient_descent", alpha=0.7, beta=0.3)(),
    Entry(
        "optimistic_adam_v2",
        lambda lr: fo.optimistic_adam_v2(lr, alpha=0.5, beta=0.8),
        ("optimistic_adam_v2",),
        lambda lr: optax.optimistic_adam_v2(lr, alpha=0.5, beta=0.8),
    ),
    Entry(
        "distance_over_gradients",
        lambda lr: fo.chain(
            fo.scale_by_distance_over_gradients(reps_rel=1e-4, global_scale=10.0),
            fo.scale_by_learning_rate(lr),
        ),
        ("scale_by_distance_over_gradients",),
        # optax's keeps Σ‖g‖² in shape (1,), which broadcasts (and a scalar parameter's
        # update becomes (1,)): compared in test_parameter_free.py with rank promotion on
        paper=lambda lr: LayerwiseDoG(lr * 10),
    ),
    same("dog")(lr=1.0, f64=True),
    same("dog", init_step=("learning_rate", 1e-2), weight_decay=0.01)(
        "dog-lr-decay", lr=1.0, f64=True, variant=True
    ),
    same("dowg")(lr=1.0, f64=True),
    same("dowg", init_estim_sq_dist=1e-3, weight_decay=0.01)(
        "dowg-init-decay", lr=1.0, f64=True, variant=True
    ),
    same("cocob")(lr=1.0, f64=True),
    same("cocob", alpha=20.0, weight_decay=0.01)("cocob-decay", lr=0.5, f64=True, variant=True),
    same("dadapt_adamw")(lr=1.0, f64=True),
    same("dadapt_adamw", betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)(
        "dadapt_adamw-decay", lr=1.0, f64=True, variant=True
    ),
    # d₁ = 1e-4: from optax's 1e-6, the float32 steps d η (η ≤ 1e-2 in the long runs) are
    # below the params' resolution, θ₀ − θ stays 0 and d never grows (optax's neither)
    same("prodigy", estim_lr0=1e-4)(lr=1.0, f64=True),
    same("prodigy")("prodigy-defaults", lr=1.0, f64=True, variant=True),
    same("prodigy", weight_decay=0.1, safeguard_warmup=True, beta3=0.99, estim_lr_coef=0.5)(
        "prodigy-options", lr=1.0, f64=True, variant=True
    ),
    # Mechanic's runs are chaotic (optax against itself from a start moved by 1e-7 parts by
    # 1e-3 after 1000 float32 steps): 30 float32 steps here, float64 in test_dadaptation.py
    Entry(
        "mechanize",
        lambda lr: fo.mechanize(fo.adam(lr)),
        ("mechanize",),
        lambda lr: optax.contrib.mechanize(optax.adam(lr)),
        steps32=30,
    ),
    # ---- curvature and sharpness ---------------------------------------------------------
    # Sophia with g² for the Hessian's diagonal (Hutchinson's, the default, needs obj_fn=);
    # γ = 1: with γ = 0.01 the steps are clipped to ±η, a sign, and the runs chaotic.
    Entry(
        "sophia",
        lambda lr: fo.sophia(lr, gamma=1.0, hessian_diagonal_fn=_squared_grads(fo)),
        ("sophia",),
        lambda lr: optax.contrib.sophia(lr, gamma=1.0, hessian_diagonal_fn=_squared_grads(optax)),
        f64=True,
    ),
    Entry(
        "sam",
        lambda lr: _sam(fo, fo, lr),
        ("sam", "normalize"),
        lambda lr: _sam(optax, optax.contrib, lr),
        f64=True,
    ),
    # ---- other coordinates ---------------------------------------------------------------
    # optax takes the SVD in float32 whatever the dtype: its float64 runs are not funcopt's
    # (a singular vector's sign may differ at a refresh)
    same("galore", rank=2, update_proj_gap=10)(),
    Entry(
        "split_real_and_imaginary",
        lambda lr: fo.split_real_and_imaginary(fo.adam(lr)),
        ("split_real_and_imaginary",),
        lambda lr: optax.contrib.split_real_and_imaginary(optax.adam(lr)),
        f64=True,
    ),
    Entry(
        "lion-smooth",
        lambda lr: fo.chain(fo.scale_by_lion(mode="smooth", smooth_beta=3.0), fo.scale(-lr)),
        ("scale_by_lion", "squash"),
        lambda lr: optax.chain(
            optax.scale_by_lion(mode="smooth", smooth_beta=3.0), optax.scale(-lr)
        ),
        variant=True,
    ),
    Entry(
        "lion-refined",
        lambda lr: fo.chain(fo.scale_by_lion(mode="refined"), fo.scale(-lr)),
        ("scale_by_lion", "squash"),
        lambda lr: optax.chain(optax.scale_by_lion(mode="refined"), optax.scale(-lr)),
        variant=True,
    ),
    Entry(
        "normalize_by_update_norm",
        lambda lr: fo.chain(fo.normalize_by_update_norm(0.5), fo.sgd(lr, 0.9)),
        ("normalize_by_update_norm",),
        lambda lr: optax.chain(optax.normalize_by_update_norm(0.5), optax.sgd(lr, 0.9)),
        variant=True,
    ),
    # ---- clipping in front of an optimizer -----------------------------------------------
    Entry(
        "clip_by_global_norm",
        lambda lr: fo.chain(fo.clip_by_global_norm(1.0), fo.adam(lr)),
        ("clip_by_global_norm",),
        lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr)),
        f32=False,
    ),
    Entry(
        "clip",
        lambda lr: fo.chain(fo.clip(0.5), fo.sgd(lr, 0.9)),
        ("clip",),
        lambda lr: optax.chain(optax.clip(0.5), optax.sgd(lr, 0.9)),
        f32=False,
    ),
    # ---- wrappers ------------------------------------------------------------------------
    Entry(
        "named_chain",
        lambda lr: fo.named_chain(
            ("adam", fo.scale_by_adam()), ("lr", fo.scale_by_learning_rate(lr))
        ),
        ("named_chain",),
        lambda lr: optax.named_chain(
            ("adam", optax.scale_by_adam()), ("lr", optax.scale_by_learning_rate(lr))
        ),
        f32=False,
    ),
    Entry(
        "masked",
        lambda lr: fo.chain(fo.masked(fo.scale_by_adam(), _by_rank), fo.scale_by_learning_rate(lr)),
        ("masked",),
        lambda lr: optax.chain(
            optax.masked(optax.scale_by_adam(), _by_rank), optax.scale_by_learning_rate(lr)
        ),
        f32=False,
    ),
    Entry(
        "multi_transform",
        lambda lr: fo.multi_transform({"adam": fo.adam(lr), "sgd": fo.sgd(lr, 0.9)}, _labels),
        ("multi_transform",),
        lambda lr: optax.multi_transform(
            {"adam": optax.adam(lr), "sgd": optax.sgd(lr, 0.9)}, _labels
        ),
        f32=False,
    ),
    Entry(
        "partition",
        lambda lr: fo.partition({"adam": fo.adam(lr), "sgd": fo.sgd(lr, 0.9)}, _labels),
        ("partition",),
        lambda lr: optax.partition({"adam": optax.adam(lr), "sgd": optax.sgd(lr, 0.9)}, _labels),
        f32=False,
    ),
    Entry(
        "freeze",
        lambda lr: fo.chain(fo.freeze(_matrices), fo.adam(lr)),
        ("freeze",),
        lambda lr: optax.chain(optax.masked(optax.set_to_zero(), _matrices), optax.adam(lr)),
        f32=False,
    ),
    Entry(
        "set_to_zero",
        lambda lr: fo.multi_transform({"adam": fo.adam(lr), "sgd": fo.set_to_zero()}, _labels),
        ("set_to_zero", "multi_transform"),
        lambda lr: optax.multi_transform(
            {"adam": optax.adam(lr), "sgd": optax.set_to_zero()}, _labels
        ),
        f32=False,
    ),
    Entry(
        "selective_transform",
        lambda lr: fo.selective_transform(fo.adam(lr), freeze_mask=_scalars),
        ("selective_transform",),
        # optax's takes only a tree of bools: its definition, with the labels as a function
        lambda lr: optax.partition(
            {"train": optax.adam(lr), "freeze": optax.set_to_zero()}, _frozen_labels
        ),
        f32=False,
    ),
    Entry(
        "inject_hyperparams",
        lambda lr: fo.inject_hyperparams(fo.adam)(learning_rate=lr, b1=0.9),
        ("inject_hyperparams",),
        lambda lr: optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=0.9),
        f32=False,
    ),
    Entry(
        "MultiSteps",
        lambda lr: fo.MultiSteps(fo.adam(lr), every_k_schedule=2).gradient_transformation(),
        ("MultiSteps",),
        lambda lr: optax.MultiSteps(optax.adam(lr), every_k_schedule=2).gradient_transformation(),
        f32=False,
    ),
    Entry(
        "apply_every",
        lambda lr: fo.chain(fo.adam(lr), fo.apply_every(2)),
        ("apply_every",),
        lambda lr: optax.chain(optax.adam(lr), optax.apply_every(2)),
        f32=False,
    ),
    Entry(
        "apply_if_finite",
        lambda lr: fo.apply_if_finite(fo.adam(lr), 3),
        ("apply_if_finite",),
        lambda lr: optax.apply_if_finite(optax.adam(lr), 3),
        f32=False,
    ),
    Entry(
        "lookahead",
        lambda lr: fo.lookahead(fo.adam(lr), sync_period=3, slow_step_size=0.5),
        ("lookahead", "LookaheadParams"),
        lambda lr: optax.lookahead(optax.adam(lr), sync_period=3, slow_step_size=0.5),
        wrap=_lookahead_params,
        optax_wrap=optax.LookaheadParams.init_synced,
        f32=False,
    ),
]

CORE = ("gd", "gdm", "sgd", "sgd-nesterov", "rmsprop", "rmsprop-centered", "adam", "adamw")
"""The chapter's optimizers: the long runs hold them to the tightest tolerance."""


def missing() -> list[str]:
    """Names some row needs that funcopt does not have."""
    return sorted({n for e in ENTRIES for n in e.requires if not hasattr(fo, n)})


def available() -> list[Entry]:
    """The main rows (no variants) whose funcopt names all exist."""
    return [e for e in ENTRIES if not e.variant and all(hasattr(fo, n) for n in e.requires)]


def oracle_rows(column: str) -> list[Entry]:
    """Every row, variants included, that has the oracle ``column`` (optax, torch, paper)."""
    return [
        e
        for e in ENTRIES
        if getattr(e, column) is not None and all(hasattr(fo, n) for n in e.requires)
    ]


def ids(entries: list[Entry]) -> list[str]:
    return [e.name for e in entries]
