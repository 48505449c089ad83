"""The DKS / TAT transform of an activation, ``gamma * (phi(alpha * x + beta) + delta)``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Transform:
    """Constants of ``gamma * (phi(alpha*x + beta) + delta)`` (dks parameter names)."""

    input_scale: float = 1.0
    input_shift: float = 0.0
    output_shift: float = 0.0
    output_scale: float = 1.0
    negative_slope: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise TypeError(f"Transform.{name} must be a real number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"Transform.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))

    def as_dict(self) -> dict[str, float]:
        """The dks-style parameter dict (``negative_slope`` only when set)."""
        d = asdict(self)
        if d["negative_slope"] is None:
            del d["negative_slope"]
        return d

    @property
    def is_identity(self) -> bool:
        return (self.input_scale, self.input_shift, self.output_shift, self.output_scale) == (
            1.0,
            0.0,
            0.0,
            1.0,
        )

    def then(self, outer: Transform) -> Transform:
        """The transform of ``outer`` applied to an activation already transformed by ``self``.

        ``g2*(g1*(phi(a1*(a2*x+b2)+b1)+d1)+d2) = g1*g2*(phi(a1*a2*x + a1*b2+b1) + d1 + d2/g1)``.
        """
        if self.output_scale == 0.0:
            raise ValueError("cannot compose a transform whose output_scale is 0")
        slope = outer.negative_slope if outer.negative_slope is not None else self.negative_slope
        return Transform(
            input_scale=self.input_scale * outer.input_scale,
            input_shift=self.input_scale * outer.input_shift + self.input_shift,
            output_shift=self.output_shift + outer.output_shift / self.output_scale,
            output_scale=self.output_scale * outer.output_scale,
            negative_slope=slope,
        )


#: the transform constants' names (the official dks package's)
TRANSFORM_KEYS = tuple(f.name for f in fields(Transform))
