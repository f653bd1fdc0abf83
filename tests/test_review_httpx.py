"""Review of the in-process httpx routing, as a user whose client code is httpx (sync and async).

Where httpx over a socket is the yardstick, a test runs in both modes (the ``api`` fixture:
in-process and a real server); the rest are in-process only.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from unittest import mock

import anyio.to_thread
import h11
import httpx
import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.inprocess_httpx import AsyncEmulatorTransport

from .conftest import Api, EventStream

DESC = "x-amz-meta-nvcf-asset-description"
UPLOAD_HEADERS = {"Content-Type": "text/plain", DESC: "d"}


def _new_asset(api: Api) -> dict[str, Any]:
    return api.create_asset("text/plain", "d")


def _stored(api: Api, asset: dict[str, Any]) -> bytes | None:
    record = api.emulator.assets.find(asset["assetId"])
    return None if record is None else api.bytes_at(record.key)


def _nvcf_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("nvcf-emulator-stream")}


# == read timeouts: what httpx's ``timeout=`` means over a socket ===============================


def _slow_chunks(n: int = 6, pause: float = 0.05) -> Iterator[bytes]:
    for i in range(n):
        time.sleep(pause)
        yield b"%d" % i


async def _aslow_chunks(n: int = 6, pause: float = 0.05) -> AsyncIterator[bytes]:
    for i in range(n):
        await asyncio.sleep(pause)
        yield b"%d" % i


@pytest.mark.parametrize("client", ["sync", "async"])
def test_an_upload_longer_than_the_read_timeout_is_not_a_read_timeout(
    api: Api, client: str
) -> None:
    """The read timeout bounds the wait for the answer once the body went, not the upload: a
    0.6 s generator upload with ``timeout=0.4`` succeeds over a socket (a multi-GB upload with
    httpx's default 5 s timeout, say). (0.4 s, not less: the answer must come within it of the
    body's end on a loaded CI machine; a timeout counted from the start fires mid-upload.)"""
    asset = _new_asset(api)
    if client == "sync":
        with httpx.Client(timeout=0.4) as c:
            r = c.put(asset["uploadUrl"], content=_slow_chunks(pause=0.1), headers=UPLOAD_HEADERS)
    else:

        async def main() -> httpx.Response:
            async with httpx.AsyncClient(timeout=0.4) as c:
                return await c.put(
                    asset["uploadUrl"], content=_aslow_chunks(pause=0.1), headers=UPLOAD_HEADERS
                )

        r = asyncio.run(main())
    assert r.status_code == 200, r.text
    assert _stored(api, asset) == b"012345"


@pytest.mark.parametrize("client", ["sync", "async"])
def test_a_stream_that_stalls_past_the_read_timeout_raises_read_timeout(
    api: Api, client: str
) -> None:
    """``client.stream(...)`` with ``timeout=1`` on an event stream whose second event comes
    much later: ``httpx.ReadTimeout`` after the first event, soon, as over a socket. (One
    second, not less: the first event itself must come within it on a loaded CI machine.)"""
    sse = EventStream(wait=8)
    kwargs = sse.register(api.emulator, api.base_url)
    started = time.monotonic()
    try:
        if client == "sync":
            with httpx.Client(timeout=1.0) as c, c.stream("POST", **kwargs) as r:
                lines = r.iter_lines()
                assert next(lines) == "data: first"
                with pytest.raises(httpx.ReadTimeout):
                    list(lines)
        else:

            async def main() -> None:
                async with (
                    httpx.AsyncClient(timeout=1.0) as c,
                    c.stream("POST", **kwargs) as r,
                ):
                    lines = r.aiter_lines()
                    assert await lines.__anext__() == "data: first"
                    with pytest.raises(httpx.ReadTimeout):
                        async for _ in lines:
                            pass

            asyncio.run(main())
        assert time.monotonic() - started < 6  # well before the second event
        sse.go.set()
        assert sse.ended.wait(5)  # the container's stream is closed once it yields
    finally:
        sse.go.set()


# == cancelling an async upload ==================================================================


def test_a_cancelled_async_upload_stops_pulling_the_body_and_stores_nothing(
    nvcf: Emulator,
) -> None:
    """Over a socket a cancelled upload is a dropped connection: the caller's body is not read
    any further and nothing is stored. The app's thread must not go on pulling the body."""
    pulled: list[bytes] = []

    async def main() -> tuple[dict[str, Any], httpx.Response]:
        more = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            for chunk in (b"first", b"second"):
                if pulled:
                    await more.wait()
                pulled.append(chunk)
                yield chunk

        async with httpx.AsyncClient(timeout=10) as c:
            created = await c.post(
                f"{nvcf.base_url}/v2/nvcf/assets",
                headers=nvcf.headers,
                json={"contentType": "text/plain", "description": "d"},
            )
            asset = created.json()
            task = asyncio.create_task(
                c.put(asset["uploadUrl"], content=body(), headers=UPLOAD_HEADERS)
            )
            while not pulled:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)  # the app's thread now waits for the next chunk
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            more.set()
            await asyncio.sleep(0.1)  # what a leftover pull would need to run
            listed = await c.get(f"{nvcf.base_url}/v2/nvcf/assets", headers=nvcf.headers)
            return asset, listed

    asset, listed = asyncio.run(main())
    assert pulled == [b"first"]
    assert nvcf.asset_path(asset["assetId"]) is None
    assert listed.status_code == 200  # the emulator still answers
    assert nvcf.store.pending_uploads() == []


# == the body's declared length, as h11 enforces it ===============================================


@pytest.mark.parametrize("client", ["sync", "async"])
@pytest.mark.parametrize(
    ("declared", "chunks", "error"),
    [
        (10, [b"12345"], "Too little data"),
        (5, [b"1234567890"], "Too much data"),
        (5, [b"12345", b"67890"], "Too much data"),
    ],
    ids=["short", "long", "long-by-a-chunk"],
)
def test_a_body_that_does_not_match_its_content_length_is_refused_by_httpx(
    api: Api, client: str, declared: int, chunks: list[bytes], error: str
) -> None:
    """A streamed upload with its ``Content-Length`` set by hand (S3 wants one) that sends
    more or fewer bytes: h11 refuses it (httpcore 1.0 lets its ``LocalProtocolError`` through
    unmapped) and nothing is stored, rather than a truncated upload stored in-process. In-process
    the error is also an ``httpx.LocalProtocolError``, as httpx maps h11's other errors."""
    asset = _new_asset(api)
    headers = {**UPLOAD_HEADERS, "Content-Length": str(declared)}
    if client == "sync":
        with httpx.Client(timeout=10) as c, pytest.raises(h11.LocalProtocolError) as raised:
            c.put(asset["uploadUrl"], content=iter(chunks), headers=headers)
    else:

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        async def main() -> None:
            async with httpx.AsyncClient(timeout=10) as c:
                await c.put(asset["uploadUrl"], content=body(), headers=headers)

        with pytest.raises(h11.LocalProtocolError) as raised:
            asyncio.run(main())
    assert str(raised.value) == f"{error} for declared Content-Length"
    if api.mode == "inprocess":
        assert isinstance(raised.value, httpx.LocalProtocolError)
        assert _stored(api, asset) is None
    elif len(chunks) == 1:  # else the server may have read a whole request before the refusal
        assert _stored(api, asset) is None


def test_a_body_of_exactly_its_content_length_uploads(api: Api) -> None:
    asset = _new_asset(api)
    headers = {**UPLOAD_HEADERS, "Content-Length": "10"}
    with httpx.Client(timeout=10) as c:
        r = c.put(asset["uploadUrl"], content=iter([b"12345", b"", b"67890"]), headers=headers)
    assert r.status_code == 200, r.text
    assert _stored(api, asset) == b"1234567890"


def test_a_requests_upload_longer_than_its_read_timeout_is_not_a_read_timeout(api: Api) -> None:
    """The same rule for ``requests`` (the shared ``call_app`` check): the timeout runs from the
    end of the body."""
    asset = _new_asset(api)
    r = requests.put(
        asset["uploadUrl"], data=_slow_chunks(pause=0.1), headers=UPLOAD_HEADERS, timeout=0.4
    )
    assert r.status_code == 200, r.text
    assert _stored(api, asset) == b"012345"


# == async: giving up on a request ================================================================


class _LateApp:
    """A WSGI app that answers once ``go`` is set (at most 5 s), with a body whose ``close`` is
    recorded; ``read`` is what it read of the request body."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.entered = threading.Event()
        self.closed = threading.Event()
        self.read = b""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.entered.set()
        self.read = environ["wsgi.input"].read()
        self.go.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        closed = self.closed

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                yield b"late"

            def close(self) -> None:
                closed.set()

        return Body()


@pytest.fixture
def late() -> Iterator[_LateApp]:
    app = _LateApp()
    yield app
    app.go.set()


def test_an_answer_after_the_async_read_timeout_is_closed(late: _LateApp) -> None:
    """``ReadTimeout`` on time; the answer the app gives later is closed, not left open."""

    async def main() -> float:
        async with httpx.AsyncClient(transport=AsyncEmulatorTransport(late), timeout=0.1) as c:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await c.post("http://x/", content=b"body")
            return time.monotonic() - started

    assert asyncio.run(main()) < 3  # the timeout (0.1 s), not the app's answer (5 s)
    assert late.read == b"body"
    late.go.set()
    assert late.closed.wait(5)


def test_the_async_read_timeout_starts_when_a_slow_body_ends(late: _LateApp) -> None:
    """A 0.3 s async body with ``timeout=0.15``: no timeout while it is sent, then one 0.15 s
    after its end (the app answers only later)."""

    async def main() -> float:
        async with httpx.AsyncClient(transport=AsyncEmulatorTransport(late), timeout=0.15) as c:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await c.post("http://x/", content=_aslow_chunks())
            return time.monotonic() - started

    took = asyncio.run(main())
    assert late.read == b"012345"
    assert 0.4 <= took < 2


def test_wait_for_around_an_async_stream_releases_everything(nvcf: Emulator) -> None:
    """``asyncio.wait_for`` cutting a task that reads an event stream: it returns on time, the
    client keeps working, and once the container yields, its stream is closed and no stream
    thread is left."""
    sse = EventStream(wait=5)
    kwargs = sse.register(nvcf, nvcf.base_url)

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as c:

            async def consume() -> list[str]:
                async with c.stream("POST", **kwargs) as r:
                    return [line async for line in r.aiter_lines()]

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(consume(), 0.3)
            return await c.get(f"{nvcf.base_url}/v2/nvcf/assets", headers=nvcf.headers)

    try:
        assert asyncio.run(main()).status_code == 200
        assert sse.waiting.is_set() and not sse.ended.is_set()
    finally:
        sse.go.set()
    assert sse.ended.wait(5)
    deadline = time.monotonic() + 5
    while _nvcf_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _nvcf_threads()


def test_many_concurrent_async_requests_with_uploads(nvcf: Emulator) -> None:
    """100 tasks on one AsyncClient, each creating and uploading an asset: every byte lands."""

    async def one(c: httpx.AsyncClient, i: int) -> bool:
        created = await c.post(
            f"{nvcf.base_url}/v2/nvcf/assets",
            json={"contentType": "text/plain", "description": "d"},
        )
        asset = created.json()

        async def body() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"%d," % i

        r = await c.put(asset["uploadUrl"], content=body(), headers=UPLOAD_HEADERS)
        return r.status_code == 200 and nvcf.asset_bytes(asset["assetId"]) == b"%d," % i * 3

    async def main() -> list[bool]:
        async with httpx.AsyncClient(headers=nvcf.headers, timeout=10) as c:
            return list(await asyncio.gather(*(one(c, i) for i in range(100))))

    assert all(asyncio.run(main()))


# == clients around the emulator's life ========================================================


def test_a_client_used_after_the_emulator_closed_reaches_its_own_transport() -> None:
    """An SDK client built at import time, used after the emulator closed: the request goes to
    the client's own transport (here a no-network guard) at once, not to a closed emulator
    and not into a hang."""
    guard = AssertionError("no network in tests")
    with httpx.Client(timeout=10) as early:
        with Emulator() as emu:
            url = f"{emu.base_url}/v2/nvcf/assets"
            assert early.get(url, headers=emu.headers).status_code == 200
        with (
            mock.patch.object(httpx.HTTPTransport, "handle_request", side_effect=guard),
            pytest.raises(AssertionError, match="no network"),
        ):
            early.get(url, headers=emu.headers)


@pytest.mark.xfail(
    reason="known gap (README, In-process limits): closing an httpx.Client does not cut a "
    "response stream still open on it; over a socket reading on raises ReadError",
    strict=True,
)
def test_closing_the_client_cuts_an_open_stream(nvcf: Emulator, sse: EventStream) -> None:
    kwargs = sse.register(nvcf, nvcf.base_url)
    client = httpx.Client(timeout=10)
    with client.stream("POST", **kwargs) as r:
        lines = r.iter_lines()
        assert next(lines) == "data: first"
        client.close()
        sse.go.set()
        with pytest.raises(httpx.ReadError):
            list(lines)


# == errors, auth, hooks ========================================================================


def _raising(req: Any) -> Any:
    raise RuntimeError("container bug")


def test_a_raising_container_gives_the_same_answer_to_httpx_and_requests(api: Api) -> None:
    fid, _ = api.emulator.add_function(_raising, name="raises")
    url = f"{api.base_url}/v2/nvcf/pexec/functions/{fid}"
    via_requests = requests.post(url, headers=api.headers, json={}, timeout=10)
    with httpx.Client(timeout=10) as c:
        via_httpx = c.post(url, headers=api.headers, json={})

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as c:
            return await c.post(url, headers=api.headers, json={})

    via_async = asyncio.run(main())
    for r in (via_httpx, via_async):
        assert r.status_code == via_requests.status_code
        assert r.headers["Content-Type"] == via_requests.headers["Content-Type"]
        assert r.json().keys() == via_requests.json().keys()


def test_auth_flows_and_event_hooks_see_the_emulators_answers(api: Api) -> None:
    """A custom ``httpx.Auth`` that retries with the key after a 401 (reading the 401's body),
    and async event hooks: as over a socket."""
    key = api.headers["Authorization"]
    seen: list[str] = []

    class KeyOnDemand(httpx.Auth):
        requires_response_body = True

        def auth_flow(self, request: httpx.Request) -> Any:
            response = yield request
            if response.status_code == 401:
                seen.append(f"401 {response.json().get('title', '')}")
                request.headers["Authorization"] = key
                yield request

    async def on_response(r: httpx.Response) -> None:
        seen.append(f"< {r.status_code}")

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=api.base_url,
            auth=KeyOnDemand(),
            event_hooks={"response": [on_response]},
            timeout=10,
        ) as c:
            return await c.get("/v2/nvcf/assets")

    r = asyncio.run(main())
    assert r.status_code == 200
    assert r.json() == {"assets": []}
    assert seen == ["< 401", "401 Unauthorized", "< 200"]


def test_a_cancelled_async_multipart_upload_is_read_no_further() -> None:
    """``files=`` bodies are sync streams an AsyncClient reads in the app's thread: cancelled
    mid-body, the app sees the client gone rather than the rest of the file."""
    first_read = threading.Event()
    go_on = threading.Event()
    outcome: list[object] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"]
        got = len(body.read(65536))
        first_read.set()
        go_on.wait(5)
        try:
            while chunk := body.read(65536):
                got += len(chunk)
            outcome.append(got)
        except Exception as exc:  # werkzeug's ClientDisconnected, as on a server
            outcome.append(type(exc).__name__)
        start_response("200 OK", [])
        return [b""]

    async def main() -> None:
        async with httpx.AsyncClient(transport=AsyncEmulatorTransport(app), timeout=10) as c:
            big = io.BytesIO(b"x" * (4 * 1024 * 1024))
            task = asyncio.create_task(c.post("http://x/", files={"f": ("big.bin", big)}))
            assert await anyio.to_thread.run_sync(first_read.wait, 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    try:
        asyncio.run(main())
    finally:
        go_on.set()
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outcome == ["ClientDisconnected"]
