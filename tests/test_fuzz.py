"""The contract under hostile input: exit 0 with right numbers, or exit 2 with a message.

Generated expressions, network SPECs, targets and tampered constants documents go through
the command-line interface in process. Every run must exit 0 or 2 (never 1, never a
traceback), finish within a time bound, and, when it exits 0 with a number, that number is
confirmed by an independent mpmath computation. Resource-hungry requests run in a child
process under a memory cap and must either finish or be refused up front.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import mpmath as mp
import pytest
import sympy as sp
from grammar import expressions
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from kernelshape.cli.app import main
from kernelshape.engine.symbolic import X

SECONDS = 60  # per CLI call in these tests (a hang is a failure, not a slow pass)


class Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001 (signal handler signature)
    raise Hang


def cli(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``kernelshape ARGV`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    except Hang:
        pytest.fail(f"kernelshape {' '.join(argv)} ran longer than {SECONDS} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue()


def assert_contract(code: int, err: str, argv: tuple[str, ...]) -> None:
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err and "failed:" not in err, (argv, err)
    if code == 2:
        assert "error:" in err and len(err.strip()) > 20, (argv, err)


# --- expressions -------------------------------------------------------------------------------

LEAVES = ["x", "0.5", "2", "3", "pi", "e", "1.25e-1", "30", "1e3", "-1"]
UNARY = ["exp", "log1p", "sqrt", "tanh", "sin", "cos", "atan", "asinh", "erf", "erfc", "abs",
         "sign", "step", "relu", "sigmoid", "softplus", "log", "elu", "-"]
BINARY = ["+", "-", "*", "/", "**", "max", "min"]


def _mp_second_moment(text: str) -> mp.mpf | None:
    """E[phi(z)^2] by mpmath (30 digits, split at the activation's kinks), or None when
    mpmath itself cannot vouch for the value."""
    from kernelshape.engine.activations import activation

    act = activation(text)
    fn = sp.lambdify(X, act.expr, modules="mpmath")
    points = [-mp.inf, *[mp.mpf(k) for k in act.kinks], mp.inf]
    with mp.workdps(30):
        try:
            value, error = mp.quad(lambda z: fn(z) ** 2 * mp.npdf(z), points, error=True,
                                   maxdegree=8)
        except (ValueError, TypeError, ZeroDivisionError, OverflowError, NameError):
            return None  # mpmath cannot evaluate it (e.g. a kernelshape-only sympy function)
        if not mp.isfinite(value) or error > 1e-12 * max(abs(value), 1):
            return None
        return value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(2, LEAVES, UNARY, BINARY))
@example("tanh(30*x)")
@example("sqrt(abs(x))")
@example("(x)/(step(x))")
@example("tanh(1e300*x)")
@example("x*sin(x**2)")
def test_maps_exit_0_with_confirmed_numbers_or_exit_2(text: str) -> None:
    argv = ("maps", text, "--json")
    code, out, err = cli(*argv)
    assert_contract(code, err, argv)
    if code != 0:
        return
    values = json.loads(out)
    for key in ("q_value", "q_slope", "c_value_0", "c_slope_0", "c_slope_1", "c_curv_1"):
        v = values[key]
        assert v is None or isinstance(v, int | float | str), (key, v)
    reference = _mp_second_moment(text)
    if reference is not None:
        assert values["q_value"] == pytest.approx(float(reference), rel=1e-9, abs=1e-12), text


def test_maps_steep_expression_matches_mpmath() -> None:
    """The issue's case: tanh(30 x) has C'(1) = 16.39056..., not the 24.28 once printed."""
    code, out, err = cli("maps", "tanh(30*x)", "--json")
    assert code == 0, err
    with mp.workdps(30):
        d1 = mp.quad(lambda z: (30 / mp.cosh(30 * z) ** 2) ** 2 * mp.npdf(z),
                     [-mp.inf, -1, -0.1, 0, 0.1, 1, mp.inf])
        q = mp.quad(lambda z: mp.tanh(30 * z) ** 2 * mp.npdf(z),
                    [-mp.inf, -1, -0.1, 0, 0.1, 1, mp.inf])
    assert json.loads(out)["c_slope_1"] == pytest.approx(float(d1 / q), rel=1e-10)


def test_maps_singular_derivative_is_infinite() -> None:
    code, out, err = cli("maps", "sqrt(abs(x))", "--json")
    assert code == 0, err
    assert json.loads(out)["c_slope_1"] in (math.inf, "inf", "Infinity")


# --- SPECs and targets -------------------------------------------------------------------------

PRESETS = st.sampled_from(["mlp", "convnet", "resnet", "mlp", "nonsense"])
ACTIVATIONS = st.sampled_from(["tanh", "softplus", "relu", "leaky_relu", "gelu", "sign", "step",
                               "sqrt(abs(x))", "x**2", "sin(x)", "exp(x)", "elu", "bogus(x)"])
DEPTHS = st.sampled_from(["1", "3", "10", "0", "-2", "1.5", "x", "100"])
TARGETS = st.sampled_from([
    (), ("--zeta", "1.5"), ("--zeta", "1.0000001"), ("--zeta", "1e300"), ("--zeta", "0.5"),
    ("--tau", "0.3"), ("--tau", "1e-6"), ("--tau", "-1"), ("--eta", "0.9"), ("--eta", "0.5"),
    ("--eta", "2"), ("--bias-variance", "0.1"), ("--zeta", "nan"), ("--tau", "inf")])
METHODS = st.sampled_from(["dks", "tat", "eoc", "none", "DKS", "magic"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PRESETS, ACTIVATIONS, DEPTHS, METHODS, TARGETS)
@example("mlp", "sign", "10", "eoc", ())
@example("mlp", "step", "10", "dks", ())
@example("mlp", "softplus", "10", "dks", ("--zeta", "1.0000001"))
@example("mlp", "softplus", "10", "dks", ("--zeta", "1e300"))
@example("mlp", "softplus", "10", "tat", ("--tau", "1e-6"))
@example("mlp", "softplus", "10", "tat", ("--eta", "0.5"))
@example("mlp", "leaky_relu", "20", "tat", ("--tau", "0.5"))
@example("mlp", "softplus", "10", "eoc", ())
def test_shape_exit_0_or_2(preset: str, act: str, depth: str, method: str,
                           targets: tuple[str, ...]) -> None:
    argv = ("shape", "--net", f"{preset}:depth={depth}", "--activation", act, "--method",
            method, *targets, "--json")
    code, out, err = cli(*argv)
    assert_contract(code, err, argv)
    if code == 0 and method.lower() == "eoc":  # the certificate checks the fixed point itself
        payload = json.loads(out)
        assert payload["max_residual"] <= 1e-10


# --- tampered documents ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def document(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "constants.json"
    code, _, err = cli("shape", "--net", "mlp:depth=6,activation=tanh", "--method", "dks",
                       "-o", str(path))
    assert code == 0, err
    return path


KEYS = st.sampled_from(["input_scale", "input_shift", "output_shift", "output_scale"])
NESTED = "<nested>"
EDITS = st.sampled_from(["scale", "delete", "string", "null", "list", "nested", "targets",
                         "local_targets", "tolerance", "method"])


def _tamper(doc: dict, edit: str, key: str, factor: float) -> bool:
    """Apply one edit; True when it changes what the network computes."""
    params = doc["activations"]["tanh"]
    if edit == "scale":
        params[key] = params[key] * factor
        return factor != 1.0
    if edit == "delete":
        del params[key]
    elif edit == "string":
        params[key] = "1.0"
    elif edit == "null":
        params[key] = None
    elif edit == "list":
        params[key] = [params[key]]
    elif edit == "nested":
        params[key] = NESTED  # replaced by 5000 nested lists in the written text
    elif edit == "targets":
        doc["targets"] = {"zeta": doc["targets"]["zeta"] * factor}
        return factor != 1.0
    elif edit == "local_targets":
        doc["local_targets"] = {}
    elif edit == "tolerance":
        doc["certificate"]["check_tolerance"] = 1e9
        params[key] = params[key] * factor
        return factor != 1.0
    elif edit == "method":
        doc["method"] = "tat"
    return True


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(EDITS, KEYS, st.sampled_from([1.0, 1.0 + 1e-6, 0.999, 2.0, -1.0, 1e300]))
def test_tampered_documents_are_refused(document: Path, tmp_path_factory, edit: str, key: str,
                                        factor: float) -> None:
    doc = json.loads(document.read_text())
    changed = _tamper(doc, edit, key, factor)
    assume(edit != "scale" or key != "input_shift" or doc["activations"]["tanh"][key] != 0)
    path = tmp_path_factory.mktemp("doc") / "edited.json"
    path.write_text(json.dumps(doc).replace(json.dumps(NESTED), "[" * 5000 + "]" * 5000))
    argv = ("export", str(path), "--to", "torch")
    code, _, err = cli(*argv)
    assert_contract(code, err, argv)
    if changed:
        assert code == 2, (edit, key, factor, err)
    else:
        assert code == 0, (edit, key, factor, err)


def test_truncated_files_are_refused(document: Path, tmp_path) -> None:
    cut = tmp_path / "cut.json"
    cut.write_bytes(document.read_bytes()[:200])
    code, _, err = cli("export", str(cut), "--to", "jax")
    assert code == 2 and "corrupted" in err


# --- resources ---------------------------------------------------------------------------------

MEMORY_CAP = 3 * 2**30  # bytes of address space for the child process


def _capped(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "kernelshape", *argv], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit, env=env)


@pytest.mark.parametrize("argv", [
    ("verify", "theorem13", "--net", "mlp:depth=4", "--depths", "100000"),
    ("verify", "theorem13", "--net", "mlp:depth=4", "--grid", "100000000"),
    ("verify", "approximation", "--net", "mlp:depth=4", "--widths", "100000000"),
], ids=["depths", "grid", "widths"])
def test_oversized_checks_are_refused_up_front(argv: tuple[str, ...]) -> None:
    done = _capped(*argv)
    assert done.returncode == 2, done.stderr
    assert any(w in done.stderr for w in ("at most", "exceed", "limit")), done.stderr


@pytest.mark.parametrize("argv", [
    ("shape", "--net", "mlp:depth=20000", "--method", "dks"),
    ("maps", "tanh", "--transform", '{"input_scale": 1e6}'),
], ids=["deep-mlp", "steep-transform"])
def test_large_requests_finish_under_a_memory_cap(argv: tuple[str, ...]) -> None:
    done = _capped(*argv)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_depth_100000_shapes_under_a_memory_cap() -> None:
    done = _capped("shape", "--net", "mlp:depth=100000", "--method", "dks", timeout=600)
    assert done.returncode == 0, done.stderr
