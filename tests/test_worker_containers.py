"""The container adapters and staging, including a container reached over loopback HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from flask import Flask, request
from werkzeug.datastructures import Headers
from werkzeug.serving import BaseWSGIServer, make_server

from nvcf_emulator import Emulator
from nvcf_emulator.worker import (
    AsgiContainer,
    CallableContainer,
    ContainerRequest,
    ContainerResponse,
    UrlContainer,
    WsgiContainer,
    as_container,
)
from nvcf_emulator.worker.containers import ContainerConnectionError
from nvcf_emulator.worker.staging import prepare

API = "https://api.nvcf.nvidia.com"


def req(path: str = "/infer", body: bytes = b"{}", **headers: str) -> ContainerRequest:
    return ContainerRequest("POST", path, Headers(headers), body, port=8000, timeout=5)


def echo_flask() -> Flask:
    app = Flask("echo")

    @app.get("/v2/health/ready")
    def ready() -> str:
        return "ok"

    @app.post("/infer")
    def infer() -> Any:
        return {"reqid": request.headers.get("NVCF-REQID"), "body": request.get_data(as_text=True)}

    return app


# -- picking an adapter ---------------------------------------------------------------------------


def test_as_container_picks_the_adapter() -> None:
    fastapi_app = FastAPI()
    adapters = {
        "flask": as_container(echo_flask()),
        "fastapi": as_container(fastapi_app),
        "callable": as_container(lambda r: {}),
        "wsgi-function": as_container(lambda environ, start_response: []),
        "url": as_container("http://127.0.0.1:9/infer"),
        "module": as_container("tests.test_worker_containers:echo_flask"),
    }
    try:
        assert isinstance(adapters["flask"], WsgiContainer)
        assert isinstance(adapters["fastapi"], AsgiContainer)
        assert isinstance(adapters["callable"], CallableContainer)
        assert type(adapters["wsgi-function"]) is WsgiContainer
        assert isinstance(adapters["url"], UrlContainer)
        # a factory function taking no request is a callable container, not a WSGI app
        assert isinstance(adapters["module"], CallableContainer)
        existing = CallableContainer(lambda r: {})
        assert as_container(existing) is existing
        with pytest.raises(TypeError):
            as_container(42)
        with pytest.raises(ValueError, match=r"package\.module:attr"):
            as_container("not-a-target")
    finally:
        for adapter in adapters.values():
            adapter.close()


@pytest.mark.parametrize(
    ("answer", "status", "ctype", "body"),
    [
        ({"a": 1}, 200, "application/json", b'{"a": 1}'),
        ("text", 200, "text/plain", b"text"),
        (b"\x00\x01", 200, "application/octet-stream", b"\x00\x01"),
        (None, 200, "", b""),
        (({"error": "x"}, 422), 422, "application/json", b'{"error": "x"}'),
        (("hi", 201, {"Content-Type": "text/html"}), 201, "text/html", b"hi"),
        (ContainerResponse(204), 204, "", b""),
    ],
)
def test_callable_answers(answer: Any, status: int, ctype: str, body: bytes) -> None:
    resp = CallableContainer(lambda r: answer).invoke(req())
    assert (resp.status, resp.content_type, resp.read()) == (status, ctype, body)


def test_callable_generator_is_an_event_stream() -> None:
    resp = CallableContainer(lambda r: iter(["data: 1\n\n", b"data: 2\n\n"])).invoke(req())
    assert resp.is_event_stream
    assert resp.read() == b"data: 1\n\ndata: 2\n\n"


# -- WSGI and ASGI ------------------------------------------------------------------------------


def test_wsgi_container_gets_path_headers_and_body() -> None:
    container = WsgiContainer(echo_flask())
    resp = container.invoke(req(body=b"payload", **{"NVCF-REQID": "r-1"}))
    assert resp.status == 200
    assert resp.json() == {"reqid": "r-1", "body": "payload"}
    assert container.health("/v2/health/ready", 8000) == 200
    assert container.health("/nope", 8000) == 404


def test_asgi_container_streams_and_closes_its_loop() -> None:
    app = FastAPI()

    @app.post("/infer")
    async def infer() -> StreamingResponse:
        async def events() -> Any:
            for i in range(3):
                yield f"data: {i}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    container = AsgiContainer(app)
    try:
        resp = container.invoke(req())
        assert resp.is_event_stream
        assert resp.read() == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        failed = container.invoke(req("/boom"))
        assert failed.status == 500  # Starlette's error middleware answers before re-raising
        assert failed.read() == b"Internal Server Error"
    finally:
        container.close()
    assert not container._thread.is_alive()


# -- a container reached over HTTP ------------------------------------------------------------


@pytest.fixture
def http_container() -> Iterator[BaseWSGIServer]:
    server = make_server("127.0.0.1", 0, echo_flask(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_url_container_end_to_end(nvcf: Emulator, http_container: BaseWSGIServer) -> None:
    url = f"http://127.0.0.1:{http_container.server_port}/infer"
    fid, vid = nvcf.add_function(url, name="remote")
    version = nvcf.function(fid, vid)
    assert (version.inference_url, version.inference_port) == ("/infer", http_container.server_port)
    r = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, data=b"over the wire"
    )
    assert r.status_code == 200
    assert r.json() == {"reqid": r.headers["NVCF-REQID"], "body": "over the wire"}


def test_url_container_that_refuses_connections(
    nvcf: Emulator, http_container: BaseWSGIServer
) -> None:
    fid, _ = nvcf.add_function(f"http://127.0.0.1:{http_container.server_port}/infer", name="gone")
    http_container.shutdown()
    http_container.server_close()
    r = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={})
    assert r.status_code == 500
    assert r.json()["type"] == "urn:inference-connection:problem-details:internal-server-error"
    assert r.json()["detail"] == "Inference connection error while making inference request"
    assert r.json()["requestId"] == r.headers["NVCF-REQID"]


def test_url_container_that_never_becomes_healthy(nvcf: Emulator) -> None:
    container = UrlContainer("http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(ContainerConnectionError):
        container.invoke(req())
    with pytest.raises(RuntimeError, match="answered nothing"):
        nvcf.add_function(container, name="down", startup_timeout=0.1)


# -- staging --------------------------------------------------------------------------------------


def test_staging_copies_assets_and_cleans_up(nvcf: Emulator, tmp_path: Path) -> None:
    r = requests.post(
        f"{API}/v2/nvcf/assets",
        headers=nvcf.headers,
        json={"contentType": "text/plain", "description": "d"},
    ).json()
    requests.put(
        r["uploadUrl"],
        data=b"bytes",
        headers={"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "d"},
    )
    asset = nvcf.assets.find(r["assetId"])
    assert asset is not None
    staged = prepare(nvcf.store, [asset, asset], "req-1", tmp_path / "in", tmp_path / "out")
    assert staged.files == [tmp_path / "in" / "req-1" / asset.asset_id]
    assert staged.files[0].read_bytes() == b"bytes"
    assert staged.output_dir.is_dir() and staged.output_files() == []
    (staged.output_dir / "progress").write_text("{}")
    (staged.output_dir / "result.bin").write_bytes(b"r")
    assert [p.name for p in staged.output_files()] == ["result.bin"]
    staged.remove()
    assert not (tmp_path / "in" / "req-1").exists()
    assert not (tmp_path / "out" / "req-1").exists()
    # no assets: no asset dir, but an output dir
    bare = prepare(nvcf.store, [], "req-2", tmp_path / "in", tmp_path / "out")
    assert not bare.asset_dir.exists() and bare.output_dir.is_dir()
    bare.remove()


def test_staging_failure_is_nvcfs_download_error(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda r: {"called": True}, name="f")
    r = requests.post(
        f"{API}/v2/nvcf/assets",
        headers=nvcf.headers,
        json={"contentType": "text/plain", "description": "d"},
    ).json()
    requests.put(
        r["uploadUrl"],
        data=b"bytes",
        headers={"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "d"},
    )
    asset = nvcf.assets.find(r["assetId"])
    assert asset is not None
    nvcf.store.delete(asset.key)  # the bytes vanish between the check and the download
    resp = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}",
        headers={**nvcf.headers, "NVCF-INPUT-ASSET-REFERENCES": r["assetId"]},
        json={},
    )
    assert resp.status_code == 500
    assert resp.json()["type"] == "urn:nvcf-worker-service:problem-details:internal-server-error"
    assert resp.json()["detail"] == "Internal error while downloading assets"
    assert nvcf.invocations[-1].container_request is None  # the container was not called


def test_worker_settings_parse_from_strings() -> None:
    from nvcf_emulator import EmulatorConfig

    parsed = EmulatorConfig.parse(
        {
            "container_timeout": "0.5",
            "asset_root": "/var/inf/inputAssets",
            "always_async": "true",
            "worker_threads": "2",
        }
    )
    assert parsed == {
        "container_timeout": 0.5,
        "asset_root": Path("/var/inf/inputAssets"),
        "always_async": True,
        "worker_threads": 2,
    }
    with pytest.raises(ValueError, match="worker_threads"):
        EmulatorConfig(worker_threads=0)
    with pytest.raises(ValueError, match="poll_seconds"):
        EmulatorConfig(poll_seconds=0)
