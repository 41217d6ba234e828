"""A small honest record shared by the pot tests (tiny MLP, two epochs), made once per session."""

import pytest
import torch

from fpcore.pot.task import load_digits_split
from fpcore.pot.train import RunConfig, train_recorded

SMALL = RunConfig(hidden=32, epochs=2, batch_size=8, every=4)
FAST = ("integrity", "data", "init", "replay")


@pytest.fixture(scope="session")
def digits():
    return load_digits_split()


@pytest.fixture(scope="session")
def honest(tmp_path_factory, digits):
    """(record folder, final model, train, test) of an honest recorded run."""
    torch.set_num_threads(1)
    train, test = digits
    path, model, _ = train_recorded(tmp_path_factory.mktemp("pot") / "honest", SMALL, train, 0)
    return path, model, train, test
