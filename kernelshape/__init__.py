"""kernelshape: Deep Kernel Shaping and Tailored Activation Transformations.

The core (activations, maps, topology, solvers) needs only numpy, scipy, sympy and mpmath.
Names are imported lazily, so ``import kernelshape`` (and the CLI) starts fast.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Activation": "kernelshape.engine.activations",
    "Transform": "kernelshape.engine.activations",
    "activation": "kernelshape.engine.activations",
    "list_activations": "kernelshape.engine.activations",
    "cmap": "kernelshape.engine.maps",
    "qmap": "kernelshape.engine.maps",
    "local_summary": "kernelshape.engine.maps",
    "nets": "kernelshape.topology",
    "shape": "kernelshape.solve",
    "Solution": "kernelshape.solve",
    "InfeasibleError": "kernelshape.solve",
    "load_constants": "kernelshape.constants",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kernelshape' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
