"""Shared by every test: tiny models run fastest on one torch thread, above all on a shared
2-core CI machine where intra-op threads only contend (restored after each module). The CPU
extraction precision is pinned to fp32 (the default would follow the machine's bf16 support),
so that every machine runs the same tests; test_extract_resume checks the choice itself."""

import os

import pytest
import torch

os.environ.setdefault("AVAFN_CPU_PRECISION", "fp32")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
