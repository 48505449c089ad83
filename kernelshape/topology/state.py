"""The kernel state that flows along the edges of a network description.

A ``KernelState`` describes one pair of inputs at one location of one node: their q values
(``q1 = kappa(x, x)``, ``q2 = kappa(x', x')``), their c value
(``c = kappa(x, x') / sqrt(q1 q2)``), and optionally derivatives ("jets") with respect to the
network-input c or q. Every field is a numpy array (or float) and all fields broadcast, so one
pass over the network evaluates its maps at many points at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class KernelState(NamedTuple):
    """Per-location kernel of a pair of inputs.

    ``c_jet[k-1] = d^k c / d c_in^k`` (network-input c, q1 and q2 held fixed) and
    ``q_jet[k-1] = d^k q1 / d q_in^k`` (network-input q1 = q2 = q_in). Empty tuples mean
    "not tracked". New kinds of state (e.g. a Gram matrix for attention) are added as new
    fields with defaults, so existing layers keep working.
    """

    q1: np.ndarray
    q2: np.ndarray
    c: np.ndarray | None  # None: c not tracked (Q maps only)
    c_jet: tuple[np.ndarray, ...] = ()
    q_jet: tuple[np.ndarray, ...] = ()


def mix_states(states: Sequence[KernelState], weights: Sequence[float]) -> KernelState:
    """Weighted average of uncorrelated operands (normalized sum, channel concatenation).

    ``q = sum_i p_i q_i``, ``kappa = sum_i p_i c_i sqrt(q1_i q2_i)``, ``c = kappa / sqrt(q1 q2)``
    with ``p_i = w_i^2`` for a normalized sum and ``p_i`` = channel fraction for a concatenation.
    The ``p_i`` sum to 1 up to rounding; they are divided by their float sum so that equal
    operand q values give exactly that q (no drift of q = 1 through deep networks).
    """
    total = sum(weights)
    weights = [p / total for p in weights]
    q1 = sum(p * s.q1 for p, s in zip(weights, states, strict=True))
    q2 = sum(p * s.q2 for p, s in zip(weights, states, strict=True))
    q_jet = tuple(sum(p * s.q_jet[k] for p, s in zip(weights, states, strict=True))
                  for k in range(len(states[0].q_jet)))
    if states[0].c is None:
        return KernelState(q1, q2, None, (), q_jet)
    scales = [p * np.sqrt(s.q1 * s.q2) for p, s in zip(weights, states, strict=True)]
    norm = np.sqrt(q1 * q2)
    c = sum(a * s.c for a, s in zip(scales, states, strict=True)) / norm
    c_jet = tuple(sum(a * s.c_jet[k] for a, s in zip(scales, states, strict=True)) / norm
                  for k in range(len(states[0].c_jet)))
    return KernelState(q1, q2, c, c_jet, q_jet)
