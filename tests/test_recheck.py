"""Constants documents are rechecked from the network and method they record: a document the
solver wrote passes, every kind of edit is refused with the numbers, and nothing the file
says about its own tolerances or targets is trusted."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

import kernelshape as ks
from kernelshape.constants import build_document, save_document
from kernelshape.export import export
from kernelshape.solve.recheck import RECHECK_TOLERANCE, checked, recheck_document
from kernelshape.topology import nets
from kernelshape.train import train
from kernelshape.train.data import teacher

DEPTH = 5


@pytest.fixture(scope="module")
def net():
    return nets.mlp(DEPTH, width=8, activation="tanh", input_dim=32, num_classes=10)


@pytest.fixture(scope="module")
def dks_doc(net):
    return ks.shape(net, "dks", zeta=1.5).to_document()


def _gh_c_slope_1(entry: dict) -> float:
    """C'(1) of the document's transformed tanh by 200-node Gauss-Hermite (independent)."""
    z, w = hermegauss(200)
    w = w / math.sqrt(2 * math.pi)
    a, b, d, g = (entry[k] for k in ("input_scale", "input_shift", "output_shift",
                                     "output_scale"))
    t = np.tanh(a * z + b)
    return float(w @ (g * a * (1 - t * t)) ** 2 / (w @ (g * (t + d)) ** 2))


@pytest.mark.parametrize(("method", "activation", "depth"), [
    ("dks", "tanh", 5), ("dks", "relu", 5), ("dks", "leaky_relu", 5), ("dks", "softplus", 5),
    ("tat", "tanh", 5), ("tat", "leaky_relu", 20), ("eoc", "tanh", 5), ("none", "gelu", 5),
])
def test_solver_documents_pass(method: str, activation: str, depth: int) -> None:
    doc = ks.shape(nets.mlp(depth, width=8, activation=activation), method).to_document()
    residuals = recheck_document(doc)
    assert all(abs(v) < 1e-12 for r in residuals.values() for v in r.values()), residuals


def test_dks_chain_target_is_zeta_to_the_one_over_depth(dks_doc) -> None:
    """For a chain max_slope(xi) = xi^depth: the recheck's target, derived independently."""
    assert _gh_c_slope_1(dks_doc["activations"]["tanh"]) == pytest.approx(1.5 ** (1 / DEPTH),
                                                                        rel=1e-12)
    doc = copy.deepcopy(dks_doc)
    doc["targets"]["zeta"] = 2.0
    with pytest.raises(ValueError, match=r"tanh\.c_slope_1 = .*needs 1\.148698354997") as info:
        checked(doc)
    assert str(2.0 ** (1 / DEPTH))[:12] in str(info.value)


@pytest.mark.parametrize(("key", "factor", "condition"), [
    ("output_scale", 1 + 1e-6, "tanh.q_value"),
    ("output_shift", 1 + 1e-3, "tanh.c_value_0"),
    ("input_scale", 1 + 1e-5, "tanh.c_slope_1"),
])
def test_edited_constant_is_refused_whatever_the_file_says(dks_doc, key, factor, condition):
    doc = copy.deepcopy(dks_doc)
    doc["activations"]["tanh"][key] *= factor
    doc["local_targets"] = {}                        # nothing listed to check
    doc["residuals"] = {}
    doc["max_residual"] = 0.0
    doc["certificate"]["check_tolerance"] = 1e9      # a whitelist in the file
    with pytest.raises(ValueError, match="do not satisfy what their document claims") as info:
        checked(doc)
    assert condition in str(info.value)


def test_smallest_refused_edit_is_near_the_tolerance(dks_doc) -> None:
    """An edit that moves C'(1) by 10x the tolerance is refused, one by 0.1x is not."""
    entry = dks_doc["activations"]["tanh"]
    base = _gh_c_slope_1(entry)
    for scale, refused in ((10.0, True), (0.1, False)):
        doc = copy.deepcopy(dks_doc)
        # C'(1) ~ a^2 near the solution: a relative change e of a moves C'(1) by ~2e
        doc["activations"]["tanh"]["input_scale"] *= 1 + scale * RECHECK_TOLERANCE * \
            max(1.0, base) / 2
        if refused:
            with pytest.raises(ValueError):
                checked(doc)
        else:
            checked(doc)


def test_relabelled_method_activation_or_transform_is_refused(dks_doc, net) -> None:
    doc = copy.deepcopy(dks_doc)
    doc["method"], doc["targets"] = "tat", {"tau": 0.3}
    with pytest.raises(ValueError, match=r"tanh\.c_slope_1 = .*needs 1\.0"):
        checked(doc)
    doc = copy.deepcopy(dks_doc)
    doc["activations"]["tanh"]["activation"] = "softplus"
    with pytest.raises(ValueError, match="recorded network"):
        checked(doc)
    none = ks.shape(net, "none").to_document()
    none["activations"]["tanh"]["output_scale"] = 1.2
    with pytest.raises(ValueError, match="uses the activation untransformed"):
        checked(none)
    eoc = ks.shape(net, "eoc", bias_variance=0.05).to_document()
    eoc["eoc"]["tanh"]["weight_variance"] *= 1.01
    with pytest.raises(ValueError, match=r"tanh\.eoc\.weight_variance"):
        checked(eoc)


def test_tat_leaky_slope_is_rederived() -> None:
    net = nets.mlp(20, width=8, activation="leaky_relu")
    doc = ks.shape(net, "tat", eta=0.9).to_document()
    doc["activations"]["leaky_relu"]["negative_slope"] = 0.5
    doc["activations"]["leaky_relu"]["output_scale"] = math.sqrt(2 / 1.25)
    with pytest.raises(ValueError, match=r"negative_slope = 0\.5, but eta = 0\.9"):
        checked(doc)


def test_document_without_network_cannot_be_trusted() -> None:
    doc = build_document("dks", {"zeta": 1.5}, {"tanh": {"activation": "tanh"}}, {}, {})
    with pytest.raises(ValueError, match="records no network"):
        checked(doc)
    assert checked(doc, verify=False)["method"] == "dks"


def test_loaders_refuse_a_tampered_file(tmp_path, dks_doc, net) -> None:
    good = save_document(dks_doc, tmp_path / "good.json")
    assert ks.load_constants(good)["method"] == "dks"
    bad = copy.deepcopy(dks_doc)
    bad["activations"]["tanh"]["input_scale"] *= 1.001
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad\.json: the constants do not satisfy"):
        ks.load_constants(path)
    assert ks.load_constants(path, verify=False)["method"] == "dks"
    with pytest.raises(ValueError, match="do not satisfy"):
        export(path, "numpy")
    with pytest.raises(ValueError, match="do not satisfy"):
        train(net, method="dks", constants=bad, data=teacher(64, 16), steps=1, progress=False)
