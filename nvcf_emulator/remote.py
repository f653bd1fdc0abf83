"""A small client for a running ``nvcf-emulate``'s admin API (time travel, reset, state).

>>> emu = RemoteEmulator("http://127.0.0.1:8000")
>>> emu.clock.advance(24 * 3600)       # the server's clock jumps a day

A refused call raises ``requests.HTTPError`` whose message has the server's reason (its problem
JSON's ``detail``); an answer that is not the admin API's JSON (the wrong port, a proxy's page)
raises one too, saying so; no server at the URL is a ``requests.ConnectionError`` naming it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from .domain.clock import MAX_TIME, MIN_TIME, as_seconds


class RemoteClock:
    """The server's clock, moved through ``/_emulator/clock``: the calls of
    :class:`~nvcf_emulator.Clock` (``now``, ``as_datetime``, ``offset``, ``advance``, ``set``,
    ``reset``), one request each, taking what they take, so that a test written against
    ``nvcf.clock`` runs against a server too. What ``Clock`` refuses is refused before anything
    is sent; a date-time string is sent as it is, for the server to check."""

    def __init__(self, remote: RemoteEmulator) -> None:
        self._remote = remote

    def _state(self) -> dict[str, Any]:
        return self._remote._call("GET", "/_emulator/clock")

    def _move(self, body: dict[str, Any]) -> float:
        return float(self._remote._call("POST", "/_emulator/clock", body)["epoch"])

    def now(self) -> float:
        """The server's current time as a POSIX timestamp."""
        return float(self._state()["epoch"])

    def as_datetime(self) -> datetime:
        """The server's current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), tz=UTC)

    @property
    def offset(self) -> float:
        """Seconds the server's clock runs ahead of its process's wall clock."""
        return float(self._state()["offsetSeconds"])

    def advance(self, seconds: float | timedelta) -> float:
        """Move the server's clock forward (or back) by seconds or a ``timedelta``; returns
        the new time."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        seconds = as_seconds(
            seconds, "RemoteClock.advance takes a number of seconds or a timedelta"
        )
        if not math.isfinite(seconds):
            raise ValueError(f"cannot advance the clock by {seconds}")
        return self._move({"advance": seconds})

    def set(self, when: datetime | str | float) -> float:
        """Jump to an absolute time: an aware datetime, a naive UTC datetime, an RFC 3339
        string or a POSIX timestamp; returns the new time."""
        if isinstance(when, datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)  # naive means UTC, as Clock.set reads it
            text = when.isoformat()
        elif isinstance(when, str):
            text = when
        else:
            target = as_seconds(
                when,
                "RemoteClock.set takes a datetime, an RFC 3339 string like "
                "2026-01-01T00:00:00Z or a POSIX timestamp",
            )
            if not math.isfinite(target):
                raise ValueError(f"cannot set the clock to {target}")
            target = min(max(target, MIN_TIME), MAX_TIME)
            text = datetime.fromtimestamp(target, tz=UTC).isoformat()
        return self._move({"set": text})

    def reset(self) -> float:
        """Back to the server process's wall clock (moved back by its offset: a move by another
        client between the two requests is kept); returns the new time."""
        return self._move({"advance": -self.offset})


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
