"""`odezoo evaluate` as a script (the same program, the same flags: `odezoo evaluate --help`).

    python recipes/evaluate.py --help

The work is done by odezoo.experiments.commands.evaluate; this file only hands it the command line.
"""
import sys

from odezoo_cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
