"""The ``odezoo`` command line: one program, one vocabulary of flags.

    odezoo families                     list every registered solver family
    odezoo tableau rk4_uv --u 0.3       print a family's Butcher tableau and its verified order
    odezoo train --config recipes/configs/mnist_rk2_fixed.yaml
    odezoo evaluate runs/mnist_rk2_fixed/best.pt --attacks fgsm,pgd
    odezoo sweep --config ... --grid seed=0,1,2
    odezoo reproduce table1 --scale small
    odezoo report
    odezoo demo

This package lives beside ``odezoo`` rather than inside it on purpose: ``import odezoo``
registers every family into torchdiffeq and so imports torch (seconds), and any
``odezoo.<submodule>`` import runs that first.  Parsing here needs only the standard library;
a command imports what it needs (``odezoo``, ``odezoo.experiments``) when it runs, so
``odezoo --help`` and every ``odezoo COMMAND --help`` answer at once.  ``python -m odezoo``
is the same program: Python imports the package ``odezoo`` first, and its ``__init__`` lets
``answer_before_import`` answer help, ``--version`` and usage errors before it imports torch.
"""
from __future__ import annotations

from ._app import COMMANDS, build_parser, main, parse

__all__ = ["COMMANDS", "build_parser", "main", "parse"]
