"""NVIDIA's own FastAPI function samples (``tests/samples/``, vendored unchanged from
NVIDIA/nvcf ``examples/function-samples/``) run against the emulator as a user's first test
would: registered with the inference URL, health URI and port NVIDIA's docs give them, and
invoked with the paths, headers and bodies of their READMEs and of ``docs/user/``
(container-functions.md, generic-http-function-invocation.md, function-creation.md).

The gRPC sample (``grpc-echo-sample``) runs in ``tests/test_grpc.py``.

Every uvicorn server a test starts runs on loopback in a thread and is stopped at its end.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

from nvcf_emulator import Emulator
from tests.samples import echo_server, multi_endpoint_server, streaming_server

API = "https://api.nvcf.nvidia.com"
JSON = {"Content-Type": "application/json"}
SSE = {"Accept": "text/event-stream"}

# What NVIDIA's container-functions.md says the echo sample's function is created with.
ECHO = {"inference_url": "/echo", "health_uri": "/health", "inference_port": 8000}
STREAMING = {"inference_url": "/streaming_echo", "health_uri": "/health", "inference_port": 8000}


def pexec(
    base: str, emu: Emulator, fid: str, body: Any, headers: dict[str, str] | None = None, **kw: Any
) -> requests.Response:
    """``POST /v2/nvcf/pexec/functions/{fid}`` as the README's curl sends it (a JSON body)."""
    return requests.post(
        f"{base}/v2/nvcf/pexec/functions/{fid}",
        data=json.dumps(body),
        headers={**emu.headers, **JSON, **(headers or {})},
        allow_redirects=False,
        timeout=30,
        **kw,
    )


def events(response: requests.Response) -> list[str]:
    """The ``data:`` of each Server-Sent Event, read as the stream arrives."""
    return [
        line[len("data: ") :]
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: ")
    ]


@pytest.fixture
def uvicorn_url() -> Iterator[Any]:
    """Start a sample under uvicorn on a free loopback port (a "container" already running);
    every server started is stopped at the end of the test."""
    started: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(app: Any) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        started.append((server, thread, sock))
        for _ in range(1000):  # a safety net, not a timing assertion
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread, sock in started:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive()


# -- fastapi-echo-sample, in-process as an ASGI app -----------------------------------------


def test_echo_sample_answers_its_readme_request(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)

    r = pexec(API, nvcf, fid, {"message": "hello"})

    assert r.status_code == 200, r.text
    assert r.json() == "hello"  # the sample returns message * repeats, as JSON
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    reqid = r.headers["NVCF-REQID"]
    assert str(uuid.UUID(reqid)) == reqid
    # container-functions.md: NVCF-INVOCATION-REGION goes to the container, never to clients.
    assert "NVCF-INVOCATION-REGION" not in r.headers
    call = nvcf.invocations[-1]
    assert call.container_request is not None
    assert (call.container_request.method, call.container_request.path) == ("POST", "/echo")
    sent = {k.upper(): v for k, v in call.container_headers.items()}
    assert sent["NVCF-REQID"] == reqid
    # function-creation.md, "Available Container Variables": every one reaches the container.
    for name in (
        "NVCF-REQID",
        "NVCF-SUB",
        "NVCF-NCAID",
        "NVCF-FUNCTION-NAME",
        "NVCF-FUNCTION-ID",
        "NVCF-FUNCTION-VERSION-ID",
        "NVCF-LARGE-OUTPUT-DIR",
        "NVCF-MAX-RESPONSE-SIZE-BYTES",
        "NVCF-NSPECTID",
        "NVCF-BACKEND",
        "NVCF-INSTANCETYPE",
        "NVCF-REGION",
        "NVCF-INVOCATION-REGION",
        "NVCF-ENV",
    ):
        assert name in sent, name
    assert sent["NVCF-FUNCTION-NAME"] == "fastapi-echo-sample"
    assert sent["NVCF-FUNCTION-ID"] == fid


def test_echo_sample_repeats_and_validation_error(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)

    assert pexec(API, nvcf, fid, {"message": "ab", "repeats": 3}).json() == "ababab"

    # FastAPI answers a body without "message" with its 422; NVCF's worker maps a container
    # 4xx to problem JSON (the sample's body has no "error" member: "Inference error").
    bad = pexec(API, nvcf, fid, {"repeats": 3})
    assert bad.status_code == 422
    assert bad.headers["Content-Type"] == "application/problem+json"
    assert bad.headers["NVCF-STATUS"] == "errored"
    problem = bad.json()
    assert problem["status"] == 422
    assert problem["title"] == "Unprocessable Entity"
    assert problem["detail"] == "Inference error"


def test_echo_sample_streams_events_with_accept_event_stream(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)

    body = {"message": "hello", "repeats": 3, "stream": True, "delay": 0.001}
    with pexec(API, nvcf, fid, body, SSE, stream=True) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["NVCF-STATUS"] == "fulfilled"
        assert events(r) == ["hello", "hello", "hello"]


def test_echo_sample_slower_than_poll_seconds_gives_202_then_the_result(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)

    r = pexec(API, nvcf, fid, {"message": "slow", "delay": 1.5}, {"NVCF-POLL-SECONDS": "1"})

    assert r.status_code == 202, r.text
    assert r.headers["NVCF-STATUS"] == "in-progress"
    assert r.content == b""
    reqid = r.headers["NVCF-REQID"]
    status_url = f"{API}/v2/nvcf/pexec/status/{reqid}"
    for _ in range(30):
        polled = requests.get(status_url, headers={**nvcf.headers, "NVCF-POLL-SECONDS": "5"})
        if polled.status_code != 202:
            break
    assert polled.status_code == 200, polled.text
    assert polled.json() == "slow"
    assert polled.headers["NVCF-REQID"] == reqid
    assert requests.get(status_url, headers=nvcf.headers).status_code == 404  # fetched once


@pytest.mark.nvcf(keep_staged=True)
def test_echo_sample_with_an_input_asset_gets_it_staged(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)
    asset = requests.post(
        f"{API}/v2/nvcf/assets",
        headers=nvcf.headers,
        json={"contentType": "image/png", "description": "cat"},
    ).json()
    put = requests.put(
        asset["uploadUrl"],
        data=b"png bytes",
        headers={"Content-Type": "image/png", "x-amz-meta-nvcf-asset-description": "cat"},
    )
    assert put.status_code == 200

    r = pexec(
        API, nvcf, fid, {"message": "hello"}, {"NVCF-INPUT-ASSET-REFERENCES": asset["assetId"]}
    )

    assert r.status_code == 200, r.text
    assert r.json() == "hello"
    sent = nvcf.invocations[-1].container_headers
    assert sent["NVCF-FUNCTION-ASSET-IDS"] == asset["assetId"]
    staged = Path(sent["NVCF-ASSET-DIR"]) / asset["assetId"]
    assert staged.read_bytes() == b"png bytes"


def test_echo_sample_answer_over_5_mib_is_a_302_to_a_zip(nvcf: Emulator) -> None:
    """A body over NVCF-MAX-RESPONSE-SIZE-BYTES reaches the client as NVCF's large result."""
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)

    r = pexec(API, nvcf, fid, {"message": "x" * 1000, "repeats": 6000})

    assert r.status_code == 302, r.text
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    reqid = r.headers["NVCF-REQID"]
    download = requests.get(r.headers["Location"], timeout=30)  # no Authorization needed
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        assert zf.namelist() == [f"{reqid}.response"]
        assert json.loads(zf.read(f"{reqid}.response")) == "x" * 6_000_000


def test_echo_sample_created_with_the_documented_body_through_the_functions_api(
    nvcf: Emulator,
) -> None:
    """container-functions.md's "Create the Function" body, with the echo sample's endpoints
    ("Inference Endpoint: /echo, Health Endpoint: /health, Inference Port: 8000")."""
    image = "registry.example.com/me/fastapi-echo-sample:latest"
    nvcf.register_image(image, echo_server.app)
    created = requests.post(
        f"{API}/v2/nvcf/functions",
        headers={**nvcf.headers, **JSON},
        json={
            "name": "fastapi-echo-sample",
            "inferenceUrl": "/echo",
            "inferencePort": 8000,
            "containerImage": image,
            "health": {
                "protocol": "HTTP",
                "uri": "/health",
                "port": 8000,
                "timeout": "PT10S",
                "expectedStatusCode": 200,
            },
        },
    )
    assert created.status_code == 200, created.text
    fn = created.json()["function"]
    assert fn["status"] == "INACTIVE"
    assert fn["health"]["uri"] == "/health"
    fid, vid = fn["id"], fn["versionId"]
    deployed = requests.post(
        f"{API}/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        headers={**nvcf.headers, **JSON},
        json={
            "deploymentSpecifications": [
                {"gpu": "L40S", "instanceType": "gl40s_1", "minInstances": 1, "maxInstances": 1}
            ]
        },
    )
    assert deployed.status_code == 200, deployed.text
    got = requests.get(f"{API}/v2/nvcf/functions/{fid}/versions/{vid}", headers=nvcf.headers)
    assert got.json()["function"]["status"] == "ACTIVE"  # its /health answered 200

    r = pexec(API, nvcf, fid, {"message": "hello"})
    assert r.status_code == 200, r.text
    assert r.json() == "hello"
    pinned = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}/versions/{vid}",
        headers={**nvcf.headers, **JSON},
        data=json.dumps({"message": "pinned"}),
    )
    assert pinned.json() == "pinned"


# -- fastapi-echo-sample as a running server (uvicorn), through a served emulator -------------


def test_echo_sample_under_uvicorn_through_a_served_emulator(
    nvcf_server: Any, uvicorn_url: Any
) -> None:
    url = uvicorn_url(echo_server.app)
    fid, _ = nvcf_server.add_function(
        f"{url}/echo", name="fastapi-echo-sample", health_uri="/health"
    )

    r = pexec(nvcf_server.url, nvcf_server, fid, {"message": "hello", "repeats": 2})
    assert r.status_code == 200, r.text
    assert r.json() == "hellohello"

    body = {"message": "hi", "repeats": 3, "stream": True, "delay": 0.001}
    with pexec(nvcf_server.url, nvcf_server, fid, body, SSE, stream=True) as s:
        assert s.status_code == 200
        assert s.headers["Content-Type"].startswith("text/event-stream")
        assert "Content-Length" not in s.headers  # forwarded as it comes, not buffered
        assert events(s) == ["hi", "hi", "hi"]

    slow = pexec(
        nvcf_server.url,
        nvcf_server,
        fid,
        {"message": "z", "delay": 1.5},
        {"NVCF-POLL-SECONDS": "1"},
    )
    assert slow.status_code == 202
    polled = requests.get(
        f"{nvcf_server.url}/v2/nvcf/pexec/status/{slow.headers['NVCF-REQID']}",
        headers={**nvcf_server.headers, "NVCF-POLL-SECONDS": "10"},
        timeout=30,
    )
    assert polled.status_code == 200, polled.text
    assert polled.json() == "z"


def test_url_container_that_is_not_running_says_so(nvcf: Emulator) -> None:
    """A user who registers the README's ``localhost:8000/echo`` before starting uvicorn (or on
    the wrong port) is told nothing listens there, not to change ``health_uri``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a port nothing listens on while the test runs
    port = sock.getsockname()[1]
    try:
        with pytest.raises(RuntimeError) as refused:
            nvcf.add_function(
                f"http://127.0.0.1:{port}/echo", health_uri="/health", startup_timeout=0.2
            )
    finally:
        sock.close()
    message = str(refused.value)
    assert f"http://127.0.0.1:{port}/health" in message
    assert "is the server running" in message
    assert "pass health_uri=" not in message
    assert nvcf.functions.all() == []  # nothing left behind


# -- fastapi-streaming-sample ------------------------------------------------------------------


def test_streaming_sample_streams_one_event_per_word(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(streaming_server.app, name="fastapi-streaming-sample", **STREAMING)

    with pexec(API, nvcf, fid, {"message": "hello there"}, SSE, stream=True) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert events(r) == ["hello", "there"]


def test_streaming_sample_under_uvicorn_through_a_served_emulator(
    nvcf_server: Any, uvicorn_url: Any
) -> None:
    url = uvicorn_url(streaming_server.app)
    fid, _ = nvcf_server.add_function(url, name="fastapi-streaming-sample", **STREAMING)

    body = {"message": "hello there general kenobi", "repeats": 2, "delay": 0.001}
    with pexec(nvcf_server.url, nvcf_server, fid, body, SSE, stream=True) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert events(r) == ["hello", "there", "general", "kenobi"] * 2


# -- fastapi-multi-endpoint-sample -------------------------------------------------------------


def test_multi_endpoint_sample_echo_through_pexec(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(
        multi_endpoint_server.app, name="fastapi-multi-endpoint-sample", **ECHO
    )

    r = pexec(API, nvcf, fid, {"message": "hello"})

    assert r.status_code == 200, r.text
    assert r.json() == "hello"


# -- pass-through invocation: what every sample README and generic-http-function-invocation.md
# -- show (Host: <function-id>.invocation.<gateway>, or function-id headers, any path) ----------
#
# NVCF's invocation service (routes/tlb.rs, app.rs) sends a request whose Host starts with a
# function id (or that carries a function-id header) to the container with its own method,
# path, query, headers and body, and the container's answer back as it is: pexec.passthrough,
# which EmulatorApp dispatches to (EmulatorApp._passthrough_target).


def gateway(server: Any, fid: str, vid: str | None = None) -> dict[str, str]:
    """The README's ``Host: <function-id>.invocation.${GATEWAY_ADDR}`` for a served emulator."""
    addr = server.url.removeprefix("http://")
    prefix = f"{vid}.{fid}" if vid else fid
    return {**server.headers, "Host": f"{prefix}.invocation.{addr}"}


F0 = "00000000-0000-0000-0000-000000000000"
F1 = "11111111-1111-1111-1111-111111111111"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # NVIDIA's own cases (routes/tlb.rs tests)
        ({"Host": "example.com"}, None),
        ({"Host": "invalid-id.example.com"}, None),
        ({"Host": f"invalid-id.{F0}.example.com"}, None),
        ({"Host": f"{F0}.example.com"}, (F0, None)),
        ({"Host": f"{F0}.{F1}.example.com"}, (F1, F0)),  # <versionId>.<functionId>
        # a port, upper case, and the emulator's own hosts
        ({"Host": f"{F0.upper()}.invocation.127.0.0.1:8000"}, (F0, None)),
        ({"Host": "api.nvcf.nvidia.com"}, None),
        # function-id headers win over the Host; a bad version id is left out
        ({"Host": f"{F0}.example.com", "function-id": F1}, (F1, None)),
        ({"Host": "invocation.gw", "function-id": F1, "function-version-id": F0}, (F1, F0)),
        ({"Host": "invocation.gw", "function-id": F1, "function-version-id": "x"}, (F1, None)),
        ({"Host": f"{F0}.gw", "function-id": "not-a-uuid"}, (F0, None)),
    ],
)
def test_passthrough_target_reads_host_and_headers_as_nvcf(
    headers: dict[str, str], expected: tuple[str, str | None] | None
) -> None:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from nvcf_emulator.http.pexec import passthrough_target

    request = Request(EnvironBuilder(path="/echo", headers=headers).get_environ())
    assert passthrough_target(request) == expected


def test_passthrough_is_dispatched_by_the_app(nvcf_server: Any) -> None:
    fid, _ = nvcf_server.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)
    r = requests.post(
        f"{nvcf_server.url}/echo",
        headers={**gateway(nvcf_server, fid), **JSON},
        data=json.dumps({"message": "hello"}),
        timeout=30,
    )
    assert r.status_code == 200


def test_echo_sample_readme_passthrough_with_the_host_header(nvcf_server: Any) -> None:
    fid, vid = nvcf_server.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)

    r = requests.post(
        f"{nvcf_server.url}/echo",
        headers={**gateway(nvcf_server, fid), **JSON},
        data=json.dumps({"message": "hello"}),
        timeout=30,
    )

    assert r.status_code == 200, r.text
    assert r.json() == "hello"
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    call = nvcf_server.invocations[-1]
    assert call.version_id == vid
    assert call.container_request is not None
    assert call.container_request.path == "/echo"
    # NVCF marks a pass-through call so the worker hands the answer back unmapped.
    assert call.container_headers["nvcf-feature-disable-worker-compatibility"] == "true"
    # <versionId>.<functionId>.invocation.<gateway> pins the version.
    pinned = requests.post(
        f"{nvcf_server.url}/echo",
        headers={**gateway(nvcf_server, fid, vid), **JSON},
        data=json.dumps({"message": "pinned"}),
        timeout=30,
    )
    assert pinned.json() == "pinned"


def test_multi_endpoint_sample_readme_every_endpoint(nvcf_server: Any) -> None:
    fid, vid = nvcf_server.add_function(
        multi_endpoint_server.app, name="fastapi-multi-endpoint-sample", **ECHO
    )
    base = nvcf_server.url
    host = gateway(nvcf_server, fid)

    echoed = requests.post(
        f"{base}/echo", headers={**host, **JSON}, data=json.dumps({"message": "hello"}), timeout=30
    )
    assert echoed.json() == "hello"

    # "dispatch without the function ID in the Host header" (function-id headers).
    headed = {
        **nvcf_server.headers,
        "Host": f"invocation.{base.removeprefix('http://')}",
        "function-id": fid,
        "function-version-id": vid,
        **JSON,
    }
    r = requests.post(
        f"{base}/echo", headers=headed, data=json.dumps({"message": "hi"}), timeout=30
    )
    assert r.status_code == 200, r.text
    assert r.json() == "hi"

    yeet = requests.get(f"{base}/yeet", headers=host, timeout=30)
    assert yeet.status_code == 200, yeet.text
    assert yeet.json() == "yeet"

    # "Query parameters work the same as for any other gateway call."
    query = requests.get(f"{base}/query?name=John&age=42", headers=host, timeout=30)
    assert query.status_code == 200, query.text
    assert query.json() == {
        "message": "Query parameters received",
        "parameters": {"name": "John", "age": 42, "active": True},
    }
    call = nvcf_server.invocations[-1]
    assert call.container_request is not None
    assert call.container_request.method == "GET"
    assert call.container_request.path == "/query?name=John&age=42"


def test_passthrough_returns_the_containers_error_as_it_is(nvcf_server: Any) -> None:
    """generic-http-function-invocation.md: "Direct HTTP invocation returns the status,
    headers, and body produced by your inference container" (no problem JSON)."""
    fid, _ = nvcf_server.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)
    host = gateway(nvcf_server, fid)

    bad = requests.post(
        f"{nvcf_server.url}/echo", headers={**host, **JSON}, data=json.dumps({}), timeout=30
    )
    assert bad.status_code == 422
    assert bad.headers["Content-Type"] == "application/json"
    assert bad.json()["detail"][0]["loc"] == ["body", "message"]  # FastAPI's own body
    missing = requests.get(f"{nvcf_server.url}/nowhere", headers=host, timeout=30)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}  # the container's 404, not the emulator's
    # The platform's own answers stay: no Authorization is the invocation service's 401.
    anonymous = {"Host": host["Host"]}
    assert requests.get(f"{nvcf_server.url}/yeet", headers=anonymous, timeout=30).status_code == 401


def test_passthrough_answer_over_5_mib_comes_inline(nvcf_server: Any) -> None:
    """post_pexec.rs: "large response zips are not supported by TLB ... send the whole
    response inline"."""
    fid, _ = nvcf_server.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)

    r = requests.post(
        f"{nvcf_server.url}/echo",
        headers={**gateway(nvcf_server, fid), **JSON},
        data=json.dumps({"message": "x" * 1000, "repeats": 6000}),
        allow_redirects=False,
        timeout=30,
    )

    assert r.status_code == 200
    assert r.json() == "x" * 6_000_000


def test_streaming_sample_readme_passthrough_streams(nvcf_server: Any) -> None:
    """The streaming README's gateway call, at the sample's real path (/streaming_echo: the
    README's ``/echo`` is a route the streaming sample does not have)."""
    fid, _ = nvcf_server.add_function(
        streaming_server.app, name="fastapi-streaming-sample", **STREAMING
    )
    host = gateway(nvcf_server, fid)
    body = json.dumps({"message": "hello there"})

    with requests.post(
        f"{nvcf_server.url}/streaming_echo",
        headers={**host, **JSON, **SSE},
        data=body,
        stream=True,
        timeout=30,
    ) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert events(r) == ["hello", "there"]
    as_written = requests.post(
        f"{nvcf_server.url}/echo", headers={**host, **JSON, **SSE}, data=body, timeout=30
    )
    assert as_written.status_code == 404  # what the README's exact call gets from the sample


def test_passthrough_slower_than_poll_seconds_gives_202_then_the_result(
    nvcf_server: Any,
) -> None:
    fid, _ = nvcf_server.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)
    host = gateway(nvcf_server, fid)

    r = requests.post(
        f"{nvcf_server.url}/echo",
        headers={**host, **JSON, "NVCF-POLL-SECONDS": "1"},
        data=json.dumps({"message": "slow", "delay": 1.5}),
        timeout=30,
    )
    assert r.status_code == 202, r.text
    polled = requests.get(
        f"{nvcf_server.url}/v2/nvcf/pexec/status/{r.headers['NVCF-REQID']}",
        headers={**nvcf_server.headers, "NVCF-POLL-SECONDS": "10"},
        timeout=30,
    )
    assert polled.status_code == 200, polled.text
    assert polled.json() == "slow"


# -- health on its own port --------------------------------------------------------------------


def test_health_port_of_the_create_body_is_where_health_is_checked(
    nvcf: Emulator, uvicorn_url: Any
) -> None:
    """The create bodies in container-functions.md and streaming-functions.md give ``health``
    its own ``port`` (LLS: ``CONTROL_SERVER_PORT`` beside ``STREAMING_SERVER_PORT``), and
    NVIDIA's worker checks health there (worker.go: ``HealthCheckConfig(...,
    InferenceHealthPort, InferencePort)``, the inference port only when no health port is
    set)."""
    from fastapi import FastAPI

    control = FastAPI()

    @control.get("/v1/streaming/ready")
    def ready() -> str:
        return "ready"

    inference_port = int(uvicorn_url(echo_server.app).rpartition(":")[2])
    health_port = int(uvicorn_url(control).rpartition(":")[2])

    fid, _ = nvcf.add_function(
        "http://127.0.0.1",
        name="two-ports",
        inference_url="/echo",
        inference_port=inference_port,
        health_uri="/v1/streaming/ready",
        health={
            "protocol": "HTTP",
            "uri": "/v1/streaming/ready",
            "port": health_port,
            "timeout": "PT10S",
            "expectedStatusCode": 200,
        },
        startup_timeout=2,
    )

    assert pexec(API, nvcf, fid, {"message": "hello"}).json() == "hello"


# -- pass-through routing: in-process URLs, and which requests a function-id header takes --------

INVOCATION = "invocation.api.nvcf.nvidia.com"


def test_passthrough_url_is_routed_in_process(nvcf: Emulator) -> None:
    """``https://<fid>.invocation.api.nvcf.nvidia.com/<path>`` (the reference's pass-through
    URL) reaches the emulator in-process, with requests and with httpx; a version id in front
    pins the version."""
    import httpx

    fid, vid = nvcf.add_function(
        multi_endpoint_server.app, name="fastapi-multi-endpoint-sample", **ECHO
    )
    r = requests.get(f"https://{fid}.{INVOCATION}/query?name=Ann&age=7", headers=nvcf.headers)
    assert r.status_code == 200, r.text
    assert r.json()["parameters"] == {"name": "Ann", "age": 7, "active": True}
    assert nvcf.invocations[-1].container_request.path == "/query?name=Ann&age=7"

    pinned = requests.post(
        f"https://{vid}.{fid}.{INVOCATION}/echo", headers=nvcf.headers, json={"message": "v"}
    )
    assert pinned.json() == "v"
    assert nvcf.invocations[-1].version_id == vid

    with httpx.Client() as client:
        h = client.post(
            f"https://{fid}.{INVOCATION}/echo", headers=nvcf.headers, json={"message": "x"}
        )
    assert h.status_code == 200
    assert h.json() == "x"


def test_passthrough_needs_the_key_and_an_existing_function(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)
    anonymous = requests.post(f"https://{fid}.{INVOCATION}/echo", json={"message": "x"})
    assert anonymous.status_code == 401
    missing = requests.post(
        f"https://{uuid.uuid4()}.{INVOCATION}/echo", headers=nvcf.headers, json={"message": "x"}
    )
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    assert "not found" in missing.json()["detail"]


def test_passthrough_answer_has_no_cors_of_the_emulators(nvcf: Emulator) -> None:
    """NVCF adds CORS headers on its path-based routes only; a pass-through answer is the
    container's own (app.rs: "for full path passthrough we send the OPTIONS ... to the
    worker")."""
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)
    origin = {"Origin": "https://app.example"}
    r = requests.post(
        f"https://{fid}.{INVOCATION}/echo",
        headers={**nvcf.headers, **origin},
        json={"message": "x"},
    )
    assert r.status_code == 200
    assert "Access-Control-Allow-Credentials" not in r.headers
    via_pexec = pexec(API, nvcf, fid, {"message": "x"}, origin)
    assert via_pexec.headers["Access-Control-Allow-Credentials"] == "true"


def test_function_id_header_never_takes_a_control_plane_or_admin_call(nvcf: Emulator) -> None:
    """One host serves the control plane, the invocation service and the admin API here; in
    NVCF the gateway sends control-plane paths to another service whatever the headers. So a
    client whose session always carries ``function-id`` still lists its assets."""
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)
    headed = {**nvcf.headers, "function-id": fid}
    assets = requests.get(f"{API}/v2/nvcf/assets", headers=headed)
    assert assets.status_code == 200
    assert assets.json() == {"assets": []}
    created = requests.post(
        f"{API}/v2/nvcf/assets",
        headers=headed,
        json={"contentType": "text/plain", "description": "d"},
    )
    assert created.status_code == 200
    wrong_method = requests.put(f"{API}/v2/nvcf/assets", headers=headed)
    assert wrong_method.status_code == 405  # the control plane's answer, not the container's
    functions = requests.get(f"{API}/v2/nvcf/functions", headers=headed)
    assert functions.status_code == 200
    assert requests.get(f"{API}/_emulator/health", headers=headed).status_code == 200
    assert nvcf.invocations == []  # nothing reached the container


def test_function_id_header_takes_invocation_and_unknown_paths(nvcf: Emulator) -> None:
    """On the invocation service the header wins over the path (routes/tlb.rs, app.rs): any
    path that is not the control plane's goes to the container as it is."""
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)
    headed = {**nvcf.headers, "function-id": fid}
    r = requests.post(f"{API}/echo", headers=headed, json={"message": "to the container"})
    assert r.status_code == 200, r.text
    assert r.json() == "to the container"
    on_pexec = requests.post(
        f"{API}/v2/nvcf/pexec/functions/{fid}", headers=headed, json={"message": "m"}
    )
    assert on_pexec.status_code == 404  # the echo sample serves no such path
    assert nvcf.invocations[-1].container_request.path == f"/v2/nvcf/pexec/functions/{fid}"


def test_injected_invoke_fault_hits_a_passthrough_call(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(echo_server.app, name="fastapi-echo-sample", **ECHO)
    nvcf.faults.add("invoke", status=503, times=1)
    url = f"https://{fid}.{INVOCATION}/echo"
    first = requests.post(url, headers=nvcf.headers, json={"message": "x"})
    assert first.status_code == 503
    second = requests.post(url, headers=nvcf.headers, json={"message": "x"})
    assert second.status_code == 200


def test_a_deployment_whose_health_check_fails_says_why(
    nvcf: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The echo sample serves health at /health; created through the API without ``healthUri``
    its version is checked at NVCF's default /v2/health/ready and stays DEPLOYING (invoking it
    is NVCF's 404). The deployment's ``healthInfo`` and the log say what the check got, so the
    user need not guess."""
    nvcf.register_image("nvcr.io/me/echo:1", echo_server.app)
    fn = requests.post(
        f"{API}/v2/nvcf/functions",
        headers=nvcf.headers,
        json={"name": "echo", "inferenceUrl": "/echo", "containerImage": "nvcr.io/me/echo:1"},
    ).json()["function"]
    url = f"{API}/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"
    spec = {
        "deploymentSpecifications": [
            {
                "gpu": "L40S",
                "instanceType": "gl40s_1.br25_2xlarge",
                "minInstances": 1,
                "maxInstances": 1,
            }
        ]
    }
    with caplog.at_level("WARNING", logger="nvcf_emulator"):
        assert requests.post(url, headers=nvcf.headers, json=spec).status_code == 200
        deployment = requests.get(url, headers=nvcf.headers).json()["deployment"]
        requests.get(url, headers=nvcf.headers)  # looked at again: logged once
    assert deployment["functionStatus"] == "DEPLOYING"
    note = "health check GET /v2/health/ready on port 8000 answered 404 (expected 200)"
    assert deployment["healthInfo"] == [{"error": note}]
    assert [r.getMessage() for r in caplog.records if note in r.getMessage()] != []
    assert len([r for r in caplog.records if note in r.getMessage()]) == 1
    r = pexec(API, nvcf, fn["id"], {"message": "x"})
    assert r.status_code == 404
