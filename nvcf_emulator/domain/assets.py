"""Assets: creation, upload, lookup, listing, deletion and the 24-hour lifetime.

An asset exists for NVCF only once its bytes are uploaded (the service checks with an S3 HEAD):
before that, get, delete, list and invocation references all miss it. Expiry is enforced lazily
on every access and eagerly by :meth:`AssetService.sweep`, both against the one :class:`Clock`.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..storage.base import BlobStore
from ..storage.state import NullStateStore, StateStore
from .accounts import Account
from .clock import Clock
from .errors import BadRequest, NotFound, StorageError

# The field rules, written so that the OpenAPI document can state them exactly (it uses these
# patterns, and a JSON Schema validator applies them with ``re.search`` as we do here).
#: NVCF's server-side check on ``contentType``: ``^\w+/[-+.\w]+$`` with ASCII word characters.
CONTENT_TYPE_PATTERN = r"^[A-Za-z0-9_]+/[-+.A-Za-z0-9_]+$"
#: S3 caps user metadata at 2 KB: the UTF-8 bytes of every key and value (an upload whose
#: ``x-amz-meta-*`` headers hold more is refused with ``MetadataTooLarge``).
MAX_METADATA_BYTES = 2048
_CONTENT_TYPE_RE = re.compile(CONTENT_TYPE_PATTERN)
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CHUNK = 1024 * 1024
#: Locks ordering the byte operations of assets (see ``AssetService._stripes``).
_STRIPES = 64
#: Most bytes a body moves in the kernel per step (between the size checks).
_KERNEL_CHUNK = 8 * _CHUNK
#: The record kind assets are kept under in a state store.
KIND = "asset"
#: State records of keys whose bytes are still to be deleted (a journal: a crash between
#: forgetting an asset and deleting its bytes leaves the key here, and the next start deletes it).
PURGING = "asset-purging"

log = logging.getLogger("nvcf_emulator")
#: How many swept asset ids an emulator remembers (about 100 bytes each).
_SWEPT_KEPT = 10_000


def is_asset_id(value: str) -> bool:
    """True for a canonical, lower-case UUID (NVCF's asset id form)."""
    return bool(_UUID_RE.match(value))


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(slots=True)
class Asset:
    asset_id: str
    nca_id: str
    content_type: str
    description: str
    created_at: float
    uploaded_at: float | None = None
    size: int | None = None
    etag: str | None = None

    @property
    def key(self) -> str:
        """The object key in storage, as NVCF lays it out."""
        return f"{self.nca_id}/{self.asset_id}"

    @property
    def uploaded(self) -> bool:
        return self.uploaded_at is not None

    def expires_at(self, ttl: float) -> float:
        return (self.uploaded_at if self.uploaded_at is not None else self.created_at) + ttl


def validate_content_type(value: object) -> str:
    if value is None:
        raise BadRequest("contentType is required")
    if not isinstance(value, str):
        raise BadRequest(f"contentType must be a string, got {type(value).__name__}")
    if not value:
        raise BadRequest("contentType must not be empty")
    if not _CONTENT_TYPE_RE.search(value) or "\n" in value:
        raise BadRequest(f"contentType '{value}' is not a media type of the form 'type/subtype'")
    return value


def validate_description(value: object) -> str:
    """NVCF checks only that a description is there (``@NotNull``): empty, blank or long ones
    are accepted, and one too long for S3's metadata fails at the upload, as on S3."""
    if value is None:
        raise BadRequest("description is required")
    if not isinstance(value, str):
        raise BadRequest(f"description must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): no header holds it
        raise BadRequest("description must be Unicode text; it holds a lone surrogate") from None
    return value


class AssetService:
    """All assets of one emulator, per account. Thread-safe."""

    def __init__(
        self,
        store: BlobStore,
        clock: Clock,
        *,
        asset_ttl: Callable[[], float],
        max_bytes: Callable[[], int],
        list_limit: Callable[[], int],
        quota: Callable[[], int | None] = lambda: None,
        md5_etag: Callable[[], bool] = lambda: True,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        state: StateStore | None = None,
    ) -> None:
        self.store = store
        self.state: StateStore = state or NullStateStore()
        self.clock = clock
        self._asset_ttl = asset_ttl
        self._max_bytes = max_bytes
        self._list_limit = list_limit
        self._quota = quota
        self._md5_etag = md5_etag
        #: Bytes of every uploaded asset, for the storage quota.
        self.used_bytes = 0
        #: Bytes of uploads being committed: counted against the quota with used_bytes, so
        #: that two uploads finishing at once cannot pass it together.
        self._reserved = 0
        self.new_id = new_id
        self._lock = threading.RLock()
        #: Orders the byte operations of one asset (an upload's commit, a delete) without the
        #: service lock: with the S3 backend they are network calls, and every other asset
        #: operation would wait on them. Striped: a bounded set of locks, by asset id. Taken
        #: before the service lock, never after it.
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        #: Keys of purged assets whose bytes are still to be deleted (outside the lock).
        self._purged_keys: list[str] = []
        self._assets: dict[str, Asset] = {}
        #: Ids of the latest assets swept (expired), oldest first: their upload URLs are still
        #: this emulator's to answer ("Request has expired") when several are routed at once.
        self._swept: dict[str, None] = {}
        # Uploaded asset ids per account, sorted: the order S3's ListObjects returns keys in.
        self._listed: dict[str, list[str]] = {}

    # -- queries ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._assets)

    def all(self) -> list[Asset]:
        """Every record, uploaded or not, of every account (for inspection)."""
        with self._lock:
            return list(self._assets.values())

    def find(self, asset_id: str) -> Asset | None:
        """The record for ``asset_id`` regardless of account, upload or expiry (for inspection)."""
        return self._assets.get(asset_id)

    def knows(self, asset_id: str) -> bool:
        """``asset_id`` is one of this service's assets, or was until it expired lately."""
        return asset_id in self._assets or asset_id in self._swept

    def get(self, account: Account, asset_id: str) -> Asset:
        """An uploaded, unexpired asset of ``account``, else :class:`NotFound`."""
        asset = self._live(account.nca_id, asset_id)
        if asset is None:
            raise NotFound(f"Asset '{asset_id}' does not exist for account '{account.nca_id}'")
        return asset

    def listing(self, account: Account) -> list[Asset]:
        """At most ``list_limit`` uploaded assets of ``account``, by ascending id."""
        limit = self._list_limit()
        now = self.clock.now()
        ttl = self._asset_ttl()
        out: list[Asset] = []
        expired: list[Asset] = []
        with self._lock:
            for asset_id in self._listed.get(account.nca_id, ()):
                asset = self._assets[asset_id]
                if asset.expires_at(ttl) <= now:
                    expired.append(asset)
                    continue
                out.append(asset)
                if len(out) >= limit:
                    break
            for asset in expired:
                self._purge(asset)
        if expired:
            self._delete_purged()
        return out

    # -- commands ---------------------------------------------------------------------------

    def create(self, account: Account, content_type: object, description: object) -> Asset:
        ctype = validate_content_type(content_type)
        desc = validate_description(description)
        with self._lock:
            asset_id = self.new_id()
            # Seeded ids repeat their sequence (POST /_emulator/seed twice, or each run of a
            # suite against one state dir): an id may come again for a record still waiting
            # for its upload (it is replaced), never for stored bytes or another account's.
            while (held := self._assets.get(asset_id)) is not None and (
                held.uploaded or held.nca_id != account.nca_id
            ):
                asset_id = self.new_id()
            asset = Asset(asset_id, account.nca_id, ctype, desc, self.clock.now())
            self._save(asset)  # the record first: a failed write leaves no asset behind
            self._assets[asset.asset_id] = asset
        return asset

    def _bytes_lock(self, asset_id: str) -> threading.Lock:
        return self._stripes[hash(asset_id) % _STRIPES]

    def delete(self, account: Account, asset_id: str) -> None:
        with self._bytes_lock(asset_id):
            asset = self.get(account, asset_id)
            with self._lock:
                if self._assets.get(asset_id) is not asset or not asset.uploaded:
                    return  # purged (expired) meanwhile: its accounting is done
                # The record first: when it cannot be written the asset stays, bytes and all.
                self._save(dataclasses.replace(asset, uploaded_at=None, size=None, etag=None))
                self._withdraw(asset)
            # Bytes left behind by a failure here lie under a record that is not uploaded: the
            # next start discards them.
            self.store.delete(asset.key)

    def upload(
        self,
        nca_id: str,
        asset_id: str,
        body: _Reader,
        content_length: int | None,
        content_md5: bytes | None = None,
    ) -> Asset:
        """Store an upload's bytes, streamed, then mark the asset uploaded.

        ``content_length`` is checked against the size limit before a byte is read; a body
        without a length is counted as it streams. ``content_md5`` (the client's
        ``Content-MD5``, 16 bytes) must match the bytes received, else S3's ``BadDigest``. A
        failed or cut-off upload leaves the asset as it was (and no temp file).
        """
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is None or asset.nca_id != nca_id or self._expired(asset):
                raise StorageError(404, "NoSuchUpload", "The asset this URL was made for is gone")
        limit = self._max_bytes()
        if content_length is not None and content_length > limit:
            raise _too_large(content_length, limit)
        quota = self._quota()
        used = self.used_bytes + self._reserved
        room = None if quota is None else quota - used + (asset.size or 0)
        if room is not None and content_length is not None and content_length > room:
            raise _storage_full(quota)
        writer = self.store.writer(asset.key)
        cap = limit if room is None else min(limit, room)
        fd = writer.fileno()
        # S3's ETag for a single PUT is the body's MD5. MD5 runs at ~0.6 GiB/s on one core,
        # which bounds upload throughput; the "opaque" setting skips it (S3's ETag is opaque
        # for encrypted objects too, so clients must not rely on it being an MD5). On local
        # disk, a body of more than one chunk is hashed by a helper thread that reads back what
        # was written, so hashing overlaps with receiving (and the kernel may move the bytes).
        hasher: _FileHasher | None = None
        md5 = None
        if self._md5_etag() or content_md5 is not None:
            big = content_length is None or content_length > _CHUNK
            if fd is not None and big and _FileHasher.available:
                hasher = _FileHasher(fd)
            else:
                md5 = hashlib.md5(usedforsecurity=False)
        # A body that can move its bytes into a file in the kernel (a file given in-process, a
        # socket in server mode) does, unless every chunk must pass through here to be hashed.
        transfer = getattr(body, "transfer_to", None) if fd is not None and md5 is None else None
        # While hashing, hand the hasher new bytes every chunk, so it starts early and has
        # little left to do when the last byte arrives.
        step = _CHUNK if hasher is not None else _KERNEL_CHUNK
        readinto = getattr(body, "readinto", None)
        buf = memoryview(bytearray(_CHUNK))
        size = 0
        try:
            while True:
                # Never more than one byte past the limit: enough to know it is exceeded.
                want = cap + 1 - size
                n = None
                if transfer is not None:
                    assert fd is not None
                    with _full_disk_is_507():
                        n = transfer(fd, min(want, step))
                    if n is None:  # not (or no longer) possible: read the rest
                        transfer = None
                if n is None:
                    chunk: bytes | memoryview
                    if readinto is not None:
                        chunk = buf[: readinto(buf[: min(want, _CHUNK)]) or 0]
                    else:
                        chunk = body.read(min(want, _CHUNK))
                    n = len(chunk)
                    if n and size + n <= cap:
                        if md5 is not None:
                            md5.update(chunk)
                        with _full_disk_is_507():
                            writer.write(chunk)
                if not n:
                    break
                size += n
                if size > limit:
                    raise _too_large(size, limit)
                if room is not None and size > room:
                    raise _storage_full(quota)
                if hasher is not None:
                    hasher.advance(size)
            if content_length is not None and size < content_length:
                raise incomplete_body(ExpectedSize=content_length, ReceivedSize=size)
            # Outside the lock: the hasher may still be catching up with the last bytes.
            digest = (
                hasher.hexdigest()
                if hasher is not None
                else (md5.hexdigest() if md5 is not None else None)
            )
            if content_md5 is not None and digest != content_md5.hex():
                raise StorageError(
                    400,
                    "BadDigest",
                    "The Content-MD5 you specified did not match what we received.",
                    ExpectedDigest=base64.b64encode(content_md5).decode(),
                    CalculatedDigest=base64.b64encode(bytes.fromhex(digest or "")).decode(),
                )
            with self._bytes_lock(asset.asset_id):
                delta = size - (asset.size or 0)  # stays put: this asset's commits take turns
                with self._lock:
                    quota = self._quota()
                    if quota is not None and self.used_bytes + self._reserved + delta > quota:
                        raise _storage_full(quota)
                    self._reserved += delta
                try:
                    with _full_disk_is_507():
                        writer.commit()  # the bytes first (a network call with S3), then the record
                except BaseException:
                    with self._lock:
                        self._reserved -= delta
                    raise
                unrecorded: Exception | None = None
                with self._lock:
                    self._reserved -= delta
                    current = self._assets.get(asset.asset_id) is asset
                    if current:
                        now = self.clock.now()
                        record = dataclasses.replace(
                            asset,
                            uploaded_at=now,
                            size=size,
                            etag=digest
                            if digest is not None
                            else hashlib.md5(
                                f"{asset.key}:{size}:{now}".encode(), usedforsecurity=False
                            ).hexdigest(),
                        )
                        try:  # the record before memory: memory never runs ahead of disk
                            self._save(record)
                        except Exception as exc:
                            unrecorded = exc
                            self._withdraw(asset)
                        else:
                            self.used_bytes += delta
                            asset.uploaded_at, asset.size, asset.etag = now, size, record.etag
                            self._list(asset)
                if unrecorded is not None:
                    # The new bytes are in place but no record says so. They go, and the asset
                    # is not uploaded: what the next start would find, and what the client is
                    # told (its PUT failed). The record on disk still names the old size, so
                    # a restart finds it not uploaded too.
                    self.store.delete(asset.key)
                    log.error("could not record the upload of %s: %s", asset.asset_id, unrecorded)
                    raise StorageError(
                        500,
                        "InternalError",
                        f"We encountered an internal error: the emulator could not record the "
                        f"upload ({unrecorded}); the asset is not uploaded",
                    ) from unrecorded
                if not current:  # expired and purged while the body came in
                    self.store.delete(asset.key)
                    raise StorageError(
                        404, "NoSuchUpload", "The asset this URL was made for is gone"
                    )
        except BaseException:
            if hasher is not None:
                hasher.stop()  # before the file (and its descriptor) goes away
            writer.abort()
            raise
        return asset  # a hasher that was used is done: hexdigest() joined its thread

    def sweep(self) -> int:
        """Remove every expired asset and its bytes now; returns how many went."""
        now = self.clock.now()
        ttl = self._asset_ttl()
        with self._lock:
            gone = [a for a in self._assets.values() if a.expires_at(ttl) <= now]
            for asset in gone:
                self._purge(asset)
        self._delete_purged()
        return len(gone)

    def clear(self) -> None:
        """Forget every asset and delete its bytes: only this service's keys, as another
        emulator may store its assets under the same S3 prefix (xdist workers, say)."""
        with self._lock:
            assets = list(self._assets.values())
            # Every record goes, each key journaled for deletion, in one transaction: a failed
            # write changes nothing, and a crash before the bytes are gone leaves the journal
            # for the next start to finish.
            with self.state.transaction():
                for asset in assets:
                    self.state.put(PURGING, asset.key, {})
                    self.state.delete(KIND, asset.asset_id)
            self._assets.clear()
            self._listed.clear()
            self._swept.clear()
            self.used_bytes = 0
            self._purged_keys.extend(asset.key for asset in assets)
        self._delete_purged()

    def load(self) -> int:
        """Read the records a state store kept (at start-up), reconciled with the bytes.

        A record marked uploaded whose bytes are gone is not uploaded (for this run: the record
        on disk is left as it is, so that a start against the wrong bucket loses nothing); bytes
        under a record that was never marked uploaded (a crash between the rename and the
        record) are discarded, so a restart never shows an upload the client was not told
        succeeded. Returns the count.
        """
        known = {f.name for f in dataclasses.fields(Asset)}
        # A store that can list its objects (S3) is listed once: one request per 1,000 keys
        # rather than one per record.
        list_sizes = getattr(self.store, "sizes", None)
        listed: dict[str, int] | None = list_sizes() if list_sizes is not None else None

        def size(key: str) -> int | None:
            return listed.get(key) if listed is not None else self.store.size(key)

        def discard(key: str) -> None:
            if listed is None or key in listed:
                self.store.delete(key)

        with self._lock:
            for key, _ in list(self.state.load(PURGING)):  # bytes a crash left behind
                discard(key)
                self.state.delete(PURGING, key)
            for asset_id, data in self.state.load(KIND):
                asset = Asset(**{k: v for k, v in data.items() if k in known})
                if not asset.uploaded:
                    discard(asset.key)
                elif size(asset.key) != asset.size:
                    asset.uploaded_at = asset.size = asset.etag = None
                self._assets[asset_id] = asset
                if asset.uploaded:
                    self._list(asset)
                    self.used_bytes += asset.size or 0
            return len(self._assets)

    def _withdraw(self, asset: Asset) -> None:
        """Mark an asset not uploaded in memory (under ``_lock``): unlisted, its bytes uncounted."""
        if asset.uploaded:
            self._unlist(asset)
            self.used_bytes -= asset.size or 0
        asset.uploaded_at = asset.size = asset.etag = None

    def _save(self, asset: Asset) -> None:
        self.state.put(KIND, asset.asset_id, dataclasses.asdict(asset))

    # -- internals --------------------------------------------------------------------------

    def _expired(self, asset: Asset) -> bool:
        return asset.expires_at(self._asset_ttl()) <= self.clock.now()

    def _live(self, nca_id: str, asset_id: str) -> Asset | None:
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is None or asset.nca_id != nca_id:
                return None
            if not self._expired(asset):
                return asset if asset.uploaded else None
            self._purge(asset)
        self._delete_purged()
        return None

    def live_assets(self, account: Account, asset_ids: Iterable[str]) -> list[Asset]:
        """Resolve invocation references: every id must be a live asset of ``account``."""
        out = []
        for asset_id in asset_ids:
            asset = self._live(account.nca_id, asset_id)
            if asset is None:
                raise NotFound(f"NotFound error: failed to find asset {asset_id}")
            out.append(asset)
        return out

    def _list(self, asset: Asset) -> None:
        ids = self._listed.setdefault(asset.nca_id, [])
        i = bisect.bisect_left(ids, asset.asset_id)
        if i == len(ids) or ids[i] != asset.asset_id:
            ids.insert(i, asset.asset_id)

    def _unlist(self, asset: Asset) -> None:
        ids = self._listed.get(asset.nca_id)
        if not ids:
            return
        i = bisect.bisect_left(ids, asset.asset_id)
        if i < len(ids) and ids[i] == asset.asset_id:
            del ids[i]

    def _purge(self, asset: Asset) -> None:
        """Forget an expired asset (under the service lock); its bytes go in
        :meth:`_delete_purged`, after the lock is released (with S3, a network call each)."""
        if self._assets.pop(asset.asset_id, None) is not None:
            self.used_bytes -= asset.size or 0
            self._swept[asset.asset_id] = None
            if len(self._swept) > _SWEPT_KEPT:
                del self._swept[next(iter(self._swept))]
        self.state.put(PURGING, asset.key, {})
        self.state.delete(KIND, asset.asset_id)
        self._unlist(asset)
        self._purged_keys.append(asset.key)

    def _delete_purged(self) -> None:
        with self._lock:
            keys, self._purged_keys = self._purged_keys, []
        if not keys:
            return
        try:
            self.store.delete_many(keys)  # S3: one request per 1,000 keys
            with self.state.transaction():
                for key in keys:
                    self.state.delete(PURGING, key)
        except Exception:
            # The store failed (S3 unreachable): the keys wait for the next sweep instead of
            # staying in the bucket for good (deleting one twice is harmless).
            with self._lock:
                self._purged_keys.extend(keys)
            raise


_preadv = getattr(os, "preadv", None)


class _FileHasher:
    """The MD5 of the bytes written to a file so far, computed in a helper thread.

    The writer appends to the file and calls :meth:`advance` with the new size; the thread
    follows behind, reading the new bytes back (``pread`` from the page cache, one reused
    buffer: memory stays bounded whatever the body size) and hashing them. ``hashlib`` and the
    reads release the GIL, so hashing overlaps with receiving the next bytes. The digest is of
    the bytes actually stored. :meth:`stop` ends the thread on any path (it is always joined).
    """

    #: It reads back with pread(v), which Windows lacks: there the body is hashed inline.
    available = _preadv is not None or hasattr(os, "pread")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._cond = threading.Condition()
        self._written = 0
        self._hashed = 0
        self._finishing = False
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nvcf-upload-md5", daemon=True)
        self._thread.start()

    def advance(self, written: int) -> None:
        """``written`` bytes are in the file now: hash up to there."""
        with self._cond:
            self._written = written
            self._cond.notify()

    def hexdigest(self) -> str:
        """Wait until every byte written is hashed; the digest."""
        with self._cond:
            self._finishing = True
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._hashed != self._written:  # pragma: no cover - stopped early (a bug)
            raise RuntimeError("upload hasher stopped before the end of the file")
        return self._md5.hexdigest()

    def stop(self) -> None:
        """Stop hashing (upload failed, or done) and join the thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(
                        lambda: self._stopped or self._finishing or self._written > self._hashed
                    )
                    if self._stopped or self._written <= self._hashed:
                        return
                    end = self._written
                while self._hashed < end and not self._stopped:
                    want = min(len(buf), end - self._hashed)
                    if _preadv is not None:
                        n = _preadv(self._fd, [view[:want]], self._hashed)
                    else:  # pragma: no cover - platforms without preadv
                        data = os.pread(self._fd, want, self._hashed)
                        n = len(data)
                        view[:n] = data
                    if n <= 0:
                        raise OSError(errno.EIO, "upload file is shorter than what was written")
                    self._md5.update(view[:n])
                    self._hashed += n
        except BaseException as exc:
            self._error = exc


def incomplete_body(**sizes: int) -> StorageError:
    """S3's answer to a body shorter than its ``Content-Length`` (a client that went away)."""
    return StorageError(
        400,
        "IncompleteBody",
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
        **sizes,
    )


@contextlib.contextmanager
def _full_disk_is_507() -> Iterator[None]:
    """A full disk (or quota) while bytes are written or moved into place is S3-style 507."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _storage_full(None) from exc
        raise


def _storage_full(quota: int | None) -> StorageError:
    where = f"the emulator's storage quota ({quota} bytes)" if quota is not None else "the disk"
    return StorageError(
        507,
        "InsufficientStorage",
        f"Insufficient storage: {where} is full; stored assets are untouched",
    )


def _too_large(size: int, limit: int) -> StorageError:
    return StorageError(
        400,
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size",
        ProposedSize=size,
        MaxSizeAllowed=limit,
    )
