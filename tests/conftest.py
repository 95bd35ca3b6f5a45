"""Shared test fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny-model tests on one torch thread.

    On 2 shared, oversubscribed cores, OpenMP spin-waiting makes tiny-model ops ~30x slower with 2
    threads than with 1.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
