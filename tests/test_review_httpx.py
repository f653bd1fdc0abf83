"""Review of the in-process httpx routing, as a user whose client code is httpx (sync and async).

Where httpx over a socket is the yardstick, a test runs in both modes (the ``api`` fixture:
in-process and a real server); the rest are in-process only.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import h11
import httpx
import pytest
import requests

from nvcf_emulator import Emulator

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
    0.3 s generator upload with ``timeout=0.15`` succeeds over a socket (a multi-GB upload with
    httpx's default 5 s timeout, say)."""
    asset = _new_asset(api)
    if client == "sync":
        with httpx.Client(timeout=0.15) as c:
            r = c.put(asset["uploadUrl"], content=_slow_chunks(), headers=UPLOAD_HEADERS)
    else:

        async def main() -> httpx.Response:
            async with httpx.AsyncClient(timeout=0.15) as c:
                return await c.put(
                    asset["uploadUrl"], content=_aslow_chunks(), headers=UPLOAD_HEADERS
                )

        r = asyncio.run(main())
    assert r.status_code == 200, r.text
    assert _stored(api, asset) == b"012345"


@pytest.mark.parametrize("client", ["sync", "async"])
def test_a_stream_that_stalls_past_the_read_timeout_raises_read_timeout(
    api: Api, client: str
) -> None:
    """``client.stream(...)`` with ``timeout=0.2`` on an event stream whose second event comes
    much later: ``httpx.ReadTimeout`` after the first event, soon, as over a socket."""
    sse = EventStream(wait=3)
    kwargs = sse.register(api.emulator, api.base_url)
    started = time.monotonic()
    try:
        if client == "sync":
            with httpx.Client(timeout=0.2) as c, c.stream("POST", **kwargs) as r:
                lines = r.iter_lines()
                assert next(lines) == "data: first"
                with pytest.raises(httpx.ReadTimeout):
                    list(lines)
        else:

            async def main() -> None:
                async with (
                    httpx.AsyncClient(timeout=0.2) as c,
                    c.stream("POST", **kwargs) as r,
                ):
                    lines = r.aiter_lines()
                    assert await lines.__anext__() == "data: first"
                    with pytest.raises(httpx.ReadTimeout):
                        async for _ in lines:
                            pass

            asyncio.run(main())
        assert time.monotonic() - started < 2
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
    r = requests.put(asset["uploadUrl"], data=_slow_chunks(), headers=UPLOAD_HEADERS, timeout=0.15)
    assert r.status_code == 200, r.text
    assert _stored(api, asset) == b"012345"
