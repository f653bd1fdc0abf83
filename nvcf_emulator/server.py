"""Server mode: the emulator's WSGI app on a real socket (werkzeug's threaded server; each
connection is handled by :mod:`.connection`, with HTTP/1.1 keep-alive)."""

from __future__ import annotations

import contextlib
import functools
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Self, TypeVar

from werkzeug.serving import ThreadedWSGIServer

from .connection import Handler
from .domain.clock import monotonic
from .emulator import Emulator
from .http.admin import LOOPBACK_SERVER_KEY, is_loopback_host
from .http.control import SERVER_STORAGE_KEY

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .config import EmulatorConfig
    from .domain.accounts import Accounts
    from .domain.assets import AssetService
    from .domain.calls import CallLog
    from .domain.clock import Clock
    from .domain.faults import Faults
    from .domain.functions import FunctionService
    from .domain.ids import Ids
    from .domain.invocations import Invocation
    from .worker.containers import Container

log = logging.getLogger("nvcf_emulator.server")

#: The longest idle timeout a connection may have (a day; a socket timeout must be finite).
MAX_IDLE_TIMEOUT = 86400.0
#: Seconds stopping waits, after the grace, for all connection threads together to end once
#: their sockets are shut (a thread still in the app, waiting on a slow container, cannot be cut).
JOIN_SECONDS = 5.0


def check_idle_timeout(seconds: float, what: str = "idle_timeout") -> float:
    """``seconds`` as a float if it is above 0 and at most a day, else a ValueError naming
    ``what`` (NaN fails too)."""
    if not 0 < seconds <= MAX_IDLE_TIMEOUT:
        raise ValueError(
            f"{what} must be above 0 and at most {MAX_IDLE_TIMEOUT:g} seconds, got {seconds!r}"
        )
    return float(seconds)


def check_host(host: str, what: str = "host") -> str:
    """``host`` if it names an address to bind, else a ValueError naming ``what``: ``""``
    binds every interface, but no URL can name it."""
    if not host.strip():
        raise ValueError(
            f"{what} must name an address to bind (127.0.0.1, or 0.0.0.0 for every "
            f"interface), got {host!r}"
        )
    return host


class _Busy:
    """Counts requests being served: from their request line to the end of their response."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = threading.Condition()

    def begin(self) -> None:
        with self.idle:
            self.count += 1

    def end(self) -> None:
        with self.idle:
            self.count -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.count <= 0, timeout)


def _served(app: WSGIApplication, server: EmulatorServer, loopback: bool) -> WSGIApplication:
    """``app`` told how it is served: on loopback only (see :func:`admin.rebound_host`), and
    the storage URL the server gave it, if any (see :func:`control._upload_base`)."""

    def marked(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if loopback:
            environ[LOOPBACK_SERVER_KEY] = True
        if server.own_storage_url is not None:
            environ[SERVER_STORAGE_KEY] = server.own_storage_url
        return app(environ, start_response)

    return marked


def _readable_now(sock: socket.socket) -> bool:
    """Whether ``sock`` has bytes (or its end) to read now: ``poll`` where there is one (any
    fd number), else ``select`` (Windows, which has no ``poll``)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


class _Server(ThreadedWSGIServer):
    """Tracks open connections so that stopping closes them and joins their threads, and
    serves at most ``max_connections`` at once (further ones wait in the listen backlog)."""

    daemon_threads = True

    def __init__(self, *args: Any, max_connections: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conns: dict[socket.socket, threading.Thread | None] = {}
        self._conns_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self.busy = _Busy()
        #: Kept-alive connections waiting for their next request.
        self.idle: set[socket.socket] = set()
        #: Seconds a connection may send nothing before it is closed.
        self.idle_timeout: float = 30.0
        self.closing = False
        #: The clock responses are dated by (see :meth:`Handler.date_time_string`).
        self.clock: Clock | None = None

    def process_request(self, request: Any, client_address: Any) -> None:
        while not self._slots.acquire(blocking=False):
            # Every slot is taken: idle keep-alive connections give theirs up (their clients
            # reconnect), so that a new client is not kept waiting for an idle one's timeout.
            self._close_idle()
            if self._slots.acquire(timeout=0.05):
                break
            if self.closing:
                with contextlib.suppress(OSError):
                    request.close()
                return
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._conns_lock:
            self._conns[request] = thread
        thread.start()

    def _close_idle(self) -> None:
        for sock in list(self.idle):
            try:  # a request that has just come in is not cut off
                if _readable_now(sock):
                    continue
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):  # closed meanwhile
                continue

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            tracked = self._conns.pop(request, None) is not None
        super().shutdown_request(request)
        if tracked:
            self._slots.release()

    def close_connections(self, timeout: float | None = None) -> None:
        """Shut every connection and join their threads: ``timeout`` seconds (default
        :data:`JOIN_SECONDS`) for all of them together, not for each in turn, in real time
        (under a frozen freezegun, ``time.monotonic`` would grant it to each thread again)."""
        with self._conns_lock:
            conns = list(self._conns.items())
        for sock, _ in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = monotonic() + (JOIN_SECONDS if timeout is None else timeout)
        for _, thread in conns:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - monotonic()))


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _forward(
    method: Callable[Concatenate[Any, _P], _R],
) -> Callable[Concatenate[EmulatorServer, _P], _R]:
    """The emulator's ``method``, on the server: same signature, same docs, for type checkers
    and ``help()`` alike."""
    name = method.__name__

    @functools.wraps(method)
    def forwarded(self: EmulatorServer, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        bound: Callable[_P, _R] = getattr(self.emulator, name)
        return bound(*args, **kwargs)

    return forwarded


class EmulatorServer:
    """An :class:`Emulator` served on ``host:port`` (port 0 picks a free one).

    It has the emulator's inspection and set-up API too (``asset_bytes``, ``invocations``,
    ``faults``, ``add_function``, ...), so that the ``nvcf`` and ``nvcf_server`` fixtures look
    alike; ``emulator`` is the emulator itself. Once stopped, a server cannot start again:
    ``emulator.serve()`` makes a new one.
    """

    def __init__(
        self,
        emulator: Emulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        own_storage_urls: bool = True,
        max_connections: int = 64,
    ) -> None:
        """``own_storage_urls=False`` leaves upload URLs pointing where they did (the dashboard
        of an in-process emulator); otherwise they point at this server, unless the emulator's
        ``storage_base_url`` is set. At most ``max_connections`` connections are served at
        once (one thread each); when all are taken, idle keep-alive ones are closed for a new
        client, and further clients wait in the listen backlog."""
        emulator._check_open("serve it")
        check_host(host)
        self.emulator = emulator
        self._stopped = False
        #: The storage URL this server gave the emulator (its upload URLs point here).
        self.own_storage_url: str | None = None
        # Bind ourselves: werkzeug's own bind prints and calls sys.exit() when the port is taken,
        # which a library must not do. A plain OSError reaches the caller instead. (And
        # create_server sets SO_REUSEADDR only where it does not let a second server bind a
        # port in use: not on Windows, cpython#85307.)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=128)
        try:
            self._server = _Server(
                host,
                port,
                _served(emulator.app, self, is_loopback_host(host)),
                handler=Handler,
                fd=listener.fileno(),
                max_connections=max_connections,
            )
        finally:
            listener.close()  # werkzeug holds its own duplicate of the socket
        self._server.clock = emulator.clock
        self.host = host
        self.port = int(self._server.server_address[1])
        bracketed = f"[{host}]" if ":" in host else host
        self.url = f"http://{bracketed}:{self.port}"
        if own_storage_urls and emulator.config.storage_base_url is None:
            emulator.storage_url = self.own_storage_url = f"{self.url}/{emulator.config.bucket}"
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        self._stopping = threading.Event()

    # The same inspection surface as the emulator, so fixtures look alike in both modes.
    @property
    def base_url(self) -> str:
        return self.url

    @property
    def api_key(self) -> str:
        return self.emulator.api_key

    @property
    def headers(self) -> dict[str, str]:
        return self.emulator.headers

    @property
    def clock(self) -> Clock:
        return self.emulator.clock

    @property
    def idle_timeout(self) -> float:
        """Seconds a connection may stay silent (mid-request or idle) before it is closed."""
        return self._server.idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, seconds: float) -> None:
        self._server.idle_timeout = check_idle_timeout(seconds)

    @property
    def busy_connections(self) -> int:
        """Requests being served right now (from their request line to their response)."""
        return self._server.busy.count

    # -- the emulator's API, typed (see _forward) ---------------------------------------------

    add_function = _forward(Emulator.add_function)
    register_image = _forward(Emulator.register_image)
    set_function_status = _forward(Emulator.set_function_status)
    function = _forward(Emulator.function)
    stored_assets = _forward(Emulator.stored_assets)
    asset_bytes = _forward(Emulator.asset_bytes)
    asset_path = _forward(Emulator.asset_path)
    upload_url = _forward(Emulator.upload_url)
    configure = _forward(Emulator.configure)
    reset = _forward(Emulator.reset)
    sweep = _forward(Emulator.sweep)
    maybe_sweep = _forward(Emulator.maybe_sweep)
    dashboard = _forward(Emulator.dashboard)

    @property
    def config(self) -> EmulatorConfig:
        return self.emulator.config

    @property
    def invocations(self) -> list[Invocation]:
        """Every invocation since the last reset, oldest first."""
        return self.emulator.invocations

    @property
    def faults(self) -> Faults:
        return self.emulator.faults

    @property
    def calls(self) -> CallLog:
        return self.emulator.calls

    @property
    def ids(self) -> Ids:
        return self.emulator.ids

    @property
    def root(self) -> Path:
        return self.emulator.root

    @property
    def accounts(self) -> Accounts:
        return self.emulator.accounts

    @property
    def assets(self) -> AssetService:
        return self.emulator.assets

    @property
    def functions(self) -> FunctionService:
        return self.emulator.functions

    @property
    def images(self) -> dict[str, Container]:
        return self.emulator.images

    @property
    def storage_url(self) -> str:
        return self.emulator.storage_url

    @property
    def api_hosts(self) -> frozenset[str]:
        return self.emulator.api_hosts

    @property
    def storage_hosts(self) -> frozenset[str]:
        return self.emulator.storage_hosts

    @property
    def routed_hosts(self) -> frozenset[str]:
        return self.emulator.routed_hosts

    if not TYPE_CHECKING:
        # The rest of the emulator, untyped (kept for code written before the names above).
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__") or name in ("emulator", "_server", "_thread", "_stopped"):
                raise AttributeError(name)
            return getattr(self.emulator, name)

    @property
    def running(self) -> bool:
        """``True`` between :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    def __repr__(self) -> str:
        url = getattr(self, "url", "?")
        if getattr(self, "_stopped", False):
            state = "stopped"
        else:
            state = "running" if getattr(self, "_thread", None) is not None else "not started"
        return f"<EmulatorServer {url} {state}>"

    def start(self) -> Self:
        """Serve in background threads (a no-op when running). A stopped server cannot start
        again (``RuntimeError``): its socket is closed."""
        if self._stopped:
            raise RuntimeError(
                f"this EmulatorServer ({self.url}) is stopped: its socket is closed and it "
                "cannot start again; call emulator.serve() for a new server"
            )
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name=f"nvcf-emulate:{self.port}", daemon=True
            )
            self._thread.start()
            self._stopping.clear()
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name=f"nvcf-emulate-sweep:{self.port}", daemon=True
            )
            self._sweeper.start()
        return self

    def _sweep_loop(self) -> None:
        # Expired assets lose their bytes even when no request comes in to trigger the sweep.
        while not self._stopping.wait(1.0):
            try:
                self.emulator.maybe_sweep()
            except Exception:  # pragma: no cover - a sweep failure must not kill the server
                log.exception("sweep failed")

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace`` seconds), close
        idle keep-alive connections and join every thread. Takes milliseconds when idle."""
        server = self._server
        self._stopped = True
        server.closing = True
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
            self._sweeper = None
        if self._thread is None:
            server.server_close()
            return
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        # serve_forever only looks at the shutdown flag between polls (0.5 s apart): wake it
        # with a connection so stopping costs milliseconds.
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=0.05).close()
            stopper.join(0.01)
        if not server.busy.wait_idle(grace):
            log.warning("stopping with requests still in flight after %.1f s", grace)
        server.close_connections()
        server.server_close()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
