"""Fault injection: make chosen operations fail, slow down or drop, so users can test their
retry and polling logic (``emulator.faults.add(...)`` and ``POST /_emulator/faults``)."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

#: The operations a fault can target (the HTTP layer's ``operation_of`` recognises them):
#: the asset calls, a pre-signed upload (``PUT``), an invocation, a status poll, and the
#: download of a large result (the ``Location`` of a 302).
OPERATIONS = ("create", "upload", "list", "get", "delete", "invoke", "status", "download")


@dataclass
class Fault:
    """One rule. It fires ``times`` times (``None``: forever), each time with ``probability``.

    A ``status`` or a ``drop`` replaces the operation: nothing is created, stored, deleted,
    invoked or delivered. A ``latency`` alone delays the answer of an operation that runs, as a
    slow server does: a client that gives up first may find its asset created. ``retry_after``
    adds a ``Retry-After`` header (seconds) to a ``status`` answer; NVCF sends none.
    """

    operation: str
    status: int | None = None
    latency: float = 0.0
    drop: bool = False
    times: int | None = 1
    probability: float = 1.0
    seed: int | None = None
    message: str | None = None
    retry_after: int | None = None
    id: int = 0
    fired: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(
                f"operation must be one of {', '.join(OPERATIONS)}, got {self.operation!r}"
            )
        self._check_types()
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"status must be a 4xx or 5xx code, got {self.status}")
        if self.status is None and not self.drop and not self.latency:
            raise ValueError("a fault needs a status, a latency or drop=true")
        if self.drop and self.status is not None:
            raise ValueError("a dropped connection has no status: give one or the other")
        if self.retry_after is not None and self.status is None:
            raise ValueError("retry_after needs a status: it is a header of that answer")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must be 0 or more seconds, got {self.retry_after}")
        if not 0 <= self.latency <= 600:
            raise ValueError("latency must be between 0 and 600 seconds")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or null for always)")
        if not 0 < self.probability <= 1:
            raise ValueError("probability must be in (0, 1]")
        self._rng = random.Random(self.seed)

    def _check_types(self) -> None:
        """Each setting of the right type, so that a ``"503"`` is named, not a bare TypeError
        from a comparison."""
        if self.status is not None and not _is_int(self.status):
            raise ValueError(
                f"status must be an HTTP status code as an int from 400 to 599 (e.g. "
                f"status=503), got {self.status!r}"
            )
        if not _is_number(self.latency):
            raise ValueError(f"latency must be a number of seconds, got {self.latency!r}")
        if not isinstance(self.drop, bool):
            raise ValueError(f"drop must be True or False, got {self.drop!r}")
        if self.times is not None and not _is_int(self.times):
            raise ValueError(f"times must be an int of at least 1 (or None), got {self.times!r}")
        if not _is_number(self.probability):
            raise ValueError(f"probability must be a number in (0, 1], got {self.probability!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be an int (or None), got {self.seed!r}")
        if self.message is not None and not isinstance(self.message, str):
            raise ValueError(f"message must be a string (or None), got {self.message!r}")
        if self.retry_after is not None and not _is_int(self.retry_after):
            raise ValueError(
                f"retry_after must be an int of seconds (or None), got {self.retry_after!r}"
            )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_rng")
        return data


class Faults:
    """The active fault rules of one emulator. Thread-safe."""

    def __init__(self) -> None:
        self._rules: list[Fault] = []
        self._lock = threading.Lock()
        self._next_id = 1

    def add(
        self,
        operation: str,
        *,
        status: int | None = None,
        latency: float = 0.0,
        drop: bool = False,
        times: int | None = 1,
        probability: float = 1.0,
        seed: int | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """Add a rule; ``ValueError`` says what is wrong with it."""
        fault = Fault(
            operation, status, latency, drop, times, probability, seed, message, retry_after
        )
        with self._lock:
            fault.id = self._next_id
            self._next_id += 1
            self._rules.append(fault)
        return fault

    def take(self, operation: str) -> Fault | None:
        """The rule that fires for this call of ``operation``, if any (spent rules go away)."""
        with self._lock:
            for fault in self._rules:
                if fault.operation != operation:
                    continue
                if fault.probability < 1 and fault._rng.random() >= fault.probability:
                    continue
                fault.fired += 1
                if fault.times is not None and fault.fired >= fault.times:
                    self._rules.remove(fault)
                return fault
        return None

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._rules))

    def __len__(self) -> int:
        return len(self._rules)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
