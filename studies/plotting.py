"""Training-curve plots of a study, drawn with the `kernelshape.plots` gallery style.

One PNG per (data, network depth, optimizer): smoothed training loss against
steps and against wall time (seconds since the first step, so compilation is excluded), mean
over the seeds at the chosen learning rate with the min-max band; colours and line styles
(Okabe-Ito, colour-blind safe) come from `kernelshape.plots.style`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


def _curves(doc: dict[str, Any], window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    from studies.run import smoothed
    runs = [r for r in doc["runs"] if r["lr"] == doc.get("chosen_lr") and r["losses"]]
    if not runs:
        return None
    n = min(len(r["losses"]) for r in runs)
    loss = np.array([smoothed(r["losses"][:n], window) for r in runs])
    t = np.array([np.asarray(r["times"][:n]) - r["times"][0] for r in runs])
    return loss, np.arange(1, n + 1), np.median(t, axis=0)


def plot_study(out: str, cfg: dict[str, Any]) -> list[str]:
    """Write out/plots/*.png; returns their paths."""
    from kernelshape.plots.style import style

    cell_dir = os.path.join(out, "cells")
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for name in sorted(os.listdir(cell_dir)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(cell_dir, name)) as f:
            doc = json.load(f)
        if doc.get("skipped"):
            continue
        c = doc["cell"]
        key = (c["data"], c["spec"].partition(":")[0], c["depth"], c["optimizer"])
        groups.setdefault(key, []).append(doc)
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    paths = []
    for key, docs in sorted(groups.items()):
        with style():
            paths.append(_draw(key, docs, cfg, out))
    return paths


def _draw(key: tuple[Any, ...], docs: list[dict[str, Any]], cfg: dict[str, Any],
          out: str) -> str:
    """One figure: loss against steps (left) and against wall time (right), one line per arm."""
    from kernelshape.plots.style import CYCLE, LINESTYLES, REFERENCE, new_figure, save

    data, preset, depth, opt = key
    arms = [a["name"] for a in cfg["arms"]]
    arms += sorted({d["cell"]["arm"]["name"] for d in docs} - set(arms))   # cells of older configs
    acts = sorted({d["cell"]["activation"] for d in docs})
    fig = new_figure(12, 4.4)
    axes = fig.subplots(1, 2, sharey=True)
    for doc in sorted(docs, key=lambda d: arms.index(d["cell"]["arm"]["name"])):
        cur = _curves(doc, cfg.get("smooth", 10))
        if cur is None:
            continue
        loss, steps, t = cur
        i = arms.index(doc["cell"]["arm"]["name"])
        line = {"color": CYCLE[i % len(CYCLE)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
                "label": f"{doc['cell']['arm']['name']}"
                         + (f" {doc['cell']['activation']}" if len(acts) > 1 else "")
                         + f" (lr {doc['chosen_lr']:g}, n={len(loss)})"}
        for ax, x in zip(axes, (steps, t), strict=True):
            ax.plot(x, loss.mean(axis=0), **line)
            ax.fill_between(x, loss.min(axis=0), loss.max(axis=0), color=line["color"],
                            alpha=0.15, linewidth=0)
    for target in cfg.get("target_losses", []):
        for ax in axes:
            ax.axhline(target, color=REFERENCE, linewidth=0.8, linestyle=":")
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("wall time since first step (s)")
    axes[0].set_ylabel(f"training loss (running mean, {cfg.get('smooth', 10)} steps)")
    axes[0].legend(fontsize=9)
    fig.suptitle(f"{data}: {preset} depth {depth}, {', '.join(acts)}, {opt}")
    return save(fig, os.path.join(out, "plots", f"{data}_{preset}{depth}_{opt}.png"))
