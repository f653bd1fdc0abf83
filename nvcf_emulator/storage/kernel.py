"""File-to-file copies done by the kernel (Linux ``copy_file_range``, else ``sendfile``).

Used where bytes need not pass through Python: a file body uploaded in-process, and an asset
staged for a container.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: errno values of a kernel copy that concern the destination (a full disk): callers raise
#: them as they are.
DEST_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: errno values that mean "this kernel or file system cannot copy these files".
UNSUPPORTED = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF})
_CHUNK = 1 << 20
#: Flags for ``os.open`` of a file of bytes. Windows opens in text mode unless told
#: ``O_BINARY`` (writes turn ``\n`` into ``\r\n``, reads stop at ``\x1a``), and has no
#: ``O_CLOEXEC`` (Python makes its descriptors non-inheritable there anyway).
FILE_FLAGS = getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def kernel_copy(src: int, dst: int, count: int, position: int) -> int | None:
    """Copy up to ``count`` bytes from ``src`` at ``position`` (its offset is not used or
    moved) to ``dst`` at its current offset; the bytes copied, or ``None`` if unsupported."""
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is not None:
        try:
            return int(copy_file_range(src, dst, count, position))
        except OSError as exc:
            if exc.errno not in UNSUPPORTED:
                raise
    sendfile = getattr(os, "sendfile", None)
    if sendfile is not None and sys.platform == "linux":  # file-to-file only on Linux
        try:
            return int(sendfile(dst, src, position, count))
        except OSError as exc:
            if exc.errno not in UNSUPPORTED:
                raise
    return None


def write_all(fd: int, data: ReadableBuffer) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may take less than it is given)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def copy_file(src: int, dst: int, size: int, start: int = 0) -> None:
    """Append bytes ``start`` to ``size`` of ``src`` to ``dst``: in the kernel where it can,
    the rest in 1 MiB reads and writes (where there is no ``pread``, Windows, these move the
    offset of ``src``)."""
    offset = start
    while offset < size:
        copied = kernel_copy(src, dst, min(size - offset, 1 << 30), offset)
        if not copied:  # unsupported (None), or the file is shorter than it was (0)
            break
        offset += copied
    pread = getattr(os, "pread", None)
    if pread is None and offset < size:  # Windows: no pread; ``src`` is ours to seek
        os.lseek(src, offset, os.SEEK_SET)
    while offset < size:
        want = min(size - offset, _CHUNK)
        data = pread(src, want, offset) if pread is not None else os.read(src, want)
        if not data:
            break
        write_all(dst, data)
        offset += len(data)
