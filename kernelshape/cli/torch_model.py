"""``kernelshape shape --torch FILE.py:CLASS``: load the user's model class and trace it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

from kernelshape.cli.output import UsageError
from kernelshape.topology import Network


def _input_shape(text: str | None) -> tuple[int, ...]:
    if not text:
        raise UsageError("--torch needs --input-shape (one example's shape, e.g. 3x32x32)")
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise UsageError(f"--input-shape must be positive integers joined by 'x', e.g. 3x32x32; "
                         f"got {text!r}")
    return dims


def _declared(items: Sequence[str]) -> dict[str, str]:
    """``NAME=EXPR`` items of --torch-activation."""
    out = {}
    for item in items:
        name, sep, expression = item.partition("=")
        if not sep or not name.strip().isidentifier() or not expression.strip():
            raise UsageError(f"--torch-activation {item!r} is not NAME=EXPR, e.g. "
                             "--torch-activation 'Mish=x*tanh(softplus(x))'")
        out[name.strip()] = expression.strip()
    return out


def traced_network(target: str, input_shape: str | None, shortcut_weight: float | None,
                   activations: Sequence[str]) -> Network:
    """The network of ``CLASS()`` from ``FILE.py`` (``target = "FILE.py:CLASS"``), traced on a
    batch of two random examples of ``input_shape``. Imports and runs the user's file."""
    path, _, name = target.rpartition(":")
    if not path or not name.isidentifier():
        raise UsageError(f"--torch must be FILE.py:CLASS, got {target!r}")
    if not os.path.isfile(path):
        raise UsageError(f"--torch: {path!r} is not a file")
    dims = _input_shape(input_shape)
    try:
        import torch

        from kernelshape.integrations.torch import network_from_module
    except ImportError:
        raise UsageError("--torch needs PyTorch: pip install 'kernelshape[torch]'") from None
    spec = importlib.util.spec_from_file_location("kernelshape_user_model", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"--torch: cannot import {path!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = getattr(module, name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise UsageError(f"--torch: {path!r} defines no torch.nn.Module class {name!r}")
    model = cls().eval()
    example = torch.randn(2, *dims, generator=torch.Generator().manual_seed(0))
    return network_from_module(model, example, shortcut_weight, _declared(activations))
