"""In-process routing for httpx: sync and async clients, streamed bodies, other hosts untouched."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from unittest import mock

import anyio.to_thread
import httpx
import pytest
import requests
import respx
from flask import Flask, Response

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest

API = "https://api.nvcf.nvidia.com"
DESC = "x-amz-meta-nvcf-asset-description"
AUTH = {"Authorization": "Bearer nvapi-x"}
HOOKED = "_transport_for_url"
ORIGINAL_SYNC_HOOK = vars(httpx.Client)[HOOKED]
ORIGINAL_ASYNC_HOOK = vars(httpx.AsyncClient)[HOOKED]


def _create_body() -> dict[str, str]:
    return {"contentType": "image/png", "description": "d"}


def _upload_headers(content_type: str = "image/png") -> dict[str, str]:
    return {"Content-Type": content_type, DESC: "d"}


def _create(client: httpx.Client) -> dict[str, Any]:
    r = client.post(f"{API}/v2/nvcf/assets", headers=AUTH, json=_create_body())
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _acreate(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post(f"{API}/v2/nvcf/assets", headers=AUTH, json=_create_body())
    assert r.status_code == 200, r.text
    return dict(r.json())


def _without_ids(xml: str) -> str:
    return re.sub(r"<(RequestId|HostId)>[^<]*<", r"<\1><", xml)


# -- the asset flow --------------------------------------------------------------------------


def test_sync_client_creates_and_uploads_an_asset(nvcf: Emulator) -> None:
    with httpx.Client() as client:
        asset = _create(client)
        put = client.put(asset["uploadUrl"], content=b"png bytes", headers=_upload_headers())
    assert put.status_code == 200
    assert put.content == b""
    assert nvcf.asset_bytes(asset["assetId"]) == b"png bytes"


def test_module_level_functions_and_a_client_built_before_the_emulator() -> None:
    early = httpx.Client()  # e.g. an SDK object made at import time
    try:
        with Emulator() as emu:
            asset = httpx.post(f"{API}/v2/nvcf/assets", headers=AUTH, json=_create_body()).json()
            put = early.put(asset["uploadUrl"], content=b"early", headers=_upload_headers())
            assert put.status_code == 200
            assert emu.asset_bytes(asset["assetId"]) == b"early"
    finally:
        early.close()


def test_async_client_creates_and_uploads_an_asset(nvcf: Emulator) -> None:
    async def main() -> tuple[dict[str, Any], httpx.Response]:
        async with httpx.AsyncClient() as client:
            asset = await _acreate(client)
            put = await client.put(asset["uploadUrl"], content=b"async", headers=_upload_headers())
            return asset, put

    asset, put = asyncio.run(main())
    assert put.status_code == 200
    assert nvcf.asset_bytes(asset["assetId"]) == b"async"


def test_errors_are_the_same_as_through_requests(nvcf: Emulator) -> None:
    with httpx.Client() as client:
        asset = _create(client)
        wrong = _upload_headers("image/jpeg")
        via_httpx = client.put(asset["uploadUrl"], content=b"x", headers=wrong)
    via_requests = requests.put(asset["uploadUrl"], data=b"x", headers=wrong)

    async def main() -> httpx.Response:
        async with httpx.AsyncClient() as aclient:
            return await aclient.put(asset["uploadUrl"], content=b"x", headers=wrong)

    via_async = asyncio.run(main())
    for r in (via_httpx, via_async):
        assert r.status_code == via_requests.status_code == 400
        assert r.headers["Content-Type"] == "application/xml"
        assert "<Code>SignatureDoesNotMatch</Code>" in r.text
        assert _without_ids(r.text) == _without_ids(via_requests.text)
    assert nvcf.asset_path(asset["assetId"]) is None


def test_missing_api_key_is_refused_like_requests(nvcf: Emulator) -> None:
    r = httpx.post(f"{API}/v2/nvcf/assets", json=_create_body())
    same = requests.post(f"{API}/v2/nvcf/assets", json=_create_body())
    assert r.status_code == same.status_code == 401
    assert r.headers["Content-Type"] == same.headers["Content-Type"]
    assert {**r.json(), "requestId": ""} == {**same.json(), "requestId": ""}


def test_headers_spelled_with_underscores_follow_the_one_rule() -> None:
    seen: list[str | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ.get("HTTP_NVCF_POLL_SECONDS"))
        start_response("204 No Content", [])
        return []

    from nvcf_emulator.inprocess_httpx import EmulatorTransport

    with httpx.Client(transport=EmulatorTransport(app)) as client:
        client.get("http://x/", headers={"NVCF-POLL_SECONDS": "5"})
        client.get("http://x/", headers={"NVCF-POLL_SECONDS": "5", "NVCF-POLL-SECONDS": "7"})
    assert seen == ["5", "7"]


# -- streaming -------------------------------------------------------------------------------


@pytest.mark.nvcf(max_asset_bytes=4 * 1024 * 1024)
def test_sync_generator_upload_is_streamed_not_buffered(nvcf: Emulator) -> None:
    produced = 0

    def endless() -> Iterator[bytes]:
        nonlocal produced
        while True:
            produced += 65536
            assert produced <= 8 * 1024 * 1024, "the emulator kept reading past its limit"
            yield b"q" * 65536

    with httpx.Client() as client:
        asset = _create(client)
        r = client.put(asset["uploadUrl"], content=endless(), headers=_upload_headers())
    assert r.status_code == 400
    assert "<Code>EntityTooLarge</Code>" in r.text
    assert produced <= 6 * 1024 * 1024
    assert nvcf.asset_path(asset["assetId"]) is None


@pytest.mark.nvcf(max_asset_bytes=4 * 1024 * 1024)
def test_async_generator_upload_is_streamed_not_buffered(nvcf: Emulator) -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 65536
            assert produced <= 8 * 1024 * 1024, "the emulator kept reading past its limit"
            yield b"q" * 65536

    async def main() -> tuple[dict[str, Any], httpx.Response]:
        async with httpx.AsyncClient() as client:
            asset = await _acreate(client)
            r = await client.put(asset["uploadUrl"], content=endless(), headers=_upload_headers())
            return asset, r

    asset, r = asyncio.run(main())
    assert r.status_code == 400
    assert "<Code>EntityTooLarge</Code>" in r.text
    assert produced <= 6 * 1024 * 1024
    assert nvcf.asset_path(asset["assetId"]) is None


def test_generator_and_file_uploads_within_the_limit_are_stored_whole(nvcf: Emulator) -> None:
    chunks = [b"ab", b"", b"cd" * 1000]

    async def agen() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def main() -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            asset = await _acreate(client)
            r = await client.put(asset["uploadUrl"], content=agen(), headers=_upload_headers())
            assert r.status_code == 200, r.text
            return asset

    with httpx.Client() as client:
        sync_asset = _create(client)
        r = client.put(sync_asset["uploadUrl"], content=iter(chunks), headers=_upload_headers())
        assert r.status_code == 200, r.text
        file_asset = _create(client)
        payload = bytes(range(256)) * 8192  # 2 MiB, read by httpx in 64 KiB pieces
        r = client.put(
            file_asset["uploadUrl"], content=io.BytesIO(payload), headers=_upload_headers()
        )
        assert r.status_code == 200, r.text
    async_asset = asyncio.run(main())
    for asset in (sync_asset, async_asset):
        assert nvcf.asset_bytes(asset["assetId"]) == b"".join(chunks)
    assert nvcf.asset_bytes(file_asset["assetId"]) == payload


def test_a_failing_body_raises_its_error_and_stores_nothing(nvcf: Emulator) -> None:
    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("disk on fire")

    async def abroken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise OSError("disk on fire")

    async def aput(url: str) -> None:
        async with httpx.AsyncClient() as client:
            await client.put(url, content=abroken(), headers=_upload_headers())

    with httpx.Client() as client:
        asset = _create(client)
        assert client.put(asset["uploadUrl"], content=b"v1", headers=_upload_headers()).is_success
        # Over a socket httpx raises the body's own exception too.
        with pytest.raises(OSError, match="disk on fire"):
            client.put(asset["uploadUrl"], content=broken(), headers=_upload_headers())
    with pytest.raises(OSError, match="disk on fire"):
        asyncio.run(aput(asset["uploadUrl"]))
    assert nvcf.asset_bytes(asset["assetId"]) == b"v1"
    assert nvcf.store.pending_uploads() == []


def test_streamed_response_with_client_stream(nvcf: Emulator) -> None:
    with httpx.Client() as client:
        for _ in range(3):
            asset = _create(client)
            client.put(asset["uploadUrl"], content=b"x", headers=_upload_headers())
        with client.stream("GET", f"{API}/v2/nvcf/assets", headers=AUTH) as r:
            assert r.status_code == 200
            pieces = list(r.iter_bytes(7))
    assert len(pieces) > 1
    assert len(httpx.Response(200, content=b"".join(pieces)).json()["assets"]) == 3


class _Gate:
    """Blocks a container until the test opens it (at most 10 s, so a bug fails, not hangs)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.left = threading.Event()

    def __call__(self, req: ContainerRequest) -> dict[str, bool]:
        self.entered.set()
        try:
            return {"opened": self.opened.wait(10)}
        finally:
            self.left.set()


@pytest.fixture
def gate() -> Iterator[_Gate]:
    g = _Gate()
    yield g
    g.opened.set()  # never leave a worker thread blocked


def _sse_app(gate: _Gate) -> Flask:
    app = Flask("sse")

    @app.get("/v2/health/ready")
    def ready() -> str:
        return "ok"

    @app.post("/stream")
    def stream() -> Response:
        def events() -> Iterator[str]:
            yield "data: first\n\n"
            gate.opened.wait(10)
            gate.left.set()
            yield "data: second\n\n"

        return Response(events(), mimetype="text/event-stream")

    return app


def _sse_request(nvcf: Emulator, fid: str) -> dict[str, Any]:
    return {
        "method": "POST",
        "url": f"{API}/v2/nvcf/pexec/functions/{fid}",
        "headers": {**nvcf.headers, "Accept": "text/event-stream"},
        "json": {"prompt": "go"},
    }


def test_event_stream_arrives_while_the_container_still_works(nvcf: Emulator, gate: _Gate) -> None:
    fid, _ = nvcf.add_function(_sse_app(gate), name="sse", inference_url="/stream")
    with httpx.Client() as client, client.stream(**_sse_request(nvcf, fid)) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines) == "data: first"
        assert not gate.left.is_set()  # the first event came before the second exists
        gate.opened.set()
        assert [line for line in lines if line] == ["data: second"]


def test_async_event_stream_arrives_while_the_container_still_works(
    nvcf: Emulator, gate: _Gate
) -> None:
    fid, _ = nvcf.add_function(_sse_app(gate), name="sse", inference_url="/stream")

    async def main() -> list[str]:
        async with httpx.AsyncClient() as client, client.stream(**_sse_request(nvcf, fid)) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            first = await lines.__anext__()
            assert not gate.left.is_set()
            gate.opened.set()
            return [first] + [line async for line in lines if line]

    assert asyncio.run(main()) == ["data: first", "data: second"]


# -- async: the loop keeps running -------------------------------------------------------------


def test_async_requests_do_not_serialise_behind_a_slow_container(
    nvcf: Emulator, gate: _Gate
) -> None:
    fid, _ = nvcf.add_function(gate, name="slow")
    finished: list[str] = []

    async def slow(client: httpx.AsyncClient) -> httpx.Response:
        r = await client.post(
            f"{API}/v2/nvcf/pexec/functions/{fid}",
            headers={**nvcf.headers, "NVCF-POLL-SECONDS": "30"},
            json={"x": 1},
        )
        finished.append("slow")
        return r

    async def fast(client: httpx.AsyncClient) -> httpx.Response:
        # Start once the slow request is inside its container, then let the container go.
        assert await anyio.to_thread.run_sync(gate.entered.wait, 10)
        r = await client.get(f"{API}/v2/nvcf/assets", headers=nvcf.headers)
        finished.append("fast")
        gate.opened.set()
        return r

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient() as client:
            return list(await asyncio.gather(slow(client), fast(client)))

    slow_r, fast_r = asyncio.run(main())
    assert fast_r.status_code == 200
    assert slow_r.status_code == 200, slow_r.text
    assert slow_r.json() == {"opened": True}  # opened by the fast request, not timed out
    assert finished == ["fast", "slow"]


def test_cancelling_an_async_request_returns_at_once(nvcf: Emulator, gate: _Gate) -> None:
    fid, _ = nvcf.add_function(gate, name="slow")

    async def main() -> httpx.Response:
        async with httpx.AsyncClient() as client:
            task = asyncio.create_task(
                client.post(
                    f"{API}/v2/nvcf/pexec/functions/{fid}",
                    headers={**nvcf.headers, "NVCF-POLL-SECONDS": "30"},
                    json={"x": 1},
                )
            )
            assert await anyio.to_thread.run_sync(gate.entered.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not gate.left.is_set()  # cancelled while the container still works
            gate.opened.set()
            return await client.get(f"{API}/v2/nvcf/assets", headers=nvcf.headers)

    assert asyncio.run(main()).status_code == 200


def test_more_slow_requests_than_anyios_default_thread_limit_run_at_once() -> None:
    from nvcf_emulator.inprocess_httpx import AsyncEmulatorTransport

    together = threading.Barrier(50, timeout=10)  # anyio lends 40 threads by default

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        together.wait()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    async def main() -> list[httpx.Response]:
        transport = AsyncEmulatorTransport(app)
        async with httpx.AsyncClient(transport=transport) as client:
            return list(await asyncio.gather(*(client.get("http://x/") for _ in range(50))))

    assert [r.text for r in asyncio.run(main())] == ["ok"] * 50


# -- other hosts, nesting, life cycle ------------------------------------------------------------


@pytest.mark.parametrize("respx_first", [True, False])
def test_user_respx_mocks_keep_working(respx_first: bool) -> None:
    router = respx.mock(assert_all_called=True)  # respx's default mode (httpcore)
    router.get("https://example.com/weather").respond(json={"sunny": True})
    emu = Emulator()
    if respx_first:
        router.start()
        emu.__enter__()
    else:
        emu.__enter__()
        router.start()
    try:
        assert httpx.get("https://example.com/weather").json() == {"sunny": True}
        with httpx.Client() as client:
            _create(client)

        async def main() -> Any:
            async with httpx.AsyncClient() as client:
                await _acreate(client)
                return (await client.get("https://example.com/weather")).json()

        assert asyncio.run(main()) == {"sunny": True}
        assert router.calls.call_count == 2  # the emulator's calls are not in the user's log
    finally:
        if respx_first:
            emu.close()
            router.stop()
        else:
            router.stop()
            emu.close()
    assert vars(httpx.Client)[HOOKED] is ORIGINAL_SYNC_HOOK


@pytest.mark.parametrize("respx_first", [True, False])
def test_respx_in_httpx_mode_keeps_working(respx_first: bool) -> None:
    """``using="httpx"`` patches the method we hook: respx first keeps other hosts; respx after
    sees everything first and lets the emulator's hosts through with ``pass_through``."""
    router = respx.mock(using="httpx")
    router.get("https://example.com/weather").respond(json={"sunny": True})
    if not respx_first:
        router.route(host="api.nvcf.nvidia.com").pass_through()
    emu = Emulator()
    if respx_first:
        router.start()
        emu.__enter__()
    else:
        emu.__enter__()
        router.start()
    try:
        with httpx.Client() as client:
            assert client.get("https://example.com/weather").json() == {"sunny": True}
            asset = _create(client)
        assert emu.assets.find(asset["assetId"]) is not None
    finally:
        if respx_first:
            emu.close()
            router.stop()
        else:
            router.stop()
            emu.close()
    assert vars(httpx.Client)[HOOKED] is ORIGINAL_SYNC_HOOK
    assert vars(httpx.AsyncClient)[HOOKED] is ORIGINAL_ASYNC_HOOK


def test_a_no_network_guard_on_httpx_transports_leaves_the_emulator_reachable(
    nvcf: Emulator,
) -> None:
    guard = AssertionError("no network in tests")
    with (
        mock.patch.object(httpx.HTTPTransport, "handle_request", side_effect=guard),
        mock.patch.object(httpx.AsyncHTTPTransport, "handle_async_request", side_effect=guard),
    ):
        with httpx.Client() as client:
            assert _create(client)["contentType"] == "image/png"
            with pytest.raises(AssertionError, match="no network"):
                client.get("https://example.com/")

        async def main() -> None:
            async with httpx.AsyncClient() as client:
                await _acreate(client)
                with pytest.raises(AssertionError, match="no network"):
                    await client.get("https://example.com/")

        asyncio.run(main())


def test_routing_stops_when_the_emulator_closes() -> None:
    emu = Emulator()
    with emu:
        assert vars(httpx.Client)[HOOKED] is not ORIGINAL_SYNC_HOOK
        with httpx.Client() as client:
            _create(client)
    assert vars(httpx.Client)[HOOKED] is ORIGINAL_SYNC_HOOK
    assert vars(httpx.AsyncClient)[HOOKED] is ORIGINAL_ASYNC_HOOK
    with respx.mock() as router:
        router.post(f"{API}/v2/nvcf/assets").respond(418)
        r = httpx.post(f"{API}/v2/nvcf/assets", headers=AUTH, json=_create_body())
        assert r.status_code == 418  # not the emulator any more


def test_nested_emulators_route_to_the_innermost() -> None:
    with Emulator() as outer, httpx.Client() as client:
        with Emulator() as inner:
            asset = _create(client)
            assert inner.assets.find(asset["assetId"]) is not None
            assert outer.assets.find(asset["assetId"]) is None
        asset = _create(client)
        assert outer.assets.find(asset["assetId"]) is not None
    assert vars(httpx.Client)[HOOKED] is ORIGINAL_SYNC_HOOK


def test_a_client_with_its_own_transport_still_uses_it_for_other_hosts(nvcf: Emulator) -> None:
    own = httpx.MockTransport(lambda request: httpx.Response(299, text="mine"))
    with httpx.Client(transport=own) as client:
        assert client.get("https://example.com/").status_code == 299
        assert _create(client)["contentType"] == "image/png"


def test_the_package_works_without_httpx() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import requests\n"
        "from nvcf_emulator import Emulator\n"
        "with Emulator() as emu:\n"
        "    r = requests.post(emu.base_url + '/v2/nvcf/assets', headers=emu.headers,\n"
        "                      json={'contentType': 'text/plain', 'description': 'd'})\n"
        "    assert r.status_code == 200, r.text\n"
        "assert 'nvcf_emulator.inprocess_httpx' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
