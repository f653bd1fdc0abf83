"""What the emulated worker calls: one small interface, four adapters.

A :class:`Container` answers ``invoke(request)`` with a :class:`ContainerResponse` and
``health(uri, port)`` with ``True`` when ready. The adapters:

- :class:`CallableContainer`: a Python function ``fn(request: ContainerRequest)`` returning a
  :class:`ContainerResponse`, a dict/list (JSON), ``bytes``/``str``, ``(body, status[, headers])``,
  or an iterator of chunks (streamed as ``text/event-stream``).
- :class:`WsgiContainer`: a WSGI app (Flask, Django, ...), called in-process.
- :class:`AsgiContainer`: an ASGI app (FastAPI, Starlette, ...) through ``a2wsgi``
  (``pip install 'nvcf-emulator[asgi]'``), on an event loop thread the container owns.
- :class:`UrlContainer`: a server already running, e.g. ``http://127.0.0.1:8000``, reached over
  HTTP as NVCF's worker reaches ``127.0.0.1:<inferencePort>``.

:func:`as_container` picks the adapter for an object or a ``package.module:attr`` / URL string.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import io
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import requests
from werkzeug.datastructures import Headers

from ..headers import make_environ

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

#: Headers never passed between hops (RFC 9110 §7.6.1), plus the ones a hop recomputes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def hop_by_hop(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The lower-case names a hop drops from ``headers``: :data:`HOP_BY_HOP` and every name
    their ``Connection`` header lists (RFC 9110 §7.6.1), as NVCF's services drop them."""
    listed = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }
    return HOP_BY_HOP | listed


class ContainerConnectionError(Exception):
    """The container could not be reached, or did not answer in time."""


@dataclass
class ContainerRequest:
    """The request the worker sends to the container (``POST <inferenceUrl>``)."""

    method: str
    path: str
    headers: Headers
    body: bytes
    #: The function's ``inferencePort`` (used by :class:`UrlContainer` when its URL has none).
    port: int = 8000
    #: Seconds the container may take.
    timeout: float = 300.0

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header, matched case-insensitively (as containers should match NVCF's)."""
        return self.headers.get(name, default)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def request_id(self) -> str:
        return self.headers.get("NVCF-REQID", "")

    @property
    def asset_ids(self) -> list[str]:
        """``NVCF-FUNCTION-ASSET-IDS``, split (empty without assets)."""
        value = self.headers.get("NVCF-FUNCTION-ASSET-IDS", "")
        return [item for item in value.split(",") if item]

    @property
    def asset_dir(self) -> Path:
        return Path(self.headers.get("NVCF-ASSET-DIR", ""))

    @property
    def output_dir(self) -> Path:
        """``NVCF-LARGE-OUTPUT-DIR``: files left here come back to the client in a zip."""
        return Path(self.headers.get("NVCF-LARGE-OUTPUT-DIR", ""))

    def asset_path(self, asset_id: str) -> Path:
        return self.asset_dir / asset_id

    def write_progress(self, progress: int, partial_response: Any = None) -> None:
        """Write the progress file NVCF's worker watches (``<output dir>/progress``)."""
        doc: dict[str, Any] = {"id": self.request_id, "progress": progress}
        if partial_response is not None:
            doc["partialResponse"] = partial_response
        tmp = self.output_dir / ".progress.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.output_dir / "progress")


@dataclass
class ContainerResponse:
    """What the container answered. ``chunks`` (when set) is the body, still to be read."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: Iterator[bytes] | None = None
    on_close: Callable[[], None] | None = None

    @property
    def content_type(self) -> str:
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value
        return ""

    @property
    def is_event_stream(self) -> bool:
        return self.content_type.split(";")[0].strip().lower() == "text/event-stream"

    def read(self) -> bytes:
        """Read the whole body (once); later calls return it again."""
        if self.chunks is not None:
            try:
                self.body = b"".join(self.chunks)
            finally:
                self.chunks = None
                self.close()
        return self.body

    def close(self) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()

    def json(self) -> Any:
        return json.loads(self.read())


@runtime_checkable
class Container(Protocol):
    """The one interface the worker calls."""

    def invoke(self, request: ContainerRequest) -> ContainerResponse: ...

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        """The status code of ``GET <uri>`` (0 when unreachable)."""
        ...

    def close(self) -> None: ...


# -- plain Python callables --------------------------------------------------------------------


def _coerce(result: Any) -> ContainerResponse:
    if isinstance(result, ContainerResponse):
        return result
    if isinstance(result, tuple):
        if len(result) not in (2, 3):
            raise TypeError("a container tuple is (body, status) or (body, status, headers)")
        resp = _coerce_body(result[0], int(result[1]))
        if len(result) == 3:
            extra: Mapping[str, str] | Sequence[tuple[str, str]] = result[2]
            pairs = list(extra.items()) if isinstance(extra, Mapping) else list(extra)
            names = {n.lower() for n, _ in pairs}
            resp.headers = [(n, v) for n, v in resp.headers if n.lower() not in names] + pairs
        return resp
    return _coerce_body(result, 200)


def _coerce_body(body: Any, status: int) -> ContainerResponse:
    if body is None:
        return ContainerResponse(status, b"", [])
    if isinstance(body, bytes | bytearray | memoryview):
        return ContainerResponse(
            status, bytes(body), [("Content-Type", "application/octet-stream")]
        )
    if isinstance(body, str):
        return ContainerResponse(status, body.encode(), [("Content-Type", "text/plain")])
    if isinstance(body, dict | list | int | float | bool):
        data = json.dumps(body).encode()
        return ContainerResponse(status, data, [("Content-Type", "application/json")])
    if isinstance(body, Iterable):
        chunks = (_chunk(c) for c in body)
        return ContainerResponse(
            status,
            b"",
            [("Content-Type", "text/event-stream")],
            chunks=iter(chunks),
            on_close=getattr(body, "close", None),  # a client gone: the generator is closed
        )
    raise TypeError(f"a container cannot answer with {type(body).__name__}")


def _chunk(chunk: object) -> bytes:
    """One chunk of a streamed answer: bytes, or text (UTF-8); anything else is the
    container's mistake (``bytes(3)`` would be three NUL bytes)."""
    if isinstance(chunk, str):
        return chunk.encode()
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"a container stream yielded {type(chunk).__name__}; chunks are bytes or str")


class CallableContainer:
    """A Python function as a container: ``fn(request: ContainerRequest) -> ...``.

    Return a :class:`ContainerResponse`, a dict or list (JSON), ``bytes`` or ``str``, ``None``
    (empty 200), ``(body, status)`` or ``(body, status, headers)``, or an iterator of chunks
    (answered as ``text/event-stream``). An exception is what a web framework would make of it:
    a 500 from the container.
    """

    def __init__(
        self, fn: Callable[[ContainerRequest], Any], health: Callable[[], bool] | None = None
    ) -> None:
        self.fn = fn
        self._health = health

    def invoke(self, request: ContainerRequest) -> ContainerResponse:
        return _coerce(self.fn(request))

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        return 200 if self._health is None or self._health() else 503

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"CallableContainer({getattr(self.fn, '__qualname__', self.fn)!r})"


# -- WSGI ----------------------------------------------------------------------------------------


def _environ(
    method: str, path: str, headers: Headers | None, body: bytes, port: int
) -> dict[str, Any]:
    """The WSGI environ a server on ``127.0.0.1:<port>`` would build for this request (with
    the emulator's own header rule: repeats joined, and an underscored name counts as its
    hyphenated one unless that was sent too)."""
    raw_path, _, query = path.partition("?")
    sent = [] if headers is None else headers.items()
    return make_environ(
        method,
        raw_path,
        query,
        [("Content-Length", str(len(body)))]
        + [(k, v) for k, v in sent if k.lower() != "content-length"],
        io.BytesIO(body),
        host=f"127.0.0.1:{port}",
        server_name="127.0.0.1",
        port=port,
    )


class WsgiContainer:
    """A WSGI app (e.g. a Flask app) as a container, called in-process with a real environ."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def _call(
        self,
        method: str,
        path: str,
        headers: Headers | None,
        body: bytes,
        port: int,
    ) -> ContainerResponse:
        environ = _environ(method, path, headers, body, port)
        captured: dict[str, Any] = {}
        written: list[bytes] = []

        def start_response(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            if exc_info is not None and exc_info[1] is not None:
                raise exc_info[1].with_traceback(exc_info[2])
            if "status" in captured and exc_info is None:
                raise RuntimeError(
                    "the WSGI app called start_response twice without exc_info (PEP 3333)"
                )
            captured["status"] = status
            captured["headers"] = list(response_headers)
            return written.append

        app_iter = self.app(environ, start_response)
        it = (_wsgi_chunk(c) for c in app_iter)
        head: list[bytes] = []
        try:
            # As a WSGI server, pull until the app has started its response and yielded its
            # first chunk: a server sends the status line only then, so an app failing before
            # it still answers with a 500.
            while "status" not in captured or not (head or written):
                try:
                    head.append(next(it))
                except StopIteration:
                    break
        except BaseException:
            _close(app_iter)
            raise
        if "status" not in captured:
            _close(app_iter)
            raise RuntimeError("the WSGI app returned without calling start_response")

        def chunks() -> Iterator[bytes]:
            yield from written
            yield from head
            try:
                yield from it
            except Exception as exc:
                # The status line is out: a server can only drop the connection now.
                raise ContainerConnectionError(
                    f"the container failed after it began its answer: {exc!r}"
                ) from exc
            failed = environ.get(_ASGI_FAILED)
            if failed is not None:
                raise ContainerConnectionError(
                    f"the container failed after it began its answer: {failed!r}"
                ) from failed

        return ContainerResponse(
            status=int(str(captured["status"]).split(" ", 1)[0]),
            headers=captured["headers"],
            chunks=chunks(),
            on_close=lambda: _close(app_iter),
        )

    def invoke(self, request: ContainerRequest) -> ContainerResponse:
        return self._call(request.method, request.path, request.headers, request.body, request.port)

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        resp = self._call("GET", uri, None, b"", port)
        resp.read()
        return resp.status

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"WsgiContainer({self.app!r})"


def _wsgi_chunk(chunk: object) -> bytes:
    if not isinstance(chunk, bytes):
        raise TypeError(
            f"the WSGI app yielded {type(chunk).__name__}, not bytes (PEP 3333: bodies are bytes)"
        )
    return chunk


def _close(app_iter: object) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()


# -- ASGI ----------------------------------------------------------------------------------------


#: Environ key: the exception an ASGI app raised after it began its answer (a2wsgi may end
#: the WSGI body before it passes that on).
_ASGI_FAILED = "nvcf_emulator.asgi_failed"


class _AsgiGuard:
    """Holds an ASGI app to what servers (uvicorn) enforce: one ``http.response.start``, and
    one before returning. An exception in the middle of an answer is noted in the WSGI
    environ."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = finished = False

        async def checked_send(message: Any) -> None:
            nonlocal started, finished
            kind = message.get("type")
            if kind == "http.response.start":
                if started:
                    raise RuntimeError("the ASGI app sent http.response.start twice")
                started = True
            elif kind == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, checked_send)
        except Exception as exc:
            # After a whole answer (Starlette's error middleware answers 500, then re-raises)
            # a server only logs it; mid-answer it has to drop the connection.
            if started and not finished:
                scope.get("wsgi_environ", {})[_ASGI_FAILED] = exc
            raise
        if not started:
            raise RuntimeError("the ASGI app returned without sending http.response.start")


class AsgiContainer(WsgiContainer):
    """An ASGI app (FastAPI, Starlette, ...) as a container, bridged by ``a2wsgi``.

    The app runs on an event loop in a thread this container owns; :meth:`close` stops it.
    Lifespan events are not run.
    """

    def __init__(self, app: Any) -> None:
        try:
            from a2wsgi import ASGIMiddleware
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "ASGI containers need a2wsgi: pip install 'nvcf-emulator[asgi]'"
            ) from exc
        self.asgi_app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="nvcf-asgi-container", daemon=True
        )
        self._thread.start()
        super().__init__(ASGIMiddleware(_AsgiGuard(app), loop=self._loop))  # type: ignore[arg-type]

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def __repr__(self) -> str:
        return f"AsgiContainer({self.asgi_app!r})"


# -- a running server ------------------------------------------------------------------------------


class UrlContainer:
    """A container already running at ``url`` (``http://host[:port][/path]``).

    Requests go to ``<scheme>://<host>:<port><inferenceUrl>``; the port is the URL's, or the
    function's ``inferencePort`` when the URL has none. A path in the URL is only a default
    ``inferenceUrl`` for functions registered with this container.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a container URL is http(s)://host[:port][/path], got {url!r}")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.path = parts.path if parts.path not in ("", "/") else None
        self._session = requests.Session()
        self._session.trust_env = False  # loopback: never through a proxy

    def _url(self, path: str, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port or port}{path}"

    def invoke(self, request: ContainerRequest) -> ContainerResponse:
        try:
            resp = self._session.request(
                request.method,
                self._url(request.path, request.port),
                headers=dict(request.headers.items()),
                data=request.body,
                timeout=request.timeout,
                stream=True,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise ContainerConnectionError(str(exc)) from exc
        # The body is decoded below, so its Content-Encoding no longer applies.
        headers = [(k, v) for k, v in resp.raw.headers.items() if k.lower() != "content-encoding"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from resp.raw.stream(64 * 1024, decode_content=True)
            except Exception as exc:
                raise ContainerConnectionError(str(exc)) from exc

        return ContainerResponse(resp.status_code, b"", headers, chunks(), on_close=resp.close)

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        try:
            with self._session.get(self._url(uri, port), timeout=timeout) as resp:
                return resp.status_code
        except requests.RequestException:
            return 0

    def close(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return f"UrlContainer({self.url!r})"


# -- picking an adapter ----------------------------------------------------------------------------


def _not_a_target(spec: str) -> ValueError:
    """The error for a container string that is neither a URL nor ``package.module:attr``,
    with the URL it probably meant when it looks like a mistyped one."""
    hint = ""
    lowered = spec.lower()
    if lowered.startswith("http"):
        scheme = "https" if lowered.startswith("https") else "http"
        rest = spec[len(scheme) :].lstrip(":/")
        hint = f" (did you mean {scheme}://{rest}?)"
    return ValueError(
        f"expected package.module:attr or an http://host:port[/path] URL, got {spec!r}: it is "
        f"neither a container URL nor an importable package.module:attr{hint}"
    )


def load_target(spec: str) -> Any:
    """``package.module:attr`` → the object (``attr`` may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if (
        not sep
        or not all(part.isidentifier() for part in module_name.split("."))
        or not all(part.isidentifier() for part in attr.split("."))
    ):
        raise _not_a_target(spec)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _is_asgi(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - the class's, not the instance's
    return call is not None and inspect.iscoroutinefunction(call)


def _positional_arity(obj: Any) -> int | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(
        1
        for p in sig.parameters.values()
        if p.kind in kinds and p.default is inspect.Parameter.empty
    )


def as_container(target: Any) -> Container:
    """The adapter for ``target``: a :class:`Container`, a URL, ``package.module:attr``, an ASGI
    app, a WSGI app (anything with ``wsgi_app``, or a callable taking ``environ,
    start_response``) or a plain callable taking a :class:`ContainerRequest`."""
    if isinstance(target, Container) and not callable(target):
        return target
    if isinstance(target, WsgiContainer | CallableContainer | UrlContainer):
        return target
    if isinstance(target, str):
        if target.startswith(("http://", "https://")):
            return UrlContainer(target)
        return as_container(load_target(target))
    if _is_asgi(target):
        return AsgiContainer(target)
    if hasattr(target, "wsgi_app"):
        return WsgiContainer(target)
    if callable(target):
        if _positional_arity(target) == 2:
            return WsgiContainer(target)
        return CallableContainer(target)
    raise TypeError(f"cannot use {type(target).__name__} as a container")


def check_takes_request(fn: Any) -> None:
    """A ``TypeError`` for a plain callable that cannot be called as ``fn(request)`` (checked
    when it is deployed: otherwise it would be ``ACTIVE`` and every invocation a 500)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): give it the benefit
        return
    try:
        sig.bind(None)
    except TypeError:
        pass
    else:
        return
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    raise TypeError(
        f"cannot use {name}{sig} as a container: a callable container is called as "
        "fn(request) with one ContainerRequest, e.g. def infer(request: ContainerRequest) -> "
        "dict: ...; a WSGI app takes (environ, start_response), and an ASGI app is "
        "async (scope, receive, send)"
    )
