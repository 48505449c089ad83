"""Step throughput of the NumPy trainer against PyTorch CPU on the same MLP, same run.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.bench_train [--depth 100] [--width 256]

Baseline: a hand-written PyTorch (CPU, 1 thread) Adam training step of the same MLP
(tanh, batch 128, float32 and float64). Ratio = NumPy steps/s / PyTorch steps/s.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from kernelshape.activations import activation  # noqa: E402
from kernelshape.train import Plan, adam  # noqa: E402
from kernelshape.train import numpy_backend as nb  # noqa: E402
from kernelshape.train.optim import apply_updates  # noqa: E402


def numpy_rate(depth: int, width: int, batch: int, dtype: str, steps: int) -> float:
    plan = Plan.mlp(depth, width, "tanh")
    acts = {f"act{i}": activation("tanh") for i in range(depth)}
    model = nb.Model(plan, width, 10, acts, np.dtype(dtype))
    params = nb.init_params(model, np.random.default_rng(0), "suo")
    opt = adam(1e-4)
    state = opt.init(params)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, width)).astype(dtype)
    y = rng.integers(0, 10, batch)

    def step() -> None:
        nonlocal params, state
        logits, cache = nb.forward(model, params, x)
        _, _, d, _ = nb.softmax_xent(logits, y)
        grads, _ = nb.backward(model, params, cache, d)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, nargs="+", default=[20, 100])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
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
