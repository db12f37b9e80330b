"""`odezoo demo` as a script (the same program, the same flags: `odezoo demo --help`).

    python recipes/demo.py --help

The work is done by odezoo.experiments.commands.demo; this file only hands it the command line.
"""
import sys

from odezoo_cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
