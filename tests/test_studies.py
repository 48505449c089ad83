"""The study pipeline (studies/run.py) at tiny scale: configs, cells, a quick run, summary."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from studies import run as study

HERE = os.path.dirname(os.path.abspath(__file__))
STUDIES = os.path.join(HERE, "..", "studies")
CONFIGS = sorted(os.path.join(STUDIES, n) for n in os.listdir(STUDIES) if n.endswith(".json"))
CORE = os.path.join(STUDIES, "core_mlp50_mnist1d.json")


@pytest.mark.parametrize("path", CONFIGS)
def test_configs_expand_to_cells(path):
    full, quick = study.load_config(path), study.load_config(path, quick=True)
    cells = study.cells(full)
    assert cells and len({c["id"] for c in cells}) == len(cells)
    assert len(full["seeds"]) >= 3
    assert all(len(o["lrs"]) >= 3 for o in full["optimizers"].values())
    assert quick["steps"] < full["steps"] and len(quick["seeds"]) == 1
    # tiny, but deep enough for every arm (TAT eta 0.9 needs >= 13 Leaky-ReLU layers)
    assert all(c["depth"] <= 16 for c in study.cells(quick))
    for c in cells:           # pinned activations only where the arm asks for them
        if c["arm"]["method"] == "ll":
            assert c["activation"] == "relu"


def test_the_configs_together_cover_the_issue_design():
    """The study set: every dataset, depth, activation, arm and optimizer of the design."""
    grid = []
    for path in CONFIGS:
        cfg = study.load_config(path)
        for c in study.cells(cfg):     # an optimizer entry may alias one (kfac-nc0.01 -> kfac)
            grid.append({**c, "optimizer": cfg["optimizers"][c["optimizer"]].get(
                "optimizer", c["optimizer"])})
    assert {c["data"] for c in grid} == {"mnist1d", "mnist5k", "digits"}
    assert {study.preset_and_depth(c["spec"]) for c in grid} >= {("mlp", 50), ("mlp", 100),
                                                                     ("convnet", 30)}
    assert {c["activation"] for c in grid} >= {"tanh", "softplus", "leaky_relu", "relu"}
    assert {c["arm"]["method"] for c in grid} == {"dks", "tat", "eoc", "ll", "none", "resnet-bn"}
    assert {c["optimizer"] for c in grid} == {"adam", "kfac", "sgd"}
    zetas = {c["arm"]["method_options"]["zeta"] for c in grid if c["arm"]["method"] == "dks"}
    assert len(zetas) >= 2
    tat = {tuple(c["arm"]["method_options"]) for c in grid if c["arm"]["method"] == "tat"}
    assert tat == {("tau",), ("eta",)}
    assert all(c["activation"] == "relu" for c in grid if c["arm"]["method"] == "ll")


def test_smoothing_and_steps_to_target():
    losses = [3.0, 2.0, 1.0, 1.0, 0.5]
    np.testing.assert_allclose(study.smoothed(losses, 2), [3.0, 2.5, 1.5, 1.0, 0.75])
    assert study.steps_to(losses, 1.0, 2) == 4
    assert study.steps_to(losses, 0.1, 2) is None


def test_only_filter():
    cells = study.cells(study.load_config(CORE))
    got = study.select(cells, ["arm=dks-z1.5|none", "optimizer=adam"])
    assert sorted(c["arm"]["name"] for c in got) == ["dks-z1.5", "none"]


def test_quick_pipeline_runs_and_summarizes(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("sklearn")
    out = tmp_path / "quick"
    rc = study.main([CORE, "--quick", "--out", str(out),
                     "--only", "arm=dks-z1.5|none", "--only", "optimizer=adam"])
    assert rc == 0
    study.main([CORE, "--quick", "--out", str(out), "--only", "arm=resnet-bn",
                "--only", "optimizer=kfac"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quick"] and summary["environment"]["python"]
    rows = {(r["arm"], r["optimizer"]): r for r in summary["cells"]}
    assert "skipped" not in rows[("resnet-bn", "kfac")]      # K-FAC trains resnet-bn too
    bn = json.loads((out / "cells" / "digits__mlp6__tanh__resnet-bn__kfac.json").read_text())
    (run,) = bn["runs"]
    assert run["status"] == "completed" and len(run["losses"]) == summary["steps"]
    for key in [("dks-z1.5", "adam"), ("none", "adam"), ("resnet-bn", "kfac")]:
        r = rows[key]
        assert r["seeds"] == [0] and np.isfinite(r["final_loss_mean"])
        assert 0.0 <= r["test_acc_mean"] <= 1.0
    doc = json.loads((out / "cells" / "digits__mlp6__tanh__dks-z1.5__adam.json").read_text())
    (run,) = doc["runs"]
    assert run["status"] == "completed" and len(run["losses"]) == summary["steps"]
    assert run["times"] == sorted(run["times"])
    assert (out / "summary.csv").read_text().startswith("data,depth")
    # resuming a finished study runs nothing new
    study.main([CORE, "--quick", "--out", str(out), "--only", "arm=none",
                "--only", "optimizer=adam"])
    again = json.loads((out / "cells" / "digits__mlp6__tanh__none__adam.json").read_text())
    assert len(again["runs"]) == 1


def _row(arm: str, activation: str, steps: float | None, secs: float | None,
         optimizer: str = "adam") -> dict:
    return {"data": "mnist1d", "depth": 50, "activation": activation, "arm": arm,
            "optimizer": optimizer, "lr": 1e-3, "seeds": [0], "n_diverged": 0,
            "final_loss_mean": 1.0, "final_loss_std": 0.0, "final_train_acc_mean": 0.5,
            "test_acc_mean": 0.5, "test_acc_std": 0.0, "steps_to_1.5": [steps],
            "steps_to_1.5_median": steps, "seconds_to_1.5_median": secs, "s_per_step": 0.1,
            "first_step_s": 1.0}


def test_report_reference_rows():
    from studies.report import tables

    summary = {"target_losses": [1.5], "sweep_seed": 0, "sweep": [], "cells": [
        _row("tat-lrelu-e0.9", "leaky_relu", 40, 4.0), _row("ll-relu", "relu", 30, 3.0),
        _row("resnet-bn-relu", "relu", 20, 0.0), _row("eoc", "tanh", 60, 6.0),
        _row("eoc-b0.05", "tanh", 50, 5.0)]}
    text = tables(summary)
    # the pinned-relu ResNet-BN is the reference of the leaky-relu TAT row too
    assert "| tat-lrelu-e0.9 / adam | resnet-bn-relu / adam | 2.00 (40/20) | n/a |" in text
    # an exact arm name wins over a prefix: eoc-b0.05 is compared with eoc, not used as it
    text = tables(summary, reference="eoc")
    assert "| eoc-b0.05 / adam | eoc / adam | 0.83 (50/60) | 0.83 (5/6) |" in text


def test_an_infeasible_solve_is_recorded_not_fatal(tmp_path):
    pytest.importorskip("jax")
    cfg = study.load_config(CORE, quick=True)
    cfg["data"] = ["teacher"]
    cfg["networks"][0]["activations"] = ["softplus"]
    cfg["arms"] = [{"name": "eoc-b0.05", "method": "eoc",
                    "method_options": {"bias_variance": 0.05}}]   # softplus has no EOC point
    cfg["optimizers"] = {"adam": cfg["optimizers"]["adam"]}
    (cell,) = study.cells(cfg)
    msg = study.run_cell(cfg, cell, str(tmp_path))
    assert "no learning rate of the sweep completed" in msg
    doc = json.loads((tmp_path / "cells" / f"{cell['id']}.json").read_text())
    assert doc["chosen_lr"] is None
    assert all(r["status"] == "error" and "edge-of-chaos" in r["message"] for r in doc["runs"])
