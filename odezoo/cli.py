"""``odezoo`` command line (kept for ``from odezoo.cli import main``): the program lives in
`odezoo_cli`, which parses without importing torch."""
from __future__ import annotations

import sys

from odezoo_cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
