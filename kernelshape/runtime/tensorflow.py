"""TensorFlow / Keras runtime: the expression ops, transformed activations (functions and
Keras layers), the SUO / Delta initializer and Per-Location Normalization.

Standalone (the framework and the standard library only): the exporter copies this code, below
this docstring, into every generated file and then defines that file's ``CONSTANTS``,
``FORMULAS`` and base functions ``_BASE``; the trainer imports it. ``OPS`` maps every op of
``kernelshape.engine.ops`` to its function here.
"""

import math

import tensorflow as tf

#: activation name -> transform constants, formula text, base function phi (a generated
#: file defines its own after this code)
CONSTANTS = {}
FORMULAS = {}
_BASE = {}


def _as_tensor_like(value, like):
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value
    return tf.convert_to_tensor(value, dtype=like.dtype)


def _f_exp(x):
    return tf.math.exp(x)


def _f_log(x):
    return tf.math.log(x)


def _f_log1p(x):
    return tf.math.log1p(x)


def _f_expm1(x):
    return tf.math.expm1(x)


def _f_sqrt(x):
    return tf.math.sqrt(x)


def _f_tanh(x):
    return tf.math.tanh(x)


def _f_sinh(x):
    return tf.math.sinh(x)


def _f_cosh(x):
    return tf.math.cosh(x)


def _f_sin(x):
    return tf.math.sin(x)


def _f_cos(x):
    return tf.math.cos(x)


def _f_atan(x):
    return tf.math.atan(x)


def _f_asinh(x):
    return tf.math.asinh(x)


def _f_erf(x):
    return tf.math.erf(x)


def _f_erfc(x):
    return tf.math.erfc(x)


def _f_abs(x):
    return tf.math.abs(x)


def _f_sign(x):
    # 1 at x = 0 (kernelshape's convention)
    return tf.where(x >= 0, tf.ones_like(x), -tf.ones_like(x))


def _f_step(x):
    return tf.cast(x >= 0, x.dtype)


def _f_sigmoid(x):
    return tf.math.sigmoid(x)


def _f_softplus(x):
    return tf.math.softplus(x)


def _f_max(a, b):
    if not isinstance(a, (tf.Tensor, tf.Variable)):
        a, b = b, a
    return tf.math.maximum(a, _as_tensor_like(b, a))


def _f_min(a, b):
    if not isinstance(a, (tf.Tensor, tf.Variable)):
        a, b = b, a
    return tf.math.minimum(a, _as_tensor_like(b, a))


def _f_relu(x):
    return tf.math.maximum(x, tf.zeros_like(x))


def _f_leaky_relu(x, negative_slope):
    return tf.where(x >= 0, x, negative_slope * x)


def _f_elu(x, alpha):
    return tf.where(x > 0, x, alpha * tf.math.expm1(_f_min(x, 0.0)))


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
    transform ``constants`` (integer inputs are cast to Keras' float type; identity parts
    skipped)."""
    a, b = constants["input_scale"], constants["input_shift"]
    d, g = constants["output_shift"], constants["output_scale"]

    def transformed_activation(x):
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            x = tf.cast(x, tf.keras.backend.floatx())
        y = phi(a * x + b if (a, b) != (1.0, 0.0) else x)
        return g * (y + d) if (d, g) != (0.0, 1.0) else y

    return transformed_activation


def activation_fn(name):
    """The transformed activation ``name`` as a plain function of a tensor (function form).

    Usable as ``tf.keras.layers.Dense(n, activation=activation_fn("tanh"))``. Computes
    output_scale * (phi(input_scale * x + input_shift) + output_shift).
    """
    constants = _constants(name)
    fn = transformed(_BASE[name], constants)
    fn.__doc__ = f"Transformed activation {name!r}: {FORMULAS[name]}"
    return fn


class TransformedActivation(tf.keras.layers.Layer):
    """Keras layer form of a transformed activation: ``TransformedActivation("tanh")``.

    To reload a saved model, pass ``custom_objects={"TransformedActivation":
    TransformedActivation}``.
    """

    def __init__(self, activation_name, **kwargs):
        super().__init__(**kwargs)
        _constants(activation_name)
        self.activation_name = activation_name
        self._fn = activation_fn(activation_name)

    def call(self, inputs):
        return self._fn(inputs)

    def get_config(self):
        config = super().get_config()
        config["activation_name"] = self.activation_name
        return config


def get_activation(name, **layer_kwargs):
    """The transformed activation ``name`` as a Keras layer (kwargs go to the Layer)."""
    return TransformedActivation(name, **layer_kwargs)


class ScaledUniformOrthogonal(tf.keras.initializers.Initializer):
    """Keras initializer: scaled uniform orthogonal (SUO) weights, Delta for convolutions.

    For Dense kernels ([in, out]) and ConvND kernels ([*spatial, in, out]; odd spatial
    sizes, only the centre tap is nonzero). The matrix is Haar orthogonal (QR of a
    Gaussian, signs fixed by diag(R)) scaled by max(sqrt(out / in), 1), so that the layer
    preserves q = mean(x**2) with zero biases (the Keras default bias initializer).
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = float(gain)
        self.seed = seed
        self._generator = None if seed is None else tf.random.Generator.from_seed(seed)

    def __call__(self, shape, dtype=None, **kwargs):
        shape = [int(s) for s in shape]
        dtype = tf.as_dtype(dtype or tf.keras.backend.floatx())
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"need a shape [..., in, out] with positive sizes, got {shape}")
        spatial, fan_in, fan_out = shape[:-2], shape[-2], shape[-1]
        if any(k % 2 == 0 for k in spatial):
            raise ValueError(
                f"Delta initialization needs odd spatial sizes, got {tuple(spatial)}"
            )
        rows, cols = max(fan_in, fan_out), min(fan_in, fan_out)
        if self._generator is None:
            a = tf.random.normal((rows, cols), dtype=tf.float64)
        else:
            a = self._generator.normal((rows, cols), dtype=tf.float64)
        q, r = tf.linalg.qr(a)
        s = tf.math.sign(tf.linalg.diag_part(r))
        q = q * tf.where(s == 0, tf.ones_like(s), s)
        m = q if fan_in >= fan_out else tf.transpose(q)
        m = tf.cast(m * (max(math.sqrt(fan_out / fan_in), 1.0) * self.gain), dtype)
        if not spatial:
            return m
        centre = [k // 2 for k in spatial]
        return tf.tensor_scatter_nd_update(tf.zeros(shape, dtype), [centre], m[None])

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


def _move_axis(x, source, destination):
    rank = x.shape.rank
    source %= rank
    destination %= rank
    if source == destination:
        return x
    perm = [i for i in range(rank) if i != source]
    perm.insert(destination, source)
    return tf.transpose(x, perm)


def per_location_normalization(x, homog_mode="one", homog_scale=1.0, has_batch_dim=True,
                               feature_axis=-1):
    """Per-Location Normalization: give every location's feature vector q = 1.

    Every axis except the batch axis (the first, if ``has_batch_dim``) and the feature axis
    (``feature_axis``, default last) indexes a location. A homogeneous coordinate is appended
    to the features (``homog_mode``: "one" appends 1, "avg_q" the root mean square of x
    over all non-batch axes, "off" nothing; times ``homog_scale``), then each location's
    feature vector is divided by sqrt(mean(x**2)) over the features, so that
    mean(out**2, axis=feature_axis) == 1. An all-zero location (possible only with "off")
    stays zero. Needs a known rank.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.keras.backend.floatx())
    if homog_mode not in ("one", "avg_q", "off"):
        raise ValueError(f"homog_mode must be 'one', 'avg_q' or 'off', got {homog_mode!r}")
    if x.shape.rank == 0 and has_batch_dim:
        raise ValueError("x has no batch axis (it is a scalar)")
    if x.shape.rank == (1 if has_batch_dim else 0):
        x = x[..., None]
    rank = x.shape.rank
    x = _move_axis(x, feature_axis, -1)
    start = 1 if has_batch_dim else 0
    if homog_mode == "avg_q" and rank - start < 2:
        raise ValueError("homog_mode='avg_q' needs location axes; use 'off' or 'one'")
    if homog_mode == "one":
        homog = tf.ones_like(x[..., :1])
    elif homog_mode == "avg_q":
        axes = list(range(start, rank))
        homog = tf.sqrt(tf.reduce_mean(tf.square(x), axis=axes, keepdims=True))
        homog = homog * tf.ones_like(x[..., :1])
    if homog_mode != "off":
        x = tf.concat([x, homog_scale * homog], axis=-1)
    ms = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
    x = x / tf.sqrt(tf.where(ms > 0, ms, tf.ones_like(ms)))
    return _move_axis(x, -1, feature_axis)
