"""NumPy runtime: the expression ops, transformed activations, SUO / Delta initialization
and Per-Location Normalization, as plain numpy code.

Standalone (the framework and the standard library only): the exporter copies this code, below
this docstring, into every generated file and then defines that file's ``CONSTANTS``,
``FORMULAS`` and base functions ``_BASE``; the trainer imports it. ``OPS`` maps every op of
``kernelshape.engine.ops`` to its function here.
"""

import math

import numpy as np

try:  # optional: scipy's erf/erfc are faster; the math-module fallback is as accurate
    from scipy.special import erf as _scipy_erf
    from scipy.special import erfc as _scipy_erfc
except ImportError:  # pragma: no cover
    _scipy_erf = _scipy_erfc = None

#: activation name -> transform constants, formula text, base function phi (a generated
#: file defines its own after this code)
CONSTANTS = {}
FORMULAS = {}
_BASE = {}


def _float_dtype(x):
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)


def _math_ufunc(fn, x):
    x = np.asarray(x)
    return np.vectorize(fn, otypes=[np.float64])(x).astype(_float_dtype(x))


def _f_exp(x):
    return np.exp(x)


def _f_log(x):
    return np.log(x)


def _f_log1p(x):
    return np.log1p(x)


def _f_expm1(x):
    return np.expm1(x)


def _f_sqrt(x):
    return np.sqrt(x)


def _f_tanh(x):
    return np.tanh(x)


def _f_sinh(x):
    return np.sinh(x)


def _f_cosh(x):
    return np.cosh(x)


def _f_sin(x):
    return np.sin(x)


def _f_cos(x):
    return np.cos(x)


def _f_atan(x):
    return np.arctan(x)


def _f_asinh(x):
    return np.arcsinh(x)


def _f_erf(x):
    if _scipy_erf is not None:
        return _scipy_erf(x)
    return _math_ufunc(math.erf, x)


def _f_erfc(x):
    if _scipy_erfc is not None:
        return _scipy_erfc(x)
    return _math_ufunc(math.erfc, x)


def _f_abs(x):
    return np.abs(x)


def _f_sign(x):
    # 1 at x = 0 (kernelshape's convention)
    return np.where(np.asarray(x) >= 0, 1, -1).astype(_float_dtype(np.asarray(x)))


def _f_step(x):
    x = np.asarray(x)
    return (x >= 0).astype(_float_dtype(x))


def _f_sigmoid(x):
    # stable logistic function: never exponentiates a positive number
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _f_softplus(x):
    return np.logaddexp(x, 0)


def _f_relu(x):
    return np.maximum(x, 0)


def _f_max(a, b):
    return np.maximum(a, b)


def _f_min(a, b):
    return np.minimum(a, b)


def _f_leaky_relu(x, negative_slope):
    return np.where(x >= 0, x, negative_slope * x)


def _f_elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


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
    transform ``constants`` (identity parts are skipped, so they cost nothing)."""
    a, b = constants["input_scale"], constants["input_shift"]
    d, g = constants["output_shift"], constants["output_scale"]

    def transformed_activation(x):
        x = np.asarray(x)
        y = phi(a * x + b if (a, b) != (1.0, 0.0) else x)
        return g * (y + d) if (d, g) != (0.0, 1.0) else y

    return transformed_activation


def activation_fn(name):
    """The transformed activation ``name`` as a function of an array (float32 or float64).

    Computes output_scale * (phi(input_scale * x + input_shift) + output_shift).
    """
    constants = _constants(name)
    fn = transformed(_BASE[name], constants)
    fn.__doc__ = f"Transformed activation {name!r}: {FORMULAS[name]}"
    return fn


def get_activation(name):
    """Same as ``activation_fn``: numpy activations are plain functions."""
    return activation_fn(name)


def _check_spatial(spatial):
    if any(k % 2 == 0 for k in spatial):
        raise ValueError(
            f"Delta initialization needs odd spatial sizes, got {tuple(spatial)}"
        )


def _suo_matrix(a, fan_in, fan_out):
    """Haar orthogonal [in, out] matrix from a Gaussian ``a`` of shape [max, min]."""
    q, r = np.linalg.qr(a)
    d = np.diag(r)
    q = q * np.where(d >= 0, 1.0, -1.0)
    m = q if fan_in >= fan_out else q.T
    return m * max(math.sqrt(fan_out / fan_in), 1.0)


def scaled_uniform_orthogonal(rng, shape, dtype=np.float64, gain=1.0):
    """Scaled uniform orthogonal (SUO) weights with Delta initialization for convolutions.

    ``rng``: a ``np.random.Generator`` or a seed. ``shape``: [in, out] for dense layers,
    [*spatial, in, out] for convolutions (odd spatial sizes; only the centre tap is
    nonzero). The matrix is Haar orthogonal scaled by max(sqrt(out / in), 1), so that a
    layer with zero bias preserves q = mean(x**2) at initialization.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"need a shape [..., in, out] with positive sizes, got {shape}")
    spatial, fan_in, fan_out = shape[:-2], shape[-2], shape[-1]
    _check_spatial(spatial)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    a = rng.standard_normal((max(fan_in, fan_out), min(fan_in, fan_out)))
    m = _suo_matrix(a, fan_in, fan_out) * gain
    w = np.zeros(shape, dtype=dtype)
    w[tuple(k // 2 for k in spatial)] = m
    return w


def zero_bias(shape, dtype=np.float64):
    """Biases are zero at initialization under DKS / TAT."""
    return np.zeros(shape, dtype=dtype)


def per_location_normalization(x, homog_mode="one", homog_scale=1.0, has_batch_dim=True,
                               feature_axis=-1):
    """Per-Location Normalization: give every location's feature vector q = 1.

    Every axis except the batch axis (the first, if ``has_batch_dim``) and the feature axis
    (``feature_axis``, default last) indexes a location. A homogeneous coordinate is appended
    to the features (``homog_mode``: "one" appends 1, "avg_q" the root mean square of x
    over all non-batch axes, "off" nothing; times ``homog_scale``), then each location's
    feature vector is divided by sqrt(mean(x**2)) over the features, so that
    mean(out**2, axis=feature_axis) == 1. An all-zero location (possible only with "off")
    stays zero.
    """
    x = np.asarray(x)
    if x.dtype.kind in "biu":
        x = x.astype(np.float64)
    if homog_mode not in ("one", "avg_q", "off"):
        raise ValueError(f"homog_mode must be 'one', 'avg_q' or 'off', got {homog_mode!r}")
    if x.ndim == 0 and has_batch_dim:
        raise ValueError("x has no batch axis (it is a scalar)")
    if x.ndim == (1 if has_batch_dim else 0):
        x = x[..., None]
    x = np.moveaxis(x, feature_axis, -1)
    start = 1 if has_batch_dim else 0
    if homog_mode == "avg_q" and x.ndim - start < 2:
        raise ValueError("homog_mode='avg_q' needs location axes; use 'off' or 'one'")
    if homog_mode == "one":
        homog = np.ones_like(x[..., :1])
    elif homog_mode == "avg_q":
        axes = tuple(range(start, x.ndim))
        homog = np.sqrt(np.mean(np.square(x), axis=axes, keepdims=True))
        homog = homog * np.ones_like(x[..., :1])
    if homog_mode != "off":
        x = np.concatenate([x, homog_scale * homog], axis=-1)
    ms = np.mean(np.square(x), axis=-1, keepdims=True)
    x = x / np.sqrt(np.where(ms > 0, ms, 1))
    return np.moveaxis(x, -1, feature_axis)
