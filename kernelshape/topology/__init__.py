"""Network descriptions: describe a network once, derive its kernel maps and maximal functions.

```python
from kernelshape.topology import Dense, Nonlinearity, Residual, Serial, network, nets
net = nets.resnet(depth=101, version=2, shortcut_weight=0.6, activation="softplus")
net.cmap(c), net.max_slope(xi), net.subnet_max(x, r)
```
See docs/topology.md.
"""

from kernelshape.topology import nets
from kernelshape.topology.combinators import Concat, Heads, Identity, Repeat, Residual, Serial, Sum
from kernelshape.topology.graph import INPUT_ID, Node
from kernelshape.topology.layers import (
    BatchNorm,
    ChannelConcat,
    Conv,
    Dense,
    Flatten,
    Gate,
    GlobalAvgPool,
    Input,
    Layer,
    LayerNorm,
    MaxPool,
    Nonlinearity,
    SelfAttention,
    WeightedSum,
)
from kernelshape.topology.network import Network, load_network, network
from kernelshape.topology.serialization import FORMAT_VERSION
from kernelshape.topology.spec import parse_spec
from kernelshape.topology.state import KernelState
from kernelshape.topology.subnetworks import Subnetwork

__all__ = [
    "FORMAT_VERSION",
    "INPUT_ID",
    "BatchNorm",
    "ChannelConcat",
    "Concat",
    "Conv",
    "Dense",
    "Flatten",
    "Gate",
    "GlobalAvgPool",
    "Heads",
    "Identity",
    "Input",
    "KernelState",
    "Layer",
    "LayerNorm",
    "MaxPool",
    "Network",
    "Node",
    "Nonlinearity",
    "Repeat",
    "Residual",
    "SelfAttention",
    "Serial",
    "Subnetwork",
    "Sum",
    "WeightedSum",
    "load_network",
    "nets",
    "network",
    "parse_spec",
]
