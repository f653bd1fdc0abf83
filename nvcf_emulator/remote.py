"""A small client for a running ``nvcf-emulate``'s admin API (time travel, reset, state).

>>> emu = RemoteEmulator("http://127.0.0.1:8000")
>>> emu.clock.advance(24 * 3600)       # the server's clock jumps a day
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests


class RemoteClock:
    """The server's clock, moved through ``/_emulator/clock``."""

    def __init__(self, remote: RemoteEmulator) -> None:
        self._remote = remote

    def now(self) -> float:
        return float(self._remote._call("GET", "/_emulator/clock")["epoch"])

    def advance(self, seconds: float) -> float:
        return float(self._remote._call("POST", "/_emulator/clock", {"advance": seconds})["epoch"])

    def set(self, when: datetime | str) -> float:
        if isinstance(when, datetime) and when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # naive means UTC, as Clock.set reads it
        text = when.isoformat() if isinstance(when, datetime) else when
        return float(self._remote._call("POST", "/_emulator/clock", {"set": text})["epoch"])


class RemoteEmulator:
    """Drive the admin API of an emulator server reachable at ``url``."""

    def __init__(
        self, url: str, *, admin_token: str | None = None, session: requests.Session | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._session = session or requests.Session()
        if admin_token:
            self._session.headers["Authorization"] = f"Bearer {admin_token}"
        self.clock = RemoteClock(self)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self._session.request(method, f"{self.url}{path}", json=body, timeout=30)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/health")

    def reset(self) -> None:
        self._call("POST", "/_emulator/reset")

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/state")
