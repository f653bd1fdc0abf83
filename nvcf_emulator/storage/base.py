"""The storage interface: a key → bytes store with atomic, streamed writes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class BlobWriter(Protocol):
    """One upload in progress. Nothing is visible under the key until :meth:`commit`."""

    def write(self, data: ReadableBuffer) -> None:
        """Append ``data`` (any bytes-like object; it is not kept after the call returns)."""

    def fileno(self) -> int | None:
        """A descriptor of a local file the bytes may also be appended to directly (at its
        current offset, e.g. by the kernel) and read back from, or ``None`` (remote stores)."""

    def commit(self) -> None:
        """Publish the bytes written so far under the key, atomically replacing any old ones."""

    def abort(self) -> None:
        """Discard everything written; the key keeps whatever it had before."""


class BlobStore(Protocol):
    """Asset bytes, keyed ``<ncaId>/<assetId>``."""

    def writer(self, key: str) -> BlobWriter: ...

    def open(self, key: str) -> BinaryIO:
        """Open for reading; raises ``FileNotFoundError`` when absent."""
        ...

    def size(self, key: str) -> int | None: ...

    def delete(self, key: str) -> None:
        """Remove the bytes at once; absent keys are ignored."""

    def stage(self, key: str, dest: Path) -> None:
        """Put a copy of the bytes at ``dest``; changing it must not change the stored object."""

    def local_path(self, key: str) -> Path | None:
        """The file holding the bytes when the store is on local disk, else ``None``."""
        ...

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove the bytes of ``keys`` (absent ones ignored), in as few requests as the store
        allows. Only these: another emulator may keep its objects in the same place."""

    def clear(self) -> None:
        """Remove every object."""

    def pending_uploads(self) -> list[str]:
        """Uploads begun and neither committed nor aborted (temp files, multipart uploads)."""
        ...
