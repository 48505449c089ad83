"""Values and derivatives of Python callables used as activations
(``ks.activation(lambda x: np.tanh(x))``, ``kernelshape.engine.activations.CallableActivation``).

The callable is treated as one smooth piece per interval between the optional ``kinks``.

* Values are whatever the callable returns (float64); every map route works on them.
* Derivatives (``act.derivative``, ``c_slope_1``, ``c_curv_1``, C-map derivatives) come from
  ``jax.grad`` in float64 when jax is already imported and the callable is jax-traceable, and
  otherwise from 11-point finite differences (tenth-order central stencils, steps
  ``FD_STEPS[order]``; one-sided next to a kink). Expected precision of the finite differences
  for activations that vary on a unit scale (tanh-like): about ``1e-13`` relative for the first
  derivative, ``1e-11`` for the second, ``1e-9`` for the third, ``1e-7`` for the fourth.
* ``dps=N`` evaluates the same float64 function, so those results are only float64-accurate
  (about 1e-15 for values, the finite-difference precision above for derivatives), however
  large N is. Use an expression string (``"x*tanh(softplus(x))"``) for arbitrary precision.
* The smoothness at each kink (``smooth_order``: 0 if the value jumps, 1 if the slope jumps,
  else 2) is estimated numerically unless given.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from functools import cache

import numpy as np

STENCIL_HALF_WIDTH = 5
FD_STEPS = {1: 0.02, 2: 0.03, 3: 0.02, 4: 0.03}  # measured optimum on tanh, atan, gelu, sin


@cache
def fd_weights(order: int, offsets: tuple[int, ...]) -> np.ndarray:
    """Fornberg's finite-difference weights for d^order/dx^order at 0 on integer ``offsets``."""
    n = len(offsets)
    c = np.zeros((n, order + 1))
    c1, c4 = 1.0, float(offsets[0])
    c[0, 0] = 1.0
    for i in range(1, n):
        mn = min(i, order)
        c2, c5, c4 = 1.0, c4, float(offsets[i])
        for j in range(i):
            c3 = float(offsets[i] - offsets[j])
            c2 *= c3
            if j == i - 1:
                for k in range(mn, 0, -1):
                    c[i, k] = c1 * (k * c[i - 1, k - 1] - c5 * c[i - 1, k]) / c2
                c[i, 0] = -c1 * c5 * c[i - 1, 0] / c2
            for k in range(mn, 0, -1):
                c[j, k] = (c4 * c[j, k] - k * c[j, k - 1]) / c3
            c[j, 0] = c4 * c[j, 0] / c3
        c1 = c2
    return c[:, order]


def vectorized(fn: Callable) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` applied elementwise to a float array (falls back to a loop if ``fn`` is scalar)."""

    def call(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        try:
            with np.errstate(all="ignore"), _x64():
                y = np.asarray(fn(x))
            if y.shape == x.shape:
                return _real(y)
        except (TypeError, ValueError):
            pass
        with _x64():
            flat = [fn(float(v)) for v in x.ravel()]
        return _real(np.asarray(flat)).reshape(x.shape)

    return call


def _x64() -> contextlib.AbstractContextManager:
    """jax's float64 mode while a jax callable runs (jax computes in float32 by default)."""
    if "jax" in sys.modules:
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


def _real(y: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(y):
        if np.any(y.imag != 0):
            raise ValueError("the activation callable returned complex values; activations "
                             "must be real-valued")
        y = y.real
    return np.asarray(y, dtype=float)


def jax_derivative(fn: Callable, order: int) -> Callable | None:
    """``order``-th derivative by jax.grad in float64, if jax is loaded and ``fn`` traces."""
    if "jax" not in sys.modules:
        return None
    try:
        import jax
        import jax.numpy as jnp

        with jax.enable_x64(True):
            d = fn
            for _ in range(order):
                d = jax.grad(d)
            dv = jax.vmap(d)
            probe = np.asarray(dv(jnp.asarray(np.array([0.3, -1.1]))), dtype=float)
        if probe.shape != (2,) or not np.all(np.isfinite(probe)):
            return None
    except Exception:  # noqa: BLE001 - any tracing failure means "not jax-traceable"
        return None

    def call(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        with jax.enable_x64(True):
            return np.asarray(dv(jnp.asarray(x.ravel())), dtype=float).reshape(x.shape)

    return call
