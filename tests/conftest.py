"""Shared by every test: tiny models run fastest on one torch thread, above all on a shared
2-core CI machine where intra-op threads only contend (restored after each module)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
