"""JAX runtime: the expression ops, transformed activations, SUO / Delta initialization and
Per-Location Normalization, as plain jax.numpy code (jit-able).

Standalone (the framework and the standard library only): the exporter copies this code, below
this docstring, into every generated file and then defines that file's ``CONSTANTS``,
``FORMULAS`` and base functions ``_BASE``; the trainer imports it. ``OPS`` maps every op of
``kernelshape.engine.ops`` to its function here.
"""

import math

import jax
import jax.numpy as jnp
from jax.scipy import special as _jsp_special

#: activation name -> transform constants, formula text, base function phi (a generated
#: file defines its own after this code)
CONSTANTS = {}
FORMULAS = {}
_BASE = {}


def _f_exp(x):
    return jnp.exp(x)


def _f_log(x):
    return jnp.log(x)


def _f_log1p(x):
    return jnp.log1p(x)


def _f_expm1(x):
    return jnp.expm1(x)


def _f_sqrt(x):
    return jnp.sqrt(x)


def _f_tanh(x):
    return jnp.tanh(x)


def _f_sinh(x):
    return jnp.sinh(x)


def _f_cosh(x):
    return jnp.cosh(x)


def _f_sin(x):
    return jnp.sin(x)


def _f_cos(x):
    return jnp.cos(x)


def _f_atan(x):
    return jnp.arctan(x)


def _f_asinh(x):
    return jnp.arcsinh(x)


def _f_erf(x):
    return _jsp_special.erf(x)


def _f_erfc(x):
    return _jsp_special.erfc(x)


def _f_abs(x):
    return jnp.abs(x)


def _f_sign(x):
    # 1 at x = 0 (kernelshape's convention)
    return jnp.where(x >= 0, 1, -1).astype(x.dtype)


def _f_step(x):
    return (x >= 0).astype(x.dtype)


def _f_sigmoid(x):
    return jax.nn.sigmoid(x)


def _f_softplus(x):
    return jnp.logaddexp(x, 0)


def _f_relu(x):
    return jnp.maximum(x, 0)


def _f_max(a, b):
    return jnp.maximum(a, b)


def _f_min(a, b):
    return jnp.minimum(a, b)


def _f_leaky_relu(x, negative_slope):
    return jnp.where(x >= 0, x, negative_slope * x)


def _f_elu(x, alpha):
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))


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
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        y = phi(a * x + b if (a, b) != (1.0, 0.0) else x)
        return g * (y + d) if (d, g) != (0.0, 1.0) else y

    return transformed_activation


def activation_fn(name):
    """The transformed activation ``name`` as a jit-able function of an array.

    Computes output_scale * (phi(input_scale * x + input_shift) + output_shift).
    """
    constants = _constants(name)
    fn = transformed(_BASE[name], constants)
    fn.__doc__ = f"Transformed activation {name!r}: {FORMULAS[name]}"
    return fn


def get_activation(name):
    """Same as ``activation_fn``: JAX activations are plain functions."""
    return activation_fn(name)


def scaled_uniform_orthogonal(key, shape, dtype=jnp.float32, gain=1.0):
    """Scaled uniform orthogonal (SUO) weights with Delta initialization for convolutions.

    A flax / haiku style initializer ``(key, shape, dtype)``. ``shape``: [in, out] for dense
    layers, [*spatial, in, out] for convolutions (odd spatial sizes; only the centre tap is
    nonzero). The matrix is Haar orthogonal (QR of a Gaussian, signs fixed by diag(R))
    scaled by max(sqrt(out / in), 1), so that a layer with zero bias preserves q.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"need a shape [..., in, out] with positive sizes, got {shape}")
    spatial, fan_in, fan_out = shape[:-2], shape[-2], shape[-1]
    if any(k % 2 == 0 for k in spatial):
        raise ValueError(
            f"Delta initialization needs odd spatial sizes, got {tuple(spatial)}"
        )
    a = jax.random.normal(key, (max(fan_in, fan_out), min(fan_in, fan_out)), dtype)
    q, r = jnp.linalg.qr(a)
    q = q * jnp.where(jnp.diagonal(r) >= 0, 1, -1).astype(q.dtype)
    m = q if fan_in >= fan_out else q.T
    m = m * (max(math.sqrt(fan_out / fan_in), 1.0) * gain)
    w = jnp.zeros(shape, dtype)
    return w.at[tuple(k // 2 for k in spatial)].set(m.astype(w.dtype))


def zero_bias(key, shape, dtype=jnp.float32):
    """Biases are zero at initialization under DKS / TAT (flax-style signature)."""
    del key
    return jnp.zeros(shape, dtype)


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
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if homog_mode not in ("one", "avg_q", "off"):
        raise ValueError(f"homog_mode must be 'one', 'avg_q' or 'off', got {homog_mode!r}")
    if x.ndim == 0 and has_batch_dim:
        raise ValueError("x has no batch axis (it is a scalar)")
    if x.ndim == (1 if has_batch_dim else 0):
        x = x[..., None]
    x = jnp.moveaxis(x, feature_axis, -1)
    start = 1 if has_batch_dim else 0
    if homog_mode == "avg_q" and x.ndim - start < 2:
        raise ValueError("homog_mode='avg_q' needs location axes; use 'off' or 'one'")
    if homog_mode == "one":
        homog = jnp.ones_like(x[..., :1])
    elif homog_mode == "avg_q":
        axes = tuple(range(start, x.ndim))
        homog = jnp.sqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True))
        homog = homog * jnp.ones_like(x[..., :1])
    if homog_mode != "off":
        x = jnp.concatenate([x, homog_scale * homog], axis=-1)
    ms = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    x = x / jnp.sqrt(jnp.where(ms > 0, ms, 1))
    return jnp.moveaxis(x, -1, feature_axis)
