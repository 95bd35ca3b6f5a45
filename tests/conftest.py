"""Shared test fixtures."""
from __future__ import annotations

import pytest

from reliable_lalm import paths


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


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """No real OpenAI key, endpoint or proxy leaks into a test, and the default cache is private."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "default-cache")
