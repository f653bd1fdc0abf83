"""Shared fixtures: one behaviour suite, run in-process and against a real socket server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator

pytest_plugins = ["pytester"]


@dataclass
class Api:
    """How a test reaches an emulator: its base URL and the emulator behind it."""

    mode: str
    base_url: str
    emulator: Emulator

    @property
    def headers(self) -> dict[str, str]:
        return self.emulator.headers

    def create_asset(
        self,
        content_type: str = "image/png",
        description: str = "red-cat-photo",
        *,
        key: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else self.headers
        r = requests.post(
            f"{self.base_url}/v2/nvcf/assets",
            headers=headers,
            json={"contentType": content_type, "description": description},
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def upload(self, asset: dict[str, Any], data: Any = b"hello") -> requests.Response:
        return requests.put(
            asset["uploadUrl"],
            data=data,
            headers={
                "Content-Type": asset["contentType"],
                "x-amz-meta-nvcf-asset-description": asset["description"],
            },
        )

    def new_asset(self, data: bytes = b"hello", **kwargs: Any) -> dict[str, Any]:
        asset = self.create_asset(**kwargs)
        r = self.upload(asset, data)
        assert r.status_code == 200, r.text
        return asset


@pytest.fixture(params=["inprocess", "server"])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """The same emulator behaviour, reached in-process and over a socket."""
    if request.param == "inprocess":
        emu = request.getfixturevalue("nvcf")
        yield Api("inprocess", emu.base_url, emu)
    else:
        server = request.getfixturevalue("nvcf_server")
        yield Api("server", server.url, server.emulator)
