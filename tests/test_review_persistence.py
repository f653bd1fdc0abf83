"""Adversarial review of ``--state-dir``: restarts as a team running one emulator meets them.

Damaged state files, answers after a restart for results of every kind, ids that must not be
handed out twice, relative state dirs, and the files a killed process leaves in the state dir.
"""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.domain.accounts import Account
from nvcf_emulator.worker import ContainerRequest, ContainerResponse

ROOT = Path(__file__).resolve().parent.parent


def _upload(emu: Emulator, data: bytes, nca: str | None = None) -> str:
    account = emu.accounts.authenticate(f"Bearer {emu.accounts.any_key_for(nca)}")
    asset = emu.assets.create(account, "application/octet-stream", "d")
    emu.assets.upload(asset.nca_id, asset.asset_id, io.BytesIO(data), len(data))
    return asset.asset_id


def _open_fds_on(path: Path) -> list[str]:
    """This process's open descriptors on ``path`` (or its -wal/-shm companions)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("names open descriptors' files through /proc/self/fd (Linux)")
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


# -- results of every kind, fetched after a restart ----------------------------------------------


def _answers(req: ContainerRequest) -> ContainerResponse:
    """The answer the request's body asks for."""
    kind = req.json()["kind"]
    if kind == "teapot":  # a status whose Go text has an apostrophe: "I'm a teapot"
        return ContainerResponse(418, b'{"error": "short and stout"}', [("X-Tea", "1")])
    if kind == "unnamed":  # a status Go's StatusText does not name: empty title
        return ContainerResponse(499, b"{}", [])
    if kind == "empty":
        return ContainerResponse(204, b"", [("X-Empty", "yes")])
    if kind == "raises":
        raise RuntimeError("boom")
    return ContainerResponse(
        200, b'{"ok": true}', [("Content-Type", "application/json"), ("X-Custom", "kept")]
    )


KINDS = ("teapot", "unnamed", "empty", "raises", "json")


def _settle_all(emu: Emulator, fid: str, kinds: tuple[str, ...]) -> dict[str, str]:
    ids = {}
    for kind in kinds:
        r = requests.post(
            f"{emu.base_url}/v2/nvcf/pexec/functions/{fid}",
            headers=emu.headers,
            json={"kind": kind},
        )
        assert r.status_code == 202, r.text
        ids[kind] = r.headers["NVCF-REQID"]
    _wait(lambda: all(inv.done for inv in emu.invocations))
    return ids


def _fetch(emu: Emulator, req_id: str) -> tuple[int, dict[str, str], str]:
    """A status poll's answer, the request id taken out (it differs between two requests)."""
    r = requests.get(
        f"{emu.base_url}/v2/nvcf/pexec/status/{req_id}", headers=emu.headers, allow_redirects=False
    )
    headers = {
        k: v.replace(req_id, "ID")
        for k, v in r.headers.items()
        if k.lower() not in ("date", "content-length", "server")
    }
    return r.status_code, headers, r.text.replace(req_id, "ID")


def test_every_kind_of_result_answers_the_same_after_a_restart(tmp_path: Path) -> None:
    """Two requests of each kind settle; one is fetched before the stop, its twin after the
    restart: status, headers and body must be the same (a problem's ``type`` included: the
    container's 418 is ``...:i'm-a-teapot`` in NVCF's worker, not the kebab-case of its title)."""
    state = tmp_path / "state"
    with Emulator(state_dir=state, always_async=True) as emu:
        fid, _ = emu.add_function(_answers, name="answers")
        before = _settle_all(emu, fid, KINDS)
        after = _settle_all(emu, fid, KINDS)
        expected = {kind: _fetch(emu, req_id) for kind, req_id in before.items()}
    assert expected["teapot"][0] == 418
    assert '"type":"urn:inference-service:problem-details:i\'m-a-teapot"' in expected["teapot"][2]
    with Emulator(state_dir=state, always_async=True) as emu:
        got = {kind: _fetch(emu, req_id) for kind, req_id in after.items()}
        for req_id in after.values():  # delivered once
            assert _fetch(emu, req_id)[0] == 404
    assert got == expected


# -- ids -------------------------------------------------------------------------------------------


def test_seeded_asset_ids_never_take_over_a_stored_asset(tmp_path: Path) -> None:
    """A suite seeds ids (``POST /_emulator/seed``) at the start of each run against one
    ``--state-dir``: the second run's first asset must not get the id, and so replace the
    record, of the first run's asset still stored (it was listed without bytes, its bytes
    counted twice, and the next start deleted them)."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        assert requests.post(f"{emu.base_url}/_emulator/seed", json={"seed": 7}).status_code == 200
        first = _upload(emu, b"first run")
    with Emulator(state_dir=state) as emu:
        assert requests.post(f"{emu.base_url}/_emulator/seed", json={"seed": 7}).status_code == 200
        r = requests.post(
            f"{emu.base_url}/v2/nvcf/assets",
            headers=emu.headers,
            json={"contentType": "text/plain", "description": "second run"},
        )
        assert r.status_code == 200
        second = r.json()["assetId"]
        assert second != first
        assert emu.asset_bytes(first) == b"first run"
        listed = requests.get(f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers).json()
        assert [a["assetId"] for a in listed["assets"]] == [first]
        assert emu.assets.used_bytes == len(b"first run")
    with Emulator(state_dir=state) as emu:
        assert emu.asset_bytes(first) == b"first run"
        # Nor another account's record, even one still waiting for its upload.
        emu.ids.seed(7)
        theirs = emu.assets.create(Account("nca-other"), "text/plain", "other account")
        assert theirs.asset_id not in (first, second)
        assert (
            emu.assets.find(second).nca_id
            == emu.accounts.authenticate(  # type: ignore[union-attr]
                f"Bearer {emu.api_key}"
            ).nca_id
        )
        # The same account's record with no bytes yet is what a repeated seed may take again
        # (as two seeded runs in one emulator always did).
        emu.ids.seed(7)
        mine = emu.assets.create(emu.accounts.authenticate(f"Bearer {emu.api_key}"), "a/b", "d")
        assert mine.asset_id == second
        assert emu.asset_bytes(first) == b"first run"


def test_a_relative_state_dir_stays_where_it_was_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Emulator(state_dir="state")`` then a test (or the app) changes the working directory:
    uploads, results and staging must go on in the dir that was opened and locked, not in a
    ``state`` dir under the new cwd (uploads failed with FileNotFoundError, i.e. a 500)."""
    seen: dict[str, str] = {}

    def app(req: ContainerRequest) -> dict[str, bool]:
        seen["out"] = req.headers["NVCF-LARGE-OUTPUT-DIR"]
        seen["assets"] = req.headers["NVCF-ASSET-DIR"]
        return {"ok": True}

    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with Emulator(state_dir="state", always_async=True, ram_staging_bytes=0) as emu:
        assert emu.root == tmp_path / "state"
        fid, _ = emu.add_function(app, name="app")
        monkeypatch.chdir(tmp_path / "elsewhere")
        asset_id = _upload(emu, b"bytes")
        r = requests.post(
            f"{emu.base_url}/v2/nvcf/pexec/functions/{fid}",
            headers={**emu.headers, "NVCF-INPUT-ASSET-REFERENCES": asset_id},
            json={},
        )
        assert r.status_code == 202
        req_id = r.headers["NVCF-REQID"]
        _wait(lambda: emu.invocations[-1].done)
        assert seen["out"] == str(tmp_path / "state" / "response" / req_id)
        assert seen["assets"] == str(tmp_path / "state" / "inputAssets" / req_id)
    assert list((tmp_path / "elsewhere").iterdir()) == []
    with Emulator(state_dir=tmp_path / "state") as emu:
        assert emu.asset_bytes(asset_id) == b"bytes"
        r = requests.get(f"{emu.base_url}/v2/nvcf/pexec/status/{req_id}", headers=emu.headers)
        assert r.status_code == 200 and r.json() == {"ok": True}


# -- files a killed process leaves in the state dir ------------------------------------------------

KEY = "nvapi-review-persist"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


class _Served:
    """``nvcf-emulate --state-dir`` serving ``gated_app`` of tests/test_persistence_functions."""

    def __init__(self, state: Path, *extra: str) -> None:
        args = [sys.executable, "-m", "nvcf_emulator.cli", "--port", "0", "--state-dir", str(state)]
        args += ["--api-key", f"{KEY}=nca-review", "--log-level", "WARNING"]
        args += ["--inference-url", "/infer", "--health-uri", "/health"]
        args += ["--function", "gated=tests.test_persistence_functions:gated_app", *extra]
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "*"},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        self.fid = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            m = re.match(r"nvcf-emulate function gated functionId=(\S+)", line)
            if m:
                self.fid = m.group(1)
            if "listening on" in line:
                self.url = line.rsplit(" ", 1)[1]
                return
        self.stop(signal.SIGKILL)
        raise AssertionError("nvcf-emulate did not start")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "gate"
    (tmp_path / "gate").touch()  # a gated container still running (if any) finishes


def _served_asset(url: str, data: bytes) -> str:
    asset = requests.post(
        f"{url}/v2/nvcf/assets", headers=HEADERS, json={"contentType": "a/b", "description": "d"}
    ).json()
    r = requests.put(
        asset["uploadUrl"],
        data=data,
        headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"},
    )
    assert r.status_code == 200, r.text
    return str(asset["assetId"])


def test_staging_dirs_of_a_killed_process_are_removed_at_the_next_start(
    tmp_path: Path, gate: Path
) -> None:
    """kill -9 while a container works on a request with an asset: its staged copy of the
    asset (``<state>/inputAssets/<reqid>/<assetId>``, any size) and its output dir stay in the
    state dir. Nothing names them any more; the next start must remove them, as it removes
    the other files a crash leaves (partial uploads, result bodies without a record)."""
    state = tmp_path / "state"
    first = _Served(state, "--ram-staging-bytes", "0")
    try:
        asset_id = _served_asset(first.url, b"A" * 10_000)
        r = requests.post(
            f"{first.url}/v2/nvcf/pexec/functions/{first.fid}",
            headers={**HEADERS, "NVCF-POLL-SECONDS": "1", "NVCF-INPUT-ASSET-REFERENCES": asset_id},
            json={"gate": str(gate), "n": 1},
        )
        assert r.status_code == 202, r.text
        req_id = r.headers["NVCF-REQID"]
        staged = state / "inputAssets" / req_id / asset_id
        _wait(staged.exists)
        assert (state / "response" / req_id).is_dir()
    finally:
        first.stop(signal.SIGKILL)

    second = _Served(state)
    try:
        assert not (state / "inputAssets" / req_id).exists()
        assert not (state / "response" / req_id).exists()
        assert (
            requests.get(f"{second.url}/v2/nvcf/pexec/status/{req_id}", headers=HEADERS).status_code
            == 404
        )
    finally:
        assert second.stop() == 0


def test_keep_staged_keeps_the_dirs_a_killed_process_left(tmp_path: Path) -> None:
    """With ``keep_staged`` the user keeps request dirs to look at: a restart leaves them,
    and never touches what is not a request's dir."""
    state = tmp_path / "state"
    req_dir = state / "inputAssets" / "0b4a8f43-5d1c-4bb5-9a3e-2f8e8e9d1a10"
    mine = state / "response" / "notes.txt"
    Emulator(state_dir=state).close()
    req_dir.mkdir(parents=True)
    (req_dir / "x").write_bytes(b"x")
    mine.parent.mkdir()
    mine.write_text("mine")
    Emulator(state_dir=state, keep_staged=True).close()
    assert (req_dir / "x").exists()
    Emulator(state_dir=state).close()
    assert not req_dir.exists() and mine.read_text() == "mine"


# -- reset with a state dir ------------------------------------------------------------------------


def _large(req: ContainerRequest) -> dict[str, int]:
    (Path(req.headers["NVCF-LARGE-OUTPUT-DIR"]) / "big.bin").write_bytes(b"L" * 100)
    return {"n": req.json()["n"]}


def test_admin_reset_clears_the_state_dir_and_a_restart_finds_nothing(tmp_path: Path) -> None:
    """``POST /_emulator/reset`` on an emulator with a state dir: assets, functions, saved
    results (small bodies, large zips and their download tokens), the clock offset: nothing is
    found by the next start, and no file is left for them on disk."""
    state = tmp_path / "state"
    with Emulator(state_dir=state, always_async=True) as emu:
        fid, _ = emu.add_function(_large, name="large")
        small_fid, _ = emu.add_function(lambda req: {"small": True}, name="small")
        asset_id = _upload(emu, b"bytes")
        ids = []
        for target in (fid, fid, small_fid):
            r = requests.post(
                f"{emu.base_url}/v2/nvcf/pexec/functions/{target}",
                headers=emu.headers,
                json={"n": len(ids)},
            )
            ids.append(r.headers["NVCF-REQID"])
        _wait(lambda: all(inv.done for inv in emu.invocations))
        # One large result fetched: its zip stays for its download URL.
        r = requests.get(
            f"{emu.base_url}/v2/nvcf/pexec/status/{ids[0]}",
            headers=emu.headers,
            allow_redirects=False,
        )
        assert r.status_code == 302
        location = r.headers["Location"]
        emu.clock.advance(3600 * 5)
        assert sorted(p.suffix for p in (state / "results").iterdir()) == [".body", ".zip", ".zip"]
        assert requests.post(f"{emu.base_url}/_emulator/reset").status_code in (200, 204)
        assert requests.get(location).status_code == 404
        assert list((state / "results").iterdir()) == []
        assert emu.asset_path(asset_id) is None
    with Emulator(state_dir=state) as emu:
        assert emu.clock.offset == 0
        assert emu.stored_assets() == [] and emu.functions.all() == [] and emu.invocations == []
        for req_id in ids:
            r = requests.get(f"{emu.base_url}/v2/nvcf/pexec/status/{req_id}", headers=emu.headers)
            assert r.status_code == 404
        kinds = {
            kind
            for (kind,) in sqlite3.connect(state / "state.sqlite3").execute(
                "SELECT DISTINCT kind FROM records"
            )
        }
    assert kinds <= {"meta", "signer", "clock"}
    leftovers = [p for p in (state / "storage").rglob("*") if p.is_file()]
    assert leftovers == []


def test_a_root_dir_without_state_does_not_pile_up_the_bytes_of_past_runs(tmp_path: Path) -> None:
    """``nvcf-emulate --root-dir /big/disk`` (no state dir), run day after day: no record of
    an earlier run's assets or large results survives its exit, so their files can never be
    reached again. They stay after the run (to look at) and go at the next start, instead of
    filling the disk. Files that are not the emulator's, and a dir holding a state db, stay."""
    root = tmp_path / "root"
    with Emulator(root_dir=root, always_async=True) as emu:
        asset_id = _upload(emu, b"run one" * 100)
        path = emu.asset_path(asset_id)
        fid, _ = emu.add_function(_large, name="large")
        r = requests.post(
            f"{emu.base_url}/v2/nvcf/pexec/functions/{fid}", headers=emu.headers, json={"n": 1}
        )
        assert r.status_code == 202
        _wait(lambda: emu.invocations[-1].done)
    assert path is not None and path.read_bytes() == b"run one" * 100  # there to look at
    assert list((root / "results").iterdir()) == []  # closed: its large results went
    # What kill -9 leaves there: a large result's zip, and one being written.
    (root / "results" / "0b4a8f43-5d1c-4bb5-9a3e-2f8e8e9d1a10.zip").write_bytes(b"zip")
    (root / "results" / ".0b4a8f43-5d1c-4bb5-9a3e-2f8e8e9d1a11.zip.1f2e.tmp").write_bytes(b"z")
    theirs = [root / "storage" / "objects" / "README", root / "results" / "notes.txt"]
    for p in theirs:
        p.write_text("not the emulator's")
    with Emulator(root_dir=root) as emu:
        assert emu.stored_assets() == []
        assert not path.exists()
        assert sorted(p for p in root.rglob("*") if p.is_file() and p.name[0] != ".") == sorted(
            theirs
        )
    # A state dir opened as a plain root dir (a mistyped option) loses nothing.
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        kept = _upload(emu, b"kept")
    with Emulator(root_dir=state) as emu:
        assert emu.stored_assets() == []
    with Emulator(state_dir=state) as emu:
        assert emu.asset_bytes(kept) == b"kept"


# -- who may read the state --------------------------------------------------------------------


def test_the_state_db_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """state.sqlite3 holds the URL-signing secret (whoever reads it can sign upload URLs for
    any asset) and functions' secrets: on a shared machine, other users must not read it (nor
    its -wal/-shm files), as they cannot read the private temp dir an emulator uses without a
    state dir. A db an older version left readable is tightened at start."""
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
        emu.functions.create(
            account,
            {
                "name": "with-secret",
                "inferenceUrl": "/infer",
                "containerImage": "x/y:1",
                "secrets": [{"name": "token", "value": "hunter2"}],
            },
        )
        files = sorted(state.glob("state.sqlite3*"))
        assert [f.name for f in files] == [
            "state.sqlite3",
            "state.sqlite3-shm",
            "state.sqlite3-wal",
        ]
        modes = {f.name: oct(f.stat().st_mode & 0o777) for f in files}
    assert modes == dict.fromkeys(modes, "0o600")
    (state / "state.sqlite3").chmod(0o644)
    Emulator(state_dir=state).close()
    assert (state / "state.sqlite3").stat().st_mode & 0o077 == 0
