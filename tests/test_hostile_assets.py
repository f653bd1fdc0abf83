"""Hostile input on the asset API and the storage endpoint: a clear 4xx, never a 5xx, and
never a file read or written outside the emulator's directories."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from nvcf_emulator import EmulatorServer

from .conftest import Api

TRAVERSALS = [
    "..",
    "../../etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%2f..%2f..%2ftmp",
    "/etc/passwd",
    "%00",
    "a%00b",
    "\u2024\u2024\u2215etc",  # one-dot leaders and a division slash: look-alikes of ../
    "x" * 10_240,
    "00000000-0000-4000-8000-00000000000\u0660",  # an Arabic-Indic digit zero
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_crafted_asset_ids_are_404(api: Api, bad: str) -> None:
    for method in ("GET", "DELETE"):
        r = requests.request(method, f"{api.base_url}/v2/nvcf/assets/{bad}", headers=api.headers)
        assert r.status_code in (400, 404), (method, bad, r.status_code)
        assert r.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_crafted_upload_paths_write_nothing(api: Api, bad: str, tmp_path: Path) -> None:
    asset = api.create_asset()
    url = urlsplit(asset["uploadUrl"])
    # Keep the genuine query (signature included) and swap the object key for the crafted one.
    prefix = url.path.rsplit("/", 2)[0]
    crafted = f"{url.scheme}://{url.netloc}{prefix}/{bad}?{url.query}"
    before = _files(api.emulator.root)
    r = api.upload(asset | {"uploadUrl": crafted}, b"evil")
    assert 400 <= r.status_code < 500, r.text
    # S3 XML from storage; or problem JSON where the client itself folded "/x/.." away and the
    # path left the bucket.
    assert r.headers["Content-Type"] in ("application/xml", "application/problem+json")
    assert _files(api.emulator.root) == before
    assert not Path("/etc/passwd.evil").exists()


def test_oversized_json_body_is_413(api: Api) -> None:
    body = b'{"contentType": "a/b", "description": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets",
        headers={**api.headers, "Content-Type": "application/json"},
        data=body,
    )
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]
    assert api.emulator.stored_assets() == []


def test_oversized_headers_are_a_4xx(api: Api) -> None:
    headers = {**api.headers, **{f"X-Pad-{i}": "p" * 1000 for i in range(70)}}
    r = requests.get(f"{api.base_url}/v2/nvcf/assets", headers=headers)
    assert r.status_code == 431
    asset = api.create_asset()
    r = requests.put(
        asset["uploadUrl"],
        data=b"x",
        headers={
            "Content-Type": "image/png",
            "x-amz-meta-nvcf-asset-description": "red-cat-photo",
            **{f"X-Pad-{i}": "p" * 1000 for i in range(70)},
        },
    )
    assert r.status_code == 400
    assert "RequestHeaderSectionTooLarge" in r.text


@pytest.mark.parametrize("value", ["-1", "abc", "1e3"])
def test_garbage_content_length_on_upload_is_400(nvcf_server: EmulatorServer, value: str) -> None:
    """Only a raw client can send this (requests and httpx always send the real length)."""
    import http.client

    api = Api("server", nvcf_server.url, nvcf_server.emulator)
    asset = api.create_asset()
    url = urlsplit(asset["uploadUrl"])
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    try:
        conn.putrequest("PUT", f"{url.path}?{url.query}", skip_accept_encoding=True)
        conn.putheader("Content-Type", "image/png")
        conn.putheader("x-amz-meta-nvcf-asset-description", "red-cat-photo")
        conn.putheader("Content-Length", value)
        conn.endheaders(b"x")
        resp = conn.getresponse()
        status, text = resp.status, resp.read().decode()
    finally:
        conn.close()
    assert status == 400, text
    assert "<Code>InvalidArgument</Code>" in text
    assert api.emulator.asset_path(asset["assetId"]) is None


@pytest.mark.parametrize(
    ("param", "value", "code"),
    [
        ("X-Amz-Expires", "604801", "AuthorizationQueryParametersError"),
        ("X-Amz-Expires", "-5", "AuthorizationQueryParametersError"),
        ("X-Amz-Expires", "soon", "AuthorizationQueryParametersError"),
        ("X-Amz-Date", "yesterday", "AuthorizationQueryParametersError"),
        ("X-Amz-Algorithm", "AWS4-HMAC-MD5", "AuthorizationQueryParametersError"),
        ("X-Amz-Credential", "AKIA%2Fbad", "AuthorizationQueryParametersError"),
    ],
)
def test_garbled_query_auth_is_a_clear_4xx(api: Api, param: str, value: str, code: str) -> None:
    asset = api.create_asset()
    url = asset["uploadUrl"]
    head, _, query = url.partition("?")
    pairs = [p if not p.startswith(param + "=") else f"{param}={value}" for p in query.split("&")]
    r = api.upload(asset | {"uploadUrl": f"{head}?{'&'.join(pairs)}"})
    assert r.status_code == 400, r.text
    assert f"<Code>{code}</Code>" in r.text


def test_unicode_description_round_trips(api: Api) -> None:
    asset = api.create_asset(description="café crème")
    assert api.upload(asset, b"x").status_code == 200


def test_many_concurrent_creates_never_collide(api: Api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: api.create_asset()["assetId"], range(64)))
    assert len(set(ids)) == 64
    assert os.path.isdir(api.emulator.root)


@pytest.mark.parametrize("host", ["[", "a:notaport", "]x["])
def test_malformed_host_header_on_upload_is_400(nvcf_server: EmulatorServer, host: str) -> None:
    import http.client

    api = Api("server", nvcf_server.url, nvcf_server.emulator)
    asset = api.create_asset()
    url = urlsplit(asset["uploadUrl"])
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    try:
        conn.putrequest("PUT", f"{url.path}?{url.query}", skip_host=True)
        conn.putheader("Host", host)
        conn.putheader("Content-Type", "image/png")
        conn.putheader("x-amz-meta-nvcf-asset-description", "red-cat-photo")
        conn.putheader("Content-Length", "1")
        conn.endheaders(b"x")
        resp = conn.getresponse()
        status, text = resp.status, resp.read().decode()
    finally:
        conn.close()
    assert 400 <= status < 500, text
    assert api.emulator.asset_path(asset["assetId"]) is None
