"""Per-request directories on the emulated worker: staged input assets and the large-output dir.

As on NVCF's worker: each referenced asset is put at ``<asset root>/<reqid>/<assetId>`` (a copy,
so the container cannot change the stored asset) in a directory of mode 0777, and
``<output root>/<reqid>`` is created empty with mode 0777. Both go when the request ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..domain.assets import Asset
from ..storage.base import BlobStore
from ..tempdirs import make_private_dir

DIR_MODE = 0o777
PROGRESS_FILE = "progress"
#: Where RAM staging goes (Linux's tmpfs), and the free space it needs to be used at all:
#: Docker's default 64 MiB /dev/shm could not hold a container's large output.
RAM_DIR = Path("/dev/shm")
RAM_MIN_FREE = 1 << 30


def make_ram_root() -> Path | None:
    """A fresh private dir in RAM for staging, or ``None`` where there is no roomy tmpfs
    (dirs that killed processes left there are removed first: see :mod:`..tempdirs`)."""
    try:
        stat = os.statvfs(RAM_DIR)
        if stat.f_bavail * stat.f_frsize < RAM_MIN_FREE:
            return None
        return make_private_dir(RAM_DIR)
    except (OSError, AttributeError):  # no /dev/shm, not writable, no statvfs (Windows)
        return None


@dataclass
class StagedRequest:
    asset_dir: Path
    output_dir: Path
    files: list[Path]
    #: The output dir was found empty and removed already (see :meth:`output_files`).
    output_removed: bool = False

    def output_files(self, remove_if_empty: bool = False) -> list[Path]:
        """Files the container left in its output dir (``progress`` files excluded), sorted.

        ``remove_if_empty``: the usual case, nothing left there, costs one ``rmdir`` (which
        also does the cleanup's work) instead of a directory scan."""
        if remove_if_empty:
            try:
                os.rmdir(self.output_dir)
                self.output_removed = True
                return []
            except FileNotFoundError:
                return []
            except OSError:  # not empty (or not removable): look inside
                pass
        try:
            with os.scandir(self.output_dir) as entries:
                if next(entries, None) is None:
                    return []
        except OSError:
            return []
        out = []
        for path in sorted(self.output_dir.rglob("*")):
            # NVCF's worker skips every file named "progress", at any depth.
            if path.is_file() and path.name != PROGRESS_FILE:
                out.append(path)
        return out

    def remove(self) -> None:
        # The usual case in a few syscalls: the staged files, then two directories left empty.
        # Anything the container added (or a failure) falls back to a full rmtree.
        for path in self.files:
            with contextlib.suppress(OSError):
                os.unlink(path)
        dirs = (self.asset_dir,) if self.output_removed else (self.asset_dir, self.output_dir)
        for directory in dirs:
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError:
                shutil.rmtree(directory, ignore_errors=True)


def _mkdir(path: Path) -> None:
    try:
        os.mkdir(path, DIR_MODE)
    except FileNotFoundError:  # the root itself is new
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass
    with contextlib.suppress(OSError):  # the umask would otherwise narrow the mode
        os.chmod(path, DIR_MODE)


def prepare(
    store: BlobStore,
    assets: Sequence[Asset],
    request_id: str,
    asset_root: Path,
    output_root: Path,
) -> StagedRequest:
    """Make the output dir and stage ``assets``; the asset dir exists only when there are any.

    Raises ``OSError`` (or ``FileNotFoundError`` when an asset's bytes vanished) on failure,
    after removing whatever it made.
    """
    staged = StagedRequest(asset_root / request_id, output_root / request_id, [])
    try:
        _mkdir(staged.output_dir)
        if assets:
            _mkdir(staged.asset_dir)
            seen: set[str] = set()
            for asset in assets:
                if asset.asset_id in seen:  # the same id referenced twice
                    continue
                seen.add(asset.asset_id)
                dest = staged.asset_dir / asset.asset_id
                store.stage(asset.key, dest)
                staged.files.append(dest)
    except BaseException:
        staged.remove()
        raise
    return staged
