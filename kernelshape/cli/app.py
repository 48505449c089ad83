"""The ``kernelshape`` argument parser and entry point (exit codes: 0 ok, 2 bad input, 1 failure).

Each subcommand module registers its parser (``register(sub)``); library modules are imported
inside the handlers, so ``--help`` and argument errors are fast. Set ``KS_DEBUG=1`` to see
Python tracebacks.
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
from kernelshape.cli import commands, demo, plot, train, verify
from kernelshape.cli.arguments import Parser
from kernelshape.cli.output import UsageError, dump_json

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


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (no library imports)."""
    parser = Parser(prog="kernelshape", description=DESCRIPTION, epilog=MAIN_EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kernelshape {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in (commands, verify, plot, train, demo):
        module.register(sub)
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


BAD_INPUT = (UsageError, ValueError, TypeError, KeyError, json.JSONDecodeError, FileNotFoundError,
             IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def _main(argv: Sequence[str] | None, debug: bool) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "kernelshape" + (f" {argv[0]}" if argv and not argv[0].startswith("-") else "")
    try:
        args = parser.parse_args(argv)
        prog = f"kernelshape {args.command}"
        args.emit_json = None
        return _run(args.handler, args)
    except BAD_INPUT as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silence the flush at exit)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:  # noqa: BLE001 (the top-level handler)
        if debug:
            traceback.print_exc()
        print(f"{prog}: failed: {type(exc).__name__}: {_message(exc)}\n"
              "(set KS_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
