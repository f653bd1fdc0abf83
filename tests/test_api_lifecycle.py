"""The Python API's life cycle and its mistakes: closed emulators, stopped servers, containers
refused at registration, typed settings and forwarding, error messages and reprs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, get_type_hints

import pytest
import requests
from flask import Flask

from nvcf_emulator import (
    AssetNotUploadedError,
    ContainerRequest,
    Emulator,
    EmulatorConfig,
    EmulatorServer,
    EmulatorSettings,
    FunctionNotFoundError,
    FunctionStatus,
    UnknownAssetError,
)
from nvcf_emulator.worker import CallableContainer

API = "https://api.nvcf.nvidia.com"


# -- closing and stopping -----------------------------------------------------------------------


def test_close_is_idempotent_and_reports_closed() -> None:
    emu = Emulator()
    assert not emu.closed
    emu.close()
    emu.close()
    assert emu.closed


@pytest.mark.parametrize(
    "use",
    [
        lambda emu: emu.register_image("img:1", lambda request: {}),
        lambda emu: emu.reset(),
        lambda emu: emu.dashboard(),
        lambda emu: EmulatorServer(emu),
    ],
    ids=["register_image", "reset", "dashboard", "EmulatorServer"],
)
def test_a_closed_emulator_refuses_the_rest_too(use: Callable[[Emulator], Any]) -> None:
    emu = Emulator()
    emu.close()
    with pytest.raises(RuntimeError, match=r"closed.*new Emulator"):
        use(emu)


def test_leaving_a_with_block_of_a_closed_emulator_does_nothing() -> None:
    emu = Emulator()
    emu.close()
    emu.__exit__(None, None, None)
    assert "closed" in repr(emu)


def test_a_with_block_closes_and_then_refuses() -> None:
    with Emulator() as emu:
        pass
    with pytest.raises(RuntimeError, match="closed"), emu:
        pass


def test_a_stopped_server_stays_stopped_and_stop_is_idempotent() -> None:
    emu = Emulator()
    try:
        server = emu.serve()
        assert server.running
        assert "running" in repr(server)
        server.stop()
        server.stop()
        assert not server.running
        with pytest.raises(RuntimeError, match=r"stopped.*serve\(\)"), server:
            pass
        again = emu.serve()  # the emulator serves again on a new server
        try:
            assert requests.get(f"{again.url}/_emulator/health", timeout=10).status_code == 200
        finally:
            again.stop()
    finally:
        emu.close()


def test_a_server_not_yet_started_says_so() -> None:
    emu = Emulator()
    try:
        server = EmulatorServer(emu)
        assert "not started" in repr(server)
        server.stop()
        assert "stopped" in repr(server)
    finally:
        emu.close()


# -- typed settings and forwarding --------------------------------------------------------------


def test_the_settings_typeddict_names_every_config_field() -> None:
    fields = {f.name for f in dataclasses.fields(EmulatorConfig)}
    assert set(EmulatorSettings.__annotations__) == fields


def test_the_server_forwards_the_emulator_api(nvcf_server: EmulatorServer) -> None:
    emu = nvcf_server.emulator
    assert nvcf_server.faults is emu.faults
    assert nvcf_server.calls is emu.calls
    assert nvcf_server.config is emu.config
    assert nvcf_server.root == emu.root
    ref = nvcf_server.add_function(lambda request: {"ok": True}, name="fwd")
    assert nvcf_server.function(*ref).name == "fwd"
    assert nvcf_server.add_function.__doc__ == Emulator.add_function.__doc__
    r = requests.post(
        f"{nvcf_server.url}/v2/nvcf/pexec/functions/{ref.function_id}",
        headers=nvcf_server.headers,
        json={},
        timeout=10,
    )
    assert r.json() == {"ok": True}
    assert nvcf_server.invocations[-1].function_name == "fwd"
    assert nvcf_server.maybe_sweep() is None
    assert nvcf_server.storage_url == emu.storage_url  # and the untyped rest still forwards
    assert nvcf_server.signer is emu.signer


def test_forwarded_methods_keep_their_signature() -> None:
    assert get_type_hints(EmulatorServer.asset_bytes)["return"] is bytes
    assert "inference_url" in inspect.signature(EmulatorServer.add_function).parameters


# -- containers checked when they are added -----------------------------------------------------


class _CallableObject:
    def __call__(self, request: ContainerRequest) -> dict[str, str]:
        return {"from": "object"}


def _two(request: ContainerRequest, extra: str) -> dict[str, str]:
    return {"extra": extra}


def _star(*args: Any) -> dict[str, int]:
    return {"args": len(args)}


def _optional(request: ContainerRequest | None = None, *, flag: bool = False) -> dict[str, bool]:
    return {"flag": flag}


async def _asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})


def _flask() -> Flask:
    app = Flask("lifecycle")
    app.add_url_rule("/", "infer", lambda: "flask", methods=["POST"])
    app.add_url_rule("/v2/health/ready", "ready", lambda: "ok")
    return app


def _wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]


@pytest.mark.parametrize(
    ("container", "answer"),
    [
        (_CallableObject(), {"from": "object"}),
        (functools.partial(_two, extra="x"), {"extra": "x"}),
        (_star, {"args": 1}),
        (_optional, {"flag": False}),
        (_asgi, "asgi"),
        (_flask(), "flask"),
        (_wsgi, "wsgi"),
        (CallableContainer(lambda request: {"direct": True}), {"direct": True}),
    ],
    ids=["object", "partial", "star-args", "optional", "asgi", "flask", "wsgi", "container"],
)
def test_valid_containers_are_still_taken(nvcf: Emulator, container: Any, answer: Any) -> None:
    ref = nvcf.add_function(container, name="ok")
    r = requests.post(f"{API}/v2/nvcf/pexec/functions/{ref.function_id}", headers=nvcf.headers)
    assert r.status_code == 200, r.text
    assert (r.json() if isinstance(answer, dict) else r.text) == answer


@pytest.mark.parametrize(
    "container",
    [lambda: {}, lambda request, other, third: {}, lambda *, request: {}],
    ids=["none", "three", "keyword-only"],
)
def test_callables_that_cannot_take_one_request(nvcf: Emulator, container: Any) -> None:
    with pytest.raises(TypeError, match=r"fn\(request\)"):
        nvcf.add_function(container, name="bad")
    with pytest.raises(TypeError, match="ContainerRequest"):
        nvcf.register_image("img:1", container)
    assert nvcf.functions.all() == []
    assert nvcf.images == {}


def test_a_mistyped_url_suggests_the_url_it_meant(nvcf: Emulator) -> None:
    with pytest.raises(ValueError, match=r"did you mean https://host:8000/infer\?"):
        nvcf.add_function("https:/host:8000/infer")


def test_camel_case_create_body_names_are_honoured(nvcf: Emulator) -> None:
    ref = nvcf.add_function(
        lambda request: {},
        name="camel",
        healthUri="/health",
        inferencePort=9000,
        functionType="STREAMING",
        description="kept",
    )
    version = nvcf.function(*ref)
    assert (version.health_uri, version.inference_port) == ("/health", 9000)
    assert version.function_type == "STREAMING"


def test_both_spellings_with_different_values_are_refused(nvcf: Emulator) -> None:
    with pytest.raises(TypeError, match="inference_url='/a' and inferenceUrl='/b'"):
        nvcf.add_function(lambda request: {}, inference_url="/a", inferenceUrl="/b")


@pytest.mark.parametrize(("camel", "snake"), [("ncaId", "nca_id"), ("functionId", "function_id")])
def test_camel_case_of_a_parameter_that_is_no_body_member_is_refused(
    nvcf: Emulator, camel: str, snake: str
) -> None:
    with pytest.raises(TypeError, match=f"{snake}="):
        nvcf.add_function(lambda request: {}, **{camel: "x"})


# -- error messages -----------------------------------------------------------------------------


def test_asset_bytes_errors_are_key_errors_of_their_own(nvcf: Emulator) -> None:
    r = requests.post(
        f"{API}/v2/nvcf/assets",
        headers=nvcf.headers,
        json={"contentType": "text/plain", "description": "d"},
        timeout=10,
    )
    asset_id = r.json()["assetId"]
    with pytest.raises(AssetNotUploadedError, match="never uploaded"):
        nvcf.asset_bytes(asset_id)
    with pytest.raises(UnknownAssetError, match="never created"):
        nvcf.asset_bytes("nope")


def test_set_function_status_still_takes_good_statuses(nvcf: Emulator) -> None:
    ref = nvcf.add_function(lambda request: {}, name="f")
    nvcf.set_function_status(*ref, "DEGRADED")
    assert nvcf.function(*ref).status is FunctionStatus.DEGRADED
    nvcf.set_function_status(*ref, FunctionStatus.ERROR)
    assert nvcf.function(*ref).status is FunctionStatus.ERROR


def test_function_not_found_names_the_versions_there_are(nvcf: Emulator) -> None:
    ref = nvcf.add_function(lambda request: {}, name="f")
    with pytest.raises(FunctionNotFoundError, match=ref.version_id):
        nvcf.function(ref.function_id, "other")
    with pytest.raises(KeyError, match="no function 'x'"):
        nvcf.function("x", "y")


# -- reprs --------------------------------------------------------------------------------------


def test_invocation_repr_keeps_the_small_fields_whole(nvcf: Emulator) -> None:
    ref = nvcf.add_function(lambda request: {"ok": True}, name="small")
    requests.post(
        f"{API}/v2/nvcf/pexec/functions/{ref.function_id}", headers=nvcf.headers, data=b"hi"
    )
    text = repr(nvcf.invocations[-1])
    assert text.startswith("Invocation(request_id=")
    assert "function_name='small'" in text
    assert "request_body=b'hi'" in text
    assert "_mutex" not in text
