"""Asset bytes in an S3-compatible bucket (AWS S3, MinIO, moto), streamed through boto3.

Needs the ``s3`` extra (``pip install 'nvcf-emulator[s3]'``); boto3 is imported only when an
:class:`S3BlobStore` is made without a client, so the package works without it.

Keys map to ``<prefix>/<key>``. A write is an S3 multipart upload: bytes are buffered one part
at a time (``part_size``, 8 MiB by default), each full part is sent as it fills, and the object
appears only when :meth:`_S3Writer.commit` completes the upload; :meth:`_S3Writer.abort` aborts
it, so a failed or cut-off upload never leaves a partial object (nor a pending upload). Objects
smaller than one part are sent with a single ``PutObject`` at commit.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MiB = 1024 * 1024
#: Default part size. S3 wants every part but the last to be at least 5 MiB.
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB
#: S3 allows at most this many parts per upload.
MAX_PARTS = 10_000
_READ_CHUNK = MiB
#: S3's DeleteObjects takes at most 1,000 keys a request.
_DELETE_BATCH = 1000
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``; ``ValueError`` otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"expected an s3://bucket[/prefix] URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"an s3:// storage URL takes no query or fragment: {url!r}")
    return parts.netloc, parts.path.strip("/")


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _is_not_found(exc: Exception) -> bool:
    return _error_code(exc) in _NOT_FOUND


class _S3Writer:
    """One upload in progress: a multipart upload, started when the first part fills."""

    __slots__ = (
        "_bucket",
        "_buf",
        "_client",
        "_done",
        "_key",
        "_part_size",
        "_parts",
        "_upload_id",
    )

    def __init__(self, client: S3Client, bucket: str, key: str, part_size: int) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._done = False

    def fileno(self) -> None:
        return None

    def write(self, data: ReadableBuffer) -> None:
        if self._done:
            raise ValueError("write to a finished upload")
        view = memoryview(data).cast("B")
        while len(view):
            room = self._part_size - len(self._buf)
            self._buf += view[:room]
            view = view[room:]
            if len(self._buf) >= self._part_size:
                self._send_part()

    def _send_part(self) -> None:
        if len(self._parts) >= MAX_PARTS:
            raise ValueError(f"an S3 upload has at most {MAX_PARTS} parts; raise part_size")
        if self._upload_id is None:
            created = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ChecksumAlgorithm="CRC32"
            )
            self._upload_id = created["UploadId"]
        # The buffer itself is the body (botocore takes a bytearray, no copy); a new buffer
        # starts, and this one is never written again, so at most one part is held at a time.
        body, self._buf = self._buf, bytearray()
        number = len(self._parts) + 1
        sent = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,  # type: ignore[arg-type]  # botocore takes bytearray; the stubs miss it
            ChecksumAlgorithm="CRC32",
        )
        part: CompletedPartTypeDef = {"ETag": sent["ETag"], "PartNumber": number}
        if sent.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = sent["ChecksumCRC32"]
        self._parts.append(part)

    def commit(self) -> None:
        if self._done:
            raise ValueError("commit of a finished upload")
        if self._upload_id is None:
            body, self._buf = self._buf, bytearray()
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=body)  # type: ignore[arg-type]
            self._done = True
            return
        if self._buf:
            self._send_part()
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None
        self._done = True

    def abort(self) -> None:
        """Abort the multipart upload (if one was started); the key keeps its old object."""
        self._buf = bytearray()
        if self._done:
            return
        self._done = True
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=upload_id
            )
        except Exception as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise


class _BodyRaw(io.RawIOBase):
    """A botocore ``StreamingBody`` as a raw stream, to wrap in an ``io.BufferedReader``."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3BlobStore:
    """Objects at ``s3://<bucket>/<prefix>/<key>``.

    ``client`` is any boto3 S3 client; without one, a client is made from the usual AWS
    configuration (environment variables, profiles, ...), with ``endpoint_url`` (MinIO,
    ``moto_server``, ...) and ``region_name`` if given. ``create_bucket`` makes the bucket when
    it does not exist yet (handy with moto). :meth:`clear` deletes every object under the
    prefix, so an empty prefix means a bucket of its own.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: S3Client | None = None,
        endpoint_url: str | None = None,
        *,
        region_name: str | None = None,
        create_bucket: bool = False,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 storage needs a bucket name")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self._own_client = client is None
        self.client: S3Client = (
            client if client is not None else _make_client(endpoint_url, region_name)
        )
        if create_bucket:
            self.ensure_bucket()
        elif self._own_client:
            self.check_bucket(endpoint_url)

    def check_bucket(self, endpoint_url: str | None = None) -> None:
        """The bucket exists and answers, else a RuntimeError naming it (at start-up, rather
        than a bare InternalError on every upload)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            where = endpoint_url or "AWS"
            if _is_not_found(exc):
                raise RuntimeError(
                    f"S3 bucket {self.bucket!r} does not exist at {where}: create it, or pass "
                    "s3_create_bucket=True (--s3-create-bucket)"
                ) from None
            raise RuntimeError(f"cannot use S3 bucket {self.bucket!r} at {where}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3BlobStore:
        """A store for ``s3://bucket[/prefix]``; ``options`` as for the constructor."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, **options)

    def __repr__(self) -> str:
        return f"S3BlobStore('s3://{self.bucket}/{self.prefix}')"

    def close(self) -> None:
        """Close the connections of the client this store made (a given client stays open)."""
        if self._own_client:
            self._own_client = False
            self.client.close()

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            if not _is_not_found(exc):
                raise
        region = self.client.meta.region_name
        try:
            if region and region != "us-east-1":
                self.client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
            else:
                self.client.create_bucket(Bucket=self.bucket)
        except Exception as exc:
            if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def object_key(self, key: str) -> str:
        """The S3 key of ``key``: ``<prefix>/<key>``."""
        if not key or key.startswith("/"):
            raise ValueError(f"invalid object key: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- BlobStore --------------------------------------------------------------------------

    def writer(self, key: str) -> _S3Writer:
        return _S3Writer(self.client, self.bucket, self.object_key(key), self.part_size)

    def open(self, key: str) -> BinaryIO:
        """A streaming, read-only (not seekable) file over the object."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as exc:
            if _is_not_found(exc):
                raise FileNotFoundError(f"no object for {key!r} in {self!r}") from None
            raise
        return _open_body(got["Body"])

    def size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise
        return head["ContentLength"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def stage(self, key: str, dest: Path) -> None:
        """Download the object to ``dest`` (which must not exist), in chunks."""
        with self.open(key) as src:
            out = open(dest, "xb")  # noqa: SIM115 - closed below, and removed on failure
            try:
                with out:
                    shutil.copyfileobj(src, out, _READ_CHUNK)
            except BaseException:
                Path(dest).unlink(missing_ok=True)
                raise

    def local_path(self, key: str) -> Path | None:
        return None

    def sizes(self) -> dict[str, int]:
        """Every object under the prefix (keys without it) and its size: one request per 1,000
        keys, where :meth:`size` is one per key (a restart reconciles thousands of records)."""
        paginator = self.client.get_paginator("list_objects_v2")
        return {
            self._relative(obj["Key"]): obj["Size"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._list_prefix())
            for obj in page.get("Contents", ())
        }

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete these objects: one DeleteObjects request per 1,000 keys."""
        batch: list[str] = []
        for key in keys:
            batch.append(self.object_key(key))
            if len(batch) == _DELETE_BATCH:
                self._delete_objects(batch)
                batch = []
        if batch:
            self._delete_objects(batch)

    def clear(self) -> None:
        """Delete every object under the prefix (the whole bucket when the prefix is empty),
        other emulators' too: the emulator's reset deletes only its own (:meth:`delete_many`)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._list_prefix()):
            keys = [obj["Key"] for obj in page.get("Contents", ())]
            if keys:
                self._delete_objects(keys)

    def _delete_objects(self, s3_keys: list[str]) -> None:
        deleted = self.client.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in s3_keys], "Quiet": True},
        )
        errors = deleted.get("Errors")
        if errors:
            first = errors[0]
            raise OSError(
                f"could not delete {len(errors)} object(s) from {self!r}, e.g. "
                f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
            )

    # -- multipart uploads in flight ------------------------------------------------------

    def pending_uploads(self) -> list[str]:
        """Keys (without the prefix) of multipart uploads started under the prefix and neither
        completed nor aborted: uploads in progress, or left by a process that was killed."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._list_prefix()):
            keys.extend(self._relative(u["Key"]) for u in page.get("Uploads", ()))
        return keys

    def abort_pending_uploads(self) -> int:
        """Abort every multipart upload under the prefix (e.g. at start-up, after a crash);
        returns how many. Uploads in progress in this or another process fail on commit."""
        return self.abort_uploads(None)

    def abort_uploads(self, keys: set[str] | None) -> int:
        """Abort the multipart uploads of these keys (without the prefix; ``None``: all under
        the prefix): at a restart, those a killed process left open for records of its state,
        leaving others' uploads under a shared prefix alone. Returns how many."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        count = 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._list_prefix()):
            for upload in page.get("Uploads", ()):
                if keys is not None and self._relative(upload["Key"]) not in keys:
                    continue
                try:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    count += 1
                except Exception as exc:
                    if _error_code(exc) != "NoSuchUpload":
                        raise
        return count

    def _relative(self, s3_key: str) -> str:
        """The store key of an S3 key under the prefix (the inverse of :meth:`object_key`)."""
        return s3_key[len(self.prefix) + 1 :] if self.prefix else s3_key

    def _list_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""


def _open_body(body: Any) -> BinaryIO:
    return io.BufferedReader(_BodyRaw(body), _READ_CHUNK)


def _make_client(endpoint_url: str | None, region_name: str | None) -> S3Client:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the S3 storage backend needs boto3: pip install 'nvcf-emulator[s3]'"
        ) from exc
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or None
    # Path-style addressing for custom endpoints: MinIO and moto_server on an IP address or
    # localhost have no DNS for <bucket>.<host>.
    s3 = {"addressing_style": "path"} if endpoint_url else {}
    config = Config(s3=s3)  # type: ignore[arg-type]
    client: S3Client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region_name, config=config
    )
    return client
