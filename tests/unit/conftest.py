"""Unit-test fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids OpenMP spin-wait stalls on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
