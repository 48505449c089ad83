"""PyTorch runtime: the expression ops, transformed activations (functions and nn.Module),
SUO / Delta initialization and Per-Location Normalization.

Standalone (the framework and the standard library only): the exporter copies this code, below
this docstring, into every generated file and then defines that file's ``CONSTANTS``,
``FORMULAS`` and base functions ``_BASE``; the trainer imports it. ``OPS`` maps every op of
``kernelshape.engine.ops`` to its function here.
"""

import math

import torch
from torch import nn

#: activation name -> transform constants, formula text, base function phi (a generated
#: file defines its own after this code)
CONSTANTS = {}
FORMULAS = {}
_BASE = {}


def _as_tensor_like(value, like):
    if torch.is_tensor(value):
        return value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _f_exp(x):
    return torch.exp(x)


def _f_log(x):
    return torch.log(x)


def _f_log1p(x):
    return torch.log1p(x)


def _f_expm1(x):
    return torch.expm1(x)


def _f_sqrt(x):
    return torch.sqrt(x)


def _f_tanh(x):
    return torch.tanh(x)


def _f_sinh(x):
    return torch.sinh(x)


def _f_cosh(x):
    return torch.cosh(x)


def _f_sin(x):
    return torch.sin(x)


def _f_cos(x):
    return torch.cos(x)


def _f_atan(x):
    return torch.atan(x)


def _f_asinh(x):
    return torch.asinh(x)


def _f_erf(x):
    return torch.erf(x)


def _f_erfc(x):
    return torch.erfc(x)


def _f_abs(x):
    return torch.abs(x)


def _f_sign(x):
    # 1 at x = 0 (kernelshape's convention)
    return torch.where(x >= 0, 1, -1).to(x.dtype)


def _f_step(x):
    return (x >= 0).to(x.dtype)


def _f_sigmoid(x):
    return torch.sigmoid(x)


def _f_softplus(x):
    # exact log(1 + exp(x)); nn.functional.softplus switches to x above a threshold
    return torch.logaddexp(x, torch.zeros_like(x))


def _f_max(a, b):
    if not torch.is_tensor(a):
        a, b = b, a
    return torch.maximum(a, _as_tensor_like(b, a))


def _f_min(a, b):
    if not torch.is_tensor(a):
        a, b = b, a
    return torch.minimum(a, _as_tensor_like(b, a))


def _f_relu(x):
    return torch.clamp(x, min=0)


def _f_leaky_relu(x, negative_slope):
    return torch.where(x >= 0, x, negative_slope * x)


def _f_elu(x, alpha):
    return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


#: op name -> its implementation (every ``_f_<op>`` above)
OPS = {name[3:]: fn for name, fn in list(globals().items()) if name.startswith("_f_")}


def _constants(name):
    try:
        return CONSTANTS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; this file defines: {sorted(CONSTANTS)}"
        ) from None


def transformed(phi, constants):
    """``x -> output_scale * (phi(input_scale * x + input_shift) + output_shift)`` for the
    transform ``constants``, in the tensor's own dtype and device (identity parts skipped)."""
    a, b = constants["input_scale"], constants["input_shift"]
    d, g = constants["output_shift"], constants["output_scale"]

    def transformed_activation(x):
        y = phi(a * x + b if (a, b) != (1.0, 0.0) else x)
        return g * (y + d) if (d, g) != (0.0, 1.0) else y

    return transformed_activation


def activation_fn(name):
    """The transformed activation ``name`` as a plain function of a tensor (function form).

    Computes output_scale * (phi(input_scale * x + input_shift) + output_shift) in the
    tensor's own dtype and device.
    """
    constants = _constants(name)
    fn = transformed(_BASE[name], constants)
    fn.__doc__ = f"Transformed activation {name!r}: {FORMULAS[name]}"
    return fn


class TransformedActivation(nn.Module):
    """nn.Module form of a transformed activation: ``TransformedActivation("tanh")``.

    ``phi`` and ``constants`` default to this file's entry for ``name``."""

    def __init__(self, name, phi=None, constants=None):
        super().__init__()
        c = _constants(name) if constants is None else constants
        self.activation_name = name
        self.input_scale = c["input_scale"]
        self.input_shift = c["input_shift"]
        self.output_shift = c["output_shift"]
        self.output_scale = c["output_scale"]
        self._fn = transformed(_BASE[name] if phi is None else phi, c)

    def forward(self, x):
        return self._fn(x)

    def extra_repr(self):
        return (
            f"{self.activation_name!r}, input_scale={self.input_scale!r}, "
            f"input_shift={self.input_shift!r}, output_shift={self.output_shift!r}, "
            f"output_scale={self.output_scale!r}"
        )


def get_activation(name):
    """The transformed activation ``name`` as an ``nn.Module``."""
    return TransformedActivation(name)


def scaled_uniform_orthogonal_(weight, gain=1.0, transposed=False, generator=None):
    """Fill ``weight`` in place with scaled uniform orthogonal (SUO) / Delta values.

    For nn.Linear ([out, in]) and nn.Conv1d/2d/3d ([out, in, *spatial]) weights; pass
    ``transposed=True`` for nn.ConvTranspose* weights ([in, out, *spatial]). Convolutions
    get a Delta initialization: only the spatial centre tap is nonzero (odd sizes only).
    The matrix is Haar orthogonal (QR of a Gaussian, signs fixed by diag(R)) scaled by
    max(sqrt(out / in), 1), so that the layer preserves q = mean(x**2) at zero bias.
    Grouped convolutions are not supported. Uses torch's global RNG unless ``generator``.
    """
    if weight.dim() < 2 or min(weight.shape) < 1:
        raise ValueError(
            f"need a weight of shape [out, in, *spatial] with positive sizes, got "
            f"{tuple(weight.shape)}"
        )
    if transposed:
        fan_in, fan_out = weight.shape[0], weight.shape[1]
    else:
        fan_out, fan_in = weight.shape[0], weight.shape[1]
    spatial = tuple(weight.shape[2:])
    if any(k % 2 == 0 for k in spatial):
        raise ValueError(f"Delta initialization needs odd spatial sizes, got {spatial}")
    a = torch.randn(max(fan_in, fan_out), min(fan_in, fan_out), dtype=torch.float64,
                    generator=generator)
    q, r = torch.linalg.qr(a)
    d = torch.diagonal(r)
    q = q * torch.where(d >= 0, torch.ones_like(d), -torch.ones_like(d))
    m = q if fan_in >= fan_out else q.T  # [in, out]
    m = m * (max(math.sqrt(fan_out / fan_in), 1.0) * gain)
    if not transposed:
        m = m.T  # [out, in]
    with torch.no_grad():
        weight.zero_()
        weight[(slice(None), slice(None)) + tuple(k // 2 for k in spatial)] = m.to(
            dtype=weight.dtype, device=weight.device
        )
    return weight


_SUO_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_SUO_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def initialize_(module, gain=1.0, generator=None):
    """SUO / Delta weights and zero biases for every Linear / Conv / ConvTranspose inside."""
    for sub in module.modules():
        if isinstance(sub, _SUO_MODULES + _SUO_TRANSPOSED):
            if getattr(sub, "groups", 1) != 1:
                raise ValueError(f"grouped convolutions are not supported: {sub}")
            scaled_uniform_orthogonal_(
                sub.weight, gain=gain, transposed=isinstance(sub, _SUO_TRANSPOSED),
                generator=generator,
            )
            if sub.bias is not None:
                with torch.no_grad():
                    sub.bias.zero_()
    return module


def per_location_normalization(x, homog_mode="one", homog_scale=1.0, has_batch_dim=True,
                               feature_axis=-1):
    """Per-Location Normalization: give every location's feature vector q = 1.

    Every axis except the batch axis (the first, if ``has_batch_dim``) and the feature axis
    (``feature_axis``, default last; use 1 for NCHW images) indexes a location. A
    homogeneous coordinate is appended to the features (``homog_mode``: "one" appends 1,
    "avg_q" the root mean square of x over all non-batch axes, "off" nothing; times
    ``homog_scale``), then each location's feature vector is divided by sqrt(mean(x**2))
    over the features, so that mean(out**2, dim=feature_axis) == 1. An all-zero location
    (possible only with "off") stays zero.
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if homog_mode not in ("one", "avg_q", "off"):
        raise ValueError(f"homog_mode must be 'one', 'avg_q' or 'off', got {homog_mode!r}")
    if x.dim() == 0 and has_batch_dim:
        raise ValueError("x has no batch axis (it is a scalar)")
    if x.dim() == (1 if has_batch_dim else 0):
        x = x.unsqueeze(-1)
    x = torch.movedim(x, feature_axis, -1)
    start = 1 if has_batch_dim else 0
    if homog_mode == "avg_q" and x.dim() - start < 2:
        raise ValueError("homog_mode='avg_q' needs location axes; use 'off' or 'one'")
    if homog_mode == "one":
        homog = torch.ones_like(x[..., :1])
    elif homog_mode == "avg_q":
        dims = tuple(range(start, x.dim()))
        homog = torch.sqrt(torch.mean(torch.square(x), dim=dims, keepdim=True))
        homog = homog * torch.ones_like(x[..., :1])
    if homog_mode != "off":
        x = torch.cat([x, homog_scale * homog], dim=-1)
    ms = torch.mean(torch.square(x), dim=-1, keepdim=True)
    x = x / torch.sqrt(torch.where(ms > 0, ms, torch.ones_like(ms)))
    return torch.movedim(x, -1, feature_axis)
