"""``python -m odezoo``: the same command line as ``odezoo``."""
import sys

from odezoo.cli import main

sys.exit(main())
