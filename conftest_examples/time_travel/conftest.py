"""Copy into your tests/: a ``travel`` fixture that moves time with freezegun or time-machine.

The emulator's TTLs (upload URLs: 1 hour, assets: 24 hours) follow ``time.time()``, so either
library moves them; nothing sleeps. Each test using ``travel`` runs once per library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import time_machine
from freezegun import freeze_time

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
Travel = Callable[[float], None]  # move the clock forward by this many seconds


@pytest.fixture(params=["freezegun", "time-machine"])
def travel(request: pytest.FixtureRequest) -> Iterator[Travel]:
    if request.param == "freezegun":
        with freeze_time(START) as frozen:
            yield lambda seconds: frozen.tick(seconds)
    else:
        with time_machine.travel(START, tick=False) as traveller:
            yield traveller.shift
