"""The constants document: schema, round trip, versioning, corruption, atomic writes, verify."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

import kernelshape
from kernelshape import constants as kc
from kernelshape.constants import (
    FORMAT_VERSION,
    build_document,
    files,
    network_hash,
    read_document,
    save_document,
    validate_document,
)

# --------------------------------------------------------------------------- a reference


def _gh_summary(name: str, entry) -> dict[str, float]:
    """local_summary of a transformed tanh by 200-node Gauss-Hermite (independent route)."""
    assert entry["activation"] == "tanh"
    z, w = hermegauss(200)
    w = w / math.sqrt(2 * math.pi)
    a, b = entry["input_scale"], entry["input_shift"]
    d, g = entry["output_shift"], entry["output_scale"]
    t = np.tanh(a * z + b)
    f = g * (t + d)
    f1 = g * a * (1 - t**2)
    f2 = g * a * a * (-2 * t * (1 - t**2))
    q = w @ f**2
    return {"q_value": q, "q_slope": w @ (f * f1 * z), "c_value_0": (w @ f) ** 2 / q,
            "c_slope_0": (w @ f1) ** 2 / q, "c_slope_1": w @ f1**2 / q,
            "c_curv_1": w @ f2**2 / q}


def _tanh_entry(a: float = 0.3, b: float = 0.5) -> dict:
    z, w = hermegauss(200)
    w = w / math.sqrt(2 * math.pi)
    d = -float(w @ np.tanh(a * z + b))
    g = 1 / math.sqrt(float(w @ (np.tanh(a * z + b) + d) ** 2))
    return {"activation": "tanh", "params": {}, "input_scale": a, "input_shift": b,
            "output_shift": d, "output_scale": g}


def _good_document(**kwargs) -> dict:
    entry = _tanh_entry()
    summary = _gh_summary("tanh", entry)
    targets = {"q_value": 1.0, "c_value_0": 0.0, "c_slope_1": summary["c_slope_1"]}
    residuals = {k: summary[k] - v for k, v in targets.items()}
    args = dict(
        method="dks",
        targets={"zeta": 1.5, "local_q_slope": None},
        activations={"tanh": entry,
                     "leaky_relu": {"activation": "leaky_relu", "negative_slope": 0.3,
                                    "output_scale": math.sqrt(2 / 1.09)}},
        local_targets={"tanh": targets},
        residuals={"tanh": residuals},
        network={"spec": "mlp:depth=50,activation=tanh",
                 "description": {"kind": "mlp", "depth": 50, "blocks": [1, 2.5, None]}},
        certificate={"route": "gauss-hermite-200", "tolerance": 1e-12},
        created="2026-01-02T03:04:05+00:00",
    )
    args.update(kwargs)
    return build_document(**args)


# --------------------------------------------------------------------------- building


def test_build_document_layout():
    doc = _good_document()
    assert list(doc)[:3] == ["format", "format_version", "kernelshape_version"]
    assert doc["format"] == "kernelshape.constants"
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["kernelshape_version"] == kernelshape.__version__
    assert doc["network"]["hash"] == network_hash(doc["network"]["description"])
    assert doc["network"]["hash"].startswith("sha256:") and len(doc["network"]["hash"]) == 71
    assert doc["max_residual"] == max(abs(v) for v in doc["residuals"]["tanh"].values())
    assert doc["activations"]["leaky_relu"]["input_scale"] == 1.0  # defaults filled in
    assert "eoc" not in doc
    json.dumps(doc, allow_nan=False)  # plain JSON


def test_build_document_accepts_numpy_and_transform_objects():
    class FakeTransform:
        def as_dict(self):
            return {"input_scale": np.float32(0.5), "input_shift": np.float64(0.25),
                    "output_shift": 0, "output_scale": np.int64(2)}

    doc = build_document("none", {"eta": np.float64(0.9)}, {"tanh": FakeTransform()},
                         {}, {}, eoc={"tanh": {"weight_variance": np.float64(1.5),
                                               "bias_variance": 0.0, "q_fixed_point": 1}})
    entry = doc["activations"]["tanh"]
    assert entry == {"activation": "tanh", "params": {}, "input_scale": 0.5,
                     "input_shift": 0.25, "output_shift": 0.0, "output_scale": 2.0}
    assert all(type(v) is float for k, v in entry.items() if k not in ("activation", "params"))
    assert type(doc["targets"]["eta"]) is float
    assert doc["eoc"]["tanh"]["q_fixed_point"] == 1.0


def test_build_document_from_kernelshape_activations():
    acts = pytest.importorskip("kernelshape.engine.activations")
    t = acts.Transform(input_scale=0.5, input_shift=0.1, output_shift=-0.2, output_scale=3.0)
    lrelu = acts.activation("leaky_relu", negative_slope=0.2).transformed(
        acts.Transform(output_scale=1.25, negative_slope=0.4))
    doc = build_document("none", {}, {"tanh": acts.activation("tanh").transformed(t),
                                      "leaky_relu": lrelu, "t": t}, {}, {})
    assert doc["activations"]["tanh"] == {"activation": "tanh", "params": {}, **t.as_dict()}
    assert doc["activations"]["t"]["activation"] == "t"
    entry = doc["activations"]["leaky_relu"]
    assert entry["negative_slope"] == 0.4  # the transform's slope overrides the parameter


def test_network_hash_is_canonical():
    a = {"depth": 3, "layers": [{"w": 0.6, "kind": "dense"}]}
    b = {"layers": [{"kind": "dense", "w": 0.6}], "depth": 3}
    assert network_hash(a) == network_hash(b)
    assert network_hash(a) != network_hash({**a, "depth": 4})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_rejected_when_building(bad):
    with pytest.raises(ValueError, match=r"activations\.tanh\.output_scale: must be finite"):
        build_document("dks", {}, {"tanh": {"output_scale": bad}}, {}, {})
    with pytest.raises(ValueError, match=r"residuals\.tanh\.q_value: must be finite"):
        build_document("dks", {}, {"tanh": {}}, {}, {"tanh": {"q_value": bad}})
    with pytest.raises(ValueError, match=r"targets\.zeta: must be finite"):
        build_document("dks", {"zeta": bad}, {"tanh": {}}, {}, {})


# --------------------------------------------------------------------------- schema errors


def _mutate(path, value=None, delete=False):
    def apply(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return apply


SCHEMA_CASES = [
    (_mutate(["method"], delete=True), "the document: missing required key 'method'"),
    (_mutate(["method"], "magic"), "method: must be one of 'dks', 'tat', 'eoc', 'none'"),
    (_mutate(["activations", "tanh", "input_scale"], "abc"),
     "activations.tanh.input_scale: expected number, got str"),
    (_mutate(["activations", "tanh", "input_scale"], True),
     "activations.tanh.input_scale: expected number, got bool"),
    (_mutate(["activations", "tanh", "output_shift"], delete=True),
     "activations.tanh: missing required key 'output_shift'"),
    (_mutate(["activations", "tanh", "gain"], 1.0), "activations.tanh.gain: unknown key"),
    (_mutate(["activations", "tanh", "activation"], ""), "activations.tanh.activation: must not"),
    (_mutate(["activations", "tanh", "params"], {"a": [1]}),
     "activations.tanh.params.a: expected number or string or boolean or null"),
    (_mutate(["activations"], {}), "activations: needs at least 1 entries"),
    (_mutate(["local_targets", "tanh", "q_valeu"], 1.0), "local_targets.tanh.q_valeu: invalid"),
    (_mutate(["local_targets", "relu"], {"q_value": 1.0}),
     "local_targets.relu: no such activation"),
    (_mutate(["residuals", "tanh", "q_value"], "small"),
     "residuals.tanh.q_value: expected number"),
    (_mutate(["max_residual"], -1.0), "max_residual: must be >= 0"),
    (_mutate(["max_residual"], 0.0), "max_residual: 0.0 is smaller than the largest"),
    (_mutate(["network", "hash"], "md5:abc"), "network.hash: 'md5:abc' does not match"),
    (_mutate(["network", "hash"], "sha256:" + "0" * 64),
     "network.hash: sha256:000"),
    (_mutate(["network", "spec"], 3), "network.spec: expected string or null"),
    (_mutate(["created"], "yesterday"), "created: 'yesterday' does not match"),
    (_mutate(["certificate", "tolerance"], delete=True),
     "certificate: missing required key 'tolerance'"),
    (_mutate(["certificate", "check_tolerance"], 0.0),
     "certificate.check_tolerance: must be > 0"),
    (_mutate(["eoc"], {"tanh": {"weight_variance": 1.0, "bias_variance": 0.0}}),
     "eoc.tanh: missing required key 'q_fixed_point'"),
    (_mutate(["extra"], 1), "extra: unknown key"),
    (_mutate(["format"], "something.else"), "not a kernelshape constants document"),
    (_mutate(["format_version"], "1"), "format_version: expected a string like '1.0'"),
    (_mutate(["format_version"], 1.0), "format_version: expected a string like '1.0'"),
    (_mutate(["format_version"], "0.9"), "older than any supported format"),
    (_mutate(["activations", "leaky_relu", "negative_slope"], delete=True),
     "activations.leaky_relu: leaky_relu needs 'negative_slope'"),
    (_mutate(["targets"], [1.5]), "targets: expected object, got list"),
    (_mutate(["activations", "tanh", "input_scale"], math.nan),
     "activations.tanh.input_scale: must be finite"),
]


@pytest.mark.parametrize("mutate,message", SCHEMA_CASES)
def test_schema_violations_name_the_key(mutate, message):
    doc = _good_document()
    validate_document(copy.deepcopy(doc))
    bad = copy.deepcopy(doc)
    mutate(bad)
    with pytest.raises(ValueError) as info:
        validate_document(bad)
    assert message in str(info.value)


def test_schema_violation_in_file_and_on_save(tmp_path):
    doc = _good_document()
    doc["activations"]["tanh"]["input_scale"] = "abc"
    with pytest.raises(ValueError, match="activations.tanh.input_scale"):
        save_document(doc, tmp_path / "x.json")
    assert not list(tmp_path.iterdir())
    (tmp_path / "x.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"x\.json: invalid constants document: activations"):
        read_document(tmp_path / "x.json")


def test_not_a_document():
    for value in ([1, 2], "text", 3, None):
        with pytest.raises(ValueError, match="must be a JSON object"):
            validate_document(value)


def test_schema_file_is_the_validator_schema():
    schema = kc.schema()
    assert schema["properties"]["format"]["const"] == kc.FORMAT
    assert schema["$defs"]["conditions"]["propertyNames"]["enum"] == list(kc.CONDITIONS)
    assert set(schema["required"]) == {
        "format", "format_version", "kernelshape_version", "created", "method", "targets",
        "network", "activations", "local_targets", "residuals", "max_residual", "certificate"}


# --------------------------------------------------------------------------- round trip & versions


def test_round_trip_is_exact(tmp_path):
    awkward = {"input_scale": 0.1 + 0.2, "input_shift": 5e-324, "output_shift": -0.0,
               "output_scale": 1.7976931348623157e308}
    doc = _good_document(activations={"tanh": _tanh_entry(), "weird": awkward})
    path = save_document(doc, tmp_path / "c.json")
    back = read_document(path)
    assert back == doc
    for key, value in awkward.items():
        got = back["activations"]["weird"][key]
        assert got == value and math.copysign(1, got) == math.copysign(1, value)
    # a second save of the loaded document gives the same bytes
    again = save_document(back, tmp_path / "d.json")
    assert again.read_bytes() == path.read_bytes()


def test_newer_major_version_is_refused(tmp_path):
    doc = _good_document()
    doc["format_version"] = "2.0"
    doc["something_new"] = {"x": 1}
    path = tmp_path / "future.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format_version 2.0, written by a newer kernelshape"):
        read_document(path)
    with pytest.raises(ValueError, match="upgrade kernelshape"):
        validate_document(doc)


def test_newer_minor_version_loads_and_ignores_new_keys(tmp_path):
    doc = _good_document()
    doc["format_version"] = "1.7"
    doc["something_new"] = {"x": 1}
    doc["activations"]["tanh"]["new_field"] = "ok"
    path = tmp_path / "minor.json"
    path.write_text(json.dumps(doc))
    assert read_document(path)["something_new"] == {"x": 1}
    doc["activations"]["tanh"]["input_scale"] = "abc"  # known keys are still checked
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="activations.tanh.input_scale"):
        read_document(path)


# --------------------------------------------------------------------------- corrupted files


def _good_text() -> str:
    return json.dumps(_good_document(), indent=2)


CORRUPT = [
    ("truncated", lambda: _good_text()[: len(_good_text()) // 2], "not valid JSON"),
    ("empty", lambda: "", "not valid JSON"),
    ("binary", lambda: b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not UTF-8"),
    ("nan", lambda: _good_text().replace('"input_scale": 0.3', '"input_scale": NaN'),
     "non-finite number NaN"),
    ("infinity", lambda: _good_text().replace('"max_residual": ', '"max_residual": Infinity, '
                                              '"x": '), "non-finite number Infinity"),
    ("list", lambda: "[1, 2, 3]", "must be a JSON object"),
    ("garbage", lambda: "constants: yes", "not valid JSON"),
]


@pytest.mark.parametrize("label,content,message", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupted_files_are_clear_errors(tmp_path, label, content, message):
    data = content()
    path = tmp_path / f"{label}.json"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    with pytest.raises(ValueError) as info:
        read_document(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read constants file"):
        read_document(tmp_path / "nope.json")


# --------------------------------------------------------------------------- atomic writes


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_invalid_document_does_not_touch_existing_file(tmp_path):
    path = save_document(_good_document(), tmp_path / "c.json")
    before = path.read_bytes()
    bad = _good_document()
    bad["method"] = "magic"
    with pytest.raises(ValueError, match="method"):
        save_document(bad, path)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["c.json"]


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_failure_during_write_leaves_no_partial_file(tmp_path, monkeypatch, failure):
    path = save_document(_good_document(), tmp_path / "c.json")
    before = path.read_bytes()
    new = _good_document(method="tat")

    def broken_fsync(fd):
        raise failure

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    with pytest.raises(type(failure)):
        save_document(new, path)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["c.json"]


def test_failure_at_replace_leaves_no_temp_file(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("cross-device link")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_document(_good_document(), tmp_path / "c.json")
    assert _listing(tmp_path) == []


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        save_document(_good_document(), tmp_path / "no" / "c.json")


def test_saved_file_is_complete_json(tmp_path):
    path = save_document(_good_document(), tmp_path / "c.json")
    text = path.read_text()
    assert text.endswith("\n") and json.loads(text)["format"] == "kernelshape.constants"
    assert os.stat(path).st_size == len(text.encode())
