"""`odezoo train` as a script (the same program, the same flags: `odezoo train --help`).

    python recipes/train.py --help

The work is done by odezoo.experiments.commands.train; this file only hands it the command line.
"""
import sys

from odezoo_cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
