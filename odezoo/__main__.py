"""``python -m odezoo``: the same command line as ``odezoo``.  Python imports the package
``odezoo`` before this file; its ``__init__`` hands a command line that parsing alone answers
(``--help``, ``--version``, a usage error) to ``odezoo_cli`` before torch is imported, so those
answer as fast as the ``odezoo`` script."""
import sys

from odezoo_cli import main

sys.exit(main())
