"""Where the asset API and its pre-signed S3 storage meet hostile or unusual clients: each test
states what NVCF / S3 do (with the source) and checks that the emulator does the same.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from .conftest import Api

DESC = "x-amz-meta-nvcf-asset-description"
TIMEOUT = 10.0


def _put(asset: dict[str, Any], data: Any = b"hello", **extra: str) -> requests.Response:
    headers = {"Content-Type": asset["contentType"], DESC: asset["description"], **extra}
    return requests.put(asset["uploadUrl"], data=data, headers=headers, timeout=TIMEOUT)


def _get(api: Api, asset_id: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(
        f"{api.base_url}/v2/nvcf/assets/{asset_id}",
        headers=headers or api.headers,
        timeout=TIMEOUT,
    )


def _writer_opened(api: Api, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once an upload has passed its checks and opened its writer (any storage backend)."""
    opened = threading.Event()
    store = api.emulator.assets.store
    original: Callable[[str], Any] = store.writer

    def writer(key: str) -> Any:
        opened.set()
        return original(key)

    monkeypatch.setattr(store, "writer", writer)
    return opened


class _Gated:
    """A chunked body: ``first``, then waits for ``gate``, then ``rest``."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self.first, self.rest = first, rest
        self.gate = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        self.gate.wait(TIMEOUT)
        yield self.rest


def _upload_in_thread(
    asset: dict[str, Any], body: _Gated
) -> tuple[threading.Thread, dict[str, requests.Response]]:
    out: dict[str, requests.Response] = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", _put(asset, iter(body))))
    thread.start()
    return thread, out


# -- integrity headers S3 checks -----------------------------------------------------------------


def test_wrong_content_md5_is_400_bad_digest(api: Api) -> None:
    """A client sending a Content-MD5 of other bytes gets S3's 400 BadDigest; nothing stored.
    (S3 PutObject: 'Content-MD5 ... used as a message integrity check'; error BadDigest.)"""
    asset = api.create_asset()
    wrong = base64.b64encode(hashlib.md5(b"other bytes").digest()).decode()
    r = _put(asset, b"hello", **{"Content-MD5": wrong})
    assert r.status_code == 400, r.text
    assert "<Code>BadDigest</Code>" in r.text
    assert not api.emulator.assets.find(asset["assetId"]).uploaded  # type: ignore[union-attr]


def test_malformed_content_md5_is_400_invalid_digest(api: Api) -> None:
    """A Content-MD5 that is not base64 of 16 bytes: S3 400 InvalidDigest."""
    asset = api.create_asset()
    r = _put(asset, b"hello", **{"Content-MD5": "not-a-digest!"})
    assert r.status_code == 400, r.text
    assert "<Code>InvalidDigest</Code>" in r.text


def test_right_content_md5_is_accepted(api: Api) -> None:
    """The correct Content-MD5 is accepted and the ETag is that MD5 (S3 single PUT)."""
    asset = api.create_asset()
    digest = hashlib.md5(b"hello").digest()
    r = _put(asset, b"hello", **{"Content-MD5": base64.b64encode(digest).decode()})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == f'"{digest.hex()}"'


# -- headers the URL did not sign ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-amz-acl", "public-read"),
        ("x-amz-server-side-encryption", "AES256"),
        ("x-amz-tagging", "team=a"),
        ("x-amz-storage-class", "GLACIER"),
    ],
)
def test_unsigned_amz_header_is_access_denied(api: Api, name: str, value: str) -> None:
    """A client adding an unsigned x-amz-* header gets 403 AccessDenied, nothing stored."""
    asset = api.create_asset()
    r = _put(asset, b"x", **{name: value})
    assert r.status_code == 403, r.text
    assert "<Code>AccessDenied</Code>" in r.text
    assert f"<HeadersNotSigned>{name}</HeadersNotSigned>" in r.text
    assert not api.emulator.assets.find(asset["assetId"]).uploaded  # type: ignore[union-attr]


def test_underscore_spelled_description_header_is_not_the_signed_header(api: Api) -> None:
    """A typo'd header name ('x_amz_meta_nvcf_asset_description') does not count as the
    signed description header: S3 answers SignatureDoesNotMatch (emulator: 400 by default)."""
    asset = api.create_asset()
    r = requests.put(
        asset["uploadUrl"],
        data=b"x",
        headers={"Content-Type": "image/png", "x_amz_meta_nvcf_asset_description": "red-cat-photo"},
        timeout=TIMEOUT,
    )
    assert r.status_code in (400, 403), r.text
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text


@pytest.mark.parametrize(
    "extra",
    [{"content-type": "image/png"}, {"X-AMZ-META-NVCF-ASSET-DESCRIPTION": "red-cat-photo"}],
)
def test_signed_header_names_are_case_insensitive(api: Api, extra: dict[str, str]) -> None:
    """Header names in any case match the signed lower-case names (SigV4 lower-cases them)."""
    asset = api.create_asset()
    headers = {"Content-Type": "image/png", DESC: "red-cat-photo"}
    for name in extra:
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
    r = requests.put(asset["uploadUrl"], data=b"x", headers={**headers, **extra}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text


def test_description_whitespace_is_folded_as_sigv4_does(api: Api) -> None:
    """SigV4 canonical headers collapse runs of spaces, so 'red  cat' signed matches 'red cat'
    sent (AWS SigV4 docs: canonical headers, 'Trimall'); S3 accepts it, so must the emulator."""
    asset = api.create_asset(description="100%  red  cat")
    r = _put(asset | {"description": "100% red cat"}, b"x")
    assert r.status_code == 200, r.text


def test_content_type_with_charset_is_a_mismatch(api: Api) -> None:
    """Content-Type is signed byte for byte: 'text/plain; charset=utf-8' for an asset made
    as 'text/plain' is the seed's mismatch (400 SignatureDoesNotMatch), nothing stored."""
    asset = api.create_asset(content_type="text/plain")
    r = _put(asset | {"contentType": "text/plain; charset=utf-8"}, b"x")
    assert r.status_code == 400, r.text
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert "charset=utf-8" in r.text
    assert api.emulator.asset_path(asset["assetId"]) is None


# -- the create call vs S3's metadata limit ------------------------------------------------------


@pytest.mark.parametrize("description", ["x" * 2048, "é" * 1100], ids=["2048-ascii", "utf8-2200B"])
def test_description_over_s3s_2kb_metadata_limit_is_refused(api: Api, description: str) -> None:
    """A description that with its key 'nvcf-asset-description' is over 2 KB of UTF-8 cannot
    be stored as S3 metadata ('user metadata size is limited to 2k bytes for the total length
    of all values and keys', S3 UsingMetadata): refused at create (400) or at upload
    (400 MetadataTooLarge), never stored."""
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets",
        headers=api.headers,
        json={"contentType": "image/png", "description": description},
        timeout=TIMEOUT,
    )
    if r.status_code == 400:
        return
    assert r.status_code == 200
    up = _put(r.json(), b"x")
    assert up.status_code == 400, up.text
    assert "<Code>MetadataTooLarge</Code>" in up.text


# -- other methods and query-auth details on the upload URL ---------------------------------------


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_other_method_on_upload_url_is_signature_does_not_match(api: Api, method: str) -> None:
    """Using the upload URL to read or delete: S3's 403 SignatureDoesNotMatch; bytes intact."""
    asset = api.new_asset(b"keep me")
    r = requests.request(method, asset["uploadUrl"], timeout=TIMEOUT)
    assert r.status_code == 403, r.text
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert api.emulator.asset_bytes(asset["assetId"]) == b"keep me"


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "POST"])
def test_other_method_on_upload_url_leaves_the_bytes(api: Api, method: str) -> None:
    """Whatever the answer, a non-PUT on the upload URL never changes the stored asset."""
    asset = api.new_asset(b"keep me")
    r = requests.request(method, asset["uploadUrl"], data=b"evil", timeout=TIMEOUT)
    assert 400 <= r.status_code < 500
    assert api.emulator.asset_bytes(asset["assetId"]) == b"keep me"


def test_wrong_region_in_credential_is_a_query_parameters_error(api: Api) -> None:
    """A URL whose credential names another region: S3's 400 naming the expected region."""
    asset = api.create_asset()
    url = asset["uploadUrl"].replace("%2Fus-west-2%2F", "%2Fus-east-1%2F")
    assert url != asset["uploadUrl"]
    r = _put(asset | {"uploadUrl": url}, b"x")
    assert r.status_code == 400, r.text
    assert "<Code>AuthorizationQueryParametersError</Code>" in r.text
    assert "us-west-2" in r.text


# -- life cycle: delete, re-upload, empty bodies, races ------------------------------------------


def test_upload_after_delete_with_a_live_url_recreates_the_asset(api: Api) -> None:
    """DELETE removes the object, not the URL: S3 accepts a PUT to a still-valid URL, and since
    NVCF checks existence with a HEAD, the asset exists again with the new bytes."""
    asset = api.new_asset(b"v1")
    aid = asset["assetId"]
    r = requests.delete(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=api.headers)
    assert r.status_code == 204
    assert _get(api, aid).status_code == 404
    assert _put(asset, b"v2").status_code == 200
    assert _get(api, aid).status_code == 200
    assert api.emulator.asset_bytes(aid) == b"v2"


def test_empty_upload_is_a_zero_byte_asset(api: Api) -> None:
    """S3 stores a 0-byte object (ETag = MD5 of nothing) and NVCF's HEAD then finds it."""
    asset = api.create_asset()
    r = _put(asset, b"")
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == f'"{hashlib.md5(b"").hexdigest()}"'
    assert _get(api, asset["assetId"]).status_code == 200
    assert api.emulator.asset_bytes(asset["assetId"]) == b""


def test_delete_racing_a_reupload_keeps_a_consistent_asset(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DELETE that lands while a re-upload streams removes the old object (204); the PUT then
    completes and the asset exists with the new bytes (S3: last writer wins). Quota accounting
    matches what is stored."""
    asset = api.new_asset(b"old")
    body = _Gated(b"new-", b"bytes")
    opened = _writer_opened(api, monkeypatch)
    thread, out = _upload_in_thread(asset, body)
    assert opened.wait(TIMEOUT)
    r = requests.delete(f"{api.base_url}/v2/nvcf/assets/{asset['assetId']}", headers=api.headers)
    assert r.status_code == 204
    body.gate.set()
    thread.join(TIMEOUT)
    assert out["r"].status_code == 200, out["r"].text
    assert api.emulator.asset_bytes(asset["assetId"]) == b"new-bytes"
    assert api.emulator.assets.used_bytes == len(b"new-bytes")


@pytest.mark.nvcf(storage_quota_bytes=10)
def test_concurrent_uploads_cannot_pass_the_storage_quota(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 10 bytes of quota, two 8-byte uploads at once: one succeeds, the other gets 507
    InsufficientStorage; stored bytes never exceed the quota (README 'storage_quota_bytes')."""
    first, second = api.create_asset(), api.create_asset()
    body = _Gated(b"1234", b"5678")
    opened = _writer_opened(api, monkeypatch)
    thread, out = _upload_in_thread(first, body)
    assert opened.wait(TIMEOUT)
    r = _put(second, b"abcdefgh")
    body.gate.set()
    thread.join(TIMEOUT)
    statuses = sorted([r.status_code, out["r"].status_code])
    assert api.emulator.assets.used_bytes <= 10
    assert statuses == [200, 507]


# -- accounts and tokens -------------------------------------------------------------------------


@pytest.mark.nvcf(api_keys={"nvapi-team-key": "org/team"})
def test_nca_id_with_a_slash_can_upload(api: Api) -> None:
    """The emulator accepts any configured NCA id; its uploads must work (key '<nca>/<id>')."""
    asset = api.create_asset(key="nvapi-team-key")
    r = _put(asset, b"x")
    assert r.status_code == 200, r.text
    assert _get(api, asset["assetId"], {"Authorization": "Bearer nvapi-team-key"}).ok


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(api: Api, scheme: str) -> None:
    """RFC 7235 §2.1: the auth scheme is case-insensitive (Spring's resolver agrees)."""
    r = requests.get(
        f"{api.base_url}/v2/nvcf/assets",
        headers={"Authorization": f"{scheme} nvapi-anything"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200


def test_token_with_a_space_inside_is_401(api: Api) -> None:
    """'Bearer nvapi-x junk' is not a bearer token: 401 problem JSON."""
    r = requests.get(
        f"{api.base_url}/v2/nvcf/assets",
        headers={"Authorization": "Bearer nvapi-x junk"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 401
