"""Persistent metadata: SQLite (WAL, one transaction per change) for ``--state-dir``.

Domain services hand records to a :class:`StateStore` as plain JSON-able dicts, by kind
("asset", "function", ...) and id; at start-up they read them back. The default
:class:`NullStateStore` keeps nothing, which is what an emulator without a state dir wants.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)  # not on Windows (descriptors are not inherited there)


class StateStore(Protocol):
    def put(self, kind: str, record_id: str, data: dict[str, Any]) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """The puts and deletes in the block happen together, or (on an error) not at all."""
        ...

    def delete(self, kind: str, record_id: str) -> None: ...

    def load(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


class NullStateStore:
    """Keeps nothing: state lives in memory only."""

    def put(self, kind: str, record_id: str, data: dict[str, Any]) -> None:
        pass

    def transaction(self) -> AbstractContextManager[None]:
        return nullcontext()

    def delete(self, kind: str, record_id: str) -> None:
        pass

    def load(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(())

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass


class SqliteStateStore:
    """Records in one SQLite table; every change is its own committed transaction."""

    #: The layout this code writes (``PRAGMA user_version``); a newer one is refused.
    SCHEMA_VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(self.path)
        self._lock = threading.RLock()  # a transaction's thread puts while holding it
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._open()
        except sqlite3.Error as exc:
            self._db.close()
            raise RuntimeError(
                f"cannot use the state database {self.path}: {exc} (it must be an "
                "nvcf-emulator state database the emulator can write; move it away to start "
                "afresh)"
            ) from exc
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > self.SCHEMA_VERSION:
            raise RuntimeError(
                f"the state database {self.path} was written by a newer nvcf-emulator "
                f"(schema {version}; this one reads up to {self.SCHEMA_VERSION})"
            )
        # Every page read once (a damaged one fails now, naming the file, rather than the
        # first load or a later write with sqlite's bare "database disk image is malformed").
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            found = " ".join(" ".join(problems).replace("*** in database main ***", "").split())
            raise sqlite3.DatabaseError(f"database disk image is malformed ({found})")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # A write, so that a read-only file or dir is found now, not on the first change.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records ("
            " kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,"
            " PRIMARY KEY (kind, id))"
        )
        self._db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

    def put(self, kind: str, record_id: str, data: dict[str, Any]) -> None:
        text = json.dumps(data, separators=(",", ":"))
        with self._lock:
            self._db.execute(
                "INSERT INTO records (kind, id, data) VALUES (?, ?, ?)"
                " ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
                (kind, record_id, text),
            )

    def delete(self, kind: str, record_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def load(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, data FROM records WHERE kind = ? ORDER BY rowid", (kind,)
                ).fetchall()
            except sqlite3.Error as exc:
                raise RuntimeError(f"cannot read the state database {self.path}: {exc}") from exc
        for record_id, text in rows:
            yield record_id, json.loads(text)

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM records")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _owner_only(path: Path) -> None:
    """Make ``path`` a file only its owner may read (SQLite gives its -wal and -shm files the
    same mode): it holds the URL-signing secret and functions' secrets. A file another user
    owns (or a read-only one) is left as it is, to be refused when opened."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600))
    except FileExistsError:  # made by an older version, maybe readable by all
        for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
            with contextlib.suppress(OSError):
                mode = (path.parent / name).stat().st_mode
                if mode & 0o077 and mode & 0o200:
                    (path.parent / name).chmod(mode & 0o700)
