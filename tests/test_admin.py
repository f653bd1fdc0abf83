"""The admin API under /_emulator/: the same data as the Python API, scriptable."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from nvcf_emulator import RemoteEmulator

from .conftest import Api


def test_health(api: Api) -> None:
    r = requests.get(f"{api.base_url}/_emulator/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_state_shows_assets_with_time_left(api: Api) -> None:
    asset = api.new_asset(b"12345")
    api.emulator.clock.advance(3600)
    state = requests.get(f"{api.base_url}/_emulator/state").json()
    (entry,) = state["assets"]
    assert entry["assetId"] == asset["assetId"]
    assert entry["size"] == 5
    assert entry["uploadedAt"] is not None
    assert 82790 < entry["secondsLeft"] <= 82800


def test_reset_forgets_everything(api: Api) -> None:
    asset = api.new_asset()
    key = api.key_of(asset["assetId"])
    assert api.bytes_at(key) == b"hello"
    assert requests.post(f"{api.base_url}/_emulator/reset").status_code == 200
    assert requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers).json() == {
        "assets": []
    }
    assert api.bytes_at(key) is None


def test_seed_makes_ids_repeatable(api: Api) -> None:
    def ids() -> list[str]:
        r = requests.post(f"{api.base_url}/_emulator/seed", json={"seed": 42})
        assert r.status_code == 200
        return [api.create_asset()["assetId"] for _ in range(3)]

    first = ids()
    assert ids() == first
    assert len(set(first)) == 3
    requests.post(f"{api.base_url}/_emulator/seed", json={"seed": None})
    assert api.create_asset()["assetId"] not in first
    r = requests.post(f"{api.base_url}/_emulator/seed", json={"seed": "x"})
    assert r.status_code == 400


def test_requests_log_records_calls_without_credentials(api: Api) -> None:
    asset = api.new_asset()
    requests.get(
        f"{api.base_url}/v2/nvcf/assets/00000000-0000-4000-8000-000000000000", headers=api.headers
    )
    log = requests.get(f"{api.base_url}/_emulator/requests").json()["requests"]
    summary = [(c["method"], c["path"], c["status"], c["kind"]) for c in log]
    assert summary == [
        ("POST", "/v2/nvcf/assets", 200, "control"),
        ("PUT", urlsplit(asset["uploadUrl"]).path, 200, "storage"),
        ("GET", "/v2/nvcf/assets/00000000-0000-4000-8000-000000000000", 404, "control"),
    ]
    # The 404's problem JSON requestId and the S3 request id are both kept.
    assert log[1]["request_id"] and log[2]["request_id"]
    assert api.emulator.api_key not in str(log)
    assert log[0]["authorization"] == "Bearer nvapi-…"
    assert api.emulator.calls[0].status == 200


@pytest.mark.nvcf(admin_token="s3cret")
def test_admin_token_protects_the_admin_api(api: Api) -> None:
    r = requests.get(f"{api.base_url}/_emulator/state")
    assert r.status_code == 401
    r = requests.post(f"{api.base_url}/_emulator/reset", headers={"Authorization": "Bearer no"})
    assert r.status_code == 401
    r = requests.get(f"{api.base_url}/_emulator/state", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200
    remote = RemoteEmulator(api.base_url, admin_token="s3cret")
    assert remote.clock.advance(10) > 0
    # The NVCF API itself is not affected.
    assert requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers).status_code == 200


@pytest.mark.nvcf(admin_enabled=False)
def test_admin_api_can_be_disabled(api: Api) -> None:
    assert requests.get(f"{api.base_url}/_emulator/health").status_code == 404
    assert requests.post(f"{api.base_url}/_emulator/clock", json={"advance": 1}).status_code == 404
