"""``python -m kernelshape``: the command-line interface (same as the ``kernelshape`` script)."""

import sys

from kernelshape.cli import main

sys.exit(main())
