"""Reference trainer: deep networks (chains, residual / concatenation / LayerNorm DAGs)
built from the network description.

`train(..., backend="numpy" | "jax")` runs, `resume(out_dir)` continues a run exactly; see
docs/training.md. The JAX backend (`kernelshape.train.jax_backend`, `jax_trainer`,
`jax_optim`) is imported only when a run asks for it (extra `[jax]`).
"""

from kernelshape.runtime.numpy import per_location_normalization
from kernelshape.train.data import Dataset, load_data, load_npz, standardize
from kernelshape.train.loop import Backend, NumpyBackend, TrainResult, resume, train
from kernelshape.train.optim import Optimizer, adam, kfac, make_optimizer, sgd
from kernelshape.train.plan import (
    INPUT,
    Act,
    Add,
    Concat,
    Conv,
    Dense,
    Norm,
    Plan,
    Pool,
    description_hash,
)

__all__ = [
    "INPUT", "Act", "Add", "Backend", "Concat", "Conv", "Dataset", "Dense", "Norm",
    "NumpyBackend", "Optimizer", "Plan", "Pool",
    "TrainResult", "adam", "description_hash", "kfac", "load_data", "load_npz",
    "make_optimizer", "per_location_normalization", "resume", "sgd", "standardize", "train",
]
