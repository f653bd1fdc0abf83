"""Review of the two invocation paths built last: pass-through invocation (NVCF's "TLB":
``https://<functionId>.invocation.<host>/<any path>``, or ``function-id`` headers) and the
legacy envelope API (``/v2/nvcf/exec/...``), against NVIDIA's invocation service
(``routes/tlb.rs``, ``post_pexec.rs``, ``get_pexec.rs``, ``post_exec.rs``, ``app.rs``,
``http_headers.rs``) and its worker (``worker-utils/worker/work.go``).

Every server a test starts is stopped at its end; the only network is loopback.
"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest, ContainerResponse

API = "https://api.nvcf.nvidia.com"
INVOCATION = "invocation.api.nvcf.nvidia.com"


def environ_echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI container that answers what it was sent: method, raw target, headers, body."""
    seen = {
        "method": environ["REQUEST_METHOD"],
        "target": environ.get("RAW_URI"),
        "query": environ.get("QUERY_STRING"),
        "headers": {
            k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
        },
        "body": environ["wsgi.input"].read().decode("latin-1"),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def raw_http(port: int, head: str) -> tuple[str, bytes]:
    """One HTTP/1.1 exchange on a fresh connection, sent byte for byte (no client in between
    to normalise the target); the status line and headers, and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    return top.decode("latin-1"), body


# -- what the container sees -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_reaches_the_container_with_its_body(nvcf: Emulator, method: str) -> None:
    """NVCF's TLB router is a fallback for any method; OPTIONS too goes to the container (app.rs:
    "for full path passthrough we send the OPTIONS and all other requests all the way to the
    worker"), behind auth, and a GET may carry a body."""
    fid, _ = nvcf.add_function(environ_echo, name="echo", inference_url="/infer")
    r = requests.request(
        method,
        f"https://{fid}.{INVOCATION}/a/b?x=1",
        headers={**nvcf.headers, "Origin": "https://app.example"},
        data=b"payload",
    )
    assert r.status_code == 200, r.text
    assert "Access-Control-Allow-Origin" not in r.headers  # no CORS layer on pass-through
    request = nvcf.invocations[-1].container_request
    assert request is not None
    assert (request.method, request.path, request.body) == (method, "/a/b?x=1", b"payload")
    if method != "HEAD":
        assert r.json()["method"] == method


def test_a_preflight_without_a_key_is_the_auth_layers_401(nvcf: Emulator) -> None:
    """The TLB router sits behind the auth middleware: a browser's preflight (which never
    carries Authorization) gets its text/plain 401, not the container's answer."""
    fid, _ = nvcf.add_function(environ_echo, name="echo")
    r = requests.options(
        f"https://{fid}.{INVOCATION}/x",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 401
    assert r.text == "Header of type `authorization` was missing"
    assert nvcf.invocations == []


def test_the_container_sees_the_raw_target_over_a_socket(nvcf_server: Any) -> None:
    """post_pexec.rs forwards ``uri.path_and_query()`` as it came, and the worker appends it to
    the container's address "as-is without escaping": percent-escapes (``%2F`` too), dot
    segments, doubled slashes inside the path, repeated keys, ``+`` and a trailing slash."""
    fid, _ = nvcf_server.add_function(environ_echo, name="echo")
    port = int(nvcf_server.url.rpartition(":")[2])
    target = "/a%2Fb//c/./d/../e/?k=1&k=2&s=a+b&e=&u=%C3%A9"
    head, body = raw_http(
        port,
        f"GET {target} HTTP/1.1\r\nHost: {fid}.invocation.127.0.0.1:{port}\r\n"
        f"Authorization: {nvcf_server.headers['Authorization']}\r\nConnection: close\r\n\r\n",
    )
    assert head.startswith("HTTP/1.1 200"), head
    seen = json.loads(body)
    assert seen["target"] == target
    assert seen["query"] == "k=1&k=2&s=a+b&e=&u=%C3%A9"
    request = nvcf_server.invocations[-1].container_request
    assert request is not None
    assert request.path == target


def test_a_leading_double_slash_reaches_the_container_over_a_socket(nvcf_server: Any) -> None:
    """CPython's request parser collapses a leading ``//`` (gh-87389, against open redirects
    in its file server): the container got ``/x/y`` for ``//x/y`` over a socket, while
    in-process it got what was sent."""
    fid, _ = nvcf_server.add_function(environ_echo, name="echo")
    port = int(nvcf_server.url.rpartition(":")[2])
    head, body = raw_http(
        port,
        f"GET //x/y?q=1 HTTP/1.1\r\nHost: {fid}.invocation.127.0.0.1:{port}\r\n"
        f"Authorization: {nvcf_server.headers['Authorization']}\r\nConnection: close\r\n\r\n",
    )
    assert head.startswith("HTTP/1.1 200"), head
    assert json.loads(body)["target"] == "//x/y?q=1"


def test_headers_the_container_gets_and_does_not(nvcf_server: Any) -> None:
    """As NVCF forwards them: the auth middleware removes ``Authorization``; hop-by-hop headers
    and the ones ``Connection`` names are removed (http_headers.rs); the client's
    ``nvcf-feature-disable-worker-compatibility`` is replaced by ``true``; worker headers are
    the worker's; ``Host`` is the container's own address (Go's client sends the URL's host);
    the rest, asset references and function-id headers included, arrive as sent."""
    fid, vid = nvcf_server.add_function(environ_echo, name="echo", inference_port=8123)
    port = int(nvcf_server.url.rpartition(":")[2])
    asset = str(uuid.uuid4())
    lines = [
        "POST /x HTTP/1.1",
        f"Host: {fid}.invocation.127.0.0.1:{port}",
        f"Authorization: {nvcf_server.headers['Authorization']}",
        "Connection: close, X-Hop",
        "X-Hop: gone",
        "Keep-Alive: timeout=5",
        "TE: trailers",
        "Upgrade: websocket",
        "Proxy-Authorization: Basic eA==",
        "nvcf-feature-disable-worker-compatibility: false",
        "NVCF-REQID: forged",
        "NVCF-FUNCTION-ID: forged",
        f"NVCF-INPUT-ASSET-REFERENCES: {asset}",
        f"function-version-id: {vid}",
        "X-Kept: kept",
        "Content-Length: 2",
        "",
        "hi",
    ]
    head, body = raw_http(port, "\r\n".join(lines))
    assert head.startswith("HTTP/1.1 200"), head
    headers = json.loads(body)["headers"]
    for gone in ("authorization", "x-hop", "keep-alive", "te", "upgrade", "proxy-authorization"):
        assert gone not in headers
    assert headers["host"] == "127.0.0.1:8123"
    assert headers["nvcf-feature-disable-worker-compatibility"] == "true"
    assert headers["nvcf-reqid"] == nvcf_server.invocations[-1].request_id
    assert headers["nvcf-function-id"] == fid
    assert headers["nvcf-input-asset-references"] == asset
    assert headers["function-version-id"] == vid
    assert headers["x-kept"] == "kept"


def test_response_headers_come_back_as_the_container_sent_them(nvcf_server: Any) -> None:
    """Repeated ``Set-Cookie`` lines stay apart, a gzip body is not decoded, ``Connection``
    and what it names stay behind; NVCF adds only its request id and status."""
    import gzip

    packed = gzip.compress(b'{"k": "v"}')

    def container(req: ContainerRequest) -> ContainerResponse:
        return ContainerResponse(
            200,
            packed,
            [
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; Path=/"),
                ("Connection", "X-Private"),
                ("X-Private", "hidden"),
            ],
        )

    fid, _ = nvcf_server.add_function(container, name="gz")
    port = int(nvcf_server.url.rpartition(":")[2])
    head, body = raw_http(
        port,
        f"GET /gz HTTP/1.1\r\nHost: {fid}.invocation.127.0.0.1:{port}\r\n"
        f"Authorization: {nvcf_server.headers['Authorization']}\r\nConnection: close\r\n\r\n",
    )
    lines = head.split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), head
    assert [line for line in lines if line.lower().startswith("set-cookie:")] == [
        "Set-Cookie: a=1; Path=/",
        "Set-Cookie: b=2; Path=/",
    ]
    assert "Content-Encoding: gzip" in lines
    assert not [line for line in lines if line.lower().startswith("x-private")]
    assert body == packed


# -- what the emulator adds to the answer ----------------------------------------------------------


def test_an_answer_without_content_type_gets_none_added(nvcf: Emulator) -> None:
    """NVCF hands a container's answer on with the container's headers only (plus its request
    id and status): a 204 without ``Content-Type`` has none. (werkzeug's default
    ``text/plain; charset=utf-8`` was added to it.)"""

    def container(req: ContainerRequest) -> ContainerResponse:
        return ContainerResponse(204, b"", [])

    fid, _ = nvcf.add_function(container, name="empty")
    r = requests.delete(f"https://{fid}.{INVOCATION}/items/1", headers=nvcf.headers)
    assert r.status_code == 204
    assert "Content-Type" not in r.headers
    assert r.headers["NVCF-STATUS"] == "fulfilled"
    via_pexec = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers)
    assert via_pexec.status_code == 204
    assert "Content-Type" not in via_pexec.headers


@pytest.mark.nvcf(always_async=True)
def test_the_empty_202_has_no_content_type(nvcf: Emulator) -> None:
    """The worker's own "still working" answer is ``202`` with no body and no headers
    (work.go: ``&http.Response{StatusCode: http.StatusAccepted, Body: http.NoBody}``); NVCF
    adds its request id and status only."""
    fid, _ = nvcf.add_function(lambda req: {"ok": 1}, name="slow")
    for r in (
        requests.post(f"https://{fid}.{INVOCATION}/x", headers=nvcf.headers),
        requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={}),
    ):
        assert r.status_code == 202
        assert r.content == b""
        assert "Content-Type" not in r.headers
        assert r.headers["NVCF-STATUS"] == "in-progress"


# -- which calls are the function's ----------------------------------------------------------------


def test_the_buckets_path_on_a_functions_host_is_the_functions(nvcf: Emulator) -> None:
    """On a host that names a function every path is the function's (routes/tlb.rs), the
    emulator's path-style storage prefix (``/<bucket>/...``) too: it reached the upload
    handler and got S3's XML instead of the container's answer."""
    fid, _ = nvcf.add_function(environ_echo, name="echo")
    path = f"/{nvcf.config.bucket}/some/file.txt"
    r = requests.get(f"https://{fid}.{INVOCATION}{path}", headers=nvcf.headers)
    assert r.status_code == 200, r.text
    assert r.json()["target"] == path
    assert nvcf.calls[-1].kind == "control"


def test_a_uuid_named_buckets_host_stays_the_storage_host(tmp_path: Any) -> None:
    """A bucket may be named by a UUID, so its virtual-hosted host starts with one: that host
    is the storage host, not a function's."""
    bucket = str(uuid.uuid4())
    with Emulator(root_dir=tmp_path, bucket=bucket) as emu:
        created = requests.post(
            f"{API}/v2/nvcf/assets",
            headers=emu.headers,
            json={"contentType": "text/plain", "description": "d"},
        ).json()
        assert created["uploadUrl"].startswith(f"https://{bucket}.")
        put = requests.put(
            created["uploadUrl"],
            data=b"x",
            headers={"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "d"},
        )
        assert put.status_code == 200, put.text
        assert emu.calls[-1].kind == "storage"


def test_a_passthrough_call_on_an_admin_path_is_logged_as_a_call(nvcf: Emulator) -> None:
    """``/_emulator/...`` on a function's host is the container's path (the admin API is not
    reachable there, so no DNS-rebinding page gets it through a function's name); the call log
    must not file that call under ``admin``."""
    fid, _ = nvcf.add_function(environ_echo, name="echo")
    r = requests.post(f"https://{fid}.{INVOCATION}/_emulator/reset", headers=nvcf.headers)
    assert r.status_code == 200
    assert r.json()["target"] == "/_emulator/reset"
    call = nvcf.calls[-1]
    assert call.path == "/_emulator/reset"
    assert call.kind == "control"
    assert call.request_id == nvcf.invocations[-1].request_id


# -- polling after a container's own 202 -----------------------------------------------------------


def test_a_containers_202_on_passthrough_is_polled_at_the_inference_url(nvcf: Emulator) -> None:
    """get_pexec.rs builds the status poll's work with ``request_method: GET`` and
    ``request_path: default_path`` (the version's ``inferenceUrl``, GrpcInvocationService.java),
    whatever path the pass-through call had."""
    seen: list[tuple[str, str]] = []

    def container(req: ContainerRequest) -> Any:
        seen.append((req.method, req.path))
        if len(seen) == 1:
            return ContainerResponse(202, b"", [])
        return {"done": True}

    fid, _ = nvcf.add_function(container, name="slow", inference_url="/infer")
    first = requests.post(f"https://{fid}.{INVOCATION}/jobs?id=7", headers=nvcf.headers)
    assert first.status_code == 202
    polled = requests.get(
        f"{API}/v2/nvcf/pexec/status/{first.headers['NVCF-REQID']}",
        headers={**nvcf.headers, "NVCF-POLL-SECONDS": "10"},
    )
    assert polled.status_code == 200
    assert seen == [("POST", "/jobs?id=7"), ("GET", "/infer")]


def test_compatibility_is_off_only_for_the_exact_value_true(nvcf: Emulator) -> None:
    """NVCF's worker compares ``nvcf-feature-disable-worker-compatibility`` with ``== "true"``:
    ``TRUE`` leaves the mapping on, so a container's 500 becomes problem JSON; ``true`` hands
    it back as it is."""
    fid, _ = nvcf.add_function(lambda req: ("boom", 500), name="failing")
    url = f"{API}/v2/nvcf/pexec/functions/{fid}"
    mapped = requests.post(
        url, headers={**nvcf.headers, "nvcf-feature-disable-worker-compatibility": "TRUE"}
    )
    assert mapped.status_code == 500
    assert mapped.headers["Content-Type"].startswith("application/problem+json")
    raw = requests.post(
        url, headers={**nvcf.headers, "nvcf-feature-disable-worker-compatibility": "true"}
    )
    assert raw.status_code == 500
    assert raw.text == "boom"


# -- exec ------------------------------------------------------------------------------------------


def test_exec_a_200_that_is_not_json_keeps_its_request_id(nvcf: Emulator) -> None:
    """The 500 for a result that is not JSON names the request in its detail; its problem
    ``requestId`` and the call log named a fresh random id instead, which matches no
    invocation."""
    fid, _ = nvcf.add_function(lambda req: "plain text", name="text")
    r = requests.post(
        f"{API}/v2/nvcf/exec/functions/{fid}", headers=nvcf.headers, json={"requestBody": {}}
    )
    assert r.status_code == 500
    req_id = nvcf.invocations[-1].request_id
    assert r.json()["requestId"] == req_id
    assert nvcf.calls[-1].request_id == req_id


# -- the host NVCF routes by -----------------------------------------------------------------------


def test_a_proxys_forwarded_host_names_the_function(nvcf: Emulator) -> None:
    """NVCF reads the host with axum-extra's ``Host`` extractor (app.rs): the first
    ``Forwarded`` element's ``host=``, else ``X-Forwarded-Host``, else ``Host``. Behind a
    proxy that keeps the client's host there (nginx ``proxy_set_header X-Forwarded-Host``),
    the function is still found; a forwarded host that names none wins over a Host that
    does."""
    fid, _ = nvcf.add_function(environ_echo, name="echo")
    named = f"{fid}.invocation.gateway.example"
    via_x = requests.get(f"{API}/echo", headers={**nvcf.headers, "X-Forwarded-Host": named})
    assert via_x.status_code == 200, via_x.text
    assert via_x.json()["target"] == "/echo"
    forwarded = f'for=192.0.2.1;host="{named}";proto=https, for=198.51.100.2'
    via_rfc = requests.get(f"{API}/echo", headers={**nvcf.headers, "Forwarded": forwarded})
    assert via_rfc.status_code == 200, via_rfc.text
    assert via_rfc.json()["target"] == "/echo"
    overridden = requests.get(
        f"https://{fid}.{INVOCATION}/echo",
        headers={**nvcf.headers, "X-Forwarded-Host": "api.nvcf.nvidia.com"},
    )
    assert overridden.status_code == 404
    assert overridden.headers["Content-Type"] == "application/problem+json"
    assert len(nvcf.invocations) == 2


# -- the OpenAPI document --------------------------------------------------------------------------


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in _patterns(value)]
    return []


def test_openapi_patterns_use_no_python_only_anchors_or_groups() -> None:
    """JSON Schema's ``pattern`` is an ECMA-262 regular expression. ``\\Z`` is Python's: in
    JavaScript it is an error with the ``u`` flag (ajv's default) and a literal ``Z``
    without it, so a JavaScript validator refused every valid ``inputAssetReferences`` item
    of exec's envelope. The end is still exact (no trailing newline, which Python's ``$``
    lets through and the emulator refuses). Inline ``(?i:...)`` groups, which ECMA-262 also
    lacks, made the function API's ``visibility`` pattern fail to compile there."""
    import re

    from nvcf_emulator.http.openapi import document

    doc = document()
    python_only = re.compile(r"\\[AZz]|\(\?P<|\(\?[aiLmsux]+[:)]")
    assert [p for p in _patterns(doc) if python_only.search(p)] == []
    exec_post = doc["paths"]["/v2/nvcf/exec/functions/{functionId}"]["post"]
    envelope = exec_post["requestBody"]["content"]["application/json"]["schema"]
    items = envelope["properties"]["requestHeader"]["properties"]["inputAssetReferences"]
    item = re.compile(items["items"]["pattern"])
    good = "3f2a5c1e-0b1d-4a5e-9c3f-2a5c1e0b1d4a"
    for valid in (good, good.upper(), good.replace("-", ""), f"{{{good}}}", f"urn:uuid:{good}"):
        assert item.search(valid), valid
    for invalid in (good + "\n", good + "Z", " " + good, good[:-1]):
        assert not item.search(invalid), invalid


def test_openapi_document_says_where_passthrough_calls_go() -> None:
    """Pass-through calls have no path of their own (any method and path of the container's,
    chosen by the host or ``function-id``): a client reading only the document should still
    learn they exist and how they are addressed."""
    from nvcf_emulator.http.openapi import document

    description = document()["info"]["description"]
    assert "<functionId>.invocation." in description
    assert "function-id" in description
    assert "/v2/nvcf/pexec/status/{requestId}" in description


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "EOF while parsing a value at line 1 column 0"),
        (b"hello", "expected value at line 1 column 1"),
        (b"not json", "expected ident at line 1 column 2"),
        (b'\xef\xbb\xbf{"requestBody": 1}', "expected value at line 1 column 1"),
        (b'{"requestBody": 1} x', "trailing characters at line 1 column 20"),
        (b'{"requestBody": 1,}', "trailing comma at line 1 column 19"),
        (b'{"requestBody": [1,]}', "trailing comma at line 1 column 20"),
        (b'{\n  "requestBody": 1,\n}', "trailing comma at line 3 column 1"),
        (b"{'requestBody': 1}", "key must be a string at line 1 column 2"),
        (b'{"requestBody" 1}', "expected `:` at line 1 column 16"),
        (b'{"requestBody": 1 "x": 2}', "expected `,` or `}` at line 1 column 19"),
        (b'{"requestBody": [1 2]}', "expected `,` or `]` at line 1 column 20"),
        (b'{"requestBody": [1', "EOF while parsing a list at line 1 column 18"),
        (b'{"requestBody": [1,', "EOF while parsing a value at line 1 column 19"),
        (b'{"requestBody"', "EOF while parsing an object at line 1 column 14"),
        (b'{"requestBody": ', "EOF while parsing a value at line 1 column 16"),
        (b'{"requestBody": "ab', "EOF while parsing a string at line 1 column 19"),
        (b'{"requestBody": "\xc3\xa9" x}', "expected `,` or `}` at line 1 column 22"),
        (b'{"requestBody": tru}', "expected ident at line 1 column 20"),
        (b'{"requestBody": 01}', "invalid number at line 1 column 18"),
        (b'{"requestBody": 1.}', "invalid number at line 1 column 19"),
        (b'{"requestBody": "\\q"}', "invalid escape at line 1 column 19"),
        (b'{"requestBody": "\\u12"}', "invalid escape at line 1 column 23"),
        (
            b'{"requestBody": "a\x01"}',
            "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 19",
        ),
    ],
)
def test_exec_syntax_errors_are_serdes_words(nvcf: Emulator, data: bytes, reason: str) -> None:
    """README: a body that is not an envelope is a 400 problem "with serde's reason". For
    JSON syntax errors that was Python's wording (``Expecting value``, ``Extra data``) at
    Python's column; serde_json says ``expected value``, ``trailing characters``, ``EOF
    while parsing a list``..., at its line and byte column."""
    fid, _ = nvcf.add_function(lambda req: {}, name="f")
    r = requests.post(
        f"{API}/v2/nvcf/exec/functions/{fid}",
        headers={**nvcf.headers, "Content-Type": "application/json"},
        data=data,
    )
    assert r.status_code == 400
    assert r.json()["detail"] == reason
