"""Function rate limits, as NVCF checks them on each invocation (NVIDIA/nvcf:
``src/invocation-plane-services/ratelimiter`` — README.md, rate_limiter.go, olric_store.go — and
the invocation service's ``rate_limit/mod.rs``; the body's rules are RateLimitDto.java's).

A version's ``rateLimit`` (``{"rateLimit": "5-S,300-H", "exemptedNcaIds": [...],
"perNcaIdRate": {nca: rate}, "perUserRate": rate, "syncCheck": bool}``) gives *tiers* of
*rates*. Each rate (``N-S``, ``-M``, ``-H``, ``-D``) is a fixed-window counter that starts at
the first call it counts and lasts its period; a call over ``N`` in the window is limited.

* The NCA tier: ``perNcaIdRate[caller's NCA id]`` when there is one, else the global
  ``rateLimit`` unless the caller's NCA id is in ``exemptedNcaIds``. Its counters are per
  calling account (``ncaId:versionId:rate``).
* The user tier, on top (both must allow): ``perUserRate``, counted per caller identity. The
  emulator's caller identity is the API key.

Every rate of a tier counts every call the tier checks, allowed or not; the per-user tier is
checked first, and a call it refuses is not counted on the account's rate.

``syncCheck: false`` (the default) lets a call through at once and checks in the background: the
call that goes over the limit still runs, and marks the caller as limited for 60 s, during which
each call is checked first (and refused while over). ``syncCheck: true`` checks every call first.
The emulator does the "background" check at once, so which call is the first refused is exact.

Windows follow the emulator's clock: a test moves it (``clock.advance``, freezegun,
time-machine) to open the next window. Moved back before a window's start (or a refusal's),
the window (or its memory) is gone: the next call opens a new one.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .errors import BadRequest, NvcfError

__all__ = [
    "RATE_PATTERN",
    "RATE_RE",
    "Rate",
    "RateLimiter",
    "TooManyRequests",
    "parse_rates",
    "validate",
]

#: RateLimitDto.java's ``RATE_REGEX``, as NVCF quotes it: comma-separated ``N-U``, no unit twice.
JAVA_RATE_REGEX = r"^(?!.*-([SMHD]).*-\1)[1-9]\d*-[SMHD](,\s*[1-9]\d*-[SMHD])*$"
_JAVA_DOT = r"[^\n\r\x85\u2028\u2029]"  # what "." matches in Java
#: The same regex as Java reads it, for Python (and JSON Schema, which searches): Java's
#: ``\d``, ``\s`` and ``.`` spelled out, and no match before a final newline.
RATE_PATTERN = (
    rf"^(?!{_JAVA_DOT}*-([SMHD]){_JAVA_DOT}*-\1)[1-9][0-9]*-[SMHD]"
    r"(,[ \t\n\x0b\f\r]*[1-9][0-9]*-[SMHD])*(?!\n)$"
)
RATE_RE = re.compile(RATE_PATTERN)
PERIODS = {"S": 1.0, "M": 60.0, "H": 3600.0, "D": 86400.0}
MAX_EXEMPTED = 32
MAX_PER_NCA = 32
#: How long the invocation service remembers a limited caller (its moka cache's time to live).
LIMITED_MEMORY = 60.0
#: RateLimitDto.ValidRateLimitValues' message.
RULES = (
    "Either global rateLimit, perNcaIdRate, or perUserRate must be non-null, per-ncaid rates "
    "ncaids cannot be in exemptedNcaIds, and exemptedNcaIds can only exist when global "
    "rateLimit is provided"
)


def _check_rate(value: object, what: str) -> None:
    if not isinstance(value, str) or not RATE_RE.search(value):
        raise BadRequest(f"{what}: Must conform to regex {JAVA_RATE_REGEX}, got {value!r}")


def validate(policy: object) -> None:
    """RateLimitDto's checks of a create or update body's ``rateLimit`` (a 400 each)."""
    if not isinstance(policy, dict):
        raise BadRequest("rateLimit must be an object")
    rate, exempted = policy.get("rateLimit"), policy.get("exemptedNcaIds")
    per_nca, per_user = policy.get("perNcaIdRate"), policy.get("perUserRate")
    if rate is not None:
        _check_rate(rate, "Invalid rate")
    if exempted is not None:
        if not isinstance(exempted, list) or not all(isinstance(n, str) for n in exempted):
            raise BadRequest("rateLimit.exemptedNcaIds must be a list of NCA ids")
        # RateLimitDto's Set<String>: repeats are one account before @Size(max = 32) counts.
        if len(set(exempted)) > MAX_EXEMPTED:
            raise BadRequest(f"Maximum number of exempted nca id of {MAX_EXEMPTED} is exceeded")
    if per_nca is not None:
        if not isinstance(per_nca, dict):
            raise BadRequest("rateLimit.perNcaIdRate must be an object of NCA id to rate")
        if len(per_nca) > MAX_PER_NCA:
            raise BadRequest(f"Maximum number of per nca id config of {MAX_PER_NCA} is exceeded")
        for value in per_nca.values():
            _check_rate(value, "Invalid rate limit")
    if per_user is not None:
        _check_rate(per_user, "Invalid per-user rate")
    sync = policy.get("syncCheck")
    if sync is not None and not isinstance(sync, bool):
        raise BadRequest("rateLimit.syncCheck must be a boolean")
    if (
        (rate is None and per_nca is None and per_user is None)
        or (exempted and rate is None)
        or (per_nca and exempted and set(per_nca) & set(exempted))
    ):
        raise BadRequest(RULES)


@dataclass(frozen=True)
class Rate:
    limit: int
    period: float
    text: str


@functools.lru_cache(maxsize=1024)
def parse_rates(text: str) -> tuple[Rate, ...]:
    """rate_limiter.go's ``parseRates``: each ``N-U`` once; of two with the same period, the
    stricter (the first on a tie). Unreadable entries are skipped. Cached: every call of a
    limited function reads its policy's few rate texts (rate_limiter.go caches them too)."""
    candidates: list[Rate] = []
    for part in text.split(","):
        part = part.strip()
        if not part or any(c.text == part for c in candidates):
            continue
        count, _, unit = part.partition("-")
        if not (count.isascii() and count.isdigit()) or unit not in PERIODS:
            continue
        candidates.append(Rate(int(count), PERIODS[unit], part))
    kept: dict[float, Rate] = {}
    for rate in candidates:
        if rate.period not in kept or rate.limit < kept[rate.period].limit:
            kept[rate.period] = rate
    return tuple(r for r in candidates if kept[r.period] is r)


class TooManyRequests(NvcfError):
    def __init__(self, detail: str) -> None:
        super().__init__(429, detail)


class RateLimiter:
    """The counters of every function version's rate limits. Thread-safe."""

    #: Counters kept before expired ones are dropped (each call's keys are a few).
    PRUNE_AT = 4096

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        #: key -> (count, window start, window end)
        self._counters: dict[str, tuple[int, float, float]] = {}
        self._limited: dict[tuple[str, str, str], float] = {}  # caller -> last refused at

    def admit(
        self, policy: Mapping[str, Any] | None, version_id: str, nca_id: str, subject: str
    ) -> None:
        """Count a call of ``version_id`` by ``nca_id`` (``subject``: the caller's identity);
        ``TooManyRequests`` when it is refused."""
        if not policy:
            return
        now = self.clock.now()
        caller = (subject, nca_id, version_id)
        with self._lock:
            if len(self._counters) >= self.PRUNE_AT:  # what no call can meet again
                self._counters = {k: v for k, v in self._counters.items() if v[1] <= now < v[2]}
                self._limited = {
                    k: t for k, t in self._limited.items() if t <= now < t + LIMITED_MEMORY
                }
            since = self._limited.get(caller)
            # A memory made "after" now (the clock was moved back) is none.
            remembered = since is not None and since <= now < since + LIMITED_MEMORY
            over = self._count(policy, version_id, nca_id, subject, now)
            if over is not None:
                self._limited[caller] = now
            refused = over is not None and (remembered or bool(policy.get("syncCheck")))
        if refused:
            assert over is not None
            raise TooManyRequests(over)

    def _count(
        self,
        policy: Mapping[str, Any],
        version_id: str,
        nca_id: str,
        subject: str,
        now: float,
    ) -> str | None:
        """Count the call on the counters that apply; what is exceeded, or ``None``. Every rate
        of a tier counts; a tier that refuses ends the check (rate_limiter.go: "a blocked
        request doesn't consume lower tiers' shared budget"), so a key over its per-user rate
        does not use up its account's."""
        tiers: list[tuple[str, str, str]] = []  # (key prefix, rates, what it is)
        per_user = policy.get("perUserRate")
        if isinstance(per_user, str) and subject:
            tiers.append((f"user:{subject}:{nca_id}:{version_id}:", per_user, "per-user rate"))
        per_nca = policy.get("perNcaIdRate")
        mine = per_nca.get(nca_id) if isinstance(per_nca, dict) else None
        global_rate = policy.get("rateLimit")
        if isinstance(mine, str):
            tiers.append((f"{nca_id}:{version_id}:", mine, f"rate of NCA id '{nca_id}'"))
        elif isinstance(global_rate, str) and nca_id not in (policy.get("exemptedNcaIds") or ()):
            tiers.append((f"{nca_id}:{version_id}:", global_rate, "rate limit"))
        exceeded = None
        for prefix, rates, what in tiers:
            if exceeded is not None:
                break
            for rate in parse_rates(rates):
                key = prefix + rate.text
                count, starts, ends = self._counters.get(key, (0, now, now))
                # A new window starts with this call: the last one is over, or starts after
                # now (a test moved the clock back; it would hold until the old time again).
                if not starts <= now < ends:
                    count, starts, ends = 0, now, now + rate.period
                count += 1
                self._counters[key] = (count, starts, ends)
                if count > rate.limit and exceeded is None:
                    exceeded = (
                        f"Function version '{version_id}': {what} {rate.text} exceeded by NCA "
                        f"id '{nca_id}' ({count} calls in this window; the next opens in "
                        f"{ends - now:.3g} s)"
                    )
        return exceeded

    def clear(self) -> None:
        with self._lock:
            self._counters.clear()
            self._limited.clear()
