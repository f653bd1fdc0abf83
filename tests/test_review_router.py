"""Review of today's router changes: users' ``HTTPAdapter`` subclasses, streams cut on close,
and two emulators sharing the default storage host.

Where the behaviour must match a socket server, a test runs in both modes (the ``api``
fixture); the rest are in-process only, with a server reference test where the answer a
stopped server gives is the yardstick.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import certifi
import httpx
import pytest
import requests
import responses
from moto import mock_aws
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

from nvcf_emulator import Emulator

from .conftest import Api, EventStream

DESC = "x-amz-meta-nvcf-asset-description"
UPLOAD_HEADERS = {"Content-Type": "text/plain", DESC: "d"}


def _prefix(base_url: str) -> str:
    return base_url.split("://")[0] + "://"


def _create(base_url: str, headers: dict[str, str]) -> dict[str, Any]:
    r = requests.post(
        f"{base_url}/v2/nvcf/assets",
        headers=headers,
        json={"contentType": "text/plain", "description": "d"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- a streaming container the test holds back ----------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[Emulator, Any]]:
    """A fresh emulator on its own socket server (for tests that stop the server)."""
    emu = Emulator()
    server = emu.serve()
    try:
        yield emu, server
    finally:
        server.stop(grace=1)
        emu.close()


# == 1. a user's HTTPAdapter subclass ==========================================================


class _DefaultsAdapter(HTTPAdapter):
    """The common "defaults" adapter: ``send`` fills in a timeout, injects the API key and logs,
    then calls ``super().send`` with the modified keyword arguments."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        self.key = key
        self.seen: list[tuple[str, object]] = []
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["timeout"] = kwargs.get("timeout") or 7
        request.headers["Authorization"] = self.key
        request.headers["X-Request-Tag"] = "tagged"
        logging.getLogger("review.adapter").info("sending %s %s", request.method, request.url)
        self.seen.append((request.method or "", kwargs["timeout"]))
        return super().send(request, **kwargs)


def test_a_send_override_with_modified_kwargs_and_injected_key(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = _DefaultsAdapter(api.headers["Authorization"])
    caplog.set_level(logging.INFO, logger="review.adapter")
    with requests.Session() as s:
        s.mount(_prefix(api.base_url), adapter)
        created = s.post(
            f"{api.base_url}/v2/nvcf/assets", json={"contentType": "text/plain", "description": "d"}
        )
        assert created.status_code == 200, created.text
        assert created.request.headers["X-Request-Tag"] == "tagged"
        listed = s.get(f"{api.base_url}/v2/nvcf/assets", timeout=3)
        assert listed.status_code == 200
        assert listed.json() == {"assets": []}  # created but not uploaded: not listed
        unauth = requests.get(f"{api.base_url}/v2/nvcf/assets", timeout=10)
        assert unauth.status_code == 401  # the key came from the adapter only
    assert adapter.seen == [("POST", 7), ("GET", 3)]
    assert [r.getMessage().split()[1] for r in caplog.records] == ["POST", "GET"]


def test_a_send_override_that_forces_stream_true(api: Api) -> None:
    """A ``send`` that always streams: the body is read lazily by requests, as over a socket."""

    class Streaming(HTTPAdapter):
        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            kwargs["stream"] = True
            return super().send(request, **kwargs)

    with requests.Session() as s:
        s.mount(_prefix(api.base_url), Streaming())
        r = s.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers, timeout=10)
        assert r.status_code == 200
        assert r.json() == {"assets": []}


def test_an_add_headers_and_request_url_override(api: Api) -> None:
    """``request_url`` strips a gateway prefix, ``add_headers`` adds the key."""
    key = api.headers["Authorization"]

    class Gateway(HTTPAdapter):
        def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
            url = super().request_url(request, proxies)
            return url.replace("/gateway", "", 1)

        def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
            request.headers["Authorization"] = key

    with requests.Session() as s:
        s.mount(_prefix(api.base_url), Gateway())
        created = s.post(
            f"{api.base_url}/gateway/v2/nvcf/assets",
            json={"contentType": "text/plain", "description": "d"},
            timeout=10,
        )
        assert created.status_code == 200, created.text
        asset = created.json()
        r = s.put(asset["uploadUrl"], data=b"via gateway", headers=UPLOAD_HEADERS, timeout=10)
        assert r.status_code == 200, r.text
    assert api.bytes_at(api.key_of(asset["assetId"])) == b"via gateway"


def test_a_build_response_override(api: Api) -> None:
    class Marking(HTTPAdapter):
        def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
            response = super().build_response(req, resp)
            response.headers["X-Built-By"] = type(self).__mro__[0].__name__
            response.reason = "Built"
            return response

    adapter = Marking()
    with requests.Session() as s:
        s.mount(_prefix(api.base_url), adapter)
        r = s.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers, timeout=10)
    assert r.status_code == 200 and r.reason == "Built"
    assert r.headers["X-Built-By"].startswith("Marking")
    assert isinstance(r.connection, Marking)


def test_a_cert_verify_override_sees_verify_and_cert(api: Api, tmp_path: Path) -> None:
    calls: list[tuple[object, object]] = []

    class Recording(HTTPAdapter):
        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            calls.append((verify, cert))
            super().cert_verify(conn, url, verify, cert)

    cert_file = tmp_path / "client.pem"
    key_file = tmp_path / "client.key"
    cert_file.write_text("not really a cert")
    key_file.write_text("not really a key")
    with requests.Session() as s:
        s.mount(_prefix(api.base_url), Recording())
        url = f"{api.base_url}/v2/nvcf/assets"
        assert s.get(url, headers=api.headers, verify=False, timeout=10).status_code == 200
        assert s.get(url, headers=api.headers, verify=certifi.where(), timeout=10).ok
        assert s.get(url, headers=api.headers, cert=(str(cert_file), str(key_file)), timeout=10).ok
    assert calls[:2] == [(False, None), (certifi.where(), None)]
    assert calls[2][1] == (str(cert_file), str(key_file))


def test_an_ssl_context_adapter(api: Api) -> None:
    """The usual "custom SSL context" adapter (``init_poolmanager`` override)."""
    inits: list[Any] = []

    class SSLContextAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            context = ssl.create_default_context()
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            kwargs["ssl_context"] = context
            inits.append(context)
            super().init_poolmanager(*args, **kwargs)

    with requests.Session() as s:
        s.mount(_prefix(api.base_url), SSLContextAdapter())
        asset = s.post(
            f"{api.base_url}/v2/nvcf/assets",
            headers=api.headers,
            json={"contentType": "text/plain", "description": "d"},
            timeout=10,
        ).json()
        r = s.put(asset["uploadUrl"], data=b"tls", headers=UPLOAD_HEADERS, timeout=10)
        assert r.status_code == 200, r.text
    assert len(inits) == 1  # once, at construction
    assert api.bytes_at(api.key_of(asset["assetId"])) == b"tls"


def test_proxies_from_env_and_session_do_not_divert_the_emulators_hosts(
    nvcf: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, a proxy (env or ``session.proxies``) is not where the emulator's hosts go,
    with a plain adapter or a subclass (its ``proxy_manager_for`` is never asked)."""
    asked: list[str] = []

    class Proxied(HTTPAdapter):
        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            asked.append(proxy)
            return super().proxy_manager_for(proxy, **kwargs)

    dead = "http://127.0.0.1:9"
    monkeypatch.setenv("HTTPS_PROXY", dead)
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    url = f"{nvcf.base_url}/v2/nvcf/assets"
    assert requests.get(url, headers=nvcf.headers, timeout=10).status_code == 200
    with requests.Session() as s:
        s.mount("https://", Proxied())
        assert s.get(url, headers=nvcf.headers, timeout=10).status_code == 200
        s.proxies = {"https": dead, "http": dead}
        s.trust_env = False
        assert s.get(url, headers=nvcf.headers, timeout=10).status_code == 200
    monkeypatch.setenv("NO_PROXY", "api.nvcf.nvidia.com")
    with requests.Session() as s:
        s.mount("https://", Proxied())
        assert s.get(url, headers=nvcf.headers, timeout=10).status_code == 200
    assert asked == []


@pytest.mark.parametrize("subclass", [False, True], ids=["plain", "subclass"])
def test_retry_total_zero_with_a_status_forcelist_raises_retry_error(
    api: Api, subclass: bool
) -> None:
    """``Retry(total=0, status_forcelist=[503])``: urllib3 counts the 503 as a retry it may not
    make, and raises (``RetryError``), rather than handing the 503 back."""
    api.emulator.faults.add("list", status=503, times=None)
    adapter_class = type("Sub", (HTTPAdapter,), {}) if subclass else HTTPAdapter
    policy = Retry(total=0, status_forcelist=[503])
    with requests.Session() as s:
        s.mount(_prefix(api.base_url), adapter_class(max_retries=policy))
        with pytest.raises(requests.exceptions.RetryError):
            s.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers, timeout=10)


def test_retry_with_backoff_and_retry_after_respected(api: Api) -> None:
    """A subclass with ``Retry(backoff_factor, status_forcelist, respect_retry_after_header)``:
    two 503s then 200, with the backoff actually slept."""
    api.emulator.faults.add("list", status=503, times=2)
    slept: list[float] = []

    class CountingRetry(Retry):
        def sleep(self, response: Any = None) -> None:
            slept.append(self.get_backoff_time())
            super().sleep(response)

    policy = CountingRetry(
        total=3,
        backoff_factor=0.01,
        status_forcelist=[503],
        respect_retry_after_header=True,
        raise_on_redirect=False,
    )

    class Sub(HTTPAdapter):
        pass

    with requests.Session() as s:
        s.mount(_prefix(api.base_url), Sub(max_retries=policy))
        r = s.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers, timeout=10)
    assert r.status_code == 200
    assert len(slept) == 2


def test_raise_on_status_false_through_a_subclass_gives_the_last_503(api: Api) -> None:
    api.emulator.faults.add("list", status=503, times=None)

    class Sub(HTTPAdapter):
        pass

    policy = Retry(total=1, status_forcelist=[503], raise_on_status=False, backoff_factor=0)
    with requests.Session() as s:
        s.mount(_prefix(api.base_url), Sub(max_retries=policy))
        r = s.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers, timeout=10)
    assert r.status_code == 503
    assert r.headers["Content-Type"] == "application/problem+json"


def test_a_pool_block_subclass_shared_by_threads(api: Api) -> None:
    """``pool_block=True`` with one connection: 8 threads, 40 calls, none stuck."""

    class Blocking(HTTPAdapter):
        def __init__(self) -> None:
            super().__init__(pool_connections=1, pool_maxsize=1, pool_block=True)

    with requests.Session() as s:
        s.mount(_prefix(api.base_url), Blocking())
        s.headers.update(api.headers)

        def one(_: int) -> int:
            return s.get(f"{api.base_url}/v2/nvcf/assets", timeout=10).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(40))) == [200] * 40


def test_a_subclass_mounted_after_responses_started_inside_the_emulator() -> None:
    """The emulator first, then ``responses``, then the subclass mounted on ``https://``:
    the emulator's host reaches the emulator, another host reaches ``responses``."""

    class Marked(HTTPAdapter):
        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            request.headers["X-Marked"] = "1"
            return super().send(request, **kwargs)

    with (
        Emulator() as emu,
        responses.RequestsMock(assert_all_requests_are_fired=True) as rsps,
        requests.Session() as s,
    ):
        rsps.get("https://example.com/w", json={"ok": 1})
        s.mount("https://", Marked())
        r = s.get(f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers, timeout=10)
        assert r.status_code == 200, r.text
        assert r.request.headers["X-Marked"] == "1"
        other = s.get("https://example.com/w", timeout=10)
        assert other.json() == {"ok": 1}
        assert other.request.headers["X-Marked"] == "1"
        with pytest.raises(requests.exceptions.ConnectionError):
            s.get("https://unregistered.example.com/", timeout=10)  # responses refuses it


@pytest.mark.xfail(
    reason="known gap: the proxy's MRO shim (_GenuineSend) catches super().send(); an adapter "
    "that names HTTPAdapter.send(self, ...) gets whatever responses patched in",
    strict=True,
)
def test_a_subclass_calling_httpadapter_send_explicitly_beside_responses() -> None:
    """Older adapters call the base class by name (``HTTPAdapter.send(self, ...)``) rather
    than ``super()``. It reaches the emulator without ``responses``; with ``responses``
    active (patching ``HTTPAdapter.send``) the emulator's host should still not reach the
    mock ("the emulator's hosts never reach their mocks")."""

    class Explicit(HTTPAdapter):
        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            return HTTPAdapter.send(self, request, **kwargs)

    with Emulator() as emu, requests.Session() as s:
        s.mount("https://", Explicit())
        url = f"{emu.base_url}/v2/nvcf/assets"
        assert s.get(url, headers=emu.headers, timeout=10).status_code == 200
        with responses.RequestsMock(assert_all_requests_are_fired=False):
            assert s.get(url, headers=emu.headers, timeout=10).status_code == 200


def test_a_subclass_inside_mock_aws() -> None:
    class Sub(HTTPAdapter):
        pass

    with mock_aws(), Emulator() as emu, requests.Session() as s:
        s.mount("https://", Sub())
        s3 = boto3.client(
            "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        s3.create_bucket(Bucket="user-bucket")
        s3.put_object(Bucket="user-bucket", Key="k", Body=b"moto")
        asset = s.post(
            f"{emu.base_url}/v2/nvcf/assets",
            headers=emu.headers,
            json={"contentType": "text/plain", "description": "d"},
            timeout=10,
        ).json()
        r = s.put(asset["uploadUrl"], data=b"emu", headers=UPLOAD_HEADERS, timeout=10)
        assert r.status_code == 200, r.text
        assert emu.asset_bytes(asset["assetId"]) == b"emu"
        assert s3.get_object(Bucket="user-bucket", Key="k")["Body"].read() == b"moto"
        # Plain requests to S3 through the subclass reach moto, as without it.
        via_sub = s.get("https://user-bucket.s3.amazonaws.com/k", timeout=10)
        direct = requests.get("https://user-bucket.s3.amazonaws.com/k", timeout=10)
        assert (via_sub.status_code, via_sub.content) == (direct.status_code, direct.content)
        assert via_sub.status_code == 403  # moto's answer to an unsigned GET
        assert "x-amzn-requestid" in via_sub.headers


def test_a_streamed_answer_through_a_subclass_is_cut_on_close(sse: EventStream) -> None:
    class Sub(HTTPAdapter):
        pass

    emu = Emulator()
    with emu, requests.Session() as s:
        s.mount("https://", Sub())
        kwargs = sse.register(emu, emu.base_url)
        r = s.post(**kwargs, stream=True, timeout=10)
        lines = r.iter_lines()
        assert next(lines) == b"data: first"
    sse.go.set()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(lines)


# == 2. streams cut on close ===================================================================


def test_a_fully_read_response_stays_readable_after_close() -> None:
    with Emulator() as emu:
        url = f"{emu.base_url}/v2/nvcf/assets"
        plain = requests.get(url, headers=emu.headers, timeout=10)
        streamed = requests.get(url, headers=emu.headers, stream=True, timeout=10)
        streamed_body = streamed.content
        with httpx.Client() as client:
            hx = client.get(url, headers=emu.headers)
            with client.stream("GET", url, headers=emu.headers) as hs:
                hs.read()
    assert plain.json() == {"assets": []} and plain.text == '{"assets":[]}'
    assert plain.raw.read() == b""
    assert list(plain.iter_content(3)) == [b'{"a', b"sse", b'ts"', b":[]", b"}"]
    assert streamed.json() == {"assets": []} and streamed_body == streamed.content
    assert streamed.raw.read() == b""
    assert hx.json() == {"assets": []}
    assert hs.json() == {"assets": []}


def test_a_complete_unread_response_survives_a_server_stop(
    served: tuple[Emulator, Any],
) -> None:
    """The reference: a small answer already sent when the server stops is read whole."""
    emu, server = served
    r = requests.get(f"{server.url}/v2/nvcf/assets", headers=emu.headers, stream=True, timeout=10)
    url = f"{server.url}/v2/nvcf/assets"
    with httpx.Client() as client, client.stream("GET", url, headers=emu.headers) as hr:
        server.stop(grace=0.2)
        assert hr.read() == b'{"assets":[]}'
    assert r.json() == {"assets": []}


def test_a_complete_unread_requests_response_survives_close() -> None:
    """In-process: the same as the server reference above. A response whose whole body the
    app already produced (a plain JSON answer, ``stream=True`` but not yet read) is not a
    response "still being read" by a server: closing must not cut it."""
    with Emulator() as emu:
        r = requests.get(
            f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers, stream=True, timeout=10
        )
    assert r.json() == {"assets": []}


def test_a_complete_unread_httpx_response_survives_close() -> None:
    with Emulator() as emu, httpx.Client() as client:
        url = f"{emu.base_url}/v2/nvcf/assets"
        with client.stream("GET", url, headers=emu.headers) as r:
            emu.close()
            assert r.read() == b'{"assets":[]}'


def test_iter_content_with_small_chunks_then_cut(sse: EventStream) -> None:
    emu = Emulator()
    with emu:
        r = requests.post(**sse.register(emu, emu.base_url), stream=True, timeout=10)
        chunks = r.iter_content(4)
        got = b"".join(next(chunks) for _ in range(3))
        assert got == b"data: first\n"
    sse.go.set()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(chunks)
    assert sse.ended.wait(5)  # the container's stream was closed


def test_raw_read_after_close_raises_as_after_a_server_stop(
    sse: EventStream, served: tuple[Emulator, Any]
) -> None:
    """``response.raw.read()`` on a held stream: urllib3's ``ProtocolError`` in both cases."""
    emu, server = served
    r = requests.post(**sse.register(emu, server.url), stream=True, timeout=10)
    assert r.raw.read(13) == b"data: first\n\n"
    server.stop(grace=0.2)
    sse.go.set()
    with pytest.raises(ProtocolError):
        r.raw.read()

    inner = EventStream()
    try:
        with Emulator() as emu2:
            r2 = requests.post(**inner.register(emu2, emu2.base_url), stream=True, timeout=10)
            assert r2.raw.read(13) == b"data: first\n\n"
        inner.go.set()
        with pytest.raises(ProtocolError):
            r2.raw.read()
    finally:
        inner.go.set()


def test_a_reactivated_emulator_streams_again(sse: EventStream) -> None:
    emu = Emulator()
    try:
        with emu.activate():
            kwargs = sse.register(emu, emu.base_url)
            r = requests.post(**kwargs, stream=True, timeout=10)
            lines = r.iter_lines()
            assert next(lines) == b"data: first"
        sse.go.set()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            list(lines)
        with emu.activate():
            r2 = requests.post(**kwargs, stream=True, timeout=10)
            assert [x for x in r2.iter_lines() if x] == [b"data: first", b"data: second"]
            with httpx.Client(timeout=10) as client, client.stream("POST", **kwargs) as hr:
                assert [x for x in hr.iter_lines() if x] == [
                    "data: first",
                    "data: second",
                ]
    finally:
        emu.close()


def test_closing_one_emulator_keeps_the_others_streams() -> None:
    ea, eb = EventStream(), EventStream()
    try:
        with Emulator(api_base_url="https://b.nvcf.test") as b:
            kb = eb.register(b, b.base_url)
            rb = requests.post(**kb, stream=True, timeout=10)
            lines_b = rb.iter_lines()
            assert next(lines_b) == b"data: first"
            with httpx.Client(timeout=10) as client, client.stream("POST", **kb) as hb:
                hlines = hb.iter_lines()
                assert next(hlines) == "data: first"
                with Emulator(api_base_url="https://a.nvcf.test") as a:
                    ra = requests.post(**ea.register(a, a.base_url), stream=True, timeout=10)
                    lines_a = ra.iter_lines()
                    assert next(lines_a) == b"data: first"
                ea.go.set()
                eb.go.set()
                with pytest.raises(requests.exceptions.ChunkedEncodingError):
                    list(lines_a)
                assert [x for x in lines_b if x] == [b"data: second"]
                assert [x for x in hlines if x] == ["data: second"]
    finally:
        ea.go.set()
        eb.go.set()


def test_a_blocked_reader_is_cut_promptly_by_a_server_stop(
    served: tuple[Emulator, Any],
) -> None:
    """The reference: a thread blocked reading a held stream gets an error once the server
    stops (after its grace), not when the container next writes."""
    emu, server = served
    slow = EventStream(wait=4)
    try:
        r = requests.post(**slow.register(emu, server.url), stream=True, timeout=10)
        outcome = _read_in_thread(r)
        time.sleep(0.1)
        server.stop(grace=0.2)
        assert outcome["done"].wait(2), "reader still blocked 2 s after the server stopped"
        assert isinstance(outcome["error"], requests.exceptions.ChunkedEncodingError)
    finally:
        slow.go.set()


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_blocked_reader_is_cut_promptly_by_close(client: str) -> None:
    """In-process: another thread closes the emulator while a reader waits for the next event;
    the reader gets ``ChunkedEncodingError`` (httpx: ``RemoteProtocolError``) promptly, as
    from a stopped server, not only once the container writes again (here 3 s later)."""
    slow = EventStream(wait=3)
    emu = Emulator()
    outcome: dict[str, Any] = {"done": threading.Event()}
    try:
        with emu:
            kwargs = slow.register(emu, emu.base_url)
            if client == "requests":
                outcome = _read_in_thread(requests.post(**kwargs, stream=True, timeout=10))
            else:
                hc = httpx.Client(timeout=10)
                hr = hc.send(hc.build_request("POST", **kwargs), stream=True)
                outcome = _read_in_thread(hr)
            assert slow.waiting.wait(2)  # the reader waits for the second event
            closer = threading.Thread(target=emu.close)
            closer.start()
            closer.join(5)
        assert outcome["done"].wait(1.5), "reader still blocked 1.5 s after the emulator closed"
        expected = (
            requests.exceptions.ChunkedEncodingError
            if client == "requests"
            else httpx.RemoteProtocolError
        )
        assert isinstance(outcome["error"], expected), outcome["error"]
        assert outcome["lines"] == [b"data: first", b""]
    finally:
        slow.go.set()
        outcome["done"].wait(5)
        if client == "httpx":
            hc.close()


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nvcf-emulator-stream"]


def test_a_cut_stream_closes_the_container_generator_once_it_yields() -> None:
    """After the cut above, the container's generator is closed (its ``finally`` runs) when it
    yields next, and the thread that pulled from it ends: nothing is left waiting."""
    slow = EventStream(wait=5)
    emu = Emulator()
    with emu:
        r = requests.post(**slow.register(emu, emu.base_url), stream=True, timeout=10)
        outcome = _read_in_thread(r)
        assert slow.waiting.wait(2)  # the reader asked for the second event
        assert len(_stream_threads()) == 1
    assert outcome["done"].wait(2)
    assert not slow.ended.is_set()  # still blocked inside the container's generator
    slow.go.set()
    assert slow.ended.wait(2)
    assert _wait_until(lambda: not _stream_threads())
    assert outcome["lines"] == [b"data: first", b""]


def test_an_abandoned_stream_releases_its_thread_and_the_container() -> None:
    """A streamed response dropped half-read (never closed) is closed when it is collected,
    as a socket would be: the container's generator is closed and no thread stays behind."""
    sse = EventStream(wait=5)
    sse.go.set()
    with Emulator() as emu:
        r = requests.post(**sse.register(emu, emu.base_url), stream=True, timeout=10)
        lines = r.iter_lines()
        assert next(lines) == b"data: first"
        assert [next(lines), next(lines)] == [b"", b"data: second"]
        del r, lines
        gc.collect()
        assert sse.ended.wait(2)
        assert _wait_until(lambda: not _stream_threads())


def _wait_until(cond: Any, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _read_in_thread(r: requests.Response | httpx.Response) -> dict[str, Any]:
    outcome: dict[str, Any] = {"done": threading.Event(), "error": None, "lines": []}

    def read() -> None:
        try:
            if isinstance(r, httpx.Response):
                for line in r.iter_lines():
                    outcome["lines"].append(line.encode())
                return
            for line in r.iter_lines():
                outcome["lines"].append(line)
        except Exception as exc:
            outcome["error"] = exc
        finally:
            outcome["done"].set()

    threading.Thread(target=read, daemon=True).start()
    return outcome


def test_many_threads_reading_while_another_closes() -> None:
    """Four readers past their first event, then a close from another thread: each of them
    either finished or got ``ChunkedEncodingError``; none hangs or sees another error."""
    streams = [EventStream(wait=0.3) for _ in range(4)]
    emu = Emulator()
    try:
        with emu:
            outcomes = []
            for st in streams:
                r = requests.post(**st.register(emu, emu.base_url), stream=True, timeout=10)
                outcomes.append(_read_in_thread(r))
            closer = threading.Thread(target=emu.close)
            closer.start()
            closer.join(5)
        for outcome in outcomes:
            assert outcome["done"].wait(5)
            assert outcome["error"] is None or isinstance(
                outcome["error"], requests.exceptions.ChunkedEncodingError
            ), repr(outcome["error"])
    finally:
        for st in streams:
            st.go.set()


def test_async_httpx_complete_unread_response_survives_close() -> None:
    async def main() -> bytes:
        emu = Emulator()
        emu.__enter__()
        try:
            async with (
                httpx.AsyncClient() as client,
                client.stream("GET", f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers) as r,
            ):
                emu.close()
                return await r.aread()
        finally:
            emu.close()

    assert asyncio.run(main()) == b'{"assets":[]}'


# == 3. two emulators on the default storage host ==============================================


@pytest.mark.parametrize("owner_inner", [False, True], ids=["owner-outer", "owner-inner"])
def test_an_upload_reaches_its_owner_in_either_nesting(owner_inner: bool) -> None:
    """Both emulators on the default hosts (the API host too): the asset is created in one,
    the other is routed too; requests, httpx and AsyncClient uploads reach the owner."""
    with Emulator() as outer:
        asset = _create(outer.base_url, outer.headers) if not owner_inner else None
        with Emulator() as inner:
            if owner_inner:
                asset = _create(inner.base_url, inner.headers)
                owner, other = inner, outer
            else:
                owner, other = outer, inner
            assert asset is not None
            r = requests.put(asset["uploadUrl"], data=b"one", headers=UPLOAD_HEADERS, timeout=10)
            assert r.status_code == 200, r.text
            assert owner.asset_bytes(asset["assetId"]) == b"one"
            r2 = httpx.put(asset["uploadUrl"], content=b"two", headers=UPLOAD_HEADERS)
            assert r2.status_code == 200, r2.text
            assert owner.asset_bytes(asset["assetId"]) == b"two"

            async def upload() -> int:
                async with httpx.AsyncClient() as client:
                    resp = await client.put(
                        asset["uploadUrl"],
                        content=io.BytesIO(b"three").read(),
                        headers=UPLOAD_HEADERS,
                    )
                    return resp.status_code

            assert asyncio.run(upload()) == 200
            assert owner.asset_bytes(asset["assetId"]) == b"three"
            assert other.assets.find(asset["assetId"]) is None
            assert not [c for c in other.calls if c.kind == "storage"]
            # Listing the owner's assets shows the upload (when its API host is reachable).
            if owner is inner:
                listed = requests.get(
                    f"{inner.base_url}/v2/nvcf/assets", headers=inner.headers, timeout=10
                ).json()
                assert [a["assetId"] for a in listed["assets"]] == [asset["assetId"]]


def test_an_upload_after_the_inner_emulator_closed_still_reaches_the_owner() -> None:
    with Emulator() as outer:
        asset = _create(outer.base_url, outer.headers)
        with Emulator():
            pass
        r = requests.put(asset["uploadUrl"], data=b"x", headers=UPLOAD_HEADERS, timeout=10)
        assert r.status_code == 200, r.text
        assert outer.asset_bytes(asset["assetId"]) == b"x"


def test_a_deleted_assets_url_gets_the_owners_answer() -> None:
    """Uploaded, then deleted in the owner: its URL gets the answer it gets with the owner
    routed alone."""

    def attempt(with_other: bool) -> tuple[int, str]:
        with Emulator() as owner:
            asset = _create(owner.base_url, owner.headers)
            assert requests.put(asset["uploadUrl"], data=b"x", headers=UPLOAD_HEADERS).ok
            gone = requests.delete(
                f"{owner.base_url}/v2/nvcf/assets/{asset['assetId']}",
                headers=owner.headers,
                timeout=10,
            )
            assert gone.status_code == 204
            if with_other:
                with Emulator():
                    r = requests.put(asset["uploadUrl"], data=b"y", headers=UPLOAD_HEADERS)
            else:
                r = requests.put(asset["uploadUrl"], data=b"y", headers=UPLOAD_HEADERS)
            return r.status_code, _s3_code(r.text)

    assert attempt(with_other=True) == attempt(with_other=False)


def test_an_expired_and_swept_assets_url_gets_the_owners_answer() -> None:
    """The owner's clock passed the asset's TTL and swept it: with the owner routed alone its
    URL gets ``AccessDenied`` / "Request has expired"; with another emulator routed as well
    the user should see the same, not the other emulator's ``SignatureDoesNotMatch``."""

    def attempt(with_other: bool) -> tuple[int, str]:
        with Emulator(upload_url_ttl=60, asset_ttl=120) as owner:
            asset = _create(owner.base_url, owner.headers)
            assert requests.put(asset["uploadUrl"], data=b"x", headers=UPLOAD_HEADERS).ok
            owner.clock.advance(3600)
            owner.sweep()
            if with_other:
                with Emulator():
                    r = requests.put(asset["uploadUrl"], data=b"y", headers=UPLOAD_HEADERS)
            else:
                r = requests.put(asset["uploadUrl"], data=b"y", headers=UPLOAD_HEADERS)
            return r.status_code, _s3_code(r.text)

    alone = attempt(with_other=False)
    assert alone == (403, "AccessDenied")
    assert attempt(with_other=True) == alone


def _s3_code(xml: str) -> str:
    start = xml.find("<Code>")
    return xml[start + 6 : xml.find("</Code>")] if start >= 0 else ""


def test_the_owners_upload_rules_apply_not_the_innermosts() -> None:
    """The outer emulator allows 4 bytes, the inner 1 KB: an upload of 10 bytes to the outer's
    asset gets the outer's limit."""
    with Emulator(max_asset_bytes=4) as outer:
        asset = _create(outer.base_url, outer.headers)
        with Emulator(max_asset_bytes=1024):
            r = requests.put(asset["uploadUrl"], data=b"x" * 10, headers=UPLOAD_HEADERS)
            assert r.status_code != 200
            hr = httpx.put(asset["uploadUrl"], content=b"x" * 10, headers=UPLOAD_HEADERS)
            assert hr.status_code == r.status_code
        stored = outer.assets.find(asset["assetId"])
        assert stored is not None and stored.uploaded_at is None


# == read timeouts on a streamed answer ==========================================================


@pytest.mark.parametrize("api", ["inprocess", "server"], indirect=True)
def test_a_requests_stream_that_stalls_past_the_read_timeout_raises(api: Api) -> None:
    """``stream=True`` with ``timeout=1`` on an event stream whose second event comes much
    later: after the first event, ``iter_lines`` raises ``requests.ConnectionError`` (urllib3's
    ``ReadTimeoutError`` inside, what ``iter_content`` turns it into) and ``raw.read`` raises
    ``ReadTimeoutError`` itself, soon, as over a socket; the container's stream is closed.
    (One second, not less: the answer's head and first event must come within it on a loaded
    CI machine.)"""
    from urllib3.exceptions import ReadTimeoutError

    sse = EventStream(wait=8)
    kwargs = sse.register(api.emulator, api.base_url)
    started = time.monotonic()
    try:
        with requests.Session() as s:
            with s.post(**kwargs, stream=True, timeout=1.0) as r:
                lines = r.iter_lines()
                assert next(lines) == b"data: first"
                with pytest.raises(requests.ConnectionError) as caught:
                    list(lines)
                assert isinstance(caught.value.args[0], ReadTimeoutError)
            with s.post(**kwargs, stream=True, timeout=1.0) as r:
                assert r.raw.read(len(b"data: first\n\n")) == b"data: first\n\n"
                with pytest.raises(ReadTimeoutError):
                    r.raw.read(100)
        assert time.monotonic() - started < 6  # well before the second event (8 s)
        sse.go.set()
        assert sse.ended.wait(5)
    finally:
        sse.go.set()
