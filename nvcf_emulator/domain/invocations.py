"""Invocations: the request records of pexec, and the emulated worker that runs them.

Each ``POST /v2/nvcf/pexec/...`` makes an :class:`Invocation` and hands it to a bounded thread
pool (the emulated GPU workers), so the control plane keeps answering while containers work.
A poll (the POST itself or ``GET /v2/nvcf/pexec/status/{id}``) waits on the record's condition
for the next *event*: a progress update (202 at once), the container's own 202, or the outcome.

Time rules, all against the emulator's :class:`Clock` and checked lazily on lookup: a record
lives at most ``request_ttl`` (1 h); after a 202, the client has ``max(2 * poll, 10 s)`` to
poll again or the request is cancelled. The poll window itself is real time (a thread waits).
A container that runs longer than ``container_timeout`` (real time) gets NVCF's inference
connection error, from the watcher thread that also reads progress files.

With a state store (``--state-dir``), a result is saved when it is settled and still waits to
be fetched: its metadata as a ``result`` record, its body as ``results/<id>.body`` (large
results: their zip, ``results/<id>.zip``, and a ``large-result`` record per download token),
written atomically. After a restart it is delivered once, then 404 as usual. Requests still
queued or running when the process dies have no record: polling them answers NVCF's 404.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import queue
import re
import threading
import time
import traceback
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import Headers

from ..headers import MAX_HEADER_BYTES
from ..storage.state import NullStateStore, StateStore
from ..worker import gojson, staging
from ..worker.containers import (
    HOP_BY_HOP,
    Container,
    ContainerConnectionError,
    ContainerRequest,
    ContainerResponse,
    hop_by_hop,
)
from .accounts import Account
from .assets import Asset
from .clock import Clock, monotonic  # waits in real time, whatever freezegun does; TTLs: Clock
from .errors import NotFound
from .functions import ENVIRONMENT, INVOCABLE, FunctionVersion

if TYPE_CHECKING:
    from ..config import EmulatorConfig
    from ..storage.base import BlobStore

log = logging.getLogger("nvcf_emulator.worker")

#: A client header that turns the worker's response mapping off (NVCF worker-utils, work.go).
COMPAT_OFF_HEADER = "nvcf-feature-disable-worker-compatibility"
#: Invocation records kept for inspection (``Emulator.invocations``); older ones are dropped.
MAX_HISTORY = 1000
#: ... and the request and response bodies those records hold, at most: past it the oldest
#: records go too (the newest stays, whatever its size). 1,000 records of 5 MiB calls would
#: otherwise keep 10 GiB alive in an emulator shared by a whole test session.
MAX_HISTORY_BYTES = 256 * 1024 * 1024
#: Progress updates held for a request nobody polls (NVCF docs: "first 256 unread kept").
MAX_PENDING_UPDATES = 256
#: Progress updates a record keeps for inspection (``Invocation.progress``): the latest ones. A
#: container may write one every frame for its whole ``container_timeout``.
MAX_PROGRESS_KEPT = 1000
#: State-store kinds: settled results waiting to be fetched, and large-result download tokens.
RESULT_KIND = "result"
LARGE_RESULT_KIND = "large-result"

INFERENCE_SERVICE = "urn:inference-service:problem-details:"
INFERENCE_CONNECTION = "urn:inference-connection:problem-details:"
WORKER_SERVICE = "urn:nvcf-worker-service:problem-details:"

#: Headers the worker sets; a client's own values for them never reach the container.
WORKER_HEADERS = (
    "NVCF-REQID",
    "NVCF-SUB",
    "NVCF-NCAID",
    "NVCF-FUNCTION-NAME",
    "NVCF-FUNCTION-ID",
    "NVCF-FUNCTION-VERSION-ID",
    "NVCF-ASSET-DIR",
    "NVCF-FUNCTION-ASSET-IDS",
    "NVCF-LARGE-OUTPUT-DIR",
    "NVCF-MAX-RESPONSE-SIZE-BYTES",
    "NVCF-NSPECTID",
    "NVCF-BACKEND",
    "NVCF-INSTANCETYPE",
    "NVCF-REGION",
    "NVCF-ENV",
    "NVCF-INVOCATION-REGION",
    "NVCF-POLL-SECONDS",
)
_DROPPED = (
    HOP_BY_HOP
    | {h.lower() for h in WORKER_HEADERS}
    | {"authorization", "host", "content-length", "expect"}
)


class InvocationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FULFILLED = "fulfilled"
    ERRORED = "errored"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProgressUpdate:
    """One read of the container's progress file."""

    progress: int
    partial_response: Any
    at: float


@dataclass(frozen=True)
class StillWorking:
    """The container itself answered 202: the client gets that 202 (in-progress), with the
    container's body and headers."""

    at: float
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass
class Outcome:
    """What the client gets once the request is done.

    ``kind``: ``response`` (the container's answer, inline), ``redirect`` (a zip of a large
    result; ``token`` names it), ``problem`` (an NVCF error: ``problem_prefix``/``title``/
    ``detail``), or ``stream`` (``chunks`` are forwarded as they arrive).
    """

    kind: str
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: Iterator[bytes] | None = None
    token: str | None = None
    #: ``type`` of the problem JSON, up to the kebab-case title (e.g. ``urn:...:problem-details:``).
    problem_prefix: str = ""
    title: str = ""
    detail: str = ""
    #: The whole ``type``, when it is not the prefix and the kebab-case title.
    problem_type: str | None = None

    @property
    def nvcf_status(self) -> str:
        return "fulfilled" if 200 <= self.status < 400 else "errored"


Event = ProgressUpdate | StillWorking | Outcome


class Signal:
    """A wake-up between threads on one C-level lock: ``set`` releases it, ``wait`` takes it.

    Like ``threading.Event`` with an auto-clearing ``wait``, minus the Python-level
    ``Condition`` under Event (its waiter locks and notify loop showed as ~10% of the server's
    GIL time under load). A ``set`` before the ``wait`` is not lost; waiters re-check their
    state after every wake-up, so a spare one is harmless.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        try:  # noqa: SIM105 - contextlib.suppress costs a context manager per wake-up
            self._lock.release()
        except RuntimeError:  # already set
            pass

    def clear(self) -> None:
        self._lock.acquire(False)

    def wait(self, timeout: float) -> bool:
        """``True`` when set within ``timeout`` seconds (and then cleared again)."""
        return self._lock.acquire(timeout=max(0.0, timeout))


@dataclass(eq=False)
class Invocation:
    """The record of one invocation (what ``Emulator.invocations`` lists)."""

    request_id: str
    function_id: str
    version_id: str
    function_name: str
    nca_id: str
    #: The client's call: method, path, headers (``Authorization`` masked) and body.
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    asset_ids: list[str]
    poll_seconds: int
    streaming: bool
    created_at: float
    #: False when the client sent ``nvcf-feature-disable-worker-compatibility: true``: like
    #: streaming mode, the container's answer then goes back as it is (no error mapping, no
    #: 302, no progress), as NVCF's worker does.
    compat: bool = True
    #: Where the container is called: the function's ``inferenceUrl`` (``None``), or, for a
    #: pass-through call (``https://<functionId>.invocation.<host>/<path>``), the client's own
    #: path and query, as NVCF's invocation service forwards them.
    container_path: str | None = None
    status: InvocationStatus = InvocationStatus.QUEUED
    #: What the container was sent (headers as the container saw them) and what it answered
    #: (the body is ``b""`` when it was streamed through).
    container_request: ContainerRequest | None = None
    container_response: ContainerResponse | None = None
    #: Every request the container got: the first, then one ``GET <inferenceUrl>`` per status
    #: poll while it kept answering 202 (NVCF forwards each poll, without a body).
    container_requests: list[ContainerRequest] = field(default_factory=list)
    #: How many times the container was called (more than one when it answered 202).
    container_calls: int = 0
    asset_dir: Path | None = None
    output_dir: Path | None = None
    staged_files: list[Path] = field(default_factory=list)
    #: Files the container left in its large-output dir, relative to it.
    output_files: list[str] = field(default_factory=list)
    #: The container's progress updates, the latest MAX_PROGRESS_KEPT of them.
    progress: list[ProgressUpdate] = field(default_factory=list)
    outcome: Outcome | None = None
    #: The status codes the client was answered with, in order (202s, then the result).
    delivered: list[int] = field(default_factory=list)
    #: A container's exception or the worker's failure, as a traceback.
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: Seconds (real time) from the worker picking the request up to its outcome.
    duration: float | None = None
    # -- internal state --
    expires_at: float = 0.0
    abandon_at: float | None = None
    #: Guards ``outcome``/``_pending`` against their waiters; ``_changed`` wakes the waiters.
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _changed: Signal = field(default_factory=Signal, repr=False)
    _waiters: int = field(default=0, repr=False)
    _pending: deque[Event] = field(default_factory=deque, repr=False)
    #: A status poll arrived (a container that answered 202 is then asked again).
    _poll: Signal = field(default_factory=Signal, repr=False)
    _poll_request: tuple[list[tuple[str, str]], int] | None = field(default=None, repr=False)
    #: The worker thread running the request, until the request is over.
    _worker: threading.Thread | None = field(default=None, repr=False)
    #: The container answered 202 in the default mode and is not asked again: only the
    #: client's going (or the request's hour) ends it, so closing does not wait for it.
    _parked: bool = field(default=False, repr=False)
    _progress_sig: tuple[int, bytes] | None = field(default=None, repr=False)
    _started_mono: float | None = field(default=None, repr=False)
    #: When the request arrived, in real time: its poll window runs on real time, whatever
    #: the emulated clock does meanwhile.
    _created_mono: float = field(default_factory=monotonic, repr=False)
    _staged: staging.StagedRequest | None = field(default=None, repr=False)
    _purged: bool = field(default=False, repr=False)
    #: A streamed outcome went to a client: it has one reader, later polls get a 404.
    _stream_taken: bool = field(default=False, repr=False)
    #: The result is saved in the state store (and its body in this file, if any).
    _saved: bool = field(default=False, repr=False)
    _body_file: Path | None = field(default=None, repr=False)
    #: Body bytes this record counts against MAX_HISTORY_BYTES (``None``: not in the history).
    _held: int | None = field(default=None, repr=False)

    def _body_bytes(self) -> int:
        held = len(self.request_body)
        response = self.container_response.body if self.container_response else b""
        held += len(response)
        if self.outcome is not None and self.outcome.body is not response:
            held += len(self.outcome.body)
        return held

    @property
    def container_headers(self) -> dict[str, str]:
        """The headers the container received (empty before it was called)."""
        if self.container_request is None:
            return {}
        return dict(self.container_request.headers.items())

    @property
    def response_status(self) -> int | None:
        return self.container_response.status if self.container_response else None

    @property
    def response_body(self) -> bytes | None:
        return self.container_response.body if self.container_response else None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def __repr__(self) -> str:
        # The dataclass repr, with bodies, tracebacks and long lists cut short: a failing
        # assert, a log line or a debugger shows it whole, whatever the request carried.
        shown = (f for f in dataclasses.fields(self) if f.repr)
        parts = ", ".join(f"{f.name}={_short(getattr(self, f.name))}" for f in shown)
        return f"Invocation({parts})"


#: Longest text or bytes shown whole in an Invocation's repr.
_REPR_LIMIT = 200


def _short(value: object, limit: int = _REPR_LIMIT) -> str:
    """``repr(value)`` with long bytes/str cut (their length shown), container requests and
    responses summed up, and lists of more than a few items counted."""
    if isinstance(value, bytes | bytearray):
        if len(value) <= limit:
            return repr(bytes(value))
        return f"<{len(value)} bytes: {bytes(value[:60])!r}...>"
    if isinstance(value, str):
        if len(value) <= limit * 5:  # a traceback stays readable whole up to ~1 kB
            return repr(value)
        return f"<{len(value)} chars: {value[: limit * 2]!r}...{value[-limit * 2 :]!r}>"
    if isinstance(value, ContainerRequest):
        return (
            f"ContainerRequest({value.method} {_short(value.path)}, body={_short(value.body, 60)})"
        )
    if isinstance(value, ContainerResponse):
        return f"ContainerResponse({value.status}, body={_short(value.body, 60)})"
    if isinstance(value, list):
        items = [_short(item, 60) for item in value[:5]]
        more = f", ... {len(value) - 5} more" if len(value) > 5 else ""
        return f"[{', '.join(items)}{more}]"
    if isinstance(value, dict):
        text = repr(value)
        return text if len(text) <= limit * 10 else f"<dict of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit * 10 else f"{text[: limit * 5]}...>"


def _problem(status: int, prefix: str, title: str, detail: str) -> Outcome:
    return Outcome(kind="problem", status=status, problem_prefix=prefix, title=title, detail=detail)


def connection_error() -> Outcome:
    return _problem(
        500,
        INFERENCE_CONNECTION,
        "Internal Server Error",
        "Inference connection error while making inference request",
    )


def _due(inv: Invocation, now: float) -> bool:
    """A record past its lifetime, or whose client stopped polling after a 202."""
    return now >= inv.expires_at or (inv.abandon_at is not None and now > inv.abandon_at)


def no_worker() -> Outcome:
    """NVCF's answer to a request no worker took: 504, ``NVCF-STATUS: errored``, no body."""
    return Outcome("response", 504, [], b"")


def worker_error(detail: str = "Internal error while making inference request") -> Outcome:
    return _problem(500, WORKER_SERVICE, "Internal Server Error", detail)


#: Go's ``net/http.StatusText`` for the error codes it names: NVCF's worker titles a
#: container's error with it (an unnamed code gets an empty title).
GO_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request URI Too Long",
    415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable",
    417: "Expectation Failed",
    418: "I'm a teapot",
    421: "Misdirected Request",
    422: "Unprocessable Entity",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}


def go_member(doc: Mapping[str, Any], name: str) -> Any:
    """A member as Go's JSON decoder fills a struct field from ``doc``: keys match it in any
    case, and the last matching key wins; None when none does."""
    value = None
    for key, item in doc.items():
        if key.lower() == name.lower():
            value = item
    return value


def container_error(status: int, body: bytes) -> Outcome:
    """NVCF's mapping of a container's 4xx/5xx (its worker's ``CreateErrorResponse``): the
    title is Go's status text, the type that text lower-cased with ``-`` for spaces, and the
    detail the body's JSON ``error`` member (any case), else "Inference error"."""
    title = GO_STATUS_TEXT.get(status, "")
    detail = "Inference error"
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        error = go_member(doc, "error")
        if isinstance(error, str) and error:
            detail = error
    outcome = _problem(status, INFERENCE_SERVICE, title, detail)
    outcome.problem_type = INFERENCE_SERVICE + title.lower().replace(" ", "-")
    return outcome


_UINT32_MAX = 2**32 - 1


class WorkerPool:
    """``size`` daemon threads taking work from a queue.

    Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so one container
    that never returns would hang the test run on its way out. These are daemon threads.
    """

    def __init__(self, size: int, name: str = "nvcf-worker") -> None:
        self.size = size
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        #: Threads left inside a container that outlived its request: they end when it returns.
        self._abandoned: set[threading.Thread] = set()
        self._started = 0
        self._threads = [self._thread() for _ in range(size)]
        for thread in self._threads:
            thread.start()

    def _thread(self) -> threading.Thread:
        self._started += 1
        return threading.Thread(
            target=self._work, name=f"{self._name}-{self._started - 1}", daemon=True
        )

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._queue.put((fn, args))

    def abandon(self, thread: threading.Thread) -> None:
        """``thread`` is stuck in a container whose request is over (Python cannot stop it):
        a new thread takes its place, and it ends once the container returns."""
        with self._lock:
            if thread not in self._threads:
                return
            self._threads.remove(thread)
            self._abandoned.add(thread)
            replacement = self._thread()
            self._threads.append(replacement)
        replacement.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # pragma: no cover - _run catches everything itself
                log.exception("worker task failed")
            with self._lock:
                if me in self._abandoned:
                    self._abandoned.discard(me)
                    return

    def retire(self) -> None:
        """Let the threads finish the work already queued, then stop (a pool being replaced)."""
        for _ in self._threads:
            self._queue.put(None)

    def shutdown(self, timeout: float = 0.0) -> None:
        """Stop the idle threads (queued work is dropped); wait ``timeout`` s for busy ones."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put(None)
        deadline = monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - monotonic()))


@dataclass
class LargeResult:
    path: Path
    filename: str
    expires_at: float


def result_token(expires_at: float) -> str:
    """A large result's download token: a secret, then when its link expires (epoch
    seconds), as a pre-signed URL carries its expiry: a link can be told expired once its
    zip is gone too (after the watcher removed it, or a restart)."""
    return f"{uuid.uuid4().hex}{uuid.uuid4().hex}-{math.ceil(expires_at)}"


def token_expiry(token: str) -> float | None:
    """When the link of a :func:`result_token` expires (``None``: not such a token)."""
    _, sep, expiry = token.rpartition("-")
    return float(expiry) if sep and expiry.isascii() and expiry.isdigit() else None


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temp file next to ``path``, flush it to disk, rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        # Opened for writing: Windows' fsync (FlushFileBuffers) refuses a read-only handle.
        fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _result_record(inv: Invocation, outcome: Outcome, body_file: Path | None) -> dict[str, Any]:
    return {
        "request_id": inv.request_id,
        "function_id": inv.function_id,
        "version_id": inv.version_id,
        "function_name": inv.function_name,
        "nca_id": inv.nca_id,
        "method": inv.method,
        "path": inv.path,
        "asset_ids": inv.asset_ids,
        "poll_seconds": inv.poll_seconds,
        "streaming": inv.streaming,
        "compat": inv.compat,
        "created_at": inv.created_at,
        "started_at": inv.started_at,
        "finished_at": inv.finished_at,
        "status": inv.status.value,
        "expires_at": inv.expires_at,
        "abandon_at": inv.abandon_at,
        "delivered": inv.delivered,
        "output_files": inv.output_files,
        "error": inv.error,
        "outcome": {
            "kind": outcome.kind,
            "status": outcome.status,
            "headers": [list(h) for h in outcome.headers],
            "token": outcome.token,
            "problem_prefix": outcome.problem_prefix,
            "title": outcome.title,
            "detail": outcome.detail,
            "problem_type": outcome.problem_type,
            "body_file": body_file.name if body_file is not None else None,
        },
    }


class InvocationService:
    """Every invocation of one emulator, and the worker pool running them. Thread-safe."""

    def __init__(
        self,
        clock: Clock,
        store: BlobStore,
        *,
        config: Callable[[], EmulatorConfig],
        container_for: Callable[[FunctionVersion], Container | None],
        staging_roots: Callable[[Sequence[Asset]], tuple[Path, Path]],
        results_dir: Path,
        state: StateStore | None = None,
    ) -> None:
        self.clock = clock
        self.state: StateStore = state or NullStateStore()
        self._persist = not isinstance(self.state, NullStateStore)
        self.store = store
        self._config = config
        self._container_for = container_for
        #: (asset root, output root) for a request referencing these assets.
        self._staging_roots = staging_roots
        self.results_dir = results_dir
        self._lock = threading.RLock()
        self._records: dict[str, Invocation] = {}
        #: The last MAX_HISTORY invocations, oldest first, holding at most MAX_HISTORY_BYTES
        #: of request and response bodies (see :meth:`_remember`).
        self.history: deque[Invocation] = deque()
        self._history_bytes = 0
        self._queued: list[Invocation] = []
        self._running: set[Invocation] = set()
        self._results: dict[str, LargeResult] = {}
        self._pool: WorkerPool | None = None
        self._watcher: threading.Thread | None = None
        self._watcher_idle = False
        self._wake = Signal()
        self._stop = threading.Event()
        #: Set by close(): no watcher is started and no container called after it.
        self._closed = False

    # -- submitting ------------------------------------------------------------------------------

    def _executor(self) -> WorkerPool:
        size = self._config().worker_threads
        if self._pool is None or self._pool.size != size:
            if self._pool is not None:
                self._pool.retire()  # its threads finish what is queued, then stop
            self._pool = WorkerPool(size)
        return self._pool

    def submit(
        self,
        account: Account,
        version: FunctionVersion,
        assets: Sequence[Asset],
        *,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        poll_seconds: int,
        streaming: bool,
        container_path: str | None = None,
    ) -> Invocation:
        now = self.clock.now()
        recorded = {k: ("Bearer ***" if k.lower() == "authorization" else v) for k, v in headers}
        inv = Invocation(
            request_id=str(uuid.uuid4()),
            function_id=version.function_id,
            version_id=version.version_id,
            function_name=version.name,
            nca_id=account.nca_id,
            method=method,
            path=path,
            request_headers=recorded,
            request_body=body,
            asset_ids=[a.asset_id for a in assets],
            poll_seconds=poll_seconds,
            streaming=streaming,
            compat=not any(
                # NVCF's worker compares the value with == "true": "TRUE" leaves the mapping on.
                k.lower() == COMPAT_OFF_HEADER and v.strip() == "true"
                for k, v in headers
            ),
            container_path=container_path,
            created_at=now,
            expires_at=now + self._config().request_ttl,
        )
        with self._lock:
            self._records[inv.request_id] = inv
            self._remember(inv)
            self._queued.append(inv)
            pool = self._executor()
        pool.submit(self._run, inv, version, list(assets), list(headers))
        return inv

    # -- polling ---------------------------------------------------------------------------------

    def lookup(self, account: Account, request_id: str) -> Invocation:
        """A live record of ``account``, or NVCF's 404 (unknown, delivered, expired, cancelled)."""
        with self._lock:
            inv = self._records.get(request_id)
            if inv is None or inv.nca_id != account.nca_id:
                raise NotFound(f"Request id '{request_id}' not found")
            if _due(inv, self.clock.now()):
                self._cancel(inv)
                raise NotFound(f"Request id '{request_id}' not found")
            return inv

    def _cancel_if_due(self, inv: Invocation) -> Outcome | None:
        """Cancel a record past its hour (or abandoned) now, as the next sweep would: a waiter
        gets the same answer whether or not other traffic made a sweep run first."""
        with self._lock:
            if self._records.get(inv.request_id) is inv and _due(inv, self.clock.now()):
                self._cancel(inv)
        return inv.outcome if inv._purged else None

    def next_event(
        self,
        inv: Invocation,
        timeout: float,
        *,
        poll_headers: Sequence[tuple[str, str]] | None = None,
    ) -> Event | None:
        """Wait up to ``timeout`` seconds for the next thing to tell the client.

        ``poll_headers`` marks a status poll (not the POST): a container that answered 202 is
        then asked again, with these headers.
        """
        if poll_headers is not None:
            # The client is back: its request is not abandoned while it waits (answered_202
            # starts the next idle window when this poll gets its 202).
            inv.abandon_at = None
            inv._poll_request = (list(poll_headers), max(1, math.ceil(timeout)))
            inv._poll.set()
        deadline = monotonic() + max(0.0, timeout)
        woken = False
        while True:
            with inv._mutex:
                event: Event | None = None
                if inv._pending:
                    event = inv._pending.popleft()
                elif inv.outcome is not None:
                    event = inv.outcome
                if woken:
                    inv._waiters -= 1
                if isinstance(event, Outcome) and event.kind == "stream":
                    if inv._stream_taken:  # one stream, one reader: the record is gone
                        if inv._waiters:
                            inv._changed.set()
                        raise NotFound(f"Request id '{inv.request_id}' not found")
                    inv._stream_taken = True
                if event is not None:
                    if woken and inv._waiters:
                        inv._changed.set()  # a change wakes one waiter: pass it on
                    return event
                remaining = deadline - monotonic()
                if remaining > 0:
                    inv._waiters += 1
            if remaining <= 0:
                return self._cancel_if_due(inv)
            woken = True
            inv._changed.wait(remaining)

    def answered_202(self, inv: Invocation, poll_seconds: int | None = None) -> None:
        """The client got a 202 to a call with a ``poll_seconds`` window (the POST's when not
        given): it has ``max(2 * poll_seconds, 10 s)`` to poll again."""
        window = inv.poll_seconds if poll_seconds is None else poll_seconds
        with self._lock:
            inv.delivered.append(202)
            inv.abandon_at = self.clock.now() + max(2 * window, 10)

    def answered(self, inv: Invocation, status: int) -> None:
        """The client got the result: the record is gone (a second fetch is a 404)."""
        with self._lock:
            inv.delivered.append(status)
            self._records.pop(inv.request_id, None)
            inv._purged = True
            self._unsave(inv)

    def position(self, inv: Invocation) -> int:
        with self._lock:
            try:
                return self._queued.index(inv) + 1
            except ValueError:
                return 0

    def queue_depth(self, function_id: str, version_id: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for i in self._queued
                if i.function_id == function_id and version_id in (None, i.version_id)
            )

    # -- large results ---------------------------------------------------------------------------

    def large_result(self, token: str) -> LargeResult | None:
        with self._lock:
            result = self._results.get(token)
            if result is None:
                return None
            if self.clock.now() >= result.expires_at:
                self._drop_result(token)
                return None
            return result

    def _drop_result(self, token: str) -> None:
        result = self._results.pop(token, None)
        self.state.delete(LARGE_RESULT_KIND, token)
        if result is not None:
            result.path.unlink(missing_ok=True)

    # -- the worker ------------------------------------------------------------------------------

    def _container_headers(
        self,
        inv: Invocation,
        version: FunctionVersion,
        staged: staging.StagedRequest,
        client_headers: Sequence[tuple[str, str]],
        *,
        with_assets: bool = True,
        poll_seconds: int | None = None,
        since: float | None = None,
    ) -> Headers:
        cfg = self._config()
        # The client's headers never carry a worker header's name (_DROPPED has them all), so
        # one list in one go: Headers.set per worker header rescans the list each time.
        dropped = _DROPPED | hop_by_hop(client_headers)  # what its Connection lists too
        forwarded = [(k, v) for k, v in client_headers if k.lower() not in dropped]
        backend, instance_type = version.placement()
        window = inv.poll_seconds if poll_seconds is None else poll_seconds
        elapsed = monotonic() - (inv._created_mono if since is None else since)
        worker: list[tuple[str, str]] = [
            ("NVCF-REQID", inv.request_id),
            ("NVCF-SUB", inv.nca_id),
            ("NVCF-NCAID", inv.nca_id),
            ("NVCF-FUNCTION-NAME", version.name),
            ("NVCF-FUNCTION-ID", version.function_id),
            ("NVCF-FUNCTION-VERSION-ID", version.version_id),
            ("NVCF-ASSET-DIR", str(staged.asset_dir)),
        ]
        if inv.asset_ids and with_assets:
            worker.append(("NVCF-FUNCTION-ASSET-IDS", ",".join(inv.asset_ids)))
        worker += [
            ("NVCF-LARGE-OUTPUT-DIR", str(staged.output_dir)),
            ("NVCF-MAX-RESPONSE-SIZE-BYTES", str(cfg.max_response_bytes)),
            ("NVCF-NSPECTID", "NSPECT-EMULATOR"),
            ("NVCF-BACKEND", backend),
            ("NVCF-INSTANCETYPE", instance_type),
            ("NVCF-REGION", cfg.region),
            ("NVCF-ENV", ENVIRONMENT),
            ("NVCF-INVOCATION-REGION", cfg.region),
            # What is left of the window in whole seconds, cut as Go's int() cuts it.
            ("NVCF-POLL-SECONDS", str(min(window, max(0, int(window - elapsed))))),
        ]
        if not any(k.lower() == "content-type" for k, _ in forwarded):
            worker.append(("Content-Type", "application/json"))
        return Headers(forwarded + worker)

    def _run(
        self,
        inv: Invocation,
        version: FunctionVersion,
        assets: list[Asset],
        client_headers: list[tuple[str, str]],
    ) -> None:
        with self._lock:
            if inv in self._queued:
                self._queued.remove(inv)
            if inv.outcome is not None:  # cancelled while queued
                return
            taken_down = version.status not in INVOCABLE
            if not taken_down:
                inv.status = InvocationStatus.RUNNING
                inv.started_at = self.clock.now()
                inv._started_mono = monotonic()
                inv._worker = threading.current_thread()
        if taken_down:
            # Undeployed or deleted while the request waited: no worker of that version is
            # left to take it, and NVCF answers a request no worker takes with 504.
            self._finish(inv, no_worker())
            return
        try:
            outcome = self._work(inv, version, assets, client_headers)
        except Exception:
            _why_failed(inv, traceback.format_exc())
            log.exception("worker failure on request %s", inv.request_id)
            outcome = worker_error()
        try:
            if outcome.kind != "stream":
                try:
                    self._check_progress(inv)
                finally:
                    self._cleanup(inv)
        finally:
            self._finish(inv, outcome)

    def _work(
        self,
        inv: Invocation,
        version: FunctionVersion,
        assets: list[Asset],
        client_headers: list[tuple[str, str]],
    ) -> Outcome:
        cfg = self._config()
        try:
            staged = staging.prepare(
                self.store, assets, inv.request_id, *self._staging_roots(assets)
            )
        except Exception:
            _why_failed(inv, traceback.format_exc())
            return worker_error("Internal error while downloading assets")
        inv._staged = staged
        inv.asset_dir, inv.output_dir = staged.asset_dir, staged.output_dir
        inv.staged_files = list(staged.files)
        with self._lock:
            if self._closed or inv.outcome is not None:  # closed or cancelled while staging
                return inv.outcome or connection_error()
            self._running.add(inv)
            self._ensure_watcher()
        container = self._container_for(version)
        if container is None:
            return connection_error()
        path = version.inference_url if inv.container_path is None else inv.container_path
        request = ContainerRequest(
            method=inv.method,
            path=path,
            headers=self._container_headers(inv, version, staged, client_headers),
            body=inv.request_body,
            port=version.inference_port,
            timeout=cfg.container_timeout,
        )
        inv.container_request = request
        while True:
            inv._poll.clear()
            inv.container_requests.append(request)
            inv.container_calls += 1
            try:
                response = container.invoke(request)
            except ContainerConnectionError:
                _why_failed(inv, traceback.format_exc())
                return connection_error()
            except Exception:
                # What a web framework makes of an unhandled exception: a 500 from the container.
                raised = traceback.format_exc()
                _why_failed(inv, raised)
                # (Its text may hold lone surrogates, which a UTF-8 log handler cannot write.)
                shown = raised.encode("utf-8", "backslashreplace").decode("utf-8")
                log.warning("container raised on request %s:\n%s", inv.request_id, shown)
                response = ContainerResponse(500, b"", [("Content-Type", "text/plain")])
            inv.container_response = response
            if not 100 <= response.status <= 599:
                response.close()
                return _invalid_answer(
                    inv, f"the status {response.status} is not an HTTP status (100-599)"
                )
            if inv.streaming and response.is_event_stream:
                return self._stream(inv, response)
            try:
                # Until the answer ends, or the request is settled without it (timed out,
                # cancelled): a body that never ends must not hold this thread forever.
                response.read(stop=lambda: inv.outcome is not None)
            except ContainerConnectionError:
                _why_failed(inv, traceback.format_exc())
                return connection_error()
            if response.status == 202:
                # NVCF's worker sends the container's 202 on (body and headers) as "still
                # working". With its compatibility mapping on (the default) that was the one
                # call: later polls get progress updates or an empty 202 when their window
                # ends, until the client stops polling. Without it (or for an event stream)
                # the container is asked again on each poll.
                try:
                    forwarded = _forwarded_headers(response.headers)
                except ValueError as bad:
                    return _invalid_answer(inv, bad)
                self._push(inv, StillWorking(self.clock.now(), forwarded, response.body))
                if inv.outcome is not None:
                    return inv.outcome
                started = inv._started_mono or monotonic()
                left = cfg.container_timeout - (monotonic() - started)
                if inv.compat and not inv.streaming:
                    inv._parked = True
                    while inv.outcome is None and left > 0:  # until cancelled or settled
                        inv._poll.wait(left)
                        left = cfg.container_timeout - (monotonic() - started)
                    return inv.outcome or connection_error()
                if left <= 0 or not inv._poll.wait(left) or inv.outcome is not None:
                    return inv.outcome or connection_error()
                poll_headers, poll_seconds = inv._poll_request or ([], inv.poll_seconds)
                request = ContainerRequest(
                    method="GET",
                    # NVCF asks at the version's default path, its inferenceUrl, whatever path
                    # a pass-through call had (get_pexec.rs: request_path: default_path).
                    path=version.inference_url,
                    headers=self._container_headers(
                        inv,
                        version,
                        staged,
                        poll_headers,
                        with_assets=False,  # assets go with the first call only
                        poll_seconds=poll_seconds,
                        since=monotonic(),
                    ),
                    body=b"",
                    port=version.inference_port,
                    timeout=cfg.container_timeout,
                )
                continue
            break
        return self._result(inv, response, staged)

    def _result(
        self, inv: Invocation, response: ContainerResponse, staged: staging.StagedRequest
    ) -> Outcome:
        cfg = self._config()
        try:
            headers = _forwarded_headers(response.headers)
        except ValueError as bad:
            return _invalid_answer(inv, bad)
        if inv.streaming or not inv.compat:  # no mapping, no 302, no progress: as it is
            return Outcome("response", response.status, headers, response.body)
        if response.status >= 400:
            return container_error(response.status, response.body)
        files = staged.output_files(remove_if_empty=not cfg.keep_staged)
        inv.output_files = [f.relative_to(staged.output_dir).as_posix() for f in files]
        # No zip for a request already settled (timed out, cancelled, emulator closed): its
        # late result is dropped anyway.
        if (files or len(response.body) > cfg.max_response_bytes) and not inv.done:
            token = self._zip(inv, response.body, staged, files)
            return Outcome("redirect", 302, [], b"", token=token)
        return Outcome("response", response.status, headers, response.body)

    def _zip(
        self,
        inv: Invocation,
        body: bytes,
        staged: staging.StagedRequest,
        files: list[Path],
    ) -> str:
        path = self.results_dir / f"{inv.request_id}.zip"

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(f"{inv.request_id}.response", body)
                for file in files:
                    zf.write(file, file.relative_to(staged.output_dir).as_posix())

        write_atomically(path, write)
        expires_at = self.clock.now() + self._config().result_url_ttl
        token = result_token(expires_at)
        result = LargeResult(path, f"{inv.request_id}.zip", expires_at)
        with self._lock:
            self._results[token] = result
            self.state.put(
                LARGE_RESULT_KIND,
                token,
                {"file": path.name, "filename": result.filename, "expires_at": result.expires_at},
            )
        return token

    def _stream(self, inv: Invocation, response: ContainerResponse) -> Outcome:
        try:
            headers = _forwarded_headers(response.headers)
        except ValueError as bad:
            response.close()
            return _invalid_answer(inv, bad)
        return Outcome("stream", response.status, headers, chunks=_Forward(self, inv, response))

    def _settle(
        self,
        inv: Invocation,
        outcome: Outcome,
        status: InvocationStatus,
        body_file: Path | None = None,
        error: str | None = None,
    ) -> bool:
        """Give ``inv`` its outcome unless it already has one (first writer wins); ``error``
        is why, for its record (set before anyone is told).

        With a state store, a result still waiting to be fetched is saved first (under the
        lock, so a client fetching it at once finds the record to remove)."""
        with self._lock, inv._mutex:
            self._running.discard(inv)
            if inv.outcome is not None:
                return False
            inv.status = status
            inv.finished_at = self.clock.now()
            inv.error = inv.error or error
            if inv._started_mono is not None:
                inv.duration = monotonic() - inv._started_mono
            if (
                self._persist
                and status is not InvocationStatus.CANCELLED
                and outcome.kind != "stream"
                and not inv._purged
                and (body_file is not None or outcome.kind != "response" or not outcome.body)
            ):
                try:
                    self.state.put(
                        RESULT_KIND, inv.request_id, _result_record(inv, outcome, body_file)
                    )
                except Exception:
                    # As when its body cannot be written: the client still gets the result,
                    # which a restart would not keep.
                    log.exception("cannot save the result of request %s", inv.request_id)
                    if body_file is not None:
                        body_file.unlink(missing_ok=True)
                else:
                    inv._saved = True
                    inv._body_file = body_file
            inv.outcome = outcome
            self._recount(inv)  # its answer's body is known now
            # Settled (timed out, cancelled) while its worker is still in the container, which
            # Python cannot stop: that thread is replaced, and ends once the container returns.
            # (A worker parked after a 202 is woken by _poll below and needs no replacement.)
            worker, inv._worker = inv._worker, None
            stuck = worker is not None and worker is not threading.current_thread()
            pool = self._pool if stuck and not inv._parked else None
        inv._changed.set()
        inv._poll.set()
        if pool is not None and worker is not None:
            pool.abandon(worker)
        return True

    def _finish(self, inv: Invocation, outcome: Outcome) -> None:
        status = (
            InvocationStatus.FULFILLED
            if outcome.nvcf_status == "fulfilled"
            else InvocationStatus.ERRORED
        )
        body_file = None
        if self._persist and outcome.kind == "response" and outcome.body and not inv.done:
            # The body goes to disk before the record that names it (outside the lock).
            body_file = self.results_dir / f"{inv.request_id}.body"
            try:
                write_atomically(body_file, lambda tmp: tmp.write_bytes(outcome.body))
            except OSError:
                log.exception("cannot save the result of request %s", inv.request_id)
                body_file = None
        if not self._settle(inv, outcome, status, body_file):
            _close_stream(outcome)  # timed out or cancelled meanwhile: drop the late result
            if body_file is not None:
                body_file.unlink(missing_ok=True)

    def _remember(self, inv: Invocation) -> None:
        """Add ``inv`` to the history (under the lock), dropping the oldest records past
        MAX_HISTORY, or past MAX_HISTORY_BYTES of bodies."""
        self.history.append(inv)
        inv._held = 0
        self._recount(inv)

    def _recount(self, inv: Invocation) -> None:
        """Count ``inv``'s bodies (as they are now) against the history's budget, if it is
        still in the history; then trim the oldest records (under the lock)."""
        if inv._held is None:
            return
        size = inv._body_bytes()
        self._history_bytes += size - inv._held
        inv._held = size
        history = self.history
        while len(history) > 1 and (
            len(history) > MAX_HISTORY or self._history_bytes > MAX_HISTORY_BYTES
        ):
            old = history.popleft()
            self._history_bytes -= old._held or 0
            old._held = None

    def _unsave(self, inv: Invocation) -> None:
        """The result was delivered or dropped: forget its saved record and body."""
        if inv._saved:
            inv._saved = False
            self.state.delete(RESULT_KIND, inv.request_id)
        if inv._body_file is not None:
            inv._body_file.unlink(missing_ok=True)
            inv._body_file = None

    def _push(self, inv: Invocation, event: Event) -> None:
        with inv._mutex:
            if len(inv._pending) >= MAX_PENDING_UPDATES:
                return
            inv._pending.append(event)
        inv._changed.set()

    def _cleanup(self, inv: Invocation) -> None:
        if inv._staged is not None and not self._config().keep_staged:
            inv._staged.remove()

    def _cancel(self, inv: Invocation) -> None:
        self._records.pop(inv.request_id, None)
        inv._purged = True
        self._unsave(inv)
        if inv in self._queued:
            self._queued.remove(inv)
        if not self._settle(inv, connection_error(), InvocationStatus.CANCELLED):
            assert inv.outcome is not None
            _close_stream(inv.outcome)
            if inv.outcome.token is not None:  # a large result nobody was given the link to
                self._drop_result(inv.outcome.token)

    # -- progress files and timeouts -----------------------------------------------------------

    def _check_progress(self, inv: Invocation) -> None:
        if inv.output_dir is None or inv.streaming or not inv.compat:
            return
        if inv._staged is not None and inv._staged.output_removed:  # it was empty at the end
            return
        path = inv.output_dir / staging.PROGRESS_FILE
        try:
            mtime = path.stat().st_mtime_ns
            data = path.read_bytes()
        except OSError:
            return
        sig = (mtime, data)
        if sig == inv._progress_sig:
            return
        inv._progress_sig = sig
        try:
            doc = gojson.loads(data)  # as the Go worker decodes it: numbers are floats
        except (ValueError, UnicodeDecodeError):
            return
        # Go's decoder reads the members in any case (the last of a name wins).
        if not isinstance(doc, dict) or go_member(doc, "id") != inv.request_id:
            return
        value = go_member(doc, "progress")
        value = 0 if value is None else value
        partial = go_member(doc, "partialResponse")
        # NVCF's worker decodes {"id": str, "progress": uint32, "partialResponse": object}; a
        # document of another shape is dropped. Floats are rounded here (the Go worker drops
        # them, which the helper library's float progress runs into).
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if not math.isfinite(value) or not 0 <= value <= _UINT32_MAX:  # NaN, Infinity: dropped
            return
        if partial is not None and not isinstance(partial, dict):
            return
        update = ProgressUpdate(round(value), partial, self.clock.now())
        if len(inv.progress) >= MAX_PROGRESS_KEPT:
            del inv.progress[: len(inv.progress) - MAX_PROGRESS_KEPT + 1]
        inv.progress.append(update)
        self._push(inv, update)

    def _ensure_watcher(self) -> None:
        """Called under the lock with an invocation just added to ``_running``. One watcher
        thread lives as long as the service: starting a thread per invocation cost about a
        tenth of a small invocation; an idle watcher is woken instead."""
        if self._closed:
            return
        if self._watcher is None or not self._watcher.is_alive():
            self._stop.clear()
            self._watcher_idle = False
            self._watcher = threading.Thread(
                target=self._watch, name="nvcf-progress-watcher", daemon=True
            )
            self._watcher.start()
        elif self._watcher_idle:
            self._watcher_idle = False
            self._wake.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                running = list(self._running)
                if not running:
                    # Idle until the next invocation runs (or close() stops the service). The
                    # flag and the clear are under the lock, so no wake-up is lost.
                    self._watcher_idle = True
                    self._wake.clear()
            if not running:
                # close() sets _stop before it wakes us: a wake-up cleared just above is seen
                # here, so the watcher cannot sleep through the close.
                if not self._stop.is_set():
                    self._wake.wait(60.0)
                continue
            timeout = self._config().container_timeout
            now = monotonic()
            emulated = self.clock.now()  # once a pass: it runs every progress_interval
            for inv in running:
                try:
                    # A client gone after a 202 (or a record past its hour) frees its worker
                    # now, as NVCF's worker cancels, not at the next request's sweep.
                    if _due(inv, emulated):
                        self._cancel_if_due(inv)  # checked again under the lock
                    self._check_progress(inv)
                    started = inv._started_mono
                    overdue = started is not None and now - started > timeout
                    if overdue:
                        self._settle(
                            inv,
                            connection_error(),
                            InvocationStatus.ERRORED,
                            error=f"container did not answer within {timeout} s",
                        )
                except Exception:  # pragma: no cover - one request must not stop the watcher
                    log.exception("progress watcher failed on request %s", inv.request_id)
            self._stop.wait(self._config().progress_interval)

    # -- life cycle ------------------------------------------------------------------------------

    def sweep(self) -> None:
        now = self.clock.now()
        with self._lock:
            for inv in list(self._records.values()):
                if _due(inv, now):
                    self._cancel(inv)
            for token, result in list(self._results.items()):
                if now >= result.expires_at:
                    self._drop_result(token)

    def clear(self) -> None:
        """Forget every record and result, saved ones too (running containers finish
        unobserved)."""
        with self._lock:
            for inv in list(self._records.values()):
                self._cancel(inv)
            self._records.clear()
            for inv in self.history:
                inv._held = None  # a record still running is not counted when it ends
            self.history.clear()
            self._history_bytes = 0
            self._queued.clear()
            for token in list(self._results):
                self._drop_result(token)

    def load(self) -> int:
        """At start-up: the saved results not yet fetched, and large-result download tokens.

        Expired records go (with their files); so do files no record names (a crash between
        writing a body and its record). Polling windows start again from now: the client
        could not poll while the emulator was down. Returns the count of results loaded.
        """
        if not self._persist:
            return 0
        now = self.clock.now()
        keep: set[str] = set()
        loaded = 0
        with self._lock:
            for token, data in self.state.load(LARGE_RESULT_KIND):
                path = self.results_dir / str(data.get("file", ""))
                if now >= float(data.get("expires_at", 0)) or not path.is_file():
                    self.state.delete(LARGE_RESULT_KIND, token)
                    continue
                self._results[token] = LargeResult(
                    path, str(data["filename"]), float(data["expires_at"])
                )
                keep.add(path.name)
            for request_id, data in self.state.load(RESULT_KIND):
                inv = self._revive(data, now)
                if inv is None:
                    self.state.delete(RESULT_KIND, request_id)
                    continue
                if inv._body_file is not None:
                    keep.add(inv._body_file.name)
                self._records[inv.request_id] = inv
                self._remember(inv)
                loaded += 1
            if self.results_dir.is_dir():
                for path in self.results_dir.iterdir():
                    if path.is_file() and path.name not in keep:
                        path.unlink(missing_ok=True)
        return loaded

    def _revive(self, data: dict[str, Any], now: float) -> Invocation | None:
        try:
            saved = data["outcome"]
            body = b""
            body_file = None
            if saved.get("body_file"):
                body_file = self.results_dir / str(saved["body_file"])
                body = body_file.read_bytes()
            outcome = Outcome(
                kind=str(saved["kind"]),
                status=int(saved["status"]),
                headers=[(str(k), str(v)) for k, v in saved.get("headers", [])],
                body=body,
                token=saved.get("token"),
                problem_prefix=str(saved.get("problem_prefix", "")),
                title=str(saved.get("title", "")),
                detail=str(saved.get("detail", "")),
                problem_type=(
                    None if saved.get("problem_type") is None else str(saved["problem_type"])
                ),
            )
            inv = Invocation(
                request_id=str(data["request_id"]),
                function_id=str(data["function_id"]),
                version_id=str(data["version_id"]),
                function_name=str(data["function_name"]),
                nca_id=str(data["nca_id"]),
                method=str(data.get("method", "POST")),
                path=str(data.get("path", "")),
                request_headers={},
                request_body=b"",
                asset_ids=list(data.get("asset_ids", [])),
                poll_seconds=int(data["poll_seconds"]),
                streaming=bool(data.get("streaming", False)),
                created_at=float(data["created_at"]),
                compat=bool(data.get("compat", True)),
                status=InvocationStatus(data["status"]),
                output_files=list(data.get("output_files", [])),
                outcome=outcome,
                delivered=list(data.get("delivered", [])),
                error=data.get("error"),
                started_at=data.get("started_at"),
                finished_at=data.get("finished_at"),
                expires_at=float(data["expires_at"]),
            )
        except (KeyError, TypeError, ValueError, OSError):
            log.warning("dropping an unreadable saved result %s", data.get("request_id"))
            return None
        if now >= inv.expires_at:
            if body_file is not None:
                body_file.unlink(missing_ok=True)
            return None
        if data.get("abandon_at") is not None:
            inv.abandon_at = max(float(data["abandon_at"]), now + max(2 * inv.poll_seconds, 10))
        inv._saved = True
        inv._body_file = body_file
        return inv

    def close(self, grace: float = 0.0) -> None:
        """Stop the workers. With a state store, saved results stay saved (a restart delivers
        them), and running requests get up to ``grace`` real seconds to finish first (not one
        parked after its container's 202: only its client could end it)."""
        deadline = monotonic() + grace
        while monotonic() < deadline:
            with self._lock:
                busy = any(
                    inv.outcome is None and not inv._parked for inv in self._records.values()
                )
            if not busy:
                break
            time.sleep(0.02)
        if self._persist:
            with self._lock:
                for inv in list(self._records.values()):
                    if not inv._saved:
                        self._cancel(inv)
                self._records.clear()
                self._queued.clear()
                self._results.clear()
        else:
            self.clear()
        with self._lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(5)
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(timeout=1.0)


_RESPONSE_DROPPED = HOP_BY_HOP | {"content-length", "date", "server"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _forwarded_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The container's response headers as they reach the client (less the ones NVCF sets).

    A value outside latin-1 travels as its UTF-8 bytes (what an HTTP server in the container
    puts on the wire; WSGI carries bytes as latin-1 text), so both modes give the client the
    same bytes. A name that is not an HTTP token, a value with a line break or NUL, or more
    header bytes than clients read cannot be sent at all: ``ValueError`` naming it.
    """
    headers = list(headers)
    dropped = _RESPONSE_DROPPED | hop_by_hop(headers)  # what the container's Connection lists
    out = []
    total = 0
    for name, value in headers:
        if name.lower() in dropped:
            continue
        total += len(name) + len(value) + 4
        if total > MAX_HEADER_BYTES:
            raise ValueError(
                f"its headers total more than {MAX_HEADER_BYTES} bytes (at {name}); "
                "HTTP clients such as Python's http.client cannot read them"
            )
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"the header name {name!r} is not a valid HTTP field name")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"the value of the {name} header contains a line break or NUL")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "surrogateescape").decode("latin-1")
        out.append((name, value))
    return out


def _why_failed(inv: Invocation, error: str) -> None:
    """Record why the request failed, unless it was settled meanwhile (timed out, cancelled):
    then that reason stands, not what its worker ran into afterwards (a body no longer read)."""
    with inv._mutex:
        if inv.outcome is None:
            inv.error = error


def _invalid_answer(inv: Invocation, reason: object) -> Outcome:
    """A container answer no HTTP server could send: NVCF's worker cannot read it either."""
    _why_failed(inv, f"invalid container response: {reason}")
    log.warning("request %s: the container's answer is not valid HTTP: %s", inv.request_id, reason)
    return _problem(
        500,
        INFERENCE_CONNECTION,
        "Internal Server Error",
        f"Inference connection error while making inference request: {reason}",
    )


def _close_stream(outcome: Outcome) -> None:
    close = getattr(outcome.chunks, "close", None)
    if close is not None:
        close()


class _Forward:
    """A streamed container response on its way to the client; closing it (at the end of the
    stream, or when the record is dropped unread) releases the container and the staged dirs."""

    def __init__(
        self, service: InvocationService, inv: Invocation, response: ContainerResponse
    ) -> None:
        self._service = service
        self._inv = inv
        self._response = response
        self._chunks = response.chunks if response.chunks is not None else iter([response.body])
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.close()
                raise
            except Exception as exc:
                # The container's stream broke: the client's stream is cut (not ended), as a
                # server in the container dropping the connection would cut it.
                self._inv.error = traceback.format_exc()
                self.close()
                raise ConnectionResetError(f"the container's stream broke: {exc}") from exc
            except BaseException:
                self.close()
                raise
            if chunk:
                return chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._chunks, "close", None)  # a generator the container returned
            if close is not None:
                with contextlib.suppress(ValueError):  # being read in another thread
                    close()
            self._response.close()
        finally:
            self._service._cleanup(self._inv)
            self._inv.finished_at = self._service.clock.now()
