"""The gallery's figures. Each ``draw_*(opts)`` returns a matplotlib Figure (not yet saved).

Every network map here comes from the topology (``Network.cmap`` / ``kernel_states``) with the
solver's transforms, except the EOC chains with nonzero bias variance, which follow the
pre-activation recursion of :func:`kernelshape.solve.eoc_chain_states` (a random bias adds
``s_b^2`` to both q and the cross-kernel, which no activation transform can express).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import sympy as sp
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kernelshape.engine.activations import activation
from kernelshape.engine.formulas import C, kernel_formula
from kernelshape.engine.maps import cmap, qmap
from kernelshape.engine.quadrature import Scaled, expect_1d, expect_2d
from kernelshape.plots.style import CYCLE, LINESTYLES, MARKERS, OKABE_ITO, REFERENCE, new_figure
from kernelshape.solve import InfeasibleError, eoc_chain_states, shape
from kernelshape.solve.options import default
from kernelshape.topology import nets, parse_spec
from kernelshape.verify.approximation import kernel_approximation
from kernelshape.verify.theorem13 import check_cmap, polynomial_cmap, theorem13
from kernelshape.verify.theorem27 import (
    empirical_check,
    empirical_per_layer_ntk,
    infinite_check,
    per_layer_ntk,
)

DEPTHS = (1, 2, 5, 10, 20, 50, 100)
EOC_BIAS_VARIANCE = 0.05
ZETA, TAU, ETA = default("zeta"), default("tau"), default("eta")


class SkipFigure(Exception):
    """The figure cannot be drawn from what was given (e.g. no training run)."""


@dataclass
class PlotOptions:
    """``quick``: fewer depths / points / seeds (tests); ``activation`` for local-maps;
    ``runs``: trainer run directories for training-curves."""

    quick: bool = False
    activation: str | None = None
    runs: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers

@lru_cache(maxsize=256)
def _mlp(depth: int, act: str):
    return nets.mlp(depth, width=16, activation=act, input_dim=16, num_classes=2)


@lru_cache(maxsize=256)
def _transforms(depth: int, act: str, method: str, target: float | None):
    """Transforms of a depth-``depth`` MLP shaped by ``method`` (None: unattainable)."""
    if method == "none":
        return {}
    key = {"dks": "zeta", "tat": "eta" if act == "leaky_relu" else "tau"}[method]
    try:
        return shape(_mlp(depth, act), method, **{key: target}).transforms
    except InfeasibleError:
        return None


@lru_cache(maxsize=4)
def _eoc(act: str, bias_variance: float) -> tuple[float, float]:
    """(weight variance, q*) of the edge of chaos for ``act`` with ``bias_variance``."""
    info = shape(_mlp(1, act), "eoc", bias_variance=bias_variance).eoc[act]
    return float(info["weight_variance"]), float(info["q_fixed_point"])


def _eoc_states(act: str, depth: int, c: np.ndarray) -> list[tuple[float, np.ndarray]]:
    sw2, q_star = _eoc(act, EOC_BIAS_VARIANCE)
    return eoc_chain_states(activation(act), depth, sw2, EOC_BIAS_VARIANCE, c, q_star)


def _identity(ax: Axes, lo: float = -1.0, hi: float = 1.0, label: str | None = "identity") -> None:
    ax.plot([lo, hi], [lo, hi], color=REFERENCE, ls=(0, (4, 3)), lw=1.2, label=label, zorder=1)


def _note(ax: Axes, text: str) -> None:
    ax.text(0.97, 0.03, text, transform=ax.transAxes, va="bottom", ha="right", fontsize=10,
            bbox={"boxstyle": "round", "fc": "white", "ec": REFERENCE, "alpha": 0.9})


def _eoc_label(act: str = "tanh") -> str:
    sw2, _ = _eoc(act, EOC_BIAS_VARIANCE)
    return f"σ_w² = {sw2:.3f}, σ_b² = {EOC_BIAS_VARIANCE:g}"


# --------------------------------------------------------------------------- cmap-degeneration

def _network_cmaps(act: str, method: str, target: float | None, depths: tuple[int, ...],
                   c: np.ndarray) -> dict[int, np.ndarray | None]:
    out: dict[int, np.ndarray | None] = {}
    if method == "eoc":
        states = _eoc_states(act, max(depths), c)
        return {d: states[d - 1][1] for d in depths}
    for d in depths:
        t = _transforms(d, act, method, target)
        out[d] = None if t is None else np.asarray(_mlp(d, act).cmap(c, transforms=t))
    return out


DEGENERATION_PANELS = (
    ("ReLU, He init", "relu", "none", None),
    ("tanh, LeCun init (σ_w² = 1)", "tanh", "none", None),
    ("tanh, edge of chaos", "tanh", "eoc", None),
    (f"Leaky ReLU, TAT (η = {ETA:g})", "leaky_relu", "tat", ETA),
    (f"tanh, DKS (ζ = {ZETA:g})", "tanh", "dks", ZETA),
    (f"tanh, TAT (τ = {TAU:g})", "tanh", "tat", TAU),
)


def draw_cmap_degeneration(opts: PlotOptions) -> Figure:
    """Network C maps ``C_f(c)`` of MLPs of depth 1..100: standard, EOC, DKS, TAT."""
    depths = (1, 5, 20) if opts.quick else DEPTHS
    c = np.linspace(-1.0, 1.0, 65 if opts.quick else 201)
    fig = new_figure(16, 9)
    axes = fig.subplots(2, 3, sharex=True, sharey=True)
    for ax, (title, act, method, target) in zip(axes.flat, DEGENERATION_PANELS, strict=True):
        if method == "eoc":
            title = f"{title}\n({_eoc_label(act)})"
        _identity(ax, label=None)
        maps = _network_cmaps(act, method, target, depths, c)
        missing = [d for d, v in maps.items() if v is None]
        for i, d in enumerate(depths):
            if maps[d] is not None:
                ax.plot(c, maps[d], color=CYCLE[i % len(CYCLE)],
                        ls=LINESTYLES[i % len(LINESTYLES)], label=f"L = {d}")
        if missing:
            _note(ax, f"η = {ETA:g} unattainable for L = {', '.join(map(str, missing))}\n"
                      "(a Leaky-ReLU chain needs L ≥ 13)")
        if act == "tanh" and method == "none":
            net = _mlp(max(depths), act)
            q_last = float(np.asarray(net.kernel_states(1.0)[net.nonlinear_nodes[-1].id].q1))
            _note(ax, f"q shrinks with depth: $q_{{{max(depths)}}}$ = {q_last:.3f},\n"
                      "tanh acts almost linearly (nearly linear net)")
        ax.set_title(title)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1.05, 1.05)
    for ax in axes[-1]:
        ax.set_xlabel("input cosine $c$")
    for ax in axes[:, 0]:
        ax.set_ylabel("output cosine $C_f(c)$")
    handles = [Line2D([], [], color=CYCLE[i % len(CYCLE)], ls=LINESTYLES[i % len(LINESTYLES)],
                      label=f"depth L = {d}") for i, d in enumerate(depths)]
    handles.append(Line2D([], [], color=REFERENCE, ls=(0, (4, 3)), label="identity $C(c) = c$"))
    fig.legend(handles=handles, loc="outside right center", title="MLP depth")
    fig.suptitle("C-map degeneration with depth: standard and EOC initializations vs DKS/TAT "
                 "(MLPs, q = 1 inputs)")
    return fig


# --------------------------------------------------------------------------- local-maps

def draw_local_maps(opts: PlotOptions) -> Figure:
    """Local C map, its deviation from c, and Q map of an activation before/after DKS and TAT
    (constants of a 20-layer MLP)."""
    name = opts.activation or "tanh"
    base = activation(name)
    depth = 20
    variants: list[tuple[str, object]] = [(f"{name} (untransformed)", base)]
    for method, target, label in (("dks", ZETA, f"DKS, ζ = {ZETA:g}"),
                                  ("tat", ETA if name == "leaky_relu" else TAU,
                                   f"TAT, {'η' if name == 'leaky_relu' else 'τ'} = "
                                   f"{ETA if name == 'leaky_relu' else TAU:g}")):
        try:
            t = _transforms(depth, name, method, target)
        except ValueError:
            t = None
        if t:
            variants.append((f"{label} (L = {depth})", base.transformed(t[name])))
    n = 65 if opts.quick else 201
    c = np.linspace(-1.0, 1.0, n)
    q = np.linspace(0.02, 3.0, 40 if opts.quick else 120)
    fig = new_figure(16, 5.5)
    ax_c, ax_d, ax_q = fig.subplots(1, 3)
    _identity(ax_c)
    ax_d.axhline(0.0, color=REFERENCE, ls=(0, (4, 3)), lw=1.2, label="identity")
    _identity(ax_q, 0.0, 3.0)
    for i, (label, act) in enumerate(variants):
        kw = {"color": CYCLE[i], "ls": LINESTYLES[i], "label": label}
        values = np.asarray(cmap(act, c))
        ax_c.plot(c, values, **kw)
        ax_d.plot(c, values - c, **kw)
        ax_q.plot(q, np.asarray(qmap(act, q)), **kw)
        ax_q.plot([1.0], [float(qmap(act, 1.0))], marker=MARKERS[i], color=CYCLE[i], ms=7,
                  ls="none")
    ax_c.set(title="local C map at $q = 1$", xlabel="input cosine $c$", ylabel="$C(c)$",
             xlim=(-1, 1))
    ax_d.set(title="deviation from the identity", xlabel="input cosine $c$",
             ylabel="$C(c) - c$", xlim=(-1, 1))
    ax_q.set(title="local Q map", xlabel="input second moment $q$", ylabel="$Q(q)$",
             xlim=(0, 3))
    ax_q.set_ylim(0, max(3.0, min(ax_q.get_ylim()[1], 6.0)))
    ax_c.legend(loc="upper left")
    ax_q.legend(loc="upper left", title="markers: $Q(1)$")
    fig.suptitle(f"Local maps of {name} before and after the transformation "
                 r"$\hat\phi(x) = \gamma\,(\phi(\alpha x + \beta) + \delta)$"
                 f" (constants for a {depth}-layer MLP)")
    return fig


# --------------------------------------------------------------------------- c-propagation

def _propagation(act: str, method: str, target: float | None, depth: int,
                 c0: np.ndarray) -> np.ndarray | None:
    """c of the pair after each nonlinear layer: array (depth + 1, len(c0)), row 0 = c0."""
    if method == "eoc":
        states = _eoc_states(act, depth, c0)
        return np.vstack([c0] + [s[1] for s in states])
    t = _transforms(depth, act, method, target)
    if t is None:
        return None
    net = _mlp(depth, act)
    states = net.kernel_states(c0, 1.0, 1.0, transforms=t)
    return np.vstack([c0] + [np.asarray(states[n.id].c) for n in net.nonlinear_nodes])


PROPAGATION_CURVES = (
    ("ReLU, He", "relu", "none", None),
    ("tanh, LeCun", "tanh", "none", None),
    ("tanh, EOC", "tanh", "eoc", None),
    (f"Leaky ReLU, TAT η = {ETA:g}", "leaky_relu", "tat", ETA),
    (f"tanh, DKS ζ = {ZETA:g}", "tanh", "dks", ZETA),
    (f"tanh, TAT τ = {TAU:g}", "tanh", "tat", TAU),
)


def draw_c_propagation(opts: PlotOptions) -> Figure:
    """Cosine of a pair of inputs through the layers of a deep MLP (fixed-point convergence)."""
    depth = 30 if opts.quick else 100
    c0 = np.array([-0.5, 0.0, 0.5, 0.9])
    fig = new_figure(14, 9)
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    layers = np.arange(depth + 1)
    handles = []
    for i, (label, act, method, target) in enumerate(PROPAGATION_CURVES):
        values = _propagation(act, method, target, depth, c0)
        kw = {"color": CYCLE[i], "ls": LINESTYLES[i]}
        if method == "eoc":
            label = f"{label} ({_eoc_label(act)})"
        handles.append(Line2D([], [], label=label, **kw))
        if values is None:
            continue
        for j, ax in enumerate(axes.flat):
            ax.plot(layers, values[:, j], **kw)
    for j, ax in enumerate(axes.flat):
        ax.axhline(c0[j], color=REFERENCE, ls=(0, (4, 3)), lw=1.2)
        ax.set_title(f"input cosine $c_0$ = {c0[j]:g}")
        ax.set_xlim(0, depth)
        ax.set_ylim(-0.6, 1.02)
    for ax in axes[-1]:
        ax.set_xlabel(r"layer $\ell$ (nonlinear layers applied)")
    for ax in axes[:, 0]:
        ax.set_ylabel(r"cosine $c_\ell$ of the pair")
    handles.append(Line2D([], [], color=REFERENCE, ls=(0, (4, 3)), label="$c_0$ (no change)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=4)
    fig.suptitle(f"c-value propagation through a {depth}-layer MLP (both inputs with q = 1)")
    return fig


# --------------------------------------------------------------------------- theorem13

def _theorem13_rows(quick: bool) -> tuple[list, list]:
    zetas = (1.2, 2.0) if quick else (1.05, 1.2, 1.5, 2.0, 3.0)
    depths = (2,) if quick else (2, 10, 50)
    n = 129 if quick else 257
    dks = []
    for d in depths:
        for z in zetas:
            dks.append((d, z, theorem13(_mlp(d, "tanh"), "dks", zeta=z, n=n).subnets[0].check))
    others = []
    general = [("ReLU, He", "relu", "none"), ("tanh, LeCun", "tanh", "none"),
               ("tanh, TAT τ = 0.3", "tanh", "tat")]
    for label, act, method in general:
        for d in ((2,) if quick else (1, 3, 10, 30)):
            others.append((label, d, theorem13(_mlp(d, act), method, n=n).subnets[0].check))
    return dks, others


def draw_theorem13(opts: PlotOptions) -> Figure:
    """Measured deviations of network C maps against the Theorem 13 bounds."""
    dks, others = _theorem13_rows(opts.quick)
    fig = new_figure(17, 5.8)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    depths = sorted({d for d, _, _ in dks})
    for i, d in enumerate(depths):
        rows = [(ch.c_slope_1 - 1.0, ch.max_dev.value, ch.max_slope_dev.value)
                for dd, _, ch in dks if dd == d]
        x, y1, y2 = (np.array(v) for v in zip(*rows, strict=True))
        kw = {"color": CYCLE[i], "marker": MARKERS[i], "ls": "none", "ms": 8,
              "label": f"DKS tanh MLP, L = {d}"}
        ax1.plot(x, y1, **kw)
        ax2.plot(x, y2, **kw)
    xs = np.array([min(ch.c_slope_1 for _, _, ch in dks) - 1.0,
                   max(ch.c_slope_1 for _, _, ch in dks) - 1.0])
    xs = np.array([xs[0] / 1.5, xs[1] * 1.5])
    ax1.plot(xs, 2 * xs, color=REFERENCE, ls="--", label="bound $2(C'_f(1) - 1)$")
    ax2.plot(xs, 3 * xs, color=REFERENCE, ls="--", label="bound $3(C'_f(1) - 1)$")
    for ax, what in ((ax1, "|C_f(c) - c|"), (ax2, "|C'_f(c) - 1|")):
        ax.set(xscale="log", yscale="log",
               xlabel=r"$C'_f(1) - 1$  ($= \zeta - 1$ for DKS)",
               ylabel=rf"$\max_{{c \in [-1, 1]}} {what}$")
        ax.legend(loc="upper left")
    ax1.set_title("$C_f(0) = 0$: deviation bound")
    ax2.set_title("$C_f(0) = 0$: slope bound")
    # general bounds in terms of 1 - C'_f(0)
    points = [("DKS tanh (all above)", [(1 - ch.c_slope_0, ch.max_dev.value)
                                        for _, _, ch in dks])]
    for label in dict.fromkeys(lbl for lbl, _, _ in others):
        points.append((label, [(1 - ch.c_slope_0, ch.max_dev.value)
                               for lbl, _, ch in others if lbl == label]))
    b = np.array([0.02, 0.1, 0.3, 0.6, 0.9])
    for k, name in ((2, "$(1-b)c + bc^2$"), (3, "$(1-b)c + bc^3$")):
        pts = []
        for bb in b:
            coef = np.zeros(k + 1)
            coef[1], coef[k] = 1.0 - bb, bb
            ch = check_cmap(polynomial_cmap(coef), 129)
            pts.append((1 - ch.c_slope_0, ch.max_dev.value))
        points.append((f"constructed {name}", pts))
    for i, (label, pts) in enumerate(points):
        x, y = (np.array(v) for v in zip(*pts, strict=True))
        ax3.plot(x, y, color=CYCLE[i % len(CYCLE)], marker=MARKERS[i % len(MARKERS)], ls="none",
                 ms=7, label=label, mfc="none" if label.startswith("constructed") else None)
    lo = min(min(p[0] for p in pts) for _, pts in points)
    hi = max(max(p[0] for p in pts) for _, pts in points)
    xs = np.array([lo / 1.5, min(hi * 1.5, 1.0)])
    ax3.plot(xs, 2 * xs, color=REFERENCE, ls="--", label="upper $2(1 - C'_f(0))$")
    ax3.plot(xs, xs / 4, color=REFERENCE, ls=":", label="lower $(1 - C'_f(0))/4$")
    ax3.set(xscale="log", yscale="log", xlabel="$1 - C'_f(0)$",
            ylabel=r"$\max_{c \in [-1, 1]} |C_f(c) - c|$", title="general two-sided bound")
    ax3.legend(loc="upper left", fontsize=9)
    fig.suptitle("Theorem 13: measured C-map deviations (markers) against the bounds (grey)")
    return fig


# --------------------------------------------------------------------------- theorem27

def draw_theorem27(opts: PlotOptions) -> Figure:
    """Per-layer NTK deviation from x'x/d0 against 11(ζ − 1), and Θ_i(c) for one network."""
    zetas = (1.1, 1.5) if opts.quick else (1.05, 1.1, 1.2, 1.5, 2.0, 3.0)
    depths = (3,) if opts.quick else (5, 20)
    width = 128 if opts.quick else 512
    cos = np.linspace(-1.0, 1.0, 9)
    fig = new_figure(15, 6)
    ax1, ax2 = fig.subplots(1, 2)
    for i, d in enumerate(depths):
        spec = f"mlp:depth={d},width={width},input_dim=64,num_classes=10,activation=tanh"
        inf, emp = [], []
        net = parse_spec(spec)
        for z in zetas:
            transforms = shape(net, "dks", zeta=z).transforms
            inf.append(infinite_check(net, transforms, z, 129 if opts.quick else 257).max_dev)
            emp.append(empirical_check(net, transforms, z, cos, 0).max_dev)
        x = np.array(zetas) - 1.0
        ax1.plot(x, inf, color=CYCLE[i], marker=MARKERS[i], label=f"L = {d}, infinite width")
        ax1.plot(x, emp, color=CYCLE[i], marker=MARKERS[i], ls="none", mfc="none", ms=10,
                 label=f"L = {d}, width {width} (one network)")
    x = np.array([min(zetas) - 1.0, max(zetas) - 1.0])
    ax1.plot(x, 11 * x, color=REFERENCE, ls="--", label=r"bound $11(\zeta - 1)$")
    ax1.set(xscale="log", yscale="log", xlabel=r"$\zeta - 1$",
            ylabel=r"$\max_i \max_c |\Theta_i(x, x') - x^\top x'/d_0|$",
            title="per-layer NTK deviation vs the Theorem 27 bound")
    ax1.legend(loc="upper left")
    d, z = (3, 1.5) if opts.quick else (10, 1.5)
    spec = f"mlp:depth={d},width={width},input_dim=64,num_classes=10,activation=tanh"
    net = parse_spec(spec)
    transforms = shape(net, "dks", zeta=z).transforms
    c = np.linspace(-1.0, 1.0, 101)
    theta = per_layer_ntk(net, transforms, c)
    emp = empirical_per_layer_ntk(net, transforms, cos, 0)
    names = list(theta)
    pick = sorted({0, len(names) // 2, len(names) - 2, len(names) - 1})
    _identity(ax2, label=r"$x^\top x'/d_0 = c$")
    for j, k in enumerate(pick):
        name = names[k]
        ax2.plot(c, theta[name], color=CYCLE[j], ls=LINESTYLES[j],
                 label=rf"$\Theta_{{{k + 1}}}$ ({name}), infinite width")
        ax2.plot(cos, emp[name], color=CYCLE[j], marker=MARKERS[j], ls="none", mfc="none",
                 ms=8, label=rf"$\Theta_{{{k + 1}}}$, width {width}")
    ax2.set(xlabel=r"input cosine $c = x^\top x'/d_0$", ylabel=r"$\Theta_i(x, x')$",
            xlim=(-1, 1), title=rf"per-layer NTK of a DKS tanh MLP ($L = {d}$, $\zeta = {z:g}$)")
    ax2.legend(loc="upper left", fontsize=9)
    fig.suptitle(r"Theorem 27: per-layer NTK $\Theta_i(x, x') = \frac{1}{m\,n_{i-1}}"
                 r"\sum_k \langle \partial f_k(x)/\partial W_i,\ \partial f_k(x')/\partial W_i"
                 r"\rangle$ of DKS-shaped MLPs")
    return fig


# --------------------------------------------------------------------------- kernel-approx

def draw_kernel_approximation(opts: PlotOptions) -> Figure:
    """RMS error of the predicted q and c of a random DKS tanh MLP against width (log-log)."""
    spec = "mlp:depth=10,width=64,input_dim=64,activation=tanh"
    widths = (64, 256, 1024) if opts.quick else (64, 128, 256, 512, 1024, 2048, 4096)
    small = (64, 128) if opts.quick else (64, 128, 256)
    frame = kernel_approximation(spec, "dks", widths=widths, seeds=4 if opts.quick else 64)
    matrix = kernel_approximation(spec, "dks", widths=small, seeds=4 if opts.quick else 64,
                                  sampler="matrix")
    fig = new_figure(11, 6.5)
    ax = fig.subplots()
    w = np.array([p.width for p in frame.points], dtype=float)
    for i, (what, slope, attr) in enumerate((("q", frame.q_slope, "q_rmse"),
                                             ("c", frame.c_slope, "c_rmse"))):
        color = (OKABE_ITO["blue"], OKABE_ITO["vermillion"])[i]
        y = np.array([getattr(p, attr) for p in frame.points])
        ax.plot(w, y, color=color, marker=MARKERS[i], label=f"{what}: RMS error, fitted slope "
                                                              f"{slope:.2f}")
        ym = [getattr(p, attr) for p in matrix.points]
        ax.plot([p.width for p in matrix.points], ym, color=color, marker=MARKERS[i], ls="none",
                mfc="none", ms=12, label=f"{what}: full SUO matrices (trainer backend)")
        ax.plot(w, y[0] * np.sqrt(w[0] / w), color=REFERENCE, ls=":", lw=1.4,
                label=r"$\propto 1/\sqrt{n}$" if i == 0 else None)
    ax.set(xscale="log", yscale="log", xlabel="width $n$ (every hidden layer)",
           ylabel="RMS error of the predicted value",
           title=f"Kernel approximation: DKS tanh MLP, depth {frame.depth}, last hidden layer; "
                 f"input cosines {', '.join(f'{v:g}' for v in frame.cosines)}")
    ax.legend(loc="lower left")
    fig.suptitle(r"Predicted (Q/C maps) vs empirical $q = |h|^2/n$ and $c = \cos(h, h')$ of "
                 "random networks")
    return fig


# --------------------------------------------------------------------------- training-curves

def _read_run(path: str) -> tuple[str, list[dict]]:
    metrics = os.path.join(path, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise SkipFigure(f"{path!r} has no metrics.jsonl (give a `kernelshape train --out DIR` "
                         "run directory)")
    records = []
    with open(metrics, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rec = json.loads(line)
                if "loss" in rec and "step" in rec:
                    records.append(rec)
    label = os.path.basename(os.path.normpath(path))
    config = os.path.join(path, "config.json")
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            cfg = json.load(f)
        bits = [str(cfg.get(k)) for k in ("method", "optimizer") if cfg.get(k)]
        if bits:
            label = f"{label} ({', '.join(bits)})"
    return label, records


def draw_training_curves(opts: PlotOptions) -> Figure:
    """Training loss and accuracy against step for trainer run directories (``--run DIR``)."""
    if not opts.runs:
        raise SkipFigure("no training run given: pass --run DIR (repeatable), a run directory "
                         "written by `kernelshape train --out DIR`")
    runs = [_read_run(p) for p in opts.runs]
    fig = new_figure(14, 5.5)
    ax1, ax2 = fig.subplots(1, 2)
    acc_key = "test_acc"
    if not any(acc_key in r for _, recs in runs for r in recs):
        acc_key = "acc"
    for i, (label, recs) in enumerate(runs):
        kw = {"color": CYCLE[i % len(CYCLE)], "ls": LINESTYLES[i % len(LINESTYLES)]}
        steps = [r["step"] for r in recs]
        ax1.plot(steps, [r["loss"] for r in recs], label=label, **kw)
        acc = [(r["step"], r[acc_key]) for r in recs if r.get(acc_key) is not None]
        if acc:
            s, a = zip(*acc, strict=True)
            ax2.plot(s, a, marker=MARKERS[i % len(MARKERS)], ms=4, label=label, **kw)
    ax1.set(yscale="log", xlabel="step", ylabel="training loss (cross-entropy)",
            title="training loss")
    ax2.set(xlabel="step", ylabel="test accuracy" if acc_key == "test_acc" else
            "training accuracy (batch)", title="accuracy")
    ax1.legend(loc="upper right")
    ax2.legend(loc="lower right")
    fig.suptitle("Training curves (kernelshape reference trainer)")
    return fig


# --------------------------------------------------------------------------- formulas

FORMULA_CASES = (("relu", {}), ("erf", {"input_scale": 1.5}), ("gelu_exact", {}),
                 ("sin", {"input_scale": 1.3, "input_shift": 0.4}))


def draw_formulas(opts: PlotOptions) -> Figure:
    """C maps drawn from their closed-form formulas (lines) and by the engine's 2-D quadrature
    (markers), and the gap between the two."""
    c_line = np.linspace(-1.0, 1.0, 201)
    c_marks = np.linspace(-0.95, 0.95, 9 if opts.quick else 19)
    fig = new_figure(16, 6)
    ax_map, ax_gap = fig.subplots(1, 2)
    _identity(ax_map)
    for i, (name, transform) in enumerate(FORMULA_CASES):
        act = activation(name).transformed(transform) if transform else activation(name)
        formula = kernel_formula(act)
        curve = sp.lambdify(C, formula.cmap, "numpy")
        g = Scaled.of(act, 1.0)
        q_value = expect_1d([(g, 0), (g, 0)])
        marks = np.array([expect_2d(g, g, float(c), 0, 0) / q_value for c in c_marks])
        label = f"{name} {transform}" if transform else name
        ax_map.plot(c_line, curve(c_line) * np.ones_like(c_line), color=CYCLE[i],
                    ls=LINESTYLES[i], label=f"{label}: formula")
        ax_map.plot(c_marks, marks, marker=MARKERS[i], color=CYCLE[i], ls="none", ms=7)
        gap = np.abs(curve(c_marks) - marks)
        ax_gap.semilogy(c_marks, np.maximum(gap, 1e-18), marker=MARKERS[i], color=CYCLE[i],
                        ls=LINESTYLES[i], label=label)
    ax_map.set(title="C map: formula (lines) and quadrature (markers)",
               xlabel="input cosine $c$", ylabel="$C(c)$", xlim=(-1, 1))
    ax_gap.set(title="|formula - quadrature| (1e-18 shown for exact agreement)",
               xlabel="input cosine $c$", ylabel="absolute difference", xlim=(-1, 1))
    ax_map.legend(loc="upper left")
    ax_gap.legend(loc="upper left")
    fig.suptitle("Closed-form C maps (kernelshape.engine.formulas) against the float64 "
                 "quadrature route")
    return fig


FIGURES: dict[str, Callable[[PlotOptions], Figure]] = {
    "cmap-degeneration": draw_cmap_degeneration,
    "local-maps": draw_local_maps,
    "c-propagation": draw_c_propagation,
    "theorem13": draw_theorem13,
    "theorem27": draw_theorem27,
    "kernel-approximation": draw_kernel_approximation,
    "training-curves": draw_training_curves,
    "formulas": draw_formulas,
}
