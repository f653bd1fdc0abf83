"""The call log: one entry per HTTP request the emulator answered (``GET /_emulator/requests``).

Entries hold what a test asserts on — method, path, status, account, request id, timing — and
never a body or a credential: ``Authorization`` is reduced to its scheme and a key prefix.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

MAX_CALLS = 10_000


@dataclass(frozen=True, slots=True)
class Call:
    time: float
    method: str
    path: str
    status: int
    duration_ms: float
    request_id: str | None
    authorization: str | None
    kind: str  # "control", "storage", "admin" or "grpc"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


#: Schemes shown as sent; the first word of any other value may be the key itself (a header
#: holding "<key> junk", or "Bearer\t<key> x"), so it is not shown.
_SCHEMES = frozenset({"bearer", "basic", "digest", "token", "apikey", "negotiate", "ntlm"})


def redact(authorization: str | None) -> str | None:
    """``Bearer nvapi-abc…`` → ``Bearer nvapi-…``: the scheme and whether the key looks like an
    API key, never the key (nor a first word that is not a known scheme)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if not token or scheme.lower() not in _SCHEMES:
        return "<redacted>"
    prefix = "nvapi-" if token.lstrip().startswith("nvapi-") else ""
    return f"{scheme} {prefix}…"


class CallLog:
    """The last :data:`MAX_CALLS` calls, oldest first. Thread-safe."""

    def __init__(self, maxlen: int = MAX_CALLS) -> None:
        self._calls: deque[Call] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def __iter__(self) -> Iterator[Call]:
        with self._lock:
            return iter(list(self._calls))

    def __len__(self) -> int:
        return len(self._calls)

    def __getitem__(self, index: int) -> Call:
        with self._lock:
            return self._calls[index]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
