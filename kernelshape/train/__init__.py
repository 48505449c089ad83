"""Reference trainer: deep vanilla networks built from the network description (NumPy backend).

`train(...)` runs, `resume(out_dir)` continues a run exactly; see docs/training.md.
"""

from kernelshape.train.data import (
    Dataset,
    load_data,
    load_npz,
    per_location_normalization,
    standardize,
)
from kernelshape.train.loop import TrainResult, resume, train
from kernelshape.train.optim import Optimizer, adam, kfac, make_optimizer, sgd
from kernelshape.train.plan import Act, Dense, Plan, description_hash

__all__ = [
    "Act", "Dataset", "Dense", "Optimizer", "Plan", "TrainResult", "adam", "description_hash",
    "kfac", "load_data", "load_npz", "make_optimizer", "per_location_normalization", "resume",
    "sgd", "standardize", "train",
]
