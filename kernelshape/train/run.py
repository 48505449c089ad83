"""``Run``: everything a backend needs, built from a config, a network, a shaping and data."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kernelshape.topology import Network
from kernelshape.train.config import TrainConfig
from kernelshape.train.data import Dataset, prepare_inputs
from kernelshape.train.shaping import Shaping


class Run(NamedTuple):
    """A run's options, its network for the prepared inputs, its shaping and its arrays."""

    config: TrainConfig
    net: Network
    shaping: Shaping
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_train(self) -> int:
        return len(self.x_train)


def build_run(config: TrainConfig, net: Network, shaping: Shaping, data: Dataset) -> Run:
    """Prepare the data for ``net`` (a network with one output whose width is the number of
    classes) and check the batch size."""
    if len(net.outputs) != 1:
        raise ValueError(f"the trainer trains networks with one output; this one has "
                         f"{list(net.outputs)}")
    width = net.node(net.outputs[0]).shape
    if width != (data.n_classes,):
        raise ValueError(f"the network's output has shape {width}, the data {data.name!r} has "
                         f"{data.n_classes} classes: build the network with num_classes="
                         f"{data.n_classes} (or a readout of that width)")
    prepared, xtr, xte = prepare_inputs(data, net, config.shaped, np.dtype(config.dtype))
    if config.batch_size > len(xtr):
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(xtr)} training "
                         "examples")
    return Run(config, prepared, shaping, xtr, data.y_train, xte, data.y_test)
