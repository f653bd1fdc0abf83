"""Asset bytes as files on local disk, written to a temp file and renamed into place."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from .kernel import FILE_FLAGS, copy_file, write_all

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

_ioctl: Callable[[int, int, int], object] | None
try:
    import fcntl
except ImportError:  # Windows
    _ioctl = None
else:
    # The request number below is Linux's: elsewhere (macOS) it may mean something else.
    _ioctl = fcntl.ioctl if sys.platform == "linux" else None

_FICLONE = 0x40049409  # linux/fs.h: clone a file's extents (btrfs, xfs, ...)
#: Files up to this size are staged with one read and one write (below malloc's mmap
#: threshold: a larger buffer costs an mmap, mremap and munmap per staging).
_SMALL_COPY = 64 * 1024
#: Windows refuses to replace or delete a file another handle has open (``PermissionError``):
#: a staging copy or ``asset_bytes()`` reading it holds it for moments, so wait that long
#: (seconds between tries). POSIX has no such refusal: a ``PermissionError`` there is final.
_BUSY_RETRIES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5) if os.name == "nt" else ()

_T = TypeVar("_T")


def when_not_busy(operation: Callable[[], _T]) -> _T:
    """``operation()``, tried again while Windows says another handle has the file open."""
    for delay in _BUSY_RETRIES:
        try:
            return operation()
        except PermissionError:
            time.sleep(delay)
    return operation()


class _LocalWriter:
    """An upload into a temp file, renamed into place on commit.

    The file is written through its bare descriptor (no Python buffer): callers write large
    chunks, and :meth:`fileno` lets the kernel move bytes in directly (``copy_file_range``,
    ``splice``), which must not race with bytes held in a user-space buffer. The descriptor is
    opened read-write, so the bytes written can be read back (to hash them) while the upload
    goes on.
    """

    __slots__ = ("_done", "_fd", "_final", "_tmp")

    def __init__(self, final: Path, tmp_dir: Path) -> None:
        self._final = final
        # mkstemp opens O_RDWR | O_CREAT | O_EXCL, mode 0600.
        self._fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        self._tmp = Path(name)
        self._done = False

    def fileno(self) -> int:
        return self._fd

    def write(self, data: ReadableBuffer) -> None:
        write_all(self._fd, data)

    def _close(self) -> None:
        # Once only: a descriptor number closed twice may by then belong to another file.
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def commit(self) -> None:
        self._close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        when_not_busy(lambda: os.replace(self._tmp, self._final))
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._close()
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore:
    """Objects under ``<root>/objects/<key>``; uploads in flight under ``<root>/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        # Uploads cut off by a crash (kill -9) left their temp files here: they never count.
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        # Absolute, not resolved: paths handed out stay under the root as it was named, also
        # where it is reached through a symlink (macOS: /var/folders -> /private/var/folders).
        self._objects_str = os.path.abspath(self.objects)
        self._objects_prefix = self._objects_str + os.sep
        #: Staging roots where a copy-on-write clone failed once (tmpfs, ext4): not tried again.
        self._no_clone: set[str] = set()

    def _path(self, key: str) -> Path:
        # Keys are validated upstream; this is the last line of defence against traversal. A
        # string check (no resolve(): that is an lstat per path component on every staging).
        path = os.path.normpath(os.path.join(self._objects_str, key))
        if not path.startswith(self._objects_prefix):
            raise ValueError(f"object key escapes the store: {key!r}")
        return Path(path)

    def writer(self, key: str) -> _LocalWriter:
        return _LocalWriter(self._path(key), self.tmp)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        path = self._path(key)
        when_not_busy(lambda: path.unlink(missing_ok=True))

    def stage(self, key: str, dest: Path) -> None:
        # A copy, never a hard link: a container (often running as root) that writes to its
        # input must not change the stored asset. Copy-on-write clones make it free where the
        # file system supports them; otherwise one read and one write for a small file, the
        # kernel for the rest. Bare descriptors: every syscall here releases the GIL, and under
        # concurrent invocations each release is a hand-off, so open()'s extra fstat, isatty
        # ioctl and lseek are not free.
        root = os.path.dirname(os.path.dirname(dest))  # the staging root
        src = os.open(self._path(key), os.O_RDONLY | FILE_FLAGS)
        try:
            dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | FILE_FLAGS, 0o666)
            try:
                if _ioctl is not None and root not in self._no_clone:
                    try:
                        _ioctl(dst, _FICLONE, src)
                        return
                    except OSError:
                        self._no_clone.add(root)
                size = os.fstat(src).st_size
                if size <= _SMALL_COPY:
                    write_all(dst, os.read(src, size))
                else:
                    copy_file(src, dst, size)
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.exists() else None

    def pending_uploads(self) -> list[str]:
        return sorted(p.name for p in self.tmp.iterdir())

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def clear(self) -> None:
        shutil.rmtree(self.objects, ignore_errors=True)
        self.objects.mkdir(parents=True, exist_ok=True)
