"""The emulator's one clock.

Every TTL rule reads :meth:`Clock.now`, which reads the time at call time and adds an offset.
freezegun and time-machine both patch ``time.time``, so they move the emulator's view of time;
:meth:`Clock.advance` and :meth:`Clock.set` move it without either library, which is what the
server's admin endpoint uses. ``time.monotonic`` is never used for TTLs.

freezegun answers real time to code called near ``threading`` (its ignore list, checked on the
stack), which the emulator's worker and sweeper threads are: while freezegun is active, the
clock reads freezegun's frozen time itself, so every thread sees the same time.
"""

from __future__ import annotations

import calendar
import math
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime


def _wall() -> float:
    freezegun = sys.modules.get("freezegun.api")
    factories = getattr(freezegun, "freeze_factories", None)
    if factories:  # freezegun is active: its time, whatever the caller's stack
        frozen = factories[-1]()
        return float(calendar.timegm(frozen.timetuple()) + frozen.microsecond / 1_000_000)
    return time.time()


#: The clock stays within the years datetime can print (0001-01-02 .. 9999-12-30 UTC).
MIN_TIME = -62135510400.0
MAX_TIME = 253402128000.0


class Clock:
    """Wall-clock time plus a movable offset, in seconds since the epoch (UTC)."""

    __slots__ = ("_lock", "_offset", "on_change")

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = float(offset)
        self._lock = threading.Lock()
        #: Called with the new offset whenever it changes (persistence uses it).
        self.on_change: Callable[[float], None] | None = None

    @property
    def offset(self) -> float:
        """Seconds this clock runs ahead of the process's wall clock."""
        return self._offset

    def now(self) -> float:
        """The emulator's current time as a POSIX timestamp."""
        return _wall() + self._offset

    def as_datetime(self) -> datetime:
        """The emulator's current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, with a negative value); returns the new time.

        The clock stops at the ends of the years 0001..9999 rather than overflowing."""
        seconds = float(seconds)
        if not math.isfinite(seconds):
            raise ValueError(f"cannot advance the clock by {seconds}")
        with self._lock:
            now = _wall()
            target = min(max(now + self._offset + seconds, MIN_TIME), MAX_TIME)
            self._move(target - now)
        return self.now()

    def set(self, when: datetime | float) -> float:
        """Jump to an absolute time (aware datetime, naive UTC datetime or POSIX timestamp)."""
        if isinstance(when, datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            target = when.timestamp()
        else:
            target = float(when)
        if not math.isfinite(target):
            raise ValueError(f"cannot set the clock to {target}")
        target = min(max(target, MIN_TIME), MAX_TIME)
        with self._lock:
            self._move(target - _wall())
        return self.now()

    def reset(self) -> None:
        """Back to the process's wall clock."""
        with self._lock:
            self._move(0.0)

    def _move(self, offset: float) -> None:
        """The new offset, told to ``on_change`` (which saves it) first: when that fails, the
        clock stays where it was, as a restart would find it."""
        if self.on_change is not None:
            self.on_change(offset)
        self._offset = offset


def isoformat(ts: float, *, millis: bool = True) -> str:
    """RFC 3339 / ISO 8601 UTC with milliseconds (or whole seconds) and a ``Z``, as NVCF and
    S3 print times."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    # %Y is not zero-padded below the year 1000 on glibc: the year is padded here.
    fraction = f".{dt.microsecond // 1000:03d}" if millis else ""
    return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}{fraction}Z"
