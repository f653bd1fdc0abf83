from __future__ import annotations

import hashlib
import io
import zipfile

import requests

from nvcf_emulator import Emulator

API = "https://api.nvcf.nvidia.com"


def new_asset(nvcf: Emulator, data: bytes) -> str:
    meta = {"contentType": "image/png", "description": "cat"}
    asset = requests.post(f"{API}/v2/nvcf/assets", headers=nvcf.headers, json=meta).json()
    requests.put(
        asset["uploadUrl"],
        data=data,
        headers={"Content-Type": "image/png", "x-amz-meta-nvcf-asset-description": "cat"},
    ).raise_for_status()
    return str(asset["assetId"])


def test_container_reads_the_staged_assets(nvcf: Emulator, asset_reader: str) -> None:
    a, b = new_asset(nvcf, b"png one"), new_asset(nvcf, b"png two")

    r = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{asset_reader}",
        json={},
        headers={**nvcf.headers, "NVCF-INPUT-ASSET-REFERENCES": f"{a},{b}"},
    )

    assert r.status_code == 200, r.text
    assert r.json() == {
        a: {"bytes": 7, "sha256": hashlib.sha256(b"png one").hexdigest()},
        b: {"bytes": 7, "sha256": hashlib.sha256(b"png two").hexdigest()},
    }
    call = nvcf.invocations[-1]
    assert call.container_headers["NVCF-FUNCTION-ASSET-IDS"] == f"{a},{b}"
    assert not any(p.exists() for p in call.staged_files)  # cleaned up after the request


def test_without_assets_the_client_gets_problem_json(nvcf: Emulator, asset_reader: str) -> None:
    r = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{asset_reader}", json={}, headers=nvcf.headers
    )
    assert r.status_code == 400
    assert r.json()["detail"] == "reference at least one asset (NVCF-INPUT-ASSET-REFERENCES)"


def test_files_in_the_large_output_dir_come_back_as_a_zip(
    nvcf: Emulator, asset_reader: str
) -> None:
    a = new_asset(nvcf, b"png")
    r = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{asset_reader}",
        json={"write_report": True},
        headers={**nvcf.headers, "NVCF-INPUT-ASSET-REFERENCES": a},
        allow_redirects=False,
    )
    assert r.status_code == 302
    archive = zipfile.ZipFile(io.BytesIO(requests.get(r.headers["Location"]).content))
    assert archive.read("report.txt").decode() == f"{a} {hashlib.sha256(b'png').hexdigest()}"
