"""kernelshape: Deep Kernel Shaping and Tailored Activation Transformations.

The core (activations, maps, topology, solvers) needs only numpy, scipy, sympy and mpmath.
Names are imported lazily, so ``import kernelshape`` (and the CLI) starts fast.
"""

import sys
from collections.abc import Callable, Mapping
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
    "kernel_formula": "kernelshape.engine.formulas",
    "local_formulas": "kernelshape.engine.formulas",
    "cmap_series": "kernelshape.engine.series",
    "nets": "kernelshape.topology",
    "shape": "kernelshape.solve",
    "Solution": "kernelshape.solve",
    "InfeasibleError": "kernelshape.solve",
    "load_constants": "kernelshape.solve.recheck",
}

def lazy_exports(module: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for package ``module`` that import each name of
    ``exports`` (name -> defining module) on first use and keep it."""

    def getattr_(name: str) -> Any:
        if name in exports:
            value = getattr(import_module(exports[name]), name)
            setattr(sys.modules[module], name, value)
            return value
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[module])) | set(exports))

    return getattr_, dir_


__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
