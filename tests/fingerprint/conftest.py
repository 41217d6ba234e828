"""One torch thread for these tests: tiny models gain nothing from more, and on a shared 2-core
machine extra threads cost 10-30x in time."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
