"""The installed ``kernelshape`` console script, run as a subprocess.

Independent commands run concurrently (module-scoped fixtures) to keep the file fast: every
call pays the package import (sympy) once.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kernelshape.engine.activations import Transform, activation, list_activations
from kernelshape.engine.maps import SUMMARY_KEYS, cmap, local_summary, qmap
from kernelshape.solve import shape
from kernelshape.topology import nets

SCRIPT = shutil.which("kernelshape", path=os.path.dirname(sys.executable))
SUBCOMMANDS = ("activations", "maps", "shape", "export", "verify", "plot", "train", "demo")
MALICIOUS = "__import__('os').system('echo hi')"


def run(*args: str, cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the console script; stdout and stderr captured as text."""
    if SCRIPT is None:
        pytest.fail("the kernelshape console script is not installed next to "
                    f"{sys.executable}; run 'pip install -e .'")
    full_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    full_env.pop("KS_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=timeout)


def run_many(commands: dict[str, Sequence[str]],
             cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run independent commands concurrently."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(run, *args, cwd=cwd) for key, args in commands.items()}
        return {key: future.result() for key, future in futures.items()}


def one_json(proc: subprocess.CompletedProcess[str]) -> dict:
    """stdout holds exactly one JSON object."""
    assert proc.returncode == 0, proc.stderr
    value = json.loads(proc.stdout)
    assert isinstance(value, dict)
    return value


def tanh_document(path: Path) -> Path:
    """The solver's DKS constants document for a depth-3 tanh MLP."""
    shape(nets.mlp(3, width=8, activation="tanh"), "dks").save(path)
    return path


# --------------------------------------------------------------------------- help


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("help")
    commands = {name: [name, "--help"] for name in SUBCOMMANDS}
    commands["main"] = ["--help"]
    commands["version"] = ["--version"]
    return run_many(commands, cwd)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(helps: dict, name: str) -> None:
    proc = helps[name]
    assert proc.returncode == 0, proc.stderr
    assert f"usage: kernelshape {name}" in proc.stdout
    assert "examples:" in proc.stdout
    assert f"kernelshape {name}" in proc.stdout.split("examples:")[1]


def test_main_help_and_version(helps: dict) -> None:
    assert helps["main"].returncode == 0
    for name in SUBCOMMANDS:
        assert name in helps["main"].stdout
    assert "Exit codes" in helps["main"].stdout
    assert helps["version"].returncode == 0
    assert helps["version"].stdout.startswith("kernelshape ")


# --------------------------------------------------------------------------- activations, maps


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("outputs")
    return run_many({
        "activations": ["activations"],
        "activations_json": ["activations", "--json"],
        "maps_erf": ["maps", "erf", "--c=-1,-0.3,0,0.5,0.99,1", "--q", "0.5,2", "--json"],
        "maps_expr": ["maps", "x*tanh(log(1+exp(x)))", "--c", "0,0.5", "--json"],
        "maps_relu": ["maps", "relu", "--json"],
        "maps_transform": ["maps", "softplus", "--transform",
                           '{"input_scale": 1.2, "input_shift": -0.3, "output_scale": 1.5}',
                           "--c", "0.5", "--json"],
        "maps_human": ["maps", "softplus", "--transform", '{"output_scale": 1.5}', "--c",
                       "0,0.5"],
        "maps_leaky": ["maps", "leaky_relu", "--param", "negative_slope=0.2", "--json"],
        "maps_dps": ["maps", "tanh", "--dps", "25", "--c", "1", "--json"],
        "maps_dps_human": ["maps", "tanh", "--dps", "25"],
    }, cwd)


def test_activations_human_table(outputs: dict) -> None:
    proc = outputs["activations"]
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["name", "formula", "parameters", "kinks", "route"]
    for name in list_activations():
        assert any(line.split()[0] == name for line in lines[2:] if line.strip())


def test_activations_json(outputs: dict) -> None:
    data = one_json(outputs["activations_json"])
    assert [row["name"] for row in data["activations"]] == list_activations()
    relu = next(row for row in data["activations"] if row["name"] == "relu")
    assert relu["kinks"] == [0.0] and relu["route"] == "closed"


def test_maps_json_matches_library(outputs: dict) -> None:
    data = one_json(outputs["maps_erf"])
    assert set(SUMMARY_KEYS) <= set(data)
    expected = local_summary("erf")
    for key in SUMMARY_KEYS:
        assert data[key] == pytest.approx(expected[key], rel=1e-13, abs=1e-15)
    cs = [row[0] for row in data["cmap"]]
    assert cs == [-1, -0.3, 0, 0.5, 0.99, 1]
    assert [row[1] for row in data["cmap"]] == pytest.approx(list(cmap("erf", cs)), rel=1e-13,
                                                             abs=1e-15)
    assert [row[1] for row in data["qmap"]] == pytest.approx([qmap("erf", 0.5), qmap("erf", 2.0)],
                                                             rel=1e-13)
    assert data["route"] == "closed" and data["dps"] is None


def test_maps_expression_and_inf_values(outputs: dict) -> None:
    data = one_json(outputs["maps_expr"])
    act = activation("x*tanh(log(1+exp(x)))")
    assert data["q_value"] == pytest.approx(local_summary(act)["q_value"], rel=1e-12)
    assert [row[1] for row in data["cmap"]] == pytest.approx(list(cmap(act, [0.0, 0.5])),
                                                             rel=1e-12, abs=1e-15)
    relu = one_json(outputs["maps_relu"])
    assert relu["c_curv_1"] == "inf"  # JSON has no infinity: documented as a string
    assert relu["q_value"] == pytest.approx(0.5, rel=1e-15)


def test_maps_transform(outputs: dict) -> None:
    data = one_json(outputs["maps_transform"])
    t = Transform(input_scale=1.2, input_shift=-0.3, output_scale=1.5)
    act = activation("softplus").transformed(t)
    assert data["transform"] == t.as_dict()
    assert data["q_value"] == pytest.approx(local_summary(act)["q_value"], rel=1e-12)
    assert data["cmap"][0][1] == pytest.approx(cmap(act, 0.5), rel=1e-12)
    human = outputs["maps_human"]
    assert human.returncode == 0, human.stderr
    formula = "phi_hat(x) = 1.5 * (phi(1.0 * x + 0.0) + 0.0),  phi(x) = log(1 + exp(x))"
    assert formula in human.stdout
    assert "C map at q1 = q2 = 1" in human.stdout
    leaky = one_json(outputs["maps_leaky"])
    assert leaky["params"] == {"negative_slope": 0.2}
    expected = local_summary(activation("leaky_relu", negative_slope=0.2))
    assert leaky["q_value"] == pytest.approx(expected["q_value"], rel=1e-13)


def test_maps_dps_prints_digits(outputs: dict) -> None:
    data = one_json(outputs["maps_dps"])
    assert data["dps"] == 25 and data["route"] == "mp"
    precise = local_summary("tanh", dps=25)
    import mpmath

    for key in SUMMARY_KEYS:
        assert isinstance(data[key], str)
        assert data[key] == mpmath.nstr(precise[key], 25)
    assert len(data["q_value"].lstrip("0.")) >= 20
    assert float(data["q_value"]) == pytest.approx(local_summary("tanh")["q_value"], rel=1e-13)
    assert data["cmap"] == [[1.0, "1.0"]]
    human = outputs["maps_dps_human"]
    assert human.returncode == 0, human.stderr
    assert mpmath.nstr(precise["c_slope_1"], 25) in human.stdout
    assert "mpmath, 25 significant digits" in human.stdout


# --------------------------------------------------------------------------- export


def test_export_round_trip(tmp_path: Path) -> None:
    doc = tanh_document(tmp_path / "constants.json")
    procs = run_many({
        "numpy": ["export", str(doc), "--to", "numpy", "-o", "act_np.py"],
        "pytorch": ["export", str(doc), "--to", "torch", "-o", "act_torch.py", "--json"],
        "stdout": ["export", str(doc), "--to", "jax"],
    }, tmp_path)
    assert procs["numpy"].returncode == 0, procs["numpy"].stderr
    assert "wrote act_np.py (numpy" in procs["numpy"].stdout
    namespace: dict = {}
    exec(compile((tmp_path / "act_np.py").read_text(), "act_np.py", "exec"), namespace)
    x = np.linspace(-4.0, 4.0, 101)
    entry = json.loads(doc.read_text())["activations"]["tanh"]
    expected = activation("tanh").transformed(Transform(
        **{k: entry[k] for k in ("input_scale", "input_shift", "output_shift",
                                 "output_scale")}))(x)
    assert abs(local_summary(activation("tanh").transformed(Transform(
        **{k: entry[k] for k in ("input_scale", "input_shift", "output_shift",
                                 "output_scale")})))["q_value"] - 1.0) < 1e-12
    np.testing.assert_allclose(namespace["get_activation"]("tanh")(x), expected, rtol=1e-12)
    meta = one_json(procs["pytorch"])
    assert meta["framework"] == "pytorch" and meta["activations"] == ["tanh"]
    source = (tmp_path / "act_torch.py").read_text()
    compile(source, "act_torch.py", "exec")
    assert "def scaled_uniform_orthogonal_(" in source and "from kernelshape" not in source
    assert "import kernelshape" not in source
    assert procs["stdout"].returncode == 0
    compile(procs["stdout"].stdout, "act_jax.py", "exec")
    assert "def scaled_uniform_orthogonal(key, shape" in procs["stdout"].stdout


# --------------------------------------------------------------------------- bad input

# Bad inputs run through the installed script (name: args, words the message must contain).
BAD = {
    "unknown_activation": (["maps", "tanhh"], ["unknown activation 'tanhh'", "built-ins:"]),
    "malicious": (["maps", MALICIOUS], ["invalid activation expression", "allowed:"]),
    "bad_transform_json": (["maps", "tanh", "--transform", "{bad"],
                           ["--transform is not valid JSON", "input_scale"]),
    "invalid_spec": (["shape", "--net", "bogus:depth=3", "--method", "dks"],
                     ["unknown network preset 'bogus'", "mlp"]),
    "negative_depth": (["shape", "--net", "mlp:depth=-3,activation=tanh", "--method", "dks"],
                       ["positive integer", "-3"]),
    "zeta_one": (["shape", "--net", "mlp:depth=3,activation=tanh", "--method", "dks",
                  "--zeta", "1"], ["unattainable", "zeta > 1"]),
    "unwritable_shape_output": (["shape", "--net", "mlp:depth=3,activation=tanh", "--method",
                                 "dks", "-o", "/nonexistent-kernelshape-dir/c.json"],
                                ["cannot write", "does not exist"]),
    "unwritable_export_output": (["export", "constants.json", "--to", "numpy", "-o",
                                  "/nonexistent-kernelshape-dir/a.py"],
                                 ["cannot write", "does not exist"]),
    "unknown_method": (["shape", "--net", "mlp:depth=3", "--method", "foo"],
                       ["invalid choice: 'foo'", "dks"]),
    "json_error": (["maps", "tanhh", "--json"], ["unknown activation"]),
}
# More bad inputs, through kernelshape.cli.main in-process (same code path, no start-up cost).
BAD_IN_PROCESS = {
    "bad_transform_key": (["maps", "tanh", "--transform", '{"scale": 2}'],
                          ["unknown key(s) scale", "allowed: input_scale"]),
    "bad_transform_value": (["maps", "tanh", "--transform", '{"input_scale": "big"}'],
                            ["input_scale must be a number"]),
    "bad_c": (["maps", "tanh", "--c", "0,1.5"], ["[-1, 1]"]),
    "bad_c_text": (["maps", "tanh", "--c", "0,a"], ["'a' is not a number"]),
    "bad_q": (["maps", "tanh", "--q", "-1"], ["must be > 0"]),
    "bad_dps": (["maps", "tanh", "--dps", "3"], ["between 5 and 150"]),
    "bad_param": (["maps", "tanh", "--param", "negative_slope=0.2"], ["has no parameter"]),
    "bad_spec_option": (["shape", "--net", "mlp:depth=3,colour=red", "--method", "dks"],
                        ["no option 'colour'", "depth"]),
    "tau_with_dks": (["shape", "--net", "mlp:depth=3", "--method", "dks", "--tau", "0.3"],
                     ["tau applies to method tat only"]),
    "eta_range": (["shape", "--net", "mlp:depth=3", "--method", "tat", "--eta", "1.5"],
                  ["0 < eta < 1"]),
    "two_activations": (["shape", "--net", "mlp:depth=3", "--method", "dks", "--activation",
                         "tanh", "--activation", "relu"], ["give --activation once"]),
    "unknown_framework": (["export", "constants.json", "--to", "caffe"],
                          ["unknown export target 'caffe'", "pytorch"]),
    "missing_constants": (["export", "missing.json", "--to", "numpy"], ["does not exist"]),
    "corrupted_constants": (["export", "corrupted.json", "--to", "numpy"],
                            ["corrupted constants file"]),
    "train_without_net": (["train", "--method", "none"], ["--net SPEC", "--resume DIR"]),
    "train_resume_clash": (["train", "--resume", ".", "--net", "mlp:depth=3"],
                           ["drop --net"]),
    "unknown_option": (["maps", "tanh", "--colour"], ["unrecognized arguments: --colour"]),
    "unknown_command": (["bogus"], ["invalid choice: 'bogus'"]),
}


def _bad_files(directory: Path) -> None:
    tanh_document(directory / "constants.json")
    (directory / "corrupted.json").write_text('{"format": "kernelshape.constants", ')


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("bad")
    _bad_files(cwd)
    procs = run_many({name: args for name, (args, _) in BAD.items()}, cwd)
    procs["debug"] = run("maps", "tanhh", cwd=cwd, env={"KS_DEBUG": "1"})
    return procs


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_exits_2_with_a_helpful_message(bad_runs: dict, name: str) -> None:
    proc = bad_runs[name]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for words in BAD[name][1]:
        assert words in proc.stderr, proc.stderr
    assert proc.stdout == ""  # nothing on stdout, also with --json


@pytest.mark.parametrize("name", sorted(BAD_IN_PROCESS))
def test_more_bad_input_in_process(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from kernelshape.cli import main

    _bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KS_DEBUG", raising=False)
    args, words = BAD_IN_PROCESS[name]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    for word in words:
        assert word in err, err


def test_malicious_expression_never_runs(bad_runs: dict) -> None:
    proc = bad_runs["malicious"]
    assert "hi" not in proc.stdout.split()


def test_ks_debug_shows_the_traceback(bad_runs: dict) -> None:
    proc = bad_runs["debug"]
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


# --------------------------------------------------------------------------- verify / plot


def test_verify_approximation_is_listed_and_errors_shrink_with_width(tmp_path: Path) -> None:
    proc = run("verify", "approximation", "--net", "mlp:depth=3,activation=tanh",
               "--widths", "32,2048", "--seeds", "16", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (report,) = one_json(proc)["reports"]
    coarse, fine = report["points"]
    assert (coarse["width"], fine["width"]) == (32, 2048)
    # Monte Carlo error ~ 1/sqrt(width): 8x smaller expected; demand at least 3x
    assert fine["c_rmse"] < coarse["c_rmse"] / 3 and fine["q_rmse"] < coarse["q_rmse"] / 3


# --------------------------------------------------------------------------- train


def test_train_and_resume(tmp_path: Path) -> None:
    net = "mlp:depth=3,width=16,input_dim=32,activation=tanh"
    first = run("train", "--net", net, "--method", "none", "--data", "teacher", "--steps", "4",
                "--out", "run", "--json", cwd=tmp_path)
    data = one_json(first)
    assert data["status"] == "completed" and data["step"] == 4
    assert (tmp_path / "run" / "config.json").is_file()
    resumed = run("train", "--resume", "run", "--steps", "6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "completed" in resumed.stdout and "6" in resumed.stdout


# --------------------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    from kernelshape.cli.output import Progress

    tty, pipe = _Terminal(), io.StringIO()
    with Progress("solving", stream=tty):
        time.sleep(0.35)
    with Progress("solving", stream=pipe):
        time.sleep(0.15)
    assert "solving" in tty.getvalue() and "\r" in tty.getvalue()
    assert pipe.getvalue() == ""


# --------------------------------------------------------------------------- shape


def test_shape_json_dks(tmp_path: Path) -> None:
    from kernelshape.topology import parse_spec

    spec = "mlp:depth=10,activation=tanh"
    data = one_json(run("shape", "--net", spec, "--method", "dks", "--zeta", "1.5", "--json",
                        "-o", "c.json", cwd=tmp_path))
    for key in ("method", "activations", "local_targets", "residuals"):
        assert key in data
    params = data["activations"]["tanh"]
    assert {"input_scale", "input_shift", "output_shift", "output_scale"} <= set(params)
    t = Transform(**{k: params[k] for k in ("input_scale", "input_shift", "output_shift",
                                            "output_scale")})
    found = local_summary(activation("tanh").transformed(t))
    assert found["q_value"] == pytest.approx(1.0, abs=1e-8)
    assert found["q_slope"] == pytest.approx(1.0, abs=1e-8)
    assert found["c_value_0"] == pytest.approx(0.0, abs=1e-8)
    assert parse_spec(spec).max_slope(found["c_slope_1"]) == pytest.approx(1.5, rel=1e-7)
    assert data["network_check"]["value"] == pytest.approx(1.5, rel=1e-9)
    exported = run("export", "c.json", "--to", "pytorch", "-o", "dks.py", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    compile((tmp_path / "dks.py").read_text(), "dks.py", "exec")


def test_shape_human_leaky_relu_and_infeasible(tmp_path: Path) -> None:
    procs = run_many({
        "human": ["shape", "--net", "mlp:depth=10,activation=softplus", "--activation", "tanh",
                  "--method", "tat", "--all-solutions"],
        "leaky": ["shape", "--net", "mlp:depth=50,activation=leaky_relu", "--method", "tat",
                  "--eta", "0.9", "--json"],
        "infeasible": ["shape", "--net", "mlp:depth=5,activation=leaky_relu", "--method", "tat",
                       "--eta", "0.9"],
    }, tmp_path)
    human = procs["human"]
    assert human.returncode == 0, human.stderr
    assert "all solutions found" in human.stdout
    assert "activation=tanh" in human.stdout and "phi(x) = tanh(x)" in human.stdout
    assert "phi_hat(x) =" in human.stdout and "residual" in human.stdout
    assert "network condition: max_f C''_f(1)" in human.stdout
    leaky = one_json(procs["leaky"])
    assert "negative_slope" in leaky["activations"]["leaky_relu"]
    assert leaky["network_check"]["value"] == pytest.approx(0.9, abs=1e-9)
    infeasible = procs["infeasible"]
    assert infeasible.returncode == 2 and "Traceback" not in infeasible.stderr
    assert "eta" in infeasible.stderr and infeasible.stdout == ""


def test_demo_writes_constants_and_pytorch(tmp_path: Path) -> None:
    from kernelshape import load_constants

    proc = run("demo", "--out", "out/demo", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = load_constants(tmp_path / "out" / "demo" / "constants.json")
    assert doc["method"] == "dks" and "softplus" in doc["activations"]
    compile((tmp_path / "out" / "demo" / "constants_pytorch.py").read_text(), "demo", "exec")
    for name in ("mlp100-tanh", "resnet101-softplus"):
        for method in ("dks", "tat"):
            assert (tmp_path / "out" / "demo" / f"{name}-{method}.json").is_file()
    assert proc.stdout.count("certificate: max |residual|") == 4
