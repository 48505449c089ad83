"""C maps as power series with non-negative coefficients and a certified tail.

For inputs with equal q, Mehler's formula gives the normalized C map of any activation as

    C(c) = sum_n b_n c^n,  b_n = h_n^2 / Q(q),  h_n = E[g(z) He_n(z)] / sqrt(n!),

with ``g(z) = phi_hat(sqrt(q) z)`` and ``He_n`` the probabilists' Hermite polynomials. Every
``b_n >= 0`` and ``sum_n b_n = C(1) = 1``, so for ``|c| <= 1`` the error of the series cut
after ``c^N`` is at most ``tail = 1 - sum_{n <= N} b_n``. The k-th derivative at ``c = 1`` is
``sum_n n!/(n-k)! b_n = E[g^(k)(z)^2] / Q(q)`` (infinite when ``g^(k)`` is not
square-integrable), so its truncation error is that expectation minus the partial sum.

``cmap_series`` computes the ``h_n`` with mpmath (split at the kinks, each quadrature's error
estimate checked); ``TruncatedSeries`` is the float64 arithmetic the network description
runs on (``Network.cmap_series``): sums with positive weights and composition keep the
coefficients non-negative and the truncated ones below the true ones, so a network's tail
is again ``1 - sum`` of its coefficients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath as mp
import numpy as np

from kernelshape.engine.activations import Activation
from kernelshape.engine.precise import GUARD_DIGITS, ScaledMP, check_digits, expectation

MAX_ORDER = 200  # highest power of c a series may hold
SERIES_DIGITS = 30  # default mpmath digits of the coefficients


@dataclass(frozen=True)
class CSeries:
    """``C(c) = sum_n coefficients[n] c^n + (error <= tail for |c| <= 1)`` at equal input q.

    ``slope_tails[k-1]`` bounds the truncation error of ``C^(k)(1)`` (k = 1, 2; ``inf`` when
    that derivative is infinite)."""

    activation: str
    q: float
    coefficients: tuple[mp.mpf, ...]
    tail: mp.mpf
    slope_tails: tuple[mp.mpf, ...]
    dps: int

    def __call__(self, c: np.ndarray | float) -> np.ndarray:
        """The partial sum at ``c`` (float64)."""
        return np.polynomial.polynomial.polyval(np.asarray(c, dtype=float),
                                                [float(b) for b in self.coefficients])

    def derivative_at_one(self, order: int) -> float:
        """The partial sum of ``C^(order)(1)`` (its error is ``slope_tails[order-1]``)."""
        return float(sum(mp.ff(n, order) * b for n, b in enumerate(self.coefficients)))

    def to_dict(self) -> dict[str, object]:
        digits = self.dps
        return {"activation": self.activation, "q": self.q, "order": len(self.coefficients) - 1,
                "dps": digits, "coefficients": [mp.nstr(b, digits) for b in self.coefficients],
                "tail_bound": mp.nstr(self.tail, 3),
                "slope_tail_bounds": [mp.nstr(t, 3) for t in self.slope_tails]}


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or not (
            0 <= order <= MAX_ORDER):
        raise ValueError(f"series order must be an integer between 0 and {MAX_ORDER}, got "
                         f"{order!r}")
    return int(order)


def cmap_series(act: Activation, order: int, q: float = 1.0,
                dps: int = SERIES_DIGITS) -> CSeries:
    """The certified power series of ``act``'s normalized C map at input ``q`` up to
    ``c^order`` (module docstring); coefficients to ``dps`` digits."""
    order = _check_order(order)
    dps = check_digits(act, dps)
    if not (isinstance(q, int | float) and math.isfinite(q) and q > 0):
        raise ValueError(f"q must be a finite positive number, got {q!r}")
    with mp.workdps(dps + GUARD_DIGITS):
        g = ScaledMP(act, mp.mpf(q))
        values: dict[mp.mpf, mp.mpf] = {}

        def g_at(z: mp.mpf) -> mp.mpf:  # every quadrature below uses the same nodes
            if z not in values:
                values[z] = g(z)
            return values[z]

        q_value = expectation(lambda z: g_at(z) ** 2, g)
        if q_value == 0:
            raise ValueError(f"{act!r} is identically zero in distribution: E[phi(z)^2] = 0")

        def hermite(n: int, z: mp.mpf) -> mp.mpf:
            previous, current = mp.mpf(1), z
            if n == 0:
                return previous
            for k in range(1, n):
                previous, current = current, z * current - k * previous
            return current

        coefficients = []
        for n in range(order + 1):
            h = expectation(lambda z, n=n: g_at(z) * hermite(n, z), g) / mp.sqrt(mp.factorial(n))
            coefficients.append(h * h / q_value)
        partial = mp.fsum(coefficients)
        slack = mp.mpf(10) ** (-dps)  # the quadratures are checked to dps + 2 digits
        tail = max(1 - partial, mp.mpf(0)) + slack
        slope_tails = []
        for k in (1, 2):
            if not act.square_integrable(k):
                slope_tails.append(mp.inf)
                continue
            total = expectation(lambda z, k=k: g(z, k) ** 2, g) / q_value
            derivative = mp.fsum(mp.ff(n, k) * b for n, b in enumerate(coefficients))
            slope_tails.append(max(total - derivative, mp.mpf(0)) + slack * max(1, total))
    with mp.workdps(dps):
        return CSeries(act.name, float(q), tuple(+b for b in coefficients), +tail,
                       tuple(+t for t in slope_tails), dps)


class TruncatedSeries:
    """A float64 power series cut after ``c^order``: sums, scalar products and composition
    (what the network's kernel maps do to a C map)."""

    __array_ufunc__ = None  # numpy scalars defer to the methods below

    def __init__(self, coefficients: np.ndarray) -> None:
        self.coefficients = np.asarray(coefficients, dtype=float)

    @classmethod
    def identity(cls, order: int) -> TruncatedSeries:
        """The series of ``c`` itself."""
        coefficients = np.zeros(_check_order(order) + 1)
        if order >= 1:
            coefficients[1] = 1.0
        return cls(coefficients)

    @property
    def order(self) -> int:
        return self.coefficients.size - 1

    def __add__(self, other: object) -> TruncatedSeries:
        if isinstance(other, TruncatedSeries):
            return TruncatedSeries(self.coefficients + other.coefficients)
        out = self.coefficients.copy()
        out[0] += float(other)  # type: ignore[arg-type]
        return TruncatedSeries(out)

    __radd__ = __add__

    def __mul__(self, other: object) -> TruncatedSeries:
        if isinstance(other, TruncatedSeries):
            product = np.convolve(self.coefficients, other.coefficients)[: self.order + 1]
            return TruncatedSeries(product)
        return TruncatedSeries(self.coefficients * float(other))  # type: ignore[arg-type]

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> TruncatedSeries:
        return TruncatedSeries(self.coefficients / float(other))  # type: ignore[arg-type]

    def compose(self, outer: np.ndarray) -> TruncatedSeries:
        """``sum_n outer[n] self^n`` cut after ``c^order`` (Horner)."""
        result = TruncatedSeries(np.zeros(self.order + 1)) + float(outer[-1])
        for b in outer[-2::-1]:
            result = result * self + float(b)
        return result

    def __call__(self, c: np.ndarray | float) -> np.ndarray:
        return np.polynomial.polynomial.polyval(np.asarray(c, dtype=float), self.coefficients)

    def tail_bound(self) -> float:
        """``1 - sum`` of the coefficients (plus rounding): the truncation error on
        ``|c| <= 1`` of a normalized C map whose coefficients are all non-negative."""
        rounding = 4 * np.finfo(float).eps * (self.order + 1) ** 2
        return max(1.0 - float(math.fsum(self.coefficients)), 0.0) + rounding
