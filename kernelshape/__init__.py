"""kernelshape: Deep Kernel Shaping and Tailored Activation Transformations.

The core (activations, maps, topology, solvers) needs only numpy, scipy, sympy and mpmath.
"""

from kernelshape.activations import Activation, Transform, activation, list_activations
from kernelshape.maps import cmap, local_summary, qmap
from kernelshape.topology import nets

__version__ = "0.1.0"


def shape(net, method: str = "dks", **options):
    """Solve the DKS / TAT / EOC conditions for ``net`` (see :func:`kernelshape.solve.shape`)."""
    from kernelshape.solve import shape as _shape

    return _shape(net, method=method, **options)


def load_constants(path, verify: bool = True) -> dict:
    """Load and validate a constants document (see :func:`kernelshape.constants.load_constants`)."""
    from kernelshape.constants import load_constants as _load

    return _load(path, verify=verify)


__all__ = [
    "Activation",
    "Transform",
    "activation",
    "cmap",
    "list_activations",
    "load_constants",
    "local_summary",
    "nets",
    "qmap",
    "shape",
]
