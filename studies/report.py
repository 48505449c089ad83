"""Markdown tables from a study's summary.json: `python -m studies.report OUT_DIR`.

Prints the per-cell table (chosen lr, final loss / accuracies over seeds, median steps to
each target loss, seconds per step), the lr sweep, and the steps-to-target ratios of each arm
to the reference arm (default resnet-bn, same optimizer; `--vs` for others).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "not reached"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def tables(summary: dict[str, Any], reference: str = "resnet-bn",
           ref_optimizer: str | None = None) -> str:
    """The markdown tables of one summary."""
    targets = summary["target_losses"]
    rows = [r for r in summary["cells"] if "skipped" not in r]
    lines = ["| optimizer | arm | lr | seeds | final train loss | final train acc | test acc | "
             + " | ".join(f"steps to {t}" for t in targets) + " | s/step | first step s |",
             "|" + "---|" * (9 + len(targets))]
    for r in rows:
        steps = [("/".join("-" if h is None else str(h) for h in r[f"steps_to_{t}"]))
                 for t in targets]
        lines.append(
            f"| {r['optimizer']} | {r['arm']} | {r['lr']:g} | {len(r['seeds'])}"
            f"{' (' + str(r['n_diverged']) + ' diverged)' if r['n_diverged'] else ''} | "
            f"{r['final_loss_mean']:.3f} ± {r['final_loss_std']:.3f} | "
            f"{r['final_train_acc_mean']:.3f} | "
            f"{r['test_acc_mean']:.3f} ± {r['test_acc_std']:.3f} | "
            + " | ".join(steps) + f" | {_f(r['s_per_step'])} | {_f(r['first_step_s'])} |")
    out = ["\n".join(lines), ""]
    sweep = ["| optimizer | arm | lr | status | final train loss (seed "
             f"{summary['sweep_seed']}) | test acc |", "|---|---|---|---|---|---|"]
    for r in summary["sweep"]:
        sweep.append(f"| {r['optimizer']} | {r['arm']} | {r['lr']:g} | {r['status']} | "
                     f"{_f(r['final_loss'])} | {_f(r['test_acc'])} |")
    out += ["\n".join(sweep), ""]
    by = {(r["arm"], r["optimizer"]): r for r in rows}
    ratio = ["| arm / optimizer | " + " | ".join(
        f"median steps to {t} / {reference}" for t in targets) + " |",
        "|---|" + "---|" * len(targets)]
    for (arm, opt), r in sorted(by.items()):
        ref = by.get((reference, ref_optimizer or opt))
        if ref is None or arm == reference:
            continue
        cells = []
        for t in targets:
            a, b = r[f"steps_to_{t}_median"], ref[f"steps_to_{t}_median"]
            cells.append("n/a" if a is None or b is None else f"{a / b:.2f} ({a:g}/{b:g})")
        ratio.append(f"| {arm} / {opt} (vs {reference}/{ref_optimizer or opt}) | "
                     + " | ".join(cells) + " |")
    out.append("\n".join(ratio))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.report")
    p.add_argument("out")
    p.add_argument("--vs", default="resnet-bn", help="reference arm for the ratios")
    p.add_argument("--vs-optimizer", default=None, help="reference optimizer (default: same)")
    a = p.parse_args(argv)
    with open(os.path.join(a.out, "summary.json")) as f:
        print(tables(json.load(f), a.vs, a.vs_optimizer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
