"""Asset bytes as files on local disk, written to a temp file and renamed into place."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .kernel import copy_file

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

_FICLONE = 0x40049409  # linux/fs.h: clone a file's extents (btrfs, xfs, ...)
#: Files up to this size are staged with one read and one write.
_SMALL_COPY = 1 << 20


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
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self._fd, view) :]

    def _close(self) -> None:
        # Once only: a descriptor number closed twice may by then belong to another file.
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def commit(self) -> None:
        self._close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, self._final)
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
        self._objects_str = str(self.objects.resolve())
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
        self._path(key).unlink(missing_ok=True)

    def stage(self, key: str, dest: Path) -> None:
        # A copy, never a hard link: a container (often running as root) that writes to its
        # input must not change the stored asset. Copy-on-write clones make it free where the
        # file system supports them; otherwise the kernel copies (sendfile), or for small files
        # one read and one write.
        root = str(dest.parent.parent)
        with open(self._path(key), "rb") as fin, open(dest, "xb") as fout:
            if root not in self._no_clone:
                try:
                    fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
                    return
                except OSError:
                    self._no_clone.add(root)
            size = os.fstat(fin.fileno()).st_size
            if size <= _SMALL_COPY:
                fout.write(fin.read())
            else:
                copy_file(fin.fileno(), fout.fileno(), size)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.exists() else None

    def pending_uploads(self) -> list[str]:
        return sorted(p.name for p in self.tmp.iterdir())

    def clear(self) -> None:
        shutil.rmtree(self.objects, ignore_errors=True)
        self.objects.mkdir(parents=True, exist_ok=True)
