"""In-process routing under demanding client code, compared with server mode.

Each scenario is what a user's ``requests`` / ``httpx`` code does; where it makes sense it runs
in both modes (the ``api`` fixture: in-process and over a socket) and must give the same
answer. A known difference (README, "In-process limits") would be marked ``xfail(strict=True)``
with the reason, the server case of the same test still having to pass; none is left.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import threading
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import requests
import responses
from flask import Flask, Response, request
from moto import mock_aws
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest

from .conftest import Api, EventStream

DESC = "x-amz-meta-nvcf-asset-description"
UPLOAD_HEADERS = {"Content-Type": "text/plain", DESC: "d"}


def _prefix(api: Api) -> str:
    """The scheme prefix a user mounts an adapter on, for this mode's base URL."""
    return api.base_url.split("://")[0] + "://"


def _new_asset(api: Api, description: str = "d") -> dict[str, Any]:
    return api.create_asset("text/plain", description)


# -- containers --------------------------------------------------------------------------------


def _echo_app() -> Flask:
    """A container that answers with the body and the headers it received."""
    app = Flask("echo")

    @app.get("/v2/health/ready")
    def ready() -> str:
        return "ok"

    @app.post("/echo")
    def echo() -> Response:
        body = request.get_data()
        answer = Response(body, content_type="application/octet-stream")
        answer.headers["X-Body-Length"] = str(len(body))
        answer.headers["X-Seen-Content-Type"] = request.headers.get("Content-Type", "")
        answer.set_cookie("session", "abc123")
        return answer

    @app.post("/gzip")
    def gzipped() -> Response:
        return Response(
            gzip.compress(b"hello gzip"),
            headers={"Content-Encoding": "gzip"},
            content_type="text/plain",
        )

    return app


def _echo(api: Api, inference_url: str = "/echo") -> str:
    """Register the echo container; returns its invocation URL."""
    fid, _ = api.emulator.add_function(_echo_app(), name="echo", inference_url=inference_url)
    return f"{api.base_url}/v2/nvcf/pexec/functions/{fid}"


@pytest.fixture
def served() -> Iterator[tuple[Emulator, str, Any]]:
    """A fresh emulator on its own socket server (for tests that stop the server)."""
    emu = Emulator()
    server = emu.serve()
    try:
        yield emu, server.url, server
    finally:
        server.stop(grace=1)
        emu.close()


# == requests: streaming ========================================================================


def test_closing_a_streamed_event_stream_early_closes_the_containers_stream(
    nvcf: Emulator, sse: EventStream
) -> None:
    """``r.close()`` after the first event: the container's generator is closed at once (a
    server only notices when it next writes)."""
    kwargs = sse.register(nvcf, nvcf.base_url)
    r = requests.post(**kwargs, stream=True, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert next(r.iter_lines()) == b"data: first"
    assert not sse.ended.is_set()
    r.close()
    assert sse.ended.wait(5)


def test_streamed_event_stream_with_iter_content_and_raw_read(
    nvcf: Emulator, sse: EventStream
) -> None:
    """``iter_content(1)`` hands over the first event before the second exists, and
    ``raw.read()`` then returns the rest."""
    kwargs = sse.register(nvcf, nvcf.base_url)
    with requests.post(**kwargs, stream=True, timeout=10) as r:
        got = b""
        pieces = r.iter_content(1)
        while not got.endswith(b"\n\n"):
            got += next(pieces)
        assert got == b"data: first\n\n"
        sse.go.set()
        assert r.raw.read() == b"data: second\n\n"


def test_streamed_json_and_gzip_bodies_are_the_same_in_both_modes(api: Api) -> None:
    """``stream=True`` + ``iter_content``/``raw.read``; a gzip answer is decoded by
    ``content`` and left compressed by ``raw.read()``, in both modes."""
    for data in (b"one", b"two"):
        api.new_asset(data, content_type="text/plain", description="d")
    with requests.get(
        f"{api.base_url}/v2/nvcf/assets", headers=api.headers, stream=True, timeout=10
    ) as r:
        listed = json.loads(b"".join(r.iter_content(5)))
    assert len(listed["assets"]) == 2
    url = _echo(api, "/gzip")
    decoded = requests.post(url, headers=api.headers, data=b"x", timeout=10)
    assert decoded.content == b"hello gzip"
    assert decoded.headers["Content-Encoding"] == "gzip"
    raw = requests.post(url, headers=api.headers, data=b"x", stream=True, timeout=10)
    assert gzip.decompress(raw.raw.read()) == b"hello gzip"
    lines = requests.post(url, headers=api.headers, data=b"x", stream=True, timeout=10)
    assert list(lines.iter_lines(decode_unicode=True)) == ["hello gzip"]


# == requests: bodies ===========================================================================


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"json": {"prompt": "café 猫 ✓"}}, id="json-non-ascii"),
        pytest.param({"data": "café 猫"}, id="str-non-latin1"),
        pytest.param({"files": {"f": ("猫.txt", b"hello", "text/plain")}}, id="multipart"),
        pytest.param({"data": b""}, id="zero-bytes"),
        pytest.param({"data": lambda: iter([b"single chunk"])}, id="one-chunk-generator"),
    ],
)
def test_request_bodies_reach_the_container_as_over_a_socket(
    api: Api, body: dict[str, Any]
) -> None:
    """The container sees the same bytes and Content-Type in both modes."""
    url = _echo(api)
    body = {k: v() if callable(v) else v for k, v in body.items()}  # a fresh generator
    r = requests.post(url, headers=api.headers, timeout=10, **body)
    assert r.status_code == 200, r.text
    if "json" in body:
        assert json.loads(r.content) == body["json"]
    elif "files" in body:
        assert b'filename="' in r.content and b"hello" in r.content
        assert r.headers["X-Seen-Content-Type"].startswith("multipart/form-data; boundary=")
    elif isinstance(body["data"], str):
        assert r.content == body["data"].encode("utf-8")
    elif body["data"] == b"":
        assert r.content == b""
    else:
        assert r.content == b"single chunk"


def test_empty_bodies_upload_as_over_a_socket(api: Api, tmp_path: Path) -> None:
    """Zero-byte uploads: ``b""`` (Content-Length 0), an empty generator and an empty file
    (which requests sends chunked) are all stored as empty assets."""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with empty.open("rb") as f:
        bodies: list[Any] = [b"", iter([]), f]
        for body in bodies:
            asset = _new_asset(api)
            r = requests.put(asset["uploadUrl"], data=body, headers=UPLOAD_HEADERS, timeout=10)
            assert r.status_code == 200, r.text
            assert api.bytes_at(api.key_of(asset["assetId"])) == b""


def test_a_multi_chunk_generator_body_reaches_the_container_whole(api: Api) -> None:
    """``data=iter([...])`` (sent chunked): the container gets every chunk."""
    url = _echo(api)
    r = requests.post(url, headers=api.headers, data=iter([b"ab", b"cd", b"ef"]), timeout=10)
    assert r.status_code == 200
    assert r.content == b"abcdef"


def test_a_chunked_json_body_creates_an_asset(api: Api) -> None:
    """A JSON body streamed from a generator is read whole by the control plane."""
    chunks = [b'{"contentType": "text/plain", ', b'"description": "d"}']
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets",
        headers={**api.headers, "Content-Type": "application/json"},
        data=iter(chunks),
        timeout=10,
    )
    assert r.status_code == 200, r.text


@pytest.mark.nvcf(max_request_bytes=1024)
def test_a_generator_body_over_the_request_limit_is_refused(api: Api) -> None:
    """A 2 KiB body sent chunked to a function limited to 1 KiB: 413 in both modes."""
    url = _echo(api)
    body = (b"x" * 64 for _ in range(32))
    r = requests.post(url, headers=api.headers, data=body, timeout=10)
    assert r.status_code == 413


def test_a_generator_raising_a_non_os_error_mid_upload_raises_that_error(api: Api) -> None:
    """The body's own ``ValueError`` comes back (as urllib3 lets it through); nothing stored."""
    asset = _new_asset(api)

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise ValueError("bad generator")

    with pytest.raises(ValueError, match="bad generator"):
        requests.put(asset["uploadUrl"], data=broken(), headers=UPLOAD_HEADERS, timeout=10)
    assert api.bytes_at(api.key_of(asset["assetId"])) is None


def test_a_generator_raising_oserror_mid_upload_is_a_connection_error(api: Api) -> None:
    """An ``OSError`` from the body is a ``requests.ConnectionError`` in both modes."""
    asset = _new_asset(api)

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("disk gone")

    with pytest.raises(requests.exceptions.ConnectionError):
        requests.put(asset["uploadUrl"], data=broken(), headers=UPLOAD_HEADERS, timeout=10)
    assert api.bytes_at(api.key_of(asset["assetId"])) is None


@pytest.mark.filterwarnings("ignore::requests.exceptions.FileModeWarning")
def test_a_text_mode_file_with_non_ascii_uploads(api: Api, tmp_path: Path) -> None:
    """``open(path, "r")`` as the body: urllib3 sends it UTF-8 encoded (3 MB here)."""
    path = tmp_path / "cats.txt"
    path.write_text("猫" * 1_000_000, encoding="utf-8")
    asset = _new_asset(api)
    with path.open("r", encoding="utf-8") as f:
        r = requests.put(asset["uploadUrl"], data=f, headers=UPLOAD_HEADERS, timeout=10)
    assert r.status_code == 200, r.text
    assert api.bytes_at(api.key_of(asset["assetId"])) == path.read_bytes()


# == requests: headers, cookies, auth, params, paths ============================================


def test_bytes_header_values_work(api: Api) -> None:
    """``headers={"Authorization": b"Bearer ..."}`` (bytes values are allowed by requests)."""
    key = api.headers["Authorization"].encode("ascii")
    r = requests.get(f"{api.base_url}/v2/nvcf/assets", headers={"Authorization": key}, timeout=10)
    assert r.status_code == 200


def test_a_header_value_that_cannot_be_sent_raises(api: Api) -> None:
    """A non-latin-1 description header: http.client raises before sending anything."""
    asset = _new_asset(api, description="猫")
    with pytest.raises(UnicodeEncodeError):
        requests.put(
            asset["uploadUrl"],
            data=b"x",
            headers={"Content-Type": "text/plain", DESC: "猫"},
            timeout=10,
        )


def test_a_latin1_header_value_matches(api: Api) -> None:
    """A latin-1 description (``café``) is sent as latin-1 and matches in both modes."""
    asset = _new_asset(api, description="café")
    r = requests.put(
        asset["uploadUrl"],
        data=b"x",
        headers={"Content-Type": "text/plain", DESC: "café"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def test_set_cookie_from_a_container_reaches_the_session_jar(api: Api) -> None:
    """A container's ``Set-Cookie`` is in ``r.cookies`` and ``session.cookies``."""
    url = _echo(api)
    with requests.Session() as s:
        r = s.post(url, headers=api.headers, data=b"x", timeout=10)
        assert r.status_code == 200
        assert r.cookies.get("session") == "abc123"
        assert s.cookies.get("session") == "abc123"


def test_session_cookies_hooks_and_custom_auth_are_applied(api: Api) -> None:
    """A custom ``AuthBase``, response hooks and the session's cookies, in both modes."""

    class NvcfAuth(requests.auth.AuthBase):
        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            r.headers["Authorization"] = api.headers["Authorization"]
            return r

    seen: list[int] = []

    def hook(r: requests.Response, *args: Any, **kwargs: Any) -> None:
        seen.append(r.status_code)

    with requests.Session() as s:
        s.cookies.set("k", "v")
        s.hooks["response"].append(hook)
        r = s.get(f"{api.base_url}/v2/nvcf/assets", auth=NvcfAuth(), timeout=10)
        assert r.status_code == 200
        assert r.request.headers["Cookie"] == "k=v"
        basic = s.get(f"{api.base_url}/v2/nvcf/assets", auth=("user", "pass"), timeout=10)
    assert basic.status_code == 401
    assert seen == [200, 401]


def test_unicode_and_repeated_params_and_odd_paths_get_the_same_answers(api: Api) -> None:
    """Repeated and non-ASCII query keys, unicode, percent-encoded and invalid-UTF-8 paths, a
    double slash: same status and problem JSON in both modes."""
    api.new_asset(b"x", content_type="text/plain", description="d")
    h = api.headers
    listed = requests.get(
        f"{api.base_url}/v2/nvcf/assets",
        params={"limit": ["1", "2"], "ü": "é"},
        headers=h,
        timeout=10,
    )
    assert listed.status_code == 200
    assert len(listed.json()["assets"]) == 1
    for path, shown in [
        ("/v2/nvcf/assets/猫", "猫"),
        ("/v2/nvcf/assets/%E7%8C%AB%2F..", "猫/.."),
        ("/v2/nvcf/assets/%FF", "\ufffd"),
    ]:
        r = requests.get(api.base_url + path, headers=h, timeout=10)
        assert r.status_code == (404 if "/" in shown else 400), path  # 400: not a UUID
        assert r.json()["instance"] == f"/v2/nvcf/assets/{shown}"
    assert requests.get(f"{api.base_url}//v2/nvcf/assets", headers=h, timeout=10).status_code == 200
    head = requests.head(f"{api.base_url}/v2/nvcf/assets", headers=h, timeout=10)
    assert head.status_code == 200 and head.content == b""


def test_raw_http_version_is_11(api: Api) -> None:
    """``r.raw.version`` (what logging and some SDKs read) is 11 as over a socket."""
    r = requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers, timeout=10)
    assert r.raw.version == 11


# == requests: redirects, retries, adapters =====================================================


def _big_result(req: ContainerRequest) -> bytes:
    return b"z" * (6 * 1024 * 1024)  # over NVCF-MAX-RESPONSE-SIZE-BYTES: a 302 to a zip


def test_large_result_redirect_followed_or_not(api: Api) -> None:
    """A large result is a 302 to a zip: followed by default (history [302]), not with
    ``allow_redirects=False``; the zip URL works without Authorization."""
    fid, _ = api.emulator.add_function(_big_result, name="big")
    url = f"{api.base_url}/v2/nvcf/pexec/functions/{fid}"
    followed = requests.post(url, headers=api.headers, json={}, timeout=10)
    assert followed.status_code == 200
    assert [h.status_code for h in followed.history] == [302]
    assert followed.headers["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(followed.content)).namelist()
    assert len(names) == 1 and names[0].endswith(".response")
    manual = requests.post(url, headers=api.headers, json={}, allow_redirects=False, timeout=10)
    assert manual.status_code == 302 and manual.is_redirect
    assert manual.headers["Location"].startswith(api.base_url)
    assert requests.get(manual.headers["Location"], timeout=10).status_code == 200
    with httpx.Client(follow_redirects=True, timeout=10) as client:
        r = client.post(url, headers=api.headers, json={})
    assert r.status_code == 200 and [h.status_code for h in r.history] == [302]


def test_a_retry_with_total_none_still_retries_statuses(api: Api) -> None:
    """``Retry(total=None, status=3, status_forcelist=[503])``: two 503s, then 200."""
    api.emulator.faults.add("create", status=503, times=2)
    policy = Retry(total=None, status=3, status_forcelist=[503], allowed_methods=None)
    with requests.Session() as s:
        s.mount(_prefix(api), HTTPAdapter(max_retries=policy))
        r = s.post(
            f"{api.base_url}/v2/nvcf/assets",
            headers=api.headers,
            json={"contentType": "text/plain", "description": "d"},
            timeout=10,
        )
    assert r.status_code == 200


def test_retries_on_drops_and_raise_on_status_false(api: Api) -> None:
    """A dropped PUT is retried under ``allowed_methods=None`` and stored once; with
    ``raise_on_status=False`` the last 503 comes back; a streamed GET is retried too."""
    asset = _new_asset(api)
    api.emulator.faults.add("upload", drop=True, times=2)
    with requests.Session() as s:
        s.mount(_prefix(api), HTTPAdapter(max_retries=Retry(total=3, allowed_methods=None)))
        r = s.put(asset["uploadUrl"], data=b"payload", headers=UPLOAD_HEADERS, timeout=10)
    assert r.status_code == 200
    assert api.bytes_at(api.key_of(asset["assetId"])) == b"payload"
    api.emulator.faults.add("upload", drop=True, times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.put(asset["uploadUrl"], data=b"again", headers=UPLOAD_HEADERS, timeout=10)
    api.emulator.faults.clear()
    api.emulator.faults.add("list", status=503, times=None)
    policy = Retry(total=2, status_forcelist=[503], raise_on_status=False)
    with requests.Session() as s:
        s.mount(_prefix(api), HTTPAdapter(max_retries=policy))
        last = s.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers, timeout=10)
    assert last.status_code == 503
    assert last.headers["Content-Type"] == "application/problem+json"
    api.emulator.faults.clear()
    api.emulator.faults.add("list", status=503, times=1)
    with requests.Session() as s:
        s.mount(_prefix(api), HTTPAdapter(max_retries=Retry(total=2, status_forcelist=[503])))
        with s.get(
            f"{api.base_url}/v2/nvcf/assets", headers=api.headers, stream=True, timeout=10
        ) as streamed:
            assert streamed.status_code == 200
            assert json.loads(streamed.raw.read())["assets"]


def test_a_users_adapter_subclass_still_applies(api: Api) -> None:
    """An ``HTTPAdapter`` subclass that adds the API key in ``add_headers``."""
    key = api.headers["Authorization"]

    class KeyAdapter(HTTPAdapter):
        def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
            request.headers["Authorization"] = key

    with requests.Session() as s:
        s.mount(api.base_url, KeyAdapter())
        r = s.get(f"{api.base_url}/v2/nvcf/assets", timeout=10)
    assert r.status_code == 200


class _TimeoutAdapter(HTTPAdapter):
    """The common "default timeout" adapter: ``send`` fills in ``timeout``, then defers."""

    def __init__(self, timeout: float, **kwargs: Any) -> None:
        self.timeout = timeout
        self.sent: list[str] = []
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        self.sent.append(request.method or "")
        self.count = getattr(self, "count", 0) + 1  # state kept on the adapter the user mounted
        return super().send(request, **kwargs)


def test_a_users_adapter_subclass_beside_responses() -> None:
    """``responses`` patches ``HTTPAdapter.send``; a user's subclass deferring to it still
    reaches the emulator (its ``add_headers`` ran), and other hosts still reach ``responses``."""

    class Marked(HTTPAdapter):
        def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
            request.headers["X-Marked"] = "yes"

    with (
        responses.RequestsMock(assert_all_requests_are_fired=True) as rsps,
        Emulator() as emu,
        requests.Session() as s,
    ):
        rsps.get("https://example.com/weather", json={"sunny": True})
        s.mount("https://", Marked())
        r = s.get(f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers, timeout=10)
        assert r.status_code == 200, r.text
        assert r.request.headers["X-Marked"] == "yes"
        assert s.get("https://example.com/weather", timeout=10).json() == {"sunny": True}


def test_a_users_send_override_sets_the_timeout(api: Api, slow: str) -> None:
    """A ``send`` override giving every call a 0.2 s timeout: a 1.5 s container is a
    ``ReadTimeout``, and the adapter (its attributes read as they are now) saw the call."""
    adapter = _TimeoutAdapter(timeout=30)
    with requests.Session() as s:
        s.mount(_prefix(api), adapter)
        adapter.timeout = 0.2  # changed after mounting: the live value counts
        with pytest.raises(requests.exceptions.ReadTimeout):
            s.post(slow, headers=api.headers, json={})
    assert adapter.sent == ["POST"]


def test_a_users_adapter_subclass_keeps_its_retries_and_streams(api: Api) -> None:
    """Through a user's subclass: a ``Retry`` policy retries 503s and drops, ``RetryError``
    when they run out, a streamed upload and a streamed answer work as over a socket."""
    api.emulator.faults.add("list", status=503, times=2)
    policy = Retry(total=3, status_forcelist=[503], allowed_methods=None)
    adapter = _TimeoutAdapter(timeout=10, max_retries=policy)
    with requests.Session() as s:
        s.mount(_prefix(api), adapter)
        s.headers.update(api.headers)
        assert s.get(f"{api.base_url}/v2/nvcf/assets").status_code == 200
        api.emulator.faults.add("list", status=503, times=None)
        with pytest.raises(requests.exceptions.RetryError):
            s.get(f"{api.base_url}/v2/nvcf/assets")
        api.emulator.faults.clear()
        asset = _new_asset(api)
        api.emulator.faults.add("upload", drop=True, times=1)
        r = s.put(asset["uploadUrl"], data=io.BytesIO(b"x" * 300_000), headers=UPLOAD_HEADERS)
        assert r.status_code == 200, r.text
        assert api.bytes_at(api.key_of(asset["assetId"])) == b"x" * 300_000
        with s.get(f"{api.base_url}/v2/nvcf/assets", stream=True) as streamed:
            assert json.loads(b"".join(streamed.iter_content(7)))["assets"]
    assert adapter.sent == ["GET", "GET", "PUT", "GET"]  # retries happen below send
    assert adapter.count == 4


# == requests: timeouts and life cycle ==========================================================


@pytest.fixture
def slow(api: Api) -> Iterator[str]:
    """A function whose container answers after 1.5 s (or once ``api`` is done)."""
    done = threading.Event()

    def container(req: ContainerRequest) -> dict[str, bool]:
        done.wait(1.5)
        return {"ok": True}

    fid, _ = api.emulator.add_function(container, name="slow")
    yield f"{api.base_url}/v2/nvcf/pexec/functions/{fid}"
    done.set()


def test_requests_read_timeout_on_a_slow_container(api: Api, slow: str) -> None:
    """``timeout=0.2`` on a container that takes 1.5 s: ``requests.ReadTimeout``."""
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(slow, headers=api.headers, json={}, timeout=0.2)


def test_httpx_read_timeout_on_a_slow_container(api: Api, slow: str) -> None:
    """``httpx.post(..., timeout=0.2)`` on a container that takes 1.5 s: ``httpx.ReadTimeout``."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(slow, headers=api.headers, json={}, timeout=0.2)


def test_closing_the_emulator_cuts_a_held_requests_stream(sse: EventStream) -> None:
    """In-process: ``emu.close()`` while a client holds a streamed response."""
    emu = Emulator()
    with emu:
        kwargs = sse.register(emu, emu.base_url)
        r = requests.post(**kwargs, stream=True, timeout=10)
        lines = r.iter_lines()
        assert next(lines) == b"data: first"
    sse.go.set()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(lines)


def test_stopping_the_server_cuts_a_held_requests_stream(
    sse: EventStream, served: tuple[Emulator, str, Any]
) -> None:
    """The reference: a server stopped while a client holds a stream cuts it."""
    emu, url, server = served
    kwargs = sse.register(emu, url)
    r = requests.post(**kwargs, stream=True, timeout=10)
    lines = r.iter_lines()
    assert next(lines) == b"data: first"
    server.stop(grace=0.2)
    sse.go.set()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(lines)


def test_closing_the_emulator_cuts_a_held_httpx_stream(sse: EventStream) -> None:
    """In-process: ``emu.close()`` while an httpx client holds ``client.stream(...)``."""
    emu = Emulator()
    emu.__enter__()
    try:
        kwargs = sse.register(emu, emu.base_url)
        with httpx.Client(timeout=10) as client, client.stream("POST", **kwargs) as r:
            lines = r.iter_lines()
            assert next(lines) == "data: first"
            emu.close()
            sse.go.set()
            with pytest.raises(httpx.RemoteProtocolError):
                list(lines)
    finally:
        emu.close()


def test_closing_the_emulator_cuts_a_held_async_httpx_stream(sse: EventStream) -> None:
    """In-process: ``emu.close()`` while an ``httpx.AsyncClient`` holds a stream."""

    async def main() -> None:
        emu = Emulator()
        emu.__enter__()
        try:
            kwargs = sse.register(emu, emu.base_url)
            async with (
                httpx.AsyncClient(timeout=10) as client,
                client.stream("POST", **kwargs) as r,
            ):
                lines = r.aiter_lines()
                assert await lines.__anext__() == "data: first"
                emu.close()
                sse.go.set()
                with pytest.raises(httpx.RemoteProtocolError):
                    async for _ in lines:
                        pass
        finally:
            emu.close()

    asyncio.run(main())


def test_leaving_a_nested_activation_keeps_a_held_stream(sse: EventStream) -> None:
    """Only the emulator's last route cuts its streams: leaving an inner ``activate()`` while
    the outer ``with emu:`` still routes it leaves a held stream readable to its end."""
    with Emulator() as emu:
        with emu.activate():
            kwargs = sse.register(emu, emu.base_url)
            r = requests.post(**kwargs, stream=True, timeout=10)
            lines = r.iter_lines()
            assert next(lines) == b"data: first"
        sse.go.set()
        assert [line for line in lines if line] == [b"data: second"]
        assert sse.ended.wait(5)


def test_one_session_shared_by_many_threads(nvcf: Emulator) -> None:
    """16 threads x 20 create + upload rounds on one ``Session``: every asset intact."""
    with requests.Session() as s:
        s.headers.update(nvcf.headers)

        def one(i: int) -> bool:
            asset = s.post(
                f"{nvcf.base_url}/v2/nvcf/assets",
                json={"contentType": "text/plain", "description": "d"},
                timeout=10,
            ).json()
            data = f"body-{i}".encode() * (i + 1)
            r = s.put(asset["uploadUrl"], data=data, headers=UPLOAD_HEADERS, timeout=10)
            return r.status_code == 200 and nvcf.asset_bytes(asset["assetId"]) == data

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(320)))
    assert all(results)


# == several emulators, other mocks =============================================================


def test_two_emulators_on_different_api_hosts_get_their_own_control_calls() -> None:
    """Two emulators routed at once: each API host reaches its own emulator."""
    with (
        Emulator(api_base_url="https://a.nvcf.test") as a,
        Emulator(api_base_url="https://b.nvcf.test") as b,
    ):
        created_a = requests.post(
            f"{a.base_url}/v2/nvcf/assets",
            headers=a.headers,
            json={"contentType": "text/plain", "description": "d"},
            timeout=10,
        ).json()
        assert a.assets.find(created_a["assetId"]) is not None
        assert b.assets.find(created_a["assetId"]) is None


def test_two_emulators_on_different_api_hosts_each_take_their_own_uploads() -> None:
    """Upload to the outer emulator's pre-signed URL while another emulator is routed."""
    with (
        Emulator(api_base_url="https://a.nvcf.test") as a,
        Emulator(api_base_url="https://b.nvcf.test") as b,
    ):
        asset = requests.post(
            f"{a.base_url}/v2/nvcf/assets",
            headers=a.headers,
            json={"contentType": "text/plain", "description": "d"},
            timeout=10,
        ).json()
        r = requests.put(asset["uploadUrl"], data=b"for a", headers=UPLOAD_HEADERS, timeout=10)
        assert r.status_code == 200, r.text
        assert a.asset_bytes(asset["assetId"]) == b"for a"
        assert b.assets.find(asset["assetId"]) is None
        # httpx picks the same emulator.
        r2 = httpx.put(asset["uploadUrl"], content=b"again", headers=UPLOAD_HEADERS)
        assert r2.status_code == 200, r2.text
        assert a.asset_bytes(asset["assetId"]) == b"again"
        # A storage URL for an asset neither knows reaches the innermost emulator, as before.
        unknown = asset["uploadUrl"].replace(asset["assetId"], str(uuid.uuid4()))
        assert requests.put(unknown, data=b"x", headers=UPLOAD_HEADERS).status_code == 403
        assert [c.kind for c in b.calls][-1:] == ["storage"]


def test_nested_routes_of_one_emulator_unwind_cleanly() -> None:
    """``with emu: with emu.activate():`` then leaving the inner block keeps routing; leaving
    the outer restores requests' and httpx's own methods."""
    original = requests.Session.__dict__["get_adapter"]
    emu = Emulator()
    with emu:
        with emu.activate():
            assert requests.get(f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers).ok
        assert requests.get(f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers).ok
        assert httpx.get(f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers).is_success
    assert requests.Session.get_adapter is original


def test_responses_and_moto_and_the_emulator_all_at_once() -> None:
    """moto's ``mock_aws``, a user's ``responses`` mock and the emulator, started in that
    order: each host reaches its own mock."""
    with (
        mock_aws(),
        responses.RequestsMock(assert_all_requests_are_fired=True) as rsps,
        Emulator() as emu,
    ):
        rsps.get("https://example.com/weather", json={"sunny": True})
        s3 = boto3.client(
            "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        s3.create_bucket(Bucket="user-bucket")
        s3.put_object(Bucket="user-bucket", Key="k", Body=b"moto bytes")
        asset = requests.post(
            f"{emu.base_url}/v2/nvcf/assets",
            headers=emu.headers,
            json={"contentType": "text/plain", "description": "d"},
            timeout=10,
        ).json()
        put = requests.put(asset["uploadUrl"], data=b"emu", headers=UPLOAD_HEADERS, timeout=10)
        assert put.status_code == 200
        assert requests.get("https://example.com/weather", timeout=10).json() == {"sunny": True}
        assert s3.get_object(Bucket="user-bucket", Key="k")["Body"].read() == b"moto bytes"
        assert emu.asset_bytes(asset["assetId"]) == b"emu"
        assert len(rsps.calls) == 1


# == httpx ======================================================================================


def test_httpx_multipart_files_reach_the_container_whole(api: Api) -> None:
    """``httpx.post(url, files=...)`` to a function: the whole multipart body arrives."""
    url = _echo(api)
    with httpx.Client(timeout=10) as client:
        r = client.post(url, headers=api.headers, files={"f": ("a.txt", b"hello")})
    assert r.status_code == 200
    assert b'filename="a.txt"' in r.content and b"hello" in r.content
    assert r.headers["X-Body-Length"] == str(len(r.content))


def test_httpx_async_generator_body_reaches_the_container_whole(api: Api) -> None:
    """``AsyncClient.post(url, content=agen())`` to a function: every chunk arrives."""
    url = _echo(api)

    async def agen() -> AsyncIterator[bytes]:
        for chunk in (b"ab", b"cd", b"ef"):
            yield chunk

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(url, headers=api.headers, content=agen())

    assert asyncio.run(main()).content == b"abcdef"


def test_httpx_utf8_bytes_header_is_read_as_latin1(api: Api) -> None:
    """A UTF-8 ``bytes`` description header: a server sees ``cafÃ©``, not ``café``."""
    asset = _new_asset(api, description="café")
    r = httpx.put(
        asset["uploadUrl"],
        content=b"x",
        headers=[(b"Content-Type", b"text/plain"), (DESC.encode(), "café".encode())],
        timeout=10,
    )
    assert r.status_code == 400
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text


def test_httpx_base_url_event_hooks_and_cookies(api: Api) -> None:
    """``Client(base_url=...)`` with relative paths, request/response event hooks, and a
    container's ``Set-Cookie`` in ``client.cookies``, in both modes."""
    url = _echo(api)
    seen: list[str] = []

    def on_request(r: httpx.Request) -> None:
        seen.append(f"> {r.method} {r.url.path}")

    def on_response(r: httpx.Response) -> None:
        seen.append(f"< {r.status_code}")

    with httpx.Client(
        base_url=f"{api.base_url}/v2/nvcf",
        headers=api.headers,
        event_hooks={"request": [on_request], "response": [on_response]},
        timeout=10,
    ) as client:
        assert client.post("assets", json={"contentType": "a/b", "description": "d"}).is_success
        assert client.get("/assets").is_success
        echoed = client.post(url, content=b"x")
        assert echoed.content == b"x"
        assert client.cookies.get("session") == "abc123"
    assert seen == [
        "> POST /v2/nvcf/assets",
        "< 200",
        "> GET /v2/nvcf/assets",
        "< 200",
        f"> POST {httpx.URL(url).path}",
        "< 200",
    ]


def test_httpx_stream_closed_early_closes_the_containers_stream(
    nvcf: Emulator, sse: EventStream
) -> None:
    """Leaving ``client.stream(...)`` after the first event closes the container's generator,
    sync and async."""
    kwargs = sse.register(nvcf, nvcf.base_url)
    with httpx.Client(timeout=10) as client, client.stream("POST", **kwargs) as r:
        assert next(r.iter_lines()) == "data: first"
    assert sse.ended.wait(5)
    sse.ended.clear()

    async def main() -> str:
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream("POST", **kwargs) as r,
        ):
            return await r.aiter_lines().__anext__()

    assert asyncio.run(main()) == "data: first"
    assert sse.ended.wait(5)


def test_httpx_user_transport_keeps_other_hosts_and_async_stream_reads(nvcf: Emulator) -> None:
    """A client with a user's ``mounts`` still reaches the emulator for its hosts and the
    user's transport for others; ``AsyncClient.stream`` reads the listing piecewise."""
    mine = httpx.MockTransport(lambda r: httpx.Response(299, text="mine"))
    with httpx.Client(mounts={"https://example.com": mine}, timeout=10) as client:
        assert client.get("https://example.com/").status_code == 299
        assert client.get(f"{nvcf.base_url}/v2/nvcf/assets", headers=nvcf.headers).is_success

    async def main() -> bytes:
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream("GET", f"{nvcf.base_url}/v2/nvcf/assets", headers=nvcf.headers) as r,
        ):
            return b"".join([piece async for piece in r.aiter_bytes(3)])

    assert asyncio.run(main()) == b'{"assets":[]}'


def test_a_body_failing_after_set_cookie_raises_its_own_error() -> None:
    """A response that sets a cookie and then fails mid-body: the caller sees the body's error,
    not an AttributeError from the cookie holder urllib3 closes on a failed read."""
    from nvcf_emulator.inprocess import WSGIAdapter

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Set-Cookie", "a=1"), ("Content-Type", "text/plain")])
        yield b"x"
        raise RuntimeError("container broke mid-body")

    with requests.Session() as session:
        session.mount("http://cookies.invalid/", WSGIAdapter(app))
        r = session.get("http://cookies.invalid/x", stream=True)
        assert r.cookies.get("a") == "1"
        with pytest.raises(RuntimeError, match="container broke mid-body"):
            list(r.iter_content(1))
