"""Numerical checks of the DKS theory: Theorem 13, Theorem 27 and the kernel approximation.

```python
from kernelshape.verify import theorem13, theorem27, kernel_approximation
theorem13("resnet:depth=50,shortcut_weight=0.6,activation=softplus", "dks").holds
theorem27("mlp:depth=20,activation=tanh", zetas=(1.1, 1.5), widths=(512,)).to_dict()
kernel_approximation("mlp:depth=10,activation=tanh", "dks").c_slope      # about -0.5
```
The command line is ``kernelshape verify``; see docs/theory.md.
"""

from kernelshape.verify.approximation import ApproximationReport, kernel_approximation
from kernelshape.verify.finite import features, pair_inputs, suo_on_span
from kernelshape.verify.theorem13 import (
    Bound,
    CMapCheck,
    Maximum,
    Theorem13Report,
    check_cmap,
    maximize_abs,
    polynomial_cmap,
    theorem13,
    theorem13_bounds,
)
from kernelshape.verify.theorem27 import (
    Theorem27Report,
    empirical_per_layer_ntk,
    per_layer_ntk,
    theorem27,
)

__all__ = [
    "ApproximationReport",
    "Bound",
    "CMapCheck",
    "Maximum",
    "Theorem13Report",
    "Theorem27Report",
    "check_cmap",
    "empirical_per_layer_ntk",
    "features",
    "kernel_approximation",
    "maximize_abs",
    "pair_inputs",
    "per_layer_ntk",
    "polynomial_cmap",
    "suo_on_span",
    "theorem13",
    "theorem13_bounds",
    "theorem27",
]
