"""NumPy backend: the network's finite-width forward and backward passes
(``kernelshape.topology.apply``), softmax cross-entropy, and the NumPy optimizers.

State = (parameters, optimizer state, BatchNorm statistics); parameters are
``topology.apply``'s list of per-layer tuples (``(W, b)`` for Dense layers, ``W`` of shape
(fan_in, fan_out), so a Dense layer computes ``y = x W + b``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelshape.engine.activations import Activation
from kernelshape.topology import Dense
from kernelshape.topology.apply import (
    Forward,
    Params,
    State,
    backward,
    forward,
    init_params,
    init_state,
    weight_owners,
)
from kernelshape.train.optim import (
    apply_updates,
    flatten_state,
    make_optimizer,
    unflatten_state,
)
from kernelshape.train.run import Run

NumpyState = tuple[Params, Any, State]


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean cross-entropy, accuracy, d(loss)/d(logits) = (softmax - onehot)/B, softmax."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    loss = float(-logp[np.arange(n), y].mean())
    acc = float((logits.argmax(axis=1) == y).mean())
    p = np.exp(logp)
    d = p.copy()
    d[np.arange(n), y] -= 1.0
    return loss, acc, d / n, p


def first_nonfinite(names: list[str], arrays: list[Any]) -> str | None:
    """Name of the first entry (in order) with a NaN or inf in any of its arrays, else None."""
    for name, arr in zip(names, arrays, strict=True):
        parts = arr if isinstance(arr, tuple) else (arr,)
        if not all(np.isfinite(a).all() for a in parts):
            return name
    return None


def nonfinite_report(fwd: Forward, params: Params, grads: Params | None) -> str:
    """Where values first went non-finite: layer outputs, then parameters, then gradients."""
    nodes = [n.id for n in fwd.net.nodes[1:]]
    bad = first_nonfinite(nodes, [fwd.outputs[n] for n in nodes])
    if bad is not None:
        return f"the output of layer {bad!r} is not finite"
    owners = [n.id for n in weight_owners(fwd.net)]
    for what, arrays in (("parameters", params), ("gradient", grads)):
        if arrays is not None:
            bad = first_nonfinite(owners, list(arrays))
            if bad is not None:
                return f"the {what} of layer {bad!r} is not finite"
    return "the loss is not finite (softmax cross-entropy overflow)"


class NumpyBackend:
    """Implements `kernelshape.train.loop.Backend` with NumPy."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.net = run.net
        cfg = run.config
        self.dtype = np.dtype(cfg.dtype)
        self.acts: dict[str, Activation] = run.net.transformed_activations(
            run.shaping.transforms)
        self.optimizer = make_optimizer(cfg.optimizer, cfg.learning_rate,
                                        **cfg.optimizer_options)
        self.owners = weight_owners(self.net)
        if self.optimizer.curvature_every:
            self._check_kfac()
        self.n_train = run.n_train

    def _check_kfac(self) -> None:
        others = [n.id for n in self.owners if not isinstance(n.layer, Dense)]
        shared = [n.id for n in self.net.nodes if n.share is not None]
        if others or shared:
            raise ValueError(f"the NumPy K-FAC preconditions Dense layers used once; this network "
                             f"has {'other parameterized layers ' + str(others) if others else ''}"
                             f"{'shared weights ' + str(shared) if shared else ''}: use "
                             "backend='jax' (K-FAC on Dense, Conv and normalization layers)")

    def _init_params(self) -> Params:
        cfg, shaping = self.run.config, self.run.shaping
        return init_params(self.net, np.random.default_rng([cfg.seed, 0]), shaping.init,
                           shaping.weight_variance, shaping.bias_variance, self.dtype)

    def init(self) -> NumpyState:
        params = self._init_params()
        return params, self.optimizer.init(params), init_state(self.net, self.dtype)

    def _forward(self, params: Params, x: np.ndarray, state: State, train: bool) -> Forward:
        return forward(self.net, params, x, self.acts, state=state, train=train,
                       dtype=self.dtype)

    def _curvature(self, fwd: Forward, params: Params, probs: np.ndarray, step: int
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        """K-FAC statistics: Dense inputs and output gradients for labels sampled from the
        model (from ``default_rng([seed, 2, step])``)."""
        rng = np.random.default_rng([self.run.config.seed, 2, step])
        u = rng.random(len(probs))
        ys = np.minimum((np.cumsum(probs, axis=1) < u[:, None]).sum(axis=1), probs.shape[1] - 1)
        d = probs.copy()
        d[np.arange(len(ys)), ys] -= 1.0
        _, incoming = backward(fwd, d / len(ys), params)
        return [(fwd.outputs[n.parents[0]], incoming[n.id]) for n in self.owners]

    def step(self, state: NumpyState, step: int, idx: np.ndarray
             ) -> tuple[float, float, NumpyState | None, str]:
        params, opt_state, bn = state
        run = self.run
        with np.errstate(over="ignore", invalid="ignore"):   # non-finite: reported below
            fwd = self._forward(params, run.x_train[idx], bn, True)
            loss, acc, dlogits, probs = softmax_xent(fwd.result, run.y_train[idx])
            grads = None
            if np.isfinite(loss):
                grads, _ = backward(fwd, dlogits, params)
        if grads is None or not all(np.isfinite(g).all() for entry in grads for g in entry):
            return loss, acc, None, nonfinite_report(fwd, params, grads)
        every = self.optimizer.curvature_every
        curv = self._curvature(fwd, params, probs, step) if every and step % every == 0 else None
        updates, new_opt = self.optimizer.update(grads, opt_state, params, curv)
        return loss, acc, (apply_updates(params, updates), new_opt, fwd.state), ""

    def evaluate(self, state: NumpyState) -> tuple[float, float]:
        fwd = self._forward(state[0], self.run.x_test, state[2], False)
        loss, acc, _, _ = softmax_xent(fwd.result, self.run.y_test)
        return loss, acc

    def to_arrays(self, state: NumpyState) -> dict[str, np.ndarray]:
        params, opt_state, bn = state
        return {**flatten_state(params, "p"), **flatten_state(opt_state, "s"),
                **flatten_state([bn[k] for k in sorted(bn)], "m")}

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> NumpyState:
        template = self._init_params()
        bn = init_state(self.net, self.dtype)
        stats = unflatten_state([bn[k] for k in sorted(bn)], arrays, "m")
        return (unflatten_state(template, arrays, "p"),
                unflatten_state(self.optimizer.init(template), arrays, "s"),
                dict(zip(sorted(bn), stats, strict=True)))

    def params(self, state: NumpyState) -> Params:
        return state[0]

