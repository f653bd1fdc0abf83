"""Function secrets as NVCF's worker gives them to a container: one JSON file, ``secrets.json``,
mapping each secret's name to its value (NVIDIA's docs: ``/var/secrets/secrets.json``).

The emulator cannot mount a file at ``/var/secrets`` for a container running in its own
process, so each function version gets its file under the emulator's root, at
``<root>/secrets/<version id>/secrets.json`` (:meth:`Emulator.secrets_file
<nvcf_emulator.Emulator.secrets_file>` names it): point the container at it, as NVIDIA's
secrets sample reads ``SECRETS_PATH``. The file is rewritten whenever the version's secrets
change (created with them, ``PUT /v2/nvcf/secrets/...``), replaced whole so that a reader
sees the old values or the new ones, never half of each; it is removed with the version, and
every file goes when the emulator closes. A version without secrets has no file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SECRETS_FILE", "SecretFiles"]

SECRETS_FILE = "secrets.json"

log = logging.getLogger("nvcf_emulator.secrets")


class SecretFiles:
    """Each version's ``secrets.json`` under ``root``, kept as its secrets are. Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._written: dict[str, str] = {}  # version id -> the text its file holds

    def path(self, version_id: str) -> Path:
        return self.root / version_id / SECRETS_FILE

    def update(self, version_id: str, values: Mapping[str, Any] | None) -> None:
        """Make the version's file hold ``values`` (none, or empty: no file)."""
        text = json.dumps(dict(values), indent=2, default=str) + "\n" if values else None
        with self._lock:
            if self._written.get(version_id) == text:
                return
            if text is None:
                self._forget(version_id)
                return
            try:
                self._write(version_id, text)
            except OSError as exc:
                # A full disk: no stale values for the container to read either.
                self._forget(version_id)
                log.warning("could not write the secrets file of version %s: %s", version_id, exc)
                return
            self._written[version_id] = text

    def _forget(self, version_id: str) -> None:
        self._written.pop(version_id, None)
        shutil.rmtree(self.root / version_id, ignore_errors=True)

    def _write(self, version_id: str, text: str) -> None:
        directory = self.root / version_id
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = directory / f".{SECRETS_FILE}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(temp, directory / SECRETS_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def clear(self) -> None:
        """Remove every file (the emulator is closing)."""
        with self._lock:
            self._written.clear()
            shutil.rmtree(self.root, ignore_errors=True)
