"""Subnetworks and the subnetwork maximizing function ``M_{f,r}(x)``.

Definition used throughout kernelshape (see docs/topology.md). With ``idom(v)`` the immediate
dominator of node ``v`` (the last node that every path from the input to ``v`` passes through),
the subnetworks of a network are

* for every output ``o``: the whole network, from the input to ``o``;
* for every merge node ``m`` (normalized sum or concat) and every operand ``p`` of ``m``: the
  branch from the fork ``idom(m)`` to ``p`` (a residual branch, a concat branch), provided it
  contains a nonlinear layer. Identity and projection shortcuts are not subnetworks: their C map
  is the identity, which satisfies every DKS/TAT condition.

The C-map program of a subnetwork starts with value ``x`` at its start node and evaluates, in
topological order, every node on a path to its end: a nonlinear layer applies ``r``, a merge
node takes the weighted average of its operands (``w_i^2`` for sums, channel fractions for
concats), every other layer passes its input through. ``M_{f,r}(x)`` is the maximum over all
subnetworks. Programs are compiled once into straight-line code; subnetworks with identical
programs are evaluated once. With ``r(y) = xi*y`` every program is a polynomial in ``xi`` with
nonnegative coefficients, which makes the maximal slope function a small matrix product.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from kernelshape.topology.graph import INPUT_ID, Node, ancestors_until, immediate_dominators

ApplyR = 0  # op code: append r(slot)
Mix = 1  # op code: append sum_j p_j * slot_j


class Subnetwork(NamedTuple):
    """A subnetwork: maps the output of node ``start`` to the output of node ``end``."""

    kind: str  # "network" (input to an output), "branch" (fork to a merge operand), "prefix"
    start: str
    end: str
    merge: str | None = None  # for a branch: the sum/concat node it feeds

    @property
    def label(self) -> str:
        if self.kind in ("network", "prefix"):
            return f"{self.kind} {self.start} -> {self.end}"
        return f"branch of {self.merge}: {self.start} -> {self.end}"


@dataclass(frozen=True)
class Program:
    """Straight-line C-map program. Slot 0 holds x; ``(ApplyR, i)`` appends ``r(slot_i)``;
    ``(Mix, ((i, p), ...))`` appends ``sum p * slot_i``; the value is slot ``result``."""

    ops: tuple[tuple, ...]
    result: int

    def _last_use(self) -> list[int]:
        """For every slot, the index of the last op that reads it (-1: never read)."""
        last = [-1] * (len(self.ops) + 1)
        for k, (code, arg) in enumerate(self.ops):
            for i in ([arg] if code == ApplyR else [i for i, _ in arg]):
                last[i] = k
        last[self.result] = len(self.ops)
        return last

    def run(self, x: np.ndarray | float, r: Callable) -> np.ndarray | float:
        """The program's value for ``x`` (a slot is dropped after its last reader: memory
        stays that of the widest point of the network, not its depth)."""
        last = self._last_use()
        slots: dict[int, np.ndarray | float] = {0: x}
        for k, (code, arg) in enumerate(self.ops):
            if code == ApplyR:
                slots[k + 1] = r(slots[arg])
            else:
                slots[k + 1] = sum(p * slots[i] for i, p in arg)
            for i in ({arg} if code == ApplyR else {i for i, _ in arg}):
                if last[i] == k:
                    del slots[i]
        return slots[self.result]

    def polynomial(self) -> np.ndarray:
        """Coefficients ``a_k`` (increasing k) of ``run(1, y -> xi*y) = sum_k a_k xi^k``.

        A slot is ``(shift, a)`` for ``xi^shift * sum_j a_j xi^j``: applying r only raises the
        shift, so a chain costs O(depth), not O(depth^2)."""
        last = self._last_use()
        slots: dict[int, tuple[int, np.ndarray]] = {0: (0, np.ones(1))}
        for k, (code, arg) in enumerate(self.ops):
            if code == ApplyR:
                shift, a = slots[arg]
                slots[k + 1] = (shift + 1, a)
            else:
                low = min(slots[i][0] for i, _ in arg)
                high = max(slots[i][0] + slots[i][1].size for i, _ in arg)
                total = np.zeros(high - low)
                for i, p in arg:
                    shift, a = slots[i]
                    total[shift - low: shift - low + a.size] += p * a
                slots[k + 1] = (low, total)
            for i in ({arg} if code == ApplyR else {i for i, _ in arg}):
                if last[i] == k:
                    del slots[i]
        shift, a = slots[self.result]
        return np.concatenate([np.zeros(shift), a])


def candidate_subnetworks(order: Sequence[Node], outputs: Sequence[str]) -> list[Subnetwork]:
    """Whole networks, then every merge operand's branch from its fork (module docstring)."""
    idom = immediate_dominators(order)
    found = [Subnetwork("network", INPUT_ID, out) for out in outputs]
    for node in order:
        if node.layer.role == "mix":
            fork = idom[node.id]
            assert fork is not None
            found += [Subnetwork("branch", fork, p, node.id) for p in node.parents]
    return found


def compile_program(sub: Subnetwork, by_id: dict[str, Node], position: dict[str, int]) -> Program:
    """The straight-line program of ``sub`` (pass-through layers become slot aliases)."""
    parents = {node_id: node.parents for node_id, node in by_id.items()}
    members = ancestors_until(sub.end, sub.start, parents)
    slot = {sub.start: 0}
    ops: list[tuple] = []
    for node_id in sorted(members - {sub.start}, key=position.__getitem__):
        node = by_id[node_id]
        role = node.layer.role
        if role == "nonlinear":
            ops.append((ApplyR, slot[node.parents[0]]))
        elif role == "mix":
            weights = node.layer.mix_weights  # type: ignore[attr-defined]
            ops.append((Mix, tuple((slot[p], w) for p, w in zip(node.parents, weights,
                                                                  strict=True))))
        else:
            slot[node_id] = slot[node.parents[0]]
            continue
        slot[node_id] = len(ops)
    return Program(tuple(ops), slot[sub.end])


class SubnetFunctions:
    """The subnetworks of a network, compiled: ``M_{f,r}(x)``, ``mu(xi)``, curvature function."""

    def __init__(self, order: Sequence[Node], outputs: Sequence[str]) -> None:
        by_id = {node.id: node for node in order}
        position = {node.id: i for i, node in enumerate(order)}
        compiled = [(sub, compile_program(sub, by_id, position))
                    for sub in candidate_subnetworks(order, outputs)]
        kept = [(sub, prog) for sub, prog in compiled
                if sub.kind == "network" or any(code == ApplyR for code, _ in prog.ops)]
        self.subnetworks = tuple(sub for sub, _ in kept)
        distinct: dict[Program, int] = {}
        self.program_of = tuple(distinct.setdefault(prog, len(distinct)) for _, prog in kept)
        self.programs = tuple(distinct)
        polys = [p.polynomial() for p in self.programs]
        self.coefficients = np.zeros((len(polys), max(len(p) for p in polys)))
        for row, poly in zip(self.coefficients, polys, strict=True):
            row[: len(poly)] = poly
        powers = np.arange(self.coefficients.shape[1])
        depths = self.coefficients @ powers  # P_s'(1): w^2-weighted number of nonlinear layers
        self.depth_range = (float(depths.min()), float(depths.max()))

    def values(self, x: np.ndarray | float, r: Callable) -> list[np.ndarray | float]:
        """``[program_s(x, r) for every subnetwork s]`` (each distinct program run once)."""
        results = [program.run(x, r) for program in self.programs]
        return [results[i] for i in self.program_of]

    def subnet_max(self, x: np.ndarray | float, r: Callable) -> np.ndarray:
        """``M_{f,r}(x) = max_s program_s(x, r)``."""
        return np.maximum.reduce([np.asarray(program.run(x, r), dtype=float)
                                  for program in self.programs])

    def max_slope(self, xi: np.ndarray | float) -> np.ndarray:
        """``mu(xi) = M(1, y -> xi*y) = max_s sum_k a_{s,k} xi^k``."""
        xi = np.asarray(xi, dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):
            powers = xi[..., None] ** np.arange(self.coefficients.shape[1])
            value = (powers @ self.coefficients.T).max(axis=-1)
        # 0 * inf from an overflowing power of a large xi: the sum of positive terms is inf
        return np.where(np.isnan(value) & (xi > 0), np.inf, value)

    def max_curvature(self, tau: np.ndarray | float) -> np.ndarray:
        """``M(0, y -> y + tau) = max_s tau * P_s'(1)`` (each r adds tau; averages keep sums)."""
        tau = np.asarray(tau, dtype=float)
        low, high = self.depth_range
        return np.where(tau >= 0, tau * high, tau * low)
