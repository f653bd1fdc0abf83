"""The :class:`Emulator`: one NVCF stand-in, its state, and its WSGI app."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypedDict, Unpack
from urllib.parse import quote, urlencode, urlsplit

from .config import FIXED_FIELDS, EmulatorConfig, check_base_url, fixed_setting_error
from .domain.accounts import Accounts
from .domain.assets import Asset, AssetService, is_asset_id
from .domain.calls import CallLog
from .domain.clock import Clock
from .domain.errors import MessageKeyError
from .domain.faults import Faults
from .domain.ids import Ids
from .http.app import EmulatorApp

# Imported now, not at first use: it notes requests' own HTTPAdapter.send before a mock
# (responses, moto) started later patches it.
from .inprocess import route
from .invocation_api import InvocationAPI
from .storage.base import BlobStore
from .storage.local import LocalBlobStore
from .storage.presign import DESCRIPTION_HEADER, UrlSigner
from .storage.state import NullStateStore, SqliteStateStore, StateStore
from .tempdirs import make_private_dir

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock instead (see _try_lock)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("nvcf_emulator")

if TYPE_CHECKING:
    from .grpc_proxy import GrpcProxy
    from .server import EmulatorServer


class EmulatorSettings(TypedDict, total=False):
    """The keyword settings of :class:`Emulator`, ``configure`` and ``reset``: the fields of
    :class:`EmulatorConfig` (see there for what each does), typed for static checkers so that
    a misspelt or mistyped setting is an error before the test runs."""

    api_base_url: str
    extra_api_hosts: Iterable[str]
    storage_base_url: str | None
    bucket: str
    region: str
    upload_url_ttl: int
    asset_ttl: int
    max_asset_bytes: int
    storage_quota_bytes: int | None
    upload_etag: str
    list_limit: int
    header_mismatch_status: int
    api_keys: Mapping[str, str]
    default_nca_id: str
    root_dir: str | os.PathLike[str] | None
    state_dir: str | os.PathLike[str] | None
    admin_enabled: bool
    admin_token: str | None
    storage: str | None
    s3_endpoint_url: str | None
    s3_create_bucket: bool
    poll_seconds: int
    sse_poll_seconds: int
    max_poll_seconds: int
    always_async: bool
    worker_threads: int
    container_timeout: float
    max_request_bytes: int
    max_response_bytes: int
    request_ttl: int
    result_url_ttl: int
    asset_root: str | os.PathLike[str] | None
    output_root: str | os.PathLike[str] | None
    keep_staged: bool
    ram_staging_bytes: int
    deploy_delay: float
    progress_interval: float


class AssetNotUploadedError(MessageKeyError):
    """:meth:`Emulator.asset_bytes` of an asset that exists but has no bytes (yet)."""


class UnknownAssetError(MessageKeyError):
    """:meth:`Emulator.asset_bytes` of an asset id this emulator does not know."""


class Emulator(InvocationAPI):
    """An NVCF emulator: control plane, pre-signed storage and (later) worker, on one WSGI app.

    >>> with Emulator() as nvcf:           # routes requests for api.nvcf.nvidia.com in-process
    ...     requests.post(f"{nvcf.base_url}/v2/nvcf/assets", headers=nvcf.headers, json=...)

    Settings are :class:`EmulatorConfig` fields, given as a config, as keywords, or both.
    Once :meth:`close` d, an emulator cannot be used again: make a new one.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, /, **settings: Unpack[EmulatorSettings]
    ) -> None:
        self._closed = False
        self._storage_url = ""
        if config is not None and not isinstance(config, EmulatorConfig):
            hint = (
                f" (for a dict of settings: Emulator(**{config!r}))"
                if isinstance(config, Mapping)
                else ""
            )
            raise TypeError(
                "Emulator() takes an EmulatorConfig as its only positional argument, and "
                f"settings as keywords, e.g. Emulator(max_asset_bytes=1024); got "
                f"{type(config).__name__}{hint}"
            )
        self.config = (config or EmulatorConfig()).replace(**settings)
        self._initial_config = self.config
        self.clock = Clock()
        self.ids = Ids()
        self.calls = CallLog()
        self.faults = Faults()
        given_root = self.config.state_dir or self.config.root_dir
        if given_root is None:
            self._tmp: str | None = str(make_private_dir())
            self.root = Path(self._tmp)
        else:
            self._tmp = None
            # Fixed now: a later chdir (a test's monkeypatch.chdir) must not move the bytes.
            self.root = given_root.absolute()
            self.root.mkdir(parents=True, exist_ok=True)
        self._root_lock: int | None = None if self._tmp is not None else _lock_root(self.root)
        try:
            self._open()
        except BaseException:
            state = getattr(self, "state", None)
            if state is not None:  # opened, then start-up failed: not left open
                state.close()
            self._release_root()
            raise

    def _open(self) -> None:
        """Everything that lives under ``root``, opened once it is this emulator's."""
        self.state: StateStore = (
            SqliteStateStore(self.root / _STATE_DB)  # the root is the state dir
            if self.config.state_dir is not None
            else NullStateStore()
        )
        self.accounts = Accounts(self.config.api_keys, default_nca_id=self.config.default_nca_id)
        self.store: BlobStore = self._open_store()
        self.assets = AssetService(
            self.store,
            self.clock,
            asset_ttl=lambda: self.config.asset_ttl,
            max_bytes=lambda: self.config.max_asset_bytes,
            list_limit=lambda: self.config.list_limit,
            quota=lambda: self.config.storage_quota_bytes,
            md5_etag=lambda: self.config.upload_etag == "md5",
            new_id=self.ids.new,
            state=self.state,
        )
        self.signer = UrlSigner(self.clock, region=self.config.region, secret_key=self._secret())
        self.storage_url = self.config.storage_base_url or (
            f"https://{self.config.bucket}.s3.{self.config.region}.amazonaws.com"
        )
        self._remove_stale_files()
        self._init_invocations()
        self.app = EmulatorApp(self)
        self._next_sweep = self.clock.now() + self.SWEEP_INTERVAL
        self._restore()
        self._activations: list[Any] = []
        self._dashboard: EmulatorServer | None = None
        self._grpc_proxies: list[GrpcProxy] = []

    def _remove_stale_files(self) -> None:
        """What a previous emulator left under a given root that nothing can name any more.

        The root is this emulator's now (locked). Request dirs a killed process left (staged
        copies of assets, large outputs) go, unless ``keep_staged`` keeps them. Without a
        state dir no record outlives a run, so the bytes of the last run's assets and its
        large results go too: they stay after it for a look, not for ever. Only names the
        emulator makes (UUIDs) are touched, and never in a dir holding a state db."""
        if self._tmp is not None:
            return
        _remove_ours(self.root / "secrets")  # a killed process's: written again from the records
        if not self.config.keep_staged:
            for name in ("inputAssets", "response"):
                _remove_ours(self.root / name)
        if self.config.state_dir is None and not (self.root / _STATE_DB).exists():
            _remove_ours(self.root / "results")
            if self.config.storage is None:
                objects = self.root / "storage" / "objects"
                try:
                    accounts = [e for e in os.scandir(objects) if e.is_dir(follow_symlinks=False)]
                except OSError:  # none yet
                    accounts = []
                for account in accounts:
                    _remove_ours(Path(account.path))
                    with contextlib.suppress(OSError):
                        os.rmdir(account.path)  # when it holds nothing else

    def _secret(self) -> str | None:
        """The URL-signing secret: kept in the state dir so URLs survive a restart."""
        for _, data in self.state.load("signer"):
            return str(data["secret"])
        secret = secrets.token_urlsafe(30)
        self.state.put("signer", "secret", {"secret": secret})
        return secret

    def _restore(self) -> None:
        """Load what the state dir kept (clock offset, assets, functions, unfetched results),
        then drop what has expired."""
        self._check_storage_identity()
        for _, data in self.state.load("clock"):
            self.clock.advance(float(data["offset"]))
        self.clock.on_change = lambda offset: self.state.put("clock", "offset", {"offset": offset})
        loaded = self.assets.load()
        abort = getattr(self.store, "abort_uploads", None)
        if loaded and abort is not None:  # S3: multipart uploads a killed process left open
            abort({asset.key for asset in self.assets.all()})
        if loaded + self._load_invocations():
            self.sweep()

    def _check_storage_identity(self) -> None:
        """A state dir keeps the records of one store: started against another (a mistyped
        bucket, another endpoint), every asset would look gone. Refuse, naming both."""
        identity = {"storage": self.config.storage, "s3_endpoint_url": self.config.s3_endpoint_url}
        saved = dict(self.state.load("meta")).get("storage")
        if saved is None:
            self.state.put("meta", "storage", identity)
        elif saved != identity:
            raise RuntimeError(
                f"state dir {self.config.state_dir} keeps the records of the assets stored in "
                f"{saved.get('storage') or 'local files'} (endpoint "
                f"{saved.get('s3_endpoint_url') or 'default'}), but this start names "
                f"{identity['storage'] or 'local files'} (endpoint "
                f"{identity['s3_endpoint_url'] or 'default'}): start it with the same bucket "
                "and endpoint (storage, s3_endpoint_url), or give it a state dir of its own"
            )

    def _open_store(self) -> BlobStore:
        """Files under ``root``, or an S3 bucket when ``storage`` is ``s3://bucket/prefix``."""
        if self.config.storage is None:
            return LocalBlobStore(self.root / "storage")
        from .storage.s3 import S3BlobStore

        try:
            return S3BlobStore.from_url(
                self.config.storage,
                endpoint_url=self.config.s3_endpoint_url,
                create_bucket=self.config.s3_create_bucket,
            )
        except BaseException:
            self.state.close()  # the temp root and the lock go in __init__ (_release_root)
            raise

    # -- addresses ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Where clients send control-plane calls (``https://api.nvcf.nvidia.com`` in-process)."""
        return self.config.api_base_url.rstrip("/")

    @property
    def api_key(self) -> str:
        """An API key this emulator accepts (the default account's)."""
        return self.accounts.any_key_for(None)

    @property
    def headers(self) -> dict[str, str]:
        """``Authorization`` for :attr:`api_key`, ready to pass to a client."""
        return {"Authorization": f"Bearer {self.api_key}"}

    # The host sets are read on every request (and, in-process, on every requests/httpx call),
    # so they are worked out once, whenever the config or the storage URL changes.

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    @config.setter
    def config(self, config: EmulatorConfig) -> None:
        self._config = config
        self._update_hosts()

    @property
    def storage_url(self) -> str:
        """The origin (and path prefix) upload URLs point at."""
        return self._storage_url

    @storage_url.setter
    def storage_url(self, url: str) -> None:
        self._storage_url = check_base_url(url, "storage_url")
        self._update_hosts()

    def _update_hosts(self) -> None:
        api = urlsplit(self._config.api_base_url)
        hosts = {api.hostname or ""}
        hosts.update(self._config.extra_api_hosts)
        self._api_hosts = frozenset(h.lower() for h in hosts if h)
        parts = urlsplit(self._storage_url)
        host = (parts.hostname or "").lower()
        virtual = bool(host) and not parts.path.strip("/")
        self._storage_hosts = frozenset({host}) if virtual else frozenset()
        self._routed_hosts = self._api_hosts | ({host} if host else set())
        # A base URL with an explicit port claims that port of its host only; a host named
        # without one (extra_api_hosts, or a base URL without a port) claims every port.
        any_port = {h.lower() for h in self._config.extra_api_hosts if h}
        explicit: dict[str, set[int]] = {}
        for url in (api, parts):
            name = (url.hostname or "").lower()
            try:
                port = url.port
            except ValueError:  # not a port number: as if none were named
                port = None
            if name and port is None:
                any_port.add(name)
            elif name and port is not None:
                explicit.setdefault(name, set()).add(port)
        self._routed_ports = {h: frozenset(p) for h, p in explicit.items() if h not in any_port}

    @property
    def api_hosts(self) -> frozenset[str]:
        """Hosts of the control plane (routed in-process)."""
        return self._api_hosts

    @property
    def storage_hosts(self) -> frozenset[str]:
        """Hosts whose every request is a storage request (virtual-hosted S3 style)."""
        return self._storage_hosts

    @property
    def routed_hosts(self) -> frozenset[str]:
        """Every host the in-process mode sends into this emulator: API and storage."""
        return self._routed_hosts

    @property
    def routed_ports(self) -> Mapping[str, frozenset[int]]:
        """The routed hosts claimed on some ports only (a base URL that names its port, as a
        served emulator's ``http://127.0.0.1:PORT``); every other routed host, on any port."""
        return self._routed_ports

    def upload_url(self, asset: Asset, base: str | None = None) -> str:
        """A pre-signed PUT URL for ``asset``, valid ``upload_url_ttl`` seconds from now, under
        ``base`` (default: :attr:`storage_url`)."""
        url = f"{(base or self.storage_url).rstrip('/')}/{quote(asset.key)}"
        headers = {"content-type": asset.content_type, DESCRIPTION_HEADER: asset.description}
        return self.signer.presign_put(url, headers, self.config.upload_url_ttl)

    # -- life cycle ---------------------------------------------------------------------------

    def configure(self, **settings: Unpack[EmulatorSettings]) -> None:
        """Change settings on a running emulator. Where bytes and state live (``root_dir``,
        ``state_dir``, ``storage``, ``s3_*``) and where upload URLs point (``bucket``,
        ``region``, ``storage_base_url``) are fixed at start: changing them is a ValueError."""
        config = self.config.replace(**settings)
        for name in FIXED_FIELDS:
            if name in settings and getattr(config, name) != getattr(self.config, name):
                raise fixed_setting_error(name, getattr(self.config, name))
        self.config = config
        self.accounts = Accounts(self.config.api_keys, default_nca_id=self.config.default_nca_id)

    #: Seconds of emulator time between two sweeps triggered by incoming requests.
    SWEEP_INTERVAL = 60.0

    def sweep(self) -> None:
        """Apply every TTL now: expired assets and their bytes go at once.

        Rules are also checked lazily on every access, and :meth:`maybe_sweep` runs this at
        most once a minute of emulator time, from each request (and from the server's timer).
        """
        self._next_sweep = self.clock.now() + self.SWEEP_INTERVAL
        self.assets.sweep()
        self.invocation_service.sweep()

    def maybe_sweep(self) -> None:
        """Sweep if a minute of emulator time has passed since the last sweep (or time jumped)."""
        now = self.clock.now()
        if now >= self._next_sweep or now < self._next_sweep - 2 * self.SWEEP_INTERVAL:
            self.sweep()

    def reset(self, **settings: Unpack[EmulatorSettings]) -> None:
        """Forget every asset and its bytes, put the clock back, and return to the settings the
        emulator was made with, plus ``settings``."""
        self._check_open("reset it")
        self.assets.clear()
        self._reset_invocations()
        self.clock.reset()
        self.ids.seed(None)
        self.calls.clear()
        self.faults.clear()
        for proxy in self._grpc_proxies:
            proxy.forget_sessions()
        if settings or self.config != self._initial_config:
            self.config = self._initial_config
            self.configure(**settings)

    @property
    def closed(self) -> bool:
        """``True`` once :meth:`close` has run: the emulator can no longer be used."""
        return self._closed

    def close(self) -> None:
        """Stop routing, and remove the temp dir this emulator made (if it made one). Without a
        state dir, the objects of its assets in an S3 bucket are deleted too. A closed emulator
        cannot be entered, activated, served or given functions again (``RuntimeError``); a
        second ``close()`` does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._dashboard is not None:
            self._dashboard.stop()
            self._dashboard = None
        while self._grpc_proxies:
            self._grpc_proxies.pop().stop()
        while self._activations:
            self._activations.pop().__exit__(None, None, None)
        self._close_invocations()
        if self.config.storage and self.config.state_dir is None:
            # Nothing could find these objects again: in a shared bucket they would stay for
            # good (a state dir keeps them for the next start).
            try:
                self.assets.clear()
            except Exception as exc:
                log.warning("could not delete this emulator's objects from the bucket: %s", exc)
        self.state.close()
        close_store = getattr(self.store, "close", None)  # the S3 store's connection pool
        if close_store is not None:
            close_store()
        self._release_root()

    def _release_root(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        lock, self._root_lock = self._root_lock, None
        if lock is not None:
            _unlock_root(lock)

    @contextmanager
    def activate(self) -> Iterator[Self]:
        """Route ``requests`` and ``httpx`` calls for its API and storage hosts into this app."""
        self._check_open("activate it")
        with route(self):
            yield self

    def __enter__(self) -> Self:
        self._check_open("enter it with 'with'")
        cm = route(self)
        cm.__enter__()
        self._activations.append(cm)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_connections: int = 64,
        idle_timeout: float = 30.0,
    ) -> EmulatorServer:
        """Serve this emulator on a real socket (started; call ``stop()`` when done). At most
        ``max_connections`` are served at once; one that sends nothing for ``idle_timeout``
        seconds is closed."""
        self._check_open("serve it")
        from .server import EmulatorServer

        server = EmulatorServer(self, host=host, port=port, max_connections=max_connections)
        server.idle_timeout = idle_timeout
        return server.start()

    def dashboard(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve this emulator on a local port for a browser and return the dashboard's URL.

        For in-process emulators: clients keep reaching the emulator in-process, and upload URLs
        keep pointing where they did. The server is started once (later calls return the same
        URL) and stopped by :meth:`close`. With an ``admin_token``, the URL carries it as
        ``?token=`` (the page moves it to the tab's ``sessionStorage``)."""
        if self._dashboard is None:
            self._check_open("serve its dashboard")
            from .server import EmulatorServer

            self._dashboard = EmulatorServer(self, host, port, own_storage_urls=False).start()
        url = f"{self._dashboard.url}/_emulator/"
        token = self.config.admin_token
        return f"{url}?{urlencode({'token': token})}" if token else url

    def serve_grpc(self, host: str = "127.0.0.1", port: int = 0) -> GrpcProxy:
        """Serve NVCF's gRPC invocation (``grpc.nvcf.nvidia.com``'s role) on a plaintext port,
        started: clients call a ``/grpc`` function's own methods with the metadata
        ``authorization: Bearer <key>`` and ``function-id``. Stopped by :meth:`close` (or its
        ``stop()``). Needs the ``grpc`` extra (``pip install 'nvcf-emulator[grpc]'``)."""
        self._check_open("serve gRPC for it")
        from .grpc_proxy import GrpcProxy

        proxy = GrpcProxy(self, host, port).start()
        self._grpc_proxies.append(proxy)
        return proxy

    # -- inspection ---------------------------------------------------------------------------

    def stored_assets(self) -> list[Asset]:
        """Every asset record, of every account, uploaded or not."""
        return self.assets.all()

    def asset_bytes(self, asset_id: str) -> bytes:
        """The uploaded bytes of ``asset_id``. ``KeyError`` when there are none: an
        :class:`UnknownAssetError` for an id this emulator does not know (never created, or
        expired and swept), an :class:`AssetNotUploadedError` for an asset created but never
        (or not yet) uploaded."""
        asset = self.assets.find(asset_id)
        if asset is None:
            raise UnknownAssetError(
                f"no asset {asset_id!r} in this emulator: it was never created here, or it "
                "expired (asset_ttl) or was deleted; stored_assets() lists the ones there are"
            )
        if not asset.uploaded:
            raise AssetNotUploadedError(
                f"asset {asset_id!r} was created but its bytes were never uploaded: the PUT "
                "to its uploadUrl has not happened or failed (see invocations / the test log)"
            )
        with self.store.open(asset.key) as f:
            return f.read()

    def asset_path(self, asset_id: str) -> Path | None:
        """The file holding ``asset_id``'s bytes on disk, or ``None``."""
        asset = self.assets.find(asset_id)
        return self.store.local_path(asset.key) if asset is not None else None

    def __repr__(self) -> str:
        config = getattr(self, "_config", None)
        where = config.api_base_url.rstrip("/") if config is not None else "?"
        if getattr(self, "_closed", False):
            return f"<Emulator {where} closed>"
        parts = [where, "open"]
        storage = getattr(self, "_storage_url", "")
        if storage:
            parts.append(f"storage={storage}")
        root = getattr(self, "root", None)
        if root is not None:
            parts.append(f"root={root}")
        return f"<Emulator {' '.join(parts)}>"


_LOCK_FILE = ".nvcf-emulator.lock"
_STATE_DB = "state.sqlite3"


def _remove_ours(directory: Path) -> None:
    """Remove the entries of ``directory`` named as the emulator names them: a UUID (request
    dirs, asset objects), maybe with a suffix (``<reqid>.zip``) or as a dotted temp file."""
    try:
        entries = list(os.scandir(directory))
    except OSError:  # none yet
        return
    for entry in entries:
        if not is_asset_id(entry.name.lstrip(".").split(".", 1)[0]):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


#: Where Windows' lock goes: a byte past the pid written at the start of the lock file (a
#: locked byte cannot be read by another process there, and the next one reads the pid).
_LOCK_OFFSET = 64


def _try_lock(fd: int, root: Path) -> bool:
    """Lock ``fd`` (``root``'s lock file) for this process (the OS drops the lock if it
    dies); ``False`` when another emulator holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            # A file system without locks (NFS without lockd, some FUSE and VM shares, as a
            # macOS dir mounted into a Docker container): the emulator runs, unguarded.
            log.warning(
                "cannot lock %s (%s): nothing stops a second emulator from using it",
                root,
                exc.strerror or exc,
            )
        return True
    msvcrt = importlib.import_module("msvcrt")
    os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # locked by another handle
        return False
    return True


def _unlock_root(fd: int) -> None:
    """Release :func:`_lock_root`'s lock (closing is enough for flock; Windows asks for the
    byte to be unlocked first, or may keep it locked a while after the close)."""
    try:
        if fcntl is None:
            msvcrt = importlib.import_module("msvcrt")
            os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
            with contextlib.suppress(OSError):
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)


def _lock_root(root: Path) -> int:
    """Take ``root`` for this emulator (an exclusive lock, dropped by the OS if the process
    dies): two emulators on one dir would delete each other's uploads in flight."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(root / _LOCK_FILE, flags, 0o600)
    try:
        locked = _try_lock(fd, root)
        holder = "?"
        if not locked:
            with contextlib.suppress(OSError):  # only for the message
                os.lseek(fd, 0, os.SEEK_SET)  # no pread on Windows
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
    except BaseException:
        os.close(fd)
        raise
    if not locked:
        os.close(fd)
        raise RuntimeError(
            f"{root} is in use by another emulator (process {holder}); give each emulator its "
            "own root_dir / state_dir"
        )
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, str(os.getpid()).encode())
    return fd
