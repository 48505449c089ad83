"""Tests of kernelshape.plots: every figure command writes a non-blank image of its size.

Figure sizes are the gallery's design (inches at 100 dpi), stated here, not read from the
module under test.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from matplotlib import image

from kernelshape.cli import main
from kernelshape.plots import FIGURES

SIZES = {  # pixels (width, height): figsize x 100 dpi
    "cmap-degeneration": (1600, 900),
    "local-maps": (1600, 550),
    "c-propagation": (1400, 900),
    "theorem13": (1700, 580),
    "theorem27": (1500, 600),
    "kernel-approximation": (1100, 650),
    "training-curves": (1400, 550),
    "formulas": (1600, 600),
}


def _args(name, output, *extra):
    return [name, "-o", output, *extra]


def run_cli(argv: list[str]) -> int:
    """``kernelshape plot ...`` in-process."""
    return main(["plot", *argv])


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", head[16:24])


def assert_nonblank_png(path, size):
    assert png_size(path) == size
    pixels = image.imread(path)[..., :3]
    assert pixels.var() > 0
    # more than a frame: at least 2% of the pixels are not (near) white
    assert np.mean(pixels.min(axis=-1) < 0.9) > 0.02


def write_run(directory, method="dks", steps=50):
    os.makedirs(directory)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"method": method, "optimizer": "adam"}, f)
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
        for s in range(0, steps + 1, 5):
            rec = {"step": s, "loss": 2.3 * np.exp(-s / 20) + 0.1, "acc": min(0.1 + s / 60, 1)}
            if s % 10 == 0:
                rec["test_acc"] = min(0.1 + s / 70, 1)
            f.write(json.dumps(rec) + "\n")
        f.write(json.dumps({"event": "interrupted", "step": steps}) + "\n")
    return directory


def test_gallery_lists_every_figure():
    assert set(FIGURES) == set(SIZES)


@pytest.mark.parametrize("name", [n for n in SIZES if n != "training-curves"])
def test_figure_command_writes_nonblank_png(name, tmp_path, capsys):
    path = tmp_path / f"{name}.png"
    assert run_cli(_args(name, str(path), "--quick")) == 0
    assert_nonblank_png(path, SIZES[name])
    assert str(path) in capsys.readouterr().out


def test_degeneration_figure_as_the_demo_draws_it(tmp_path):
    """`kernelshape demo` draws 'cmap-degeneration' with the default options: the full
    figure."""
    path = tmp_path / "cmap_degeneration.png"
    assert run_cli(_args("cmap-degeneration", str(path))) == 0
    assert_nonblank_png(path, SIZES["cmap-degeneration"])


def test_training_curves_from_run_directories(tmp_path):
    a = write_run(str(tmp_path / "dks"))
    b = write_run(str(tmp_path / "eoc"), method="eoc")
    path = tmp_path / "curves.png"
    assert run_cli(_args("training-curves", str(path), "--run", a, "--run", b)) == 0
    assert_nonblank_png(path, SIZES["training-curves"])


def test_training_curves_without_runs_is_skipped_with_a_message(tmp_path, capsys):
    assert run_cli(_args("training-curves", str(tmp_path / "x.png"))) == 2
    assert "--run DIR" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_training_curves_bad_run_directory(tmp_path, capsys):
    assert run_cli(_args("training-curves", str(tmp_path / "x.png"), "--run",
                         str(tmp_path))) == 2
    assert "metrics.jsonl" in capsys.readouterr().err


def test_svg_on_request(tmp_path):
    assert run_cli(_args("local-maps", str(tmp_path / "maps.png"), "--svg", "--quick")) == 0
    text = (tmp_path / "maps.svg").read_text()
    assert "<svg" in text and "</svg>" in text
    assert run_cli(_args("local-maps", str(tmp_path / "other.svg"), "--quick")) == 0
    assert "<svg" in (tmp_path / "other.svg").read_text()


def test_local_maps_for_another_activation(tmp_path):
    path = tmp_path / "lrelu.png"
    assert run_cli(_args("local-maps", str(path), "--quick", "--activation",
                         "leaky_relu")) == 0
    assert_nonblank_png(path, SIZES["local-maps"])


@pytest.mark.parametrize("name,output,extra,message", [
    ("nosuch", "x.png", [], "unknown figure"),
    ("local-maps", "missing-dir/x.png", [], "does not exist"),
    ("local-maps", "x.jpg", [], ".png or .svg"),
    ("local-maps", "x.png", ["--bogus"], "unrecognized"),
])
def test_bad_input_exit_code_2(name, output, extra, message, tmp_path, capsys):
    assert run_cli(_args(name, str(tmp_path / output), *extra)) == 2
    assert message in capsys.readouterr().err


def test_output_is_a_directory(tmp_path, capsys):
    assert run_cli(_args("local-maps", str(tmp_path))) == 2
    assert "directory" in capsys.readouterr().err


def test_kernelshape_plot_command_dispatches(tmp_path, capsys):
    path = tmp_path / "p.png"
    assert main(["plot", "c-propagation", "-o", str(path), "--quick"]) == 0
    assert_nonblank_png(path, SIZES["c-propagation"])


@pytest.mark.slow
def test_all_writes_the_gallery(tmp_path, capsys):
    run = write_run(str(tmp_path / "run"))
    out = tmp_path / "gallery"
    assert run_cli(_args("all", str(out), "--run", run)) == 0
    for name, size in SIZES.items():
        assert_nonblank_png(out / f"{name}.png", size)


def test_all_writes_every_figure_and_skips_training_curves_without_runs(tmp_path, capsys,
                                                                        monkeypatch):
    """The 'all' loop (figures replaced by a cheap drawing so that this stays fast)."""
    from kernelshape.plots import figures
    from kernelshape.plots.style import new_figure

    def cheap(opts):
        fig = new_figure(4, 3)
        fig.subplots().plot([0, 1], [1, 0])
        return fig

    for name in list(FIGURES):
        if name != "training-curves":
            monkeypatch.setitem(FIGURES, name, cheap)
    assert FIGURES is figures.FIGURES
    out = tmp_path / "gallery"
    assert run_cli(_args("all", str(out))) == 0
    captured = capsys.readouterr()
    assert "skipped training-curves" in captured.err and "--run DIR" in captured.err
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{n}.png" for n in SIZES if n != "training-curves")
    for name in written:
        assert_nonblank_png(out / name, (400, 300))
    assert run_cli(_args("all", str(out), "--svg")) == 0
    assert (out / "theorem13.svg").exists()
