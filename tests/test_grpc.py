"""gRPC invocation through :class:`nvcf_emulator.grpc_proxy.GrpcProxy`, as NVCF's gRPC proxy
does it: NVIDIA's gRPC echo sample (``tests/samples/grpc_echo``) runs as the container, a
client calls it through the proxy with the metadata of NVCF's docs
(docs/user/grpc-function-invocation.md), and every refusal has NVCF's status code."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import freezegun
import grpc
import pytest
import requests
import time_machine
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from nvcf_emulator import Emulator
from nvcf_emulator.grpc_proxy import GrpcProxy
from tests.samples.grpc_echo import echo_pb2, echo_pb2_grpc, grpc_echo_server

Metadata = list[tuple[str, str]]

# -- the container: NVIDIA's Echo servicer, gRPC health, and a few raw-bytes test methods ------


def _extra_methods(
    label: str, cancelled: threading.Event, release: threading.Event
) -> grpc.GenericRpcHandler:
    """``test.Extra``: methods the echo proto lacks, on raw bytes (no serializers)."""

    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        return label.encode()

    def count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield f"{label}-{i}".encode()

    def metadata(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.send_initial_metadata((("x-initial", "from-container"),))
        context.set_trailing_metadata((("x-trailing", "also-from-container"),))
        seen = [f"{k}={v!r}" for k, v in context.invocation_metadata()]
        return "\n".join(seen).encode()

    def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("retry-after", "7"), ("x-detail-bin", b"\x00\xff")))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota of the container is used up")

    def deadline(request: bytes, context: grpc.ServicerContext) -> bytes:
        return repr(context.time_remaining()).encode()

    def echo_bytes(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def total(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return str(sum(int(r) for r in requests)).encode()

    def hold(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.add_callback(cancelled.set)
        yield b"first"
        cancelled.wait(30)  # safety net: the client cancels long before

    def wait(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"started"
        release.wait(30)  # safety net: the test releases it
        yield b"released"

    return grpc.method_handlers_generic_handler(
        "test.Extra",
        {
            "Deadline": grpc.unary_unary_rpc_method_handler(deadline),
            "EchoBytes": grpc.unary_unary_rpc_method_handler(echo_bytes),
            "Hold": grpc.unary_stream_rpc_method_handler(hold),
            "Total": grpc.stream_unary_rpc_method_handler(total),
            "Wait": grpc.unary_stream_rpc_method_handler(wait),
            "Whoami": grpc.unary_unary_rpc_method_handler(whoami),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )


class EchoContainer:
    """The sample's server on a free loopback port, in this process."""

    def __init__(self, label: str, serving: bool = True, port: int = 0) -> None:
        self.cancelled = threading.Event()
        self.release = threading.Event()
        unlimited = [("grpc.max_receive_message_length", -1)]
        self.server = grpc.server(ThreadPoolExecutor(max_workers=80), options=unlimited)
        echo_pb2_grpc.add_EchoServicer_to_server(grpc_echo_server.Echo(), self.server)
        self.health = health.HealthServicer()
        status = health_pb2.HealthCheckResponse.SERVING if serving else 2  # 2: NOT_SERVING
        self.health.set("", status)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        extra = _extra_methods(label, self.cancelled, self.release)
        self.server.add_generic_rpc_handlers((extra,))
        echo = echo_pb2.DESCRIPTOR.services_by_name["Echo"].full_name
        reflection.enable_server_reflection((echo, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.url = f"http://127.0.0.1:{self.port}"
        self.server.start()

    def stop(self) -> None:
        self.release.set()
        self.server.stop(None).wait()


@pytest.fixture
def start_container() -> Iterator[Callable[..., EchoContainer]]:
    started: list[EchoContainer] = []

    def start(label: str = "one", serving: bool = True, port: int = 0) -> EchoContainer:
        container = EchoContainer(label, serving, port)
        started.append(container)
        return container

    try:
        yield start
    finally:
        for container in started:
            container.stop()


@pytest.fixture
def container(start_container: Callable[..., EchoContainer]) -> EchoContainer:
    return start_container()


@pytest.fixture
def proxy(nvcf: Emulator) -> Iterator[GrpcProxy]:
    with GrpcProxy(nvcf) as running:
        yield running


@pytest.fixture
def channel(proxy: GrpcProxy) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(proxy.address) as opened:
        yield opened


@pytest.fixture
def fn(nvcf: Emulator, container: EchoContainer) -> Any:
    return nvcf.add_function(container.url, name="grpc-echo", inference_url="/grpc")


def metadata(nvcf: Emulator, fn: Any, *, version: bool = True) -> Metadata:
    """As NVCF's docs and the sample's client send it."""
    sent = [("function-id", fn.function_id)]
    if version:
        sent.append(("function-version-id", fn.version_id))
    return [*sent, ("authorization", f"Bearer {nvcf.api_key}")]


def raw(channel: grpc.Channel, method: str) -> Any:
    return channel.unary_unary(method)


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# -- the sample, end to end ----------------------------------------------------------------------


def test_the_samples_echo_message_through_the_proxy(
    nvcf: Emulator, fn: Any, channel: grpc.Channel, proxy: GrpcProxy
) -> None:
    stub = echo_pb2_grpc.EchoStub(channel)
    reply, call = stub.EchoMessage.with_call(
        echo_pb2.EchoRequest(message="hello NVCF"), metadata=metadata(nvcf, fn)
    )
    assert reply.message == "hello NVCF"
    initial = dict(call.initial_metadata())
    request_id = initial["nvcf-reqid"]
    assert str(uuid.UUID(request_id)) == request_id
    assert initial["set-cookie"] == f"nvcf-request-id={request_id}"
    logged = [c for c in nvcf.calls if c.kind == "grpc"]
    assert [(c.path, c.status, c.request_id) for c in logged] == [
        ("/Echo/EchoMessage", 200, request_id)
    ]
    assert logged[0].authorization == "Bearer nvapi-…"  # never the key
    assert proxy.address == f"127.0.0.1:{proxy.port}"


def test_a_grpc_function_goes_active_on_the_grpc_health_check(
    nvcf: Emulator, container: EchoContainer
) -> None:
    """NVCF's worker checks a ``/grpc`` function with grpc.health.v1, not GET healthUri (a
    gRPC server does not answer HTTP/1.1): add_function returns once the server is SERVING."""
    ref = nvcf.add_function(
        container.url, name="grpc-echo", inference_url="/grpc", startup_timeout=5
    )
    version = nvcf.functions.get(nvcf.accounts.authenticate(nvcf.headers["Authorization"]), *ref)
    assert version.status.value == "ACTIVE"
    assert version.health["protocol"] == "gRPC"


def test_a_container_url_ending_in_grpc_is_a_grpc_function(
    nvcf: Emulator, container: EchoContainer, channel: grpc.Channel
) -> None:
    """How ``nvcf-emulate --function echo=http://127.0.0.1:8001/grpc`` registers one: the URL's
    path is the default inferenceUrl, and /grpc gets NVCF's gRPC health check."""
    ref = nvcf.add_function(f"{container.url}/grpc", name="from-url")
    sent = [("function-id", ref.function_id), ("authorization", f"Bearer {nvcf.api_key}")]
    assert raw(channel, "/test.Extra/Whoami")(b"", metadata=sent) == b"one"


def test_a_grpc_server_not_serving_stays_deploying_and_says_why(
    nvcf: Emulator, start_container: Callable[..., EchoContainer]
) -> None:
    down = start_container(serving=False)
    with pytest.raises(RuntimeError) as raised:
        nvcf.add_function(down.url, name="sick", inference_url="/grpc", startup_timeout=0.3)
    message = str(raised.value)
    assert "grpc.health.v1.Health/Check" in message
    assert "NOT_SERVING" in message
    assert f"127.0.0.1:{down.port}" in message


def test_a_grpc_server_without_the_health_service_is_told_what_to_add(
    nvcf: Emulator,
) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    echo_pb2_grpc.add_EchoServicer_to_server(grpc_echo_server.Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(RuntimeError) as raised:
            nvcf.add_function(
                f"http://127.0.0.1:{port}",
                name="no-health",
                inference_url="/grpc",
                startup_timeout=0.3,
            )
    finally:
        server.stop(None).wait()
    assert "answered UNIMPLEMENTED" in str(raised.value)
    assert "HealthServicer" in str(raised.value)


def test_nothing_listening_on_the_grpc_port_is_named(nvcf: Emulator) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RuntimeError) as raised:
        nvcf.add_function(
            f"http://127.0.0.1:{port}", name="nobody", inference_url="/grpc", startup_timeout=0.3
        )
    assert f"127.0.0.1:{port} answered UNAVAILABLE" in str(raised.value)


def test_bidi_streaming_relays_every_message(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    stub = echo_pb2_grpc.EchoStub(channel)
    words = [f"word-{i}" for i in range(50)]
    replies = stub.EchoMessageStreaming(
        (echo_pb2.EchoRequest(message=w) for w in words), metadata=metadata(nvcf, fn)
    )
    assert [r.message for r in replies] == words


def test_server_streaming_relays_every_message(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    count = channel.unary_stream("/test.Extra/Count")
    assert list(count(b"5", metadata=metadata(nvcf, fn))) == [f"one-{i}".encode() for i in range(5)]


def test_metadata_reaches_the_container_and_its_metadata_comes_back(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    """As NVCF's reverse proxies do: everything the client sent goes on, with nvcf-reqid."""
    sent = [*metadata(nvcf, fn), ("x-user", "alice"), ("x-blob-bin", b"\x01\x02")]
    body, call = raw(channel, "/test.Extra/Metadata").with_call(b"", metadata=sent)
    seen = body.decode().splitlines()
    for expected in (
        f"function-id='{fn.function_id}'",
        f"function-version-id='{fn.version_id}'",
        f"authorization='Bearer {nvcf.api_key}'",
        "x-user='alice'",
        "x-blob-bin=b'\\x01\\x02'",
    ):
        assert expected in seen
    request_id = dict(call.initial_metadata())["nvcf-reqid"]
    assert f"nvcf-reqid='{request_id}'" in seen
    assert ("x-initial", "from-container") in call.initial_metadata()
    assert ("x-trailing", "also-from-container") in call.trailing_metadata()


def test_client_streaming_relays_every_message(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    total = channel.stream_unary("/test.Extra/Total")
    assert total(iter([b"1", b"2", b"39"]), metadata=metadata(nvcf, fn)) == b"42"


def test_server_reflection_through_the_proxy(nvcf: Emulator, fn: Any, proxy: GrpcProxy) -> None:
    """What grpcurl does against NVCF (``-H function-id:...``): reflection is the container's
    own bidi-streaming service, passed through like any other."""

    class WithMetadata(grpc.StreamStreamClientInterceptor):  # the database sends none itself
        def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
            details = details._replace(metadata=metadata(nvcf, fn))
            return continuation(details, requests)

    with grpc.insecure_channel(proxy.address) as plain:
        channel = grpc.intercept_channel(plain, WithMetadata())
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "Echo" in database.get_services()
        echo = database.FindFileContainingSymbol("Echo")
        assert [s.name for s in echo.service] == ["Echo"]


def test_the_containers_error_status_details_and_trailers_are_relayed(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    err = refusal(lambda: raw(channel, "/test.Extra/Fail")(b"", metadata=metadata(nvcf, fn)))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "quota of the container is used up"
    trailing = err.trailing_metadata()
    assert ("retry-after", "7") in trailing
    assert ("x-detail-bin", b"\x00\xff") in trailing
    assert [c.status for c in nvcf.calls if c.kind == "grpc"] == [429]


def test_an_unknown_method_is_the_containers_unimplemented(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    err = refusal(lambda: raw(channel, "/nope.Service/Missing")(b"", metadata=metadata(nvcf, fn)))
    assert err.code() is grpc.StatusCode.UNIMPLEMENTED


def test_the_clients_deadline_reaches_the_container(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    remaining = raw(channel, "/test.Extra/Deadline")(b"", metadata=metadata(nvcf, fn), timeout=60)
    # Without a deadline the container would see None; gRPC rounds a timeout up a little.
    assert 0 < float(remaining) < 70


def test_messages_over_grpcs_default_4_mib_pass_both_ways(
    nvcf: Emulator, fn: Any, proxy: GrpcProxy
) -> None:
    """NVCF: "gRPC functions do not have an input request size limit"."""
    big = bytes(range(256)) * (5 * 4096)  # 5 MiB
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(proxy.address, options=options) as client:
        assert raw(client, "/test.Extra/EchoBytes")(big, metadata=metadata(nvcf, fn)) == big


def test_compressed_messages_pass(nvcf: Emulator, fn: Any, channel: grpc.Channel) -> None:
    body = b"compress me " * 10_000
    echo = raw(channel, "/test.Extra/EchoBytes")
    sent = metadata(nvcf, fn)
    assert echo(body, metadata=sent, compression=grpc.Compression.Gzip) == body


def test_a_client_that_cancels_cancels_the_containers_call(
    nvcf: Emulator, fn: Any, container: EchoContainer, channel: grpc.Channel
) -> None:
    stream = channel.unary_stream("/test.Extra/Hold")(b"", metadata=metadata(nvcf, fn))
    assert next(stream) == b"first"
    stream.cancel()
    assert container.cancelled.wait(10)


def test_many_long_streams_at_once_all_run(
    nvcf: Emulator, fn: Any, container: EchoContainer, channel: grpc.Channel
) -> None:
    """Each open call holds one of the proxy's threads: 60 streams open at once all start
    (NVCF sets no such limit), none waits for another to end."""
    streams = [
        channel.unary_stream("/test.Extra/Wait")(b"", metadata=metadata(nvcf, fn), timeout=10)
        for _ in range(60)
    ]
    try:
        assert [next(s) for s in streams] == [b"started"] * 60
        container.release.set()
        assert [next(s) for s in streams] == [b"released"] * 60
    finally:
        for stream in streams:
            stream.cancel()


# -- routing: versions and sessions ----------------------------------------------------------


def test_function_version_id_pins_the_version(
    nvcf: Emulator,
    start_container: Callable[..., EchoContainer],
    new_connection: Callable[[], grpc.Channel],
) -> None:
    first, second = two_versions(nvcf, start_container, "pinned")
    for ref, label in ((first, b"one"), (second, b"two"), (first, b"one")):
        whoami = raw(new_connection(), "/test.Extra/Whoami")
        for _ in range(3):
            assert whoami(b"", metadata=metadata(nvcf, ref)) == label


@pytest.fixture
def new_connection(proxy: GrpcProxy) -> Iterator[Callable[[], grpc.Channel]]:
    """Channels of their own TCP connection each (gRPC shares one between channels to the
    same target unless told not to)."""
    opened: list[grpc.Channel] = []

    def connect() -> grpc.Channel:
        channel = grpc.insecure_channel(
            proxy.address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        opened.append(channel)
        return channel

    try:
        yield connect
    finally:
        for channel in opened:
            channel.close()


def two_versions(
    nvcf: Emulator, start_container: Callable[..., EchoContainer], name: str
) -> tuple[Any, Any]:
    one, two = start_container("one"), start_container("two")
    first = nvcf.add_function(one.url, name=name, inference_url="/grpc")
    second = nvcf.add_function(
        two.url, name=name, inference_url="/grpc", function_id=first.function_id
    )
    return first, second


def test_calls_on_one_connection_keep_their_session_and_version(
    nvcf: Emulator,
    start_container: Callable[..., EchoContainer],
    new_connection: Callable[[], grpc.Channel],
) -> None:
    """NVCF "pins sessions to the TCP connection": one request id, one version, per
    connection and function ids."""
    first, _ = two_versions(nvcf, start_container, "pinned-to-connection")
    unpinned = metadata(nvcf, first, version=False)
    seen: list[set[tuple[bytes, str]]] = []
    for _ in range(2):
        whoami = raw(new_connection(), "/test.Extra/Whoami")
        answers = set()
        for _ in range(20):
            label, call = whoami.with_call(b"", metadata=unpinned)
            answers.add((label, dict(call.initial_metadata())["nvcf-reqid"]))
        assert len(answers) == 1
        seen.append(answers)
    assert seen[0] != seen[1]  # another connection, another session


def test_nvcf_reqid_resumes_the_session_on_its_version(
    nvcf: Emulator,
    start_container: Callable[..., EchoContainer],
    new_connection: Callable[[], grpc.Channel],
) -> None:
    first, _ = two_versions(nvcf, start_container, "sessions")
    unpinned = metadata(nvcf, first, version=False)
    label, call = raw(new_connection(), "/test.Extra/Whoami").with_call(b"", metadata=unpinned)
    request_id = dict(call.initial_metadata())["nvcf-reqid"]
    resumed = [*unpinned, ("nvcf-reqid", request_id)]
    for _ in range(10):
        whoami = raw(new_connection(), "/test.Extra/Whoami")
        again, call = whoami.with_call(b"", metadata=resumed)
        assert again == label
        assert dict(call.initial_metadata())["nvcf-reqid"] == request_id
    # Without it, new connections land on either version and get new ids.
    fresh = {
        raw(new_connection(), "/test.Extra/Whoami").with_call(b"", metadata=unpinned)[1]
        for _ in range(3)
    }
    ids = {dict(c.initial_metadata())["nvcf-reqid"] for c in fresh}
    assert request_id not in ids
    assert len(ids) == 3


def test_an_unknown_nvcf_reqid_is_not_found(nvcf: Emulator, fn: Any, channel: grpc.Channel) -> None:
    stale = str(uuid.uuid4())
    sent = [*metadata(nvcf, fn), ("nvcf-reqid", stale)]
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=sent))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert err.details() == (
        f"failed to open stateful work request: no existing session found for request id {stale}"
    )


def test_a_function_created_over_the_api_on_a_registered_image(
    nvcf: Emulator, container: EchoContainer, channel: grpc.Channel
) -> None:
    """A gRPC function as NVCF's docs create it: inferenceUrl /grpc and its inferencePort; the
    image runs at a URL without a port, so the function's port is used (health check too)."""
    nvcf.register_image("nvcr.io/me/grpc-echo:1", "http://127.0.0.1")
    api = "https://api.nvcf.nvidia.com"
    body = {
        "name": "grpc-echo",
        "inferenceUrl": "/grpc",
        "inferencePort": container.port,
        "containerImage": "nvcr.io/me/grpc-echo:1",
    }
    created = requests.post(f"{api}/v2/nvcf/functions", headers=nvcf.headers, json=body)
    fn = created.json()["function"]
    assert fn["health"]["protocol"] == "gRPC"
    spec = {
        "deploymentSpecifications": [
            {
                "gpu": "L40S",
                "instanceType": "gl40s_1.br25_2xlarge",
                "minInstances": 1,
                "maxInstances": 1,
            }
        ]
    }
    deployed = requests.post(
        f"{api}/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}",
        headers=nvcf.headers,
        json=spec,
    )
    assert deployed.status_code == 200, deployed.text
    got = requests.get(
        f"{api}/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}", headers=nvcf.headers
    )
    assert got.json()["function"]["status"] == "ACTIVE"
    stub = echo_pb2_grpc.EchoStub(channel)
    sent = [("function-id", fn["id"]), ("authorization", f"Bearer {nvcf.api_key}")]
    assert stub.EchoMessage(echo_pb2.EchoRequest(message="hi"), metadata=sent).message == "hi"


@pytest.mark.nvcf(api_keys={"nvapi-alice": "alice-org", "nvapi-bob": "bob-org"})
def test_another_accounts_function_is_not_found(
    nvcf: Emulator, container: EchoContainer, channel: grpc.Channel
) -> None:
    ref = nvcf.add_function(container.url, name="alices", inference_url="/grpc", nca_id="alice-org")
    whoami = raw(channel, "/test.Extra/Whoami")
    alice = [("function-id", ref.function_id), ("authorization", "Bearer nvapi-alice")]
    assert whoami(b"", metadata=alice) == b"one"
    bob = [("function-id", ref.function_id), ("authorization", "Bearer nvapi-bob")]
    err = refusal(lambda: whoami(b"", metadata=bob))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert "Specified function in account 'bob-org' is not found" in (err.details() or "")


# -- refusals: NVCF's codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer ", "bearer nvapi-lower-case-scheme", "Basic dXNlcjpwYXNz", "nvapi-bare"],
)
def test_no_bearer_authorization_is_unauthenticated(
    nvcf: Emulator, fn: Any, channel: grpc.Channel, authorization: str | None
) -> None:
    sent = [m for m in metadata(nvcf, fn) if m[0] != "authorization"]
    if authorization is not None:
        sent.append(("authorization", authorization))
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=sent))
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == "no authorization was passed in the metadata"
    assert [c.status for c in nvcf.calls if c.kind == "grpc"] == [401]


def test_a_key_the_emulator_refuses_is_unauthenticated(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    sent = [*metadata(nvcf, fn)[:-1], ("authorization", "Bearer not-an-api-key")]
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=sent))
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    assert (err.details() or "").startswith(
        "failed to open stateful work request: rpc error: code = Unauthenticated desc = "
    )


def test_no_function_id_is_invalid_argument(nvcf: Emulator, fn: Any, channel: grpc.Channel) -> None:
    sent = [("authorization", f"Bearer {nvcf.api_key}")]
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=sent))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "no function-id was passed in the metadata"


def test_a_function_id_that_is_no_uuid_is_internal(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    """UUID.fromString throws in NVCF's control plane, which maps no such exception."""
    sent = [("function-id", "not-a-uuid"), ("authorization", f"Bearer {nvcf.api_key}")]
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=sent))
    assert err.code() is grpc.StatusCode.INTERNAL
    assert "not-a-uuid" in (err.details() or "")


def test_an_unknown_function_is_not_found(nvcf: Emulator, fn: Any, channel: grpc.Channel) -> None:
    unknown = str(uuid.uuid4())
    sent = [("function-id", unknown), ("authorization", f"Bearer {nvcf.api_key}")]
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=sent))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert err.details() == (
        "failed to open stateful work request: rpc error: code = NotFound desc = "
        f"Function id '{unknown}' version 'null': Specified function in account "
        f"'{nvcf.config.default_nca_id}' is not found"
    )


def test_a_rate_limit_counts_new_sessions_and_refuses_with_resource_exhausted(
    nvcf: Emulator, container: EchoContainer, new_connection: Callable[[], grpc.Channel]
) -> None:
    """function_invoker.go checks the rate limit when a call starts a session: calls that
    keep theirs (same connection) are not counted; a new session over the limit is refused."""
    fn = nvcf.add_function(
        container.url,
        name="grpc-limited",
        inference_url="/grpc",
        rateLimit={"rateLimit": "2-M", "syncCheck": True},
    )
    sent = metadata(nvcf, fn)
    first = raw(new_connection(), "/test.Extra/Whoami")
    for _ in range(5):  # one session: counted once
        assert first(b"", metadata=sent) == b"one"
    assert raw(new_connection(), "/test.Extra/Whoami")(b"", metadata=sent) == b"one"
    err = refusal(lambda: raw(new_connection(), "/test.Extra/Whoami")(b"", metadata=sent))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (err.details() or "").startswith("exceeded rate limit")
    assert first(b"", metadata=sent) == b"one"  # its session goes on
    nvcf.clock.advance(60)
    assert raw(new_connection(), "/test.Extra/Whoami")(b"", metadata=sent) == b"one"


def test_an_unknown_version_is_not_found(nvcf: Emulator, fn: Any, channel: grpc.Channel) -> None:
    sent = [*metadata(nvcf, fn, version=False), ("function-version-id", str(uuid.uuid4()))]
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=sent))
    assert err.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("status", "code"),
    [("INACTIVE", grpc.StatusCode.NOT_FOUND), ("DEGRADED", grpc.StatusCode.INVALID_ARGUMENT)],
)
def test_a_function_that_is_not_active_is_refused(
    nvcf: Emulator, fn: Any, channel: grpc.Channel, status: str, code: grpc.StatusCode
) -> None:
    nvcf.set_function_status(fn.function_id, fn.version_id, status)
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=metadata(nvcf, fn)))
    assert err.code() is code


def test_a_container_that_is_down_is_unavailable(
    nvcf: Emulator, fn: Any, container: EchoContainer, channel: grpc.Channel
) -> None:
    container.stop()
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=metadata(nvcf, fn)))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert [c.status for c in nvcf.calls if c.kind == "grpc"] == [503]


def test_a_container_restarted_on_its_port_is_reached_at_once(
    nvcf: Emulator,
    fn: Any,
    container: EchoContainer,
    start_container: Callable[..., EchoContainer],
    channel: grpc.Channel,
) -> None:
    whoami = raw(channel, "/test.Extra/Whoami")
    assert whoami(b"", metadata=metadata(nvcf, fn)) == b"one"
    container.stop()
    err = refusal(lambda: whoami(b"", metadata=metadata(nvcf, fn)))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    start_container("restarted", port=container.port)
    assert whoami(b"", metadata=metadata(nvcf, fn)) == b"restarted"


def test_an_in_process_container_cannot_serve_grpc(nvcf: Emulator, channel: grpc.Channel) -> None:
    ref = nvcf.add_function(lambda request: "hi", name="http-only", inference_url="/grpc")
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=metadata(nvcf, ref)))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "running gRPC server" in (err.details() or "")


def test_a_busy_port_is_an_error_not_a_shared_port(nvcf: Emulator, proxy: GrpcProxy) -> None:
    second = GrpcProxy(nvcf, port=proxy.port)
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{proxy.port}"):
        second.start()
    assert repr(second) == "<GrpcProxy stopped>"


def test_stopping_the_proxy_ends_its_open_calls(
    nvcf: Emulator, fn: Any, container: EchoContainer
) -> None:
    proxy = GrpcProxy(nvcf).start()
    with grpc.insecure_channel(proxy.address) as client:
        stream = client.unary_stream("/test.Extra/Hold")(b"", metadata=metadata(nvcf, fn))
        assert next(stream) == b"first"
        proxy.stop(grace=0)
        assert container.cancelled.wait(10)  # the container's call is cancelled too
        with pytest.raises(grpc.RpcError):
            next(stream)
    assert proxy.port and repr(proxy) == "<GrpcProxy stopped>"


@pytest.mark.parametrize(
    "travel",
    [
        lambda: freezegun.freeze_time("2020-01-01"),
        lambda: freezegun.freeze_time("2040-01-01"),
        lambda: time_machine.travel("2020-01-01", tick=False),
        lambda: time_machine.travel("2040-01-01", tick=False),
    ],
    ids=["freezegun-past", "freezegun-future", "time-machine-past", "time-machine-future"],
)
def test_time_travel_after_the_servers_started(
    nvcf: Emulator,
    container: EchoContainer,
    channel: grpc.Channel,
    travel: Callable[[], Any],
) -> None:
    """gRPC computes deadlines from time.time(): the health check waits in real time instead
    (under a frozen past its 2 s deadline had gone before it was sent: add_function failed with
    DEADLINE_EXCEEDED). Servers are started before travelling: grpc.server().start() itself
    hangs in a frozen future."""
    with travel():
        ref = nvcf.add_function(
            container.url, name="time-travel", inference_url="/grpc", startup_timeout=5
        )
        sent = [("function-id", ref.function_id), ("authorization", f"Bearer {nvcf.api_key}")]
        assert raw(channel, "/test.Extra/Whoami")(b"", metadata=sent) == b"one"
        count = channel.unary_stream("/test.Extra/Count")
        assert list(count(b"2", metadata=sent)) == [b"one-0", b"one-1"]


@pytest.mark.parametrize(
    ("rule", "code", "details"),
    [
        ({"status": 503, "retry_after": 3}, grpc.StatusCode.UNAVAILABLE, "Injected fault #"),
        ({"status": 429, "message": "slow down"}, grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down"),
        ({"status": 500}, grpc.StatusCode.INTERNAL, "Injected fault #"),
        ({"drop": True}, grpc.StatusCode.UNAVAILABLE, "connection dropped"),
    ],
)
def test_an_invoke_fault_answers_instead_of_the_container_once(
    nvcf: Emulator,
    fn: Any,
    channel: grpc.Channel,
    rule: dict[str, Any],
    code: grpc.StatusCode,
    details: str,
) -> None:
    """``emulator.faults.add("invoke", ...)`` works on gRPC calls too (retry logic tests)."""
    nvcf.faults.add("invoke", **rule)
    whoami = raw(channel, "/test.Extra/Whoami")
    err = refusal(lambda: whoami(b"", metadata=metadata(nvcf, fn)))
    assert err.code() is code
    assert details in (err.details() or "")
    if "retry_after" in rule:
        assert ("retry-after", "3") in err.trailing_metadata()
    assert whoami(b"", metadata=metadata(nvcf, fn)) == b"one"  # times=1: spent


def test_a_closed_emulators_proxy_is_unavailable(
    nvcf: Emulator, fn: Any, channel: grpc.Channel
) -> None:
    nvcf.close()
    err = refusal(lambda: raw(channel, "/test.Extra/Whoami")(b"", metadata=metadata(nvcf, fn)))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "closed" in (err.details() or "")


# -- packaging -----------------------------------------------------------------------------------


def test_nvcf_emulator_imports_without_grpcio_and_the_proxy_names_the_extra() -> None:
    """A gRPC function's health check cannot run either: add_function says so at once."""
    script = (
        "import sys; sys.modules['grpc'] = None\n"
        "import nvcf_emulator\n"
        "try:\n"
        "    import nvcf_emulator.grpc_proxy\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "with nvcf_emulator.Emulator() as emu:\n"
        "    try:\n"
        "        url = 'http://127.0.0.1:9'\n"
        "        emu.add_function(url, inference_url='/grpc', startup_timeout=600)\n"
        "    except RuntimeError as exc:\n"
        "        print(exc)\n"
        "    print(len(emu.functions.all()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    imported, added, left = out.stdout.splitlines()
    assert imported == "nvcf_emulator.grpc_proxy needs grpcio: pip install 'nvcf-emulator[grpc]'"
    assert added.startswith("function 'emulated-function' serves gRPC (inferenceUrl /grpc)")
    assert added.endswith("pip install 'nvcf-emulator[grpc]'")
    assert left == "0"  # nothing left behind


# -- the ways in: the nvcf_grpc fixture, Emulator.serve_grpc, nvcf-emulate --grpc-port -----------


def test_the_nvcf_grpc_fixture_serves_the_nvcf_emulator(
    nvcf: Emulator, nvcf_grpc: GrpcProxy, container: EchoContainer
) -> None:
    fn = nvcf.add_function(container.url + "/grpc", name="echo")
    with grpc.insecure_channel(nvcf_grpc.address) as opened:
        reply = echo_pb2_grpc.EchoStub(opened).EchoMessage(
            echo_pb2.EchoRequest(message="fixture"), metadata=metadata(nvcf, fn)
        )
    assert reply.message == "fixture"


def test_serve_grpc_is_stopped_by_close(container: EchoContainer) -> None:
    emu = Emulator()
    try:
        proxy = emu.serve_grpc()
        fn = emu.add_function(container.url, name="echo", inference_url="/grpc")
        with grpc.insecure_channel(proxy.address) as opened:
            stub = echo_pb2_grpc.EchoStub(opened)
            assert stub.EchoMessage(echo_pb2.EchoRequest(message="a"), metadata=metadata(emu, fn))
    finally:
        emu.close()
    with grpc.insecure_channel(proxy.address) as opened:
        stub = echo_pb2_grpc.EchoStub(opened)
        gone = refusal(lambda: stub.EchoMessage(echo_pb2.EchoRequest(message="b"), timeout=5))
    assert gone.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(RuntimeError, match="closed"):
        emu.serve_grpc()


def test_nvcf_emulate_grpc_port_serves_a_function_given_by_url(container: EchoContainer) -> None:
    exe = str(Path(sys.executable).with_name("nvcf-emulate"))
    proc = subprocess.Popen(
        [exe, "--port", "0", "--grpc-port", "0", "--function", f"echo={container.url}/grpc"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        fid = address = ""
        for line in proc.stdout:
            if "functionId=" in line:
                fid = line.split("functionId=")[1].split()[0]
            if "gRPC listening on" in line:
                address = line.rsplit(" ", 1)[1].strip()
                break
        assert fid and address, proc.stderr.read() if proc.stderr else ""
        with grpc.insecure_channel(address) as opened:
            reply = echo_pb2_grpc.EchoStub(opened).EchoMessage(
                echo_pb2.EchoRequest(message="cli"),
                metadata=[("function-id", fid), ("authorization", "Bearer nvapi-cli")],
                timeout=30,
            )
        assert reply.message == "cli"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_nvcf_emulate_grpc_port_out_of_range_is_a_usage_error() -> None:
    exe = str(Path(sys.executable).with_name("nvcf-emulate"))
    done = subprocess.run([exe, "--grpc-port", "70000"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--grpc-port must be 0-65535, got 70000" in done.stderr
