"""Server mode keeps HTTP/1.1 connections alive: what a client on one connection sees after
bodies read, left unread, chunked or spliced, and when the server runs out of connections."""

from __future__ import annotations

import http.client
import os
import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from nvcf_emulator import Emulator, EmulatorServer
from nvcf_emulator.connection import DRAIN_LIMIT

from .conftest import Api

DESC = "x-amz-meta-nvcf-asset-description"


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    emu = Emulator()
    srv = emu.serve()
    srv.idle_timeout = 5.0  # a test that got the framing wrong fails instead of hanging
    yield srv
    srv.stop()
    emu.close()


def _conn(srv: EmulatorServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(srv.host, srv.port, timeout=5)


def _send(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes, int]:
    """One request; (response, body, the client's local port it went out on)."""
    conn.request(method, path, body=body, headers=headers or {})
    assert conn.sock is not None
    port = conn.sock.getsockname()[1]
    response = conn.getresponse()
    return response, response.read(), port


def _list(srv: EmulatorServer, conn: http.client.HTTPConnection) -> int:
    response, data, port = _send(conn, "GET", "/v2/nvcf/assets", headers=srv.headers)
    assert (response.status, data) == (200, b'{"assets":[]}')
    assert response.getheader("Connection") is None
    return port


def test_requests_share_one_connection(server: EmulatorServer) -> None:
    conn = _conn(server)
    try:
        ports = {_list(server, conn) for _ in range(5)}
    finally:
        conn.close()
    assert len(ports) == 1


def test_an_unread_body_is_skipped_and_the_connection_serves_on(server: EmulatorServer) -> None:
    conn = _conn(server)
    try:
        # The health route takes no POST: the app answers 405 without reading the body.
        response, _, first = _send(conn, "POST", "/_emulator/health", body=b"x" * 100_000)
        assert response.status == 405
        assert response.getheader("Connection") is None
        assert _list(server, conn) == first  # the body's bytes were not read as a request
    finally:
        conn.close()


def test_a_large_unread_body_closes_the_connection_after_the_answer(
    server: EmulatorServer,
) -> None:
    conn = _conn(server)
    try:
        body = b"x" * (DRAIN_LIMIT + 1)
        response, data, _ = _send(conn, "POST", "/_emulator/health", body=body)
        assert response.status == 405 and b"not allowed" in data.lower()
        assert response.getheader("Connection") == "close"
        _list(server, conn)  # http.client opens a new connection, as any client does
    finally:
        conn.close()


def test_http_1_0_clients_get_their_connection_closed(server: EmulatorServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /_emulator/health HTTP/1.0\r\nHost: x\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))  # ends: the server closed
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nConnection: close" in head
    assert b"Transfer-Encoding" not in head and body


def test_pipelined_requests_are_answered_in_order(server: EmulatorServer) -> None:
    auth = server.headers["Authorization"]
    one = f"GET /v2/nvcf/assets HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    unknown = "00000000-0000-4000-8000-000000000000"
    last = f"GET /v2/nvcf/assets/{unknown} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    last += f"Authorization: {auth}\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall((one + one + last).encode())
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)  # a body runs into the next head
    assert statuses == [b"200", b"200", b"404"]


def test_chunked_and_spliced_uploads_leave_the_connection_clean(server: EmulatorServer) -> None:
    api = Api("server", server.url, server.emulator)
    conn = _conn(server)
    try:
        payloads = [os.urandom(3 * 1024 * 1024 + 7), os.urandom(5000)]
        for data, chunked in [(payloads[0], False), (payloads[1], True)]:
            asset = api.create_asset()
            url = urlsplit(asset["uploadUrl"])
            headers = {"Content-Type": asset["contentType"], DESC: asset["description"]}
            body: Any = iter([data[:1000], data[1000:]]) if chunked else data
            response, _, port = _send(conn, "PUT", f"{url.path}?{url.query}", body, headers)
            assert response.status == 200
            assert response.getheader("Connection") is None
            assert server.emulator.asset_bytes(asset["assetId"]) == data
            assert _list_after_upload(server, conn) == port
    finally:
        conn.close()


def _list_after_upload(srv: EmulatorServer, conn: http.client.HTTPConnection) -> int:
    response, _, port = _send(conn, "GET", "/_emulator/health")
    assert response.status == 200 and response.getheader("Connection") is None
    return port


def test_the_server_turns_off_nagle_on_its_connections(server: EmulatorServer) -> None:
    """Without TCP_NODELAY a response's last small write waits for the client's delayed ACK:
    40 ms per request on a kept-alive connection."""
    conn = _conn(server)
    try:
        _list(server, conn)
        served = list(server._server._conns)
        assert served
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in served)
    finally:
        conn.close()


def test_idle_connections_give_way_when_all_are_taken() -> None:
    emu = Emulator()
    srv = EmulatorServer(emu, max_connections=2).start()
    idle = [_conn(srv), _conn(srv)]
    newcomer = _conn(srv)
    try:
        for conn in idle:
            _list(srv, conn)  # both connections stay open, idle, holding the two slots
        newcomer.timeout = 3.0  # without the rule it waits for the 30 s idle timeout
        _list(srv, newcomer)
        for conn in idle:  # the clients whose idle connection was closed reconnect
            conn.close()
            _list(srv, conn)
    finally:
        for conn in [*idle, newcomer]:
            conn.close()
        srv.stop()
        emu.close()
