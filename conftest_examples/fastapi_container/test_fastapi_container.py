from __future__ import annotations

import requests

from nvcf_emulator import Emulator

from .app import app

API = "https://api.nvcf.nvidia.com"


def test_fastapi_container_through_pexec(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(app, name="generator", inference_url="/v1/generate")
    meta = {"contentType": "text/plain", "description": "context"}
    asset = requests.post(f"{API}/v2/nvcf/assets", headers=nvcf.headers, json=meta).json()
    requests.put(
        asset["uploadUrl"],
        data=b"meow",
        headers={"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "context"},
    ).raise_for_status()

    r = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}",
        json={"prompt": "cat says"},
        headers={**nvcf.headers, "NVCF-INPUT-ASSET-REFERENCES": asset["assetId"]},
    )

    assert r.status_code == 200, r.text
    assert r.json() == {"request": r.headers["NVCF-REQID"], "answer": "cat says: MEOW"}


def test_fastapi_errors_reach_the_client_as_problem_json(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(app, name="generator", inference_url="/v1/generate")
    r = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}", json={"prompt": "x"}, headers=nvcf.headers
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["type"] == "urn:inference-service:problem-details:unprocessable-entity"
    assert problem["detail"] == "Inference error"  # FastAPI's body has "detail", not "error"
