import os
import sys
from pathlib import Path

import pytest

# One torch thread, in this process and in every process a test starts (OMP_NUM_THREADS is read
# when torch starts): the tests' models are tiny, and on a 2-core machine other jobs keep busy two
# threads per operation mostly wait for each other.  At a load of 5, test_odeblock's five
# training runs took 62 s with two threads and 3.5 s with one; the dopri5 solver grid of
# test_state_and_params 33 s and 8.5 s.  Set OMP_NUM_THREADS to choose otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def solver_table():
    """Snapshot torchdiffeq's method table and restore it afterwards."""
    from odezoo import _torchdiffeq_bridge as bridge

    saved = dict(bridge.SOLVERS)
    yield bridge.SOLVERS
    bridge.SOLVERS.clear()
    bridge.SOLVERS.update(saved)
