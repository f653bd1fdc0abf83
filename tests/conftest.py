"""Shared fixtures: one behaviour suite, run in-process and against a real socket server."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest

pytest_plugins = ["pytester"]


@dataclass
class Api:
    """How a test reaches an emulator: its base URL and the emulator behind it."""

    mode: str
    base_url: str
    emulator: Emulator

    @property
    def headers(self) -> dict[str, str]:
        return self.emulator.headers

    def create_asset(
        self,
        content_type: str = "image/png",
        description: str = "red-cat-photo",
        *,
        key: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else self.headers
        r = requests.post(
            f"{self.base_url}/v2/nvcf/assets",
            headers=headers,
            json={"contentType": content_type, "description": description},
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def upload(self, asset: dict[str, Any], data: Any = b"hello") -> requests.Response:
        return requests.put(
            asset["uploadUrl"],
            data=data,
            headers={
                "Content-Type": asset["contentType"],
                "x-amz-meta-nvcf-asset-description": asset["description"],
            },
        )

    def key_of(self, asset_id: str) -> str:
        """The storage key of an asset (whichever backend holds its bytes)."""
        record = self.emulator.assets.find(asset_id)
        assert record is not None, asset_id
        return record.key

    def bytes_at(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None: works for local files and S3 alike."""
        store = self.emulator.store
        if store.size(key) is None:
            return None
        with store.open(key) as f:
            return f.read()

    def new_asset(self, data: bytes = b"hello", **kwargs: Any) -> dict[str, Any]:
        asset = self.create_asset(**kwargs)
        r = self.upload(asset, data)
        assert r.status_code == 200, r.text
        return asset


@pytest.fixture(params=["inprocess", "server"])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """The same emulator behaviour, reached in-process and over a socket."""
    if request.param == "inprocess":
        emu = request.getfixturevalue("nvcf")
        yield Api("inprocess", emu.base_url, emu)
    else:
        server = request.getfixturevalue("nvcf_server")
        yield Api("server", server.url, server.emulator)


# -- the same suites on the S3 backend ----------------------------------------------------------
# NVCF_TEST_STORAGE=moto runs the nvcf and nvcf_server fixtures with asset bytes in a moto S3
# bucket (in-process mock_aws), so the behaviour suites prove the S3 backend too:
#   NVCF_TEST_STORAGE=moto pytest tests/test_assets_api.py tests/test_upload.py tests/test_pexec.py

if os.environ.get("NVCF_TEST_STORAGE") == "moto":
    from moto import mock_aws

    S3_SETTINGS = {"storage": "s3://nvcf-test-bucket/assets", "s3_create_bucket": True}

    @pytest.fixture(scope="session", autouse=True)
    def _moto_for_storage() -> Iterator[None]:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        with mock_aws():
            yield

    @pytest.fixture
    def nvcf(request: pytest.FixtureRequest, _moto_for_storage: None) -> Iterator[Emulator]:
        settings = {
            **S3_SETTINGS,
            **{
                k: v
                for m in reversed(list(request.node.iter_markers("nvcf")))
                for k, v in m.kwargs.items()
            },
        }
        with Emulator(**settings) as emu:
            yield emu

    @pytest.fixture(scope="session")
    def nvcf_server_session(_moto_for_storage: None) -> Iterator[Any]:
        emu = Emulator(**S3_SETTINGS)
        server = emu.serve()
        try:
            yield server
        finally:
            server.stop()
            emu.close()


# -- a container a test holds back --------------------------------------------------------


class Gate:
    """A container that blocks until the test opens the gate (never longer than 10 s)."""

    def __init__(self, answer: Any = None) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.answer = answer if answer is not None else {"done": True}
        self.before: Callable[[ContainerRequest], None] | None = None

    def __call__(self, req: ContainerRequest) -> Any:
        self.calls += 1
        if self.before is not None:
            self.before(req)
        self.entered.set()
        self.opened.wait(10)
        return self.answer

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.open()  # never leave a worker thread blocked


class EventStream:
    """An event-stream (Flask) container: ``data: first``, then waits for ``go`` (at most
    ``wait`` s; ``waiting`` is set meanwhile), then ``data: second``; ``ended`` is set once its
    generator is closed or done."""

    def __init__(self, wait: float = 5.0) -> None:
        self.go = threading.Event()
        self.waiting = threading.Event()
        self.ended = threading.Event()
        self.wait = wait

    def app(self) -> Any:
        from flask import Flask, Response

        app = Flask("events")

        @app.get("/v2/health/ready")
        def ready() -> str:
            return "ok"

        @app.post("/stream")
        def stream() -> Response:
            def events() -> Iterator[str]:
                try:
                    yield "data: first\n\n"
                    self.waiting.set()
                    self.go.wait(self.wait)
                    yield "data: second\n\n"
                finally:
                    self.ended.set()

            return Response(events(), mimetype="text/event-stream")

        return app

    def register(self, emu: Emulator, base: str) -> dict[str, Any]:
        """Register on ``emu``; keyword arguments for a streaming invocation through ``base``."""
        fid, _ = emu.add_function(self.app(), name="events", inference_url="/stream")
        return {
            "url": f"{base}/v2/nvcf/pexec/functions/{fid}",
            "headers": {**emu.headers, "Accept": "text/event-stream"},
            "json": {"prompt": "go"},
        }


@pytest.fixture
def sse() -> Iterator[EventStream]:
    s = EventStream()
    yield s
    s.go.set()  # never leave a container thread waiting


# -- S3 against moto, for the storage suites --------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and nothing from the developer's own AWS configuration (the storage
    suites use it for every test: ``pytestmark = pytest.mark.usefixtures("aws_env")``)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # an S3 that went away fails fast
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def moto_server() -> Iterator[str]:
    """A fresh moto S3 server on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        if server._server is not None:
            server._server.server_close()


@pytest.fixture
def aws() -> Iterator[None]:
    """moto's in-process S3 (``mock_aws``) for the test."""
    from moto import mock_aws

    with mock_aws():
        yield
