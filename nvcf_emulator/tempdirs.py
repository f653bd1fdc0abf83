"""The emulator's private temp dirs (its root, its RAM staging dir), named after the process.

A process killed before it could clean up (kill -9, a CI job cut off) leaves its dirs behind:
asset bytes on disk, staged files in RAM. The first dir a process makes in a parent first
removes those of its user whose process no longer runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

PREFIX = "nvcf-emulator-"
_swept: set[str] = set()
_lock = threading.Lock()


def make_private_dir(parent: str | Path | None = None) -> Path:
    """A fresh dir ``nvcf-emulator-<pid>-*`` under ``parent`` (default: the system temp dir),
    after removing orphans there once per process."""
    where = str(parent) if parent is not None else tempfile.gettempdir()
    with _lock:
        first = where not in _swept
        _swept.add(where)
    if first:
        remove_orphans(where)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=where))


def remove_orphans(parent: str | Path) -> int:
    """Remove ``nvcf-emulator-<pid>-*`` dirs of this user under ``parent`` whose process is
    gone; returns how many. Other names, other users' dirs and live processes' stay."""
    getuid = getattr(os, "getuid", None)  # Windows: none; its temp dir is the user's own
    uid, removed = (getuid() if getuid is not None else None), 0
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        pid_text = entry.name[len(PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if uid is not None and entry.stat().st_uid != uid:
                continue
        except OSError:  # gone meanwhile
            continue
        if _gone(int(pid_text)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _posix_gone(pid: int) -> bool:
    """True when no process ``pid`` runs; False when one does (maybe another user's)."""
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent
    except ProcessLookupError:
        return True
    except OSError:  # alive under another user: not ours to judge
        return False
    return False


def _windows_gone(pid: int) -> bool:
    """:func:`_posix_gone` for Windows, where ``os.kill(pid, 0)`` would send a Ctrl-C: ask
    kernel32. Anything unexpected counts as alive (a dir left is better than one removed)."""
    try:
        import ctypes

        kernel32 = getattr(ctypes, "WinDLL")("kernel32", use_last_error=True)  # noqa: B009
        kernel32.OpenProcess.restype = ctypes.c_void_p
        handle = kernel32.OpenProcess(_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return bool(getattr(ctypes, "get_last_error")() == _INVALID_PARAMETER)  # noqa: B009
        try:
            code = ctypes.c_ulong()
            ok = kernel32.GetExitCodeProcess(ctypes.c_void_p(handle), ctypes.byref(code))
            return bool(ok) and code.value != _STILL_ACTIVE
        finally:
            kernel32.CloseHandle(ctypes.c_void_p(handle))
    except Exception:
        return False


_QUERY_LIMITED_INFORMATION = 0x1000  # OpenProcess access right
_INVALID_PARAMETER = 87  # OpenProcess's error for a pid no process has
_STILL_ACTIVE = 259  # GetExitCodeProcess's code for a process still running
_gone = _windows_gone if os.name == "nt" else _posix_gone
