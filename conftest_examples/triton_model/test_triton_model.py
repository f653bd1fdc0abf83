"""The Triton Python-backend model in ``model_repository/``, invoked through NVCF's pexec API."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.triton import TritonContainer

from .conftest import API, MODEL_REPOSITORY

INFER_URL = "/v2/models/asset_stats/infer"
BODY = {"inputs": [{"name": "LABEL", "shape": [1], "datatype": "BYTES", "data": ["cats"]}]}


def invoke(nvcf: Emulator, fid: str, body: Any, assets: list[str]) -> requests.Response:
    headers = {**nvcf.headers, "NVCF-INPUT-ASSET-REFERENCES": ",".join(assets)}
    return requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", json=body, headers=headers)


def test_model_reads_its_input_assets(
    nvcf: Emulator, triton: TritonContainer, upload_asset: Callable[[bytes], str]
) -> None:
    fid, _ = nvcf.add_function(triton, name="asset-stats", inference_url=INFER_URL)
    first, second = upload_asset(b"first asset"), upload_asset(b"x" * 100_000)

    r = invoke(nvcf, fid, BODY, [first, second])

    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["model_name"] == "asset_stats"
    assert outputs["ASSET_IDS"]["data"] == [first, second]
    assert outputs["SIZES"] == {
        "name": "SIZES",
        "datatype": "INT64",
        "shape": [2],
        "data": [11, 100_000],
    }
    assert outputs["SHA256"]["data"] == [
        hashlib.sha256(b"first asset").hexdigest(),
        hashlib.sha256(b"x" * 100_000).hexdigest(),
    ]
    assert outputs["LABEL_OUT"]["data"] == ["cats"]


def test_model_does_not_depend_on_the_case_of_forwarded_header_names(
    nvcf: Emulator, upload_asset: Callable[[bytes], str]
) -> None:
    # Forwarded headers often arrive lower-cased; the model reads them through helpers.
    triton = TritonContainer(MODEL_REPOSITORY, parameter_case="lower")
    try:
        fid, _ = nvcf.add_function(triton, name="asset-stats", inference_url=INFER_URL)
        asset = upload_asset(b"data")
        r = invoke(nvcf, fid, BODY, [asset])
    finally:
        triton.close()
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [asset]


@pytest.mark.parametrize("pattern", [None, "X-CUSTOM-.*"], ids=["no-pattern", "other-pattern"])
def test_without_the_nvcf_forward_pattern_the_model_fails_as_in_production(
    nvcf: Emulator, upload_asset: Callable[[bytes], str], pattern: str | None
) -> None:
    # tritonserver started without --http-header-forward-pattern NVCF-.* (or with another one)
    triton = TritonContainer(MODEL_REPOSITORY, forward_pattern=pattern)
    try:
        fid, _ = nvcf.add_function(triton, name="asset-stats", inference_url=INFER_URL)
        r = invoke(nvcf, fid, BODY, [upload_asset(b"data")])
    finally:
        triton.close()

    # What the client sees: Triton's 400 {"error": ...}, turned by NVCF into problem JSON.
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["type"] == "urn:inference-service:problem-details:bad-request"
    assert r.json()["detail"] == (
        "no input assets: invoke with NVCF-INPUT-ASSET-REFERENCES, and start "
        "tritonserver with --http-header-forward-pattern NVCF-.*"
    )


def test_a_request_that_does_not_fit_config_pbtxt_is_refused_by_triton(
    nvcf: Emulator, triton: TritonContainer, upload_asset: Callable[[bytes], str]
) -> None:
    fid, _ = nvcf.add_function(triton, name="asset-stats", inference_url=INFER_URL)
    body = {"inputs": [{"name": "LABEL", "shape": [1], "datatype": "FP32", "data": [1.0]}]}

    r = invoke(nvcf, fid, body, [upload_asset(b"data")])

    assert r.status_code == 400
    assert r.json()["detail"] == (
        "[request id: <id_unknown>] inference input 'LABEL' data-type is 'FP32', "
        "but model 'asset_stats' expects 'BYTES'"
    )
