"""`odezoo reproduce` as a script (the same program, the same flags: `odezoo reproduce --help`).

    python recipes/reproduce.py --help

The work is done by odezoo.experiments.commands.reproduce; this file only hands it the command line.
"""
import sys

from odezoo_cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
