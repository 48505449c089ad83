"""The ``kernelshape`` command line (console script ``kernelshape = kernelshape.cli:main``).

Subcommands: activations, maps, shape, export, verify, plot, train, demo (see
``kernelshape --help``). Exit codes: 0 success, 2 bad input, 1 any other failure.
"""

from kernelshape.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
