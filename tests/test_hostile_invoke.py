"""Hostile input on the invoke path: asset references, stalled clients; and properties of the
NVCF-INPUT-ASSET-REFERENCES parser."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest

from .conftest import Api


def list_files(req: ContainerRequest) -> dict[str, object]:
    return {"ids": req.asset_ids, "files": sorted(p.name for p in req.asset_dir.iterdir())}


def test_duplicate_references_stage_once_and_pass_through_in_order(api: Api) -> None:
    fn = api.emulator.add_function(list_files, name="files")
    a, b = api.new_asset(b"a")["assetId"], api.new_asset(b"b")["assetId"]
    r = requests.post(
        f"{api.base_url}/v2/nvcf/pexec/functions/{fn.function_id}",
        json={},
        headers={**api.headers, "NVCF-INPUT-ASSET-REFERENCES": f"{a}, {b} ,{a},,"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["files"] == sorted({a, b})
    assert r.json()["ids"][:2] == [a, b]


def test_the_header_sent_twice_counts_as_one_joined_list(api: Api) -> None:
    fn = api.emulator.add_function(list_files, name="files")
    a, b = api.new_asset(b"a")["assetId"], api.new_asset(b"b")["assetId"]
    url = f"{api.base_url}/v2/nvcf/pexec/functions/{fn.function_id}"
    headers = [*api.headers.items(), ("NVCF-INPUT-ASSET-REFERENCES", a)]
    headers.append(("NVCF-INPUT-ASSET-REFERENCES", b))
    if api.mode == "server":  # a raw request: requests cannot repeat a header
        host, port = url.split("//")[1].split("/")[0].split(":")
        lines = [f"POST /{url.split('/', 3)[3]} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines += ["Content-Length: 2", "Connection: close", "", "{}"]  # read to EOF
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall("\r\n".join(lines).encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:300]
        assert b'"ids"' in body and a.encode() in body and b.encode() in body
    else:  # in-process: the environ joins repeats as a server does
        from werkzeug.test import Client

        client = Client(api.emulator.app)
        r = client.post(url, headers=headers, json={})
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.get_json()["ids"] == [a, b]


def test_too_many_references_is_a_4xx_not_a_crash(api: Api) -> None:
    """NVCF's parser sets no count limit (input_asset_header.rs): the header size does. Past the
    emulator's 64 KiB of headers the call is 431; just under it, every id is checked (404)."""
    fn = api.emulator.add_function(list_files, name="files")
    url = f"{api.base_url}/v2/nvcf/pexec/functions/{fn.function_id}"
    many = ",".join(str(uuid.uuid4()) for _ in range(2000))  # ~74 KB
    r = requests.post(url, json={}, headers={**api.headers, "NVCF-INPUT-ASSET-REFERENCES": many})
    assert r.status_code == 431
    some = ",".join(str(uuid.uuid4()) for _ in range(1000))  # ~37 KB
    r = requests.post(url, json={}, headers={**api.headers, "NVCF-INPUT-ASSET-REFERENCES": some})
    assert r.status_code == 404
    assert "failed to find asset" in r.json()["detail"]
    assert api.emulator.invocations == []  # the container was never called


@pytest.mark.parametrize("bad", ["not-a-uuid", "../../etc/passwd", "%00", "\u2024\u2024"])
def test_malformed_references_are_400(api: Api, bad: str) -> None:
    fn = api.emulator.add_function(list_files, name="files")
    r = requests.post(
        f"{api.base_url}/v2/nvcf/pexec/functions/{fn.function_id}",
        json={},
        headers={
            **api.headers,
            "NVCF-INPUT-ASSET-REFERENCES": bad.encode("utf-8").decode("latin-1"),
        },
    )
    assert r.status_code == 400
    assert api.emulator.invocations == []


def test_a_client_that_stalls_after_headers_is_cut_off_and_frees_its_thread() -> None:
    emu = Emulator()
    server = emu.serve()
    server.idle_timeout = 0.3
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST /v2/nvcf/assets HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
            )
            sock.settimeout(10)
            started = time.monotonic()
            data = b"".join(iter(lambda: sock.recv(4096), b""))  # the server closes it
            waited = time.monotonic() - started
        assert waited < 5
        assert server.busy_connections == 0
        # ...and the server goes on serving everyone else.
        assert requests.get(f"{server.url}/_emulator/health").status_code == 200
        del data
    finally:
        server.stop()
        emu.close()


def _parse(value: str) -> list[str]:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from nvcf_emulator.http.pexec import asset_references

    environ = EnvironBuilder().get_environ()
    environ["HTTP_NVCF_INPUT_ASSET_REFERENCES"] = value  # raw, as a server would hand it over
    return asset_references(Request(environ))


ids = st.uuids().map(str)
space = st.sampled_from(["", " ", "  ", "\t"])


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    items=st.lists(st.tuples(space, ids, space), min_size=1, max_size=8),
    empties=st.integers(min_value=0, max_value=3),
)
def test_reference_parser_trims_and_skips_empty_items(
    items: list[tuple[str, str, str]], empties: int
) -> None:
    header = ",".join(f"{a}{i}{b}" for a, i, b in items) + "," * empties
    assert _parse(header) == [i for _, i, _ in items]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=80))
def test_reference_parser_answers_ids_or_refuses_never_crashes(text: str) -> None:
    from nvcf_emulator.http.pexec import InvalidAssetHeader

    try:
        parsed = _parse(text)
    except InvalidAssetHeader:
        return
    assert len(parsed) == len([t for t in text.split(",") if t.strip()])
    assert all(str(uuid.UUID(i)) == i for i in parsed)


def test_containers_answering_garbage_get_nvcf_errors_and_others_keep_working(
    nvcf: Emulator,
) -> None:
    import threading

    # A "container" on loopback that answers every connection with bytes that are not HTTP.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x00\xffthis is not HTTP\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        garbage_url = nvcf.add_function(
            f"http://127.0.0.1:{port}/infer", name="garbage-url", wait=False
        )
        nvcf.set_function_status(garbage_url.function_id, garbage_url.version_id, "ACTIVE")
        unserialisable = nvcf.add_function(lambda req: object(), name="garbage-object")
        healthy = nvcf.add_function(lambda req: {"ok": True}, name="healthy")
        base = f"{nvcf.base_url}/v2/nvcf/pexec/functions"
        for fn in (garbage_url, unserialisable):
            r = requests.post(f"{base}/{fn.function_id}", json={}, headers=nvcf.headers)
            assert r.status_code == 500, r.text
            assert r.headers["Content-Type"] == "application/problem+json"
            assert r.headers["NVCF-STATUS"] == "errored"
        r = requests.post(f"{base}/{healthy.function_id}", json={}, headers=nvcf.headers)
        assert (r.status_code, r.json()) == (200, {"ok": True})
    finally:
        stop.set()
        thread.join(5)
        listener.close()
