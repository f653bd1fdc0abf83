"""A small client for a running ``nvcf-emulate``'s admin API (time travel, reset, state).

>>> emu = RemoteEmulator("http://127.0.0.1:8000")
>>> emu.clock.advance(24 * 3600)       # the server's clock jumps a day

A refused call raises ``requests.HTTPError`` whose message has the server's reason (its problem
JSON's ``detail``); an answer that is not the admin API's JSON (the wrong port, a proxy's page)
raises one too, saying so; no server at the URL is a ``requests.ConnectionError`` naming it.
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
    """Drive the admin API of an emulator server reachable at ``url``; each call waits at
    most ``timeout`` seconds for the server."""

    def __init__(
        self,
        url: str,
        *,
        admin_token: str | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()
        if admin_token:
            self._session.headers["Authorization"] = f"Bearer {admin_token}"
        self.clock = RemoteClock(self)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        what = f"{method} {path}"
        try:
            r = self._session.request(method, f"{self.url}{path}", json=body, timeout=self.timeout)
        except requests.ConnectionError as exc:
            raise type(exc)(  # ConnectTimeout stays a Timeout too
                f"{what}: no nvcf-emulate answers at {self.url} (is it running, on this "
                f"port?): {exc}",
                request=exc.request,
                response=exc.response,
            ) from exc
        try:
            data = r.json()
        except ValueError:  # requests' JSONDecodeError too
            data = None
        if not r.ok:
            detail = data.get("detail") if isinstance(data, dict) else None
            reason = detail if isinstance(detail, str) else r.text[:200]
            raise requests.HTTPError(
                f"{what} on {self.url}: {r.status_code} {r.reason}: {reason}", response=r
            )
        if not isinstance(data, dict):
            kind = r.headers.get("Content-Type") or "no content type"
            raise requests.HTTPError(
                f"{what} on {self.url}: the answer ({r.status_code}, {kind}) is not the "
                f"nvcf-emulate admin API's JSON: {r.text[:200]!r}",
                response=r,
            )
        return data

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/health")

    def reset(self) -> None:
        self._call("POST", "/_emulator/reset")

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/state")
