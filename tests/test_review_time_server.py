"""Review: time travel in server mode, where the clock meets sockets.

A demanding user tests TTLs against a served emulator: freezegun (frozen, ticking, ``move_to``)
and time-machine move the clock in the test process while the server's threads answer real
sockets; ``RemoteEmulator`` moves the clock of an ``nvcf-emulate`` in another process, across a
``--state-dir`` restart. A frozen clock must never hang the server, stretch its stop or make it
print tracebacks; every TTL must follow the moved clock.
"""

from __future__ import annotations

import email.utils
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import time_machine
from freezegun import freeze_time

from nvcf_emulator import Emulator, RemoteEmulator
from nvcf_emulator.domain.clock import monotonic as real_monotonic
from nvcf_emulator.server import EmulatorServer
from nvcf_emulator.worker import ContainerRequest

from .conftest import Api, Gate

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HOUR = 3600.0
DAY = 24 * HOUR
EXE = str(Path(sys.executable).with_name("nvcf-emulate"))


def _server_api(server: EmulatorServer) -> Api:
    return Api("server", server.url, server.emulator)


@pytest.fixture
def server_api(nvcf_server: EmulatorServer) -> Iterator[Api]:
    yield _server_api(nvcf_server)
    nvcf_server.emulator.clock.reset()


def _assert_expired(r: requests.Response) -> None:
    assert r.status_code == 403, r.text
    assert "<Code>AccessDenied</Code>" in r.text
    assert "<Message>Request has expired</Message>" in r.text


@contextmanager
def _served(tmp_path: Path, **kwargs: Any) -> Iterator[EmulatorServer]:
    """A server of an emulator that is not active (``with emu:`` would route calls for the
    server's URL in-process): every call here goes through its socket."""
    emu = Emulator(root_dir=tmp_path)
    try:
        with emu.serve("127.0.0.1", 0, **kwargs) as server:
            yield server
    finally:
        emu.close()


def _get_asset(api: Api, asset_id: str) -> requests.Response:
    return requests.get(f"{api.base_url}/v2/nvcf/assets/{asset_id}", headers=api.headers)


class _Calls:
    """HTTP calls run in threads; what each one ended with (a response or an error)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.outcomes: list[object] = []

    def start(self, fn: Callable[[], object]) -> None:
        def run() -> None:
            try:
                self.outcomes.append(fn())
            except Exception as exc:  # a connection the server closed: expected here
                self.outcomes.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float = 15.0) -> None:
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a call never returned"


# -- stopping a server while time is frozen ------------------------------------------------------


def test_stopping_under_frozen_freezegun_keeps_the_join_budget_for_all_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stop()`` gives stuck connection threads JOIN_SECONDS all together: under a frozen
    freezegun its deadline must not be re-granted to each thread in turn (6 threads, 2 s:
    12 s instead of 2)."""
    import nvcf_emulator.server as server_module

    monkeypatch.setattr(server_module, "JOIN_SECONDS", 2.0)
    release = threading.Event()

    def stuck(req: Any) -> dict[str, bool]:
        release.wait(20)
        return {"ok": True}

    calls = _Calls()
    emu = Emulator(root_dir=tmp_path)  # not active: the calls go through the socket
    server = emu.serve("127.0.0.1", 0)
    try:
        fid, _ = emu.add_function(stuck, name="stuck")
        url = f"{server.url}/v2/nvcf/pexec/functions/{fid}"
        headers = {**emu.headers, "NVCF-POLL-SECONDS": "20"}
        for _ in range(6):
            calls.start(lambda: requests.post(url, headers=headers, json={}, timeout=30))
        deadline = real_monotonic() + 10
        while server.busy_connections < 6:
            assert real_monotonic() < deadline, "the calls never reached the server"
            time.sleep(0.01)
        with freeze_time(START):
            began = real_monotonic()
            server.stop(grace=0.1)
            took = real_monotonic() - began
        # grace + JOIN_SECONDS is 2.1 s; a deadline re-granted per thread makes it 12.1 s
        assert took < 7.0, f"stop() took {took:.1f} s under a frozen clock"
    finally:
        release.set()
        server.stop()
        calls.join()
        emu.close()


# -- connections that send nothing ---------------------------------------------------------------


def test_new_connection_that_sends_nothing_closes_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A browser's spare connection (or a health prober's) that never sends a request is closed
    after the idle timeout as quietly as an idle keep-alive connection, not with socketserver's
    "Exception occurred during processing of request" and an OSError on stderr."""
    with _served(tmp_path, idle_timeout=0.3) as srv:
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            assert sock.recv(10) == b""  # closed by the server after its idle timeout
        r = requests.get(f"{srv.url}/_emulator/health", timeout=10)  # and it still serves
        assert r.status_code == 200
    err = capsys.readouterr().err
    assert "Exception occurred during processing" not in err, err
    assert "cannot read from timed out object" not in err, err


def test_idle_timeout_runs_in_real_time_under_frozen_freezegun(tmp_path: Path) -> None:
    with _served(tmp_path, idle_timeout=0.3) as srv, freeze_time(START), requests.Session() as s:
        for _ in range(3):  # kept alive, all at the frozen instant
            r = s.get(f"{srv.url}/_emulator/clock", timeout=10)
            assert r.json()["now"] == "2026-03-01T12:00:00.000Z"
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            sock.sendall(b"GET /_emulator/health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                answer += sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            assert sock.recv(10) == b""  # then closed after 0.3 real seconds, frozen or not


# -- freezegun ticking, move_to, time-machine backwards, over the socket ------------------------


def test_server_follows_ticking_freezegun_and_move_to_both_ways(server_api: Api) -> None:
    with freeze_time(START, tick=True) as frozen:
        asset = server_api.create_asset()
        frozen.move_to(START + timedelta(seconds=3601))  # type: ignore[attr-defined]
        _assert_expired(server_api.upload(asset))
        frozen.move_to(START + timedelta(seconds=10))  # type: ignore[attr-defined]
        assert server_api.upload(asset, b"back in time").status_code == 200
        r = _get_asset(server_api, asset["assetId"])
        # createdAt is the upload's time (S3's LastModified), on the moved clock
        assert r.json()["asset"]["createdAt"].startswith("2026-03-01T12:00:1")


def test_server_under_time_machine_moved_back_past_the_skew_is_not_valid_yet(
    server_api: Api,
) -> None:
    with time_machine.travel(START, tick=False) as traveller:
        asset = server_api.create_asset()
        traveller.shift(-899)  # within S3's 15 minutes of skew
        assert server_api.upload(asset, b"skewed").status_code == 200
        traveller.shift(-2)
        r = server_api.upload(asset)
        assert r.status_code == 403
        assert "<Code>AccessDenied</Code>" in r.text
        assert "<ServerTime>2026-03-01T11:44:59Z</ServerTime>" in r.text


def test_server_threads_do_not_run_an_auto_ticking_freezegun_on(
    nvcf_server: EmulatorServer,
) -> None:
    """freeze_time(auto_tick_seconds=60) moves the time 60 s at each reading. The emulator
    reads its clock from its own threads too: the server's sweeper, every real second, moved
    the test's time on by a minute a second while the test did nothing."""
    with freeze_time(START, auto_tick_seconds=60):
        for _ in range(5):  # five seconds of the sweeper's loop
            sweeper = threading.Thread(target=nvcf_server.emulator.maybe_sweep)
            sweeper.start()
            sweeper.join(10)
        assert nvcf_server.clock.as_datetime() == START
        assert datetime.now(UTC) == START  # the test's first reading: no tick taken yet


def test_url_used_15_minutes_before_its_signing_gets_s3s_not_yet_valid(server_api: Api) -> None:
    with time_machine.travel(START, tick=False) as traveller:
        asset = server_api.create_asset()
        traveller.shift(-901)
        r = server_api.upload(asset)
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text
    assert "<Message>Request is not yet valid</Message>" in r.text
    assert "<Expires>2026-03-01T13:00:00Z</Expires>" in r.text
    assert "<ServerTime>2026-03-01T11:44:59Z</ServerTime>" in r.text


def test_admin_set_under_freezegun_moves_from_the_frozen_time(server_api: Api) -> None:
    admin = RemoteEmulator(server_api.base_url)
    with freeze_time(START) as frozen:
        admin.clock.set("2026-03-02T12:00:00Z")  # a day after the frozen instant
        asset = server_api.create_asset()
        assert "X-Amz-Date=20260302T120000Z" in asset["uploadUrl"]
        frozen.tick(3601)  # freezegun still moves it, on top of the admin's day
        _assert_expired(server_api.upload(asset))
        assert admin.clock.now() == pytest.approx((START + timedelta(days=1)).timestamp() + 3601)


def _invoke(api: Api, fid: str, poll: int) -> requests.Response:
    return requests.post(
        f"{api.base_url}/v2/nvcf/pexec/functions/{fid}",
        headers={**api.headers, "NVCF-POLL-SECONDS": str(poll)},
        json={"hello": "world"},
        allow_redirects=False,
        timeout=30,
    )


def _poll(api: Api, req_id: str, poll: int = 1) -> requests.Response:
    return requests.get(
        f"{api.base_url}/v2/nvcf/pexec/status/{req_id}",
        headers={**api.headers, "NVCF-POLL-SECONDS": str(poll)},
        allow_redirects=False,
        timeout=30,
    )


def test_server_poll_windows_run_in_real_time_and_records_expire_on_frozen_freezegun(
    server_api: Api, gate: Gate
) -> None:
    fid, _ = server_api.emulator.add_function(gate, name="slow")
    with freeze_time(START) as frozen:
        first = _invoke(server_api, fid, 1)  # the gate is shut: only the 1 s window ends it
        assert first.status_code == 202, first.text
        kept, lost = first.headers["NVCF-REQID"], _invoke(server_api, fid, 1)
        assert lost.status_code == 202
        assert _poll(server_api, kept).status_code == 202  # a status poll's window too
        gate.open()
        r = _poll(server_api, kept, 5)
        assert r.status_code == 200, r.text
        assert r.json() == {"done": True}
        frozen.tick(3601)  # the request record lives 1 hour on the clock
        r = _poll(server_api, lost.headers["NVCF-REQID"])
        assert r.status_code == 404, r.text


@pytest.mark.nvcf(container_timeout=1)
def test_server_container_timeout_runs_in_real_time_under_frozen_freezegun(
    server_api: Api, gate: Gate
) -> None:
    fid, _ = server_api.emulator.add_function(gate, name="hung")
    with freeze_time(START):
        r = _invoke(server_api, fid, 5)  # the 1 s container timeout ends it, not the window
    assert r.status_code == 500, r.text
    assert r.headers["NVCF-STATUS"] == "errored"


def _large_output(req: ContainerRequest) -> dict[str, bool]:
    (Path(req.headers["NVCF-LARGE-OUTPUT-DIR"]) / "result.bin").write_bytes(b"big result")
    return {"ok": True}


def test_server_large_result_link_lives_24h_under_time_machine(server_api: Api) -> None:
    fid, _ = server_api.emulator.add_function(_large_output, name="large")
    with time_machine.travel(START, tick=False) as traveller:
        r = _invoke(server_api, fid, 5)
        assert r.status_code == 302, r.text
        location = r.headers["Location"]
        assert location.startswith(server_api.base_url)
        traveller.shift(DAY - 1)
        assert requests.get(location, timeout=30).status_code == 200
        traveller.shift(2)
        _assert_expired(requests.get(location, timeout=30))


# -- RemoteEmulator's clock, as Clock's ----------------------------------------------------------


def test_remote_clock_advance_takes_a_timedelta_as_clock_does(nvcf_server: EmulatorServer) -> None:
    remote = RemoteEmulator(nvcf_server.url)
    before = nvcf_server.clock.offset
    remote.clock.advance(timedelta(hours=25))  # Clock.advance takes one; README: "the same"
    assert nvcf_server.clock.offset == pytest.approx(before + 25 * HOUR)


def test_remote_clock_set_takes_a_timestamp_and_a_naive_datetime_as_clock_does(
    nvcf_server: EmulatorServer,
) -> None:
    remote = RemoteEmulator(nvcf_server.url)
    target = START.timestamp() + 0.25
    assert remote.clock.set(target) == pytest.approx(target, abs=1)
    assert nvcf_server.clock.now() == pytest.approx(target, abs=1)
    remote.clock.set(datetime(2027, 1, 1))  # naive: UTC
    assert nvcf_server.clock.as_datetime().year == 2027


def test_remote_clock_reads_as_datetime_offset_and_resets(nvcf_server: EmulatorServer) -> None:
    remote = RemoteEmulator(nvcf_server.url)
    remote.clock.set("2030-06-01T00:00:00Z")
    assert remote.clock.as_datetime().date() == datetime(2030, 6, 1).date()
    assert remote.clock.as_datetime().tzinfo is not None
    assert remote.clock.offset == pytest.approx(nvcf_server.clock.offset)
    remote.clock.reset()
    assert nvcf_server.clock.offset == 0
    assert remote.clock.offset == 0


def test_remote_clock_refuses_what_clock_refuses_before_sending(
    nvcf_server: EmulatorServer,
) -> None:
    remote = RemoteEmulator(nvcf_server.url)
    with pytest.raises(ValueError, match="number of seconds or a timedelta"):
        remote.clock.advance("a day")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="POSIX timestamp"):
        remote.clock.set(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot advance"):
        remote.clock.advance(float("nan"))
    assert nvcf_server.clock.offset == 0


# -- the Date header ------------------------------------------------------------------------------


def test_date_header_is_the_emulators_clock(server_api: Api) -> None:
    """S3 and NVCF date their answers with their own clock; the emulator's is the moved one, so
    ``Date`` agrees with ``ServerTime`` in an S3 error and with ``/_emulator/clock``."""
    RemoteEmulator(server_api.base_url).clock.set("2030-06-01T08:00:00Z")
    r = requests.get(f"{server_api.base_url}/_emulator/clock")
    served = email.utils.parsedate_to_datetime(r.headers["Date"])
    assert served == pytest.approx(
        datetime.fromtimestamp(r.json()["epoch"], UTC), abs=timedelta(seconds=2)
    )


# -- nvcf-emulate in another process, across a --state-dir restart --------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Process:
    """``nvcf-emulate`` in a subprocess; always stopped."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.fullmatch(r"nvcf-emulate listening on (http://127\.0\.0\.1:\d+)\n", line)
        if not match:
            self.stop()
            pytest.fail(f"nvcf-emulate did not start: {line!r}")
        self.url = match.group(1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def test_remote_clock_moves_a_separate_server_and_its_offset_survives_a_restart(
    tmp_path: Path,
) -> None:
    port = str(_free_port())
    args = ("--port", port, "--state-dir", str(tmp_path / "state"))
    meta = {"contentType": "text/plain", "description": "notes"}
    put_headers = {"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "notes"}
    auth = {"Authorization": "Bearer nvapi-any"}

    first = _Process(*args)
    try:
        remote = RemoteEmulator(first.url, timeout=10)
        remote.clock.advance(timedelta(days=3))
        kept = requests.post(f"{first.url}/v2/nvcf/assets", headers=auth, json=meta).json()
        r = requests.put(kept["uploadUrl"], data=b"kept", headers=put_headers)
        assert r.status_code == 200, r.text
        late = requests.post(f"{first.url}/v2/nvcf/assets", headers=auth, json=meta).json()
        remote.clock.advance(30 * 60)
    finally:
        first.stop()

    second = _Process(*args)
    try:
        remote = RemoteEmulator(second.url, timeout=10)
        assert remote.clock.offset == pytest.approx(3 * DAY + 30 * 60, abs=5)
        remote.clock.advance(29 * 60)  # 59 minutes after signing, on the saved clock
        r = requests.put(late["uploadUrl"], data=b"in time", headers=put_headers)
        assert r.status_code == 200, r.text
        remote.clock.advance(2 * 60)
        _assert_expired(requests.put(late["uploadUrl"], data=b"late", headers=put_headers))
        remote.clock.advance(DAY)
        r = requests.get(f"{second.url}/v2/nvcf/assets/{kept['assetId']}", headers=auth)
        assert r.status_code == 404
        remote.reset()
        assert remote.clock.offset == 0
    finally:
        second.stop()

    third = _Process(*args)
    try:
        assert RemoteEmulator(third.url, timeout=10).clock.offset == 0  # the reset was saved
    finally:
        third.stop()


def test_asgi_container_sleeps_in_real_time_under_frozen_freezegun(nvcf: Emulator) -> None:
    """An ASGI app's ``asyncio.sleep`` (and its health route) ends under a frozen freezegun:
    the container's event loop keeps real time, as the worker's waits do. Before, the loop
    read freezegun's frozen clock deep inside and the sleep never ended: the call stayed a
    202 until the container timeout."""
    import asyncio

    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    async def health() -> str:
        await asyncio.sleep(0.05)
        return "ok"

    @app.post("/infer")
    async def infer() -> dict[str, str]:
        await asyncio.sleep(0.05)
        return {"slept": "yes"}

    with freeze_time(START):
        fid, _ = nvcf.add_function(app, name="sleepy", inference_url="/infer", health_uri="/health")
        r = requests.post(
            f"https://api.nvcf.nvidia.com/v2/nvcf/pexec/functions/{fid}",
            headers={**nvcf.headers, "NVCF-POLL-SECONDS": "5"},
            json={},
            timeout=30,
        )
    assert r.status_code == 200, r.text
    assert r.json() == {"slept": "yes"}


def test_the_emulators_own_request_handling_does_not_tick_an_auto_ticking_freezegun(
    nvcf: Emulator,
) -> None:
    """Under ``freeze_time(auto_tick_seconds=60)`` every read of the time moves it on. The
    emulator's timings (the call log's duration, the in-process read timeout) read real time,
    so a request handled by its app moves the clock by nothing of its own: 4 of the 8 ticks a
    ``requests`` call made were the emulator's (480 s a call at 60 s a tick)."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(
        path="/v2/nvcf/assets", base_url="https://api.nvcf.nvidia.com", headers=nvcf.headers
    ).get_environ()
    with freeze_time(START, auto_tick_seconds=60):
        before = nvcf.clock.now()
        status: list[str] = []
        body = b"".join(nvcf.app(environ, lambda s, h, e=None: status.append(s)))
        after = nvcf.clock.now()
    assert status == ["200 OK"], body
    assert after == before
