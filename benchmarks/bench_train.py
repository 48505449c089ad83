"""Trainer step throughput against hand-written baselines of the same MLP, same run.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.bench_train [--depth 100] [--width 256]
    python -m benchmarks.bench_train --jax [--depth 20 100 200] [--dtype float32]

NumPy: a hand-written PyTorch (CPU, 1 thread) Adam training step of the same MLP
(tanh, batch 128, float32 and float64). Ratio = NumPy steps/s / PyTorch steps/s.

--jax: the JAX trainer's step (`JaxBackend.step`: host batch slice + transfer, jitted
forward/backward/optax Adam, loss and finiteness fetched every step, exactly what the run loop
calls) against a hand-written `jax.jit` Adam step of the same network, same initial weights,
measured in the same process: "same work" feeds it the same host batches and fetches the loss
every step, "ideal" keeps one batch on the device and syncs once at the end. Memory: XLA's
compiled-step memory analysis (arguments + outputs + temporaries - aliased; the per-step peak
XLA plans for), the device's peak_bytes_in_use where the platform reports it (GPU), and the
NumPy backend's tracemalloc peak for one step.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from kernelshape.topology import Network, nets  # noqa: E402
from kernelshape.topology.apply import backward, forward, init_params  # noqa: E402
from kernelshape.train import adam  # noqa: E402
from kernelshape.train.numpy_backend import softmax_xent  # noqa: E402
from kernelshape.train.optim import apply_updates  # noqa: E402


def _mlp(depth: int, width: int) -> Network:
    return nets.mlp(depth, width=width, activation="tanh", input_dim=width)


def numpy_rate(depth: int, width: int, batch: int, dtype: str, steps: int) -> float:
    net = _mlp(depth, width)
    acts = net.transformed_activations(None)
    params = init_params(net, np.random.default_rng(0), "suo", dtype=dtype)
    opt = adam(1e-4)
    state = opt.init(params)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, width)).astype(dtype)
    y = rng.integers(0, 10, batch)

    def step() -> None:
        nonlocal params, state
        fwd = forward(net, params, x, acts, dtype=dtype)
        _, _, d, _ = softmax_xent(fwd.result, y)
        grads, _ = backward(fwd, d, params)
        upd, state = opt.update(grads, state, params, None)
        params = apply_updates(params, upd)

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t)


def torch_rate(depth: int, width: int, batch: int, dtype: str, steps: int) -> float:
    import torch

    torch.set_num_threads(1)
    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    mods: list[torch.nn.Module] = []
    for _ in range(depth):
        mods += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    net = torch.nn.Sequential(*mods, torch.nn.Linear(width, 10)).to(tdt)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, width, generator=g, dtype=tdt)
    y = torch.randint(0, 10, (batch,), generator=g)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t)


# --------------------------------------------------------------------------- JAX


def _jax_backend(depth: int, width: int, batch: int, dtype: str):  # noqa: ANN202
    from kernelshape.train import TrainConfig
    from kernelshape.train.data import Dataset
    from kernelshape.train.jax_trainer import JaxBackend
    from kernelshape.train.run import build_run
    from kernelshape.train.shaping import Shaping

    rng = np.random.default_rng(0)
    n = 16 * batch
    x, y = rng.standard_normal((n, width)), rng.integers(0, 10, n)
    data = Dataset("bench", x, y, x[:batch], y[:batch], 10)
    config = TrainConfig(method="none", optimizer="adam", lr=1e-4, data="bench", steps=0,
                         batch_size=batch, dtype=dtype, backend="jax")
    return JaxBackend(build_run(config, _mlp(depth, width), Shaping("none", "lecun"), data))


def _memory(compiled) -> int | None:  # noqa: ANN001
    m = compiled.memory_analysis()
    if m is None:
        return None
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)


def jax_compare(depth: int, width: int, batch: int, dtype: str, steps: int,
                rounds: int = 9) -> dict[str, float | None]:
    """steps/s of the trainer step and of hand-written jit steps, memory.

    The three are timed in interleaved rounds; rates are the median over rounds and the
    ratios the median of the per-round ratios (robust to load from other processes).
    """
    import jax
    import jax.numpy as jnp
    import optax

    be = _jax_backend(depth, width, batch, dtype)
    state = be.init()
    n = be.n_train
    idxs = [np.arange(k * batch, (k + 1) * batch) % n for k in range(16)]

    def trainer() -> float:
        nonlocal state
        t = time.perf_counter()
        for s in range(steps):
            _, _, state, _ = be.step(state, s, idxs[s % 16])
        return steps / (time.perf_counter() - t)

    def hw_loss(params, x, y):  # noqa: ANN001, ANN202
        h = x
        for w, b in params[:-1]:
            h = jnp.tanh(h @ w + b)
        logits = h @ params[-1][0] + params[-1][1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    tx = optax.adam(1e-4)

    @jax.jit
    def hw_step(params, opt_state, x, y):  # noqa: ANN001, ANN202
        loss, g = jax.value_and_grad(hw_loss)(params, x, y)
        upd, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    hp = jax.tree_util.tree_map(jnp.array, state[0])
    hs = tx.init(hp)

    def same_work() -> float:
        nonlocal hp, hs
        t = time.perf_counter()
        for s in range(steps):
            i = idxs[s % 16]
            hp, hs, loss = hw_step(hp, hs, jnp.asarray(be.x_train[i]), jnp.asarray(be.y_train[i]))
            float(loss)
        return steps / (time.perf_counter() - t)

    xd, yd = jnp.asarray(be.x_train[idxs[0]]), jnp.asarray(be.y_train[idxs[0]])

    def ideal() -> float:
        nonlocal hp, hs
        t = time.perf_counter()
        for _ in range(steps):
            hp, hs, loss = hw_step(hp, hs, xd, yd)
        loss.block_until_ready()
        return steps / (time.perf_counter() - t)

    be.step(state, 0, idxs[0])                      # compile everything first
    hw_step(hp, hs, xd, yd)[2].block_until_ready()
    runs: dict[str, list[float]] = {"trainer": [], "same_work": [], "ideal": []}
    for _ in range(rounds):                         # interleaved: the machine may be shared
        runs["trainer"].append(trainer())
        runs["same_work"].append(same_work())
        runs["ideal"].append(ideal())
    t, sw, ide = (np.array(runs[k]) for k in ("trainer", "same_work", "ideal"))
    best = {"trainer": float(np.median(t)), "same_work": float(np.median(sw)),
            "ideal": float(np.median(ide)), "ratio_same": float(np.median(t / sw)),
            "ratio_ideal": float(np.median(t / ide))}
    x0, y0 = be._batch(idxs[0])
    mem_trainer = _memory(be._step.lower(*state, x0, y0).compile())
    mem_hw = _memory(hw_step.lower(hp, hs, xd, yd).compile())
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    peak = None if not stats else stats.get("peak_bytes_in_use")
    return {**best, "mem_trainer": mem_trainer, "mem_hand": mem_hw, "device_peak": peak}


def numpy_peak_bytes(depth: int, width: int, batch: int, dtype: str) -> int:
    """tracemalloc peak of one NumPy-backend Adam step (numpy reports its buffers to it)."""
    import tracemalloc

    net = _mlp(depth, width)
    acts = net.transformed_activations(None)
    params = init_params(net, np.random.default_rng(0), "suo", dtype=dtype)
    opt = adam(1e-4)
    state = opt.init(params)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((batch, width)).astype(dtype), rng.integers(0, 10, batch)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fwd = forward(net, params, x, acts, dtype=dtype)
    _, _, d, _ = softmax_xent(fwd.result, y)
    grads, _ = backward(fwd, d, params)
    upd, state = opt.update(grads, state, params, None)
    apply_updates(params, upd)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def _mib(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f}"


def jax_main(a: argparse.Namespace) -> None:
    import jax

    if a.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind})"
          f", width {a.width}, batch {a.batch}, {a.dtype}, Adam, median of 9 interleaved rounds"
          f" x {a.steps} steps")
    print(f"{'depth':>5} {'trainer/s':>10} {'hand(same)/s':>13} {'ratio':>6} {'hand(ideal)/s':>14}"
          f" {'ratio':>6} {'XLA MiB trainer':>16} {'XLA MiB hand':>13} {'numpy MiB':>10}"
          f" {'device peak MiB':>16}")
    for depth in a.depth:
        r = jax_compare(depth, a.width, a.batch, a.dtype, a.steps)
        npk = numpy_peak_bytes(depth, a.width, a.batch, a.dtype)
        print(f"{depth:>5} {r['trainer']:>10.1f} {r['same_work']:>13.1f} "
              f"{r['ratio_same']:>6.2f} {r['ideal']:>14.1f} "
              f"{r['ratio_ideal']:>6.2f} {_mib(r['mem_trainer']):>16} "
              f"{_mib(r['mem_hand']):>13} {_mib(npk):>10} {_mib(r['device_peak']):>16}",
              flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, nargs="+", default=[20, 100, 200])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--jax", action="store_true", help="JAX trainer vs a hand-written jit step")
    p.add_argument("--dtype", default="float32", help="--jax only: float32 or float64")
    a = p.parse_args()
    if a.jax:
        jax_main(a)
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("bench_train needs torch for its baseline (pip install torch)") from None
    print(f"{'depth':>5} {'dtype':>8} {'numpy steps/s':>14} {'torch steps/s':>14} {'ratio':>6}")
    for depth in a.depth:
        for dtype in ("float32", "float64"):
            base = torch_rate(depth, a.width, a.batch, dtype, a.steps)
            ours = numpy_rate(depth, a.width, a.batch, dtype, a.steps)
            print(f"{depth:>5} {dtype:>8} {ours:>14.1f} {base:>14.1f} {ours / base:>6.2f}")


if __name__ == "__main__":
    main()
