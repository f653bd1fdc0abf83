"""The emulator's one clock.

Every TTL rule reads :meth:`Clock.now`, which reads the time at call time and adds an offset.
freezegun and time-machine both patch ``time.time``, so they move the emulator's view of time;
:meth:`Clock.advance` and :meth:`Clock.set` move it without either library, which is what the
server's admin endpoint uses. ``time.monotonic`` is never used for TTLs; waits and deadlines
use :func:`monotonic`, which no time-freezing library moves.

freezegun answers real time to code called near ``threading`` (its ignore list, checked on the
stack), which the emulator's worker and sweeper threads are: while freezegun is active, the
clock reads freezegun's frozen time itself, so every thread sees the same time.
"""

from __future__ import annotations

import calendar
import math
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any


def _wall() -> float:
    freezegun = sys.modules.get("freezegun.api")
    factories = getattr(freezegun, "freeze_factories", None)
    if factories:  # freezegun is active: its time, whatever the caller's stack
        factory: Any = factories[-1]
        step_tick: Any = getattr(freezegun, "StepTickTimeFactory", None)
        if step_tick is not None and isinstance(factory, step_tick):
            # auto_tick_seconds: each call moves freezegun's time on. The emulator reads its
            # clock from its own threads too (the server's sweeper, each second), which would
            # run the test's time on by themselves: it reads the time without a tick.
            frozen = factory.time_to_freeze
        else:
            frozen = factory()
        return float(calendar.timegm(frozen.timetuple()) + frozen.microsecond / 1_000_000)
    return time.time()


def _unfrozen(name: str) -> float:
    """``time.<name>()`` as the process has it, whatever freezegun does: freezegun swaps the
    ``time`` function (and every module attribute that holds it) while active, and keeps the
    real one as ``freezegun.api.real_<name>``; time-machine leaves these alone. Looked up at
    call time, so that importing this module under freezegun changes nothing."""
    freezegun = sys.modules.get("freezegun.api")
    real = getattr(freezegun, f"real_{name}", None) or getattr(time, name)
    return float(real())


def monotonic() -> float:
    """Seconds from the process's monotonic clock, whatever freezegun does: for waits and
    deadlines (never TTLs), so that a test that freezes time cannot stretch or hang them."""
    return _unfrozen("monotonic")


def perf_counter() -> float:
    """``time.perf_counter()``, whatever freezegun does: for durations and read timeouts, so
    that measuring never ticks an auto-ticking freezegun on."""
    return _unfrozen("perf_counter")


def as_seconds(value: object, what: str) -> float:
    """``value`` as a float (numbers, numpy scalars, numeric text), else the error ``float``
    raises (TypeError, or ValueError for text) saying ``what`` the call takes."""
    if isinstance(value, bool):
        raise TypeError(f"{what}, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what}, got {type(value).__name__} {value!r}") from None


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

    def advance(self, seconds: float | timedelta) -> float:
        """Move the clock forward (or back, with a negative value) by a number of seconds or a
        ``timedelta``; returns the new time.

        The clock stops at the ends of the years 0001..9999 rather than overflowing."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        seconds = as_seconds(seconds, "Clock.advance takes a number of seconds or a timedelta")
        if not math.isfinite(seconds):
            raise ValueError(f"cannot advance the clock by {seconds}")
        with self._lock:
            now = _wall()
            target = min(max(now + self._offset + seconds, MIN_TIME), MAX_TIME)
            self._move(target - now)
        return self.now()

    def set(self, when: datetime | str | float) -> float:
        """Jump to an absolute time: an aware datetime, a naive UTC datetime, an RFC 3339 string
        (``"2026-01-01T00:00:00Z"``, as the admin API and the remote clock take) or a POSIX
        timestamp; returns the new time."""
        if isinstance(when, datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            target = when.timestamp()
        elif isinstance(when, str):
            try:
                target = parse_rfc3339(when).timestamp()
            except ValueError:
                try:
                    target = float(when)  # a timestamp as text
                except ValueError:
                    raise ValueError(
                        f"Clock.set: {when!r} is not an RFC 3339 date-time with its time zone, "
                        "like 2026-01-01T00:00:00Z or 2026-01-01T02:00:00+02:00"
                    ) from None
        else:
            target = as_seconds(
                when,
                "Clock.set takes a datetime, an RFC 3339 string like 2026-01-01T00:00:00Z or a "
                "POSIX timestamp",
            )
        if not math.isfinite(target):
            raise ValueError(f"cannot set the clock to {target}")
        target = min(max(target, MIN_TIME), MAX_TIME)
        with self._lock:
            self._move(target - _wall())
        return self.now()

    def __repr__(self) -> str:
        now = self.now()  # read at call time, as every other reading
        return f"<Clock {isoformat(now)} (offset {self._offset:+.3f} s)>"

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


_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$"
)


def parse_rfc3339(text: str, *, strict: bool = False) -> datetime:
    """An RFC 3339 date-time with its offset (``2026-01-01T00:00:00Z``, ``...+02:00``) as an
    aware datetime; a leap second reads as :59. ValueError says what is expected. ``strict``:
    the OpenAPI ``date-time`` only (``T`` between date and time, no surrounding blanks)."""
    match = _RFC3339.match(text if strict else text.strip())
    if strict and match is not None and text[10] not in "Tt":
        match = None
    if match is None:
        raise ValueError(
            "expected an RFC 3339 date-time with its time zone, like 2026-01-01T00:00:00Z or "
            f"2026-01-01T02:00:00+02:00, got {text!r}"
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        tz = (
            UTC
            if zone in "Zz"
            else timezone(
                (1 if zone[0] == "+" else -1)
                * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            )
        )
        when = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),
            int(float(fraction or 0) * 1_000_000),
            tzinfo=tz,
        )
        when.timestamp()  # in range for the clock
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not a valid date-time") from None
    return when
