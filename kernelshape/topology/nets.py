"""Preset networks (``ks.nets``): mlp, convnet, resnet (official modified-ResNet family),
wide_resnet, and resnet_bn (the BatchNorm baseline the trainer compares against). Each returns
a validated ``Network`` whose ``spec`` reproduces it.

Depth convention: ``mlp(depth=D)`` / ``convnet(depth=D)`` have D nonlinear layers (D blocks of
linear layer -> activation) and a Dense readout. ``resnet(depth)`` uses the standard names.
The stem max-pool of the official ResNet is left out (max-pooling is outside DKS/TAT theory, and
the official subnetwork function ignores it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from kernelshape.topology.combinators import Description, Identity, Repeat, Residual, Serial, Sum
from kernelshape.topology.layers import BatchNorm, Conv, Dense, GlobalAvgPool, Layer, Nonlinearity
from kernelshape.topology.network import Network, network

if TYPE_CHECKING:
    from kernelshape.engine.activations import Activation

DEFAULT_ACTIVATION = "softplus"


class ResNetConfig(NamedTuple):
    blocks_per_group: tuple[int, ...]
    bottleneck: bool
    use_projection: tuple[bool, ...]


RESNET_CONFIGS: dict[int, ResNetConfig] = {
    18: ResNetConfig((2, 2, 2, 2), False, (False, True, True, True)),
    34: ResNetConfig((3, 4, 6, 3), False, (False, True, True, True)),
    50: ResNetConfig((3, 4, 6, 3), True, (True, True, True, True)),
    101: ResNetConfig((3, 4, 23, 3), True, (True, True, True, True)),
    152: ResNetConfig((3, 8, 36, 3), True, (True, True, True, True)),
    200: ResNetConfig((3, 24, 36, 3), True, (True, True, True, True)),
}


def _depth(depth: int, what: str) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"{what} depth must be a positive integer (the number of nonlinear "
                         f"layers), got {depth!r}")
    return depth


def _spec(preset: str, activation: str | Activation, **options: object) -> str | None:
    """The SPEC string of a preset call, or None when the activation is not a plain name."""
    if not isinstance(activation, str) or "," in activation:
        return None
    items = {**options, "activation": activation}
    text = ",".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in items.items())
    return f"{preset}:{text}"


def mlp(depth: int, width: int = 1024, activation: str | Activation = DEFAULT_ACTIVATION,
        input_dim: int = 784, num_classes: int = 10) -> Network:
    """``depth`` blocks Dense(width) -> activation, then Dense(num_classes): depth nonlinear
    layers; the maximal slope function is ``xi**depth``."""
    _depth(depth, "mlp")
    block = Serial(Dense(width, name="dense"), Nonlinearity(activation, name="act"))
    body = Serial(Repeat(block, depth, name="block"), Dense(num_classes, name="readout"))
    spec = _spec("mlp", activation, depth=depth, width=width, input_dim=input_dim,
                 num_classes=num_classes)
    return network(body, (input_dim,), name=f"mlp-{depth}", spec=spec)


def convnet(depth: int, channels: int = 128, activation: str | Activation = DEFAULT_ACTIVATION,
            kernel_size: int = 3, input_shape: tuple[int, ...] = (32, 32, 3),
            num_classes: int = 10) -> Network:
    """``depth`` blocks Conv(channels, kernel_size) -> activation, global average pooling,
    Dense(num_classes)."""
    _depth(depth, "convnet")
    block = Serial(Conv(channels, kernel_size, name="conv"), Nonlinearity(activation, name="act"))
    body = Serial(Repeat(block, depth, name="block"), GlobalAvgPool(name="pool"),
                  Dense(num_classes, name="readout"))
    spec = _spec("convnet", activation, depth=depth, channels=channels, kernel_size=kernel_size,
                 input_shape=tuple(input_shape), num_classes=num_classes)
    return network(body, tuple(input_shape), name=f"convnet-{depth}", spec=spec)


def _block(version: int, channels: int, stride: int, projection: bool, bottleneck: bool,
           shortcut_weight: float, activation: str | Activation, name: str) -> Description:
    """One modified-ResNet block (V1: post-activation, V2: pre-activation)."""
    inner = channels // 4 if bottleneck else channels
    if bottleneck:
        convs = [Conv(inner, 1, name="conv0"), Conv(inner, 3, stride, name="conv1"),
                 Conv(channels, 1, name="conv2")]
    else:
        convs = [Conv(channels, 3, stride, name="conv0"), Conv(channels, 3, name="conv1")]
    shortcut = Conv(channels, 1, stride, name="shortcut") if projection else None

    def chain(first_act: int) -> list[Description]:
        """conv0, act, conv1, act, ... (activations numbered from ``first_act``)."""
        layers: list[Description] = [convs[0]]
        for i, conv in enumerate(convs[1:]):
            layers += [Nonlinearity(activation, name=f"act{first_act + i}"), conv]
        return layers

    if version == 1:  # conv -> act -> ... -> conv, sum, act
        res = Residual(Serial(*chain(0)), shortcut=shortcut, shortcut_weight=shortcut_weight)
        return Serial(res, Nonlinearity(activation, name=f"act{len(convs) - 1}"), name=name)
    # V2: act -> conv -> ... ; a projection shortcut branches off after the first activation
    first = Nonlinearity(activation, name="act0")
    if projection:
        return Serial(first, Residual(Serial(*chain(1)), shortcut=shortcut,
                                      shortcut_weight=shortcut_weight), name=name)
    return Serial(Residual(Serial(first, *chain(1)), shortcut_weight=shortcut_weight), name=name)


def _resnet_body(groups: list[tuple[int, int, int, bool]], version: int, bottleneck: bool,
                 stem: Conv, shortcut_weight: float, activation: str | Activation,
                 num_classes: int) -> Description:
    """Stem, groups of (blocks, channels, stride, projection at first block), head."""
    stem_layers: list[Description] = [stem]
    if version == 1:
        stem_layers.append(Nonlinearity(activation, name="act"))
    parts: list[Description] = [Serial(*stem_layers, name="stem")]
    for g, (blocks, channels, stride, projection) in enumerate(groups):
        parts.append(Serial(*[
            _block(version, channels, stride if b == 0 else 1, projection and b == 0, bottleneck,
                   shortcut_weight, activation, name=f"block{b}")
            for b in range(blocks)], name=f"group{g}"))
    if version == 2:
        parts.append(Serial(Nonlinearity(activation, name="act"), name="final"))
    parts.append(Serial(GlobalAvgPool(name="pool"), Dense(num_classes, name="logits"),
                        name="head"))
    return Serial(*parts)


def _check_resnet_options(version: int, shortcut_weight: float) -> None:
    if version not in (1, 2):
        raise ValueError(f"resnet version must be 1 (post-activation) or 2 (pre-activation), "
                         f"got {version!r}")
    if shortcut_weight is None or not 0.0 <= float(shortcut_weight) <= 1.0:
        raise ValueError(f"shortcut_weight must be in [0, 1] (0: no shortcuts), got "
                         f"{shortcut_weight!r}; the plain ResNet sum x + f(x) is not normalized")


def resnet(depth: int, version: int = 2, shortcut_weight: float = 0.0,
           activation: str | Activation = DEFAULT_ACTIVATION, width: int = 64,
           input_shape: tuple[int, ...] = (224, 224, 3), num_classes: int = 1000) -> Network:
    """The official modified ResNet (dks Haiku example) without BatchNorm and max-pool.

    Residual blocks compute ``sqrt(1 - w^2) * branch + w * shortcut`` with ``w =
    shortcut_weight`` (0: a vanilla network). Group channels are ``width * (1, 2, 4, 8)``
    (times 4 for bottleneck blocks), strides (1, 2, 2, 2), projection shortcut at the first
    block of a group (not group 0 for depths 18/34). V2 ends with a final activation; V1 has
    an activation after the stem conv and after every sum.
    """
    if depth not in RESNET_CONFIGS:
        raise ValueError(f"resnet depth must be one of {sorted(RESNET_CONFIGS)}, got {depth!r}")
    _check_resnet_options(version, shortcut_weight)
    config = RESNET_CONFIGS[depth]
    expansion = 4 if config.bottleneck else 1
    groups = [(n, width * 2**g * expansion, 1 if g == 0 else 2, proj)
              for g, (n, proj) in enumerate(zip(config.blocks_per_group, config.use_projection,
                                                strict=True))]
    body = _resnet_body(groups, version, config.bottleneck, Conv(width, 7, 2, name="conv"),
                        float(shortcut_weight), activation, num_classes)
    spec = _spec("resnet", activation, depth=depth, version=version,
                 shortcut_weight=float(shortcut_weight), width=width,
                 input_shape=tuple(input_shape), num_classes=num_classes)
    return network(body, tuple(input_shape), name=f"resnet-{depth}-v{version}", spec=spec)


def wide_resnet(depth: int = 28, widen_factor: int = 10, version: int = 2,
                shortcut_weight: float = 0.0, activation: str | Activation = DEFAULT_ACTIVATION,
                input_shape: tuple[int, ...] = (32, 32, 3), num_classes: int = 10) -> Network:
    """Wide ResNet WRN-depth-k: 3x3 stem conv (16 channels), three groups of
    ``(depth - 4) / 6`` basic blocks with ``16k, 32k, 64k`` channels and strides (1, 2, 2);
    projection shortcut where channels or stride change."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"wide_resnet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, "
                         f"...), got {depth!r}")
    if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or widen_factor < 1:
        raise ValueError(f"widen_factor must be a positive integer, got {widen_factor!r}")
    _check_resnet_options(version, shortcut_weight)
    blocks = (depth - 4) // 6
    channels = [16 * widen_factor * 2**g for g in range(3)]
    groups = [(blocks, ch, stride, ch != prev or stride != 1)
              for ch, prev, stride in zip(channels, [16] + channels[:-1], (1, 2, 2), strict=True)]
    body = _resnet_body(groups, version, False, Conv(16, 3, name="conv"), float(shortcut_weight),
                        activation, num_classes)
    spec = _spec("wide_resnet", activation, depth=depth, widen_factor=widen_factor,
                 version=version, shortcut_weight=float(shortcut_weight),
                 input_shape=tuple(input_shape), num_classes=num_classes)
    return network(body, tuple(input_shape), name=f"wrn-{depth}-{widen_factor}", spec=spec)


def resnet_bn(depth: int, width: int = 256, activation: str | Activation = DEFAULT_ACTIVATION,
              input_shape: tuple[int, ...] = (784,), num_classes: int = 10,
              kernel_size: int = 3) -> Network:
    """The ResNet-with-BatchNorm baseline of an ``mlp`` / ``convnet`` of the same depth and
    width (trainer only: BatchNorm has no kernel map, so this network cannot be shaped).

    A stem ``Dense(width)`` (``Conv(width, kernel_size)`` for inputs with spatial axes), then
    ``depth - 1`` pre-activation residual units ``h + L(act(BN(h)))`` (plain, unnormalized
    sums with identity shortcuts, He et al. 2016 v2), then ``act(BN(h))``, global average
    pooling for spatial inputs, and ``Dense(num_classes)``: ``depth`` activations, as in the
    chain presets."""
    _depth(depth, "resnet_bn")
    shape = tuple(input_shape)
    spatial = len(shape) > 1

    def linear(name: str) -> Layer:
        return Conv(width, kernel_size, name=name) if spatial else Dense(width, name=name)

    unit = Sum(Serial(BatchNorm(name="bn"), Nonlinearity(activation, name="act"),
                      linear("linear")), Identity(), weights=(1.0, 1.0), name="unit")
    head: list[Description] = [BatchNorm(name="bn"), Nonlinearity(activation, name="act")]
    if spatial:
        head.append(GlobalAvgPool(name="pool"))
    body = Serial(linear("stem"), Repeat(unit, depth - 1, name="block"),
                  Serial(*head, Dense(num_classes, name="readout"), name="head"))
    spec = _spec("resnet_bn", activation, depth=depth, width=width, input_shape=shape,
                 num_classes=num_classes, kernel_size=kernel_size)
    return network(body, shape, name=f"resnet_bn-{depth}", spec=spec)


def resnet_bn_for(net: Network) -> Network:
    """:func:`resnet_bn` with the depth, width, activation, input shape and classes of a chain
    network ``net`` (an ``mlp`` or a ``convnet``: linear -> activation blocks of one width,
    stride 1, then the readout)."""
    hidden = [n for n in net.nodes if isinstance(n.layer, Dense | Conv)][:-1]
    acts = net.nonlinear_nodes
    readout = net.node(net.outputs[0])
    kinds = {(type(n.layer), n.shape[-1], getattr(n.layer, "kernel_size", 3),
              getattr(n.layer, "stride", 1)) for n in hidden}
    kind = next(iter(kinds)) if len(kinds) == 1 else None
    stride = kind[3] if kind is not None else 1
    strides = stride if isinstance(stride, tuple) else (stride,)
    if (kind is None or any(len(n.parents) > 1 for n in net.nodes) or len(hidden) != len(acts)
            or not isinstance(readout.layer, Dense) or len(net.activations) != 1
            or any(stride != 1 for stride in strides)):
        raise ValueError("the ResNet-BN baseline is built for chain networks of "
                         "(Dense|Conv of one width, stride 1, activation) blocks and a Dense "
                         f"readout, such as the mlp and convnet presets; {net!r} is not one")
    _, width, kernel, _ = kind
    activation = acts[0].layer.activation  # type: ignore[attr-defined]
    return resnet_bn(len(acts), width, activation, net.input_shape, readout.shape[-1],
                     kernel if isinstance(kernel, int) else kernel[0])


PRESETS = {"mlp": mlp, "convnet": convnet, "resnet": resnet, "wide_resnet": wide_resnet,
           "resnet_bn": resnet_bn}

__all__ = ["PRESETS", "RESNET_CONFIGS", "convnet", "mlp", "resnet", "resnet_bn", "resnet_bn_for",
           "wide_resnet"]
