"""Server-mode keep-alive against hostile or unusual HTTP/1.1 clients: pipelining with bodies,
odd framing, rejected and stalled bodies, streamed answers, faults, stopping and running out of
connections. Every response must be framed correctly, the next request must be parsed from the
right byte, nothing may hang, and no thread may be left behind."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from nvcf_emulator import Emulator, EmulatorServer
from nvcf_emulator.connection import DRAIN_LIMIT

from .conftest import Api, EventStream

DESC = "x-amz-meta-nvcf-asset-description"
TIMEOUT = 5.0


# -- a strict HTTP/1.1 response reader -----------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before this one

    @property
    def closes(self) -> bool:
        return "close" in self.headers.get("connection", "").lower()


class Client:
    """One raw TCP connection: send bytes, read responses framed exactly as RFC 9112 says."""

    def __init__(self, srv: EmulatorServer, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection((srv.host, srv.port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def _line(self) -> bytes:
        line = self.file.readline(65537)
        if not line:
            raise EOFError("connection closed")
        return line

    def read(self, method: str = "GET") -> Reply:
        interim: list[int] = []
        while True:
            status_line = self._line()
            assert status_line.startswith(b"HTTP/1.1 "), status_line
            status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while (line := self._line()) not in (b"\r\n", b"\n"):
                name, _, value = line.decode("latin-1").partition(":")
                key = name.strip().lower()
                assert key not in headers or key == "set-cookie", f"duplicate {key}"
                headers[key] = value.strip()
            if 100 <= status < 200:
                interim.append(status)
                continue
            break
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", ""):
            assert "content-length" not in headers
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line() not in (b"\r\n", b"\n"):
                        pass
                    break
                parts.append(self.file.read(size))
                assert self._line() == b"\r\n"
            body = b"".join(parts)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body = self.file.read(n)
            assert len(body) == n, "response shorter than its Content-Length"
        else:
            assert "close" in headers.get("connection", ""), "unframed body on a kept connection"
            body = self.file.read()
        return Reply(status, headers, body, interim)

    def closed_by_server(self, within: float = 3.0) -> bool:
        """True when the server closes this connection (EOF, or a reset) within ``within`` s,
        having sent nothing more."""
        self.sock.settimeout(within)
        try:
            extra = self.file.read(1)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(TIMEOUT)
        assert extra == b"", f"unexpected bytes after the last response: {extra!r}"
        return True


def req(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: bool = True,
) -> bytes:
    headers = headers or {}
    lines = [f"{method} {path} HTTP/1.1"]
    if "Host" not in headers:
        lines.append("Host: 127.0.0.1")
    for k, v in headers.items():
        lines.append(f"{k}: {v}")
    if length and (body or method in ("POST", "PUT")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(data: bytes, size: int = 1000, last: bytes = b"0\r\n\r\n") -> bytes:
    out = b"".join(
        b"%x\r\n%b\r\n" % (len(data[i : i + size]), data[i : i + size])
        for i in range(0, len(data), size)
    )
    return out + last


HEALTH = req("GET", "/_emulator/health")


# -- fixtures and helpers ------------------------------------------------------------------------


_others: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _only_this_tests_threads() -> None:
    """Handler threads still running from other tests' servers (an xdist worker runs many
    modules) are not this test's: :func:`_handler_threads` leaves them out."""
    _others.clear()
    _others.update(t for t in threading.enumerate() if "process_request_thread" in t.name)


def _handler_threads() -> list[threading.Thread]:
    """The request handler threads of servers this test started."""
    return [
        t for t in threading.enumerate() if "process_request_thread" in t.name and t not in _others
    ]


def _wait_for(cond: Callable[[], bool], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    emu = Emulator()
    srv = emu.serve()
    srv.idle_timeout = TIMEOUT
    try:
        yield srv
    finally:
        srv.stop(grace=1.0)
        emu.close()
        assert _wait_for(lambda: not _handler_threads()), _handler_threads()


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[Client]:
    c = Client(server)
    try:
        yield c
    finally:
        c.close()


def _auth(srv: EmulatorServer) -> dict[str, str]:
    return {"Authorization": srv.headers["Authorization"]}


def _json_auth(srv: EmulatorServer) -> dict[str, str]:
    return {**_auth(srv), "Content-Type": "application/json"}


def _create_body() -> bytes:
    return json.dumps({"contentType": "image/png", "description": "red-cat-photo"}).encode()


def _upload_target(srv: EmulatorServer) -> tuple[str, dict[str, str], str]:
    """A fresh asset: (its upload path with query, the headers to send, its id)."""
    asset = Api("server", srv.url, srv.emulator).create_asset()
    url = urlsplit(asset["uploadUrl"])
    headers = {"Host": url.netloc, "Content-Type": asset["contentType"]}
    headers[DESC] = asset["description"]
    return f"{url.path}?{url.query}", headers, asset["assetId"]


def _stored(srv: EmulatorServer, asset_id: str) -> bytes | None:
    try:
        return srv.emulator.asset_bytes(asset_id)
    except Exception:
        return None


# -- pipelining with bodies ----------------------------------------------------------------------


def test_pipelined_content_length_bodies(server: EmulatorServer, client: Client) -> None:
    create = req("POST", "/v2/nvcf/assets", _create_body(), _json_auth(server))
    client.send(create + create + req("GET", "/v2/nvcf/assets", headers=_auth(server)))
    replies = [client.read() for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 200]
    assert not any(r.closes for r in replies)
    ids = {json.loads(r.body)["assetId"] for r in replies[:2]}
    assert len(ids) == 2 and all(server.emulator.assets.find(i) for i in ids)


def test_pipelined_chunked_bodies(server: EmulatorServer, client: Client) -> None:
    head = req(
        "POST",
        "/v2/nvcf/assets",
        headers={
            **_auth(server),
            "Transfer-Encoding": "chunked",
            "Content-Type": "application/json",
        },
        length=False,
    )
    create = head + chunked(_create_body(), size=7)
    client.send(create + create + req("GET", "/v2/nvcf/assets", headers=_auth(server)))
    replies = [client.read() for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 200]
    ids = {json.loads(r.body)["assetId"] for r in replies[:2]}
    assert len(ids) == 2 and all(server.emulator.assets.find(i) for i in ids)


def test_pipelined_uploads_of_both_framings_store_exact_bytes(
    server: EmulatorServer, client: Client
) -> None:
    (p1, h1, a1), (p2, h2, a2) = _upload_target(server), _upload_target(server)
    d1, d2 = os.urandom(20_000), os.urandom(30_001)
    wire = req("PUT", p1, d1, h1)
    wire += req("PUT", p2, headers={**h2, "Transfer-Encoding": "chunked"}, length=False)
    wire += chunked(d2, size=4096) + HEALTH
    client.send(wire)
    assert [client.read().status for _ in range(3)] == [200, 200, 200]
    assert (_stored(server, a1), _stored(server, a2)) == (d1, d2)


@pytest.mark.parametrize("size", [300 * 1024, 3 * 1024 * 1024 + 13])
def test_spliced_upload_with_the_next_requests_in_the_same_send(
    server: EmulatorServer, client: Client, size: int
) -> None:
    path, headers, asset_id = _upload_target(server)
    path2, headers2, asset_id2 = _upload_target(server)
    data, data2 = os.urandom(size), os.urandom(size // 3)
    client.send(req("PUT", path, data, headers) + req("PUT", path2, data2, headers2) + HEALTH)
    assert [client.read().status for _ in range(3)] == [200, 200, 200]
    assert _stored(server, asset_id) == data
    assert _stored(server, asset_id2) == data2


def test_spliced_upload_split_mid_body_with_a_request_behind(
    server: EmulatorServer, client: Client
) -> None:
    """The reader's buffer holds part of the body, the socket the rest and the next request."""
    path, headers, asset_id = _upload_target(server)
    data = os.urandom(700 * 1024)
    wire = req("PUT", path, data, headers) + HEALTH
    split = wire.index(data) + 3000
    client.send(wire[:split])
    time.sleep(0.05)  # let the server read the head and the first bytes (not a state wait)
    client.send(wire[split:])
    assert [client.read().status for _ in range(2)] == [200, 200]
    assert _stored(server, asset_id) == data


# -- chunked oddities ----------------------------------------------------------------------------


def test_chunked_upload_with_a_trailer_then_another_request(
    server: EmulatorServer, client: Client
) -> None:
    path, headers, asset_id = _upload_target(server)
    data = os.urandom(5000)
    body = chunked(data, last=b"0\r\nX-Checksum: abc\r\n\r\n")
    head = req("PUT", path, headers={**headers, "Transfer-Encoding": "chunked"}, length=False)
    client.send(head + body + HEALTH)
    first = client.read()
    assert first.status == 200, first.body
    assert _stored(server, asset_id) == data
    assert client.read().status == 200


def test_a_trailer_never_becomes_a_request(server: EmulatorServer, client: Client) -> None:
    """Weaker guard for the above: whatever the answer, the trailer is not answered as a request
    (with werkzeug's dechunker, the second answer was a 400 'Bad request syntax')."""
    path, headers, _ = _upload_target(server)
    body = chunked(b"abc", last=b"0\r\nX-Checksum: abc\r\n\r\n")
    head = req("PUT", path, headers={**headers, "Transfer-Encoding": "chunked"}, length=False)
    client.send(head + body + HEALTH)
    first = client.read()
    if first.closes:
        assert client.closed_by_server()
    else:
        second = client.read()
        assert second.status == 200, second.body


def test_chunk_extensions_are_ignored(server: EmulatorServer, client: Client) -> None:
    path, headers, asset_id = _upload_target(server)
    body = b"5;name=value\r\nhello\r\n0;done\r\n\r\n"
    head = req("PUT", path, headers={**headers, "Transfer-Encoding": "chunked"}, length=False)
    client.send(head + body + HEALTH)
    assert client.read().status == 200
    assert _stored(server, asset_id) == b"hello"
    assert client.read().status == 200


@pytest.mark.parametrize("bad", [b"zz\r\nhello\r\n", b"5\r\nhelloXX0\r\n\r\n", b"-5\r\n"])
def test_a_malformed_chunked_body_closes_the_connection(
    server: EmulatorServer, client: Client, bad: bytes
) -> None:
    path, headers, asset_id = _upload_target(server)
    head = req("PUT", path, headers={**headers, "Transfer-Encoding": "chunked"}, length=False)
    client.send(head + bad + HEALTH)
    reply = client.read()
    assert reply.status >= 400 and reply.closes
    assert client.closed_by_server()
    assert _stored(server, asset_id) is None


def test_an_unread_chunked_body_closes_the_connection(
    server: EmulatorServer, client: Client
) -> None:
    head = req("POST", "/_emulator/health", headers={"Transfer-Encoding": "chunked"}, length=False)
    client.send(head + chunked(b"x" * 5000) + HEALTH)
    reply = client.read()
    assert reply.status == 405 and reply.closes
    assert client.closed_by_server()


# -- bodies the app rejects early ----------------------------------------------------------------


def test_upload_with_a_bad_signature_then_another_request(
    server: EmulatorServer, client: Client
) -> None:
    path, headers, asset_id = _upload_target(server)
    bad = path.replace("Signature=", "Signature=0")
    data = os.urandom(200_000)
    client.send(req("PUT", bad, data, headers) + HEALTH)
    first, second = client.read(), client.read()
    assert first.status == 403 and b"SignatureDoesNotMatch" in first.body
    assert not first.closes and second.status == 200
    assert _stored(server, asset_id) is None


def test_upload_with_the_wrong_content_type_then_another_request(
    server: EmulatorServer, client: Client
) -> None:
    path, headers, asset_id = _upload_target(server)
    data = os.urandom(300_000)  # > the splice threshold: rejected before a byte is read
    client.send(req("PUT", path, data, {**headers, "Content-Type": "text/evil"}) + HEALTH)
    first, second = client.read(), client.read()
    assert first.status == 400 and not first.closes
    assert second.status == 200
    assert _stored(server, asset_id) is None


def test_expect_100_continue_then_a_rejected_upload(server: EmulatorServer, client: Client) -> None:
    """A refused upload is answered before the client sends its body (no 100 Continue), and
    the connection closes: the server cannot know whether the body will follow."""
    path, headers, asset_id = _upload_target(server)
    bad = path.replace("Signature=", "Signature=0")
    data = os.urandom(100_000)
    wire = req("PUT", bad, data, {**headers, "Expect": "100-continue"})
    client.send(wire[: -len(data)])  # the head only: the client waits for 100 Continue
    reply = client.read()
    assert reply.status == 403 and not reply.interim and reply.closes
    assert client.closed_by_server()
    assert _stored(server, asset_id) is None


def test_expect_100_continue_on_an_accepted_upload(server: EmulatorServer, client: Client) -> None:
    path, headers, asset_id = _upload_target(server)
    data = os.urandom(100_000)
    wire = req("PUT", path, data, {**headers, "Expect": "100-continue"})
    client.send(wire[: -len(data)])
    assert client._line().startswith(b"HTTP/1.1 100")  # asked for the body once it is read
    assert client._line() == b"\r\n"
    client.send(data + HEALTH)
    first = client.read()
    assert first.status == 200 and not first.closes
    assert client.read().status == 200
    assert _stored(server, asset_id) == data


def test_expect_100_continue_without_a_body_gets_no_interim_response(
    server: EmulatorServer, client: Client
) -> None:
    client.send(req("POST", "/_emulator/health", headers={"Expect": "100-continue"}, length=False))
    reply = client.read()
    assert reply.status == 405 and not reply.interim and not reply.closes
    client.send(HEALTH)
    assert client.read().status == 200


def test_a_large_rejected_body_closes_after_the_answer(
    server: EmulatorServer, client: Client
) -> None:
    path, headers, _ = _upload_target(server)
    bad = path.replace("Signature=", "Signature=0")
    data = b"y" * (DRAIN_LIMIT + 10)
    client.send(req("PUT", bad, data, headers))
    reply = client.read()
    assert reply.status == 403 and reply.closes
    assert client.closed_by_server()


# -- Content-Length and Transfer-Encoding framing ------------------------------------------------


@pytest.mark.parametrize("target", ["create", "invoke", "upload"])
def test_a_broken_chunked_body_is_a_400_that_says_why(
    server: EmulatorServer, client: Client, target: str
) -> None:
    """Bad chunk framing is the client's error, on every route: never a 500."""
    emu = server.emulator
    headers = {**_auth(server), "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    path, asset_id = "/v2/nvcf/assets", None
    if target == "invoke":
        path = f"/v2/nvcf/pexec/functions/{emu.add_function(lambda r: {}, name='f').function_id}"
    elif target == "upload":
        path, upload_headers, asset_id = _upload_target(server)
        headers = {**upload_headers, "Transfer-Encoding": "chunked"}
    client.send(req("POST" if target != "upload" else "PUT", path, headers=headers, length=False))
    client.send(b"5\r\nhello\r\nZZ\r\n")
    reply = client.read()
    assert reply.status == 400 and reply.closes
    if target == "upload":
        assert b"<Code>IncompleteBody</Code>" in reply.body
        assert _stored(server, asset_id or "") is None
    else:
        assert b"invalid chunk size line" in reply.body
    assert client.closed_by_server()


@pytest.mark.parametrize("value", ["abc", "0x10", "5, 6", "-5", "+5", "1_0"])
def test_a_content_length_that_is_not_one_number_closes_the_connection(
    server: EmulatorServer, client: Client, value: str
) -> None:
    """RFC 9112 6.3: an invalid Content-Length is an unrecoverable framing error: the answer
    closes the connection, so that no byte after it is taken for a request."""
    client.send(req("POST", "/_emulator/health", headers={"Content-Length": value}, length=False))
    reply = client.read()
    assert reply.closes
    assert client.closed_by_server()


def test_conflicting_content_lengths_close_the_connection(
    server: EmulatorServer, client: Client
) -> None:
    wire = b"POST /_emulator/health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    wire += b"Content-Length: 0\r\n\r\nhello"
    client.send(wire + HEALTH)
    reply = client.read()
    assert reply.closes
    assert client.closed_by_server()


def test_content_length_and_transfer_encoding_together_close(
    server: EmulatorServer, client: Client
) -> None:
    victim = Api("server", server.url, server.emulator).new_asset(b"keep me")["assetId"]
    path, headers, _ = _upload_target(server)
    smuggled = req("DELETE", f"/v2/nvcf/assets/{victim}", headers=_auth(server))
    body = chunked(b"hello") + smuggled  # a Content-Length reader sees one request
    headers = {**headers, "Transfer-Encoding": "chunked", "Content-Length": str(len(body))}
    client.send(req("PUT", path, headers=headers, length=False) + body)
    reply = client.read()
    assert reply.status in (200, 400)
    if not reply.closes:
        smuggled_reply = client.read()  # it was: 204, and the victim's bytes were gone
        pytest.fail(f"the smuggled DELETE was served: {smuggled_reply.status}")
    assert client.closed_by_server()
    assert _stored(server, victim) == b"keep me"


def test_http_1_0_with_transfer_encoding_closes(server: EmulatorServer, client: Client) -> None:
    head = (
        b"POST /v2/nvcf/assets HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\nAuthorization: "
        + _auth(server)["Authorization"].encode()
        + b"\r\n\r\n"
    )
    client.send(head + chunked(_create_body()))
    reply = client.read()
    assert reply.closes
    assert client.closed_by_server()


@pytest.mark.parametrize("coding", ["gzip", "identity", "chunked, gzip"])
def test_a_transfer_encoding_other_than_chunked_closes(
    server: EmulatorServer, client: Client, coding: str
) -> None:
    victim = Api("server", server.url, server.emulator).new_asset(b"keep me")["assetId"]
    body = req("DELETE", f"/v2/nvcf/assets/{victim}", headers=_auth(server))
    if coding != "chunked, gzip":
        head = req("POST", "/_emulator/health", headers={"Transfer-Encoding": coding}, length=False)
    else:  # werkzeug dechunks anyway; RFC: chunked not last is a 400
        head = req(
            "POST", "/v2/nvcf/assets", headers={**_auth(server), "Transfer-Encoding": coding}
        )
        body = chunked(_create_body()) + body
    client.send(head + body)
    reply = client.read()
    if not reply.closes:
        pytest.fail(f"kept alive; the body came back as a request: {client.read().status}")
    assert client.closed_by_server()
    assert _stored(server, victim) == b"keep me"


def test_transfer_encoding_in_capitals_is_still_chunked(
    server: EmulatorServer, client: Client
) -> None:
    path, headers, asset_id = _upload_target(server)
    head = req("PUT", path, headers={**headers, "Transfer-Encoding": "Chunked"}, length=False)
    client.send(head + chunked(b"hello world", size=3) + HEALTH)
    assert client.read().status == 200
    assert client.read().status == 200
    assert _stored(server, asset_id) == b"hello world"


def test_connection_close_in_a_list_is_honoured(server: EmulatorServer, client: Client) -> None:
    client.send(req("GET", "/_emulator/health", headers={"Connection": "TE, close", "TE": "x"}))
    reply = client.read()
    assert reply.closes
    assert client.closed_by_server(within=3.0)


def test_a_request_after_connection_close_is_not_served(
    server: EmulatorServer, client: Client
) -> None:
    first = req("GET", "/_emulator/health", headers={"Connection": "close"})
    client.send(first + req("POST", "/v2/nvcf/assets", _create_body(), _json_auth(server)))
    assert client.read().status == 200
    assert client.closed_by_server()
    assert [c.method for c in server.emulator.calls] == ["GET"]  # the POST was not run


# -- stalled clients -----------------------------------------------------------------------------


def test_half_a_body_then_silence(server: EmulatorServer) -> None:
    server.idle_timeout = 0.3
    path, headers, asset_id = _upload_target(server)
    c = Client(server)
    try:
        c.send(req("PUT", path, b"x" * 1000, headers)[:-500])
        reply = c.read()
        assert reply.status == 400 and b"IncompleteBody" in reply.body
        assert c.closed_by_server()
    finally:
        c.close()
    assert _stored(server, asset_id) is None
    assert _wait_for(lambda: server.busy_connections == 0)


def test_half_a_chunked_body_then_silence(server: EmulatorServer) -> None:
    server.idle_timeout = 0.3
    path, headers, asset_id = _upload_target(server)
    c = Client(server)
    try:
        head = req("PUT", path, headers={**headers, "Transfer-Encoding": "chunked"}, length=False)
        c.send(head + b"100\r\nabc")
        reply = c.read()
        assert reply.status >= 400 and reply.closes
        assert c.closed_by_server()
    finally:
        c.close()
    assert _stored(server, asset_id) is None


def test_half_a_request_head_then_silence(server: EmulatorServer) -> None:
    server.idle_timeout = 0.3
    c = Client(server)
    try:
        c.send(b"GET /_emulator/health HTTP/1.1\r\nHost: x\r\n")
        assert c.closed_by_server()
    finally:
        c.close()
    assert _wait_for(lambda: server.busy_connections == 0)


def test_an_idle_connection_is_closed_after_the_idle_timeout(server: EmulatorServer) -> None:
    server.idle_timeout = 0.3
    c = Client(server)
    try:
        c.send(HEALTH)
        assert c.read().status == 200
        assert c.closed_by_server(within=3.0)
    finally:
        c.close()


# -- bodyless answers and streams ----------------------------------------------------------------


def test_head_then_get_on_one_connection(server: EmulatorServer, client: Client) -> None:
    auth = _auth(server)
    client.send(req("HEAD", "/v2/nvcf/assets", headers=auth) + HEALTH)
    head = client.read("HEAD")
    assert head.status == 200 and int(head.headers["content-length"]) > 0
    assert client.read().status == 200


def test_204_then_another_request(server: EmulatorServer, client: Client) -> None:
    asset_id = Api("server", server.url, server.emulator).new_asset()["assetId"]
    client.send(req("DELETE", f"/v2/nvcf/assets/{asset_id}", headers=_auth(server)) + HEALTH)
    first = client.read()
    assert first.status == 204 and "transfer-encoding" not in first.headers
    assert client.read().status == 200


def test_event_stream_then_another_request(server: EmulatorServer, client: Client) -> None:
    sse = EventStream()
    sse.go.set()  # both events at once
    fid, _ = server.emulator.add_function(sse.app(), name="sse", inference_url="/stream")
    headers = {**_auth(server), "Accept": "text/event-stream", "Content-Type": "application/json"}
    invoke = req("POST", f"/v2/nvcf/pexec/functions/{fid}", b'{"prompt":"go"}', headers)
    client.send(invoke + invoke + HEALTH)
    for _ in range(2):
        reply = client.read()
        assert reply.status == 200 and not reply.closes
        assert reply.body == b"data: first\n\ndata: second\n\n"
    assert client.read().status == 200


# -- faults, stopping, running out of connections ------------------------------------------------


def test_a_drop_fault_on_a_kept_alive_connection(server: EmulatorServer, client: Client) -> None:
    auth = _auth(server)
    client.send(req("GET", "/v2/nvcf/assets", headers=auth))
    assert client.read().status == 200
    server.emulator.faults.add("list", drop=True)
    client.send(req("GET", "/v2/nvcf/assets", headers=auth) + HEALTH)
    assert client.closed_by_server()  # nothing at all: not a 500, not the pipelined health
    again = Client(server)
    try:
        again.send(req("GET", "/v2/nvcf/assets", headers=auth))
        assert again.read().status == 200
    finally:
        again.close()
    assert _wait_for(lambda: server.busy_connections == 0)


def test_a_drop_fault_on_an_upload_with_its_body_in_flight(
    server: EmulatorServer, client: Client
) -> None:
    path, headers, asset_id = _upload_target(server)
    server.emulator.faults.add("upload", drop=True)
    client.send(req("PUT", path, os.urandom(500_000), headers)[:-100_000])
    assert client.closed_by_server()
    assert _stored(server, asset_id) is None
    assert _wait_for(lambda: server.busy_connections == 0)


def _start(max_connections: int = 64) -> tuple[Emulator, EmulatorServer]:
    emu = Emulator()
    srv = EmulatorServer(emu, max_connections=max_connections).start()
    srv.idle_timeout = TIMEOUT
    return emu, srv


def test_stop_with_idle_connections_is_quick_and_leaves_no_threads() -> None:
    emu, srv = _start()
    clients = [Client(srv) for _ in range(4)]
    try:
        for c in clients:
            c.send(HEALTH)
            assert c.read().status == 200
        assert _wait_for(lambda: len(_handler_threads()) == 4)
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 3.0  # not the 5 s idle timeout
        assert all(c.closed_by_server(within=3.0) for c in clients)
        assert _wait_for(lambda: not _handler_threads(), 1.0)
    finally:
        for c in clients:
            c.close()
        srv.stop()
        emu.close()


def test_stop_lets_a_request_mid_body_finish_within_the_grace() -> None:
    emu, srv = _start()
    c = Client(srv)
    try:
        wire = req("POST", "/v2/nvcf/assets", _create_body(), _json_auth(srv))
        c.send(wire[:-10])
        assert _wait_for(lambda: srv.busy_connections == 1)
        stopper = threading.Thread(target=srv.stop, kwargs={"grace": 4.0})
        stopper.start()
        time.sleep(0.2)  # stop() is now waiting for the request in flight
        c.send(wire[-10:])
        reply = c.read()
        assert reply.status == 200 and json.loads(reply.body)["assetId"]
        stopper.join(5)
        assert not stopper.is_alive()
        assert c.closed_by_server(within=3.0)
        assert _wait_for(lambda: not _handler_threads(), 1.0)
    finally:
        c.close()
        srv.stop()
        emu.close()


def test_stop_with_a_stalled_request_past_the_grace() -> None:
    emu, srv = _start()
    c = Client(srv)
    try:
        path, headers, asset_id = _upload_target(srv)
        c.send(req("PUT", path, os.urandom(400_000), headers)[:-1000])
        assert _wait_for(lambda: srv.busy_connections == 1)
        started = time.monotonic()
        srv.stop(grace=0.3)
        assert time.monotonic() - started < 3.0
        assert _wait_for(lambda: not _handler_threads(), 1.0)
        assert _stored(srv, asset_id) is None
    finally:
        c.close()
        srv.stop()
        emu.close()


def test_many_idle_connections_each_newcomer_is_served() -> None:
    emu, srv = _start(max_connections=2)
    clients: list[Client] = []
    try:
        for _ in range(6):
            c = Client(srv, timeout=3.0)  # an idle holder's 5 s timeout must not be waited for
            clients.append(c)
            c.send(HEALTH)
            assert c.read().status == 200
            assert len(_handler_threads()) <= 2
    finally:
        for c in clients:
            c.close()
        srv.stop()
        emu.close()
    assert _wait_for(lambda: not _handler_threads())


def test_a_newcomer_is_served_when_the_busy_holder_goes_idle() -> None:
    emu, srv = _start(max_connections=1)
    holder = Client(srv)
    newcomer: Client | None = None
    try:
        wire = req("POST", "/v2/nvcf/assets", _create_body(), _json_auth(srv))
        holder.send(wire[:-5])  # busy: mid-body
        assert _wait_for(lambda: srv.busy_connections == 1)
        newcomer = Client(srv, timeout=3.0)
        newcomer.send(HEALTH)  # accepted by the kernel; the server waits for a slot
        time.sleep(0.2)
        holder.send(wire[-5:])
        assert holder.read().status == 200  # the holder is now idle, keeping its slot
        assert newcomer.read().status == 200  # within 3 s, not after the 5 s idle timeout
    finally:
        holder.close()
        if newcomer is not None:
            newcomer.close()
        srv.stop()
        emu.close()


def test_an_app_error_before_the_body_is_read_is_answered_promptly(
    server: EmulatorServer, client: Client
) -> None:
    def boom(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        raise RuntimeError("boom")  # on the first next(): inside execute's try
        yield b""

    server._server.app = boom
    body = b"z" * (4 * DRAIN_LIMIT)
    client.sock.settimeout(3.0)  # not the 5 s idle timeout that a wait for the body would end in
    client.send(req("POST", "/_emulator/health", body)[: -2 * DRAIN_LIMIT])  # half, then waits
    reply = client.read()
    assert reply.status == 500 and reply.closes


@pytest.mark.parametrize("lazy", [False, True])
def test_an_app_error_with_a_small_unread_body_closes(
    server: EmulatorServer, client: Client, lazy: bool
) -> None:
    def boom(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("boom")

    def lazy_boom(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        raise RuntimeError("boom")
        yield b""

    server._server.app = lazy_boom if lazy else boom
    client.send(req("POST", "/_emulator/health", b"z" * 1000) + HEALTH)
    reply = client.read()
    assert reply.status == 500 and reply.closes
    assert client.closed_by_server()


def test_a_response_shorter_than_its_content_length_closes(
    server: EmulatorServer, client: Client
) -> None:
    def short(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "10")])
        return [b"12345"]

    server._server.app = short
    client.send(HEALTH + HEALTH)
    head = client.file.read(1024)  # all the server sends: the head and 5 bytes, then EOF
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n12345")
    assert client.closed_by_server()


def test_a_response_longer_than_its_content_length_is_not_overrun(
    server: EmulatorServer, client: Client
) -> None:
    def long(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "5")])
        return [b"12345", b"HTTP/1.1 299 Forged\r\nContent-Length: 0\r\n\r\n"]

    server._server.app = long
    client.send(HEALTH + HEALTH)
    assert client.read().body == b"12345"
    try:
        second = client.read()
    except EOFError:
        return  # closed after the overrun: fine
    assert second.status != 299, "the overrun bytes were read as the next response"


# -- more odd clients ----------------------------------------------------------------------------


def test_a_half_closed_client_still_gets_its_answers(
    server: EmulatorServer, client: Client
) -> None:
    client.send(HEALTH + HEALTH)
    client.sock.shutdown(socket.SHUT_WR)
    assert [client.read().status for _ in range(2)] == [200, 200]
    assert client.closed_by_server()


def test_garbage_after_a_good_request_closes(server: EmulatorServer, client: Client) -> None:
    client.send(HEALTH + b"\x16\x03\x01\x02\x00 NOT HTTP AT ALL\r\n\r\n" + HEALTH)
    assert client.read().status == 200
    # http.server answers a request line it cannot parse as HTTP/0.9 would: a bare HTML 400
    # without a status line. Whatever it is, the connection ends and the next GET is not served.
    rest = client.file.read()
    assert b"400" in rest and b"HTTP/1.1 200" not in rest
    assert _wait_for(lambda: server.busy_connections == 0)


def test_an_oversized_header_line_closes(server: EmulatorServer, client: Client) -> None:
    client.send(HEALTH + req("GET", "/_emulator/health", headers={"X-Big": "a" * 70_000}))
    assert client.read().status == 200
    reply = client.read()
    assert reply.status == 431 and reply.closes
    assert client.closed_by_server()


def test_stop_while_a_newcomer_waits_for_a_slot() -> None:
    emu, srv = _start(max_connections=1)
    holder = Client(srv)
    newcomer: Client | None = None
    try:
        wire = req("POST", "/v2/nvcf/assets", _create_body(), _json_auth(srv))
        holder.send(wire[:-5])
        assert _wait_for(lambda: srv.busy_connections == 1)
        newcomer = Client(srv)
        newcomer.send(HEALTH)  # the accept loop now waits for the holder's slot
        started = time.monotonic()
        srv.stop(grace=0.3)
        assert time.monotonic() - started < 3.0
        assert newcomer.closed_by_server(within=3.0)
        assert _wait_for(lambda: not _handler_threads(), 1.0)
    finally:
        holder.close()
        if newcomer is not None:
            newcomer.close()
        srv.stop()
        emu.close()


def test_a_burst_of_fresh_connections_loses_no_request() -> None:
    emu, srv = _start(max_connections=2)
    lost: list[bytes] = []
    try:
        deadline = time.monotonic() + 4.0
        rounds = 0
        while not lost and rounds < 300 and time.monotonic() < deadline:
            rounds += 1
            burst = [Client(srv) for _ in range(4)]
            try:
                for c in burst:
                    c.send(req("GET", "/_emulator/health", headers={"Connection": "close"}))
                for c in burst:
                    try:
                        first = c.file.read(12)
                    except ConnectionResetError:
                        first = b"<reset>"
                    if first != b"HTTP/1.1 200":
                        lost.append(first)
            finally:
                for c in burst:
                    c.close()
        assert not lost, f"{len(lost)} fresh requests got no answer in {rounds} bursts"
    finally:
        srv.stop()
        emu.close()
