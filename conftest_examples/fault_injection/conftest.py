"""Copy into your repo's tests/: the nvcf fixture comes from the installed plugin."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def ngc_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGC_API_KEY", "nvapi-test-key")
