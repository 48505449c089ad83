"""Numerical checks of the DKS theory: Theorem 13, Theorem 27 and the kernel approximation.

```python
from kernelshape.verify import theorem13, theorem27, kernel_approximation
theorem13("resnet:depth=50,shortcut_weight=0.6,activation=softplus", "dks").holds
theorem27("mlp:depth=20,activation=tanh", zetas=(1.1, 1.5), widths=(512,)).to_dict()
kernel_approximation("mlp:depth=10,activation=tanh", "dks").c_slope      # about -0.5
```
``run_cli(args)`` is ``kernelshape verify``; see docs/theory.md.
"""

from kernelshape.verify.approximation import ApproximationReport, kernel_approximation
from kernelshape.verify.cli import run_cli
from kernelshape.verify.networks import (
    Shaped,
    SubnetMap,
    eoc_chain_cmap,
    eoc_chain_states,
    shape_network,
    subnetworks,
    with_option,
)
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
    "Shaped",
    "SubnetMap",
    "Theorem13Report",
    "Theorem27Report",
    "check_cmap",
    "empirical_per_layer_ntk",
    "eoc_chain_cmap",
    "eoc_chain_states",
    "kernel_approximation",
    "maximize_abs",
    "per_layer_ntk",
    "polynomial_cmap",
    "run_cli",
    "shape_network",
    "subnetworks",
    "theorem13",
    "theorem13_bounds",
    "theorem27",
    "with_option",
]
