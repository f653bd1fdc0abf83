"""Uploads take fast paths (a hashing thread, kernel copies) that must not change what a user
sees: the bytes stored, the ETag, the errors for short or oversized bodies, and no leftovers."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from werkzeug.exceptions import ClientDisconnected

import nvcf_emulator.http.storage as http_storage
from nvcf_emulator import Emulator
from nvcf_emulator.storage.local import LocalBlobStore

from .conftest import Api

DESC = "x-amz-meta-nvcf-asset-description"
MiB = 1024 * 1024
#: More than the upload loop's 1 MiB chunk and not a multiple of it: several chunks, a ragged end.
PAYLOAD = os.urandom(3 * MiB + 12345)


def _md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _local_only(emu: Emulator) -> None:
    if not isinstance(emu.store, LocalBlobStore):
        pytest.skip("kernel fast paths exist only for the local store")


def _hashers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nvcf-upload-md5"]


def _old_bytes_kept(emu: Emulator, old: dict[str, Any]) -> None:
    """The failed upload changed nothing: the asset keeps its bytes, no temp file is left."""
    assert emu.asset_bytes(old["assetId"]) == b"old bytes"
    assert emu.store.pending_uploads() == []


def _file(tmp_path: Path, data: bytes = PAYLOAD) -> Path:
    path = tmp_path / "body.bin"
    path.write_bytes(data)
    return path


def _spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[tuple[Any, ...]]:
    """Record the calls of ``owner.name`` (still calling it)."""
    calls: list[tuple[Any, ...]] = []
    real: Callable[..., Any] = getattr(owner, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def _failing(exc: OSError) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


# -- MD5 ETags over many chunks ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "file", "chunked"])
def test_md5_etag_of_a_multi_chunk_body_is_right(api: Api, tmp_path: Path, kind: str) -> None:
    asset = api.create_asset()
    body: Any = {
        "bytes": PAYLOAD,
        "file": None,
        "chunked": iter([PAYLOAD[:100], PAYLOAD[100 : 2 * MiB], PAYLOAD[2 * MiB :]]),
    }[kind]
    if kind == "file":
        with open(_file(tmp_path), "rb") as f:
            r = api.upload(asset, f)
    else:
        r = api.upload(asset, body)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == _md5_etag(PAYLOAD)
    assert api.emulator.asset_bytes(asset["assetId"]) == PAYLOAD
    assert _hashers() == []  # the hashing thread is joined before the answer


def test_short_body_with_md5_gives_incomplete_body_and_leaves_nothing(nvcf_server: Any) -> None:
    api = Api("server", nvcf_server.url, nvcf_server.emulator)
    old = api.new_asset(b"old bytes")
    reply = _raw_put(old, declared=5 * MiB, sent=PAYLOAD)
    assert b" 400 " in reply.split(b"\r\n", 1)[0]
    assert b"<Code>IncompleteBody</Code>" in reply
    _old_bytes_kept(api.emulator, old)
    assert _hashers() == []


#: The kernel copy these tests spy on or break (Linux; macOS and Windows have none).
needs_copy_file_range = pytest.mark.skipif(
    not hasattr(os, "copy_file_range"), reason="os.copy_file_range is Linux-only"
)


# -- in-process: a file body is copied by the kernel -----------------------------------------------


@needs_copy_file_range
@pytest.mark.nvcf(upload_etag="opaque")
def test_file_body_in_process_is_copied_by_the_kernel(
    nvcf: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _local_only(nvcf)
    calls = _spy(monkeypatch, os, "copy_file_range")
    api = Api("inprocess", nvcf.base_url, nvcf)
    asset = api.create_asset()
    with open(_file(tmp_path), "rb") as f:
        f.read(1000)  # requests sends from the current position; so must the copy
        r = api.upload(asset, f)
        assert f.tell() == len(PAYLOAD)  # left where reading the body would leave it
    assert r.status_code == 200, r.text
    assert calls, "the kernel copy was not used"
    assert nvcf.asset_bytes(asset["assetId"]) == PAYLOAD[1000:]


@needs_copy_file_range
def test_file_body_in_process_with_md5_is_copied_and_hashed(
    nvcf: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _local_only(nvcf)
    calls = _spy(monkeypatch, os, "copy_file_range")
    api = Api("inprocess", nvcf.base_url, nvcf)
    asset = api.create_asset()
    with open(_file(tmp_path), "rb") as f:
        r = api.upload(asset, f)
    assert r.status_code == 200, r.text
    assert calls
    assert r.headers["ETag"] == _md5_etag(PAYLOAD)


@needs_copy_file_range
@pytest.mark.nvcf(upload_etag="opaque")
def test_without_copy_file_range_the_body_is_still_stored(
    nvcf: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _local_only(nvcf)
    monkeypatch.setattr(os, "copy_file_range", _failing(OSError(errno.EXDEV, "cross-device")))
    monkeypatch.setattr(os, "sendfile", _failing(OSError(errno.EINVAL, "not here")))
    api = Api("inprocess", nvcf.base_url, nvcf)
    asset = api.create_asset()
    with open(_file(tmp_path), "rb") as f:
        r = api.upload(asset, f)
    assert r.status_code == 200, r.text
    assert nvcf.asset_bytes(asset["assetId"]) == PAYLOAD


class _LongerThanItIs(io.FileIO):
    """A file that tells ``requests`` it has 1000 more bytes than it has."""

    def __len__(self) -> int:
        return os.fstat(self.fileno()).st_size + 1000


@needs_copy_file_range
@pytest.mark.parametrize("etag", ["opaque", "md5"])
def test_file_shorter_than_its_length_is_incomplete_body(
    nvcf: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, etag: str
) -> None:
    _local_only(nvcf)
    nvcf.reset(upload_etag=etag)
    calls = _spy(monkeypatch, os, "copy_file_range")
    api = Api("inprocess", nvcf.base_url, nvcf)
    old = api.new_asset(b"old bytes")
    with _LongerThanItIs(_file(tmp_path), "rb") as f:
        r = api.upload(old, f)
    assert r.request.headers["Content-Length"] == str(len(PAYLOAD) + 1000)
    assert calls
    assert r.status_code == 400
    assert "<Code>IncompleteBody</Code>" in r.text
    _old_bytes_kept(nvcf, old)
    assert _hashers() == []


@needs_copy_file_range
@pytest.mark.nvcf(upload_etag="opaque")
def test_full_disk_during_a_kernel_copy_is_507_and_keeps_the_old_bytes(
    nvcf: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _local_only(nvcf)
    api = Api("inprocess", nvcf.base_url, nvcf)
    old = api.new_asset(b"old bytes")
    monkeypatch.setattr(os, "copy_file_range", _failing(OSError(errno.ENOSPC, "disk full")))
    with open(_file(tmp_path), "rb") as f:
        r = api.upload(old, f)
    assert r.status_code == 507
    assert "<Code>InsufficientStorage</Code>" in r.text
    _old_bytes_kept(nvcf, old)


@needs_copy_file_range
@pytest.mark.nvcf(upload_etag="opaque")
def test_unreadable_file_during_a_kernel_copy_fails_like_a_read(
    nvcf: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _local_only(nvcf)
    api = Api("inprocess", nvcf.base_url, nvcf)
    old = api.new_asset(b"old bytes")
    monkeypatch.setattr(os, "copy_file_range", _failing(OSError(errno.EIO, "bad sector")))
    with open(_file(tmp_path), "rb") as f, pytest.raises(requests.ConnectionError):
        api.upload(old, f)
    _old_bytes_kept(nvcf, old)


class _Counting:
    """A body of unknown length (sent chunked) that counts the bytes read from it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.read_so_far = 0

    def read(self, size: int = -1) -> bytes:
        n = min(size if size >= 0 else self.total, self.total - self.read_so_far)
        self.read_so_far += n
        return b"c" * n


@pytest.mark.nvcf(max_asset_bytes=3 * MiB + 5)
def test_body_without_length_is_refused_one_byte_past_the_limit(nvcf: Emulator) -> None:
    api = Api("inprocess", nvcf.base_url, nvcf)
    asset = api.create_asset()
    body = _Counting(10 * MiB)
    r = api.upload(asset, body)
    assert "Content-Length" not in r.request.headers
    assert r.status_code == 400
    assert "<Code>EntityTooLarge</Code>" in r.text
    assert body.read_so_far == 3 * MiB + 6
    assert nvcf.asset_path(asset["assetId"]) is None
    assert nvcf.store.pending_uploads() == []


# -- server mode: socket -> file with splice -------------------------------------------------------


def _raw_put(asset: dict[str, Any], declared: int, sent: bytes) -> bytes:
    """PUT with ``Content-Length: declared`` but only ``sent`` bytes, then close our side."""
    url = urlsplit(asset["uploadUrl"])
    head = (
        f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: {asset['contentType']}\r\n{DESC}: {asset['description']}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head)
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def _splicing(nvcf_server: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    _local_only(nvcf_server.emulator)
    if http_storage._splice is None:
        pytest.skip("no os.splice on this platform")
    return _spy(monkeypatch, http_storage, "_splice")


@pytest.mark.nvcf(upload_etag="opaque")
def test_server_body_is_spliced_and_the_connection_serves_on(
    nvcf_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _splicing(nvcf_server, monkeypatch)
    nvcf_server.idle_timeout = 5.0  # a connection left deaf to small reads would fail, not hang
    api = Api("server", nvcf_server.url, nvcf_server.emulator)
    with requests.Session() as session:
        for data in (PAYLOAD, PAYLOAD[::-1]):
            asset = api.create_asset()
            r = session.put(
                asset["uploadUrl"],
                data=data,
                headers={"Content-Type": asset["contentType"], DESC: asset["description"]},
            )
            assert r.status_code == 200, r.text
            assert api.emulator.asset_bytes(asset["assetId"]) == data
        # The same keep-alive connection answers a small request after the big bodies.
        listed = session.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
        assert listed.status_code == 200
    assert calls, "the body was not spliced"


def test_server_body_with_md5_is_spliced_and_hashed(
    nvcf_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _splicing(nvcf_server, monkeypatch)
    api = Api("server", nvcf_server.url, nvcf_server.emulator)
    asset = api.create_asset()
    r = api.upload(asset, PAYLOAD)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == _md5_etag(PAYLOAD)
    assert calls


@pytest.mark.nvcf(upload_etag="opaque")
def test_server_short_body_is_incomplete_body_after_splicing(
    nvcf_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _splicing(nvcf_server, monkeypatch)
    api = Api("server", nvcf_server.url, nvcf_server.emulator)
    old = api.new_asset(b"old bytes")
    reply = _raw_put(old, declared=len(PAYLOAD) + 1, sent=PAYLOAD)
    assert b" 400 " in reply.split(b"\r\n", 1)[0]
    assert b"<Code>IncompleteBody</Code>" in reply
    assert calls
    _old_bytes_kept(api.emulator, old)


@pytest.mark.nvcf(upload_etag="opaque")
def test_server_without_splice_reads_the_body(
    nvcf_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _local_only(nvcf_server.emulator)
    monkeypatch.setattr(http_storage, "_splice", _failing(OSError(errno.EINVAL, "no splice")))
    api = Api("server", nvcf_server.url, nvcf_server.emulator)
    asset = api.create_asset()
    r = api.upload(asset, PAYLOAD)
    assert r.status_code == 200, r.text
    assert api.emulator.asset_bytes(asset["assetId"]) == PAYLOAD


@pytest.mark.nvcf(upload_etag="opaque")
def test_server_full_disk_while_splicing_is_507(
    nvcf_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _splicing(nvcf_server, monkeypatch)
    real = http_storage._splice
    assert real is not None

    def splice(src: int, dst: int, count: int, **kwargs: Any) -> int:
        if os.path.exists(f"/proc/self/fd/{dst}") and "upload-" in os.readlink(
            f"/proc/self/fd/{dst}"
        ):
            raise OSError(errno.ENOSPC, "disk full")
        return int(real(src, dst, count, **kwargs))

    monkeypatch.setattr(http_storage, "_splice", splice)
    api = Api("server", nvcf_server.url, nvcf_server.emulator)
    old = api.new_asset(b"old bytes")
    r = api.upload(old, PAYLOAD)
    assert r.status_code == 507
    assert "<Code>InsufficientStorage</Code>" in r.text
    _old_bytes_kept(api.emulator, old)


def test_a_stalled_spliced_body_times_out_and_the_socket_wakes_on_any_byte_again(
    tmp_path: Path,
) -> None:
    """The splicer waits for a good amount of body at once (SO_RCVLOWAT); whatever happens,
    the connection is left as it was, so the next request's few bytes are seen."""
    if http_storage._splice is None:
        pytest.skip("no os.splice on this platform")
    server, client = socket.socketpair()
    with server, client, open(tmp_path / "out", "wb") as out:
        server.settimeout(0.2)
        rfile = server.makefile("rb")
        client.sendall(b"x" * 1000)
        splicer = http_storage._SocketSplicer(server, rfile)
        body = http_storage._SizedBody(rfile, 1000 + MiB, splicer)
        moved = body.transfer_to(out.fileno(), 1000 + MiB)  # what was buffered
        assert moved == 1000
        with pytest.raises(ClientDisconnected):  # the rest never comes
            body.transfer_to(out.fileno(), MiB)
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) > 1
        splicer.close()
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        client.sendall(b"GET / HTTP/1.1\r\n")
        assert rfile.readline() == b"GET / HTTP/1.1\r\n"
