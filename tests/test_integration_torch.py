"""PyTorch models traced into networks, shaped, and checked against the kernel maps."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from kernelshape.integrations.torch import (  # noqa: E402
    ModuleError,
    apply_solution,
    network_from_module,
    shape_module,
)
from kernelshape.topology.layers import Conv, Dense, Nonlinearity, WeightedSum  # noqa: E402


def mlp(depth: int, width: int, act: type = nn.Tanh, d_in: int = 32) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


class ConvNet(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, width, 3, padding=1)
        self.c2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = torch.nn.functional.softplus(self.c1(x))
        x = torch.nn.functional.softplus(self.c2(x))
        return self.head(torch.flatten(self.pool(x), 1))


class Residual(nn.Module):
    def __init__(self, width: int = 64, weight: float | None = None) -> None:
        super().__init__()
        self.inp = nn.Linear(16, width)
        self.f = nn.Sequential(nn.Tanh(), nn.Linear(width, width))
        self.weight = weight
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        h = self.inp(x)
        if self.weight is None:
            h = h + self.f(h)
        else:
            h = self.weight * h + math.sqrt(1 - self.weight**2) * self.f(h)
        return self.out(torch.tanh(h))


def test_mlp_traces_to_its_layers() -> None:
    net = network_from_module(mlp(4, 64), torch.randn(8, 32))
    kinds = [type(n.layer) for n in net.nodes[1:]]
    assert kinds == [Dense, Nonlinearity] * 4 + [Dense]
    assert net.input_shape == (32,)


def test_convnet_traces_channels_last() -> None:
    net = network_from_module(ConvNet(), torch.randn(2, 3, 8, 8))
    assert net.input_shape == (8, 8, 3)
    convs = [n for n in net.nodes if isinstance(n.layer, Conv)]
    assert [n.shape for n in convs] == [(8, 8, 16), (4, 4, 16)]


def test_residuals_need_a_normalized_sum() -> None:
    x = torch.randn(4, 16)
    with pytest.raises(ModuleError, match="pass shortcut_weight"):
        network_from_module(Residual(), x)
    net = network_from_module(Residual(), x, shortcut_weight=0.8)
    sums = [n.layer for n in net.nodes if isinstance(n.layer, WeightedSum)]
    assert sums[0].weights == pytest.approx((0.8, 0.6))
    written = network_from_module(Residual(weight=0.6), x)  # already normalized
    assert [n.layer.weights for n in written.nodes if isinstance(n.layer, WeightedSum)] == \
        [pytest.approx((0.6, 0.8))]


@pytest.mark.parametrize("module, words", [
    (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), "BatchNorm is what DKS/TAT replace"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2)), "max pooling"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, dilation=2)), "dilation"),
    (nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2)), "groups = 2"),
    (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)), "Dropout in training mode"),
])
def test_uncovered_modules_are_refused_with_their_path(module, words) -> None:
    x = torch.randn(2, 4) if isinstance(module[0], nn.Linear) else torch.randn(2, module[0]
                                                                               .in_channels, 8, 8)
    with pytest.raises(ModuleError, match=words):
        network_from_module(module, x)


def _pairs(n: int, d: int, c0: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Input pairs with q = 1 each and cosine c0."""
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    b = torch.randn(n, d, generator=gen, dtype=torch.float64)
    a = a / a.pow(2).mean(1, keepdim=True).sqrt()
    b = b - (b * a).sum(1, keepdim=True) / (a * a).sum(1, keepdim=True) * a
    b = b / b.pow(2).mean(1, keepdim=True).sqrt()
    return a, c0 * a + math.sqrt(1 - c0 * c0) * b


def _last_hidden(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of the model's last shaped activation (width many features)."""
    last = [m for name, m in model.named_modules() if name.split(".")[-1].startswith("shaped_")][-1]
    out = {}
    handle = last.register_forward_hook(lambda m, i, o: out.setdefault("h", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return out["h"]


@pytest.mark.parametrize("method", ["dks", "tat"])
def test_shaped_mlp_matches_the_kernel_maps(method: str) -> None:
    """At initialization the shaped model keeps q near 1 and its output cosine follows the
    network C map; the Monte Carlo error shrinks with width."""
    gen = torch.Generator().manual_seed(0)
    errors = []
    for width in (32, 1024):
        model = mlp(8, width).double()
        x = torch.randn(4, 32, dtype=torch.float64)
        solution = shape_module(model, x, method=method)
        shaped = apply_solution(model, solution, generator=gen).double()
        c0 = 0.3
        x1, x2 = _pairs(32, 32, c0, gen)
        y1, y2 = _last_hidden(shaped, x1), _last_hidden(shaped, x2)
        cos = ((y1 * y2).mean(1) / (y1.pow(2).mean(1) * y2.pow(2).mean(1)).sqrt()).mean()
        want = solution.network.cmap(c0, transforms=solution.transforms)
        errors.append(abs(float(cos) - float(want)))
        if width == 1024:
            assert float(y1.pow(2).mean()) == pytest.approx(1.0, abs=0.05)  # q = 1 kept
    assert errors[1] < errors[0] and errors[1] < 0.02, errors


def test_shaped_convnet_keeps_q() -> None:
    model = ConvNet(width=64).double()
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64)
    solution = shape_module(model, x, method="dks")
    shaped = apply_solution(model, solution, generator=torch.Generator().manual_seed(1))
    shaped = shaped.double()
    features = {}
    body = shaped[1]
    body.c2.register_forward_hook(lambda m, i, o: features.setdefault("c2", o))
    with torch.no_grad():
        shaped(x)
    q = float(features["c2"].pow(2).mean())
    assert q == pytest.approx(1.0, abs=0.2)


def test_shaped_deep_mlp_trains_better_than_default_init() -> None:
    """A 30-layer tanh MLP on a teacher task: 150 Adam steps from the DKS shaping end with a
    lower training loss than from PyTorch's default initialization, each arm at its best
    learning rate of the same grid (measured: 0.012 at 3e-4 against 2.087 at 1e-3)."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 10))
    x = torch.randn(1024, 32)
    with torch.no_grad():
        y = teacher(x).argmax(1)

    def final_loss(model: nn.Module, lr: float) -> float:
        model = copy.deepcopy(model)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss = torch.tensor(0.0)
        for step in range(150):
            idx = torch.arange(step * 64, step * 64 + 64) % 1024
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(nn.functional.cross_entropy(model(x), y))

    torch.manual_seed(1)
    default = mlp(30, 64)
    torch.manual_seed(1)
    base = mlp(30, 64)
    solution = shape_module(base, x[:8], method="dks")
    shaped = apply_solution(base, solution, generator=torch.Generator().manual_seed(1))
    grid = (1e-4, 3e-4, 1e-3, 3e-3)
    default_loss = min(final_loss(default, lr) for lr in grid)
    shaped_loss = min(final_loss(shaped, lr) for lr in grid)
    assert np.isfinite(shaped_loss) and shaped_loss < default_loss - 0.1, (shaped_loss,
                                                                          default_loss)


MODEL_FILE = '''
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.Tanh())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.body(x))
'''


def test_cli_shapes_a_model_file(tmp_path, capsys) -> None:
    from kernelshape.cli.app import main
    from kernelshape.solve.recheck import load_constants

    source = tmp_path / "model.py"
    source.write_text(MODEL_FILE)
    doc = tmp_path / "constants.json"
    assert main(["shape", "--torch", f"{source}:Net", "--input-shape", "3x8x8", "--method",
                 "dks", "-o", str(doc)]) == 0
    loaded = load_constants(doc)  # re-derived from the traced network it records
    assert loaded["network"]["description"] is not None
    capsys.readouterr()
    assert main(["shape", "--torch", f"{source}:Missing", "--input-shape", "3x8x8",
                 "--method", "dks"]) == 2
    assert "defines no torch.nn.Module class 'Missing'" in capsys.readouterr().err
    assert main(["shape", "--torch", f"{source}:Net", "--method", "dks"]) == 2
    assert "needs --input-shape" in capsys.readouterr().err


def test_shaped_residual_network_matches_its_c_map() -> None:
    """A residual model rewritten with shortcut weight 0.8 and shaped with TAT: the output
    cosine of the last hidden layer follows the traced network's C map."""
    gen = torch.Generator().manual_seed(2)

    class Deep(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.inp = nn.Linear(16, width)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Softplus(), nn.Linear(width, width))
                                        for _ in range(6))
            self.act = nn.Softplus()

        def forward(self, x):
            h = self.inp(x)
            for block in self.blocks:
                h = h + block(h)
            return self.act(h)

    model = Deep(1024).double()
    solution = shape_module(model, torch.randn(2, 16, dtype=torch.float64), method="tat",
                            shortcut_weight=0.8)
    shaped = apply_solution(model, solution, generator=gen).double()
    x1, x2 = _pairs(32, 16, 0.5, gen)
    with torch.no_grad():
        y1, y2 = shaped(x1), shaped(x2)
    cos = ((y1 * y2).mean(1) / (y1.pow(2).mean(1) * y2.pow(2).mean(1)).sqrt()).mean()
    want = float(solution.network.cmap(0.5, transforms=solution.transforms))
    assert abs(float(cos) - want) < 0.02, (float(cos), want)


class Mish(nn.Module):
    """An elementwise module kernelshape does not know by name."""

    def forward(self, x):
        return x * torch.tanh(torch.nn.functional.softplus(x))


def test_custom_elementwise_modules_are_declared_as_expressions() -> None:
    model = nn.Sequential(nn.Linear(16, 512), Mish(), nn.Linear(512, 512), Mish()).double()
    x = torch.randn(2, 16, dtype=torch.float64)
    with pytest.raises(ModuleError, match="is not covered by the kernel maps"):
        network_from_module(model, x)
    solution = shape_module(model, x, method="dks",
                            activations={"Mish": "x*tanh(softplus(x))"})
    assert list(solution.activations) == ["x*tanh(softplus(x))"]
    shaped = apply_solution(model, solution, activations={"Mish": "x*tanh(softplus(x))"},
                            generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(4)
    x1, x2 = _pairs(32, 16, 0.5, gen)
    with torch.no_grad():
        y1, y2 = shaped.double()(x1), shaped(x2)
    assert float(y1.pow(2).mean()) == pytest.approx(1.0, abs=0.1)
    cos = ((y1 * y2).mean(1) / (y1.pow(2).mean(1) * y2.pow(2).mean(1)).sqrt()).mean()
    want = float(solution.network.cmap(0.5, transforms=solution.transforms))
    assert abs(float(cos) - want) < 0.03, (float(cos), want)


def test_cli_declares_custom_activations(tmp_path, capsys) -> None:
    from kernelshape.cli.app import main

    source = tmp_path / "mish_model.py"
    source.write_text("import torch\nfrom torch import nn\n\n"
                      "class Mish(nn.Module):\n"
                      "    def forward(self, x):\n"
                      "        return x * torch.tanh(nn.functional.softplus(x))\n\n"
                      "class Net(nn.Module):\n"
                      "    def __init__(self):\n"
                      "        super().__init__()\n"
                      "        self.a, self.b = nn.Linear(8, 32), Mish()\n"
                      "        self.c = nn.Linear(32, 4)\n\n"
                      "    def forward(self, x):\n"
                      "        return self.c(self.b(self.a(x)))\n")
    argv = ["shape", "--torch", f"{source}:Net", "--input-shape", "8", "--method", "tat"]
    assert main([*argv, "--torch-activation", "Mish=x*tanh(softplus(x))", "--json"]) == 0
    assert "x*tanh(softplus(x))" in json.loads(capsys.readouterr().out)["activations"]
    assert main([*argv, "--torch-activation", "Mish"]) == 2
    assert "is not NAME=EXPR" in capsys.readouterr().err


def test_shaped_convnet_matches_the_per_location_c_map() -> None:
    """Delta-orthogonal convolutions act on each location alone at initialization, so the
    per-location cosine after the shaped conv stack follows the network C map."""
    gen = torch.Generator().manual_seed(5)
    model = ConvNet(width=512).double()
    solution = shape_module(model, torch.randn(2, 3, 6, 6, dtype=torch.float64), method="dks")
    shaped = apply_solution(model, solution, generator=gen).double()
    a = torch.randn(8, 3, 6, 6, generator=gen, dtype=torch.float64)
    b = torch.randn(8, 3, 6, 6, generator=gen, dtype=torch.float64)
    c0 = 0.4
    # PLN puts every location at q = 1; pairs with per-location cosine c0 after it
    a = a / a.pow(2).mean(1, keepdim=True).sqrt()
    b = b - (a * b).sum(1, keepdim=True) / (a * a).sum(1, keepdim=True) * a
    b = b / b.pow(2).mean(1, keepdim=True).sqrt()
    x2 = c0 * a + math.sqrt(1 - c0 * c0) * b
    y1, y2 = _last_hidden(shaped, a), _last_hidden(shaped, x2)
    cos = ((y1 * y2).mean(1) / (y1.pow(2).mean(1) * y2.pow(2).mean(1)).sqrt()).mean()
    last = [n.id for n in solution.network.nodes if isinstance(n.layer, Nonlinearity)][-1]
    want = float(solution.network.cmap(c0, transforms=solution.transforms, node=last))
    assert abs(float(cos) - want) < 0.03, (float(cos), want)
