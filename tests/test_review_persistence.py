"""Adversarial review of ``--state-dir``: restarts as a team running one emulator meets them.

Damaged state files, answers after a restart for results of every kind, ids that must not be
handed out twice, relative state dirs, and the files a killed process leaves in the state dir.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from nvcf_emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent


def _upload(emu: Emulator, data: bytes, nca: str | None = None) -> str:
    account = emu.accounts.authenticate(f"Bearer {emu.accounts.any_key_for(nca)}")
    asset = emu.assets.create(account, "application/octet-stream", "d")
    emu.assets.upload(asset.nca_id, asset.asset_id, io.BytesIO(data), len(data))
    return asset.asset_id


def _open_fds_on(path: Path) -> list[str]:
    """This process's open descriptors on ``path`` (or its -wal/-shm companions)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


# -- a damaged state database ------------------------------------------------------------------


def test_a_damaged_page_in_the_state_db_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A state db whose header is fine but a data page is garbage (a bad disk, a half-copied
    backup): start-up must stop with the file's path, as for any db it cannot use, not with
    sqlite's bare 'database disk image is malformed' from the first read; and the failed
    start must not keep the db open (nor the dir locked)."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        for i in range(200):
            _upload(emu, b"%d" % i)
    db = state / "state.sqlite3"
    data = db.read_bytes()
    assert len(data) > 5 * 4096
    db.write_bytes(data[: 2 * 4096] + b"\xff" * 4096 + data[3 * 4096 :])
    for _ in range(2):  # the second try gets the same error, not "in use"
        with pytest.raises(RuntimeError, match=re.escape(str(db))) as info:
            Emulator(state_dir=state)
        assert "malformed" in str(info.value)
        assert _open_fds_on(db) == []


def test_a_failed_start_closes_the_state_db(aws_env: None, aws: None, tmp_path: Path) -> None:
    """Start-up refused after the db was opened (here: a bucket, where the state dir kept
    local files): the db is closed again, not left open until the garbage collector finds it
    (a long-lived process retrying would pile up open files)."""
    state = tmp_path / "state"
    Emulator(state_dir=state).close()
    with pytest.raises(RuntimeError, match="keeps the records"):
        Emulator(state_dir=state, storage="s3://review-persist/x", s3_create_bucket=True)
    assert _open_fds_on(state / "state.sqlite3") == []
