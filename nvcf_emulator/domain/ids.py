"""Ids: random UUIDs by default, or a deterministic sequence after :meth:`Ids.seed`."""

from __future__ import annotations

import random
import threading
import uuid


class Ids:
    """Makes every id the emulator hands out (assets, functions, versions, requests).

    ``seed(n)`` makes the sequence repeatable, so a test (or ``POST /_emulator/seed``) can know
    its ids in advance; ``seed(None)`` returns to random ids.
    """

    def __init__(self) -> None:
        self._rng: random.Random | None = None
        self._lock = threading.Lock()

    def seed(self, seed: int | None) -> None:
        with self._lock:
            self._rng = None if seed is None else random.Random(seed)

    def new(self) -> str:
        """A version-4 UUID, as NVCF's ids are."""
        rng = self._rng
        if rng is None:
            return str(uuid.uuid4())
        with self._lock:
            bits = rng.getrandbits(128)
        return str(uuid.UUID(int=bits, version=4))
