"""Property tests (hypothesis) for the parts that parse: the SigV4 verifier and id checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nvcf_emulator import Emulator
from nvcf_emulator.domain.assets import is_asset_id
from nvcf_emulator.domain.clock import Clock
from nvcf_emulator.domain.errors import StorageError
from nvcf_emulator.storage.presign import (
    DESCRIPTION_HEADER,
    HeaderMismatch,
    PresignedRequest,
    UrlSigner,
    decode_query,
)

HOST = "nvcf-assets.s3.us-west-2.amazonaws.com"
KEY = "/nca/0b0f1c2e-3d4a-4b5c-8d6e-7f8091a2b3c4"
HEADERS = {"content-type": "image/png", DESCRIPTION_HEADER: "red-cat-photo"}
SIGNER = UrlSigner(Clock(), region="us-west-2", secret_key="fixed-secret-for-properties")
URL = SIGNER.presign_put(f"https://{HOST}{KEY}", HEADERS, 3600)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _request(
    url: str, method: str = "PUT", headers: dict[str, str] | None = None
) -> PresignedRequest:
    parts = urlsplit(url)
    return PresignedRequest(
        method=method,
        scheme=parts.scheme,
        host=parts.netloc,
        path=unquote(parts.path),
        query=decode_query(parts.query),
        headers=HEADERS if headers is None else headers,
    )


def _rejected(req: PresignedRequest) -> bool:
    try:
        SIGNER.verify(req, HEADERS)
    except (StorageError, HeaderMismatch):
        return True
    return False


def test_the_genuine_url_passes() -> None:
    verified = SIGNER.verify(_request(URL), HEADERS)
    assert verified.signed_headers == ("content-type", "host", DESCRIPTION_HEADER)


PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@SETTINGS
@given(data=st.data())
def test_any_single_byte_change_to_the_url_is_rejected(data: st.DataObject) -> None:
    start = len("https://") + len(HOST)  # the host is the routing target, not part of the URL here
    pos = data.draw(st.integers(min_value=start, max_value=len(URL) - 1))
    new = data.draw(PRINTABLE.filter(lambda c: c != URL[pos]))
    mutated = URL[:pos] + new + URL[pos + 1 :]
    # A change that decodes to the same URL (e.g. %2F -> %2f) is the same request to S3 too;
    # one that makes the URL unparseable (a '[' in the authority) can never be sent at all.
    original = urlsplit(URL)
    try:
        changed = urlsplit(mutated)
    except ValueError:
        assume(False)
    assume(
        unquote(changed.path) != unquote(original.path)
        or decode_query(changed.query) != decode_query(original.query)
    )
    assert _rejected(_request(mutated))


@SETTINGS
@given(
    name=st.sampled_from(sorted(HEADERS)),
    data=st.data(),
)
def test_any_single_byte_change_to_a_signed_header_is_rejected(
    name: str, data: st.DataObject
) -> None:
    value = HEADERS[name]
    pos = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    new = data.draw(PRINTABLE.filter(lambda c: c != value[pos]))
    headers = {**HEADERS, name: value[:pos] + new + value[pos + 1 :]}
    with pytest.raises(HeaderMismatch):
        SIGNER.verify(_request(URL, headers=headers), HEADERS)


@SETTINGS
@given(method=st.sampled_from(["GET", "POST", "DELETE", "HEAD", "PATCH", "put"]))
def test_another_method_is_rejected(method: str) -> None:
    assume(method.upper() != "PUT")
    assert _rejected(_request(URL, method=method))


@SETTINGS
@given(host=st.text(PRINTABLE, min_size=1, max_size=40))
def test_another_host_is_rejected(host: str) -> None:
    assume(host != HOST)
    genuine = _request(URL)
    assert _rejected(
        PresignedRequest(
            genuine.method, genuine.scheme, host, genuine.path, genuine.query, genuine.headers
        )
    )


@SETTINGS
@given(st.text(max_size=64))
def test_is_asset_id_accepts_exactly_canonical_uuids(text: str) -> None:
    try:
        canonical = str(uuid.UUID(text)) == text
    except ValueError:
        canonical = False
    assert is_asset_id(text) == canonical


@SETTINGS
@given(st.uuids())
def test_every_canonical_uuid_is_an_asset_id(value: uuid.UUID) -> None:
    assert is_asset_id(str(value))
    assert not is_asset_id(str(value).upper())


# -- size and range headers: whatever a client sends, never a 5xx ------------------------------


@pytest.fixture(scope="module")
def prop_emulator() -> Iterator[Emulator]:
    emu = Emulator(max_asset_bytes=64)
    yield emu
    emu.close()


HEADER_TEXT = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
    st.sampled_from(["bytes=0-", "bytes=-5", "bytes=5-1", "bytes=0-0,1-1", "1e3", " 12 ", ""]),
)


@SETTINGS
@given(length=HEADER_TEXT, range_=HEADER_TEXT, body=st.binary(max_size=100))
def test_any_content_length_or_range_gets_an_answer_not_a_5xx(
    prop_emulator: Emulator, length: str, range_: str, body: bytes
) -> None:
    """Raw environs, as a server hands them over: the Content-Length header is whatever the
    client wrote (werkzeug's test builder would correct it, so it is set by hand)."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    emu = prop_emulator
    auth = "Bearer nvapi-prop"
    asset = emu.assets.create(emu.accounts.authenticate(auth), "a/b", "d")
    url = urlsplit(emu.upload_url(asset))
    calls = [
        ("PUT", url.path, url.query, {"Content-Type": "a/b", DESCRIPTION_HEADER: "d"}),
        ("POST", "/v2/nvcf/assets", "", {"Content-Type": "application/json"}),
        ("GET", f"/v2/nvcf/assets/{asset.asset_id}", "", {}),
        ("POST", f"/v2/nvcf/pexec/functions/{uuid.uuid4()}", "", {}),
    ]
    for method, path, query, extra in calls:
        environ = EnvironBuilder(
            path=path,
            base_url=f"{url.scheme}://{url.netloc}",
            query_string=query,
            method=method,
            headers={"Authorization": auth, "Range": range_, **extra},
            data=body,
        ).get_environ()
        environ["CONTENT_LENGTH"] = length
        _, status, _ = run_wsgi_app(emu.app, environ, buffered=True)
        assert int(status.split()[0]) < 500, (method, path, length, status)
