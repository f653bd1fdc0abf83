"""Time travel: every TTL follows the emulator's one clock, however it is moved.

The clock is moved four ways — freezegun, time-machine, ``nvcf.clock.advance`` and the server's
admin endpoint — in-process and over a socket. No test here sleeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import requests
import time_machine
from freezegun import freeze_time

from nvcf_emulator import Emulator, RemoteEmulator

from .conftest import Api

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
Advance = Callable[[float], None]


@contextmanager
def _freezegun(api: Api) -> Iterator[Advance]:
    with freeze_time(START) as frozen:
        yield lambda s: frozen.tick(s)


@contextmanager
def _time_machine(api: Api) -> Iterator[Advance]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller.shift


@contextmanager
def _emulator_clock(api: Api) -> Iterator[Advance]:
    api.emulator.clock.set(START)
    yield api.emulator.clock.advance


@contextmanager
def _admin_endpoint(api: Api) -> Iterator[Advance]:
    remote = RemoteEmulator(api.base_url) if api.mode == "server" else None
    if remote is None:  # in-process, the same endpoint through the routed requests

        def post(body: dict[str, object]) -> None:
            r = requests.post(f"{api.base_url}/_emulator/clock", json=body)
            assert r.status_code == 200, r.text

        post({"set": START.isoformat()})
        yield lambda s: post({"advance": s})
    else:
        remote.clock.set(START)
        yield lambda s: remote.clock.advance(s)


MOVERS = {
    "freezegun": _freezegun,
    "time-machine": _time_machine,
    "clock.advance": _emulator_clock,
    "admin-endpoint": _admin_endpoint,
}


@pytest.fixture(params=list(MOVERS))
def travel(request: pytest.FixtureRequest, api: Api) -> Iterator[Advance]:
    with MOVERS[request.param](api) as advance:
        yield advance


def test_upload_url_valid_at_3599_s_and_expired_at_3601_s(api: Api, travel: Advance) -> None:
    first = api.create_asset()
    second = api.create_asset()
    assert "X-Amz-Date=20260301T1200" in first["uploadUrl"]
    travel(3599)
    assert api.upload(first, b"in time").status_code == 200
    travel(2)
    r = api.upload(second, b"late")
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text
    assert "<Message>Request has expired</Message>" in r.text
    assert "<X-Amz-Expires>3600</X-Amz-Expires>" in r.text
    signed = second["uploadUrl"].split("X-Amz-Date=")[1][:16]  # e.g. 20260301T120000Z
    expires = datetime.strptime(signed, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp() + 3600
    assert f"<Expires>{datetime.fromtimestamp(expires, UTC):%Y-%m-%dT%H:%M:%SZ}</Expires>" in r.text
    assert "<ServerTime>2026-03-01T13:00:0" in r.text
    assert api.emulator.asset_path(second["assetId"]) is None


def test_asset_present_at_23h59_and_gone_at_24h01(api: Api, travel: Advance) -> None:
    asset = api.new_asset(b"expiring")
    aid = asset["assetId"]
    key = api.key_of(aid)
    assert api.bytes_at(key) == b"expiring"
    url = f"{api.base_url}/v2/nvcf/assets"
    account = api.emulator.accounts.authenticate(f"Bearer {api.emulator.api_key}")

    travel(23 * 3600 + 59 * 60)
    assert requests.get(f"{url}/{aid}", headers=api.headers).status_code == 200
    assert [a["assetId"] for a in requests.get(url, headers=api.headers).json()["assets"]] == [aid]
    assert api.emulator.assets.live_assets(account, [aid])

    travel(2 * 60)
    r = requests.get(f"{url}/{aid}", headers=api.headers)
    assert r.status_code == 404
    assert aid in r.json()["detail"]
    assert requests.get(url, headers=api.headers).json() == {"assets": []}
    with pytest.raises(Exception, match=f"failed to find asset {aid}"):
        api.emulator.assets.live_assets(account, [aid])
    assert api.bytes_at(key) is None


def test_sweep_deletes_bytes_of_assets_nobody_asks_about(nvcf: Emulator) -> None:
    api = Api("inprocess", nvcf.base_url, nvcf)
    keys = [api.key_of(api.new_asset(b"x")["assetId"]) for _ in range(3)]
    assert all(api.bytes_at(k) == b"x" for k in keys)
    nvcf.clock.advance(24 * 3600 + 1)
    # Any request triggers the sweep; this one is about something else entirely.
    assert requests.get(f"{nvcf.base_url}/_emulator/health").status_code == 200
    assert all(api.bytes_at(k) is None for k in keys)
    assert nvcf.stored_assets() == []


def test_never_uploaded_asset_record_expires_from_creation(nvcf: Emulator) -> None:
    api = Api("inprocess", nvcf.base_url, nvcf)
    api.create_asset()
    assert len(nvcf.stored_assets()) == 1
    nvcf.clock.advance(24 * 3600 + 1)
    nvcf.sweep()
    assert nvcf.stored_assets() == []


@pytest.mark.nvcf(upload_url_ttl=5, asset_ttl=60)
def test_ttls_are_configurable(api: Api) -> None:
    asset = api.create_asset()
    assert "X-Amz-Expires=5" in asset["uploadUrl"]
    api.emulator.clock.advance(6)
    assert api.upload(asset).status_code == 403
    asset = api.new_asset()
    api.emulator.clock.advance(61)
    r = requests.get(f"{api.base_url}/v2/nvcf/assets/{asset['assetId']}", headers=api.headers)
    assert r.status_code == 404


def test_url_signed_in_the_future_is_not_valid_yet(api: Api) -> None:
    api.emulator.clock.advance(3600)
    asset = api.create_asset()
    api.emulator.clock.advance(-3600)
    r = api.upload(asset)
    assert r.status_code == 403
    assert "<Message>Request is not yet valid</Message>" in r.text
    api.emulator.clock.advance(3600)
    assert api.upload(asset).status_code == 200


def test_clock_endpoint_reads_and_validates(api: Api) -> None:
    r = requests.get(f"{api.base_url}/_emulator/clock")
    assert r.status_code == 200
    before = r.json()
    assert before["offsetSeconds"] == 0
    r = requests.post(f"{api.base_url}/_emulator/clock", json={"advance": 86400})
    assert r.status_code == 200
    assert r.json()["offsetSeconds"] == pytest.approx(86400, abs=1)
    r = requests.post(f"{api.base_url}/_emulator/clock", json={"set": "2030-01-01T00:00:00Z"})
    assert r.json()["now"].startswith("2030-01-01T00:00:0")
    for bad in ({}, {"advance": "soon"}, {"set": "tomorrow"}, {"advance": 1, "set": "x"}):
        r = requests.post(f"{api.base_url}/_emulator/clock", json=bad)
        assert r.status_code == 400, bad
        assert r.headers["Content-Type"] == "application/problem+json"


def test_reset_puts_the_clock_back(api: Api) -> None:
    api.emulator.clock.advance(1000)
    assert requests.post(f"{api.base_url}/_emulator/reset").status_code == 200
    assert api.emulator.clock.offset == 0
