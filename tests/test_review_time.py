"""Review: time travel and every time-based rule, as a demanding user would test them.

The emulator has one clock; these tests move it with freezegun (frozen and ticking),
time-machine (``tick=False`` then ``shift``), ``emu.clock`` and the admin endpoint, forwards and
backwards, in-process and over a socket, and check what a client sees at each boundary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import time_machine
from freezegun import freeze_time

from nvcf_emulator import Emulator
from nvcf_emulator.domain.clock import monotonic as real_monotonic
from nvcf_emulator.server import EmulatorServer
from nvcf_emulator.worker import ContainerRequest

from .conftest import Api, Gate

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HOUR = 3600.0
DAY = 24 * HOUR


# -- helpers -------------------------------------------------------------------------------------


def _api(emu: Emulator) -> Api:
    return Api("inprocess", emu.base_url, emu)


def _server_api(server: EmulatorServer) -> Api:
    return Api("server", server.url, server.emulator)


def _get_asset(api: Api, asset_id: str) -> requests.Response:
    return requests.get(f"{api.base_url}/v2/nvcf/assets/{asset_id}", headers=api.headers)


def _list_ids(api: Api) -> list[str]:
    r = requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
    assert r.status_code == 200, r.text
    return [a["assetId"] for a in r.json()["assets"]]


def _amz_date(url: str) -> str:
    return url.split("X-Amz-Date=")[1][:16]


def _invoke(
    api: Api, fid: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> requests.Response:
    return requests.post(
        f"{api.base_url}/v2/nvcf/pexec/functions/{fid}",
        headers={**api.headers, **(headers or {})},
        json={"hello": "world"},
        **kwargs,
    )


def _poll(api: Api, req_id: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(
        f"{api.base_url}/v2/nvcf/pexec/status/{req_id}",
        headers={**api.headers, **(headers or {})},
        allow_redirects=False,
    )


def _wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


def _settled(emu: Emulator, req_id: str) -> bool:
    inv = next((i for i in emu.invocations if i.request_id == req_id), None)
    return inv is not None and inv.outcome is not None


def _assert_expired_xml(r: requests.Response) -> None:
    assert r.status_code == 403, r.text
    assert "<Code>AccessDenied</Code>" in r.text
    assert "<Message>Request has expired</Message>" in r.text


class _Background:
    """A call run in a thread; always joined."""

    def __init__(self, fn: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:  # pragma: no cover - reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 10.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background call never returned"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def server_api(nvcf_server: EmulatorServer) -> Iterator[Api]:
    yield _server_api(nvcf_server)
    nvcf_server.emulator.clock.reset()


# -- upload URLs: 1 hour, and 15 minutes of skew -------------------------------------------------


def test_upload_url_exact_boundary_3600_s_valid_3600_001_s_expired(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with time_machine.travel(START, tick=False) as traveller:
        first = api.create_asset()
        second = api.create_asset()
        assert _amz_date(first["uploadUrl"]) == "20260301T120000Z"
        traveller.shift(3600)
        assert api.upload(first, b"just in time").status_code == 200
        traveller.shift(0.001)
        _assert_expired_xml(api.upload(second, b"one millisecond late"))
    assert nvcf.asset_bytes(first["assetId"]) == b"just in time"
    with pytest.raises(KeyError):
        nvcf.asset_bytes(second["assetId"])


def test_upload_url_expires_under_freezegun_ticking(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with freeze_time(START, tick=True) as frozen:
        asset = api.create_asset()
        again = api.create_asset()
        assert _amz_date(asset["uploadUrl"]) == "20260301T120000Z"
        assert api.upload(asset, b"ticking").status_code == 200  # real ms passed: still valid
        frozen.tick(3601)
        _assert_expired_xml(api.upload(again, b"late"))
        r = api.upload(asset, b"re-upload with the old url")
        _assert_expired_xml(r)
        assert "<ServerTime>2026-03-01T13:00:01Z</ServerTime>" in r.text
    assert nvcf.asset_bytes(asset["assetId"]) == b"ticking"


def test_upload_url_time_machine_shift_back_and_forth(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with time_machine.travel(START, tick=False) as traveller:
        asset = api.create_asset()
        traveller.shift(2 * HOUR)
        _assert_expired_xml(api.upload(asset))
        traveller.shift(-2 * HOUR + 10)  # back inside the hour: valid again, as S3 decides
        assert api.upload(asset, b"back in time").status_code == 200
    assert nvcf.asset_bytes(asset["assetId"]) == b"back in time"


def test_url_used_before_it_was_signed_skew_899_ok_901_not_valid_yet(nvcf: Emulator) -> None:
    api = _api(nvcf)
    nvcf.clock.set(START)
    ok = api.create_asset()
    late = api.create_asset()
    nvcf.clock.set(START - timedelta(seconds=899))
    assert api.upload(ok, b"within skew").status_code == 200
    nvcf.clock.set(START - timedelta(seconds=901))
    r = api.upload(late, b"too early")
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text
    assert "<Message>Request is not yet valid</Message>" in r.text
    assert "<X-Amz-Date>20260301T120000Z</X-Amz-Date>" in r.text
    assert "<ServerTime>2026-03-01T11:44:59Z</ServerTime>" in r.text


def test_upload_that_outlives_its_url_while_streaming_succeeds(nvcf: Emulator) -> None:
    """S3 checks a pre-signed URL when the request starts: a slow upload that started in time
    completes, even if the URL expires while the body streams."""
    api = _api(nvcf)
    nvcf.clock.set(START)
    asset = api.create_asset()
    nvcf.clock.advance(3590)

    def body() -> Iterator[bytes]:
        yield b"first half, "
        nvcf.clock.advance(60)  # the URL expires mid-body
        yield b"second half"

    r = api.upload(asset, body())
    assert r.status_code == 200, r.text
    assert nvcf.asset_bytes(asset["assetId"]) == b"first half, second half"
    assert _get_asset(api, asset["assetId"]).status_code == 200


# -- freezegun before vs after the emulator is created ------------------------------------------


def test_emulator_created_inside_freezegun_signs_with_frozen_time(tmp_path: Path) -> None:
    with (
        freeze_time("2024-02-29 23:59:30") as frozen,
        Emulator(root_dir=tmp_path / "root") as emu,
    ):
        api = _api(emu)
        asset = api.create_asset()
        assert _amz_date(asset["uploadUrl"]) == "20240229T235930Z"
        assert "/20240229/" in requests.utils.unquote(asset["uploadUrl"])
        api.upload(asset, b"leap day")
        r = _get_asset(api, asset["assetId"])
        assert r.json()["asset"]["createdAt"] == "2024-02-29T23:59:30.000Z"
        frozen.tick(DAY - 1)
        assert _get_asset(api, asset["assetId"]).status_code == 200
        frozen.tick(2)
        assert _get_asset(api, asset["assetId"]).status_code == 404
        assert emu.stored_assets() == []


def test_emulator_created_before_freezegun_follows_it(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with freeze_time("2021-06-01 00:00:00") as frozen:
        asset = api.new_asset(b"past")
        assert _amz_date(asset["uploadUrl"]) == "20210601T000000Z"
        frozen.tick(DAY + 1)
        assert _get_asset(api, asset["assetId"]).status_code == 404
        assert _list_ids(api) == []


def test_leaving_freezegun_jumps_to_now_and_years_old_things_expire(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with freeze_time("2020-01-01 00:00:00"):
        asset = api.new_asset(b"from 2020")
        unused = api.create_asset()
        assert _get_asset(api, asset["assetId"]).status_code == 200
    # Back to the real clock: six years later, the asset and the URL are long gone.
    assert _get_asset(api, asset["assetId"]).status_code == 404
    r = api.upload(unused)
    assert r.status_code == 403
    assert "Request has expired" in r.text
    assert nvcf.stored_assets() == []


def test_emulator_clock_offset_stacks_on_top_of_freezegun(nvcf: Emulator) -> None:
    api = _api(nvcf)
    nvcf.clock.advance(HOUR)
    with freeze_time(START):
        asset = api.create_asset()
        assert _amz_date(asset["uploadUrl"]) == "20260301T130000Z"
        assert nvcf.clock.as_datetime() == START + timedelta(hours=1)


# -- assets: 24 hours ----------------------------------------------------------------------------


def test_asset_lives_24h_from_upload_not_from_creation(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with time_machine.travel(START, tick=False) as traveller:
        asset = api.create_asset()
        traveller.shift(50 * 60)  # uploaded 50 min after creation
        assert api.upload(asset, b"late upload").status_code == 200
        traveller.shift(DAY - 50 * 60 + 1)  # 24 h after creation, 23h10m after upload
        r = _get_asset(api, asset["assetId"])
        assert r.status_code == 200
        assert r.json()["asset"]["createdAt"] == "2026-03-01T12:50:00.000Z"
        traveller.shift(50 * 60 - 2)  # 24 h after upload minus 1 s
        assert _get_asset(api, asset["assetId"]).status_code == 200
        traveller.shift(1.001)
        assert _get_asset(api, asset["assetId"]).status_code == 404


def test_listing_after_24h_drops_only_the_expired_in_order(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with time_machine.travel(START, tick=False) as traveller:
        ids = []
        for _ in range(3):
            ids.append(api.new_asset(b"x")["assetId"])
            traveller.shift(HOUR)
        # now: START + 3 h; uploads at +0, +1 h, +2 h
        assert _list_ids(api) == sorted(ids)
        traveller.shift(DAY - 3 * HOUR + 30 * 60)  # START + 24h30m
        assert _list_ids(api) == sorted(ids[1:])
        traveller.shift(HOUR)  # START + 25h30m
        assert _list_ids(api) == [ids[2]]
        traveller.shift(HOUR)
        assert _list_ids(api) == []
    assert nvcf.stored_assets() == []


@pytest.mark.nvcf(list_limit=2)
def test_listing_limit_counts_live_assets_only(nvcf: Emulator) -> None:
    api = _api(nvcf)
    nvcf.clock.set(START)
    old = [api.new_asset()["assetId"] for _ in range(3)]
    nvcf.clock.advance(HOUR)
    fresh = sorted(api.new_asset()["assetId"] for _ in range(2))
    nvcf.clock.advance(DAY - HOUR / 2)  # the first three expired, the last two not
    assert _list_ids(api) == fresh
    assert all(_get_asset(api, a).status_code == 404 for a in old)


def test_expired_asset_cannot_be_invoked_or_deleted(nvcf: Emulator) -> None:
    api = _api(nvcf)
    fid, _ = nvcf.add_function(lambda req: {"ok": True}, name="echo")
    asset = api.new_asset(b"bytes")
    nvcf.clock.advance(DAY + 1)
    r = _invoke(api, fid, {"NVCF-INPUT-ASSET-REFERENCES": asset["assetId"]})
    assert r.status_code == 404
    assert f"failed to find asset {asset['assetId']}" in r.json()["detail"]
    d = requests.delete(f"{api.base_url}/v2/nvcf/assets/{asset['assetId']}", headers=api.headers)
    assert d.status_code == 404


def test_clock_moved_back_before_the_upload_keeps_asset_until_24h_after_upload(
    nvcf: Emulator,
) -> None:
    api = _api(nvcf)
    nvcf.clock.set(START)
    asset = api.new_asset(b"uploaded at START")
    nvcf.clock.set(START - timedelta(days=10))  # before the upload: not expired
    assert _get_asset(api, asset["assetId"]).status_code == 200
    assert _list_ids(api) == [asset["assetId"]]
    nvcf.clock.set(START + timedelta(hours=23, minutes=59))
    assert _get_asset(api, asset["assetId"]).status_code == 200
    nvcf.clock.set(START + timedelta(hours=24, minutes=1))
    assert _get_asset(api, asset["assetId"]).status_code == 404


@pytest.mark.nvcf(asset_ttl=60)
def test_asset_expiring_while_its_upload_streams_is_coherent(nvcf: Emulator) -> None:
    """The (never uploaded) asset's record expires mid-body. Whatever the PUT answers, the
    client must then see the same thing: 200 means the asset is there with these bytes; an
    error means it is not, and no bytes are left behind."""
    api = _api(nvcf)
    nvcf.clock.set(START)
    asset = api.create_asset()
    nvcf.clock.advance(50)

    def body() -> Iterator[bytes]:
        yield b"a" * 1024
        nvcf.clock.advance(30)  # past the asset's 60 s
        nvcf.sweep()  # the server's sweeper runs meanwhile
        yield b"b" * 1024

    r = api.upload(asset, body())
    got = _get_asset(api, asset["assetId"])
    if r.status_code == 200:
        assert got.status_code == 200
        assert nvcf.asset_bytes(asset["assetId"]) == b"a" * 1024 + b"b" * 1024
    else:
        assert r.status_code == 404, r.text
        assert "<Code>NoSuchUpload</Code>" in r.text
        assert got.status_code == 404
        assert nvcf.stored_assets() == []
        assert not any((nvcf.root / "storage").rglob(asset["assetId"]))


@pytest.mark.nvcf(asset_ttl=60)
def test_reupload_while_uploaded_asset_expires_mid_stream_is_coherent(nvcf: Emulator) -> None:
    api = _api(nvcf)
    nvcf.clock.set(START)
    asset = api.new_asset(b"first version")
    key = api.key_of(asset["assetId"])

    def body() -> Iterator[bytes]:
        yield b"second "
        nvcf.clock.advance(61)
        nvcf.sweep()
        yield b"version"

    r = api.upload(asset, body())
    got = _get_asset(api, asset["assetId"])
    if r.status_code == 200:
        assert got.status_code == 200
        assert api.bytes_at(key) == b"second version"
    else:
        assert got.status_code == 404
        assert api.bytes_at(key) is None
        assert _list_ids(api) == []


# -- sweeps --------------------------------------------------------------------------------------


def test_sweep_after_clock_jumps_backwards_then_forwards(nvcf: Emulator) -> None:
    api = _api(nvcf)
    asset = api.new_asset(b"x")
    key = api.key_of(asset["assetId"])
    nvcf.clock.advance(-30 * DAY)  # backwards: the next request sweeps, nothing expires
    assert requests.get(f"{api.base_url}/_emulator/health").status_code == 200
    assert api.bytes_at(key) == b"x"
    nvcf.clock.advance(30 * DAY + DAY + 1)  # past the asset's lifetime, no lookup of it
    assert requests.get(f"{api.base_url}/_emulator/health").status_code == 200
    assert api.bytes_at(key) is None
    assert nvcf.stored_assets() == []


def test_sweep_runs_on_the_first_request_after_a_small_backwards_jump(nvcf: Emulator) -> None:
    api = _api(nvcf)
    nvcf.clock.set(START)
    assert requests.get(f"{api.base_url}/_emulator/health").status_code == 200  # sweeps
    asset = api.new_asset(b"x")
    key = api.key_of(asset["assetId"])
    nvcf.clock.advance(-50)  # a little back
    nvcf.clock.advance(DAY + 55)  # 24 h + 5 s after the upload
    assert requests.get(f"{api.base_url}/_emulator/health").status_code == 200
    assert api.bytes_at(key) is None


def test_admin_clock_endpoint_sweeps_at_once(nvcf: Emulator) -> None:
    api = _api(nvcf)
    key = api.key_of(api.new_asset(b"x")["assetId"])
    r = requests.post(f"{api.base_url}/_emulator/clock", json={"advance": DAY + 1})
    assert r.status_code == 200
    assert r.json()["offsetSeconds"] == pytest.approx(DAY + 1, abs=1)
    assert api.bytes_at(key) is None


# -- request records: 1 hour, and max(2 x poll, 10 s) after a 202 --------------------------------


def _async_result(api: Api, poll_seconds: int) -> str:
    fid, _ = api.emulator.add_function(lambda req: {"answer": 42}, name="fast")
    r = _invoke(api, fid, {"NVCF-POLL-SECONDS": str(poll_seconds)})
    assert r.status_code == 202, r.text
    req_id = r.headers["NVCF-REQID"]
    _wait_until(lambda: _settled(api.emulator, req_id))
    return str(req_id)


@pytest.mark.nvcf(always_async=True)
def test_finished_result_polled_after_59_minutes_is_delivered(nvcf: Emulator) -> None:
    api = _api(nvcf)
    req_id = _async_result(api, 3600)  # idle window max(2 x 3600, 10): only the 1 h TTL counts
    nvcf.clock.advance(59 * 60)
    r = _poll(api, req_id)
    assert r.status_code == 200, r.text
    assert r.json() == {"answer": 42}
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    assert _poll(api, req_id).status_code == 404


@pytest.mark.nvcf(always_async=True)
def test_finished_result_polled_after_61_minutes_is_404(nvcf: Emulator) -> None:
    api = _api(nvcf)
    req_id = _async_result(api, 3600)
    nvcf.clock.advance(61 * 60)
    r = _poll(api, req_id)
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["status"] == 404


@pytest.mark.nvcf(always_async=True)
def test_record_ttl_exact_boundary(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with time_machine.travel(START, tick=False) as traveller:
        req_id = _async_result(api, 3600)
        traveller.shift(HOUR - 0.001)
        assert _poll(api, req_id).status_code == 200
        other = _async_result(api, 3600)
        traveller.shift(HOUR)
        assert _poll(api, other).status_code == 404


@pytest.mark.nvcf(always_async=True)
@pytest.mark.parametrize(("window", "idle"), [(1, 10), (60, 120)])
def test_result_lost_after_idle_window_max_2x_poll_10s(
    nvcf: Emulator, window: int, idle: int
) -> None:
    api = _api(nvcf)
    kept = _async_result(api, window)
    lost = _async_result(api, window)
    nvcf.clock.advance(idle - 0.5)
    assert _poll(api, kept).status_code == 200
    nvcf.clock.advance(1)
    assert _poll(api, lost).status_code == 404


@pytest.mark.nvcf(always_async=True)
def test_result_expiry_under_freezegun(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with freeze_time(START) as frozen:
        kept = _async_result(api, 3600)
        lost = _async_result(api, 3600)
        frozen.tick(59 * 60)
        assert _poll(api, kept).json() == {"answer": 42}
        frozen.tick(2 * 60)
        assert _poll(api, lost).status_code == 404


# -- the poll window is real time; moving the clock while a POST waits ----------------------------


def test_frozen_clock_does_not_hang_the_poll_window(nvcf: Emulator, gate: Gate) -> None:
    api = _api(nvcf)
    fid, _ = nvcf.add_function(gate, name="slow")
    with freeze_time(START):
        started = real_monotonic()
        r = _invoke(api, fid, {"NVCF-POLL-SECONDS": "1"})
        elapsed = real_monotonic() - started
    assert r.status_code == 202
    assert r.headers["NVCF-STATUS"] == "in-progress"
    assert 0.9 <= elapsed < 8  # the window, not the gate (10 s)


def test_time_machine_frozen_does_not_hang_the_poll_window(nvcf: Emulator, gate: Gate) -> None:
    api = _api(nvcf)
    fid, _ = nvcf.add_function(gate, name="slow")
    with time_machine.travel(START, tick=False):
        started = real_monotonic()
        r = _invoke(api, fid, {"NVCF-POLL-SECONDS": "1"})
        elapsed = real_monotonic() - started
    assert r.status_code == 202
    assert 0.9 <= elapsed < 8  # the window, not the gate (10 s)


def test_clock_jump_while_post_waits_does_not_end_the_wait(nvcf: Emulator, gate: Gate) -> None:
    api = _api(nvcf)
    fid, _ = nvcf.add_function(gate, name="slow")
    call = _Background(lambda: _invoke(api, fid, {"NVCF-POLL-SECONDS": "10"}))
    assert gate.entered.wait(5)
    nvcf.clock.advance(30 * 60)  # 30 emulated minutes, well past the 10 s window
    gate.open()
    r = call.join()
    assert r.status_code == 200, r.text
    assert r.json() == {"done": True}


def test_clock_jump_past_container_timeout_does_not_time_out_container(
    nvcf: Emulator, gate: Gate
) -> None:
    api = _api(nvcf)
    fid, _ = nvcf.add_function(gate, name="slow")
    call = _Background(lambda: _invoke(api, fid, {"NVCF-POLL-SECONDS": "10"}))
    assert gate.entered.wait(5)
    nvcf.clock.advance(nvcf.config.container_timeout + 60)
    time.sleep(0.05)  # several watcher rounds (progress_interval 0.01 s)
    gate.open()
    r = call.join()
    assert r.status_code == 200, r.text


def test_clock_jump_past_the_record_ttl_while_post_waits(nvcf: Emulator, gate: Gate) -> None:
    """The record is past its hour when the POST's window ends: the request is cancelled, as
    a sweep would cancel it (500 errored, whatever other traffic did), and a later poll is
    404."""
    api = _api(nvcf)
    fid, _ = nvcf.add_function(gate, name="slow")
    call = _Background(lambda: _invoke(api, fid, {"NVCF-POLL-SECONDS": "1"}))
    assert gate.entered.wait(5)
    nvcf.clock.advance(2 * HOUR)
    r = call.join()
    assert (r.status_code, r.headers["NVCF-STATUS"]) == (500, "errored")
    req_id = r.headers["NVCF-REQID"]
    gate.open()
    assert _poll(api, req_id).status_code == 404


@pytest.mark.parametrize("jump", [-HOUR, 10 * 60], ids=["back", "forward"])
def test_poll_seconds_header_stays_within_the_window_when_the_clock_jumps(
    nvcf: Emulator, jump: float
) -> None:
    """NVCF-POLL-SECONDS is the seconds left of the client's poll window: never more than the
    window nor negative, whatever the clock did while the request waited in the queue (moved
    back, the queued request looks "created in the future")."""
    nvcf.configure(worker_threads=1)
    api = _api(nvcf)
    seen: list[str] = []
    first_in = threading.Event()
    release = threading.Event()

    def container(req: ContainerRequest) -> dict[str, bool]:
        seen.append(req.headers["NVCF-POLL-SECONDS"])
        if len(seen) == 1:
            first_in.set()
            release.wait(10)
        return {"ok": True}

    fid, _ = nvcf.add_function(container, name="one-worker")
    try:
        first = _Background(lambda: _invoke(api, fid, {"NVCF-POLL-SECONDS": "5"}))
        assert first_in.wait(5)
        second = _Background(lambda: _invoke(api, fid, {"NVCF-POLL-SECONDS": "5"}))
        _wait_until(lambda: nvcf.invocation_service.queue_depth(fid) == 1)
        nvcf.clock.advance(jump)
    finally:
        release.set()
    assert first.join().status_code == 200
    assert second.join().status_code == 200
    assert len(seen) == 2
    assert seen[0] == "4"  # what is left of 5 s, cut to whole seconds
    assert 0 <= int(seen[1]) <= 5, seen


# -- server mode (a real socket, server threads) ---------------------------------------------------


def test_server_follows_freezegun_in_the_test_thread(server_api: Api) -> None:
    with freeze_time(START) as frozen:
        asset = server_api.create_asset()
        assert _amz_date(asset["uploadUrl"]) == "20260301T120000Z"
        assert server_api.upload(asset, b"socket").status_code == 200
        r = _get_asset(server_api, asset["assetId"])
        assert r.json()["asset"]["createdAt"] == "2026-03-01T12:00:00.000Z"
        late = server_api.create_asset()
        frozen.tick(3601)
        _assert_expired_xml(server_api.upload(late))
        frozen.tick(DAY)
        assert _get_asset(server_api, asset["assetId"]).status_code == 404


def test_server_follows_time_machine_shift(server_api: Api) -> None:
    with time_machine.travel(START, tick=False) as traveller:
        asset = server_api.create_asset()
        assert _amz_date(asset["uploadUrl"]) == "20260301T120000Z"
        traveller.shift(3600)
        assert server_api.upload(asset, b"on the dot").status_code == 200
        traveller.shift(DAY - 0.5)
        assert _get_asset(server_api, asset["assetId"]).status_code == 200
        traveller.shift(1)
        assert _get_asset(server_api, asset["assetId"]).status_code == 404


def test_server_admin_clock_backwards_then_not_valid_yet(server_api: Api) -> None:
    asset = server_api.create_asset()
    # 60 s past S3's 15 minutes of skew: real seconds pass meanwhile (on a loaded machine too)
    r = requests.post(f"{server_api.base_url}/_emulator/clock", json={"advance": -960})
    assert r.status_code == 200
    r = server_api.upload(asset)
    assert r.status_code == 403
    assert "Request is not yet valid" in r.text
    requests.post(f"{server_api.base_url}/_emulator/clock", json={"advance": 962})
    assert server_api.upload(asset, b"now fine").status_code == 200


def test_server_sweeper_deletes_expired_bytes_without_requests(server_api: Api) -> None:
    asset = server_api.new_asset(b"x")
    key = server_api.key_of(asset["assetId"])
    server_api.emulator.clock.advance(DAY + 1)
    deadline = time.monotonic() + 10  # the sweeper wakes once a second (slack for a busy CI)
    while server_api.bytes_at(key) is not None:
        assert time.monotonic() < deadline, "the server's sweeper never deleted expired bytes"
        time.sleep(0.05)
    assert server_api.emulator.stored_assets() == []


def test_server_pexec_result_ttl(nvcf_server: EmulatorServer) -> None:
    nvcf_server.emulator.configure(always_async=True)
    api = _server_api(nvcf_server)
    try:
        kept = _async_result(api, 3600)
        lost = _async_result(api, 3600)
        nvcf_server.emulator.clock.advance(59 * 60)
        assert _poll(api, kept).json() == {"answer": 42}
        nvcf_server.emulator.clock.advance(2 * 60)
        assert _poll(api, lost).status_code == 404
    finally:
        nvcf_server.emulator.clock.reset()


def test_server_clock_jump_while_post_waits(nvcf_server: EmulatorServer, gate: Gate) -> None:
    api = _server_api(nvcf_server)
    fid, _ = nvcf_server.emulator.add_function(gate, name="slow")
    try:
        call = _Background(lambda: _invoke(api, fid, {"NVCF-POLL-SECONDS": "10"}, timeout=15))
        assert gate.entered.wait(5)
        r = requests.post(f"{api.base_url}/_emulator/clock", json={"advance": 20 * 60})
        assert r.status_code == 200
        gate.open()
        r = call.join(15)
        assert r.status_code == 200, r.text
        assert r.json() == {"done": True}
    finally:
        gate.open()
        nvcf_server.emulator.clock.reset()


# -- persistence of the clock ---------------------------------------------------------------------


def test_clock_offset_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        emu.clock.advance(3 * DAY)
        api = _api(emu)
        asset = api.new_asset(b"kept")
    with Emulator(state_dir=state) as emu:
        assert emu.clock.offset == pytest.approx(3 * DAY, abs=5)
        api = _api(emu)
        assert _get_asset(api, asset["assetId"]).status_code == 200
        emu.clock.advance(DAY + 1)
        assert _get_asset(api, asset["assetId"]).status_code == 404
    with Emulator(state_dir=state) as emu:
        assert emu.clock.offset == pytest.approx(4 * DAY + 1, abs=5)
        assert emu.stored_assets() == []


def test_upload_url_from_before_a_restart_expires_on_the_saved_clock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        emu.clock.advance(HOUR / 2)
        api = _api(emu)
        asset = api.create_asset()
    with Emulator(state_dir=state) as emu:
        api = _api(emu)
        emu.clock.advance(HOUR - 5)  # 59m55s after signing, on the saved offset
        assert api.upload(asset, b"after restart").status_code == 200
        emu.clock.advance(10)
        _assert_expired_xml(api.upload(asset, b"too late"))
        assert emu.asset_bytes(asset["assetId"]) == b"after restart"


def test_assets_that_expired_while_down_are_gone_at_startup(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        api = _api(emu)
        asset = api.new_asset(b"old")
        path = emu.asset_path(asset["assetId"])
        assert path is not None and path.is_file()
    later = datetime.now(UTC) + timedelta(days=2)
    with time_machine.travel(later, tick=False), Emulator(state_dir=state) as emu:
        assert emu.stored_assets() == []
        assert not path.exists()


def test_reset_clears_the_persisted_offset(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        emu.clock.advance(5 * DAY)
        emu.reset()
        assert emu.clock.offset == 0
    with Emulator(state_dir=state) as emu:
        assert emu.clock.offset == 0


def test_restart_under_freezegun_keeps_the_offset_not_the_frozen_time(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with freeze_time(START), Emulator(state_dir=state) as emu:
        emu.clock.set(START + timedelta(hours=2))
        assert emu.clock.offset == pytest.approx(2 * HOUR)
    with freeze_time(START + timedelta(days=1)), Emulator(state_dir=state) as emu:
        assert emu.clock.as_datetime() == START + timedelta(days=1, hours=2)


# -- more rules on the clock ---------------------------------------------------------------------


def _large_output(req: ContainerRequest) -> dict[str, bool]:
    out = Path(req.headers["NVCF-LARGE-OUTPUT-DIR"])
    (out / "result.bin").write_bytes(b"big result")
    return {"ok": True}


def test_large_result_url_lives_24h(nvcf: Emulator) -> None:
    api = _api(nvcf)
    fid, _ = nvcf.add_function(_large_output, name="large")
    with time_machine.travel(START, tick=False) as traveller:
        r = _invoke(api, fid, allow_redirects=False)
        assert r.status_code == 302, r.text
        location = r.headers["Location"]
        traveller.shift(DAY - 1)
        first = requests.get(location)
        assert first.status_code == 200
        assert first.headers["Content-Type"] == "application/zip"
        # A link that names no result, or another name than its zip's: S3's NoSuchKey.
        token, name = location.rsplit("/", 2)[-2:]
        for url in (location.replace(token, "0" * 64), location.replace(name, "other.zip")):
            missing = requests.get(url)
            assert missing.status_code == 404
            assert missing.headers["Content-Type"] == "application/xml"
            assert "<Code>NoSuchKey</Code>" in missing.text
        traveller.shift(2)
        # An S3 pre-signed GET in NVCF: past its expiry, S3's 403, whether or not the watcher
        # already removed the zip (and so after a restart too).
        _assert_expired_xml(requests.get(location))
        nvcf.invocation_service.sweep()
        gone = requests.get(location)
        _assert_expired_xml(gone)
        assert gone.headers["Content-Type"] == "application/xml"
        assert "<Expires>" in gone.text and "<ServerTime>" in gone.text


@pytest.mark.nvcf(deploy_delay=600)
def test_deploy_delay_follows_freezegun_and_never_goes_back(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with freeze_time(START) as frozen:
        fid, vid = nvcf.add_function(lambda req: {"ok": True}, name="deploying")
        url = f"{api.base_url}/v2/nvcf/functions/{fid}/versions/{vid}"
        assert requests.get(url, headers=api.headers).json()["function"]["status"] == "DEPLOYING"
        assert _invoke(api, fid).status_code == 404
        frozen.tick(599)
        assert _invoke(api, fid).status_code == 404
        frozen.tick(2)
        assert _invoke(api, fid).status_code == 200
        frozen.tick(-3600)  # time goes back: a running deployment stays ACTIVE
        assert requests.get(url, headers=api.headers).json()["function"]["status"] == "ACTIVE"
        assert _invoke(api, fid).status_code == 200


def test_clock_at_the_far_ends_of_time_still_answers(nvcf: Emulator) -> None:
    api = _api(nvcf)
    for far in (1e300, -1e300):
        r = requests.post(f"{api.base_url}/_emulator/clock", json={"advance": far})
        assert r.status_code == 200, r.text
        asset = api.new_asset(b"edge of time")
        assert _get_asset(api, asset["assetId"]).status_code == 200
        assert asset["assetId"] in _list_ids(api)
        assert requests.get(f"{api.base_url}/_emulator/state").status_code == 200
        nvcf.clock.reset()


def test_admin_set_with_a_zone_offset_is_utc(nvcf: Emulator) -> None:
    api = _api(nvcf)
    r = requests.post(f"{api.base_url}/_emulator/clock", json={"set": "2026-03-01T17:30:00+05:30"})
    assert r.status_code == 200, r.text
    assert r.json()["now"].startswith("2026-03-01T12:00:0")
    assert _amz_date(api.create_asset()["uploadUrl"]).startswith("20260301T1200")


def test_freezegun_tz_offset_does_not_shift_utc_signing(nvcf: Emulator) -> None:
    api = _api(nvcf)
    with freeze_time("2026-03-01 12:00:00", tz_offset=-8):
        assert _amz_date(api.create_asset()["uploadUrl"]) == "20260301T120000Z"


def test_status_poll_waiting_when_record_ttl_passes(nvcf: Emulator, gate: Gate) -> None:
    """A client is waiting on a status poll when the record's hour runs out and a sweep
    happens: it must get an answer (not hang), and the request is gone afterwards."""
    api = _api(nvcf)
    fid, _ = nvcf.add_function(gate, name="slow")
    r = _invoke(api, fid, {"NVCF-POLL-SECONDS": "1"})
    assert r.status_code == 202
    req_id = r.headers["NVCF-REQID"]
    waiting = _Background(lambda: _poll(api, req_id, {"NVCF-POLL-SECONDS": "5"}))
    _wait_until(lambda: nvcf.invocation_service._records[req_id]._waiters == 1)
    moved = requests.post(f"{api.base_url}/_emulator/clock", json={"advance": 2 * HOUR})
    assert moved.status_code == 200
    answer = waiting.join()
    gate.open()
    assert answer.status_code in (404, 500, 504), answer.text
    assert _poll(api, req_id).status_code == 404


def test_saved_result_honours_the_hour_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state, always_async=True) as emu:
        api = _api(emu)
        fid, _ = emu.add_function(lambda req: {"answer": 42}, name="fast", persistent=True)
        r = _invoke(api, fid, {"NVCF-POLL-SECONDS": "3600"})
        kept = r.headers["NVCF-REQID"]
        r = _invoke(api, fid, {"NVCF-POLL-SECONDS": "3600"})
        lost = r.headers["NVCF-REQID"]
        _wait_until(lambda: _settled(emu, kept) and _settled(emu, lost))
        emu.clock.advance(30 * 60)
    with Emulator(state_dir=state, always_async=True) as emu:
        api = _api(emu)
        emu.clock.advance(29 * 60)
        assert _poll(api, kept).json() == {"answer": 42}
        emu.clock.advance(2 * 60)
        assert _poll(api, lost).status_code == 404


def test_upload_url_expiry_counts_from_the_whole_second_it_was_signed(nvcf: Emulator) -> None:
    """X-Amz-Date has whole seconds: a URL signed at 12:00:00.9 expires at 13:00:00, as S3."""
    api = _api(nvcf)
    with time_machine.travel(START + timedelta(seconds=0.9), tick=False) as traveller:
        asset = api.create_asset()
        other = api.create_asset()
        assert _amz_date(asset["uploadUrl"]) == "20260301T120000Z"
        traveller.shift(3599.1)  # 13:00:00.000
        assert api.upload(asset).status_code == 200
        traveller.shift(0.01)
        _assert_expired_xml(api.upload(other))


@pytest.mark.nvcf(asset_ttl=60)
def test_asset_expiring_while_its_invocation_is_queued(nvcf: Emulator) -> None:
    """The asset was live when the request was accepted, and is deleted (expired and swept)
    before a worker stages it: the client gets NVCF's asset-download error, never a hang or a
    container call without the file."""
    nvcf.configure(worker_threads=1)
    api = _api(nvcf)
    asset = api.new_asset(b"short-lived")
    calls: list[list[str]] = []
    first_in = threading.Event()
    release = threading.Event()

    def container(req: ContainerRequest) -> dict[str, bool]:
        staged = Path(req.headers["NVCF-ASSET-DIR"])
        calls.append(sorted(p.name for p in staged.iterdir()) if staged.is_dir() else [])
        if len(calls) == 1:
            first_in.set()
            release.wait(10)
        return {"ok": True}

    fid, _ = nvcf.add_function(container, name="one-worker")
    try:
        first = _Background(lambda: _invoke(api, fid, {"NVCF-POLL-SECONDS": "5"}))
        assert first_in.wait(5)
        refs = {"NVCF-POLL-SECONDS": "5", "NVCF-INPUT-ASSET-REFERENCES": asset["assetId"]}
        second = _Background(lambda: _invoke(api, fid, refs))
        _wait_until(lambda: nvcf.invocation_service.queue_depth(fid) == 1)
        # Past the asset's 60 s, well inside the requests' hour; the endpoint sweeps.
        r = requests.post(f"{api.base_url}/_emulator/clock", json={"advance": 61})
        assert r.status_code == 200
    finally:
        release.set()
    assert first.join().status_code == 200
    r = second.join()
    if r.status_code == 200:  # staged before it went: the container saw the file
        assert calls[1] == [asset["assetId"]]
    else:
        assert r.status_code == 500, r.text
        assert r.json()["detail"] == "Internal error while downloading assets"
        assert len(calls) == 1


def test_post_waiting_past_the_record_hour_answers_the_same_with_or_without_other_traffic(
    nvcf: Emulator,
) -> None:
    """The same scenario twice: a POST waits in its 1 s window while the clock jumps 2 h. The
    only difference is whether some unrelated request (which triggers the once-a-minute sweep)
    arrives meanwhile. The waiting client must not get a different answer because of it."""
    api = _api(nvcf)
    answers = []
    for other_traffic in (False, True):
        gate = Gate()
        fid, _ = nvcf.add_function(gate, name=f"slow-{other_traffic}")
        try:
            call = _Background(lambda fid=fid: _invoke(api, fid, {"NVCF-POLL-SECONDS": "1"}))
            assert gate.entered.wait(5)
            nvcf.clock.advance(2 * HOUR)
            if other_traffic:
                assert requests.get(f"{api.base_url}/_emulator/health").status_code == 200
            r = call.join()
        finally:
            gate.open()
        answers.append((r.status_code, r.headers.get("NVCF-STATUS")))
        assert _poll(api, r.headers["NVCF-REQID"]).status_code == 404
    assert answers[0] == answers[1], answers
