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


def _group(r: dict[str, Any]) -> str:
    return f"{r['data']} depth-{r['depth']} {r['activation']}"


def _references(rows: list[dict[str, Any]], r: dict[str, Any], reference: str,
                optimizer: str) -> list[dict[str, Any]]:
    """The reference rows for row `r`: same data and depth (activation may differ: a rectifier
    study's ResNet-BN is pinned to relu), arm named `reference`, or else the one arm named
    `reference-<suffix>` (`resnet-bn` finds `resnet-bn-relu`)."""
    same = [x for x in rows if (x["data"], x["depth"]) == (r["data"], r["depth"])
            and x["optimizer"] == optimizer]
    exact = [x for x in same if x["arm"] == reference]
    if exact:
        return exact
    prefixed = {x["arm"] for x in same if x["arm"].startswith(reference + "-")}
    return [x for x in same if x["arm"] in prefixed] if len(prefixed) == 1 else []


def tables(summary: dict[str, Any], reference: str = "resnet-bn",
           ref_optimizer: str | None = None) -> str:
    """The markdown tables of one summary."""
    targets = summary["target_losses"]
    rows = [r for r in summary["cells"] if "skipped" not in r]
    lines = ["| data / net | optimizer | arm | lr | seeds | final train loss | final train acc | "
             "test acc | " + " | ".join(f"steps to {t}" for t in targets) + " | "
             + " | ".join(f"s to {t}" for t in targets) + " | s/step | first step s |",
             "|" + "---|" * (10 + 2 * len(targets))]
    for r in rows:
        steps = [("/".join("-" if h is None else str(h) for h in r[f"steps_to_{t}"]))
                 for t in targets]
        secs = [_f(r.get(f"seconds_to_{t}_median")) for t in targets]
        edge = r.get("lr_at_grid_edge")
        lines.append(
            f"| {_group(r)} | {r['optimizer']} | {r['arm']} | {r['lr']:g}"
            f"{' (' + edge + ' edge)' if edge else ''} | {len(r['seeds'])}"
            f"{' (' + str(r['n_diverged']) + ' diverged)' if r['n_diverged'] else ''} | "
            f"{r['final_loss_mean']:.3f} ± {r['final_loss_std']:.3f} | "
            f"{r['final_train_acc_mean']:.3f} | "
            f"{r['test_acc_mean']:.3f} ± {r['test_acc_std']:.3f} | "
            + " | ".join(steps) + " | " + " | ".join(secs)
            + f" | {_f(r['s_per_step'])} | {_f(r['first_step_s'])} |")
    out = ["\n".join(lines), ""]
    sweep = ["| data / net | optimizer | arm | lr | status | final train loss (seed "
             f"{summary['sweep_seed']}) | test acc |", "|---|---|---|---|---|---|---|"]
    for r in summary["sweep"]:
        sweep.append(f"| {_group(r)} | {r['optimizer']} | {r['arm']} | {r['lr']:g} | "
                     f"{r['status']} | {_f(r['final_loss'])} | {_f(r['test_acc'])} |")
    out += ["\n".join(sweep), ""]
    ratio = ["| data / net | arm / optimizer | reference | " + " | ".join(
        f"median steps to {t}: ratio (arm/ref)" for t in targets) + " | "
        + " | ".join(f"median s to {t}: ratio" for t in targets) + " |",
        "|---|---|---|" + "---|" * (2 * len(targets))]
    for r in sorted(rows, key=lambda r: (_group(r), r["arm"], r["optimizer"])):
        refs = _references(rows, r, reference, ref_optimizer or r["optimizer"])
        if not refs or r["arm"] == refs[0]["arm"]:
            continue
        ref = refs[0]
        cells = []
        for key in ("steps_to", "seconds_to"):
            for t in targets:
                a, b = r.get(f"{key}_{t}_median"), ref.get(f"{key}_{t}_median")
                cells.append("n/a" if a is None or b is None or b == 0
                             else f"{a / b:.2f} ({a:.3g}/{b:.3g})")
        ratio.append(f"| {_group(r)} | {r['arm']} / {r['optimizer']} | {ref['arm']} / "
                     f"{ref['optimizer']} | " + " | ".join(cells) + " |")
    out.append("\n".join(ratio))
    return "\n".join(out)


def all_tables(results: str, reference: str = "resnet-bn") -> str:
    """Every study under `results` (one `## name` section each): the per-cell and ratio
    tables; the lr sweeps stay in each study's sweep.csv."""
    out = []
    for name in sorted(os.listdir(results)):
        path = os.path.join(results, name, "summary.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            summary = json.load(f)
        cells, _, ratios = tables(summary, reference).split("\n\n")
        out += [f"## {name}", "", f"Config `{summary['config']}`; steps {summary['steps']}, "
                f"batch {summary['batch_size']}, seeds {summary['seeds']}; lr sweep: "
                f"`studies/results/{name}/sweep.csv`.", "", cells, "", ratios, ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.report")
    p.add_argument("out", help="a study's output dir, or with --all the results dir")
    p.add_argument("--all", action="store_true", help="every study under OUT")
    p.add_argument("--vs", default="resnet-bn", help="reference arm for the ratios")
    p.add_argument("--vs-optimizer", default=None, help="reference optimizer (default: same)")
    a = p.parse_args(argv)
    if a.all:
        print(all_tables(a.out, a.vs))
        return 0
    with open(os.path.join(a.out, "summary.json")) as f:
        print(tables(json.load(f), a.vs, a.vs_optimizer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
