"""Fixtures shared by the experiment-toolkit tests: the embedded digits and a tiny trained MLP."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

pytest.importorskip("odezoo.experiments", reason="needs the recipes extra")

from odezoo.experiments.data import load_embedded_mnist  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread (tests/conftest.py), again for each module: a command that chose its own
    (``odezoo demo`` sets the threads the load leaves idle) does not carry it into the next."""
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def refused_experiment(tmp_path):
    """``refused_experiment(text, expected)``: an experiment file holding ``text`` is refused by
    ``load_experiment`` with a ValueError that says ``expected`` and names the file."""
    def check(text: str, expected: str) -> None:
        from odezoo.experiments.commands import reproduce

        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ValueError) as error:
            reproduce.load_experiment("bad", tmp_path)
        assert expected in str(error.value) and "bad.yaml" in str(error.value)

    return check


@pytest.fixture(scope="session")
def digits():
    """1,000 training and 200 test digits: ``(x, y, x_test, y_test)``, pixels in [0, 1]."""
    splits = load_embedded_mnist(seed=0)
    x, y = splits.train.tensors
    xt, yt = splits.test.tensors
    return x[:1000], y[:1000], xt[:200], yt[:200]


@pytest.fixture(scope="session")
def trained(digits):
    """A 784-64-10 MLP trained for about a second (about 85% test accuracy), in eval mode."""
    x, y, _, _ = digits
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(15):
            for i in range(0, len(x), 100):
                loss = nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.eval()


@pytest.fixture
def model(trained):
    """A fresh copy of the trained MLP per test, so flag changes cannot leak between tests."""
    return copy.deepcopy(trained)


@pytest.fixture(scope="session")
def loader(digits):
    """The first 120 test digits in two batches of 60."""
    _, _, x, y = digits
    return [(x[i:i + 60], y[i:i + 60]) for i in range(0, 120, 60)]
