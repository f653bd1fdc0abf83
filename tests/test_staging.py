"""Where a request's staged assets and output dir go, and that they are gone afterwards."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest, staging
from tests.test_pexec import invoke, new_asset


def _seen_dirs(emu: Emulator) -> dict[str, Path]:
    seen: dict[str, Path] = {}

    def look(req: ContainerRequest) -> dict[str, bool]:
        seen["assets"], seen["output"] = req.asset_dir, req.output_dir
        (req.output_dir / "note.txt").write_text("left behind")  # output is zipped, then removed
        return {"staged": req.asset_path(req.asset_ids[0]).read_bytes() == b"x" * 10}

    fid, _ = emu.add_function(look, name="look")
    asset = new_asset(b"x" * 10, emu=emu)
    r = invoke(emu, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": asset})
    assert r.status_code == 302, r.text  # the output file makes it a zip
    return seen


def _roomy_tmpfs() -> bool:
    try:
        st = os.statvfs(staging.RAM_DIR)
    except (OSError, AttributeError):  # no /dev/shm (macOS), no statvfs (Windows)
        return False
    return st.f_bavail * st.f_frsize >= staging.RAM_MIN_FREE and os.access(staging.RAM_DIR, os.W_OK)


@pytest.mark.skipif(not _roomy_tmpfs(), reason="no tmpfs with 1 GiB free at /dev/shm")
def test_small_requests_are_staged_in_ram_and_the_dir_goes_on_close(tmp_path: Path) -> None:
    with Emulator(root_dir=tmp_path / "emu") as emu:
        seen = _seen_dirs(emu)
        ram = seen["assets"].parent.parent
        assert ram.parent == staging.RAM_DIR and ram.name.startswith("nvcf-emulator-")
        assert seen["assets"].parent == ram / "inputAssets"
        assert seen["output"].parent == ram / "response"
        assert not seen["assets"].exists() and not seen["output"].exists()
        assert ram.is_dir()
    assert not ram.exists()


@pytest.mark.parametrize(
    "settings",
    [
        {"ram_staging_bytes": 0},  # RAM staging off
        {"ram_staging_bytes": 9},  # the 10-byte asset is above it
    ],
)
def test_larger_requests_and_ram_staging_off_use_root_dir(
    tmp_path: Path, settings: dict[str, int]
) -> None:
    with Emulator(root_dir=tmp_path / "emu", **settings) as emu:
        seen = _seen_dirs(emu)
        assert seen["assets"].parent == tmp_path / "emu" / "inputAssets"
        assert seen["output"].parent == tmp_path / "emu" / "response"
        assert not seen["assets"].exists() and not seen["output"].exists()


def test_configured_roots_win_over_ram(tmp_path: Path) -> None:
    with Emulator(
        root_dir=tmp_path / "emu", asset_root=tmp_path / "in", output_root=tmp_path / "out"
    ) as emu:
        seen = _seen_dirs(emu)
        assert seen["assets"].parent == tmp_path / "in"
        assert seen["output"].parent == tmp_path / "out"


def test_relative_roots_stay_where_they_were_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``asset_root="in"`` means ``in`` under the working directory of the time it was given:
    a later chdir (``monkeypatch.chdir`` in a test) does not move it, and the container is told
    an absolute ``NVCF-ASSET-DIR``, as NVCF's worker does."""
    monkeypatch.chdir(tmp_path)
    with Emulator(root_dir="emu", asset_root="in", output_root="out") as emu:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        seen = _seen_dirs(emu)
        assert seen["assets"].is_absolute() and seen["output"].is_absolute()
        assert seen["assets"].parent == tmp_path / "in"
        assert seen["output"].parent == tmp_path / "out"
        emu.configure(asset_root="in2")  # given now: under the current directory
        assert _seen_dirs(emu)["assets"].parent == elsewhere / "in2"
    assert not (elsewhere / "in").exists() and not (elsewhere / "out").exists()


def test_no_roomy_tmpfs_falls_back_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "small-shm"
    small.mkdir()
    monkeypatch.setattr(staging, "RAM_DIR", small)
    monkeypatch.setattr(staging, "RAM_MIN_FREE", 1 << 62)  # no disk has that much free
    with Emulator(root_dir=tmp_path / "emu") as emu:
        seen = _seen_dirs(emu)
        assert seen["assets"].parent == tmp_path / "emu" / "inputAssets"
    assert list(small.iterdir()) == []


def test_ram_staging_bytes_is_validated() -> None:
    with pytest.raises(ValueError, match="ram_staging_bytes must be a non-negative integer"):
        Emulator(ram_staging_bytes=-1)


def test_a_container_leaving_files_in_its_asset_dir_still_gets_it_removed(
    nvcf: Emulator,
) -> None:
    def litter(req: ContainerRequest) -> dict[str, str]:
        (req.asset_dir / "scratch" / "deep").mkdir(parents=True)
        (req.asset_dir / "scratch" / "deep" / "f").write_text("x")
        os.unlink(req.asset_path(req.asset_ids[0]))  # and one staged file already gone
        return {"dir": str(req.asset_dir)}

    fid, _ = nvcf.add_function(litter, name="litter")
    asset = new_asset(b"abc", emu=nvcf)
    r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": asset})
    assert r.status_code == 200, r.text
    assert not Path(r.json()["dir"]).exists()
    assert nvcf.asset_bytes(asset) == b"abc"


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel-copy", "read-write"])
def test_a_large_asset_is_staged_whole(
    nvcf: Emulator, monkeypatch: pytest.MonkeyPatch, kernel: bool
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)  # above the one-read copy of small files
    if not kernel:  # a kernel or file system that cannot copy between these files

        def unsupported(*args: object) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", unsupported, raising=False)
        monkeypatch.setattr(os, "sendfile", unsupported, raising=False)

    def digest(req: ContainerRequest) -> dict[str, str]:
        return {"sha256": hashlib.sha256(req.asset_path(req.asset_ids[0]).read_bytes()).hexdigest()}

    fid, _ = nvcf.add_function(digest, name="digest")
    asset = new_asset(data, emu=nvcf)
    r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": asset})
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": hashlib.sha256(data).hexdigest()}


def test_ram_dirs_of_processes_that_died_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(staging, "RAM_DIR", shm)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = shm / f"nvcf-emulator-{int(dead.stdout)}-abc123"
    (orphan / "inputAssets" / "req").mkdir(parents=True)
    (orphan / "inputAssets" / "req" / "asset").write_bytes(b"x" * 100)
    alive = shm / f"nvcf-emulator-{os.getpid()}-def456"  # another emulator of a live process
    alive.mkdir()
    unrelated = shm / "nvcf-emulator-notapid"
    unrelated.mkdir()
    with Emulator(root_dir=tmp_path / "emu") as emu:
        seen = _seen_dirs(emu)
        ram = seen["assets"].parent.parent
        assert ram.parent == shm and ram.name.startswith(f"nvcf-emulator-{os.getpid()}-")
        assert not orphan.exists()
        assert alive.is_dir() and unrelated.is_dir()
    assert not ram.exists()


def test_temp_roots_of_processes_that_died_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nvcf_emulator import tempdirs

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setattr(tempdirs, "_swept", set())
    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    orphan = tmp / f"nvcf-emulator-{int(dead.stdout)}-xyz"  # a killed emulator's bytes
    (orphan / "storage" / "objects").mkdir(parents=True)
    (orphan / "storage" / "objects" / "big").write_bytes(b"x" * 1000)
    with Emulator() as emu:
        assert emu.root.parent == tmp and emu.root.name.startswith(f"nvcf-emulator-{os.getpid()}-")
        assert not orphan.exists()
    assert not emu.root.exists()
