"""Right answers or a precise refusal: the cases of the hostile-user review, one test each."""

from __future__ import annotations

import importlib
import json
import os
import stat

import mpmath as mp
import numpy as np
import pytest

import kernelshape as ks
from kernelshape.cli.app import main
from kernelshape.constants import atomic_write, atomic_write_text
from kernelshape.engine.activations import activation
from kernelshape.engine.maps import local_summary
from kernelshape.solve.options import InfeasibleError


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- maps --------------------------------------------------------------------------------------

def test_very_steep_linear_argument_is_resolved() -> None:
    """tanh(1e10 x): C'(1) = E[phi'^2]/Q(1); mpmath integrates in u = 1e10 z, where the
    derivative's spike has unit width (an independent layout)."""
    k = mp.mpf(10) ** 10
    got = local_summary(activation("tanh(1e10*x)"))
    with mp.workdps(30):
        slope = mp.quad(lambda u: k * mp.sech(u) ** 4 * mp.npdf(u / k), [-mp.inf, -5, 0, 5, mp.inf])
        q = 1 - mp.quad(lambda u: mp.sech(u) ** 2 * mp.npdf(u / k) / k,
                            [-mp.inf, -5, 0, 5, mp.inf])
    assert got["q_value"] == pytest.approx(float(q), rel=1e-12)
    assert got["c_slope_1"] == pytest.approx(float(slope / q), rel=1e-10)


@pytest.mark.parametrize("text, words", [
    ("exp(-1e6*x**2)", "steeper than the quadrature can locate"),
    ("tanh(1e300*x)", "beyond what float64 maps resolve"),
])
def test_unresolvable_expressions_are_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        local_summary(activation(text))


def test_sin_closed_form_survives_large_scales() -> None:
    act = activation("sin").transformed(ks.Transform(input_scale=27.0))
    got = local_summary(act)
    # E[sin(a z)^2] = (1 - exp(-2 a^2)) / 2 and E[a^2 cos(a z)^2] = a^2 (1 + exp(-2 a^2)) / 2
    assert got["q_value"] == pytest.approx(0.5, rel=1e-15)
    assert got["c_slope_1"] == pytest.approx(729.0, rel=1e-13)


# --- solving -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sign", "step", "sqrt(abs(x))"])
@pytest.mark.parametrize("method", ["dks", "tat", "eoc"])
def test_infinite_slope_activations_are_refused(name: str, method: str) -> None:
    with pytest.raises(InfeasibleError, match="C'\\(1\\) is infinite"):
        ks.shape(f"mlp:depth=5,activation={name}", method)


@pytest.mark.parametrize("kwargs, words", [
    ({"zeta": 1.0000001}, "choose 1.000001 <= zeta"),
    ({"zeta": 1e300}, "needs a per-layer slope"),
])
def test_zeta_outside_the_certified_range_names_the_range(kwargs, words) -> None:
    with pytest.raises(InfeasibleError, match=words):
        ks.shape("mlp:depth=10,activation=softplus", "dks", **kwargs)


def test_zeta_range_edges_solve() -> None:
    """The documented lower edges (per-layer xi - 1 = 1e-7, C''(1) = 1e-6) are solved and
    certified for the activations the review tried."""
    for name in ("softplus", "tanh", "gelu", "elu", "swish", "erf", "sin"):
        sol = ks.shape(f"mlp:depth=1,activation={name}", "dks", zeta=1 + 1.0001e-7)
        assert sol.max_residual <= 1e-12
        sol = ks.shape(f"mlp:depth=1,activation={name}", "tat", tau=1.0001e-6)
        assert sol.max_residual <= 1e-12


def test_tau_outside_the_certified_range_is_refused() -> None:
    with pytest.raises(InfeasibleError, match="per-layer curvature"):
        ks.shape("mlp:depth=10,activation=softplus", "tat", tau=1e-6)


def test_targets_that_do_not_apply_are_refused() -> None:
    with pytest.raises(ValueError, match="eta does not apply"):
        ks.shape("mlp:depth=10,activation=softplus", "tat", eta=0.5)
    with pytest.raises(ValueError, match="tau does not apply"):
        ks.shape("mlp:depth=20,activation=leaky_relu", "tat", tau=0.5)


def test_eoc_certificate_checks_the_fixed_point() -> None:
    with pytest.raises(InfeasibleError, match="q\\* = 0 is not one"):
        ks.shape("mlp:depth=10,activation=softplus", "eoc")
    sol = ks.shape("mlp:depth=10,activation=tanh", "eoc")  # tanh(0) = 0: q* = 0, sigma_w = 1
    assert sol.eoc["tanh"]["weight_variance"] == pytest.approx(1.0, rel=1e-12)


def test_dps_above_the_range_is_refused(capsys) -> None:
    code, _, err = run_cli(capsys, "shape", "--net", "mlp:depth=3", "--method", "dks",
                           "--dps", "101")
    assert code == 2 and "16" in err and "100" in err


# --- CLI options -------------------------------------------------------------------------------

def test_verify_refuses_a_target_no_method_uses(capsys) -> None:
    code, _, err = run_cli(capsys, "verify", "theorem13", "--net", "mlp:depth=5",
                           "--zeta", "2")
    assert code == 2 and "--zeta does not apply to method none" in err


def test_deeply_nested_network_json_is_refused(capsys, tmp_path) -> None:
    path = tmp_path / "net.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run_cli(capsys, "shape", "--net", str(path), "--method", "dks")
    assert code == 2 and "nested too deeply" in err


# --- files -------------------------------------------------------------------------------------

def test_atomic_write_refuses_non_regular_files(tmp_path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(ValueError, match="not a regular file"):
        atomic_write_text(tmp_path, "x")


def test_atomic_write_follows_symlinks(tmp_path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path) -> None:
    path = tmp_path / "figure.png"
    path.write_bytes(b"old picture")

    def half_then_fail(handle) -> None:
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, half_then_fail, binary=True)
    assert path.read_bytes() == b"old picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]


def test_plots_are_written_atomically(tmp_path, monkeypatch) -> None:
    style = importlib.import_module("kernelshape.plots.style")
    path = tmp_path / "p.png"
    path.write_bytes(b"old picture")
    fig = style.new_figure(2, 2)

    def broken(handle, **kwargs) -> None:
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError):
        style.save(fig, path)
    assert path.read_bytes() == b"old picture"


def test_export_refuses_to_overwrite_its_input(capsys, tmp_path) -> None:
    doc = tmp_path / "c.json"
    assert main(["shape", "--net", "mlp:depth=3", "--method", "dks", "-o", str(doc)]) == 0
    before = doc.read_bytes()
    code, _, err = run_cli(capsys, "export", str(doc), "--to", "jax", "-o", str(doc))
    assert code == 2 and "is the input file" in err
    assert doc.read_bytes() == before


def test_export_refuses_a_device_as_output(capsys, tmp_path) -> None:
    doc = tmp_path / "c.json"
    assert main(["shape", "--net", "mlp:depth=3", "--method", "dks", "-o", str(doc)]) == 0
    code, _, err = run_cli(capsys, "export", str(doc), "--to", "jax", "-o", os.devnull)
    assert code == 2 and "not a regular file" in err
    assert not os.path.isfile(os.devnull)


# --- training runs -----------------------------------------------------------------------------

def test_resume_without_a_checkpoint_says_so(tmp_path) -> None:
    from kernelshape.train import resume

    (tmp_path / "config.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(FileNotFoundError, match="before its first checkpoint"):
        resume(tmp_path)


def test_resume_with_a_truncated_checkpoint_is_refused(tmp_path) -> None:
    from kernelshape.train import resume, train
    from kernelshape.train.data import Dataset

    net = ks.nets.mlp(depth=2, width=8, input_dim=40, activation="tanh")
    rng = np.random.default_rng(0)
    data = Dataset("toy", rng.normal(size=(64, 40)), rng.integers(0, 10, 64),
                   rng.normal(size=(32, 40)), rng.integers(0, 10, 32), 10)
    out = tmp_path / "run"
    train(net, method="dks", optimizer="sgd", data=data, steps=2, out=out, progress=False,
          batch_size=16)
    pointer = json.loads((out / "checkpoint.json").read_text())
    ckpt = out / pointer["file"]
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ValueError, match="damaged or truncated"):
        resume(out, data=data)
