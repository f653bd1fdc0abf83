"""Review: the public, pytest-facing API as a demanding user meets it (types, errors, reprs,
README samples). Tests named ``test_good_*`` pin behaviour that is right today; the others pin
what a user should get and does not yet."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

import nvcf_emulator
from nvcf_emulator import (
    Clock,
    ContainerRequest,
    Emulator,
    EmulatorConfig,
)

ROOT = Path(__file__).resolve().parent.parent
API = "https://api.nvcf.nvidia.com"
META = {"contentType": "text/plain", "description": "notes"}


def _create_asset(emu: Emulator) -> str:
    r = requests.post(f"{API}/v2/nvcf/assets", headers=emu.headers, json=META, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["assetId"])


# -- a plain loopback server that is not the emulator ---------------------------------------------


class _Other(BaseHTTPRequestHandler):
    """Answers every GET and POST with 200 ``{"from": "other"}``."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b'{"from": "other"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[str]:
    """The origin of a local HTTP server unrelated to the emulator."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Other)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# == 1. nvcf.serve() on an active emulator captures every 127.0.0.1 URL


def test_serving_an_active_emulator_leaves_other_loopback_servers_alone(
    nvcf: Emulator, other_server: str
) -> None:
    """README: ``nvcf.serve()`` returns a started server. Serving moves the storage URL to
    ``http://127.0.0.1:PORT/nvcf-assets`` and in-process routing matches by host only, so every
    ``requests`` call to 127.0.0.1 on any port (another service, ``nvcf_server``) is answered by
    the emulator with a 404 "No route", even after the server is stopped."""
    server = nvcf.serve()
    try:
        r = requests.get(f"{other_server}/anything", timeout=10)
        assert (r.status_code, r.json()) == (200, {"from": "other"})
    finally:
        server.stop()
    r = requests.get(f"{other_server}/anything", timeout=10)
    assert (r.status_code, r.json()) == (200, {"from": "other"})


def test_url_container_on_loopback_works_while_the_emulator_is_served(
    nvcf: Emulator, other_server: str
) -> None:
    """The URL container's own health check and calls are routed into the emulator: the user
    gets "health check GET /v2/health/ready answered 404 ... pass health_uri=", which blames
    their container."""
    server = nvcf.serve()
    try:
        fid, _ = nvcf.add_function(f"{other_server}/infer", name="local", startup_timeout=2)
        r = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={})
        assert (r.status_code, r.json()) == (200, {"from": "other"})
    finally:
        server.stop()


def test_an_api_base_url_with_a_port_claims_that_port_only(other_server: str) -> None:
    """The same for the control plane: ``api_base_url="http://127.0.0.1:PORT"`` routes calls
    to that port in-process and leaves every other port of the host to its own server."""
    with socket.socket() as probe:  # a port nothing listens on: only routing can answer it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Emulator(api_base_url=f"http://127.0.0.1:{port}") as emu:
        r = requests.get(f"http://127.0.0.1:{port}/v2/nvcf/assets", headers=emu.headers)
        assert (r.status_code, r.json()) == (200, {"assets": []})
        r = requests.get(f"{other_server}/anything", timeout=10)
        assert (r.status_code, r.json()) == (200, {"from": "other"})


# == 2. closed emulators and stopped servers


def _try_enter(emu: Emulator) -> Callable[[], None]:
    emu.__enter__()
    return emu.close


def _try_activate(emu: Emulator) -> Callable[[], None]:
    cm = emu.activate()
    cm.__enter__()
    return lambda: cm.__exit__(None, None, None)


def _try_serve(emu: Emulator) -> Callable[[], None]:
    return emu.serve().stop


def _try_add_function(emu: Emulator) -> Callable[[], None]:
    emu.add_function(lambda request: {"ok": True}, name="late")
    return emu.close


@pytest.mark.parametrize(
    "use",
    [_try_enter, _try_activate, _try_serve, _try_add_function],
    ids=["with", "activate", "serve", "add_function"],
)
def test_a_closed_emulator_refuses_to_be_used_again(
    use: Callable[[Emulator], Callable[[], None]],
) -> None:
    """``close()`` removes the temp dir, yet ``with emu:`` / ``serve()`` / ``add_function``
    succeed afterwards: creating an asset answers 200, its upload then a 500 InternalError
    (FileNotFoundError in the log), an invocation a 500 connection error. A user should get
    ``RuntimeError: this Emulator is closed ...`` at once."""
    emu = Emulator()
    emu.close()
    cleanup: Callable[[], None] | None = None
    try:
        with pytest.raises(RuntimeError, match="closed"):
            cleanup = use(emu)
    finally:
        if cleanup is not None:
            cleanup()
        emu.close()


def test_a_stopped_server_refuses_to_start_again() -> None:
    """``server.start()`` after ``stop()`` returns the server as if started, while its thread
    dies at once (``ValueError: Invalid file descriptor: -1`` in a background thread)."""
    emu = Emulator()
    server = emu.serve()
    server.stop()
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            server.start()
    finally:
        server.stop()
        emu.close()


# == 3. settings that are silently taken wrongly, or crash


@pytest.mark.parametrize("name", ["always_async", "admin_enabled", "keep_staged"])
def test_a_string_is_not_taken_for_a_boolean_setting(name: str) -> None:
    """``@pytest.mark.nvcf(always_async="false")`` turns async mode ON ("false" is truthy);
    ``admin_enabled="no"`` leaves the admin API open. The ini parses these words; the marker
    and ``Emulator(...)`` keep the string."""
    with pytest.raises(ValueError, match=name):
        EmulatorConfig(**{name: "false"})


def test_extra_api_hosts_given_as_one_string_is_not_split_into_letters() -> None:
    """``Emulator(extra_api_hosts="api.example.com")`` routes the hosts 'a', 'p', 'i', '.', ...
    and not api.example.com, whose calls then go to the real network."""
    try:
        emu = Emulator(extra_api_hosts="api.example.com")
    except (TypeError, ValueError) as exc:
        assert "extra_api_hosts" in str(exc)
        return
    try:
        assert "api.example.com" in emu.api_hosts
        assert "a" not in emu.api_hosts
    finally:
        emu.close()


def test_api_base_url_with_a_path_is_refused_or_honoured() -> None:
    """``api_base_url="https://x.example.com/v1"`` is accepted and ``base_url`` keeps ``/v1``,
    but every call to ``f"{nvcf.base_url}/v2/nvcf/assets"`` is a 404 "No route for /v1/v2/..."."""
    try:
        emu = Emulator(api_base_url="https://x.example.com/v1")
    except ValueError as exc:
        assert "api_base_url" in str(exc)
        return
    with emu:
        r = requests.post(f"{emu.base_url}/v2/nvcf/assets", headers=emu.headers, json=META)
        assert r.status_code == 200, r.text


def test_a_positional_dict_of_settings_says_what_emulator_takes() -> None:
    """``Emulator({"max_asset_bytes": 1})`` raises AttributeError: 'dict' object has no
    attribute 'replace'."""
    with pytest.raises(TypeError, match="EmulatorConfig"):
        Emulator({"max_asset_bytes": 1})  # type: ignore[arg-type]


def test_api_keys_of_the_wrong_shape_name_the_setting() -> None:
    """``Emulator(api_keys=["nvapi-x"])`` raises AttributeError: 'list' object has no
    attribute 'items', from deep inside."""
    with pytest.raises((TypeError, ValueError), match="api_keys"):
        Emulator(api_keys=["nvapi-x"])


def test_an_unknown_setting_suggests_the_close_one() -> None:
    """A marker typo ``@pytest.mark.nvcf(max_asset_bytez=1)`` gets "unknown emulator
    setting(s): max_asset_bytez" and no hint among the ~40 names."""
    with pytest.raises(TypeError, match="max_asset_bytes"):
        Emulator(max_asset_bytez=1)


@pytest.mark.parametrize("name", ["root_dir", "state_dir"])
def test_fixed_setting_error_does_not_send_the_user_to_nvcf_settings(
    name: str, tmp_path: Path
) -> None:
    """``@pytest.mark.nvcf(root_dir=...)`` on ``nvcf_server`` says "give it ... in
    nvcf_settings", and ``nvcf_settings`` then refuses root_dir/state_dir at start-up."""
    emu = Emulator()
    try:
        with pytest.raises(ValueError, match=name) as info:
            emu.configure(**{name: tmp_path / "elsewhere"})
        assert "nvcf_settings" not in str(info.value)
        assert "nvcf fixture" in str(info.value)
    finally:
        emu.close()


# == 4. add_function: mistakes found at invoke time, or never


def test_add_function_honours_or_refuses_camel_case_names_of_its_own_parameters(
    nvcf: Emulator,
) -> None:
    """``definition`` takes create-body members in camelCase, as NVCF's API docs spell them.
    ``inferenceUrl="/infer"`` is accepted and silently replaced by the default ``/``."""

    def echo(request: ContainerRequest) -> dict[str, str]:
        return {"path": request.path}

    try:
        ref = nvcf.add_function(echo, name="echo", inferenceUrl="/infer")
    except TypeError as exc:
        assert "inference_url" in str(exc)
        return
    assert nvcf.function(*ref).inference_url == "/infer"


def test_add_function_refuses_a_callable_that_cannot_take_the_request(nvcf: Emulator) -> None:
    """A zero-argument callable registers as ACTIVE; every invocation then answers 500
    "Inference error" (TypeError in the log)."""
    with pytest.raises(TypeError, match="ContainerRequest"):
        nvcf.add_function(lambda: {"ok": True}, name="zero")


def test_add_function_with_a_mistyped_url_says_it_is_not_a_url(nvcf: Emulator) -> None:
    """``add_function("http//127.0.0.1:9/infer")`` raises ModuleNotFoundError: No module named
    'http//127'."""
    with pytest.raises(ValueError, match="http://"):
        nvcf.add_function("http//127.0.0.1:9/infer")


def test_set_function_status_on_unknown_ids_names_both(nvcf: Emulator) -> None:
    """Today: ``KeyError: 'no-such-version'``: which call, which function?"""
    ref = nvcf.add_function(lambda request: {}, name="f")
    with pytest.raises(KeyError) as info:
        nvcf.set_function_status(ref.function_id, "no-such-version", "DEGRADED")
    assert ref.function_id in str(info.value)
    assert "no-such-version" in str(info.value)


def test_set_function_status_with_a_bad_status_lists_the_valid_ones(nvcf: Emulator) -> None:
    """Today: "'degraded' is not a valid FunctionStatus" (lower case, or a typo) and no list."""
    ref = nvcf.add_function(lambda request: {}, name="f")
    with pytest.raises(ValueError) as info:
        nvcf.set_function_status(ref.function_id, ref.version_id, "degraded")
    assert "DEGRADED" in str(info.value)
    assert "ACTIVE" in str(info.value)


def test_faults_add_with_a_string_status_names_status(nvcf: Emulator) -> None:
    """Today: TypeError: '<=' not supported between instances of 'int' and 'str'."""
    with pytest.raises(ValueError, match="status"):
        nvcf.faults.add("create", status="503")  # type: ignore[arg-type]


def test_asset_bytes_says_when_the_asset_exists_but_was_never_uploaded(nvcf: Emulator) -> None:
    """Both cases are a bare ``KeyError: '<id>'``; the common failure (the upload went wrong)
    looks like a wrong id."""
    asset_id = _create_asset(nvcf)
    with pytest.raises(KeyError) as created:
        nvcf.asset_bytes(asset_id)
    with pytest.raises(KeyError) as unknown:
        nvcf.asset_bytes("00000000-0000-4000-8000-000000000000")
    assert "upload" in str(created.value)
    assert str(created.value) != str(unknown.value)


# == 5. the clock: what time-machine and freezegun users pass


def test_clock_advance_takes_a_timedelta() -> None:
    """``traveller.shift(timedelta(...))`` and ``frozen.tick(timedelta(...))`` work; here:
    TypeError: float() argument must be ... not 'datetime.timedelta'."""
    clock = Clock()
    before = clock.now()
    assert clock.advance(timedelta(hours=1)) == pytest.approx(before + 3600, abs=5)


def test_clock_set_takes_an_rfc3339_string_as_the_remote_clock_does() -> None:
    """``RemoteEmulator(url).clock.set("2026-01-01T00:00:00Z")`` works; the same call on
    ``nvcf.clock`` is ValueError: could not convert string to float."""
    assert Clock().set("2026-01-01T00:00:00Z") == pytest.approx(1767225600.0, abs=5)


# == 6. reprs shown when a test fails


def test_emulator_repr_says_where_it_answers(nvcf: Emulator) -> None:
    """pytest prints ``nvcf = <nvcf_emulator.emulator.Emulator object at 0x7f...>``."""
    text = repr(nvcf)
    assert "Emulator" in text
    assert "api.nvcf.nvidia.com" in text


def test_closed_emulator_repr_says_closed() -> None:
    emu = Emulator()
    emu.close()
    assert "closed" in repr(emu)


def test_server_repr_shows_its_url_and_state() -> None:
    emu = Emulator()
    server = emu.serve()
    try:
        assert server.url in repr(server)
    finally:
        server.stop()
        emu.close()
    assert "stopped" in repr(server)


def test_clock_repr_shows_the_emulated_time() -> None:
    """A failing time-travel test shows ``<nvcf_emulator.domain.clock.Clock object at ...>``."""
    clock = Clock()
    clock.set(datetime(2026, 1, 1, tzinfo=UTC))
    assert "2026-01-01" in repr(clock)


def test_invocation_repr_stays_readable_for_a_large_body(nvcf: Emulator) -> None:
    """A 1 MB request body gives a 3 MB repr (the body twice, as bytes literals): printed by
    a failing assert under ``-vv``, a log line or a debugger."""
    ref = nvcf.add_function(lambda request: {"ok": True}, name="f")
    requests.post(
        f"{API}/v2/nvcf/pexec/functions/{ref.function_id}",
        headers=nvcf.headers,
        data=b"z" * 1_000_000,
        timeout=30,
    )
    assert len(repr(nvcf.invocations[-1])) < 20_000


# == 7. types for users on mypy --strict

USER_CODE = """\
from nvcf_emulator import Emulator, EmulatorServer


def use(server: EmulatorServer, emu: Emulator) -> None:
    server.asset_bytez("x")  # SERVER_TYPO
    for fault in emu.faults:
        print(fault.statuz)  # FAULT_TYPO
    Emulator(max_asset_bytez=1)  # SETTING_TYPO
"""


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """mypy --strict on a user's file: the error text on each marked line."""
    where = tmp_path_factory.mktemp("mypy-user")
    path = where / "user_code.py"
    path.write_text(USER_CODE)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir=/dev/null",
            "--no-error-summary",
            str(path),
        ],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = USER_CODE.splitlines()
    errors: dict[str, str] = {}
    for line in out.stdout.splitlines():
        m = re.match(r".*user_code\.py:(\d+): error: (.*)", line)
        if m:
            tag = lines[int(m.group(1)) - 1].rpartition("# ")[2]
            errors[tag] = errors.get(tag, "") + m.group(2)
    assert "Cannot find implementation or library stub" not in out.stdout, out.stdout
    return errors


def test_mypy_sees_a_typo_on_the_nvcf_server_fixture(mypy_errors: dict[str, str]) -> None:
    """``EmulatorServer.__getattr__`` returns Any: ``nvcf_server.asset_bytes(...)``,
    ``.invocations``, ``.faults``, ``.add_function(...)`` (README: "everything nvcf has") are all
    Any, and any misspelling type-checks."""
    assert "SERVER_TYPO" in mypy_errors


def test_mypy_sees_what_iterating_faults_yields(mypy_errors: dict[str, str]) -> None:
    """``Faults.__iter__`` is annotated ``-> Any``."""
    assert "FAULT_TYPO" in mypy_errors


def test_mypy_sees_a_misspelt_setting(mypy_errors: dict[str, str]) -> None:
    """``Emulator(**settings: Any)``: every typo and wrong type in ~40 settings passes mypy
    (an ``Unpack[TypedDict]`` of the EmulatorConfig fields would catch them)."""
    assert "SETTING_TYPO" in mypy_errors


def test_types_returned_by_public_methods_are_importable_from_the_package() -> None:
    """``nvcf.function()`` returns FunctionVersion, ``set_function_status`` takes a
    FunctionStatus, ``faults.add`` returns Fault, ``nvcf.calls`` yields Call,
    ``register_image`` returns Container, ``Invocation.status`` is an InvocationStatus: to
    annotate a helper, users import them from ``nvcf_emulator.domain.*``."""
    wanted = ["Call", "Container", "Fault", "FunctionStatus", "FunctionVersion", "InvocationStatus"]
    missing = [name for name in wanted if name not in nvcf_emulator.__all__]
    assert missing == []


# == 8. README samples, copied as they are


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_readme_python_sample_runs_as_written(pytester: pytest.Pytester, index: int) -> None:
    """The time-travel sample calls ``create_asset()``, ``upload()``, ``upload_an_asset()`` and
    ``get_asset()``, defined nowhere (NameError); the Triton sample asks for an ``asset_id``
    fixture that nothing provides (its ``model_repository`` is given here, as a user has one)."""
    block = _readme_blocks()[index]
    if "model_repository" in block:
        shutil.copytree(
            ROOT / "conftest_examples" / "triton_model" / "model_repository",
            pytester.path / "model_repository",
        )
    pytester.makepyfile(**{f"test_readme_sample_{index}": block})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=120)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1, result.stdout.str()[-3000:]
    assert "failed" not in outcomes and "errors" not in outcomes and "error" not in outcomes, (
        result.stdout.str()[-3000:]
    )


# == good behaviour that no other test pins


def test_good_a_container_exception_reaches_the_test_log(
    nvcf: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The client gets NVCF's 500; the traceback is in pytest's "Captured log call"."""

    def boom(request: ContainerRequest) -> dict[str, str]:
        raise ValueError("my container bug")

    fid, _ = nvcf.add_function(boom, name="boom")
    r = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={})
    assert r.status_code == 500
    assert "ValueError: my container bug" in caplog.text
    assert "my container bug" in (nvcf.invocations[-1].error or "")


def test_good_a_non_container_is_refused_by_type(nvcf: Emulator) -> None:
    with pytest.raises(TypeError, match="cannot use int as a container"):
        nvcf.add_function(42)


def test_good_function_ref_unpacks_and_shows_its_container(nvcf: Emulator) -> None:
    def model(request: ContainerRequest) -> dict[str, str]:
        return {}

    ref = nvcf.add_function(model, name="model")
    fid, vid = ref
    assert (fid, vid) == (ref.function_id, ref.version_id)
    assert "model" in repr(ref.container)
    assert nvcf.function(fid, vid).name == "model"


def test_good_served_emulator_is_a_context_manager_that_really_stops() -> None:
    emu = Emulator()  # not routed in-process: the socket is what answers
    try:
        with emu.serve() as server:
            r = requests.get(f"{server.url}/_emulator/health", timeout=10)
            assert r.json() == {"status": "ok"}
            port = server.port
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        emu.close()


def test_good_serve_on_a_taken_port_raises_oserror_not_exit() -> None:
    """werkzeug's own bind would print and ``sys.exit()``; a library must raise."""
    emu = Emulator()
    first = emu.serve()
    try:
        with pytest.raises(OSError):
            emu.serve(port=first.port)
        assert requests.get(f"{first.url}/_emulator/health", timeout=10).status_code == 200
    finally:
        first.stop()
        emu.close()


@pytest.mark.parametrize("nca_id", ["", "<img src=x>", "a/../b", "team:one", "NUL"])
def test_add_function_refuses_an_nca_id_no_key_could_have(nca_id: str) -> None:
    """``add_function(nca_id=...)`` names the owner account; an id ``api_keys`` would refuse
    (empty, path parts, what Windows cannot name) was taken, and no key could ever invoke
    the function."""
    with Emulator() as emu:
        with pytest.raises(ValueError, match="nca_id must"):
            emu.add_function(lambda req: {}, name="fn", nca_id=nca_id)
        assert emu.add_function(lambda req: {}, name="ok", nca_id="org-team_1").function_id
