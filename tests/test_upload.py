"""Uploads to pre-signed URLs: signature, headers, size, streaming, atomicity."""

from __future__ import annotations

import calendar
import hashlib
import io
import socket
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from nvcf_emulator import Emulator

from .conftest import Api

AMZ_DATE = "%Y%m%dT%H%M%SZ"

DESC = "x-amz-meta-nvcf-asset-description"


def _put(url: str, data: object, **headers: str) -> requests.Response:
    return requests.put(url, data=data, headers=headers)


def test_put_answers_exactly_200_with_an_etag_and_stores_the_bytes(api: Api) -> None:
    asset = api.create_asset()
    r = api.upload(asset, b"cat picture")
    assert r.status_code == 200
    assert r.headers["ETag"] == f'"{hashlib.md5(b"cat picture").hexdigest()}"'
    assert r.content == b""
    assert api.emulator.asset_bytes(asset["assetId"]) == b"cat picture"


def test_put_streams_a_file_body(api: Api, tmp_path: object) -> None:
    asset = api.create_asset(content_type="application/zip", description="weights")
    payload = bytes(range(256)) * 8192  # 2 MiB
    r = api.upload(asset, io.BytesIO(payload))
    assert r.status_code == 200
    assert api.emulator.asset_bytes(asset["assetId"]) == payload


def test_chunked_body_without_length_is_accepted(api: Api) -> None:
    asset = api.create_asset()
    r = api.upload(asset, iter([b"ab", b"", b"cd" * 1000]))
    assert r.status_code == 200
    assert api.emulator.asset_bytes(asset["assetId"]) == b"ab" + b"cd" * 1000


def test_tampered_signature_is_403_signature_does_not_match(api: Api) -> None:
    asset = api.create_asset()
    url = asset["uploadUrl"]
    sig = url.rsplit("X-Amz-Signature=", 1)[1]
    bad = url.replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:])
    r = api.upload(asset | {"uploadUrl": bad})
    assert r.status_code == 403
    assert r.headers["Content-Type"] == "application/xml"
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert "<StringToSign>" in r.text
    assert api.emulator.asset_path(asset["assetId"]) is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("X-Amz-Expires=3600", "X-Amz-Expires=7200"),
        ("X-Amz-Date=", "X-Amz-Date=1"),
        ("/nvcf-emulator-nca/", "/nvcf-emulator-nca2/"),
    ],
)
def test_any_change_to_the_signed_url_is_refused(api: Api, old: str, new: str) -> None:
    asset = api.create_asset()
    bad = asset["uploadUrl"].replace(old, new, 1)
    assert bad != asset["uploadUrl"]
    r = api.upload(asset | {"uploadUrl": bad})
    assert r.status_code in (400, 403), r.text
    assert not any(a.uploaded for a in api.emulator.stored_assets())


def test_url_signed_by_another_emulator_is_refused(api: Api) -> None:
    asset = api.create_asset()
    with Emulator() as other:
        # Same key, same path, but the other emulator's secret.
        foreign = other.signer.presign_put(
            asset["uploadUrl"].split("?")[0],
            {"content-type": "image/png", DESC: "red-cat-photo"},
            3600,
        )
    r = api.upload(asset | {"uploadUrl": foreign})
    assert r.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text


def test_unknown_access_key_is_invalid_access_key_id(api: Api) -> None:
    asset = api.create_asset()
    bad = asset["uploadUrl"].replace("AKIANVCFEMULATOR0000", "AKIAFOREIGNKEY000000")
    r = api.upload(asset | {"uploadUrl": bad})
    assert r.status_code == 403
    assert "<Code>InvalidAccessKeyId</Code>" in r.text


def test_unsigned_put_is_access_denied(api: Api) -> None:
    asset = api.create_asset()
    r = api.upload(asset | {"uploadUrl": asset["uploadUrl"].split("?")[0]})
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text


def test_partial_query_auth_is_400(api: Api) -> None:
    asset = api.create_asset()
    url = asset["uploadUrl"]
    r = api.upload(asset | {"uploadUrl": url.split("&X-Amz-Signature=")[0]})
    assert r.status_code == 400
    assert "<Code>AuthorizationQueryParametersError</Code>" in r.text


@pytest.mark.parametrize(
    ("headers", "named", "expected", "sent"),
    [
        (
            {"Content-Type": "image/jpeg", DESC: "red-cat-photo"},
            "Content-Type",
            "image/png",
            "image/jpeg",
        ),
        ({DESC: "red-cat-photo"}, "Content-Type", "image/png", None),
        ({"Content-Type": "image/png", DESC: "blue-dog"}, DESC, "red-cat-photo", "blue-dog"),
        ({"Content-Type": "image/png"}, DESC, "red-cat-photo", None),
    ],
)
def test_header_mismatch_is_400_naming_header_expected_and_sent(
    api: Api, headers: dict[str, str], named: str, expected: str, sent: str | None
) -> None:
    asset = api.create_asset()
    r = requests.put(asset["uploadUrl"], data=b"x", headers=headers)
    assert r.status_code == 400
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert named in r.text
    assert f"'{expected}'" in r.text
    if sent is None:
        assert "missing" in r.text
    else:
        assert f"'{sent}'" in r.text
    assert api.emulator.asset_path(asset["assetId"]) is None


@pytest.mark.nvcf(header_mismatch_status=403)
def test_header_mismatch_status_can_be_s3s_403(api: Api) -> None:
    asset = api.create_asset()
    r = requests.put(asset["uploadUrl"], data=b"x", headers={"Content-Type": "image/png"})
    assert r.status_code == 403


def test_unsigned_extra_headers_are_ignored(api: Api) -> None:
    asset = api.create_asset()
    r = requests.put(
        asset["uploadUrl"],
        data=b"x",
        headers={
            "Content-Type": "image/png",
            DESC: "red-cat-photo",
            "operation_name": "upload",
            "X-Custom": "1",
        },
    )
    assert r.status_code == 200


def test_unsigned_amz_metadata_header_is_access_denied(api: Api) -> None:
    asset = api.create_asset()
    r = requests.put(
        asset["uploadUrl"],
        data=b"x",
        headers={"Content-Type": "image/png", DESC: "red-cat-photo", "x-amz-meta-extra": "1"},
    )
    assert r.status_code == 403
    assert "<HeadersNotSigned>x-amz-meta-extra</HeadersNotSigned>" in r.text


@pytest.mark.nvcf(max_asset_bytes=1024)
def test_size_limit_from_content_length(api: Api) -> None:
    asset = api.create_asset()
    assert api.upload(asset, b"a" * 1024).status_code == 200
    r = api.upload(asset, b"b" * 1025)
    assert r.status_code == 400
    assert "<Code>EntityTooLarge</Code>" in r.text
    assert "<ProposedSize>1025</ProposedSize>" in r.text
    assert "<MaxSizeAllowed>1024</MaxSizeAllowed>" in r.text
    # The earlier upload is intact; no temp file is left.
    assert api.emulator.asset_bytes(asset["assetId"]) == b"a" * 1024
    assert api.emulator.store.pending_uploads() == []


@pytest.mark.nvcf(max_asset_bytes=1024)
def test_size_limit_while_streaming_a_body_without_length(api: Api) -> None:
    asset = api.create_asset()
    r = api.upload(asset, iter([b"x" * 600, b"y" * 600]))
    assert r.status_code == 400
    assert "<Code>EntityTooLarge</Code>" in r.text
    assert api.emulator.asset_path(asset["assetId"]) is None
    assert api.emulator.store.pending_uploads() == []


def test_default_limit_is_s3s_5_gb() -> None:
    with Emulator() as emu:
        assert emu.config.max_asset_bytes == 5 * 1024**3


class _Tripwire:
    """A body that claims ``length`` bytes and fails the test if more than ``allowed`` are read."""

    def __init__(self, length: int, allowed: int) -> None:
        self.length = length
        self.allowed = allowed
        self.read_so_far = 0

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        n = min(size if size >= 0 else self.length, self.length - self.read_so_far)
        self.read_so_far += n
        assert self.read_so_far <= self.allowed, f"body read to {self.read_so_far} bytes"
        return b"z" * n


@pytest.mark.nvcf(max_asset_bytes=1024)
def test_oversized_length_is_refused_before_the_body_is_read(nvcf: Emulator) -> None:
    from .conftest import Api

    api = Api("inprocess", nvcf.base_url, nvcf)
    asset = api.create_asset()
    body = _Tripwire(10 * 1024**3, allowed=0)
    r = api.upload(asset, body)
    assert r.request.headers["Content-Length"] == str(10 * 1024**3)
    assert r.status_code == 400
    assert "<Code>EntityTooLarge</Code>" in r.text
    assert body.read_so_far == 0


@pytest.mark.nvcf(max_asset_bytes=4 * 1024 * 1024)
def test_streaming_body_is_never_buffered_whole(nvcf: Emulator) -> None:
    """The app reads at most one chunk beyond the limit before refusing an endless body."""

    api = Api("inprocess", nvcf.base_url, nvcf)
    asset = api.create_asset()
    produced = 0

    def endless() -> Iterator[bytes]:
        nonlocal produced
        while True:
            produced += 65536
            assert produced <= 8 * 1024 * 1024, "the emulator kept reading past its limit"
            yield b"q" * 65536

    r = api.upload(asset, endless())
    assert r.status_code == 400
    assert "<Code>EntityTooLarge</Code>" in r.text
    assert produced <= 4 * 1024 * 1024 + 2 * 1024 * 1024


def test_failing_body_in_process_raises_and_leaves_nothing(nvcf: Emulator) -> None:
    api = Api("inprocess", nvcf.base_url, nvcf)
    asset = api.new_asset(b"first version")

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("disk on fire")

    with pytest.raises(requests.ConnectionError, match="disk on fire"):
        api.upload(asset, broken())
    assert nvcf.asset_bytes(asset["assetId"]) == b"first version"
    assert nvcf.store.pending_uploads() == []


def test_client_that_disconnects_mid_upload_leaves_nothing(nvcf_server: object) -> None:
    from nvcf_emulator import EmulatorServer

    assert isinstance(nvcf_server, EmulatorServer)
    api = Api("server", nvcf_server.url, nvcf_server.emulator)
    asset = api.create_asset()
    url = urlsplit(asset["uploadUrl"])
    request = (
        f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: image/png\r\n{DESC}: red-cat-photo\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode() + b"only-a-little"
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    assert b" 400 " in reply.split(b"\r\n", 1)[0]
    assert b"IncompleteBody" in reply
    assert nvcf_server.emulator.asset_path(asset["assetId"]) is None
    assert nvcf_server.emulator.store.pending_uploads() == []


def test_reupload_replaces_bytes_atomically(api: Api) -> None:
    asset = api.new_asset(b"v1")
    assert api.upload(asset, b"version two").status_code == 200
    assert api.emulator.asset_bytes(asset["assetId"]) == b"version two"


def test_url_expires_after_an_hour_on_the_emulator_clock(api: Api) -> None:
    asset = api.create_asset()
    # X-Amz-Date has whole seconds: count from it, not from when the URL was made (advancing
    # 3599 s from then could land past the hour by the fraction of a second it dropped).
    signed = calendar.timegm(
        time.strptime(parse_qs(urlsplit(asset["uploadUrl"]).query)["X-Amz-Date"][0], AMZ_DATE)
    )
    api.emulator.clock.set(signed + 3599)
    assert api.upload(asset, b"in time").status_code == 200
    api.emulator.clock.set(signed + 3601)
    r = api.upload(asset, b"too late")
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text
    assert "<Message>Request has expired</Message>" in r.text
    assert "<X-Amz-Expires>3600</X-Amz-Expires>" in r.text
    assert "<Expires>" in r.text and "<ServerTime>" in r.text
    assert api.emulator.asset_bytes(asset["assetId"]) == b"in time"


def test_get_with_the_upload_url_fails_its_signature(api: Api) -> None:
    """S3 signs the method: the PUT URL used for a GET is 403 SignatureDoesNotMatch, and the
    canonical request it shows starts with the method that was used."""
    asset = api.create_asset()
    r = requests.get(asset["uploadUrl"])
    assert r.status_code == 403, r.text
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert "<CanonicalRequest>GET\n" in r.text


def test_a_validly_signed_get_is_method_not_allowed_xml(api: Api) -> None:
    """A GET URL signed with the emulator's own key passes the signature; the storage takes
    only uploads, so it is S3's 405 MethodNotAllowed naming the method."""
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    asset = api.create_asset()
    signer = api.emulator.signer
    url = asset["uploadUrl"].split("?", 1)[0]
    request = AWSRequest(method="GET", url=url)
    credentials = Credentials(signer.access_key, signer.secret_key)
    S3SigV4QueryAuth(credentials, "s3", signer.region, expires=60).add_auth(request)
    r = requests.get(request.url)
    assert r.status_code == 405, r.text
    assert "<Code>MethodNotAllowed</Code>" in r.text
    assert "<Method>GET</Method>" in r.text


@pytest.mark.nvcf(upload_etag="opaque")
def test_opaque_etag_skips_hashing_but_stays_unique(api: Api) -> None:
    first, second = api.create_asset(), api.create_asset()
    r1, r2 = api.upload(first, b"same bytes"), api.upload(second, b"same bytes")
    assert r1.status_code == r2.status_code == 200
    md5 = f'"{hashlib.md5(b"same bytes").hexdigest()}"'
    assert r1.headers["ETag"] != md5
    assert r1.headers["ETag"] != r2.headers["ETag"]
    assert api.emulator.asset_bytes(first["assetId"]) == b"same bytes"
