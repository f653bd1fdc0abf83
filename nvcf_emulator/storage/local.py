"""Asset bytes as files on local disk, written to a temp file and renamed into place."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

_FICLONE = 0x40049409  # linux/fs.h: clone a file's extents (btrfs, xfs, ...)


class _LocalWriter:
    __slots__ = ("_done", "_file", "_final", "_tmp")

    def __init__(self, final: Path, tmp_dir: Path) -> None:
        self._final = final
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._done = False

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        self._file.close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, self._final)
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
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
        self._objects_resolved = self.objects.resolve()

    def _path(self, key: str) -> Path:
        path = (self.objects / key).resolve()
        # Keys are validated upstream; this is the last line of defence against traversal.
        if self._objects_resolved not in path.parents:
            raise ValueError(f"object key escapes the store: {key!r}")
        return path

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
        # file system supports them; otherwise the kernel copies (sendfile/copy_file_range).
        src = self._path(key)
        with src.open("rb") as fin, open(dest, "xb") as fout:
            try:
                fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
                return
            except OSError:
                pass
        shutil.copyfile(src, dest)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.exists() else None

    def pending_uploads(self) -> list[str]:
        return sorted(p.name for p in self.tmp.iterdir())

    def clear(self) -> None:
        shutil.rmtree(self.objects, ignore_errors=True)
        self.objects.mkdir(parents=True, exist_ok=True)
