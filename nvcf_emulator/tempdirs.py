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
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # Windows: no cheap way to tell; leave them
        return 0
    uid, removed = getuid(), 0
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
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != uid:
                continue
            os.kill(int(pid_text), 0)  # raises when no such process runs
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
        except OSError:  # alive under another user, or gone meanwhile: not ours to judge
            continue
    return removed
