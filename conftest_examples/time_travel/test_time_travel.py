"""Upload URLs expire after 1 hour and assets after 24 hours, tested by moving the clock."""

from __future__ import annotations

import requests

from nvcf_emulator import ContainerRequest, Emulator

from .conftest import Travel

API = "https://api.nvcf.nvidia.com"
META = {"contentType": "text/plain", "description": "notes"}
UPLOAD_HEADERS = {"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "notes"}


def create_asset(nvcf: Emulator) -> dict[str, str]:
    r = requests.post(f"{API}/v2/nvcf/assets", headers=nvcf.headers, json=META)
    r.raise_for_status()
    return dict(r.json())


def test_upload_url_works_for_one_hour(nvcf: Emulator, travel: Travel) -> None:
    early, late = create_asset(nvcf), create_asset(nvcf)

    travel(59 * 60)
    assert requests.put(early["uploadUrl"], data=b"x", headers=UPLOAD_HEADERS).status_code == 200

    travel(2 * 60)  # 61 minutes after the URL was made
    r = requests.put(late["uploadUrl"], data=b"x", headers=UPLOAD_HEADERS)
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text
    assert "<Message>Request has expired</Message>" in r.text


def test_asset_is_gone_after_24_hours(nvcf: Emulator, travel: Travel) -> None:
    def size(request: ContainerRequest) -> dict[str, int]:
        return {i: request.asset_path(i).stat().st_size for i in request.asset_ids}

    fid, _ = nvcf.add_function(size, name="size")
    asset = create_asset(nvcf)
    requests.put(asset["uploadUrl"], data=b"hello", headers=UPLOAD_HEADERS).raise_for_status()
    aid = asset["assetId"]

    def invoke() -> requests.Response:
        headers = {**nvcf.headers, "NVCF-INPUT-ASSET-REFERENCES": aid}
        return requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", json={}, headers=headers)

    travel(23 * 3600 + 59 * 60)
    assert invoke().json() == {aid: 5}

    travel(2 * 60)  # 24 h 1 min after the upload
    r = invoke()
    assert r.status_code == 404
    assert f"failed to find asset {aid}" in r.json()["detail"]
    assert requests.get(f"{API}/v2/nvcf/assets/{aid}", headers=nvcf.headers).status_code == 404
