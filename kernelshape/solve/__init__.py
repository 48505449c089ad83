"""Shaping solvers: DKS, TAT and EOC constants with independent certificates.

``shape(net, method, **targets)`` -> ``Solution``; what the solver accepts (methods, targets,
defaults, ranges) is ``kernelshape.solve.options``, which imports no numerics (the command
line reads it while building its parser). Names are imported lazily.
"""

from kernelshape import lazy_exports

_EXPORTS = {
    "DPS_RANGE": "kernelshape.solve.options",
    "METHODS": "kernelshape.solve.options",
    "TARGETS": "kernelshape.solve.options",
    "Shapeable": "kernelshape.solve.options",
    "InfeasibleError": "kernelshape.solve.options",
    "Solution": "kernelshape.solve.solution",
    "load_constants": "kernelshape.solve.recheck",
    "recheck_document": "kernelshape.solve.recheck",
    "edge_of_chaos": "kernelshape.solve.eoc",
    "eoc_chain_states": "kernelshape.solve.eoc",
    "shape": "kernelshape.solve.solver",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
