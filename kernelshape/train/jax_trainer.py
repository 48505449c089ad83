"""The run loop's JAX backend: jit-compiled steps, optax / K-FAC, optional data parallelism.

State = (params, optimizer state, model state); checkpoints hold their pytree leaves in order
(`p.i`, `s.i`, `m.i`). Randomness: init from `default_rng([seed, 0])` (as the NumPy backend),
K-FAC label samples and kfac-jax's rng from `fold_in(fold_in(PRNGKey(seed), 2), step)`, so a
resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kernelshape.topology.apply import conv_patches, init_params
from kernelshape.train.jax_backend import (
    RULES,
    Model,
    all_finite,
    enable_float64,
    forward,
    grads_finite,
    init_model_state,
    jax_activation,
    loss_fn,
    nonfinite_report,
    xent,
)
from kernelshape.train.jax_optim import kfac_init, kfac_jax_available, kfac_update, make_optax
from kernelshape.train.run import Run

_STEP_CACHE: dict[str, Any] = {}   # jitted steps by configuration: resume in-process reuses them
KFAC_KEYS = ("damping", "ema", "inverse_every", "momentum", "norm_constraint", "curvature_every")
OPTAX_KEYS = {"sgd": ("momentum", "nesterov"), "adam": ("b1", "b2", "eps")}
SCHEDULE_KEYS = ("schedule", "decay_steps", "warmup_steps", "end_factor")


def _trim_cache(limit: int = 16) -> None:
    while len(_STEP_CACHE) >= limit:
        _STEP_CACHE.pop(next(iter(_STEP_CACHE)))


def _mesh_shardings(n: int) -> tuple[Any, Any]:
    """(batch sharding over `n` devices along axis "data", replicated sharding)."""
    devices = jax.devices()
    n = len(devices) if n < 0 else n
    if n > len(devices):
        raise ValueError(f"data_parallel={n} but JAX sees {len(devices)} device(s) "
                         f"({devices[0].platform}); on CPU set XLA_FLAGS="
                         f"--xla_force_host_platform_device_count={n} before importing jax")
    mesh = Mesh(np.array(devices[:n]), ("data",))
    return NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())


class JaxBackend:
    """Implements `kernelshape.train.loop.Backend` with JAX."""

    def __init__(self, run: Run, kfac_implementation: str | None = None) -> None:
        cfg = run.config
        enable_float64(cfg.dtype)
        self.run = run
        self.config = cfg
        self.dtype = np.dtype(cfg.dtype)
        acts = {key: jax_activation(act) for key, act in
                run.net.transformed_activations(run.shaping.transforms).items()}
        self.model = Model(run.net, acts, self.dtype)
        self.shaping = run.shaping
        self.x_train, self.y_train = run.x_train, run.y_train.astype(np.int32)
        self.x_test, self.y_test = run.x_test, run.y_test.astype(np.int32)
        self.n_train = run.n_train
        self.key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 2)
        self.batch_sharding = self.replicated = None
        if cfg.data_parallel:
            self.batch_sharding, self.replicated = _mesh_shardings(cfg.data_parallel)
            n = len(self.batch_sharding.mesh.devices.flat)
            if cfg.batch_size % n:
                raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the "
                                 f"{n} data-parallel devices")
        self.kfac_implementation = kfac_implementation
        self._setup_optimizer()

    # ------------------------------------------------------------------ optimizers

    def _setup_optimizer(self) -> None:
        cfg, opts = self.config, dict(self.config.optimizer_options)
        name, lr, model = cfg.optimizer, cfg.learning_rate, self.model
        self.kind = name
        if name in ("sgd", "adam"):
            unknown = set(opts) - set(OPTAX_KEYS[name]) - set(SCHEDULE_KEYS)
            if unknown:
                raise ValueError(f"unknown {name} options {sorted(unknown)}")
            sched = {"schedule_name": opts.pop("schedule", "constant"),
                     **{k: opts.pop(k) for k in SCHEDULE_KEYS[1:] if k in opts}}
            if sched["schedule_name"] != "constant":
                sched.setdefault("decay_steps", cfg.steps)
            key = self._cache_key()
            if key not in _STEP_CACHE:
                _trim_cache()
                tx = make_optax(name, lr, **sched, **opts)
                _STEP_CACHE[key] = (tx, jax.jit(partial(_optax_step, model, tx)))
            self.tx, self._step = _STEP_CACHE[key]
            return
        impl = opts.pop("implementation", "auto")
        impl = self.kfac_implementation or impl      # a resumed run keeps its choice
        unknown = set(opts) - set(KFAC_KEYS)
        if unknown:
            raise ValueError(f"unknown kfac options {sorted(unknown)} (allowed: {KFAC_KEYS}, "
                             "implementation)")
        if any(n.share is not None for n in model.net.nodes):
            raise ValueError("K-FAC preconditions each layer's weights as one block used once; "
                             "this network shares weights between layers: use sgd or adam")
        if impl == "auto":
            ok, _ = kfac_jax_available()
            impl = "kfac_jax" if ok and not self.batch_sharding else "own"
        if impl not in ("kfac_jax", "own"):
            raise ValueError(f"kfac implementation must be auto, kfac_jax or own, got {impl!r}")
        self.kfac_implementation = impl     # recorded: resume uses the same one
        self.kind = f"kfac:{impl}"
        if impl == "own":
            key = self._cache_key()
            if key not in _STEP_CACHE:
                _trim_cache()
                _STEP_CACHE[key] = jax.jit(partial(_kfac_step, model, {"lr": lr, **opts}))
            self._step = _STEP_CACHE[key]
            return
        if self.batch_sharding is not None:
            raise ValueError("data_parallel with kfac-jax is not supported; use "
                             "implementation='own' or optax optimizers")
        self._kfac_jax = _make_kfac_jax(model, lr, opts)

    def _cache_key(self) -> str:
        parts = [self.model.net.to_dict(), self.config.to_dict(), self.shaping.to_dict(),
                 self.kfac_implementation, str(jax.devices())]
        return json.dumps(parts, sort_keys=True, default=str)

    # ------------------------------------------------------------------ Backend interface

    def _put(self, tree: Any, sharding: Any = None) -> Any:
        if sharding is None:
            return jax.tree_util.tree_map(jnp.asarray, tree)
        return jax.device_put(tree, sharding)

    def _template(self) -> tuple[Any, Any, Any]:
        rng = np.random.default_rng([self.config.seed, 0])
        params = init_params(self.model.net, rng, self.shaping.init,
                             self.shaping.weight_variance, self.shaping.bias_variance, self.dtype)
        params = self._put(params, self.replicated)
        mstate = self._put(init_model_state(self.model), self.replicated)
        if self.kind.startswith("kfac:kfac_jax"):
            batch = self._batch(np.arange(self.config.batch_size))
            state = {"func_state": mstate} if mstate else {}
            opt_state = self._kfac_jax.init(params, self.key, batch, **state)
        elif self.kind == "kfac:own":
            opt_state = self._put(kfac_init(params), self.replicated)
        else:
            opt_state = self._put(self.tx.init(params), self.replicated)
        return params, opt_state, mstate

    def init(self) -> tuple[Any, Any, Any]:
        return self._template()

    def _batch(self, idx: np.ndarray) -> tuple[Any, Any]:
        x, y = self.x_train[idx], self.y_train[idx]
        return self._put(x, self.batch_sharding), self._put(y, self.batch_sharding)

    def step(self, state: tuple[Any, Any, Any], step: int, idx: np.ndarray
             ) -> tuple[float, float, Any, str]:
        params, opt_state, mstate = state
        x, y = self._batch(idx)
        key = jax.random.fold_in(self.key, step) if self.kind.startswith("kfac") else None
        if self.kind == "kfac:kfac_jax":
            # kfac-jax donates (deletes) the params, optimizer state and function state it is
            # given; copies keep `state` readable for a divergence report / the result.
            p, m = jax.tree_util.tree_map(jnp.copy, (params, mstate))
            if mstate:                      # the loss threads the BN running statistics
                new_p, new_o, new_m, stats = self._kfac_jax.step(
                    p, opt_state, key, batch=(x, y), func_state=m, global_step_int=step)
            else:
                new_p, new_o, stats = self._kfac_jax.step(p, opt_state, key, batch=(x, y),
                                                          global_step_int=step)
                new_m = mstate
            loss, acc = float(stats["loss"]), float(stats["aux"])
            ok = np.isfinite(loss) and bool(all_finite(new_p))
            new = (new_p, new_o, new_m)
        else:
            args = (key,) if self.kind == "kfac:own" else ()
            new_p, new_o, new_m, *scalars = self._step(params, opt_state, mstate, x, y, *args)
            loss, acc, ok = (v.item() for v in jax.device_get(scalars))
            new = (new_p, new_o, new_m)
        if not ok:
            return loss, acc, None, nonfinite_report(self.model, params, mstate, x, y)
        return loss, acc, new, ""

    def evaluate(self, state: tuple[Any, Any, Any]) -> tuple[float, float]:
        if not hasattr(self, "_eval"):
            self._eval = jax.jit(partial(_eval, self.model))
        loss, acc = self._eval(state[0], state[2], self._put(self.x_test), self._put(self.y_test))
        return float(loss), float(acc)

    def to_arrays(self, state: tuple[Any, Any, Any]) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_leaves
        out: dict[str, np.ndarray] = {}
        for prefix, tree in zip("psm", state, strict=True):
            out.update({f"{prefix}.{i}": np.asarray(a) for i, a in enumerate(leaves(tree))})
        return out

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> tuple[Any, Any, Any]:
        tu = jax.tree_util
        restored = []
        for prefix, tree in zip("psm", self._template(), strict=True):
            leaves, treedef = tu.tree_flatten(tree)
            new = []
            for i, ref in enumerate(leaves):
                arr = arrays.get(f"{prefix}.{i}")
                ref = np.asarray(ref)
                if arr is None or arr.shape != ref.shape or arr.dtype != ref.dtype:
                    got = None if arr is None else (arr.shape, arr.dtype)
                    raise ValueError(f"checkpoint entry {prefix}.{i} is {got}, expected "
                                     f"{ref.shape} {ref.dtype}")
                new.append(arr)
            if f"{prefix}.{len(leaves)}" in arrays:
                raise ValueError(f"checkpoint has more {prefix!r} entries than this model")
            restored.append(self._put(tu.tree_unflatten(treedef, new), self.replicated))
        return tuple(restored)  # type: ignore[return-value]

    def params(self, state: tuple[Any, Any, Any]) -> Any:
        return jax.tree_util.tree_map(np.asarray, state[0])


# --------------------------------------------------------------------------- jitted steps

def _optax_step(model: Model, tx: Any, params: Any, opt_state: Any, mstate: Any, x: Any,
                y: Any) -> tuple[Any, ...]:
    (loss, (acc, new_m)), grads = jax.value_and_grad(partial(loss_fn, model), has_aux=True)(
        params, mstate, x, y)
    ok = jnp.isfinite(loss) & grads_finite(grads)
    updates, new_opt = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt, new_m, loss, acc, ok


def _kfac_step(model: Model, options: dict[str, Any], params: Any, opt_state: Any, mstate: Any,
               x: Any, y: Any, key: Any) -> tuple[Any, ...]:
    """Own K-FAC: one forward, two VJPs (true labels -> gradients; sampled labels -> the
    per-layer output gradients for the G factors).

    Curvature, one entry per parameter entry: Dense `(a, s)` (input, output gradient; for a
    Dense layer applied per location both as (B, T, features)), Conv `(conv_patches(input), s)`
    with s as (B, T, Cout), layers without a Kronecker block (LayerNorm, BatchNorm) `None`
    (not preconditioned: plain momentum with the shared step size). The model state
    (BatchNorm running statistics) comes from the same training-mode forward."""
    n = x.shape[0]
    linear = model.linear_nodes
    zeros = [jnp.zeros((n, *node.shape), x.dtype) for node in linear]

    def f(p: Any, e: Any) -> tuple[Any, Any]:
        logits, new_m, inputs = forward(model, p, x, mstate, True, collect=True, perturb=e)
        return logits, (inputs, new_m)

    logits, vjp, (inputs, new_m) = jax.vjp(f, params, zeros, has_aux=True)
    loss, acc = xent(logits, y)
    probs = jax.nn.softmax(logits)
    k = logits.shape[1]
    grads, _ = vjp((probs - jax.nn.one_hot(y, k, dtype=probs.dtype)) / n)
    sampled = jax.random.categorical(key, logits)
    _, s = vjp((probs - jax.nn.one_hot(sampled, k, dtype=probs.dtype)) / n)
    ok = jnp.isfinite(loss) & grads_finite(grads)
    stats = dict(zip((node.id for node in linear), zip(inputs, s, strict=True), strict=True))
    curvature: list[Any] = []
    for node in model.owners:
        kind = RULES[type(node.layer)].curvature
        if kind is None:
            curvature.append(None)
            continue
        a, g = stats[node.id]
        if kind == "conv":
            a = conv_patches(a, node.layer, jnp)
        elif a.ndim > 2:                        # Dense applied per location
            a = a.reshape(n, -1, a.shape[-1])
        curvature.append((a, g.reshape(n, -1, g.shape[-1]) if g.ndim > 2 else g))
    upd, new_opt = kfac_update(list(grads), opt_state, curvature, **options)
    new_p = [tuple(p + u for p, u in zip(pp, uu, strict=True)) for pp, uu in zip(params, upd,
                                                                                 strict=True)]
    return new_p, new_opt, new_m, loss, acc, ok


def _eval(model: Model, params: Any, mstate: Any, x: Any, y: Any) -> tuple[Any, Any]:
    logits, _, _ = forward(model, params, x, mstate, train=False)
    return xent(logits, y)


def _make_kfac_jax(model: Model, lr: float, opts: dict[str, Any]) -> Any:
    """A kfac_jax.Optimizer with fixed lr / momentum / damping (the NumPy K-FAC's defaults),
    Fisher estimated from model-sampled labels, inverses every `inverse_every` steps.

    resnet-bn: the loss takes and returns the BN running statistics as kfac-jax's function
    state (`value_func_has_state`: `(params, state, batch) -> (loss, (new state, acc))`); the
    graph matcher registers each BN scale / offset as a scale-and-shift block."""
    import kfac_jax  # optional: the own K-FAC runs without it

    def loss_with_state(params: Any, state: Any, batch: tuple[Any, Any]
                        ) -> tuple[Any, tuple[Any, Any]]:
        x, y = batch
        logits, new_state, _ = forward(model, params, x, state, train=True)
        kfac_jax.register_softmax_cross_entropy_loss(logits, y)
        value, acc = xent(logits, y)
        return value, (new_state, acc)

    def loss(params: Any, batch: tuple[Any, Any]) -> tuple[Any, Any]:
        value, (_, acc) = loss_with_state(params, {}, batch)   # no BatchNorm: no state
        return value, acc

    if "curvature_every" in opts and opts["curvature_every"] != 1:
        raise ValueError("kfac-jax updates its curvature every step (curvature_every=1)")
    momentum, damping = opts.get("momentum", 0.9), opts.get("damping", 1e-2)
    stateful = bool(init_model_state(model))      # BatchNorm running statistics
    func = loss_with_state if stateful else loss
    return kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(func, has_aux=True), value_func_has_aux=True,
        value_func_has_state=stateful,
        l2_reg=0.0, use_adaptive_learning_rate=False, learning_rate_schedule=lambda s: lr,
        use_adaptive_momentum=False, momentum_schedule=lambda s: momentum,
        use_adaptive_damping=False, damping_schedule=lambda s: damping,
        norm_constraint=opts.get("norm_constraint", 1e-3),
        curvature_ema=opts.get("ema", 0.95), inverse_update_period=opts.get("inverse_every", 5),
        estimation_mode="fisher_gradients", num_burnin_steps=0, multi_device=False)
