"""The ``kernelshape`` argument parser and entry point (exit codes: 0 ok, 2 bad input, 1 failure).

Library modules are imported inside the subcommands, so ``--help`` and argument errors are fast.
Set ``KS_DEBUG=1`` to see Python tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from kernelshape import __version__
from kernelshape.cli.output import Unavailable, UsageError, dump_json

METHODS = ("dks", "tat", "eoc", "none")
FRAMEWORKS = ("numpy", "jax", "pytorch", "tensorflow")
TRAIN_METHODS = ("dks", "tat", "eoc", "none", "ll")

DESCRIPTION = """\
Deep Kernel Shaping (DKS) and Tailored Activation Transformations (TAT): Q/C maps of
activations, shaping constants for whole networks, exported code, checks and plots.

Exit codes: 0 success, 2 bad input (the message says what is allowed), 1 other failure.
Set KS_DEBUG=1 to see Python tracebacks."""

MAIN_EPILOG = """\
examples:
  kernelshape activations
  kernelshape maps tanh --c 0,0.5,1
  kernelshape shape --net mlp:depth=100,activation=tanh --method dks -o constants.json
  kernelshape export constants.json --to pytorch -o dks_tanh.py
  kernelshape demo

run 'kernelshape COMMAND --help' for the options and examples of each command."""

EPILOGS = {
    "activations": """\
examples:
  kernelshape activations
  kernelshape activations --json""",
    "maps": """\
ACT is a built-in name (see 'kernelshape activations') or an expression in x built from
numbers, + - * / ^ **, and functions such as exp, log, tanh, erf, sigmoid, softplus, max.

The local quantities are at q = 1 (inputs with unit second moment):
  q_value = Q(1) = E[phi(z)^2]       q_slope = Q'(1)
  c_value_0 = C(0)   c_slope_0 = C'(0)   c_slope_1 = C'(1)   c_curv_1 = C''(1)
Infinite values (e.g. C''(1) of ReLU) are printed as inf ("inf" strings in JSON).
With --dps N the values are computed with mpmath and printed with N significant digits;
in --json output they are then strings (JSON numbers are only float64).

examples:
  kernelshape maps tanh
  kernelshape maps relu --c=-1,0,0.5,1 --json
  kernelshape maps "x*tanh(log(1+exp(x)))" --q 0.5,1,2
  kernelshape maps softplus --transform '{"input_scale": 1.2, "output_scale": 1.5}'
  kernelshape maps leaky_relu --param negative_slope=0.2
  kernelshape maps tanh --dps 30""",
    "shape": """\
SPEC is a preset with options or the path of a saved network JSON, e.g.
  mlp:depth=100,activation=tanh
  convnet:depth=20,activation=softplus
  resnet:depth=101,shortcut_weight=0.6,version=2,activation=softplus
Methods: dks (network slope target --zeta, default 1.5), tat (curvature target --tau,
default 0.3; Leaky ReLU: C(0) target --eta, default 0.9), eoc (edge of chaos), none.
The constants are gamma * (phi(alpha*x + beta) + delta) with alpha = input_scale,
beta = input_shift, delta = output_shift, gamma = output_scale; residuals are the
certificate: |condition - target| re-evaluated independently.
With --dps N mpmath values are printed with N digits (strings in --json output).

examples:
  kernelshape shape --net mlp:depth=100,activation=tanh --method dks
  kernelshape shape --net mlp:depth=100,activation=tanh --method dks --zeta 1.2 --json
  kernelshape shape --net resnet:depth=101,shortcut_weight=0.6,activation=softplus \\
                    --method tat --tau 0.3 -o constants.json
  kernelshape shape --net mlp:depth=50,activation=leaky_relu --method tat --eta 0.9
  kernelshape shape --net mlp:depth=20 --activation "x*tanh(softplus(x))" --method dks""",
    "export": """\
Writes one dependency-free source file (no kernelshape import) defining CONSTANTS,
get_activation(name), the framework's scaled-uniform-orthogonal initializer and
per_location_normalization(x). Without -o the source is printed on stdout.
The constants are re-checked against their recorded residuals before export.

examples:
  kernelshape export constants.json --to pytorch -o dks_constants.py
  kernelshape export constants.json --to jax > dks_jax.py
  kernelshape export constants.json --to numpy --json -o act.py""",
    "verify": """\
Numerical checks of the DKS theorems (seed talk): Theorem 13 (C-map approximation bounds
for every subnetwork), Theorem 27 (per-layer NTK bound 11 (zeta - 1)) and 'approximation'
(finite-width kernels against the infinite-width maps, error against width).
Further options are passed to kernelshape.verify.

examples:
  kernelshape verify theorem13 --net mlp:depth=100,activation=tanh
  kernelshape verify theorem27 --net mlp:depth=20,activation=softplus --json
  kernelshape verify approximation --net mlp:depth=10,activation=tanh""",
    "plot": """\
Draws a figure of the gallery to a PNG (NAME 'all' draws every figure into the directory
given by -o). Further options are passed to kernelshape.plots.

examples:
  kernelshape plot cmap-degeneration -o degeneration.png
  kernelshape plot all -o plots""",
    "train": """\
Reference trainer: a deep network on an offline dataset (mnist1d, digits, mnist5k,
teacher, or an .npz with x_train, y_train, x_test, y_test). The NumPy backend trains MLPs;
convnets, residual nets (resnet, wide_resnet) and LayerNorm need --backend jax.
Methods dks/tat shape the activations (or use --constants FILE), eoc/none/ll are baselines.
A run directory (--out) holds config.json, metrics.jsonl and checkpoints; --resume DIR
continues it exactly. Exit code 1 when the run diverges.

examples:
  kernelshape train --net mlp:depth=20,width=256,input_dim=40,activation=tanh \\
                    --method dks --data mnist1d --steps 500 --out runs/dks
  kernelshape train --net mlp:depth=20,width=64,input_dim=32 --method tat --data teacher \\
                    --optimizer kfac --steps 200 --json
  kernelshape train --backend jax --method dks --data mnist1d --steps 500 --dtype float32 \\
      --net resnet:depth=18,width=16,shortcut_weight=0.8,input_shape=40x1,num_classes=10
  kernelshape train --resume runs/dks --steps 1000""",
    "demo": """\
Shapes a 100-layer tanh MLP and a ResNet-101 (softplus, version 2, shortcut weight 0.6)
with DKS (zeta 1.5) and TAT (tau 0.3), prints the constants with their certificates, and
writes into --out (default demo-out): one constants document per network and method,
constants.json (the ResNet-101 DKS document), constants_pytorch.py exported from it, and
the C-map degeneration plot when kernelshape.plots is available.

examples:
  kernelshape demo
  kernelshape demo --out /tmp/demo""",
}


class _Parser(argparse.ArgumentParser):
    """argparse with exit code 2 and a pointer to --help on errors."""

    def error(self, message: str) -> Any:  # noqa: D401 (argparse API)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOGS[name],
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout and nothing else there")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (no library imports)."""
    from kernelshape.cli import commands, demo

    parser = _Parser(prog="kernelshape", description=DESCRIPTION, epilog=MAIN_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kernelshape {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = _command(sub, "activations", "list the built-in activations")
    _json_flag(p)
    p.set_defaults(handler=commands.activations)

    p = _command(sub, "maps", "Q and C maps of an activation (optionally transformed)")
    p.add_argument("act", metavar="ACT", help="built-in name or expression in x")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter of a built-in, e.g. negative_slope=0.2 (repeatable)")
    p.add_argument("--transform", metavar="JSON",
                   help='transform constants as JSON, keys input_scale, input_shift, '
                        'output_shift, output_scale (+ negative_slope for leaky_relu)')
    p.add_argument("--c", metavar="LIST", help="comma-separated c values in [-1, 1] for C(c)")
    p.add_argument("--q", metavar="LIST", help="comma-separated q values > 0 for Q(q)")
    p.add_argument("--dps", type=_positive_int, metavar="N",
                   help="compute with mpmath at N significant digits (5..1000)")
    _json_flag(p)
    p.set_defaults(handler=commands.maps)

    p = _command(sub, "shape", "solve the DKS / TAT / EOC constants of a network")
    p.add_argument("--net", required=True, metavar="SPEC", help="network SPEC or JSON path")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--zeta", type=_real, metavar="Z", help="DKS slope target (> 1; default 1.5)")
    p.add_argument("--tau", type=_real, metavar="T", help="TAT curvature target (> 0; default 0.3)")
    p.add_argument("--eta", type=_real, metavar="E",
                   help="TAT Leaky ReLU C(0) target (0 < eta < 1; default 0.9)")
    p.add_argument("--activation", action="append", metavar="ACT",
                   help="set the activation option of a preset SPEC (built-in name or "
                        "expression in x)")
    p.add_argument("--dps", type=_positive_int, metavar="N",
                   help="solve and certify with mpmath at N digits")
    p.add_argument("--certify", choices=("float", "mp"),
                   help="certificate route (default: the solver's)")
    p.add_argument("--all-solutions", action="store_true",
                   help="also list the other solutions (e.g. mirrored ones of odd activations)")
    p.add_argument("-o", "--output", metavar="FILE", help="save the constants document here")
    _json_flag(p)
    p.set_defaults(handler=commands.shape)

    p = _command(sub, "export", "generate framework code from a constants document")
    p.add_argument("constants", metavar="CONSTANTS_JSON", help="a saved constants document")
    p.add_argument("--to", required=True, metavar="FRAMEWORK",
                   help=f"one of {', '.join(FRAMEWORKS)} (aliases np, torch, tf, keras)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the source here (default stdout)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip re-evaluating the constants' local conditions")
    _json_flag(p)
    p.set_defaults(handler=commands.export)

    p = _command(sub, "verify", "check Theorem 13 / Theorem 27 / kernel approximation")
    p.add_argument("theorem", choices=("theorem13", "theorem27", "approximation"))
    p.add_argument("--net", required=True, metavar="SPEC", help="network SPEC or JSON path")
    _json_flag(p)
    p.set_defaults(handler=commands.verify, passthrough=True)

    p = _command(sub, "plot", "draw a figure of the gallery")
    p.add_argument("name", metavar="NAME", help="figure name, or 'all'")
    p.add_argument("-o", "--output", metavar="FILE", help="PNG file (directory for 'all')")
    p.set_defaults(handler=commands.plot, passthrough=True)

    p = _command(sub, "train", "train a deep vanilla network (reference trainer)")
    p.add_argument("--net", metavar="SPEC", help="network SPEC or JSON path")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--method", choices=TRAIN_METHODS, default=None, help="default dks")
    p.add_argument("--optimizer", choices=("adam", "sgd", "kfac"), default=None,
                   help="default adam")
    p.add_argument("--data", metavar="NAME|FILE.npz", default=None, help="default mnist1d")
    p.add_argument("--steps", type=_nonnegative_int, metavar="N",
                   help="number of steps (default 1000; with --resume: new total)")
    p.add_argument("--seed", type=int, default=None, metavar="N", help="default 0")
    p.add_argument("--out", metavar="DIR", help="run directory (config, metrics, checkpoints)")
    p.add_argument("--constants", metavar="FILE", help="constants document to use (dks/tat)")
    p.add_argument("--lr", type=_real, metavar="LR", help="learning rate (optimizer default)")
    p.add_argument("--batch-size", type=_positive_int, metavar="N", help="default 128")
    p.add_argument("--dtype", choices=("float32", "float64"), help="default float64")
    p.add_argument("--backend", choices=("numpy", "jax"),
                   help="default numpy (MLP chains); convnets, DAGs and resnet-bn need jax")
    _json_flag(p)
    p.set_defaults(handler=commands.train)

    p = _command(sub, "demo", "shape a deep MLP and a ResNet-101 and write their constants")
    p.add_argument("--out", default="demo-out", metavar="DIR",
                   help="output directory (default demo-out)")
    p.set_defaults(handler=demo.run, json=False)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    print(f"kernelshape: warning: {message}", file=sys.stderr)


def _debug() -> bool:
    return os.environ.get("KS_DEBUG", "").strip() not in ("", "0")


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"KeyError: {exc.args[0]!r}" if exc.args else "KeyError"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    return str(exc) or type(exc).__name__


def _run(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a handler; with --json its stray prints go to stderr, its payload to stdout."""
    if not getattr(args, "json", False):
        return int(handler(args) or 0)
    stdout = sys.stdout
    args.emit_json = lambda payload, dps=None: dump_json(payload, stdout, dps)
    with contextlib.redirect_stdout(sys.stderr):
        return int(handler(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kernelshape`` console script; returns the exit code."""
    debug = _debug()
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        return _main(argv, debug)


def _main(argv: Sequence[str] | None, debug: bool) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if extra and not getattr(args, "passthrough", False):
        sub = f"kernelshape {args.command}"
        print(f"{sub}: error: unrecognized arguments: {' '.join(extra)}\n(see '{sub} --help')",
              file=sys.stderr)
        return 2
    args.extra = extra
    args.emit_json = None
    prog = f"kernelshape {args.command}"
    try:
        return _run(args.handler, args)
    except (UsageError, ValueError, TypeError, KeyError, json.JSONDecodeError, FileNotFoundError,
            IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError) as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except Unavailable as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except NotImplementedError as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: not available yet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silence the flush at exit)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # noqa: BLE001 (the top-level handler)
        if debug:
            traceback.print_exc()
        print(f"{prog}: failed: {type(exc).__name__}: {_message(exc)}\n"
              "(set KS_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
