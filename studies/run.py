"""Run a study config: `python -m studies.run CONFIG [--quick] [--out DIR] [--jobs N] [--only K=V]`.

A study is a grid of cells (data x network x activation x arm x optimizer). Each cell gets the
same budget: every learning rate of the optimizer's sweep is run for `steps` steps at
`sweep_seed`; the lr with the lowest final smoothed training loss is picked and the remaining
`seeds` are run at it. Runs are recorded per cell in `OUT/cells/<cell>.json` (per-step
training loss, batch accuracy and wall time, final test accuracy) as they finish, so an
interrupted study resumes where it stopped. `OUT/summary.json`, `summary.csv`, `sweep.csv`
and the plots are rebuilt from the cell files at the end (or with `--summarize`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from kernelshape.constants import atomic_write  # noqa: E402
from kernelshape.topology.spec import split_options, with_option  # noqa: E402
from kernelshape.train.data import example_shape  # noqa: E402

# --------------------------------------------------------------------------- config

def load_config(path: str, quick: bool = False) -> dict[str, Any]:
    """The study config (JSON), with its `quick` overrides applied when `quick`."""
    with open(path) as f:
        cfg = json.load(f)
    cfg["config_path"] = os.fspath(path)
    if quick:
        q = cfg.get("quick", {})
        cfg["steps"] = q.get("steps", 12)
        cfg["seeds"] = q.get("seeds", [cfg.get("sweep_seed", 0)])
        cfg["data"] = q.get("data", cfg["data"])
        for net in cfg["networks"]:
            net["spec"] = with_option(net["spec"], "depth", q.get("depth", 6))
        n = q.get("lrs", 1)
        for opt in cfg["optimizers"].values():
            lrs = opt["lrs"]
            opt["lrs"] = lrs[len(lrs) // 2: len(lrs) // 2 + n]
        cfg["name"] = cfg["name"] + "-quick"
    cfg["quick"] = bool(quick)
    return cfg


def network_spec(net: dict[str, Any], activation: str, data: str) -> str:
    """The SPEC of one network of the config for one activation and dataset: the config's
    SPEC with the activation and the dataset's input size (mlp: ``input_dim``, others:
    ``input_shape``, one example's shape channels last)."""
    spec = with_option(net["spec"], "activation", activation)
    shape = example_shape(data)
    if spec.partition(":")[0] == "mlp":
        return with_option(spec, "input_dim", int(np.prod(shape)))
    return with_option(spec, "input_shape", "x".join(map(str, shape)))


def preset_and_depth(spec: str) -> tuple[str, int]:
    """(preset name, depth option) of a SPEC (cell ids are named by them)."""
    name, _, rest = spec.partition(":")
    options = dict(item.partition("=")[::2] for item in split_options(rest))
    return name, int(options["depth"])


def cells(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """All cells of the study in run order: the config's `priority` list (`arm/optimizer`)
    first, then the grid order (optimizer order of the config first); `skip` cells left out."""
    out = []
    for opt in cfg["optimizers"]:
        for data in cfg["data"]:
            for net in cfg["networks"]:
                for act in net["activations"]:
                    for arm in cfg["arms"]:
                        a = arm.get("activation")
                        if a is not None:
                            if act != net["activations"][0]:
                                continue            # pinned activation: once per network
                            act_used = a
                        else:
                            if act not in arm.get("activations", [act]):
                                continue
                            act_used = act
                        preset, depth = preset_and_depth(net["spec"])
                        name = f"{data}__{preset}{depth}__{act_used}__{arm['name']}__{opt}"
                        out.append({"id": name, "data": data, "network": net,
                                    "spec": network_spec(net, act_used, data),
                                    "activation": act_used, "arm": arm, "optimizer": opt,
                                    "depth": depth})
    skip = set(cfg.get("skip", []))           # "arm/optimizer" cells left out of the design
    out = [c for c in out if f"{c['arm']['name']}/{c['optimizer']}" not in skip]
    prio = cfg.get("priority", [])

    def rank(c: dict[str, Any]) -> int:
        key = f"{c['arm']['name']}/{c['optimizer']}"
        return prio.index(key) if key in prio else len(prio)
    return sorted(out, key=rank)          # stable: unlisted cells keep the grid order


def select(cell_list: list[dict[str, Any]], only: list[str]) -> list[dict[str, Any]]:
    """Keep the cells matching every `key=value` (keys: data, activation, arm, optimizer,
    depth, preset)."""
    for item in only:
        key, _, value = item.partition("=")
        def get(c: dict[str, Any], key: str = key) -> str:
            if key == "arm":
                return c["arm"]["name"]
            if key == "preset":
                return preset_and_depth(c["network"]["spec"])[0]
            return str(c[key])
        cell_list = [c for c in cell_list if get(c) in value.split("|")]
    return cell_list


# --------------------------------------------------------------------------- runs

@cache
def _dataset(name: str) -> Any:
    from kernelshape.train import load_data
    return load_data(name)


@cache
def _solution(spec: str, method: str, options: str) -> Any:
    from kernelshape.solve import shape
    return shape(spec, method, **json.loads(options))


def smoothed(losses: list[float], window: int) -> np.ndarray:
    """Trailing running mean of the per-step batch losses (window steps; fewer at the start)."""
    x = np.asarray(losses, dtype=float)
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def steps_to(losses: list[float], target: float, window: int) -> int | None:
    """First step (1-based) whose smoothed training loss is <= target; None if never."""
    s = smoothed(losses, window)
    hit = np.nonzero(s <= target)[0]
    return int(hit[0]) + 1 if len(hit) else None


def run_one(cfg: dict[str, Any], cell: dict[str, Any], lr: float, seed: int) -> dict[str, Any]:
    """One training run; returns its record (per-step loss / acc / wall time, test accuracy)."""
    from kernelshape.train import train

    arm, opt = cell["arm"], cell["optimizer"]
    method = arm["method"]
    t_call = t_solved = time.perf_counter()
    losses: list[float] = []
    accs: list[float] = []
    times: list[float] = []

    def callback(step: int, record: dict[str, Any]) -> None:
        times.append(time.perf_counter() - t_call)
        losses.append(float(record["loss"]))
        accs.append(float(record["acc"]))

    options = dict(cfg["optimizers"][opt].get("options", {}))
    optimizer = cfg["optimizers"][opt].get("optimizer", opt)   # e.g. "kfac-nc0.01" -> kfac
    rec: dict[str, Any] = {"cell": cell["id"], "lr": lr, "seed": seed, "steps": cfg["steps"]}
    try:
        solution = None
        if method in ("dks", "tat", "eoc"):   # an infeasible solve is recorded like a failed run
            solution = _solution(cell["spec"], method,
                                 json.dumps(arm.get("method_options", {}), sort_keys=True))
        t_solved = time.perf_counter()
        r = train(cell["spec"], method=method, optimizer=optimizer, data=_dataset(cell["data"]),
                  steps=cfg["steps"], seed=seed, out=None, solution=solution, lr=lr,
                  batch_size=cfg["batch_size"], dtype=cfg["dtype"], backend=cfg["backend"],
                  optimizer_options=options, progress=False, log_every=max(cfg["steps"], 1),
                  callback=callback)
        rec.update(status=r.status, message=r.message if r.status != "completed" else "",
                   test_acc=float(r.test_acc), test_loss=float(r.test_loss))
    except Exception as e:  # recorded, not fatal: the study goes on
        rec.update(status="error", message=f"{type(e).__name__}: {e}",
                   test_acc=float("nan"), test_loss=float("nan"))
    window = cfg.get("smooth", 10)
    n = len(losses)
    tail = max(n // 10, 1)
    rec.update(
        solve_s=t_solved - t_call, steps_done=n,
        first_step_s=times[0] if times else None,
        losses=[round(v, 5) for v in losses], accs=[round(v, 4) for v in accs],
        times=[round(v, 3) for v in times],
        final_loss=float(np.mean(losses[-tail:])) if n else float("inf"),
        final_train_acc=float(np.mean(accs[-tail:])) if n else float("nan"),
        steps_to={str(t): steps_to(losses, t, window) for t in cfg["target_losses"]},
    )
    if rec["status"] != "completed" or not np.isfinite(rec["final_loss"]):
        rec["final_loss"] = float("inf")
    return rec


def run_cell(cfg: dict[str, Any], cell: dict[str, Any], out: str) -> str:
    """Sweep the lr at sweep_seed, then the other seeds at the chosen lr; record as we go."""
    path = os.path.join(out, "cells", cell["id"] + ".json")
    doc: dict[str, Any] = {"cell": cell, "runs": [], "chosen_lr": None}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
        doc.pop("skipped", None)     # written by older versions (resnet-bn + K-FAC): run it now
    done = {(r["lr"], r["seed"]) for r in doc["runs"]}
    seed0 = cfg.get("sweep_seed", 0)
    for lr in cfg["optimizers"][cell["optimizer"]]["lrs"]:
        if (lr, seed0) not in done:
            doc["runs"].append(run_one(cfg, cell, lr, seed0))
            _write(path, doc)
    lrs = cfg["optimizers"][cell["optimizer"]]["lrs"]
    sweep = [r for r in doc["runs"] if r["seed"] == seed0 and r["lr"] in lrs]
    best = min(sweep, key=lambda r: r["final_loss"])
    if not np.isfinite(best["final_loss"]):
        doc["chosen_lr"] = None
        _write(path, doc)
        return f"{cell['id']}: no learning rate of the sweep completed"
    doc["chosen_lr"] = best["lr"]
    for seed in cfg["seeds"]:
        if (best["lr"], seed) not in {(r["lr"], r["seed"]) for r in doc["runs"]}:
            doc["runs"].append(run_one(cfg, cell, best["lr"], seed))
            _write(path, doc)
    _write(path, doc)
    return f"{cell['id']}: lr {best['lr']} final loss {best['final_loss']:.3f}"


def _write(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: json.dump(obj, f))


def _worker(args: tuple[dict[str, Any], dict[str, Any], str]) -> str:
    return run_cell(*args)


# --------------------------------------------------------------------------- summary

def environment() -> dict[str, Any]:
    """Versions and machine, recorded with the results."""
    import importlib.metadata as md
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
    for pkg in ("numpy", "jax", "jaxlib", "optax", "kfac-jax", "mnist1d", "matplotlib"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    return env


def summarize(cfg: dict[str, Any], out: str) -> dict[str, Any]:
    """summary.json / summary.csv / sweep.csv from the cell files (and plots if possible)."""
    rows, sweep_rows = [], []
    cell_dir = os.path.join(out, "cells")
    names = sorted(os.listdir(cell_dir)) if os.path.isdir(cell_dir) else []
    seed0 = cfg.get("sweep_seed", 0)
    for name in names:
        if not name.endswith(".json"):
            continue
        with open(os.path.join(cell_dir, name)) as f:
            doc = json.load(f)
        cell = doc["cell"]
        base = {"cell": cell["id"], "data": cell["data"], "depth": cell["depth"],
                "activation": cell["activation"], "arm": cell["arm"]["name"],
                "optimizer": cell["optimizer"]}
        if doc.get("skipped"):
            rows.append({**base, "skipped": doc["skipped"]})
            continue
        for r in doc["runs"]:
            if r["seed"] == seed0:
                sweep_rows.append({**base, "lr": r["lr"], "status": r["status"],
                                   "final_loss": r["final_loss"], "test_acc": r["test_acc"]})
        lr = doc.get("chosen_lr")
        chosen = [r for r in doc["runs"] if r["lr"] == lr]
        if not chosen:
            continue
        row: dict[str, Any] = {**base, "lr": lr, "seeds": [r["seed"] for r in chosen],
                               "n_diverged": sum(r["status"] != "completed" for r in chosen)}
        for key in ("final_loss", "final_train_acc", "test_acc"):
            v = np.array([r[key] for r in chosen], dtype=float)
            row[key + "_mean"], row[key + "_std"] = float(np.mean(v)), float(np.std(v))
        for t in cfg["target_losses"]:
            hits = [r["steps_to"][str(t)] for r in chosen]
            ok = [h for h in hits if h is not None]
            row[f"steps_to_{t}"] = hits
            row[f"steps_to_{t}_median"] = float(np.median(ok)) if len(ok) == len(hits) else None
            # wall seconds from the first step (jit compile and solve excluded) to the target
            secs = [None if h is None else r["times"][h - 1] - r["times"][0]
                    for h, r in zip(hits, chosen, strict=True)]
            row[f"seconds_to_{t}_median"] = (float(np.median(secs)) if None not in secs
                                             else None)
        lrs = cfg["optimizers"].get(cell["optimizer"], {}).get("lrs") or [lr]
        swept = sorted(r["lr"] for r in doc["runs"] if r["seed"] == seed0 and r["lr"] in lrs)
        row["lr_at_grid_edge"] = ("low" if lr == swept[0] else "high" if lr == swept[-1]
                                  else "") if len(swept) > 1 else ""
        per_step = [(r["times"][-1] - r["times"][0]) / max(len(r["times"]) - 1, 1)
                    for r in chosen if len(r["times"]) > 1]
        row["s_per_step"] = float(np.median(per_step)) if per_step else None
        row["first_step_s"] = float(np.median([r["first_step_s"] for r in chosen
                                               if r["first_step_s"] is not None] or [np.nan]))
        rows.append(row)
    summary = {"study": cfg["name"], "config": cfg.get("config_path"), "quick": cfg["quick"],
               "steps": cfg["steps"], "batch_size": cfg["batch_size"], "dtype": cfg["dtype"],
               "backend": cfg["backend"], "seeds": cfg["seeds"], "sweep_seed": seed0,
               "target_losses": cfg["target_losses"], "smooth": cfg.get("smooth", 10),
               "environment": environment(), "cells": rows, "sweep": sweep_rows}
    _write(os.path.join(out, "summary.json"), summary)
    _csv(os.path.join(out, "summary.csv"), [r for r in rows if "skipped" not in r],
         ["data", "depth", "activation", "arm", "optimizer", "lr", "n_diverged",
          "final_loss_mean", "final_loss_std", "final_train_acc_mean", "test_acc_mean",
          "test_acc_std", *[f"steps_to_{t}_median" for t in cfg["target_losses"]],
          *[f"seconds_to_{t}_median" for t in cfg["target_losses"]], "lr_at_grid_edge",
          "s_per_step", "first_step_s"])
    _csv(os.path.join(out, "sweep.csv"), sweep_rows,
         ["data", "depth", "activation", "arm", "optimizer", "lr", "status", "final_loss",
          "test_acc"])
    try:
        from studies.plotting import plot_study
        plot_study(out, cfg)
    except ImportError as e:     # matplotlib missing: tables only
        print(f"no plots: {e}", file=sys.stderr)
    return summary


def _csv(path: str, rows: list[dict[str, Any]], cols: list[str]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)
    with open(path, "w") as f:
        f.write(",".join(cols) + "\n")
        for r in rows:
            f.write(",".join(fmt(r.get(c)) for c in cols) + "\n")


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.run", description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--quick", action="store_true", help="tiny pipeline check (minutes)")
    p.add_argument("--out", default=None, help="output dir (default studies/results/NAME)")
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel (processes)")
    p.add_argument("--only", action="append", default=[],
                   help="KEY=V1|V2 filter on data/activation/arm/optimizer/depth/preset")
    p.add_argument("--summarize", action="store_true", help="only rebuild the summary")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.quick)
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                cfg["name"])
    todo = select(cells(cfg), a.only)
    if a.list:
        for c in todo:
            print(c["id"], c["spec"])
        return 0
    os.makedirs(out, exist_ok=True)
    if not a.summarize:
        t0 = time.perf_counter()
        jobs = [(cfg, c, out) for c in todo]
        if a.jobs > 1:
            import multiprocessing as mp
            with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as ex:
                for msg in ex.map(_worker, jobs):
                    print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)
        else:
            for j in jobs:
                msg = _worker(j)
                print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)
    summary = summarize(cfg, out)
    print(f"{len(summary['cells'])} cells summarized in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
