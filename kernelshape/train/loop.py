"""The run loop: `train(...)` and `resume(out_dir)`.

A run directory holds `config.json` (everything needed to rebuild the run, including the
activation constants actually used), `metrics.jsonl` (one JSON object per logged step),
`checkpoint.json` (the commit point: names the current `ckpt-STEP.npz`).

Determinism: the data order of epoch e is `default_rng([seed, 1, e]).permutation(N)`, K-FAC's
sampled labels at step s come from `default_rng([seed, 2, s])`, initialization from
`default_rng([seed, 0])`. Nothing depends on hidden RNG state, so a resumed run repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kernelshape.runtime.numpy import per_location_normalization
from kernelshape.train import numpy_backend as nb
from kernelshape.train.data import Dataset, load_data, standardize
from kernelshape.train.optim import (
    Optimizer,
    apply_updates,
    flatten_state,
    make_optimizer,
    unflatten_state,
)
from kernelshape.train.plan import Act, Dense, Plan
from kernelshape.train.shaping import METHODS, Shaping, resolve_network, resolve_shaping

RELU_LIKE = nb.RELU_LIKE

CONFIG, METRICS, POINTER = "config.json", "metrics.jsonl", "checkpoint.json"


@dataclass
class TrainResult:
    """Outcome of a run. status: "completed" or "diverged" (message says step and layer)."""

    status: str
    step: int
    message: str
    history: list[dict[str, Any]]
    params: nb.Params
    out: str | None
    test_loss: float = float("nan")
    test_acc: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- atomic files

def _atomic_write(path: str, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write via a temp file in the same directory, fsync, then os.replace."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: str, obj: Any) -> None:
    _atomic_write(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True))


def _save_checkpoint(out: str, step: int, arrays: dict[str, np.ndarray]) -> None:
    """npz first, then the pointer json (the commit), then remove older npz files."""
    name = f"ckpt-{step:08d}.npz"
    _atomic_write(os.path.join(out, name), lambda f: np.savez(f, **arrays), mode="wb")
    _write_json(os.path.join(out, POINTER), {"step": step, "file": name})
    for old in os.listdir(out):
        if old.startswith("ckpt-") and old.endswith(".npz") and old != name:
            os.remove(os.path.join(out, old))


# --------------------------------------------------------------------------- progress bar

class Progress:
    """One-line text progress bar on stderr, redrawn at most 10 times a second."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.last = total, enabled, 0.0

    def update(self, step: int, loss: float, acc: float, rate: float) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.1 and step < self.total):
            return
        self.last = now
        filled = int(30 * step / max(self.total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {step}/{self.total} "
                         f"loss {loss:.4f} acc {acc:.3f} {rate:.1f} steps/s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# --------------------------------------------------------------------------- backends

class Backend(Protocol):
    """What the run loop needs from a backend; `state` is opaque to the loop.

    `step` returns (loss, accuracy, new state, "") or, when the loss or a gradient is not
    finite, (loss, accuracy, None, where) *before* updating anything.
    """

    n_train: int

    def init(self) -> Any: ...

    def step(self, state: Any, step: int, idx: np.ndarray) -> tuple[float, float, Any, str]: ...

    def evaluate(self, state: Any) -> tuple[float, float]: ...

    def to_arrays(self, state: Any) -> dict[str, np.ndarray]: ...

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> Any: ...

    def params(self, state: Any) -> Any: ...


@dataclass
class _Run:
    config: dict[str, Any]
    model: nb.Model
    optimizer: Optimizer
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _prepare_inputs(data: Dataset, method: str, dtype: np.dtype,
                    spatial: tuple[int, ...] | None = None) -> tuple[np.ndarray, ...]:
    """Flatten features (or, for convnets, reshape to (N, *spatial, channels)); PLN
    (homogeneous coordinate 1 per location) for shaped nets, else per-feature standardization."""
    xtr = data.x_train.reshape(len(data.x_train), -1)
    xte = data.x_test.reshape(len(data.x_test), -1)
    if method in ("dks", "tat"):
        if spatial is not None:
            xtr = xtr.reshape(len(xtr), *spatial, -1)
            xte = xte.reshape(len(xte), *spatial, -1)
        xtr, xte = per_location_normalization(xtr), per_location_normalization(xte)
    else:
        xtr, xte = standardize(xtr, xte)
        if spatial is not None:
            xtr = xtr.reshape(len(xtr), *spatial, -1)
            xte = xte.reshape(len(xte), *spatial, -1)
    return xtr.astype(dtype), xte.astype(dtype)


def _check_numpy_plan(plan: Plan) -> None:
    why = plan.needs_jax
    if why:
        raise ValueError(f"the NumPy backend trains chains of Dense and activation layers; this "
                         f"plan has {why}: use the JAX backend (backend='jax', CLI --backend "
                         "jax)")


def _build(config: dict[str, Any], data: Dataset | None = None) -> _Run:
    plan = Plan.from_dict(config["plan"])
    _check_numpy_plan(plan)
    dtype = np.dtype(config["dtype"])
    data = load_data(config["data"]) if data is None else data
    xtr, xte = _prepare_inputs(data, config["method"], dtype)
    shaping = Shaping.from_dict(config["shaping"])
    acts = {l.name: shaping.activation(l) for l in plan.layers if isinstance(l, Act)}
    model = nb.Model(plan, xtr.shape[1], data.n_classes, acts, dtype)
    opt = make_optimizer(config["optimizer"], config["lr"], **config["optimizer_options"])
    if config["batch_size"] > len(xtr):
        raise ValueError(f"batch_size {config['batch_size']} exceeds the {len(xtr)} training "
                         "examples")
    return _Run(config, model, opt, xtr, data.y_train, xte, data.y_test)


def _curvature(run: _Run, params: nb.Params, cache: list[np.ndarray], probs: np.ndarray,
               step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-FAC statistics: Dense inputs and output grads for labels sampled from the model."""
    rng = np.random.default_rng([run.config["seed"], 2, step])
    u = rng.random(len(probs))
    ys = np.minimum((np.cumsum(probs, axis=1) < u[:, None]).sum(axis=1), probs.shape[1] - 1)
    d = probs.copy()
    d[np.arange(len(ys)), ys] -= 1.0
    _, outs = nb.backward(run.model, params, cache, d / len(ys), keep_outputs=True)
    inputs = [a for a, l in zip(cache, run.model.plan.layers, strict=True) if isinstance(l, Dense)]
    return list(zip(inputs, outs, strict=True))


class NumpyBackend:
    """Manual backprop on (W, b) lists; state = (params, optimizer state)."""

    def __init__(self, config: dict[str, Any], data: Dataset | None = None) -> None:
        self.run = _build(config, data)
        self.n_train = len(self.run.x_train)

    def init(self) -> tuple[nb.Params, Any]:
        params = self._init_params()
        return params, self.run.optimizer.init(params)

    def _init_params(self) -> nb.Params:
        cfg = self.run.config
        shaping = Shaping.from_dict(cfg["shaping"])
        rng = np.random.default_rng([cfg["seed"], 0])
        return nb.init_params(self.run.model, rng, shaping.init, shaping.weight_variance,
                              shaping.bias_variance)

    def step(self, state: tuple[nb.Params, Any], step: int, idx: np.ndarray
             ) -> tuple[float, float, Any, str]:
        run, (params, opt_state) = self.run, state
        with np.errstate(over="ignore", invalid="ignore"):   # non-finite: reported below
            logits, cache = nb.forward(run.model, params, run.x_train[idx])
            loss, acc, dlogits, probs = nb.softmax_xent(logits, run.y_train[idx])
            grads = None
            if np.isfinite(loss):
                grads, _ = nb.backward(run.model, params, cache, dlogits)
        if grads is None or not all(np.isfinite(g).all() for pair in grads for g in pair):
            return loss, acc, None, nb.nonfinite_report(run.model, params, cache, logits, grads)
        every = run.optimizer.curvature_every
        curv = (_curvature(run, params, cache, probs, step)
                if every and step % every == 0 else None)
        updates, new_opt = run.optimizer.update(grads, opt_state, params, curv)
        return loss, acc, (apply_updates(params, updates), new_opt), ""

    def evaluate(self, state: tuple[nb.Params, Any]) -> tuple[float, float]:
        logits, _ = nb.forward(self.run.model, state[0], self.run.x_test)
        loss, acc, _, _ = nb.softmax_xent(logits, self.run.y_test)
        return loss, acc

    def to_arrays(self, state: tuple[nb.Params, Any]) -> dict[str, np.ndarray]:
        return {**flatten_state(state[0], "p"), **flatten_state(state[1], "s")}

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> tuple[nb.Params, Any]:
        template = self._init_params()
        params = unflatten_state(template, arrays, "p")
        return params, unflatten_state(self.run.optimizer.init(template), arrays, "s")

    def params(self, state: tuple[nb.Params, Any]) -> nb.Params:
        return state[0]


def _backend(config: dict[str, Any], data: Dataset | None) -> Backend:
    name = config.get("backend", "numpy")
    if name == "numpy":
        return NumpyBackend(config, data)
    if name == "jax":
        try:
            from kernelshape.train.jax_trainer import JaxBackend
        except ImportError as e:
            raise ModuleNotFoundError(f"backend='jax' needs the optional packages jax and optax "
                                      f"(pip install 'kernelshape[jax]'): {e}") from e
        return JaxBackend(config, data)
    raise ValueError(f"unknown backend {name!r}; use 'numpy' or 'jax'")


# --------------------------------------------------------------------------- the run

def _batch(config: dict[str, Any], n: int, step: int, perm_cache: dict[int, np.ndarray]
           ) -> np.ndarray:
    bs, seed = config["batch_size"], config["seed"]
    per_epoch = n // bs
    epoch, k = divmod(step, per_epoch)
    if epoch not in perm_cache:
        perm_cache.clear()
        perm_cache[epoch] = np.random.default_rng([seed, 1, epoch]).permutation(n)
    return perm_cache[epoch][k * bs:(k + 1) * bs]


def _append(path: str | None, record: dict[str, Any]) -> None:
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _loop(backend: Backend, config: dict[str, Any], state: Any, start: int, out: str | None,
          progress: bool | None, callback: Callable[[int, dict[str, Any]], None] | None
          ) -> TrainResult:
    cfg = config
    steps, log_every, ckpt_every = cfg["steps"], cfg["log_every"], cfg["checkpoint_every"]
    eval_every = cfg["eval_every"]
    metrics = None if out is None else os.path.join(out, METRICS)
    bar = Progress(steps, sys.stderr.isatty() if progress is None else progress)
    history: list[dict[str, Any]] = []
    perm_cache: dict[int, np.ndarray] = {}
    current = (start, state)        # replaced in one assignment per step
    t0, done0 = time.perf_counter(), start
    last_ckpt = start
    try:
        while current[0] < steps:
            step, state = current
            idx = _batch(cfg, backend.n_train, step, perm_cache)
            loss, acc, new_state, where = backend.step(state, step, idx)
            if new_state is None:
                msg = (f"diverged at step {step}: {where}; stopped, the last good checkpoint "
                       f"(step {last_ckpt}) is kept" + (f" in {out}" if out else ""))
                _append(metrics, {"event": "diverged", "step": step, "message": msg})
                bar.close()
                print(f"kernelshape train: {msg}", file=sys.stderr)
                return TrainResult("diverged", step, msg, history, backend.params(state), out)
            current = (step + 1, new_state)
            done = step + 1
            rate = (done - done0) / max(time.perf_counter() - t0, 1e-9)
            record: dict[str, Any] = {"step": done, "loss": loss, "acc": acc}
            if eval_every and (done % eval_every == 0 or done == steps):
                record["test_loss"], record["test_acc"] = backend.evaluate(new_state)
            if done % log_every == 0 or done == steps or "test_loss" in record:
                record["steps_per_s"] = rate
                history.append(record)
                _append(metrics, record)
            bar.update(done, loss, acc, rate)
            if out is not None and (done % ckpt_every == 0 or done == steps):
                _save_checkpoint(out, done, backend.to_arrays(new_state))
                last_ckpt = done
            if callback is not None:
                callback(done, record)
    except KeyboardInterrupt:
        bar.close()
        if out is not None:
            try:
                _save_checkpoint(out, current[0], backend.to_arrays(current[1]))
                saved = current[0]
            except RuntimeError as e:   # kfac-jax had consumed (donated) the state mid-step
                saved = last_ckpt
                print(f"kernelshape train: could not checkpoint step {current[0]} ({e}); the "
                      f"checkpoint of step {saved} is kept", file=sys.stderr)
            _append(metrics, {"event": "interrupted", "step": saved})
            print(f"kernelshape train: interrupted after step {current[0]}; checkpoint of step "
                  f"{saved} saved, continue with resume({out!r})", file=sys.stderr)
        raise
    bar.close()
    test_loss, test_acc = backend.evaluate(current[1])
    return TrainResult("completed", current[0], "ok", history, backend.params(current[1]), out,
                       test_loss, test_acc)


def train(net_or_spec: Any, method: str = "dks", optimizer: str = "adam",
          data: str | os.PathLike[str] | Dataset = "mnist1d", steps: int = 1000, seed: int = 0,
          out: str | os.PathLike[str] | None = None, constants: dict[str, Any] | None = None,
          lr: float | None = None, batch_size: int = 128, dtype: str = "float64",
          checkpoint_every: int = 100, log_every: int = 10, eval_every: int = 0,
          optimizer_options: dict[str, Any] | None = None,
          method_options: dict[str, float] | None = None, progress: bool | None = None,
          callback: Callable[[int, dict[str, Any]], None] | None = None,
          backend: str = "numpy", data_parallel: int | bool = False) -> TrainResult:
    """Train a vanilla network with softmax cross-entropy (NumPy or JAX backend).

    net_or_spec: a topology network, a SPEC string ("mlp:depth=20,activation=tanh") or a Plan.
    method: dks | tat (shaped activations, SUO init, PLN inputs), eoc (EOC variances),
    none (LeCun/He init), ll (looks-linear ReLU), resnet-bn (JAX only: the ResNet-with-BatchNorm
    baseline of the same depth and widths, He/LeCun init, untransformed activations).
    constants: a constants document (`kernelshape.constants.load_constants`); without it the
    network is shaped by `kernelshape.solve.shape(net, method=..., **method_options)`. A
    document recorded for another network (network.hash) or method is refused. out: run
    directory (config, metrics.jsonl, checkpoints every `checkpoint_every` steps);
    `callback(step, record)` runs after every step.
    backend: "numpy" (MLPs) or "jax" (MLPs, convnets, residual / concatenation / LayerNorm
    DAGs, resnet-bn; extra `[jax]`).
    data_parallel (JAX): split each batch over that many devices (True: all devices).
    """
    if method not in (*METHODS, "resnet-bn"):
        raise ValueError(f"unknown method {method!r}; choose one of {[*METHODS, 'resnet-bn']}")
    if backend not in ("numpy", "jax"):
        raise ValueError(f"unknown backend {backend!r}; use 'numpy' or 'jax'")
    if method == "resnet-bn" and backend != "jax":
        raise ValueError("the resnet-bn baseline (BatchNorm) is built by the JAX backend: "
                         "pass backend='jax'")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if steps < 0 or batch_size < 1 or checkpoint_every < 1 or log_every < 1:
        raise ValueError("steps >= 0, batch_size >= 1, checkpoint_every >= 1, log_every >= 1")
    if data_parallel and backend != "jax":
        raise ValueError("data_parallel needs backend='jax'")
    net, plan, net_hash = resolve_network(net_or_spec)
    if backend == "numpy":
        _check_numpy_plan(plan)          # before shaping: the solver may take a while
    if method == "resnet-bn":
        if constants is not None:
            raise ValueError("method 'resnet-bn' uses no constants document")
        base = {a.activation for a in plan.layers if isinstance(a, Act)}
        shaping = Shaping(method, "he" if base <= set(RELU_LIKE) else "lecun")
    else:
        shaping = resolve_shaping(net, plan, net_hash, method, constants, method_options or {})
    options = dict(optimizer_options or {})
    if backend == "jax" and options.get("schedule", "constant") != "constant":
        options.setdefault("decay_steps", steps)     # fixed at the start: resume stays exact
    config = {
        "format": "kernelshape.train.run", "backend": backend, "plan": plan.to_dict(),
        "network_hash": net_hash, "method": method, "shaping": shaping.to_dict(),
        "optimizer": optimizer, "lr": lr, "optimizer_options": options,
        "data": data.name if isinstance(data, Dataset) else os.fspath(data),
        "steps": steps, "seed": seed, "batch_size": batch_size, "dtype": np.dtype(dtype).name,
        "checkpoint_every": checkpoint_every, "log_every": log_every, "eval_every": eval_every,
    }
    if backend == "jax":
        config["data_parallel"] = int(data_parallel) if not isinstance(data_parallel, bool) \
            else (-1 if data_parallel else 0)
    trainer = _backend(config, data if isinstance(data, Dataset) else None)
    state = trainer.init()
    config = getattr(trainer, "config", config)      # a backend may record resolved choices
    out_dir = None
    if out is not None:
        out_dir = os.fspath(out)
        os.makedirs(out_dir, exist_ok=True)
        if os.path.exists(os.path.join(out_dir, POINTER)):
            raise FileExistsError(f"{out_dir} already holds a run; use resume({out_dir!r}) "
                                  "or another directory")
        _write_json(os.path.join(out_dir, CONFIG), config)
        open(os.path.join(out_dir, METRICS), "w").close()
        _save_checkpoint(out_dir, 0, trainer.to_arrays(state))
    return _loop(trainer, config, state, 0, out_dir, progress, callback)


def resume(out: str | os.PathLike[str], steps: int | None = None, data: Dataset | None = None,
           progress: bool | None = None,
           callback: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Continue the run in `out` from its last checkpoint (optionally to a new total `steps`).

    `data` is needed only when the run was started with an in-memory Dataset.
    Metrics logged after that checkpoint are dropped first, so metrics.jsonl reads as if the
    run had never stopped.
    """
    out_dir = os.fspath(out)
    try:
        with open(os.path.join(out_dir, CONFIG)) as f:
            config = json.load(f)
        with open(os.path.join(out_dir, POINTER)) as f:
            pointer = json.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{out_dir} is not a kernelshape run directory ({e})") from e
    if steps is not None:
        config["steps"] = steps
        _write_json(os.path.join(out_dir, CONFIG), config)
    if data is None and config["data"].endswith(".npz") and not os.path.exists(config["data"]):
        raise FileNotFoundError(f"the run's data file {config['data']} is gone")
    trainer = _backend(config, data)
    with np.load(os.path.join(out_dir, pointer["file"])) as z:
        arrays = dict(z)
    state = trainer.from_arrays(arrays)
    start = int(pointer["step"])
    path = os.path.join(out_dir, METRICS)
    with open(path) as f:
        lines = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= start
                 and "event" not in json.loads(ln)]
    _atomic_write(path, lambda f: f.writelines(lines))
    return _loop(trainer, config, state, start, out_dir, progress, callback)
