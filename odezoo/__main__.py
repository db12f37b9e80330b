"""``python -m odezoo``: the same command line as ``odezoo`` (it pays for ``import odezoo`` first;
the ``odezoo`` script does not)."""
import sys

from odezoo_cli import main

sys.exit(main())
