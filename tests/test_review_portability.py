"""Portability review: what differs on the laptops users have (macOS, Windows), simulated here.

Linux CI cannot run macOS or Windows, so each test takes away (or swaps) what the other
platform lacks: ``fcntl``, ``os.pread``, ``O_CLOEXEC``, ``/dev/shm``, a temp dir reached
through a symlink (``/var`` -> ``/private/var`` on macOS), Windows' text-mode ``os.open``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator, tempdirs
from nvcf_emulator.storage import local
from nvcf_emulator.worker import ContainerRequest, staging
from tests.test_pexec import API, invoke, new_asset

ROOT = Path(__file__).resolve().parent.parent

#: A child interpreter that looks like Windows to the emulator's own modules: no ``fcntl``,
#: an ``msvcrt`` with Windows' mandatory byte-range locks, no
#: ``pread``/``pwrite``/``O_CLOEXEC``/``statvfs``/``getuid`` and no kernel copies, and
#: ``O_BINARY`` (Windows' 0x8000; on Linux x86-64 that bit is the harmless O_LARGEFILE). Every
#: ``os.open`` under the root is recorded, to find files of bytes opened in text mode.
_WINDOWS_LIKE = """
import builtins, json, os, sys, tempfile, types
# The standard library tells Windows by whether msvcrt imports: it is in place before the fake.
import asyncio, concurrent.futures, sqlite3, subprocess, zipfile, requests, werkzeug.serving

BINARY = 0x8000
os.O_BINARY = BINARY
tempfile._bin_openflags |= BINARY  # what Windows' tempfile uses for mkstemp
for name in ("O_CLOEXEC", "pread", "pwrite", "preadv", "statvfs", "getuid",
             "copy_file_range", "sendfile", "splice"):
    if hasattr(os, name):
        delattr(os, name)

real_import = builtins.__import__
def windows_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    if name == "fcntl" and importer.startswith("nvcf_emulator"):
        raise ModuleNotFoundError("No module named 'fcntl'", name="fcntl")
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = windows_import

# Windows' byte-range locks: held per handle, from the file position for nbytes, mandatory
# (another handle's read of a locked byte fails), released by LK_UNLCK at the same range.
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_UNLCK, msvcrt.LK_LOCK, msvcrt.LK_NBLCK = 0, 1, 2
locks = {}  # (st_dev, st_ino, offset) -> fd
def _file(fd):
    st = os.fstat(fd)
    return st.st_dev, st.st_ino
def locking(fd, mode, nbytes):
    start = os.lseek(fd, 0, os.SEEK_CUR)
    keys = [(*_file(fd), start + i) for i in range(nbytes)]
    if mode == msvcrt.LK_UNLCK:
        if any(locks.get(k) != fd for k in keys):
            raise PermissionError(13, "Permission denied")  # not locked by this handle
        for k in keys:
            del locks[k]
        return
    if any(k in locks for k in keys):
        raise PermissionError(13, "Permission denied")
    for k in keys:
        locks[k] = fd
msvcrt.locking = locking
sys.modules["msvcrt"] = msvcrt
real_read = os.read
def windows_read(fd, n):
    start, ino = os.lseek(fd, 0, os.SEEK_CUR), _file(fd)
    if any(locks.get((*ino, start + i), fd) != fd for i in range(n)):
        raise PermissionError(13, "Permission denied")  # a byte another handle locked
    return real_read(fd, n)
os.read = windows_read
real_close = os.close
def windows_close(fd):
    for k in [k for k, v in locks.items() if v == fd]:  # the OS drops them, eventually
        del locks[k]
    real_close(fd)
os.close = windows_close

ROOT = os.path.realpath(sys.argv[1])
opened = []
real_open = os.open
def recording_open(path, flags, mode=0o777, *, dir_fd=None):
    fd = real_open(path, flags, mode, dir_fd=dir_fd)
    if os.path.realpath(path).startswith(ROOT) and not os.path.isdir(path):  # rmtree's dirs
        opened.append((os.path.relpath(os.path.realpath(path), ROOT), flags))
    return fd
os.open = recording_open
"""


def _run_windows_like(body: str, root: Path) -> dict[str, object]:
    script = _WINDOWS_LIKE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# Bytes a text-mode descriptor would change: \n written as \r\n, a read ending at \x1a.
_PAYLOAD_EXPR = (
    '(b"line\\n\\r\\n\\x1a\\x00" + bytes(range(256))) * 700'  # 183 KiB: > one small copy
)
_PAYLOAD: bytes = eval(_PAYLOAD_EXPR)


@pytest.mark.skipif(sys.platform == "win32", reason="simulates Windows on POSIX")
def test_emulator_on_windows_locks_its_root_and_stages_assets_byte_for_byte(
    tmp_path: Path,
) -> None:
    """Without fcntl, pread, pwrite and O_CLOEXEC (Windows), ``Emulator(root_dir=...)`` failed
    at import or start; staged copies were opened without O_BINARY (text mode on Windows)."""
    root = tmp_path / "root"
    result = _run_windows_like(
        f"""
        import hashlib, requests
        from nvcf_emulator import Emulator
        from tests.test_pexec import invoke, new_asset

        out = {{}}
        emu = Emulator(root_dir=ROOT).__enter__()  # routes requests in-process
        try:
            try:
                Emulator(root_dir=ROOT)
            except RuntimeError as exc:
                out["second"] = str(exc)
            def look(req):
                data = req.asset_path(req.asset_ids[0]).read_bytes()
                return {{"sha": hashlib.sha256(data).hexdigest(), "dir": str(req.asset_dir)}}
            fid, _ = emu.add_function(look, name="look")
            asset = new_asset({_PAYLOAD_EXPR}, emu=emu)
            r = invoke(emu, fid, headers={{"NVCF-INPUT-ASSET-REFERENCES": asset}})
            out["status"], out["answer"] = r.status_code, r.json()
            out["stored"] = hashlib.sha256(emu.asset_bytes(asset)).hexdigest()
        finally:
            emu.close()
        again = Emulator(state_dir=ROOT)  # the lock went with close; the state db opens
        again.close()
        out["text_mode"] = sorted(
            {{p for p, flags in opened if not flags & BINARY and not p.startswith("state")}}
        )
        print(json.dumps(out))
        """,
        root,
    )
    assert f"{root} is in use by another emulator (process " in str(result["second"])
    assert result["status"] == 200
    expected = hashlib.sha256(_PAYLOAD).hexdigest()
    answer = result["answer"]
    assert isinstance(answer, dict) and answer["sha"] == expected
    assert Path(answer["dir"]).parent == root / "inputAssets"
    assert result["stored"] == expected
    assert result["text_mode"] == []


def _mac_like_tmp(tmp_path: Path) -> Path:
    """A temp dir reached as macOS reaches its own: ``/var/folders/...`` where ``/var`` is a
    symlink to ``/private/var``."""
    (tmp_path / "private" / "var" / "folders").mkdir(parents=True)
    try:
        (tmp_path / "var").symlink_to(tmp_path / "private" / "var", target_is_directory=True)
    except OSError:  # Windows without the right to make symlinks
        pytest.skip("cannot make a symlink here")
    return tmp_path / "var" / "folders"


def test_asset_path_is_under_the_root_when_the_temp_dir_is_reached_through_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On macOS ``asset_path()`` named ``/private/var/...`` while ``root`` (and every path a
    container is told) was ``/var/...``: a test checking the file is under ``root`` failed
    there only."""
    monkeypatch.setattr(tempfile, "tempdir", str(_mac_like_tmp(tmp_path)))
    for settings in ({}, {"root_dir": tempfile.tempdir + "/given"}):
        with Emulator(**settings) as emu:  # type: ignore[arg-type]
            asset = new_asset(b"x", emu=emu)
            path = emu.asset_path(asset)
            assert path is not None and path.read_bytes() == b"x"
            assert path.is_relative_to(emu.root), (path, emu.root)
            assert str(emu.root).startswith(tempfile.tempdir)
            with pytest.raises(ValueError, match="escapes the store"):
                emu.store.size("../../storage2/x")  # the last line of defence still holds


@pytest.mark.parametrize("platform", ["macos: no /dev/shm", "windows: no os.statvfs"])
def test_without_a_ram_dir_small_requests_are_staged_under_the_root(
    platform: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAM staging is Linux's /dev/shm: elsewhere the emulator starts and stages on disk, and
    NVCF-ASSET-DIR / NVCF-LARGE-OUTPUT-DIR name dirs under its root."""
    if platform.startswith("macos"):
        monkeypatch.setattr(staging, "RAM_DIR", tmp_path / "dev" / "shm")
    else:
        monkeypatch.delattr(os, "statvfs", raising=False)
    seen: dict[str, str] = {}

    def look(req: ContainerRequest) -> dict[str, str]:
        seen.update(req.headers)
        return {"data": req.asset_path(req.asset_ids[0]).read_text()}

    with Emulator(root_dir=tmp_path / "emu") as emu:
        fid, _ = emu.add_function(look, name="look")
        asset = new_asset(b"small", emu=emu)
        r = invoke(emu, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": asset})
        assert r.status_code == 200, r.text
        assert r.json() == {"data": "small"}
        request_id = r.headers["NVCF-REQID"]
        assert seen["NVCF-ASSET-DIR"] == str(emu.root / "inputAssets" / request_id)
        assert seen["NVCF-LARGE-OUTPUT-DIR"] == str(emu.root / "response" / request_id)
    assert not (tmp_path / "dev").exists()


def test_ids_in_another_case_name_the_same_lowercase_file_and_never_another_accounts(
    tmp_path: Path,
) -> None:
    """macOS (APFS) and Windows (NTFS) file names ignore case. Every file name the emulator
    makes from an id is its canonical lower-case UUID, never the client's spelling, and the
    record (with its exact-case NCA id) is checked before any bytes are read: so ``ABC`` and
    ``abc`` are one asset, and accounts ``Acme`` and ``acme`` (one dir there) stay apart."""
    keys = {"nvapi-upper": "Acme", "nvapi-lower": "acme"}
    with Emulator(root_dir=tmp_path / "emu", api_keys=keys) as emu:
        staged: list[str] = []

        def look(req: ContainerRequest) -> dict[str, int]:
            staged.extend(sorted(os.listdir(req.asset_dir)))
            return {"n": len(req.asset_path(req.asset_ids[0]).read_bytes())}

        fid, _ = emu.add_function(look, name="look")
        mine = new_asset(b"acme's", key="nvapi-upper")
        theirs = new_asset(b"other", key="nvapi-lower")
        refs = f"{mine.upper()},{mine}"
        r = invoke(emu, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": refs, **_auth("upper")})
        assert r.status_code == 200, r.text
        assert staged == [mine]  # one copy, named in lower case
        got = requests.get(f"{API}/v2/nvcf/assets/{mine.upper()}", headers=_auth("upper"))
        assert got.status_code == 200 and got.json()["asset"]["assetId"] == mine
        for asset in (theirs, theirs.upper()):  # the other-case account's asset: not found
            other = requests.get(f"{API}/v2/nvcf/assets/{asset}", headers=_auth("upper"))
            assert other.status_code == 404, other.text
            r = invoke(emu, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": asset, **_auth("upper")})
            assert r.status_code == 404, r.text
        assert emu.asset_bytes(mine) == b"acme's" and emu.asset_bytes(theirs) == b"other"


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer nvapi-{name}"}


@pytest.mark.parametrize(
    "nca_id",
    [
        "org:team",
        "..\\..\\escape",
        "team\\a",
        "a*b",
        'say"hi"',
        "org/team.",
        "trail ",
        "NUL",
        "org/con",
        "aux.team",
        "com1/x",
        "LPT9",
    ],
)
def test_nca_ids_windows_cannot_store_are_refused_on_every_platform(
    nca_id: str, tmp_path: Path
) -> None:
    """Asset bytes live at ``<root>/storage/objects/<nca_id>/<assetId>``. On Windows ``org:team``
    names a stream of the file ``org``, ``..\\..`` climbs out of the store (a 500 on upload),
    ``NUL`` is the null device and a trailing dot is dropped: a suite green on Linux failed on a
    Windows laptop only. Refused up front on every platform, naming the rule."""
    with pytest.raises(ValueError, match="Windows"):
        Emulator(root_dir=tmp_path, api_keys={"nvapi-x": nca_id})
    with pytest.raises(ValueError, match="Windows"):
        Emulator(root_dir=tmp_path, default_nca_id=nca_id)


@pytest.mark.parametrize("nca_id", ["org/team", "nca-a_1", "a.b", "console", "nul-team", "COM"])
def test_nca_ids_every_platform_can_store_still_work(nca_id: str, tmp_path: Path) -> None:
    with Emulator(root_dir=tmp_path, api_keys={"nvapi-x": nca_id}) as emu:
        asset = new_asset(b"ok", key="nvapi-x")
        assert emu.asset_bytes(asset) == b"ok"


def test_on_windows_a_reupload_or_delete_waits_for_a_reader_to_let_go_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows refuses to replace or delete a file another handle has open (a staging copy or
    ``asset_bytes()`` reading it): a second PUT to an upload URL answered 500, a DELETE 500
    and left the bytes. Simulated: the stored file is busy for two tries."""
    monkeypatch.setattr(local, "_BUSY_RETRIES", (0.0, 0.0, 0.0))  # Windows' tries, no waits
    busy = {"replace": 0, "unlink": 0}

    def shared(name: str, real: Callable[..., None], target: int) -> Callable[..., None]:
        def operation(*args: Any, **kwargs: Any) -> None:
            if busy[name] and "objects" in str(args[target]):
                busy[name] -= 1
                raise PermissionError(13, "being used by another process", str(args[target]))
            real(*args, **kwargs)

        return operation

    monkeypatch.setattr(os, "replace", shared("replace", os.replace, 1))
    monkeypatch.setattr(os, "unlink", shared("unlink", os.unlink, 0))
    with Emulator(root_dir=tmp_path) as emu:
        created = requests.post(
            f"{API}/v2/nvcf/assets",
            headers=emu.headers,
            json={"contentType": "application/octet-stream", "description": "d"},
        ).json()
        put = {"Content-Type": "application/octet-stream", "x-amz-meta-nvcf-asset-description": "d"}
        assert requests.put(created["uploadUrl"], data=b"one", headers=put).status_code == 200
        busy["replace"] = 2
        again = requests.put(created["uploadUrl"], data=b"two", headers=put)
        assert again.status_code == 200, again.text
        assert emu.asset_bytes(created["assetId"]) == b"two"
        path = emu.asset_path(created["assetId"])
        busy["unlink"] = 2
        gone = requests.delete(f"{API}/v2/nvcf/assets/{created['assetId']}", headers=emu.headers)
        assert gone.status_code == 204, gone.text
        assert path is not None and not path.exists()
        assert busy == {"replace": 0, "unlink": 0}


def test_on_windows_temp_roots_of_killed_processes_are_removed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``os.getuid`` (Windows) no orphan was ever removed: every emulator a CI job or
    Task Manager killed left its root, asset bytes and all, in %TEMP% for good. Windows asks
    kernel32 whether a pid runs (simulated here: ``os.kill(pid, 0)`` would send it Ctrl-C)."""
    monkeypatch.delattr(os, "getuid", raising=False)
    monkeypatch.setattr(tempdirs, "_swept", set())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead, alive = tmp_path / "nvcf-emulator-999999-a", tmp_path / "nvcf-emulator-999998-b"
    for orphan in (dead, alive):
        (orphan / "storage" / "objects").mkdir(parents=True)
    monkeypatch.setattr(tempdirs, "_gone", lambda pid: pid == 999999)
    with Emulator() as emu:
        assert emu.root.parent == tmp_path
        assert not dead.exists()
        assert alive.is_dir()


@pytest.mark.parametrize(
    ("processes", "error", "gone"),
    [
        ({}, 87, True),  # OpenProcess: ERROR_INVALID_PARAMETER, no such pid
        ({}, 5, False),  # ERROR_ACCESS_DENIED: another user's (or a system) process
        ({42: 259}, 0, False),  # STILL_ACTIVE
        ({42: 0}, 0, True),  # exited (a handle somewhere keeps its record)
    ],
)
def test_windows_liveness_asks_kernel32(
    processes: dict[int, int], error: int, gone: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes

    closed: list[object] = []

    def open_process(access: int, inherit: bool, pid: int) -> int | None:
        assert access == 0x1000 and not inherit  # PROCESS_QUERY_LIMITED_INFORMATION
        return 7 if pid in processes else None

    def exit_code(handle: Any, code: Any) -> int:
        assert handle.value == 7
        code._obj.value = processes[42]
        return 1

    kernel32 = types.SimpleNamespace(
        OpenProcess=open_process,
        GetExitCodeProcess=exit_code,
        CloseHandle=lambda handle: closed.append(handle.value) or 1,
    )
    fake = types.SimpleNamespace(
        WinDLL=lambda name, use_last_error: kernel32,
        get_last_error=lambda: error,
        c_void_p=ctypes.c_void_p,
        c_ulong=ctypes.c_ulong,
        byref=ctypes.byref,
    )
    monkeypatch.setitem(sys.modules, "ctypes", fake)
    assert tempdirs._windows_gone(42) is gone
    assert closed == ([7] if processes else [])
    monkeypatch.setitem(sys.modules, "ctypes", types.SimpleNamespace())  # no WinDLL: unsure
    assert tempdirs._windows_gone(42) is False


def test_a_root_on_a_file_system_without_locks_still_starts_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A root_dir / state_dir on NFS without lockd or some VM shares (a Mac's dir mounted into
    a Docker container) refuses ``flock``: ``Emulator(root_dir=...)`` died with a bare
    ``OSError: [Errno 37] No locks available``."""
    fcntl = pytest.importorskip("fcntl")

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="nvcf_emulator"), Emulator(state_dir=tmp_path) as emu:
        assert emu.asset_bytes(new_asset(b"ok", emu=emu)) == b"ok"
    assert f"cannot lock {tmp_path} (No locks available)" in caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="simulates Windows on POSIX")
def test_on_windows_uploads_over_a_chunk_work(tmp_path: Path) -> None:
    """Windows: ``http/storage.py`` imported ``fcntl`` at the top (``import nvcf_emulator``
    failed); an upload of more than one chunk was hashed by a thread reading back with
    ``pread`` (a 500)."""
    root = tmp_path / "root"
    result = _run_windows_like(
        """
        import hashlib
        from nvcf_emulator import Emulator
        from tests.test_pexec import new_asset

        data = bytes(range(256)) * (3 * 4096)  # 3 MiB
        with Emulator(root_dir=ROOT) as emu:
            asset = new_asset(data, emu=emu)
            stored = emu.asset_bytes(asset)
        print(json.dumps({"same": stored == data}))
        """,
        root,
    )
    assert result == {"same": True}


def test_without_select_poll_idle_connections_still_give_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows has no ``select.poll``: when every connection slot was taken, freeing an idle
    keep-alive connection raised there and was skipped, so a new client waited out the 30 s
    idle timeout."""
    import select

    from nvcf_emulator.server import EmulatorServer
    from tests.test_keepalive import _conn, _list

    monkeypatch.delattr(select, "poll")
    emu = Emulator()
    srv = EmulatorServer(emu, max_connections=1).start()
    idle = _conn(srv)
    newcomer = _conn(srv)
    try:
        _list(srv, idle)  # stays open, idle, holding the one slot
        newcomer.timeout = 3.0
        _list(srv, newcomer)
    finally:
        idle.close()
        newcomer.close()
        srv.stop()
        emu.close()


def test_the_server_does_not_share_its_port_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows ``SO_REUSEADDR`` lets a second server bind a port in use without an error
    (cpython#85307): two ``nvcf-emulate --port 8080`` would both start. The server binds
    with ``socket.create_server``, which sets it only off Windows (werkzeug's own bind sets
    it everywhere)."""
    import socket

    from nvcf_emulator.server import EmulatorServer

    def reuse(os_name: str) -> int:
        with Emulator() as emu:
            with monkeypatch.context() as m:
                m.setattr(os, "name", os_name)
                srv = EmulatorServer(emu)
            try:
                sock = srv._server.socket  # the listening socket itself
                return sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            finally:
                srv.stop()

    assert reuse("nt") == 0
    assert reuse("posix") != 0


def _progress_request(tmp_path: Path) -> ContainerRequest:
    from werkzeug.datastructures import Headers

    out = tmp_path / "out"
    out.mkdir()
    headers = Headers({"NVCF-REQID": "r1", "NVCF-LARGE-OUTPUT-DIR": str(out)})
    return ContainerRequest("POST", "/infer", headers, b"")


def test_progress_written_from_several_threads_at_once(tmp_path: Path) -> None:
    """Every write had the temp name ``.progress.tmp``: two threads of one container
    reporting at once replaced each other's file, and one write failed with
    FileNotFoundError."""
    import threading

    request = _progress_request(tmp_path)
    errors: list[BaseException] = []

    def report(n: int) -> None:
        try:
            for i in range(200):
                request.write_progress(i % 100, {"thread": n})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(p.name for p in request.output_dir.iterdir()) == ["progress"]
    assert json.loads((request.output_dir / "progress").read_text())["id"] == "r1"


def test_on_windows_progress_waits_for_the_worker_to_let_go_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows refuses to replace ``progress`` while the worker reads it (PermissionError):
    the write waits a moment and succeeds, and leaves no temp file behind (a file left in
    the output dir would make the answer a zip)."""
    monkeypatch.setattr(local, "_BUSY_RETRIES", (0.0, 0.0))
    real_replace = Path.replace
    refused: list[Path] = []

    def busy_once(self: Path, target: Any) -> Path:
        if not refused:
            refused.append(self)
            raise PermissionError(13, "The process cannot access the file")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", busy_once)
    request = _progress_request(tmp_path)
    request.write_progress(40, {"partial": True})
    assert refused
    assert sorted(p.name for p in request.output_dir.iterdir()) == ["progress"]
    assert json.loads((request.output_dir / "progress").read_text())["progress"] == 40


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_on_windows_ctrl_break_stops_nvcf_emulate_cleanly(tmp_path: Path) -> None:
    """Windows never delivers SIGTERM; CI runners and ``subprocess`` stop a console program
    with CTRL_BREAK_EVENT (SIGBREAK), which ended nvcf-emulate without its clean stop.
    Simulated with SIGUSR1 standing in as SIGBREAK."""
    script = textwrap.dedent(
        """
        import signal, sys
        signal.SIGBREAK = signal.SIGUSR1
        from nvcf_emulator.cli import main
        sys.exit(main(["--port", "0"]))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line:
                break
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="simulates Windows on POSIX")
def test_on_windows_a_large_result_is_written_and_fetched(tmp_path: Path) -> None:
    """Windows' fsync (FlushFileBuffers) refuses a read-only handle: a large result's zip
    (and every result kept in a state dir) was flushed through one, so each 302 failed."""
    result = _run_windows_like(
        """
        import fcntl, requests
        real_fsync = os.fsync
        def windows_fsync(fd):
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
                raise PermissionError(13, "Access is denied")
            real_fsync(fd)
        os.fsync = windows_fsync
        from nvcf_emulator import Emulator

        with Emulator(state_dir=ROOT, max_response_bytes=1024) as emu:
            fid, _ = emu.add_function(lambda req: b"x" * 4096, name="big")
            r = requests.post(
                f"https://api.nvcf.nvidia.com/v2/nvcf/pexec/functions/{fid}",
                headers=emu.headers, allow_redirects=False,
            )
            zipped = requests.get(r.headers.get("Location", "http://unset.invalid/"))
        print(json.dumps({"status": r.status_code, "zip": zipped.status_code}))
        """,
        tmp_path / "state",
    )
    assert result == {"status": 302, "zip": 200}
