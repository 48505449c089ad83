"""``python -m kernelshape.verify CHECK --net SPEC [options] [--json]``.

CHECK is theorem13, theorem27 or approximation (the same as ``kernelshape verify CHECK``).
"""

from __future__ import annotations

import argparse
import sys

from kernelshape.verify.cli import THEOREMS, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernelshape.verify", add_help=False)
    parser.add_argument("theorem", choices=THEOREMS)
    parser.add_argument("--net", metavar="SPEC")
    parser.add_argument("--json", action="store_true")
    args, extra = parser.parse_known_args(argv)
    args.extra, args.emit_json = extra, None
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
