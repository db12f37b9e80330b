import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def solver_table():
    """Snapshot torchdiffeq's method table and restore it afterwards."""
    from odezoo import _torchdiffeq_bridge as bridge

    saved = dict(bridge.SOLVERS)
    yield bridge.SOLVERS
    bridge.SOLVERS.clear()
    bridge.SOLVERS.update(saved)
