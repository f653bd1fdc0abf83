"""Fault injection (for users' retry logic) and a full disk (storage quota)."""

from __future__ import annotations

import os

import pytest
import requests

from .conftest import Api


def test_status_fault_fires_the_given_number_of_times(api: Api) -> None:
    api.emulator.faults.add("create", status=503, times=2)
    url = f"{api.base_url}/v2/nvcf/assets"
    body = {"contentType": "a/b", "description": "d"}
    codes = [requests.post(url, headers=api.headers, json=body).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert len(api.emulator.faults) == 0
    assert len(api.emulator.stored_assets()) == 1  # the failed creates stored nothing


def test_upload_fault_is_s3_shaped_and_stores_nothing(api: Api) -> None:
    asset = api.create_asset()
    api.emulator.faults.add("upload", status=503)
    r = api.upload(asset, b"x")
    assert r.status_code == 503
    assert "<Code>SlowDown</Code>" in r.text
    assert api.emulator.asset_path(asset["assetId"]) is None
    assert api.upload(asset, b"x").status_code == 200  # a retry succeeds


def test_drop_fault_looks_like_a_broken_connection(api: Api) -> None:
    api.emulator.faults.add("list", drop=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
    assert requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers).status_code == 200


UNKNOWN = "00000000-0000-4000-8000-000000000000"


def test_latency_fault_delays_the_answer(api: Api) -> None:
    api.emulator.faults.add("get", latency=0.2, times=None)
    for _ in range(2):
        r = requests.get(f"{api.base_url}/v2/nvcf/assets/{UNKNOWN}", headers=api.headers)
        assert r.status_code == 404
    durations = [
        c.duration_ms for c in api.emulator.calls if c.path == f"/v2/nvcf/assets/{UNKNOWN}"
    ]
    assert len(durations) == 2 and min(durations) >= 200


def test_probability_with_a_seed_is_repeatable(api: Api) -> None:
    def pattern() -> list[int]:
        api.emulator.faults.clear()
        api.emulator.faults.add("list", status=429, times=None, probability=0.5, seed=7)
        url = f"{api.base_url}/v2/nvcf/assets"
        return [requests.get(url, headers=api.headers).status_code for _ in range(20)]

    first = pattern()
    assert first == pattern()
    assert 0 < first.count(429) < 20
    assert set(first) == {200, 429}


def test_fault_api_over_http(api: Api) -> None:
    url = f"{api.base_url}/_emulator/faults"
    r = requests.post(url, json={"operation": "delete", "status": 500, "message": "boom"})
    assert r.status_code == 200
    assert r.json()["operation"] == "delete"
    assert [f["id"] for f in requests.get(url).json()["faults"]] == [r.json()["id"]]
    asset = api.new_asset()
    r = requests.delete(f"{api.base_url}/v2/nvcf/assets/{asset['assetId']}", headers=api.headers)
    assert (r.status_code, r.json()["detail"]) == (500, "boom")
    assert api.emulator.asset_bytes(asset["assetId"]) == b"hello"  # nothing was deleted
    requests.post(url, json={"operation": "list", "status": 503, "times": None})
    assert requests.delete(url).json() == {"faults": []}
    assert requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers).status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"operation": "explode", "status": 500}, "operation must be one of"),
        ({"operation": "create"}, "needs a status"),
        ({"operation": "create", "status": 200}, "4xx or 5xx"),
        ({"operation": "create", "status": 500, "drop": True}, "one or the other"),
        ({"operation": "create", "status": 500, "times": 0}, "times"),
        ({"operation": "create", "status": 500, "probability": 2}, "probability"),
        ({"operation": "create", "status": "500"}, "wrong type"),
        ({"operation": "create", "status": 500, "colour": 1}, "unknown fault field"),
    ],
)
def test_bad_fault_requests_are_400(api: Api, body: dict[str, object], fragment: str) -> None:
    r = requests.post(f"{api.base_url}/_emulator/faults", json=body)
    assert r.status_code == 400
    assert fragment in r.json()["detail"]
    assert len(api.emulator.faults) == 0


@pytest.mark.nvcf(storage_quota_bytes=10)
def test_full_storage_is_507_and_loses_nothing(api: Api) -> None:
    kept = api.new_asset(b"123456")
    other = api.create_asset()
    r = api.upload(other, b"1234567")
    assert r.status_code == 507
    assert "<Code>InsufficientStorage</Code>" in r.text
    r = api.upload(other, iter([b"12345", b"67"]))  # no length: stopped while streaming
    assert r.status_code == 507
    assert api.emulator.asset_bytes(kept["assetId"]) == b"123456"
    assert api.emulator.asset_path(other["assetId"]) is None
    assert api.emulator.store.pending_uploads() == []
    # Replacing an asset counts its old size as free; deleting frees room.
    assert api.upload(kept, b"1234567890").status_code == 200
    requests.delete(f"{api.base_url}/v2/nvcf/assets/{kept['assetId']}", headers=api.headers)
    assert api.upload(other, b"1234567").status_code == 200


@pytest.mark.skipif(
    os.environ.get("NVCF_TEST_STORAGE") == "moto", reason="simulates a full local disk"
)
def test_disk_full_error_is_507(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from nvcf_emulator.storage import local

    def full(self: object, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    kept = api.new_asset(b"safe")
    monkeypatch.setattr(local._LocalWriter, "write", full)
    r = api.upload(api.create_asset(), b"doomed")
    assert r.status_code == 507
    assert "the disk is full" in r.text
    assert api.emulator.asset_bytes(kept["assetId"]) == b"safe"


def test_drop_fault_with_httpx_is_a_remote_protocol_error(nvcf: object) -> None:
    import asyncio

    import httpx

    from nvcf_emulator import Emulator

    assert isinstance(nvcf, Emulator)
    url = f"{nvcf.base_url}/v2/nvcf/assets"
    nvcf.faults.add("list", drop=True, times=2)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url, headers=nvcf.headers)

    async def call() -> None:
        async with httpx.AsyncClient() as client:
            await client.get(url, headers=nvcf.headers)

    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(call())
    assert httpx.get(url, headers=nvcf.headers).status_code == 200
