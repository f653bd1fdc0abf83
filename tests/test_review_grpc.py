"""Review of :class:`nvcf_emulator.grpc_proxy.GrpcProxy` as a demanding user and an adversary:
cancelled and abandoned streams, concurrent calls on one connection, the session cookie,
metadata edge cases and leaks. The reference is NVIDIA's Go proxy
(``src/invocation-plane-services/grpc-proxy`` of NVIDIA/nvcf, cited as ``proxy/<file>:<line>``).
"""

# The fixtures of test_grpc are imported to be used: pytest passes them as arguments.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from nvcf_emulator import Emulator
from nvcf_emulator.grpc_proxy import GrpcProxy
from tests.test_grpc import (  # noqa: F401 - fixtures
    EchoContainer,
    channel,
    container,
    fn,
    metadata,
    new_connection,
    proxy,
    raw,
    refusal,
    start_container,
    two_versions,
)


class StreamContainer:
    """A gRPC server whose bidi method ``/t.S/Stream`` echoes each message: ``started`` once
    a call arrived, ``ended`` once it ended (however)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.ended = threading.Event()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=8))
        checks = health.HealthServicer()
        checks.set("", 1)  # SERVING
        health_pb2_grpc.add_HealthServicer_to_server(checks, self.server)

        def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            context.add_callback(self.ended.set)
            self.started.set()
            yield from requests

        handler = grpc.method_handlers_generic_handler(
            "t.S", {"Stream": grpc.stream_stream_rpc_method_handler(stream)}
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{self.port}"
        self.server.start()


@pytest.fixture
def streamer() -> Iterator[StreamContainer]:
    started = StreamContainer()
    try:
        yield started
    finally:
        started.server.stop(None).wait()


class Feed:
    """The messages a client streams, given one by one; ``end()`` half-closes."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue()

    def send(self, message: bytes) -> None:
        self._queue.put(message)

    def end(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[bytes]:
        while (message := self._queue.get(timeout=30)) is not None:  # safety net
            yield message


@pytest.fixture
def feed() -> Iterator[Feed]:
    made = Feed()
    try:
        yield made
    finally:
        made.end()  # the client's own request thread ends


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10  # safety net, real time: threads, not TTLs
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _grpc_threads_ended(before: set[threading.Thread]) -> bool:
    """Every daemon thread started since ``before`` ended, but the proxy's idle pool: grpcio's
    threads that send a stream of requests on (the proxy's, the client's) and that poll a
    channel's calls."""
    started = [t for t in threading.enumerate() if t not in before and t.daemon]
    return not [t for t in started if not t.name.startswith("nvcf-grpc")]


# -- cancelled streams ---------------------------------------------------------------------------


def test_a_client_cancelling_a_bidi_stream_cancels_the_containers_call_and_logs_no_error(
    nvcf: Emulator,
    streamer: StreamContainer,
    proxy: GrpcProxy,
    feed: Feed,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Go proxy cancels the upstream request with the client's context: the container's
    call ends. grpcio logged such a cancel (most times) as ERROR "Exception iterating
    requests!" with a traceback: the proxy gave it the client's messages to send on, and they
    raise once the client is gone."""
    ref = nvcf.add_function(streamer.url, name="bidi", inference_url="/grpc")
    before = set(threading.enumerate())
    with grpc.insecure_channel(proxy.address) as client:
        stream = client.stream_stream("/t.S/Stream")(iter(feed), metadata=metadata(nvcf, ref))
        feed.send(b"one")
        assert next(stream) == b"one"
        stream.cancel()
        assert streamer.ended.wait(10)
        feed.end()
    _wait_for(lambda: _grpc_threads_ended(before), "grpcio's threads of the call ended")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_client_gone_during_injected_latency_is_not_forwarded(
    nvcf: Emulator, streamer: StreamContainer, proxy: GrpcProxy, feed: Feed
) -> None:
    """A ``latency`` fault holds the call before the proxy routes it; a client that gives up
    meanwhile has no call left to forward (the Go proxy forwards on the client's context,
    proxy/director.go:444). The proxy still dialled the container, which saw a call that
    grpcio then cancelled with UNKNOWN "Exception iterating requests!"."""
    ref = nvcf.add_function(streamer.url, name="bidi", inference_url="/grpc")
    fault = nvcf.faults.add("invoke", latency=1.0)
    with grpc.insecure_channel(proxy.address) as client:
        stream = client.stream_stream("/t.S/Stream")(iter(feed), metadata=metadata(nvcf, ref))
        _wait_for(lambda: fault.fired == 1, "the call reached the proxy")
        stream.cancel()
        _wait_for(lambda: any(c.kind == "grpc" for c in nvcf.calls), "the proxy ended the call")
    assert not streamer.started.is_set()


# -- sessions --------------------------------------------------------------------------------------


def test_concurrent_first_calls_on_one_connection_share_one_session(
    nvcf: Emulator,
    start_container: Callable[..., EchoContainer],
    new_connection: Callable[[], grpc.Channel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """proxy/worker/connections.go:84-103 and director.go:520-521: "one connection + function
    routing gets one work request so we don't request more than one worker if multiple RPCs
    are sent on the connection before the first worker appears" (a sync.Once per routing
    key). Two calls that both found no session yet each started one: two request ids, and
    each could land on another version. A slow control plane (here: two lookups held until
    both are in) shows the race; without it, it is narrow but there."""
    first, _ = two_versions(nvcf, start_container, "concurrent")
    both_in = threading.Barrier(2, timeout=1)
    resolve = nvcf.functions.resolve_invocation

    def slow_resolve(*args: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):  # one lookup at a time
            both_in.wait()
        return resolve(*args)

    monkeypatch.setattr(nvcf.functions, "resolve_invocation", slow_resolve)
    whoami = raw(new_connection(), "/test.Extra/Whoami")
    unpinned = metadata(nvcf, first, version=False)
    pending = [whoami.future(b"", metadata=unpinned, timeout=30) for _ in range(2)]
    sessions = {(p.result(), dict(p.initial_metadata())["nvcf-reqid"]) for p in pending}
    assert len(sessions) == 1, sessions


def test_the_request_id_cookie_resumes_a_session(
    nvcf: Emulator,
    start_container: Callable[..., EchoContainer],
    new_connection: Callable[[], grpc.Channel],
) -> None:
    """The proxy answers ``set-cookie: nvcf-request-id=<id>``; a client that sends it back as
    ``cookie`` resumes that session, as ``nvcf-reqid`` does (proxy/director.go:476-489: the
    header, else the cookie). The emulator read only the header: the cookie started a new
    session, on either version."""
    first, _ = two_versions(nvcf, start_container, "cookies")
    unpinned = metadata(nvcf, first, version=False)
    label, call = raw(new_connection(), "/test.Extra/Whoami").with_call(b"", metadata=unpinned)
    cookie = dict(call.initial_metadata())["set-cookie"]
    request_id = cookie.removeprefix("nvcf-request-id=")
    for sent in (f"theme=dark; {cookie}", cookie):
        for _ in range(5):
            again, resumed = raw(new_connection(), "/test.Extra/Whoami").with_call(
                b"", metadata=[*unpinned, ("cookie", sent)]
            )
            assert (again, dict(resumed.initial_metadata())["nvcf-reqid"]) == (label, request_id)


def test_an_unknown_session_asks_the_client_to_drop_its_cookie(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    """proxy/director.go:365-371: on ErrSessionNotFound the answer carries
    ``Set-Cookie: nvcf-request-id=; Max-Age=0`` ("a session is not going to become valid, so
    ask the client to delete their cookie before retrying")."""
    stale = str(uuid.uuid4())
    for sent in (("nvcf-reqid", stale), ("cookie", f"nvcf-request-id={stale}")):
        err = refusal(
            lambda sent=sent: raw(channel, "/test.Extra/Whoami")(
                b"", metadata=[*metadata(nvcf, fn), sent]
            )
        )
        assert err.code() is grpc.StatusCode.NOT_FOUND
        assert "no existing session found" in (err.details() or "")
        answered = [*(err.initial_metadata() or ()), *(err.trailing_metadata() or ())]
        assert ("set-cookie", "nvcf-request-id=; Max-Age=0") in answered


def test_a_header_request_id_wins_over_the_cookie(
    nvcf: Emulator,
    start_container: Callable[..., EchoContainer],
    new_connection: Callable[[], grpc.Channel],
) -> None:
    """proxy/director.go:477-483: the cookie is read only when ``nvcf-reqid`` is absent."""
    first, _ = two_versions(nvcf, start_container, "header-wins")
    unpinned = metadata(nvcf, first, version=False)
    _, call = raw(new_connection(), "/test.Extra/Whoami").with_call(b"", metadata=unpinned)
    request_id = dict(call.initial_metadata())["nvcf-reqid"]
    sent = [*unpinned, ("nvcf-reqid", request_id), ("cookie", f"nvcf-request-id={uuid.uuid4()}")]
    _, resumed = raw(new_connection(), "/test.Extra/Whoami").with_call(b"", metadata=sent)
    assert dict(resumed.initial_metadata())["nvcf-reqid"] == request_id


# -- metadata ----------------------------------------------------------------------------------


def test_the_first_function_id_routes_when_two_are_sent(
    nvcf: Emulator, start_container: Callable[..., EchoContainer], channel: grpc.Channel
) -> None:
    """proxy/director.go:412 reads ``function-id`` with http.Header.Get: the first value; the
    container still gets both (it gets all the client sent)."""
    one, two = start_container("one"), start_container("two")
    first = nvcf.add_function(one.url, name="first", inference_url="/grpc")
    second = nvcf.add_function(two.url, name="second", inference_url="/grpc")
    key = ("authorization", f"Bearer {nvcf.api_key}")
    for ids, label in (((first, second), b"one"), ((second, first), b"two")):
        sent = [("function-id", ids[0].function_id), ("function-id", ids[1].function_id), key]
        assert raw(channel, "/test.Extra/Whoami")(b"", metadata=sent) == label


# -- leaks -------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_abandoned_and_in_flight_streams_leave_no_thread_or_descriptor(
    nvcf: Emulator, fn: Any, container: EchoContainer
) -> None:
    """Clients that close their channel with streams open, then a stop() with streams in
    flight: the proxy's threads, its channels to the container and their sockets all go."""
    threads_before, fds_before = set(threading.enumerate()), _open_fds()
    proxy = GrpcProxy(nvcf).start()
    ports = {proxy.port, container.port}
    try:
        for _ in range(5):
            client = grpc.insecure_channel(proxy.address)
            stream = client.unary_stream("/test.Extra/Wait")(b"", metadata=metadata(nvcf, fn))
            assert next(stream) == b"started"
            client.close()
        with grpc.insecure_channel(proxy.address) as client:
            waits = [
                client.unary_stream("/test.Extra/Wait")(b"", metadata=metadata(nvcf, fn))
                for _ in range(5)
            ]
            assert [next(w) for w in waits] == [b"started"] * 5
            proxy.stop(grace=0)
    finally:
        proxy.stop()

    def leaked() -> list[str]:
        return [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]

    _wait_for(lambda: not [n for n in leaked() if not n.startswith("ThreadPoolExecutor")], "")
    assert [n for n in leaked() if not n.startswith("ThreadPoolExecutor")] == []  # container's

    # Sockets to or from the proxy's and the container's ports, opened during the test (not
    # whatever another test's lingering thread opens in this process meanwhile).
    def opened() -> list[str]:
        return _sockets(_open_fds() - fds_before, ports)

    deadline = time.monotonic() + 10  # safety net, real time
    while opened() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert opened() == []


def _open_fds() -> set[str]:
    """This process's descriptors (not the one listing them, closed by now)."""
    return {fd for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")}


def _sockets(fds: set[str], ports: set[int]) -> list[str]:
    """Those of ``fds`` that are TCP sockets with either end on one of ``ports``."""
    ends: dict[str, tuple[int, int]] = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                local, remote = (int(end.rsplit(":", 1)[1], 16) for end in fields[1:3])
                ends[fields[9]] = (local, remote)
    found = []
    for fd in sorted(fds):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        local, remote = ends.get(target.removeprefix("socket:[").removesuffix("]"), (0, 0))
        if local in ports or remote in ports:
            found.append(f"fd {fd}: port {local} -> {remote}")
    return found


def test_a_session_in_use_is_not_the_first_forgotten(
    nvcf: Emulator,
    start_container: Callable[..., EchoContainer],
    new_connection: Callable[[], grpc.Channel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proxy keeps the last MAX_SESSIONS sessions and pinned connections. NVCF forgets a
    worker connection when idle: proxy/director.go:115-134, a ``ttlcache`` of
    ``consts.Timeout`` whose entry in use has no TTL. The emulator forgot the oldest *made*,
    not the least recently *used*: a long-lived client's connection,
    in use all along, lost its session (a new request id, maybe another version) once enough
    other connections had come and gone."""
    monkeypatch.setattr("nvcf_emulator.grpc_proxy.MAX_SESSIONS", 3)
    first, _ = two_versions(nvcf, start_container, "kept")
    unpinned = metadata(nvcf, first, version=False)
    long_lived = raw(new_connection(), "/test.Extra/Whoami")
    label, call = long_lived.with_call(b"", metadata=unpinned)
    request_id = dict(call.initial_metadata())["nvcf-reqid"]
    for _ in range(6):
        raw(new_connection(), "/test.Extra/Whoami")(b"", metadata=unpinned)
        again, call = long_lived.with_call(b"", metadata=unpinned)
        assert (again, dict(call.initial_metadata())["nvcf-reqid"]) == (label, request_id)


def test_reset_forgets_the_sessions_of_served_proxies(
    nvcf: Emulator, nvcf_grpc: GrpcProxy, container: EchoContainer
) -> None:
    """``reset()`` forgets requests; a session's request id from before it is unknown after
    it ("no existing session found"), and a kept (persistent) function's connection starts a
    new session instead of carrying the old id on."""
    fn = nvcf.add_function(container.url, name="echo", inference_url="/grpc", persistent=True)
    # Each channel on a connection of its own (gRPC shares one between channels to the same
    # target unless told not to).
    own = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(nvcf_grpc.address, options=own) as opened:
        whoami = opened.unary_unary("/test.Extra/Whoami")
        _, call = whoami.with_call(b"", metadata=metadata(nvcf, fn))
        before = dict(call.initial_metadata())["nvcf-reqid"]
        nvcf.reset()
        _, call = whoami.with_call(b"", metadata=metadata(nvcf, fn))
        assert dict(call.initial_metadata())["nvcf-reqid"] != before
    stale = [*metadata(nvcf, fn), ("nvcf-reqid", before)]
    with (
        grpc.insecure_channel(nvcf_grpc.address, options=own) as another,  # resuming elsewhere
        pytest.raises(grpc.RpcError) as caught,
    ):
        another.unary_unary("/test.Extra/Whoami")(b"", metadata=stale)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert "no existing session found" in (caught.value.details() or "")
