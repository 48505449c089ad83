"""``TrainConfig``: every option of a training run and its default, defined once.

``train()`` takes one (or the same options as keywords), a run directory stores it, and the
command line's ``kernelshape train`` options are generated from its fields (each field's
``help``). Method targets left at None use the solver's defaults (``kernelshape.solve.options``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from kernelshape.solve.options import METHODS as SOLVE_METHODS
from kernelshape.solve.options import TARGETS, check_targets
from kernelshape.train.optim import DEFAULT_LR, OPTIMIZERS

#: training methods: the solver's, plus looks-linear ReLU init and the ResNet-BN baseline
METHODS = (*SOLVE_METHODS, "ll", "resnet-bn")
BACKENDS = ("numpy", "jax")
DTYPES = ("float64", "float32")
TARGET_FIELDS = ("zeta", "tau", "eta", "bias_variance")


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None,
            metavar: str | None = None) -> Any:
    metadata = {"help": help, "choices": choices, "metavar": metavar}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


def _target_help(name: str) -> str:
    t = TARGETS[name]
    return f"{t.meaning} (method {'/'.join(t.methods)}; default {t.default:g})"


@dataclass(frozen=True)
class TrainConfig:
    """The options of a run (see each field's help)."""

    method: str = _option("dks", "dks / tat shape the activations (SUO init, PLN inputs); eoc, "
                          "none (LeCun/He init) and ll (looks-linear ReLU) are baselines; "
                          "resnet-bn trains the ResNet-with-BatchNorm counterpart of the "
                          "network", METHODS)
    zeta: float | None = _option(None, _target_help("zeta"), metavar="Z")
    tau: float | None = _option(None, _target_help("tau"), metavar="T")
    eta: float | None = _option(None, _target_help("eta"), metavar="E")
    bias_variance: float | None = _option(None, _target_help("bias_variance"), metavar="V")
    optimizer: str = _option("adam", "optimizer", tuple(OPTIMIZERS))
    lr: float | None = _option(None, "learning rate (default: "
                               + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")",
                               metavar="LR")
    optimizer_options: dict[str, Any] = _option(
        {}, "optimizer options as a JSON object, e.g. '{\"momentum\": 0.9}' (sgd: momentum, "
        "nesterov; adam: b1, b2, eps; kfac: damping, ema, inverse_every, momentum, "
        "norm_constraint, curvature_every, implementation; jax: schedule, warmup_steps, "
        "decay_steps, end_factor)", metavar="JSON")
    data: str = _option("mnist1d", "mnist1d, digits, mnist5k, teacher or an .npz file",
                        metavar="NAME|FILE.npz")
    steps: int = _option(1000, "number of steps (with --resume: the new total)", metavar="N")
    seed: int = _option(0, "seed of the initialization, the data order and K-FAC's samples",
                        metavar="N")
    batch_size: int = _option(128, "examples per step", metavar="N")
    dtype: str = _option("float64", "floating-point type", DTYPES)
    backend: str = _option("numpy", "numpy (any network; K-FAC on Dense layers) or jax "
                           "(jit-compiled, K-FAC on Dense and Conv layers, GPU)", BACKENDS)
    checkpoint_every: int = _option(100, "steps between checkpoints", metavar="N")
    log_every: int = _option(10, "steps between logged records", metavar="N")
    eval_every: int = _option(0, "steps between test evaluations (0: at the end only)",
                              metavar="N")
    data_parallel: int = _option(0, "JAX: split each batch over this many devices (-1: all)",
                                 metavar="N")

    def __post_init__(self) -> None:
        for name in ("method", "optimizer", "dtype", "backend"):
            choices = _choices(name)
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got "
                                 f"{getattr(self, name)!r}")
        targets = {k: getattr(self, k) for k in TARGET_FIELDS}
        if self.method in SOLVE_METHODS:
            check_targets(self.method, targets)
        else:
            given = [k for k, v in targets.items() if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)} do not apply to method {self.method!r} "
                                 "(it solves nothing)")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(
                self.lr, int | float) or not math.isfinite(self.lr) or self.lr <= 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        for name, low in (("steps", 0), ("seed", 0), ("batch_size", 1), ("checkpoint_every", 1),
                          ("log_every", 1), ("eval_every", 0), ("data_parallel", -1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.optimizer_options, Mapping):
            raise ValueError(f"optimizer_options must be a mapping, got "
                             f"{self.optimizer_options!r}")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a dataset name or an .npz path, got {self.data!r}")
        if self.data_parallel and self.backend != "jax":
            raise ValueError("data_parallel needs backend='jax'")

    @property
    def targets(self) -> dict[str, float]:
        """The method targets that were set (the solver's keyword arguments)."""
        return {k: getattr(self, k) for k in TARGET_FIELDS if getattr(self, k) is not None}

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimizer's default."""
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)

    @property
    def shaped(self) -> bool:
        """Whether the activations are shaped (then inputs get Per-Location Normalization)."""
        return self.method in ("dks", "tat")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The config stored in a run directory (unknown keys are refused)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown train options {sorted(unknown)}; options: "
                             f"{', '.join(sorted(names))}")
        return cls(**dict(data))


def _choices(name: str) -> tuple[str, ...]:
    return next(f.metadata["choices"] for f in fields(TrainConfig) if f.name == name)
