"""The S3 storage backend: asset bytes in a bucket (moto, in-process and as a server)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.server import ThreadedMotoServer

from nvcf_emulator import Emulator
from nvcf_emulator.cli import build_parser
from nvcf_emulator.config import EmulatorConfig
from nvcf_emulator.storage.s3 import S3BlobStore, parse_s3_url

MiB = 1024 * 1024
DESC = "x-amz-meta-nvcf-asset-description"
PREFIX = "team/ci"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and nothing from the developer's own AWS configuration."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@dataclass
class Moto:
    """One moto S3 target: in-process (``mock_aws``) or a loopback ``ThreadedMotoServer``."""

    mode: str
    endpoint_url: str | None
    bucket: str = field(default_factory=lambda: f"nvcf-test-{uuid.uuid4().hex[:12]}")

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")

    def emulator(self, **settings: Any) -> Emulator:
        settings.setdefault("s3_create_bucket", True)
        return Emulator(
            storage=f"s3://{self.bucket}/{PREFIX}", s3_endpoint_url=self.endpoint_url, **settings
        )

    def keys(self) -> list[str]:
        s3 = self.client()
        try:
            listed = s3.list_objects_v2(Bucket=self.bucket)
            return [obj["Key"] for obj in listed.get("Contents", ())]
        finally:
            s3.close()

    def pending_uploads(self) -> list[str]:
        s3 = self.client()
        try:
            listed = s3.list_multipart_uploads(Bucket=self.bucket)
            return [u["Key"] for u in listed.get("Uploads", ())]
        finally:
            s3.close()

    def object_bytes(self, key: str) -> bytes:
        s3 = self.client()
        try:
            body: bytes = s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body
        finally:
            s3.close()


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port), stopped when the module's tests end."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        if server._server is not None:
            server._server.server_close()


@pytest.fixture(params=["mock_aws", "moto_server"])
def moto(request: pytest.FixtureRequest) -> Iterator[Moto]:
    if request.param == "mock_aws":
        with mock_aws():
            yield Moto("mock_aws", None)
    else:
        endpoint = request.getfixturevalue("moto_server")
        yield Moto("moto_server", endpoint)
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)  # forget this test's buckets


def _create(emu: Emulator, content_type: str = "application/zip", desc: str = "w") -> Any:
    r = requests.post(
        f"{emu.base_url}/v2/nvcf/assets",
        headers={"Authorization": "Bearer nvapi-x"},
        json={"contentType": content_type, "description": desc},
    )
    assert r.status_code == 200, r.text
    return r.json()


def _put(asset: Any, data: object) -> requests.Response:
    return requests.put(
        asset["uploadUrl"],
        data=data,
        headers={"Content-Type": asset["contentType"], DESC: asset["description"]},
    )


def _chunks(total: int, seed: int = 1, size: int = MiB) -> Iterator[bytes]:
    block = hashlib.sha256(str(seed).encode()).digest() * (size // 32)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


def _payload(total: int, seed: int = 1) -> bytes:
    return b"".join(_chunks(total, seed))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the asset flow, in-process, against moto ----------------------------------------------------


@pytest.mark.parametrize("size", [0, 11, 20 * MiB + 123], ids=["empty", "small", "multipart"])
def test_asset_flow_keeps_bytes_in_the_bucket_under_the_prefix(moto: Moto, size: int) -> None:
    payload = _payload(size)
    with moto.emulator() as emu:
        asset = _create(emu)
        aid = asset["assetId"]
        r = _put(asset, payload)
        assert r.status_code == 200, r.text
        assert r.headers["ETag"] == f'"{hashlib.md5(payload).hexdigest()}"'

        key = f"{PREFIX}/{_nca(emu)}/{aid}"
        assert moto.keys() == [key]
        assert _sha(moto.object_bytes(key)) == _sha(payload)
        assert moto.pending_uploads() == []
        assert _sha(emu.asset_bytes(aid)) == _sha(payload)
        assert emu.asset_path(aid) is None  # not on local disk

        headers = {"Authorization": "Bearer nvapi-x"}
        r = requests.get(f"{emu.base_url}/v2/nvcf/assets/{aid}", headers=headers)
        assert r.status_code == 200
        assert r.json()["asset"]["assetId"] == aid
        listed = requests.get(f"{emu.base_url}/v2/nvcf/assets", headers=headers).json()
        assert [a["assetId"] for a in listed["assets"]] == [aid]

        r = requests.delete(f"{emu.base_url}/v2/nvcf/assets/{aid}", headers=headers)
        assert r.status_code == 204
        assert moto.keys() == []
        r = requests.get(f"{emu.base_url}/v2/nvcf/assets/{aid}", headers=headers)
        assert r.status_code == 404


def _nca(emu: Emulator) -> str:
    (only,) = {a.nca_id for a in emu.stored_assets()}
    return only


def test_emulated_bucket_and_backing_bucket_may_share_a_name() -> None:
    """Under ``mock_aws`` the upload URL's host (``nvcf-assets.s3...amazonaws.com``) belongs to the
    emulator's router, and boto3's calls for the real ``nvcf-assets`` bucket belong to moto."""
    with mock_aws(), Emulator(storage="s3://nvcf-assets", s3_create_bucket=True) as emu:
        asset = _create(emu)
        assert asset["uploadUrl"].startswith("https://nvcf-assets.s3.us-west-2.amazonaws.com/")
        assert _put(asset, b"same name").status_code == 200
        s3 = boto3.client("s3", region_name="us-east-1")
        key = f"{_nca(emu)}/{asset['assetId']}"
        assert s3.get_object(Bucket="nvcf-assets", Key=key)["Body"].read() == b"same name"
        s3.close()


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_too_large_upload_leaves_no_object_and_no_pending_upload(
    moto: Moto, with_length: bool
) -> None:
    limit = 10 * MiB
    with moto.emulator(max_asset_bytes=limit) as emu:
        asset = _create(emu)
        body: object = _payload(limit + 3 * MiB) if with_length else _chunks(limit + 3 * MiB)
        r = _put(asset, body)
        assert r.status_code == 400
        assert "<Code>EntityTooLarge</Code>" in r.text
        assert moto.keys() == []
        assert moto.pending_uploads() == []
        with pytest.raises(KeyError):
            emu.asset_bytes(asset["assetId"])


def test_body_failing_midway_leaves_no_object_and_no_pending_upload(moto: Moto) -> None:
    with moto.emulator() as emu:
        asset = _create(emu)
        assert _put(asset, b"first version").status_code == 200
        (key,) = moto.keys()

        def broken() -> Iterator[bytes]:
            yield from _chunks(20 * MiB)  # two full parts already sent to S3
            raise ConnectionResetError("client went away")

        try:
            r = _put(asset, broken())
        except (ConnectionResetError, requests.ConnectionError):
            pass
        else:
            assert r.status_code >= 400
        # The failed re-upload is gone without a trace; the old object is untouched.
        assert moto.keys() == [key]
        assert moto.object_bytes(key) == b"first version"
        assert moto.pending_uploads() == []
        assert emu.asset_bytes(asset["assetId"]) == b"first version"


def test_reset_clears_the_prefix_only(moto: Moto) -> None:
    with moto.emulator() as emu:
        s3 = moto.client()
        s3.put_object(Bucket=moto.bucket, Key="someone-else/keep.txt", Body=b"keep")
        s3.put_object(Bucket=moto.bucket, Key=f"{PREFIX}-not-a-child/keep.txt", Body=b"keep")
        for i in range(3):
            assert _put(_create(emu), f"asset {i}".encode()).status_code == 200
        assert len(moto.keys()) == 5
        emu.reset()
        assert sorted(moto.keys()) == sorted(
            [f"{PREFIX}-not-a-child/keep.txt", "someone-else/keep.txt"]
        )
        assert emu.stored_assets() == []
        s3.close()


def test_socket_server_streams_uploads_to_s3(moto: Moto) -> None:
    emu = moto.emulator()
    server = emu.serve()
    try:
        r = requests.post(
            f"{server.url}/v2/nvcf/assets",
            headers={"Authorization": "Bearer nvapi-x"},
            json={"contentType": "application/zip", "description": "over-the-wire"},
        )
        asset = r.json()
        assert asset["uploadUrl"].startswith(server.url)
        r = _put(asset, _chunks(17 * MiB, seed=7))  # chunked transfer encoding
        assert r.status_code == 200, r.text
        key = f"{PREFIX}/{_nca(emu)}/{asset['assetId']}"
        assert _sha(moto.object_bytes(key)) == _sha(_payload(17 * MiB, seed=7))
        assert moto.pending_uploads() == []
    finally:
        server.stop()
        emu.close()


# -- the store itself ---------------------------------------------------------------------------


def test_store_open_size_stage_delete(moto: Moto, tmp_path: Path) -> None:
    store = S3BlobStore(moto.bucket, "/a/b/", endpoint_url=moto.endpoint_url, create_bucket=True)
    payload = _payload(9 * MiB + 1, seed=3)
    writer = store.writer("nca/one")
    for chunk in _chunks(len(payload), seed=3):
        writer.write(chunk)
    assert moto.keys() == []  # nothing visible before commit
    writer.commit()
    assert moto.keys() == ["a/b/nca/one"]
    assert store.size("nca/one") == len(payload)
    assert store.size("nca/two") is None
    with store.open("nca/one") as f:
        assert f.read(5) == payload[:5]
        assert f.read() == payload[5:]
    dest = tmp_path / "staged.bin"
    store.stage("nca/one", dest)
    assert _sha(dest.read_bytes()) == _sha(payload)
    with pytest.raises(FileExistsError):
        store.stage("nca/one", dest)
    assert _sha(dest.read_bytes()) == _sha(payload)  # an existing file is left alone
    with pytest.raises(FileNotFoundError):
        store.open("nca/two")
    with pytest.raises(FileNotFoundError):
        store.stage("nca/two", tmp_path / "absent.bin")
    assert not (tmp_path / "absent.bin").exists()
    assert store.local_path("nca/one") is None
    store.delete("nca/one")
    store.delete("nca/one")  # absent keys are ignored
    assert moto.keys() == []


def test_store_abort_keeps_the_old_object(moto: Moto) -> None:
    store = S3BlobStore(moto.bucket, PREFIX, endpoint_url=moto.endpoint_url, create_bucket=True)
    writer = store.writer("k")
    writer.write(b"old")
    writer.commit()
    writer = store.writer("k")
    for chunk in _chunks(18 * MiB):
        writer.write(chunk)
    assert moto.pending_uploads() == [f"{PREFIX}/k"]
    writer.abort()
    writer.abort()  # idempotent
    assert moto.pending_uploads() == []
    assert moto.object_bytes(f"{PREFIX}/k") == b"old"


def test_pending_uploads_are_listed_and_aborted(moto: Moto) -> None:
    store = S3BlobStore(moto.bucket, PREFIX, endpoint_url=moto.endpoint_url, create_bucket=True)
    other = S3BlobStore(moto.bucket, "elsewhere", endpoint_url=moto.endpoint_url)
    assert store.pending_uploads() == []
    left = [store.writer("nca/crashed"), other.writer("nca/theirs")]
    for writer in left:
        for chunk in _chunks(9 * MiB):
            writer.write(chunk)  # one part sent: a multipart upload is now open
    assert store.pending_uploads() == ["nca/crashed"]
    assert store.abort_pending_uploads() == 1
    assert store.pending_uploads() == []
    assert other.pending_uploads() == ["nca/theirs"]
    left[1].abort()
    assert moto.pending_uploads() == []


def test_clear_deletes_more_than_one_page(moto: Moto) -> None:
    store = S3BlobStore(moto.bucket, PREFIX, endpoint_url=moto.endpoint_url, create_bucket=True)
    s3 = moto.client()
    for i in range(1005):
        s3.put_object(Bucket=moto.bucket, Key=f"{PREFIX}/k{i}", Body=b"")
    s3.close()
    store.clear()
    assert moto.keys() == []


def test_missing_bucket_without_create_is_an_error_at_start_naming_it(moto: Moto) -> None:
    with pytest.raises(RuntimeError, match=rf"{moto.bucket}. does not exist.*s3_create_bucket"):
        moto.emulator(s3_create_bucket=False)


# -- streaming: at most one part in memory ----------------------------------------------------


class _CountingClient:
    """Just enough of an S3 client to count calls; part bodies are hashed and dropped."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.digest = hashlib.sha256()
        self.aborted = False
        self.fail_part: int | None = None

    def create_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("create", 0))
        return {"UploadId": "u1"}

    def upload_part(self, *, Body: bytes, PartNumber: int, **kw: Any) -> dict[str, Any]:
        if PartNumber == self.fail_part:
            raise OSError("network down")
        self.calls.append(("part", len(Body)))
        self.digest.update(Body)
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(self, *, MultipartUpload: Any, **kw: Any) -> dict[str, Any]:
        self.calls.append(("complete", len(MultipartUpload["Parts"])))
        return {}

    def abort_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("abort", 0))
        return {}

    def put_object(self, *, Body: bytes, **kw: Any) -> dict[str, Any]:
        self.calls.append(("put", len(Body)))
        self.digest.update(Body)
        return {}


def test_a_64_mib_write_holds_at_most_one_part_in_memory() -> None:
    client = _CountingClient()
    part = 8 * MiB
    store = S3BlobStore("bucket", client=client)  # type: ignore[arg-type]
    expected = hashlib.sha256()
    chunk = os.urandom(MiB)
    tracemalloc.start()
    try:
        writer = store.writer("nca/big")
        for _ in range(64):
            writer.write(chunk)
            expected.update(chunk)
        writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert client.calls == [("create", 0)] + [("part", part)] * 8 + [("complete", 8)]
    assert client.digest.hexdigest() == expected.hexdigest()
    # One part buffered (and handed to boto3 as it is, without a copy), nothing more.
    assert peak < part + 2 * MiB, f"peak {peak / MiB:.1f} MiB for a 64 MiB object"


def test_writes_of_any_size_are_cut_into_exact_parts() -> None:
    client = _CountingClient()
    store = S3BlobStore("bucket", client=client, part_size=5 * MiB)  # type: ignore[arg-type]
    writer = store.writer("k")
    data = os.urandom(23 * MiB + 7)
    writer.write(data[:1])
    writer.write(data[1 : 12 * MiB])  # one write spanning two part boundaries
    writer.write(data[12 * MiB :])
    writer.commit()
    sizes = [n for what, n in client.calls if what == "part"]
    assert sizes == [5 * MiB] * 4 + [3 * MiB + 7]
    assert client.digest.hexdigest() == _sha(data)


def test_small_object_is_one_put_and_no_multipart() -> None:
    client = _CountingClient()
    writer = S3BlobStore("bucket", client=client).writer("k")  # type: ignore[arg-type]
    writer.write(b"tiny")
    writer.commit()
    assert client.calls == [("put", 4)]
    S3BlobStore("bucket", client=client).close()  # type: ignore[arg-type]  # a given client stays open


def test_closing_the_emulator_closes_the_client_it_made(moto: Moto) -> None:
    emu = moto.emulator()
    with emu.activate():
        assert _put(_create(emu), b"x").status_code == 200
    store = emu.store
    assert isinstance(store, S3BlobStore)
    closed: list[bool] = []
    real_close = store.client.close
    store.client.close = lambda: (closed.append(True), real_close())[1]  # type: ignore[method-assign]
    emu.close()
    emu.close()
    assert closed == [True]


def test_a_failed_part_aborts_the_upload() -> None:
    client = _CountingClient()
    client.fail_part = 2
    writer = S3BlobStore("bucket", client=client, part_size=5 * MiB).writer("k")  # type: ignore[arg-type]
    with pytest.raises(OSError, match="network down"):
        for chunk in _chunks(12 * MiB):
            writer.write(chunk)
    writer.abort()
    assert client.calls == [("create", 0), ("part", 5 * MiB), ("abort", 0)]
    with pytest.raises(ValueError):
        writer.write(b"more")


# -- configuration ------------------------------------------------------------------------------


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bkt") == ("bkt", "")
    assert parse_s3_url("s3://bkt/a/b/") == ("bkt", "a/b")
    for bad in ("gs://bkt/x", "s3:///x", "bkt/x", "s3://bkt/x?versionId=1"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)


def test_other_storage_schemes_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"s3://bucket\[/prefix\]"):
        Emulator(storage="file:///tmp/x")
    with pytest.raises(ValueError, match="expected an s3://"):
        Emulator(storage="s3://")
    assert EmulatorConfig.parse({"storage": "s3://b/p", "s3_create_bucket": "yes"}) == {
        "storage": "s3://b/p",
        "s3_create_bucket": True,
    }


def test_part_size_below_s3_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3BlobStore("bucket", client=_CountingClient(), part_size=MiB)  # type: ignore[arg-type]


def test_cli_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(
        ["--storage", "s3://b/p", "--s3-endpoint-url", "http://127.0.0.1:9", "--s3-create-bucket"]
    )
    assert (args.storage, args.s3_endpoint_url, args.s3_create_bucket) == (
        "s3://b/p",
        "http://127.0.0.1:9",
        True,
    )
    monkeypatch.setenv("NVCF_EMULATOR_STORAGE", "s3://env-bucket/x")
    monkeypatch.setenv("NVCF_EMULATOR_S3_ENDPOINT_URL", "http://127.0.0.1:8")
    monkeypatch.setenv("NVCF_EMULATOR_S3_CREATE_BUCKET", "1")
    args = build_parser().parse_args([])
    assert (args.storage, args.s3_endpoint_url, args.s3_create_bucket) == (
        "s3://env-bucket/x",
        "http://127.0.0.1:8",
        True,
    )
    help_text = build_parser().format_help()
    for flag in ("--storage", "--s3-endpoint-url", "--s3-create-bucket"):
        assert flag in help_text


def test_cli_server_stores_assets_in_moto_server(moto_server: str) -> None:
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    exe = str(Path(sys.executable).with_name("nvcf-emulate"))
    proc = subprocess.Popen(
        [exe, "--port", "0", "--storage", f"s3://{bucket}/cli", "--s3-create-bucket"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "NVCF_EMULATOR_S3_ENDPOINT_URL": moto_server},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        asset = requests.post(
            f"{url}/v2/nvcf/assets",
            headers={"Authorization": "Bearer nvapi-x"},
            json={"contentType": "text/plain", "description": "cli"},
        ).json()
        assert _put(asset, b"from the CLI").status_code == 200
        s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
        listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
        assert [o["Key"].endswith(asset["assetId"]) for o in listed] == [True]
        got = s3.get_object(Bucket=bucket, Key=listed[0]["Key"])["Body"].read()
        assert got == b"from the CLI"
        assert listed[0]["Key"].startswith("cli/")
        s3.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0


def test_cli_rejects_other_schemes() -> None:
    exe = str(Path(sys.executable).with_name("nvcf-emulate"))
    result = subprocess.run(
        [exe, "--port", "0", "--storage", "gs://bucket/x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "s3://bucket[/prefix]" in result.stderr


def test_missing_s3_endpoint_is_a_clear_cli_error(tmp_path: Path) -> None:
    # Port 9 on loopback: nothing listens there, so creating the bucket fails at start.
    exe = str(Path(sys.executable).with_name("nvcf-emulate"))
    result = subprocess.run(
        [exe, "--port", "0", "--storage", "s3://bucket-x/p", "--s3-create-bucket"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "NVCF_EMULATOR_S3_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_MAX_ATTEMPTS": "1",
        },
    )
    assert result.returncode == 1
    assert "cannot start" in result.stderr


def test_client_error_codes_are_not_found_for_head() -> None:
    err = ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
    from nvcf_emulator.storage.s3 import _is_not_found

    assert _is_not_found(err)
