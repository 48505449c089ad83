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
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from kernelshape.constants import atomic_write
from kernelshape.solve import Solution
from kernelshape.topology import Network, parse_spec
from kernelshape.topology.nets import resnet_bn_for
from kernelshape.train.config import TrainConfig
from kernelshape.train.data import Dataset, load_data
from kernelshape.train.numpy_backend import NumpyBackend
from kernelshape.train.run import Run, build_run
from kernelshape.train.shaping import Shaping, resolve_shaping

CONFIG, METRICS, POINTER = "config.json", "metrics.jsonl", "checkpoint.json"
#: a finite loss above this many times the first step's (or 1) also counts as divergence
DIVERGENCE_RATIO = 1000.0


@dataclass
class TrainResult:
    """Outcome of a run. status: "completed" or "diverged" (message says step and layer)."""

    status: str
    step: int
    message: str
    history: list[dict[str, Any]]
    params: Any
    out: str | None
    test_loss: float = float("nan")
    test_acc: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- run files

FORMAT, FORMAT_VERSION = "kernelshape.train.run", "2.0"


def _write_json(path: str, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True))


def _save_checkpoint(out: str, step: int, arrays: dict[str, np.ndarray]) -> None:
    """npz first, then the pointer json (the commit), then remove older npz files."""
    name = f"ckpt-{step:08d}.npz"
    atomic_write(os.path.join(out, name), lambda f: np.savez(f, **arrays), binary=True)
    _write_json(os.path.join(out, POINTER), {"step": step, "file": name})
    for old in os.listdir(out):
        if old.startswith("ckpt-") and old.endswith(".npz") and old != name:
            os.remove(os.path.join(out, old))


# --------------------------------------------------------------------------- progress bar

class ProgressBar:
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


def _backend(run: Run, kfac_implementation: str | None = None) -> Backend:
    if run.config.backend == "numpy":
        return NumpyBackend(run)
    try:
        from kernelshape.train.jax_trainer import JaxBackend
    except ImportError as e:
        raise ModuleNotFoundError(f"backend='jax' needs the optional packages jax and optax "
                                  f"(pip install 'kernelshape[jax]'): {e}") from e
    return JaxBackend(run, kfac_implementation)


# --------------------------------------------------------------------------- the run

def _batch(config: TrainConfig, n: int, step: int, perm_cache: dict[int, np.ndarray]
           ) -> np.ndarray:
    bs, seed = config.batch_size, config.seed
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


def _loop(backend: Backend, config: TrainConfig, state: Any, start: int, out: str | None,
          progress: bool | None, callback: Callable[[int, dict[str, Any]], None] | None
          ) -> TrainResult:
    cfg = config
    steps, log_every, ckpt_every = cfg.steps, cfg.log_every, cfg.checkpoint_every
    eval_every = cfg.eval_every
    metrics = None if out is None else os.path.join(out, METRICS)
    bar = ProgressBar(steps, sys.stderr.isatty() if progress is None else progress)
    history: list[dict[str, Any]] = []
    perm_cache: dict[int, np.ndarray] = {}
    current = (start, state)        # replaced in one assignment per step
    t0, done0 = time.perf_counter(), start
    last_ckpt = start
    reference: float | None = None  # the first loss of this call: the divergence yardstick
    try:
        while current[0] < steps:
            step, state = current
            idx = _batch(cfg, backend.n_train, step, perm_cache)
            loss, acc, new_state, where = backend.step(state, step, idx)
            if new_state is not None and reference is not None and \
                    loss > DIVERGENCE_RATIO * max(reference, 1.0):
                new_state, where = None, (f"the loss {loss:.4g} exceeds {DIVERGENCE_RATIO:g} "
                                          f"times the first step's {reference:.4g}")
            reference = loss if reference is None else reference
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


def train(net_or_spec: Network | str, config: TrainConfig | None = None, *,
          data: Dataset | str | os.PathLike[str] | None = None,
          constants: Mapping[str, Any] | None = None, solution: Solution | None = None,
          out: str | os.PathLike[str] | None = None, progress: bool | None = None,
          callback: Callable[[int, dict[str, Any]], None] | None = None,
          method_options: Mapping[str, float] | None = None, verify_constants: bool = True,
          **options: Any) -> TrainResult:
    """Train a network description with softmax cross-entropy (NumPy or JAX backend).

    ``net_or_spec``: a ``Network`` or a SPEC string; ``config`` a :class:`TrainConfig`, or its
    fields as keywords (``method``, ``optimizer``, ``steps``, ...; ``method_options`` is the
    same as the target fields). ``data``: a dataset name or .npz path (stored in the config), or
    a :class:`Dataset` held in memory. The constants of dks / tat / eoc come from ``solution``
    (a ``Solution`` of this network), ``constants`` (a constants document of this network), or
    the solver run now with the config's targets; a document is rechecked from its recorded
    network and method first (``verify_constants=False`` skips that). ``out``: run directory
    (config, metrics.jsonl, checkpoints every ``checkpoint_every`` steps);
    ``callback(step, record)`` runs after every step. method "resnet-bn" trains the
    ResNet-with-BatchNorm counterpart of a chain network (``nets.resnet_bn_for``).
    """
    dataset = data if isinstance(data, Dataset) else None
    if data is not None:
        options["data"] = data.name if dataset is not None else os.fspath(data)
    cfg = replace(config or TrainConfig(), **options, **dict(method_options or {}))
    net = parse_spec(net_or_spec) if isinstance(net_or_spec, str) else net_or_spec
    if not isinstance(net, Network):
        raise TypeError(f"train() needs a network description (kernelshape.nets.* or a SPEC "
                        f"string), got {type(net_or_spec).__name__}")
    if cfg.method == "resnet-bn":
        net = resnet_bn_for(net)
    if dataset is None:
        dataset = load_data(cfg.data)
    shaping = resolve_shaping(net, cfg, constants=constants, solution=solution,
                              verify=verify_constants)
    backend = _backend(build_run(cfg, net, shaping, dataset))
    state = backend.init()
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.to_dict(),
              "network": net.to_dict(), "shaping": shaping.to_dict(),
              "kfac_implementation": getattr(backend, "kfac_implementation", None)}
    out_dir = None
    if out is not None:
        out_dir = os.fspath(out)
        os.makedirs(out_dir, exist_ok=True)
        if os.path.exists(os.path.join(out_dir, POINTER)):
            raise FileExistsError(f"{out_dir} already holds a run; use resume({out_dir!r}) "
                                  "or another directory")
        _write_json(os.path.join(out_dir, CONFIG), record)
        open(os.path.join(out_dir, METRICS), "w").close()
        _save_checkpoint(out_dir, 0, backend.to_arrays(state))
    return _loop(backend, cfg, state, 0, out_dir, progress, callback)


def _read_record(out_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run record, checkpoint pointer) of a run directory."""
    if not os.path.exists(os.path.join(out_dir, CONFIG)):
        raise FileNotFoundError(f"{out_dir} is not a kernelshape run directory (no {CONFIG})")
    if not os.path.exists(os.path.join(out_dir, POINTER)):
        raise FileNotFoundError(
            f"{out_dir} holds no checkpoint: the run stopped before its first checkpoint was "
            f"written; start it again with train(..., out={out_dir!r}) (the directory may be "
            "reused)")
    try:
        with open(os.path.join(out_dir, CONFIG)) as f:
            record = json.load(f)
        with open(os.path.join(out_dir, POINTER)) as f:
            pointer = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{out_dir}: cannot read the run record ({e}); the files "
                         f"{CONFIG} and {POINTER} must be the JSON that train() writes") from None
    if not isinstance(record, dict) or not isinstance(pointer, dict) or not isinstance(
            pointer.get("file"), str) or not isinstance(pointer.get("step"), int):
        raise ValueError(f"{out_dir}: {CONFIG} or {POINTER} is not a kernelshape run record")
    version = str(record.get("format_version", "1"))
    if record.get("format") != FORMAT or version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise ValueError(f"{out_dir} holds a run of format {record.get('format')!r} "
                         f"{version!r}; this kernelshape resumes format {FORMAT_VERSION} runs "
                         "(start a new run)")
    return record, pointer


def resume(out: str | os.PathLike[str], steps: int | None = None, data: Dataset | None = None,
           progress: bool | None = None,
           callback: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Continue the run in `out` from its last checkpoint (optionally to a new total `steps`).

    `data` is needed only when the run was started with an in-memory Dataset.
    Metrics logged after that checkpoint are dropped first, so metrics.jsonl reads as if the
    run had never stopped.
    """
    out_dir = os.fspath(out)
    record, pointer = _read_record(out_dir)
    cfg = TrainConfig.from_dict(record["config"])
    if steps is not None:
        cfg = replace(cfg, steps=steps)
        record["config"] = cfg.to_dict()
        _write_json(os.path.join(out_dir, CONFIG), record)
    if data is None and cfg.data.endswith(".npz") and not os.path.exists(cfg.data):
        raise FileNotFoundError(f"the run's data file {cfg.data} is gone")
    net = Network.from_dict(record["network"])
    run = build_run(cfg, net, Shaping.from_dict(record["shaping"]), data or load_data(cfg.data))
    backend = _backend(run, record.get("kfac_implementation"))
    checkpoint = os.path.join(out_dir, os.path.basename(pointer["file"]))
    try:
        with np.load(checkpoint) as z:
            arrays = dict(z)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{out_dir}: the checkpoint {checkpoint} cannot be read ({e}); it is "
                         "damaged or truncated, so this run cannot be resumed") from None
    state = backend.from_arrays(arrays)
    start = int(pointer["step"])
    path = os.path.join(out_dir, METRICS)
    with open(path) as f:
        lines = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= start
                 and "event" not in json.loads(ln)]
    atomic_write(path, lambda f: f.writelines(lines))
    return _loop(backend, cfg, state, start, out_dir, progress, callback)
