"""Exported code runs in the real frameworks and agrees with independent numpy references."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import math
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate, special

from kernelshape.constants import build_document, save_document
from kernelshape.engine.builtins import BUILTINS, base_expression
from kernelshape.export import FRAMEWORKS, export, export_to_file

# --------------------------------------------------------------------------- references

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
SLOPE = 0.2  # leaky_relu negative slope used below


def _softplus(u):
    return np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))


#: float64 reference formulas written independently of the exporter
REFERENCE = {
    "identity": lambda u: u,
    "relu": lambda u: np.maximum(u, 0.0),
    "leaky_relu": lambda u: np.where(u >= 0, u, SLOPE * u),
    "abs": np.abs,
    "step": lambda u: (u >= 0).astype(np.float64),  # kernelshape's convention at 0
    "sign": lambda u: np.where(u >= 0, 1.0, -1.0),
    "tanh": np.tanh,
    "sigmoid": special.expit,
    "erf": special.erf,
    "softplus": _softplus,
    "elu": lambda u: np.where(u > 0, u, np.expm1(np.minimum(u, 0.0))),
    "selu": lambda u: SELU_SCALE * np.where(u > 0, u, SELU_ALPHA * np.expm1(np.minimum(u, 0.0))),
    "swish": lambda u: u * special.expit(u),
    "gelu": lambda u: 0.5 * u * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (u + 0.044715 * u**3))),
    "gelu_exact": lambda u: u * special.ndtr(u),
    "mish": lambda u: u * np.tanh(_softplus(u)),
    "bentid": lambda u: (np.sqrt(u * u + 1.0) - 1.0) / 2.0 + u,
    "atan": np.arctan,
    "asinh": np.arcsinh,
    "softsign": lambda u: u / (1.0 + np.abs(u)),
    "square": lambda u: u * u,
    "sin": np.sin,
    "cos": np.cos,
    "gaussian": lambda u: np.exp(-0.5 * u * u),
    "exp": np.exp,
}

#: user expressions and hand-written equivalents
EXPRESSIONS = {
    "x*tanh(log(1+exp(x)))": lambda u: u * np.tanh(_softplus(u)),
    "Max(x, 0) + 0.1*Min(x, 0)": lambda u: np.where(u > 0, u, 0.1 * u),
    "sqrt(x**2 + 1) - 1 + E**(-x**2)": lambda u: np.sqrt(u * u + 1) - 1 + np.exp(-u * u),
    "1/(1 + exp(-x)) - 1/2": lambda u: special.expit(u) - 0.5,
    "sigmoid(2*x) - softplus(-x)/3": lambda u: special.expit(2 * u) - _softplus(-u) / 3,
    "x**3/6 - x**2 + pi": lambda u: u**3 / 6 - u**2 + np.pi,
    "erfc(x)*cosh(x/4) + sinh(x/5)": lambda u: special.erfc(u) * np.cosh(u / 4) + np.sinh(u / 5),
    "-(x**2) + (-x)**2 + 2**-x": lambda u: 2.0**-u,
    "x - (x - 1) + x/(x**2 + 2)": lambda u: 1 + u / (u * u + 2),
    "abs(x)*sign(x) + atan(x) + asinh(x) + log1p(x**2) + expm1(-abs(x))":
        lambda u: u + np.arctan(u) + np.arcsinh(u) + np.log1p(u * u) + np.expm1(-np.abs(u)),
    "log(exp(x) + 1) - cos(x)*sin(x) + erf(x)":
        lambda u: _softplus(u) - np.cos(u) * np.sin(u) + special.erf(u),
    "max(x, -1, 2*x, -3)": lambda u: np.maximum(np.maximum(u, -1.0), 2 * u),
    "relu(x) - step(x)/2 + sign(x)/4":
        lambda u: np.maximum(u, 0) - (u >= 0) / 2 + np.where(u >= 0, 1, -1) / 4,
}

A, B, D, G = 0.7, 0.3, -0.2, 1.3


def _entry(activation: str) -> dict:
    entry = {"activation": activation, "params": {}, "input_scale": A, "input_shift": B,
             "output_shift": D, "output_scale": G}
    if activation in ("leaky_relu", "lrelu"):
        entry["negative_slope"] = SLOPE
    return entry


def _all_activations_document() -> dict:
    acts = {name: _entry(name) for name in REFERENCE}
    acts.update({text: _entry(text) for text in EXPRESSIONS})
    return build_document("dks", {"zeta": 1.5}, acts, {}, {}, network="mlp:depth=4")


def _reference(name: str):
    return REFERENCE.get(name) or EXPRESSIONS[name]


# --------------------------------------------------------------------------- frameworks


class Framework:
    """Adapter giving tests one way to build inputs and read outputs per framework."""

    name = "numpy"

    def tensor(self, a):
        return np.asarray(a)

    def numpy(self, t):
        return np.asarray(t)

    def module_activation(self, mod, name, dtype):
        return mod.get_activation(name)

    def context(self):
        return contextlib.nullcontext()


class NumpyFramework(Framework):
    pass


class TorchFramework(Framework):
    name = "pytorch"

    def __init__(self, torch):
        self.torch = torch

    def tensor(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a))

    def numpy(self, t):
        return t.detach().cpu().numpy()


class JaxFramework(Framework):
    name = "jax"

    def __init__(self, jax):
        self.jax = jax

    def tensor(self, a):
        return self.jax.numpy.asarray(a)

    def context(self):
        enable = getattr(self.jax, "enable_x64", None)
        if enable is None:  # older jax
            from jax.experimental import enable_x64 as enable
        return enable(True)


class TensorflowFramework(Framework):
    name = "tensorflow"

    def __init__(self, tf):
        self.tf = tf

    def tensor(self, a):
        return self.tf.constant(a)

    def numpy(self, t):
        return t.numpy()

    def module_activation(self, mod, name, dtype):
        return mod.get_activation(name, dtype=np.dtype(dtype).name)


def _framework(name: str) -> Framework:
    if name == "numpy":
        return NumpyFramework()
    if name == "pytorch":
        torch = pytest.importorskip(
            "torch", reason="PyTorch is not installed: PyTorch export checks skipped")
        return TorchFramework(torch)
    if name == "jax":
        jax = pytest.importorskip(
            "jax", reason="JAX is not installed (pip install jax): JAX export checks skipped")
        return JaxFramework(jax)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = pytest.importorskip(
        "tensorflow",
        reason="TensorFlow is not installed: TensorFlow export checks skipped")
    return TensorflowFramework(tf)


def load_source(source: str, directory: Path, stem: str):
    """Import generated source from a real file, as a user would."""
    path = directory / f"{stem}_{uuid.uuid4().hex[:8]}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module", params=FRAMEWORKS)
def fw(request):
    framework = _framework(request.param)
    if framework.name != "pytorch":
        yield framework
        return
    # torch's multi-threaded LAPACK is pathologically slow on small shared machines
    threads = framework.torch.get_num_threads()
    framework.torch.set_num_threads(1)
    yield framework
    framework.torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def all_doc():
    return _all_activations_document()


@pytest.fixture(scope="module")
def generated(fw, all_doc, tmp_path_factory):
    with fw.context():
        return load_source(export(all_doc, to=fw.name, verify=False),
                           tmp_path_factory.mktemp("gen"), fw.name)


# --------------------------------------------------------------------------- the formulas


def test_reference_covers_every_builtin():
    assert set(REFERENCE) == set(BUILTINS)


@pytest.mark.parametrize("alias,name", [("silu", "swish"), ("linear", "identity"),
                                        ("lrelu", "leaky_relu"), ("arctan", "atan")])
def test_builtin_aliases(alias, name, tmp_path):
    doc = build_document("none", {}, {alias: _entry(alias), name: _entry(name)}, {}, {})
    mod = load_source(export(doc, to="numpy", verify=False), tmp_path, "aliases")
    x = np.linspace(-3, 3, 13)
    np.testing.assert_array_equal(mod.get_activation(alias)(x), mod.get_activation(name)(x))


def _check_values(fw, fn, name, dtype, tol):
    x = np.concatenate([np.linspace(-6, 6, 241), [-40.0, -20.0, 20.0, 40.0]]).astype(dtype)
    if dtype == np.float32:
        x = x[np.abs(x) <= 6]
    u = A * x.astype(np.float64) + B
    ref_phi = _reference(name)(u)
    ref = G * (ref_phi + D)
    with fw.context():
        out = fw.numpy(fn(fw.tensor(x)))
    assert out.dtype == dtype, f"{name}: output dtype {out.dtype}, input {np.dtype(dtype)}"
    scale = abs(G) * (np.abs(ref_phi) + abs(D))
    if dtype == np.float32:
        # rounding x and the constants to float32 moves u by ~1e-7 (|A x| + |B|);
        # allow for that through phi's local slope (a finite difference of the reference)
        h = 1e-6
        slope = np.abs(_reference(name)(u + h) - _reference(name)(u - h)) / (2 * h)
        scale = scale + abs(G) * slope * (np.abs(A * x) + abs(B))
    err = np.abs(out.astype(np.float64) - ref)
    bad = err > tol * np.maximum(scale, 1e-300)
    assert not bad.any(), (
        f"{fw.name} {name} {np.dtype(dtype)}: worst at x={x[bad][:3]}, "
        f"got {out[bad][:3]}, want {ref[bad][:3]}"
    )


@pytest.mark.parametrize("name", [*REFERENCE, *EXPRESSIONS])
def test_activation_values(fw, generated, name):
    act = fw.module_activation(generated, name, np.float64)
    _check_values(fw, act, name, np.float64, 1e-12)
    act32 = fw.module_activation(generated, name, np.float32)
    _check_values(fw, act32, name, np.float32, 1e-6)
    if hasattr(generated, "activation_fn"):  # the function form
        _check_values(fw, generated.activation_fn(name), name, np.float64, 1e-12)


STABLE = ["sigmoid", "softplus", "swish", "mish", "elu", "selu", "gelu", "gelu_exact", "tanh",
          "x*tanh(log(1+exp(x)))", "1/(1 + exp(-x)) - 1/2"]


@pytest.mark.parametrize("name", STABLE)
def test_no_overflow_for_large_inputs(fw, generated, name):
    x = np.array([-1200.0, -800.0, -100.0, 100.0, 800.0, 1200.0])
    with fw.context(), np.errstate(over="raise", invalid="raise", divide="raise"):
        out = fw.numpy(generated.activation_fn(name)(fw.tensor(x)))
    assert np.all(np.isfinite(out)), f"{name}: {out}"
    u = A * x + B
    with np.errstate(over="ignore", under="ignore"):
        ref = G * (_reference(name)(u) + D)
    assert np.allclose(out, ref, rtol=1e-12, atol=1e-300)


def test_numpy_erf_fallback_without_scipy(all_doc, tmp_path, monkeypatch):
    mod = load_source(export(all_doc, to="numpy", verify=False), tmp_path, "np_noscipy")
    monkeypatch.setattr(mod, "_scipy_erf", None)
    monkeypatch.setattr(mod, "_scipy_erfc", None)
    for name in ("erf", "gelu_exact"):
        _check_values(NumpyFramework(), mod.get_activation(name), name, np.float64, 1e-12)
        _check_values(NumpyFramework(), mod.get_activation(name), name, np.float32, 1e-6)


def test_matches_kernelshape_activation_when_available(all_doc, tmp_path):
    """Same values as kernelshape.engine.activations, including at kinks (u = 0) and aliases."""
    acts = pytest.importorskip(
        "kernelshape.engine.activations", reason="kernelshape.engine.activations not available yet")
    entries = {}
    for name in [*all_doc["activations"], "silu", "linear", "lrelu", "arctan"]:
        try:
            acts.activation(name)
        except ValueError:  # an expression kernelshape's parser does not take
            continue
        leaky = name in ("leaky_relu", "lrelu")
        entries[name] = {"activation": name, "params": {"negative_slope": 0.05} if leaky else {}}
        entries[name + " transformed"] = _entry(name)
    doc = build_document("none", {}, entries, {}, {})
    mod = load_source(export(doc, to="numpy", verify=False), tmp_path, "np_vs_ks")
    x = np.concatenate([np.linspace(-4, 4, 161), [-B / A, 0.0]])
    checked = 0
    for key, entry in doc["activations"].items():
        base = acts.activation(entry["activation"], **entry["params"])
        t = acts.Transform(**{k: entry[k] for k in ("input_scale", "input_shift",
                                                      "output_shift", "output_scale")},
                           negative_slope=entry.get("negative_slope"))
        np.testing.assert_allclose(mod.get_activation(key)(x), base.transformed(t)(x),
                                   rtol=1e-12, atol=1e-12, err_msg=key)
        checked += 1
    assert checked >= 2 * len(REFERENCE)


def test_unknown_name_is_a_clear_error(generated):
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        generated.get_activation("nope")


# --------------------------------------------------------------------------- initializers


def _q(a, axis=-1):
    return np.mean(np.square(np.asarray(a, dtype=np.float64)), axis=axis)


DENSE = [(256, 256), (128, 256), (256, 128), (64, 300)]  # (in, out): square, wide, narrow
CONV = [(64, 128, (3, 3)), (128, 64, (3, 3)), (32, 16, (5,)), (16, 24, (3, 3, 3))]


def _dense_ratio(fw, mod, fan_in, fan_out, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4000, fan_in))
    if fw.name == "numpy":
        w = mod.scaled_uniform_orthogonal(np.random.default_rng(seed), (fan_in, fan_out))
        y = x @ w
    elif fw.name == "pytorch":
        torch = fw.torch
        torch.manual_seed(seed)
        layer = torch.nn.Linear(fan_in, fan_out).double()
        mod.initialize_(layer)
        assert layer.weight.shape == (fan_out, fan_in)
        assert torch.count_nonzero(layer.bias) == 0
        y = layer(torch.from_numpy(x)).detach().numpy()
    elif fw.name == "jax":
        w = mod.scaled_uniform_orthogonal(fw.jax.random.PRNGKey(seed), (fan_in, fan_out),
                                          dtype=fw.jax.numpy.float64)
        y = np.asarray(fw.jax.numpy.asarray(x) @ w)
    else:
        tf = fw.tf
        layer = tf.keras.layers.Dense(fan_out, kernel_initializer=mod.ScaledUniformOrthogonal(
            seed=seed), dtype="float64")
        y = layer(tf.constant(x)).numpy()
        assert tuple(layer.kernel.shape) == (fan_in, fan_out)
    return _q(y).mean() / _q(x).mean()


@pytest.mark.parametrize("fan_in,fan_out", DENSE)
def test_dense_initializer_preserves_q(fw, generated, fan_in, fan_out):
    with fw.context():
        ratio = _dense_ratio(fw, generated, fan_in, fan_out, seed=fan_in + 7 * fan_out)
    assert abs(ratio - 1) < 0.02, f"{fw.name} dense {fan_in}->{fan_out}: q ratio {ratio}"


def _np_conv_same(x, w):
    """Plain cross-correlation with 'same' zero padding; x [N, *S, C], w [*K, C, O]."""
    ks = w.shape[:-2]
    pad = [(0, 0)] + [(k // 2, k // 2) for k in ks] + [(0, 0)]
    xp = np.pad(x, pad)
    out = np.zeros(x.shape[:-1] + (w.shape[-1],))
    for tap in np.ndindex(*ks):
        sl = (slice(None),) + tuple(slice(t, t + n) for t, n in zip(tap, x.shape[1:-1],
                                                                  strict=True))
        out += xp[sl] @ w[tap]
    return out


def _conv_ratio(fw, mod, cin, cout, ks, seed):
    rng = np.random.default_rng(seed)
    spatial = {1: (40,), 2: (12, 12), 3: (6, 6, 6)}[len(ks)]
    x = rng.standard_normal((8,) + spatial + (cin,))  # channels last
    centre = tuple(k // 2 for k in ks)
    if fw.name == "numpy":
        w = mod.scaled_uniform_orthogonal(np.random.default_rng(seed), ks + (cin, cout))
        taps = np.abs(w).reshape(-1, cin * cout).sum(axis=1).reshape(ks)
        assert np.count_nonzero(taps) == 1 and taps[centre] > 0
        y = _np_conv_same(x, w)
    elif fw.name == "pytorch":
        torch = fw.torch
        torch.manual_seed(seed)
        conv_cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[len(ks)]
        conv = conv_cls(cin, cout, ks, padding=tuple(k // 2 for k in ks)).double()
        mod.initialize_(conv)
        w = conv.weight.detach().numpy()
        assert w.shape == (cout, cin) + ks
        assert np.count_nonzero(np.abs(w).sum(axis=(0, 1))) == 1
        assert np.abs(w[(slice(None), slice(None)) + centre]).sum() > 0
        xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
        y = np.moveaxis(conv(xt).detach().numpy(), 1, -1)
    elif fw.name == "jax":
        jax = fw.jax
        w = mod.scaled_uniform_orthogonal(jax.random.PRNGKey(seed), ks + (cin, cout),
                                          dtype=jax.numpy.float64)
        spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
                3: ("NDHWC", "DHWIO", "NDHWC")}[len(ks)]
        y = np.asarray(jax.lax.conv_general_dilated(
            jax.numpy.asarray(x), w, (1,) * len(ks), "SAME", dimension_numbers=spec))
    else:
        tf = fw.tf
        conv_cls = {1: tf.keras.layers.Conv1D, 2: tf.keras.layers.Conv2D,
                    3: tf.keras.layers.Conv3D}[len(ks)]
        conv = conv_cls(cout, ks, padding="same", dtype="float64",
                        kernel_initializer=mod.ScaledUniformOrthogonal(seed=seed))
        y = conv(tf.constant(x)).numpy()
        w = conv.kernel.numpy()
        assert w.shape == ks + (cin, cout)
        assert np.count_nonzero(np.abs(w).sum(axis=(-1, -2))) == 1
    return _q(y).mean() / _q(x).mean()


@pytest.mark.parametrize("cin,cout,ks", CONV)
def test_conv_delta_initializer_preserves_q(fw, generated, cin, cout, ks):
    with fw.context():
        ratio = _conv_ratio(fw, generated, cin, cout, ks, seed=cin + cout)
    assert abs(ratio - 1) < 0.02, f"{fw.name} conv {cin}->{cout} {ks}: q ratio {ratio}"


def test_even_kernel_rejected(fw, generated):
    with fw.context(), pytest.raises(ValueError, match="odd spatial sizes"):
        if fw.name == "numpy":
            generated.scaled_uniform_orthogonal(0, (2, 2, 8, 8))
        elif fw.name == "pytorch":
            generated.scaled_uniform_orthogonal_(fw.torch.empty(8, 8, 2, 2))
        elif fw.name == "jax":
            generated.scaled_uniform_orthogonal(fw.jax.random.PRNGKey(0), (2, 2, 8, 8))
        else:
            generated.ScaledUniformOrthogonal()((2, 2, 8, 8))


@pytest.mark.parametrize("fan_in,fan_out", [(256, 128), (128, 256), (96, 96)])
def test_suo_matrix_is_scaled_orthogonal(fan_in, fan_out, all_doc, tmp_path):
    mod = load_source(export(all_doc, to="numpy", verify=False), tmp_path, "np_orth")
    w = mod.scaled_uniform_orthogonal(np.random.default_rng(1), (fan_in, fan_out))
    scale2 = max(fan_out / fan_in, 1.0)
    small = w.T @ w if fan_in >= fan_out else w @ w.T
    np.testing.assert_allclose(small, scale2 * np.eye(min(fan_in, fan_out)), atol=1e-12)
    again = mod.scaled_uniform_orthogonal(np.random.default_rng(1), (fan_in, fan_out))
    np.testing.assert_array_equal(w, again)


def test_official_pytorch_layout_bug_would_be_caught(all_doc, tmp_path):
    """Treating an nn.Linear weight as [in, out] (the official dks bug) breaks q by 2x."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    mod = load_source(export(all_doc, to="pytorch", verify=False), tmp_path, "pt_bug")
    torch.manual_seed(0)
    for fan_in, fan_out, expected in ((128, 256, 0.5), (256, 128, 2.0)):
        layer = torch.nn.Linear(fan_in, fan_out, bias=False).double()
        mod.scaled_uniform_orthogonal_(layer.weight, transposed=True)  # wrong layout on purpose
        xi = torch.randn(4000, fan_in, dtype=torch.float64)
        ratio = (_q(layer(xi).detach()).mean() / _q(xi).mean()).item()
        assert abs(ratio - expected) < 0.05 * expected, ratio


def test_torch_conv_transpose_layout(all_doc, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    mod = load_source(export(all_doc, to="pytorch", verify=False), tmp_path, "pt_convt")
    for cin, cout in ((32, 64), (64, 32)):
        torch.manual_seed(cin)
        conv = torch.nn.ConvTranspose2d(cin, cout, 3, padding=1).double()
        mod.initialize_(conv)
        x = torch.randn(8, cin, 10, 10, dtype=torch.float64)
        y = conv(x).detach()
        ratio = (_q(y, axis=1).mean() / _q(x, axis=1).mean()).item()
        assert abs(ratio - 1) < 0.02, (cin, cout, ratio)
    with pytest.raises(ValueError, match="grouped"):
        mod.initialize_(torch.nn.Conv2d(8, 8, 3, groups=2))


# --------------------------------------------------------------------------- PLN


def _pln_reference(x, mode, scale):
    x = np.asarray(x, dtype=np.float64)
    if mode == "one":
        x = np.concatenate([x, scale * np.ones(x.shape[:-1] + (1,))], axis=-1)
    elif mode == "avg_q":
        h = np.sqrt((x**2).reshape(x.shape[0], -1).mean(axis=1))
        x = np.concatenate([x, scale * np.broadcast_to(
            h.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape[:-1] + (1,))], axis=-1)
    norm = np.sqrt((x**2).mean(axis=-1, keepdims=True))
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


@pytest.mark.parametrize("mode,scale", [("one", 1.0), ("one", 2.5), ("avg_q", 1.0),
                                        ("avg_q", 0.5), ("off", 1.0)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_per_location_normalization(fw, generated, mode, scale, dtype, tol):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 6, 7)) * rng.uniform(0.01, 30, size=(4, 5, 6, 1))
    x[1, 2, 3] = 0.0  # an all-zero location
    x = x.astype(dtype)
    with fw.context():
        out = fw.numpy(generated.per_location_normalization(fw.tensor(x), homog_mode=mode,
                                                             homog_scale=scale))
    assert out.dtype == dtype
    assert out.shape == x.shape[:-1] + (7 if mode == "off" else 8,)
    ms = _q(out)
    expect = np.ones(ms.shape)
    if mode == "off":
        expect[1, 2, 3] = 0.0
    np.testing.assert_allclose(ms, expect, atol=tol, rtol=0)
    np.testing.assert_allclose(out, _pln_reference(x, mode, scale), atol=10 * tol, rtol=0)


def test_per_location_normalization_options(fw, generated):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5, 6)) * 7
    with fw.context():
        pln = generated.per_location_normalization
        last = fw.numpy(pln(fw.tensor(x)))
        first = fw.numpy(pln(fw.tensor(np.moveaxis(x, -1, 1).copy()), feature_axis=1))
        np.testing.assert_allclose(np.moveaxis(first, 1, -1), last, rtol=1e-13, atol=1e-13)
        single = fw.numpy(pln(fw.tensor(x[0]), has_batch_dim=False))
        np.testing.assert_allclose(single, last[0], rtol=1e-13, atol=1e-13)
        with pytest.raises(ValueError, match="homog_mode"):
            pln(fw.tensor(x), homog_mode="two")
        with pytest.raises(ValueError, match="avg_q"):
            pln(fw.tensor(x[:, 0, 0, :]), homog_mode="avg_q")


# --------------------------------------------------------------------------- deep network


def _tanh_constants(a: float, b: float) -> dict:
    """Shifts/scales making Q(1) = 1 and C(0) = 0 for tanh(a x + b), by Gauss-Hermite."""
    z, w = hermegauss(160)
    w = w / math.sqrt(2 * math.pi)
    d = -float(w @ np.tanh(a * z + b))
    g = 1 / math.sqrt(float(w @ (np.tanh(a * z + b) + d) ** 2))
    return {"activation": "tanh", "params": {}, "input_scale": a, "input_shift": b,
            "output_shift": d, "output_scale": g}


def _gauss_mean(f) -> float:
    value, _ = integrate.quad(lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                              -np.inf, np.inf, epsabs=1e-14, epsrel=1e-13)
    return value


@pytest.fixture(scope="module")
def deep_doc():
    c = _tanh_constants(0.3, 0.5)
    phi = lambda z: c["output_scale"] * (  # noqa: E731
        math.tanh(c["input_scale"] * z + c["input_shift"]) + c["output_shift"])
    q1, mean = _gauss_mean(lambda z: phi(z) ** 2), _gauss_mean(phi)
    assert abs(q1 - 1) < 1e-10 and abs(mean) < 1e-10  # checked by an independent rule
    return build_document(
        "dks", {"zeta": 1.5}, {"tanh": c, "plain_tanh": {"activation": "tanh"}},
        {"tanh": {"q_value": 1.0, "c_value_0": 0.0}},
        {"tanh": {"q_value": q1 - 1, "c_value_0": mean**2 / q1}},
        network="mlp:depth=50,width=256,activation=tanh",
        certificate={"route": "scipy.quad", "tolerance": 1e-10})


def _deep_qs(fw, mod, name, depth=50, width=256, batch=64, seed=5):
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((batch, width - 1)) * rng.uniform(0.1, 10, size=(batch, 1))
    qs = []
    if fw.name == "pytorch":
        torch = fw.torch
        torch.manual_seed(seed)
        layers = []
        for _ in range(depth):
            layers += [torch.nn.Linear(width, width), mod.get_activation(name)]
        net = mod.initialize_(torch.nn.Sequential(*layers).double())
        h = mod.per_location_normalization(torch.from_numpy(raw))
        qs.append(_q(h.numpy()))
        with torch.no_grad():
            for layer in net:
                h = layer(h)
                if not isinstance(layer, torch.nn.Linear):
                    qs.append(_q(h.numpy()))
        return qs
    if fw.name == "tensorflow":
        tf = fw.tf
        h = mod.per_location_normalization(tf.constant(raw))
        qs.append(_q(h.numpy()))
        act = mod.get_activation(name, dtype="float64")
        for i in range(depth):
            dense = tf.keras.layers.Dense(
                width, kernel_initializer=mod.ScaledUniformOrthogonal(seed=seed + i),
                dtype="float64")
            h = act(dense(h))
            qs.append(_q(h.numpy()))
        return qs
    act = mod.get_activation(name)
    h = mod.per_location_normalization(fw.tensor(raw))
    qs.append(_q(fw.numpy(h)))
    for i in range(depth):
        if fw.name == "numpy":
            w = mod.scaled_uniform_orthogonal(rng, (width, width))
        else:
            w = mod.scaled_uniform_orthogonal(fw.jax.random.PRNGKey(seed + i), (width, width),
                                              dtype=fw.jax.numpy.float64)
        h = act(h @ w)
        qs.append(_q(fw.numpy(h)))
    return qs


def test_deep_exported_network_keeps_q_near_one(fw, deep_doc, tmp_path):
    with fw.context():
        mod = load_source(export(deep_doc, to=fw.name, verify=False), tmp_path, f"deep_{fw.name}")
        qs = _deep_qs(fw, mod, "tanh")
        plain = _deep_qs(fw, mod, "plain_tanh")
    assert len(qs) == 51
    np.testing.assert_allclose(qs[0], 1.0, atol=1e-12)  # PLN'd inputs
    means = np.array([q.mean() for q in qs])
    assert np.all(np.abs(means - 1) < 0.05), means
    assert all(q.min() > 0.5 and q.max() < 2.0 for q in qs)
    # the untransformed activation does not keep q: the check above can fail
    assert abs(plain[-1].mean() - 1) > 0.5


# --------------------------------------------------------------------------- documents & files


ALLOWED_IMPORTS = {
    "numpy": {"math", "numpy", "scipy.special"},
    "jax": {"math", "jax", "jax.numpy", "jax.scipy"},
    "pytorch": {"math", "torch"},
    "tensorflow": {"math", "tensorflow"},
}


@pytest.mark.parametrize("to", FRAMEWORKS)
def test_generated_source_is_self_contained_and_complete(all_doc, to):
    src = export(all_doc, to=to, verify=False)
    tree = ast.parse(src)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= ALLOWED_IMPORTS[to], imported
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)}
    required = {"CONSTANTS", "get_activation", "per_location_normalization", "METHOD",
                "TARGETS", "KERNELSHAPE_VERSION", "FORMULAS"}
    required |= {"numpy": {"scaled_uniform_orthogonal"}, "jax": {"scaled_uniform_orthogonal"},
                 "pytorch": {"scaled_uniform_orthogonal_", "TransformedActivation"},
                 "tensorflow": {"ScaledUniformOrthogonal", "TransformedActivation"}}[to]
    assert required <= defined
    consts = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name)}
    assert ast.literal_eval(consts["CONSTANTS"]) == all_doc["activations"]
    assert ast.literal_eval(consts["METHOD"]) == all_doc["method"]
    assert ast.literal_eval(consts["TARGETS"]) == all_doc["targets"]
    assert ast.literal_eval(consts["KERNELSHAPE_VERSION"]) == all_doc["kernelshape_version"]


def test_constants_keep_full_precision(tmp_path):
    awkward = {"input_scale": 0.1 + 0.2, "input_shift": 1 / 3, "output_shift": -2 / 7,
               "output_scale": math.pi * 1e10}
    doc = build_document("tat", {"tau": 0.3}, {"tanh": awkward}, {}, {})
    mod = load_source(export(doc, to="numpy", verify=False), tmp_path, "precision")
    for key, value in awkward.items():
        assert mod.CONSTANTS["tanh"][key] == value  # bit-exact
    x = np.array([0.123456789])
    want = awkward["output_scale"] * (np.tanh(awkward["input_scale"] * x
                                              + awkward["input_shift"]) + awkward["output_shift"])
    assert mod.get_activation("tanh")(x)[0] == want[0]


def test_hostile_names_and_text_stay_inert(tmp_path):
    name = 'evil"""\n__import__("os").system("touch PWNED")  # \\'
    doc = build_document("dks", {"note": 'x"""\nimport os'}, {name: {"activation": "tanh"}},
                         {}, {}, network='mlp"""\nraise SystemExit')
    for to in FRAMEWORKS:
        ast.parse(export(doc, to=to, verify=False))
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        mod = load_source(export(doc, to="numpy", verify=False), tmp_path, "hostile")
        assert not (tmp_path / "PWNED").exists()
    finally:
        os.chdir(cwd)
    assert list(mod.CONSTANTS) == [name]
    np.testing.assert_allclose(mod.get_activation(name)(np.array([0.5])), np.tanh([0.5]))


def test_export_from_path_and_to_file(all_doc, tmp_path):
    path = save_document(all_doc, tmp_path / "c.json")
    assert export(path, to="pytorch", verify=False) == export(all_doc, to="pytorch", verify=False)
    out = export_to_file(all_doc, tmp_path / "gen.py", to="np", verify=False)
    assert out.read_text() == export(all_doc, to="numpy", verify=False)


def test_export_to_file_failure_leaves_old_file(tmp_path):
    target = tmp_path / "act.py"
    target.write_text("# previous version\n")
    bad = build_document("dks", {}, {"r": {"activation": "relu6"}}, {}, {})
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        export_to_file(bad, target, to="pytorch", verify=False)
    assert target.read_text() == "# previous version\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["act.py"]


def test_export_rejects_bad_requests(all_doc):
    with pytest.raises(ValueError, match="unknown export target 'caffe'"):
        export(all_doc, to="caffe", verify=False)
    with pytest.raises(ValueError, match="missing required key"):
        export({k: v for k, v in all_doc.items() if k != "method"}, to="numpy", verify=False)
    with pytest.raises(ValueError, match="constants document"):
        export(42, to="numpy", verify=False)
    bad = build_document("dks", {}, {"t": {"activation": "tanh", "params": {"beta": 2.0}}},
                         {}, {})
    with pytest.raises(ValueError, match="has no parameter"):
        export(bad, to="numpy", verify=False)


# --------------------------------------------------------------------------- expression safety


MALICIOUS = [
    ("__import__('os').system('touch PWNED')", "only plain function calls"),
    ("__import__('os')", "unknown function '__import__'"),
    ("x.__class__", "Attribute"),
    ("(lambda: 1)()", "only plain function calls"),
    ("x[0]", "Subscript"),
    ("open('f')", "unknown function"),
    ("exp(x) if x else 1", "IfExp"),
    ("x > 0", "Compare"),
    ("'abc'", "not a real number"),
    ("x^2", "use \\*\\*"),
    ("exp(x, 2)", "takes 1 argument"),
    ("exp(x=1)", "keyword arguments"),
    ("exp(*x)", "positional"),
    ("y + x", "unknown name 'y'"),
    ("exp + x", "used without arguments"),
    ("log(-1) + x", "undefined"),
    ("1e400 * x", "infinite or NaN"),
    ("9**9**9**9 + x", "exponents larger than 64"),
    ("[x]", "List"),
    ("x % 2", "operator Mod"),
    ("not x", "unary operator Not"),
    ("max(x)", "2 or more"),
    ("leaky_relu(x, x)", "must be a constant"),
    ("2 + 3", "does not depend on x"),
    ("x; import os", "syntax error"),
    ("", "empty"),
    ("tanh(" * 45 + "x" + ")" * 45, "nested"),
    ("-" * 100 + "x", "nested deeper"),
    ("x + " * 700 + "x", "longer than"),
    ("True * x", "not a real number"),
    ("1j * x", "not a real number"),
]


@pytest.mark.parametrize("text,message", MALICIOUS)
def test_malicious_expressions_rejected(text, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        base_expression(text)
    doc = build_document("dks", {}, {"evil": {"activation": "x"}}, {}, {})
    doc["activations"]["evil"]["activation"] = text
    with pytest.raises(ValueError):
        export(doc, to="numpy", verify=False)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_builtin_name_is_explained():
    doc = build_document("dks", {}, {"a": {"activation": "relu6"}}, {}, {})
    with pytest.raises(ValueError, match="unknown activation 'relu6'; built-ins: abs"):
        export(doc, to="numpy", verify=False)
