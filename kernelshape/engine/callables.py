"""Python callables as activations: ``ks.activation(lambda x: np.tanh(x))``.

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
import itertools
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cache

import mpmath as mp
import numpy as np
import sympy as sp

from kernelshape.engine.activations import Activation, Transform
from kernelshape.engine.symbolic import MAX_JUMP_ORDER, Piece, PiecewiseInfo, X

STENCIL_HALF_WIDTH = 5
FD_STEPS = {1: 0.02, 2: 0.03, 3: 0.02, 4: 0.03}  # measured optimum on tanh, atan, gelu, sin
_COUNTER = itertools.count(1)


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


def _vectorized(fn: Callable) -> Callable[[np.ndarray], np.ndarray]:
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


def _jax_derivative(fn: Callable, order: int) -> Callable | None:
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


class CallableActivation(Activation):
    """An :class:`Activation` backed by a Python callable (see the module docstring)."""

    def __init__(self, fn: Callable, name: str, kinks: Sequence[float] = (),
                 transform: Transform | None = None, smooth_order: int | None = None,
                 _derivatives: dict | None = None) -> None:
        self.fn = fn
        self._values = _vectorized(fn)
        self._kink_points = tuple(sorted(float(k) for k in kinks))
        self._given_smooth_order = smooth_order
        self._derivatives = {} if _derivatives is None else _derivatives
        super().__init__(name, sp.Function(name.replace(" ", "_"))(X), {}, transform, False,
                         None)

    # identity: the callable object itself is part of the key
    def _key(self) -> tuple:
        return ("callable", id(self.fn), self.name, self._kink_points, self.transform)

    @property
    def info(self) -> PiecewiseInfo:
        if self._info is None:
            kinks = self._kink_points
            bounds = (-math.inf, *kinks, math.inf)
            pieces = tuple(Piece(lo, hi, self.expr) for lo, hi in itertools.pairwise(bounds))
            order = self._given_smooth_order
            if order is None:
                order = self._estimate_smooth_order() if kinks else MAX_JUMP_ORDER + 1
            self._info = PiecewiseInfo(pieces, kinks, order)
        return self._info

    def _estimate_smooth_order(self) -> int:
        """0 if the value jumps at a kink, 1 if the slope jumps, else 2."""
        for k in self._kink_points:
            h = 1e-9 * max(1.0, abs(k))
            left, right = self._values(np.array([k - h, k + h]))
            if abs(right - left) > 1e-6 * max(1.0, abs(left), abs(right)):
                return 0
        for k in self._kink_points:
            left = self._one_sided(np.array([k - 1e-12]), 1, k, -1)[0]
            right = self._one_sided(np.array([k]), 1, k, +1)[0]
            if abs(right - left) > 1e-6 * max(1.0, abs(left), abs(right)):
                return 1
        return 2

    @property
    def base(self) -> CallableActivation:
        return CallableActivation(self.fn, self.name, self._kink_points, None,
                                  self._given_smooth_order, self._derivatives)

    def transformed(self, t: Transform | Mapping[str, float]) -> CallableActivation:
        if isinstance(t, Mapping):
            t = Transform(**t)
        if t.negative_slope is not None:
            raise ValueError("negative_slope applies only to leaky_relu, not to a callable")
        combined = self.transform.then(t) if not self.transform.is_identity else t
        combined = replace(combined, negative_slope=None)
        out = CallableActivation(self.fn, self.name, self._kink_points, combined,
                                 self._given_smooth_order, self._derivatives)
        out._info = self._info
        return out

    # --- evaluation ---------------------------------------------------------------------
    def base_derivative(self, x: np.ndarray, order: int = 0) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if order == 0:
            return self._values(x)
        if order not in self._derivatives:
            self._derivatives[order] = _jax_derivative(self.fn, order) or False
        exact = self._derivatives[order]
        if exact:
            return exact(x)
        return self._finite_difference(x, order)

    def _finite_difference(self, x: np.ndarray, order: int) -> np.ndarray:
        h = FD_STEPS.get(order, 0.08)
        p = STENCIL_HALF_WIDTH
        out = np.empty(x.shape)
        near = np.zeros(x.shape, dtype=bool)
        for k in self._kink_points:
            for side, mask in ((+1, (x >= k) & (x < k + p * h)), (-1, (x < k) & (x > k - p * h))):
                mask &= ~near
                if mask.any():
                    out[mask] = self._one_sided(x[mask], order, k, side)
                    near |= mask
        far = ~near
        if far.any():
            offsets = tuple(range(-p, p + 1))
            w = fd_weights(order, offsets)
            xf = x[far]
            acc = np.zeros(xf.shape)
            for j, wj in zip(offsets, w, strict=True):
                if wj != 0.0:
                    acc += wj * self._values(xf + j * h)
            out[far] = acc / h**order
        return out

    def _one_sided(self, x: np.ndarray, order: int, kink: float, side: int) -> np.ndarray:
        """Stencil entirely on one side of ``kink`` (``side`` +1: right, -1: left)."""
        h = 0.5 * FD_STEPS.get(order, 0.08)
        n = 2 * STENCIL_HALF_WIDTH
        offsets = tuple(range(0, n + 1)) if side > 0 else tuple(range(-n, 1))
        w = fd_weights(order, offsets)
        acc = np.zeros(x.shape)
        for j, wj in zip(offsets, w, strict=True):
            acc += wj * self._values(x + j * h)
        return acc / h**order

    def mp_piece_functions(self, order: int = 0) -> list[tuple[float, float, Callable]]:
        """mpmath wrappers around the float64 callable (float64-limited precision)."""

        def fn(x: mp.mpf) -> mp.mpf:
            return mp.mpf(float(self.base_derivative(np.array([float(x)]), order)[0]))

        return [(p.lo, p.hi, fn) for p in self.info.pieces]

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["callable"] = getattr(self.fn, "__qualname__", repr(self.fn))
        return d


def from_callable(fn: Callable, name: str | None = None, kinks: Sequence[float] = (),
                  smooth_order: int | None = None) -> CallableActivation:
    """Wrap a Python callable ``fn(x)`` (numpy-vectorized or scalar) as an activation.

    ``kinks``: points where ``fn`` is not smooth (the pieces between them must be analytic);
    ``smooth_order``: how many derivatives are ordinary functions at the kinks (estimated if
    omitted). Raises ValueError if ``fn`` is not real and finite or grows too fast for
    ``E[fn(z)^2]`` to be finite.
    """
    if not callable(fn):
        raise TypeError(f"expected a callable, got {fn!r}")
    label = name or getattr(fn, "__name__", "callable")
    if label == "<lambda>":
        label = "lambda"
    label = f"callable:{label}#{next(_COUNTER)}" if name is None else name
    act = CallableActivation(fn, label, kinks, None, smooth_order)
    grid = np.linspace(-12.0, 12.0, 481)
    try:
        values = act.base_derivative(grid)
    except Exception as exc:  # noqa: BLE001 - report any failure of the user's function
        raise ValueError(f"activation callable {label!r} failed on a float array: {exc}") from exc
    if not np.all(np.isfinite(values)):
        bad = grid[~np.isfinite(values)][0]
        raise ValueError(f"activation callable {label!r} is not finite and real for every real "
                         f"x (e.g. at x={bad:g})")
    with np.errstate(all="ignore"):
        far = act.base_derivative(np.array([20.0, 30.0, -20.0, -30.0]))
        growth = 2 * np.log(np.abs(far)) - np.array([20.0, 30.0, 20.0, 30.0]) ** 2 / 2
    if np.any(np.isnan(far)):
        raise ValueError(f"activation callable {label!r} returns NaN at |x| = 20 or 30")
    for g20, g30 in ((growth[0], growth[1]), (growth[2], growth[3])):
        if g30 > -60.0 or (g30 > g20 and g30 > -200.0):
            raise ValueError(
                f"activation callable {label!r} grows too fast: its Gaussian second moment "
                "E[phi(z)^2] diverges (or is not reliably finite)")
    return act
