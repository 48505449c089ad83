"""Shaping solvers: DKS, TAT and EOC constants with independent certificates."""

from kernelshape.solve.network_targets import InfeasibleError
from kernelshape.solve.shape import METHODS, shape
from kernelshape.solve.solution import Solution

__all__ = ["METHODS", "InfeasibleError", "Solution", "shape"]
