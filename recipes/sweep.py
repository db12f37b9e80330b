"""`odezoo sweep` as a script (the same program, the same flags: `odezoo sweep --help`).

    python recipes/sweep.py --help

The work is done by odezoo.experiments.commands.sweep; this file only hands it the command line.
"""
import sys

from odezoo_cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
