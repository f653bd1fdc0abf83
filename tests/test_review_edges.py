"""Adversarial review: the admin API and fault injection over HTTP, container adapters fed
misbehaving user code, and the ``nvcf-emulate`` CLI with bad flags and signals mid-request.

Every test drives a real loopback server (or the CLI subprocess) and asserts what a user sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator

EXE = str(Path(sys.executable).with_name("nvcf-emulate"))
REPO = Path(__file__).resolve().parent.parent
PROBLEM = "application/problem+json"


# -- helpers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def served(**settings: Any) -> Iterator[tuple[Emulator, str]]:
    """An emulator on a loopback port; always stopped and closed."""
    emu = Emulator(**settings)
    server = None
    try:
        server = emu.serve()
        yield emu, server.url
    finally:
        if server is not None:
            server.stop()
        emu.close()


def assert_problem(r: requests.Response, status: int | None = None) -> dict[str, Any]:
    """An NVCF-shaped problem answer: problem JSON whose ``status`` is the HTTP status."""
    assert r.headers.get("Content-Type", "").startswith(PROBLEM), (r.status_code, r.text[:300])
    doc = r.json()
    assert {"type", "title", "status", "detail"} <= set(doc), doc
    assert doc["status"] == r.status_code
    if status is not None:
        assert r.status_code == status, doc
    return dict(doc)


def still_serving(url: str) -> None:
    assert requests.get(f"{url}/_emulator/health", timeout=5).json() == {"status": "ok"}


def invoke(
    url: str,
    emu: Emulator,
    function_id: str,
    *,
    stream: bool = False,
    timeout: float = 8.0,
) -> requests.Response:
    headers = dict(emu.headers)
    if stream:
        headers["Accept"] = "text/event-stream"
    return requests.post(
        f"{url}/v2/nvcf/pexec/functions/{function_id}",
        json={"x": 1},
        headers=headers,
        timeout=timeout,
        stream=stream,
    )


def last_error(emu: Emulator) -> str:
    return emu.invocations[-1].error or ""


def healthy_wsgi(
    fn: Callable[[dict[str, Any], Any], Any],
) -> Callable[[dict[str, Any], Any], Any]:
    """A WSGI app whose health URI answers 200 and whose other paths run ``fn``."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/v2/health/ready":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        return fn(environ, start_response)

    return app


def healthy_asgi(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An ASGI app whose health URI answers 200 and whose other paths run ``fn``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/v2/health/ready":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await fn(scope, receive, send)

    return app


# -- (a) the admin API over HTTP -----------------------------------------------------------------


@pytest.fixture
def admin() -> Iterator[tuple[Emulator, str]]:
    with served() as pair:
        yield pair


@pytest.mark.parametrize("path", ["/_emulator/clock", "/_emulator/faults", "/_emulator/seed"])
@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{bad", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("null", "must be a JSON object"),
        ('"advance"', "must be a JSON object"),
        ("", "missing"),
        ("\xff\xfe", "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_admin_posts_with_bad_json_are_400(
    admin: tuple[Emulator, str], path: str, raw: str, fragment: str
) -> None:
    emu, url = admin
    r = requests.post(
        f"{url}{path}",
        data=raw.encode("latin-1"),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    doc = assert_problem(r, 400)
    assert fragment in doc["detail"]
    assert len(emu.faults) == 0
    assert emu.clock.offset == 0


def test_admin_post_with_a_non_json_content_type_is_415(admin: tuple[Emulator, str]) -> None:
    emu, url = admin
    r = requests.post(
        f"{url}/_emulator/clock",
        data='{"advance": 10}',
        headers={"Content-Type": "text/plain"},
        timeout=5,
    )
    assert "application/json" in assert_problem(r, 415)["detail"]
    assert emu.clock.offset == 0


def test_admin_post_with_an_oversized_body_is_413(admin: tuple[Emulator, str]) -> None:
    _, url = admin
    body = b'{"operation": "create", "status": 500, "message": "' + b"a" * (2 << 20) + b'"}'
    r = requests.post(
        f"{url}/_emulator/faults",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert_problem(r, 413)
    still_serving(url)


@pytest.mark.parametrize("field", ["latency", "probability", "drop", "status", "message", "seed"])
def test_fault_fields_sent_as_null_are_defaults_or_400_never_500(
    admin: tuple[Emulator, str], field: str
) -> None:
    emu, url = admin
    body: dict[str, Any] = {"operation": "list", "status": 503}
    body[field] = None
    r = requests.post(f"{url}/_emulator/faults", json=body, timeout=5)
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 400:
        assert_problem(r, 400)
        assert len(emu.faults) == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            '{"operation": "create", "latency": NaN}',
            "NaN is not a JSON value",
        ),  # Jackson refuses it too
        ('{"operation": "create", "latency": Infinity}', "Infinity is not a JSON value"),
        ('{"operation": "create", "latency": -1}', "latency"),
        ('{"operation": "create", "latency": 601}', "latency"),
        ('{"operation": "create", "latency": 1e400}', "latency"),
        ('{"operation": "create", "status": 500, "probability": NaN}', "NaN is not a JSON value"),
        ('{"operation": "create", "status": 500, "probability": 0}', "probability"),
        ('{"operation": "create", "status": 500, "probability": -0.5}', "probability"),
        ('{"operation": "create", "status": 500, "times": -1}', "times"),
        ('{"operation": "create", "status": 500, "times": 1.5}', "times"),
        ('{"operation": "create", "status": 500, "times": 1e400}', "times"),
        ('{"operation": "create", "status": 600}', "4xx or 5xx"),
        ('{"operation": "create", "status": 399}', "4xx or 5xx"),
        ('{"operation": "create", "status": -500}', "4xx or 5xx"),
        ('{"operation": "create", "status": 1' + "0" * 400 + "}", "4xx or 5xx"),
        ('{"operation": "create", "status": true}', "status"),
        ('{"operation": "create", "status": 500.0}', "status"),
        ('{"operation": "create", "status": "500"}', "status"),
        ('{"operation": "create", "drop": "yes"}', "drop"),
        ('{"operation": "create", "drop": 1}', "drop"),
        ('{"operation": "create", "status": 500, "seed": 1.5}', "seed"),
        ('{"operation": "create", "status": 500, "message": 5}', "message"),
        ('{"operation": "CREATE", "status": 500}', "operation"),
        ('{"operation": " create", "status": 500}', "operation"),
        ('{"operation": "pexec", "status": 500}', "operation"),
        ('{"operation": null, "status": 500}', "operation"),
        ('{"operation": ["create"], "status": 500}', "operation"),
        ('{"status": 500}', "operation"),
        ('{"operation": "create", "status": 500, "__class__": 1}', "unknown fault field"),
        ('{"operation": "create", "status": 500, "id": 7}', "unknown fault field"),
        ('{"operation": "create", "status": 500, "fired": 7}', "unknown fault field"),
    ],
)
def test_bad_fault_values_are_400_and_add_nothing(
    admin: tuple[Emulator, str], body: str, fragment: str
) -> None:
    emu, url = admin
    r = requests.post(
        f"{url}/_emulator/faults",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    doc = assert_problem(r, 400)
    assert fragment in doc["detail"]
    assert requests.get(f"{url}/_emulator/faults", timeout=5).json() == {"faults": []}
    assert len(emu.faults) == 0


def test_fault_with_huge_times_and_seed_fires_and_lists(admin: tuple[Emulator, str]) -> None:
    emu, url = admin
    huge = 10**40
    r = requests.post(
        f"{url}/_emulator/faults",
        data=(
            f'{{"operation": "list", "status": 429, "times": {huge}, "seed": -{huge}, '
            '"message": "slow down"}'
        ),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 200, r.text
    listed = requests.get(f"{url}/_emulator/faults", timeout=5).json()["faults"]
    assert [f["times"] for f in listed] == [huge]
    for _ in range(3):
        got = requests.get(f"{url}/v2/nvcf/assets", headers=emu.headers, timeout=5)
        assert assert_problem(got, 429)["detail"] == "slow down"
    assert requests.delete(f"{url}/_emulator/faults", timeout=5).json() == {"faults": []}
    assert requests.get(f"{url}/v2/nvcf/assets", headers=emu.headers, timeout=5).status_code == 200


def test_unknown_admin_paths_and_methods_are_problem_json(admin: tuple[Emulator, str]) -> None:
    _, url = admin
    assert_problem(requests.get(f"{url}/_emulator/nope", timeout=5), 404)
    assert_problem(requests.delete(f"{url}/_emulator/faults/1", timeout=5), 404)
    r = requests.put(f"{url}/_emulator/clock", json={"advance": 1}, timeout=5)
    assert_problem(r, 405)
    assert "POST" in r.headers["Allow"]
    assert_problem(requests.get(f"{url}/_emulator/reset", timeout=5), 405)


@pytest.mark.parametrize(
    "body",
    [
        '{"advance": "10"}',
        '{"advance": true}',
        '{"advance": null}',
        '{"advance": [1]}',
        '{"advance": {"seconds": 1}}',
        '{"advance": NaN}',
        '{"advance": Infinity}',
        '{"advance": -Infinity}',
        '{"advance": 1e400}',
        '{"advance": 1' + "0" * 400 + "}",
        '{"set": "2026-02-30T00:00:00Z"}',
        '{"set": "2026-01-01T25:00:00Z"}',
        '{"set": "2026-01-01T00:00:00+24:00"}',
        '{"set": "0000-01-01T00:00:00Z"}',
        '{"set": "2026-01-01"}',
        '{"set": "yesterday"}',
        '{"set": "2026-01-01T00:00:00"}',
        '{"set": 1767225600}',
        '{"set": null}',
        '{"set": ""}',
        '{"advance": 1, "set": "2026-01-01T00:00:00Z"}',
        "{}",
        '{"advnce": 10}',
    ],
)
def test_bad_clock_values_are_400_and_leave_the_clock_alone(
    admin: tuple[Emulator, str], body: str
) -> None:
    emu, url = admin
    r = requests.post(
        f"{url}/_emulator/clock",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert_problem(r, 400)
    assert emu.clock.offset == 0
    assert requests.get(f"{url}/_emulator/clock", timeout=5).json()["offsetSeconds"] == 0


def test_clock_pushed_to_either_end_clamps_and_everything_keeps_working(
    admin: tuple[Emulator, str],
) -> None:
    emu, url = admin
    fn = emu.add_function(lambda req: {"ok": True}, name="clock-edge")
    for advance, year in ((1e300, "9999-"), (-1e300, "0001-"), (-1e300, "0001-")):
        r = requests.post(f"{url}/_emulator/clock", json={"advance": advance}, timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["now"].startswith(year)
        asset = requests.post(
            f"{url}/v2/nvcf/assets",
            headers=emu.headers,
            json={"contentType": "a/b", "description": "d"},
            timeout=5,
        )
        assert asset.status_code == 200, asset.text
        put = requests.put(
            asset.json()["uploadUrl"],
            data=b"x",
            headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"},
            timeout=5,
        )
        assert put.status_code == 200, put.text
        assert requests.get(f"{url}/v2/nvcf/assets", headers=emu.headers, timeout=5).ok
        assert requests.get(f"{url}/_emulator/state", timeout=5).status_code == 200
        assert requests.get(f"{url}/_emulator/invocations", timeout=5).status_code == 200
        assert invoke(url, emu, fn.function_id).json() == {"ok": True}
    assert requests.post(f"{url}/_emulator/reset", timeout=5).json() == {"status": "reset"}
    assert requests.get(f"{url}/_emulator/clock", timeout=5).json()["offsetSeconds"] == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:60Z", "2026-01-01T00:00:59.000Z"),  # leap second: clamped
        ("9999-12-31T23:59:59-23:59", "9999-12-30T00:00:00.000Z"),  # past the end: clamped
        ("0001-01-01T00:00:00+23:59", "0001-01-02T00:00:00.000Z"),  # before the start: clamped
        ("2026-06-01t12:00:00.5z", "2026-06-01T12:00:00.500Z"),
    ],
)
def test_clock_set_edge_values(admin: tuple[Emulator, str], value: str, expected: str) -> None:
    _, url = admin
    r = requests.post(f"{url}/_emulator/clock", json={"set": value}, timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["now"] == expected


@pytest.mark.parametrize("value", ["1.5", "1e400", '"7"', "true", "[1]"])
def test_bad_seed_values_are_400(admin: tuple[Emulator, str], value: str) -> None:
    _, url = admin
    r = requests.post(
        f"{url}/_emulator/seed",
        data=f'{{"seed": {value}}}',
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert "seed" in assert_problem(r, 400)["detail"]


def test_huge_negative_seed_is_accepted_and_ids_repeat(admin: tuple[Emulator, str]) -> None:
    emu, url = admin
    seed = -(10**30)

    def two_ids() -> list[str]:
        assert requests.post(f"{url}/_emulator/seed", json={"seed": seed}, timeout=5).ok
        return [
            requests.post(
                f"{url}/v2/nvcf/assets",
                headers=emu.headers,
                json={"contentType": "a/b", "description": "d"},
                timeout=5,
            ).json()["assetId"]
            for _ in range(2)
        ]

    assert two_ids() == two_ids()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic s3cret",
        "Bearer s3cre",
        "Bearer s3cret2",
        "Bearer " + "s" * 20_000,
        "Bearer s\xe9cret",
        "Token s3cret",
        "s3cret",
    ],
)
def test_wrong_admin_tokens_are_401_problem_json(authorization: str | None) -> None:
    with served(admin_token="s3cret") as (emu, url):
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, path in (
            ("GET", "/_emulator/state"),
            ("POST", "/_emulator/reset"),
            ("POST", "/_emulator/faults"),
            ("POST", "/_emulator/clock"),
        ):
            r = requests.request(
                method, f"{url}{path}", headers=headers, json={"advance": 10}, timeout=5
            )
            assert_problem(r, 401)
        assert emu.clock.offset == 0
        assert len(emu.faults) == 0


def test_admin_token_is_not_taken_from_the_query_except_by_the_dashboard() -> None:
    with served(admin_token="s3cret") as (_, url):
        assert_problem(requests.get(f"{url}/_emulator/state?token=s3cret", timeout=5), 401)
        assert requests.get(f"{url}/_emulator/?token=s3cret", timeout=5).status_code == 200
        ok = {"Authorization": "bearer   s3cret  "}  # scheme case and spaces do not matter
        assert requests.get(f"{url}/_emulator/state", headers=ok, timeout=5).status_code == 200


def test_admin_token_does_not_open_a_disabled_admin_api() -> None:
    with served(admin_token="s3cret", admin_enabled=False) as (_, url):
        r = requests.get(
            f"{url}/_emulator/state", headers={"Authorization": "Bearer s3cret"}, timeout=5
        )
        assert_problem(r, 404)


class _Gate:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, req: Any) -> Any:
        self.entered.set()
        self.opened.wait(5)
        return {"late": True}


def test_reset_while_an_invocation_is_in_flight_answers_the_waiting_client() -> None:
    gate = _Gate()
    with served() as (emu, url):
        fn = emu.add_function(gate, name="gated")
        out: dict[str, Any] = {}

        def client() -> None:
            try:
                out["r"] = invoke(url, emu, fn.function_id, timeout=8)
            except Exception as exc:  # reported below
                out["exc"] = exc

        t = threading.Thread(target=client)
        t.start()
        try:
            assert gate.entered.wait(5)
            r = requests.post(f"{url}/_emulator/reset", timeout=5)
            assert r.json() == {"status": "reset"}
            t.join(4)  # the waiting client gets its answer without the container finishing
            assert not t.is_alive(), "the client is still waiting after the reset"
        finally:
            gate.opened.set()
            t.join(10)
        assert "exc" not in out, out.get("exc")
        assert_problem(out["r"], 500)
        # The emulator keeps working, and the late container answer goes nowhere.
        assert requests.get(f"{url}/_emulator/state", timeout=5).json()["invocationCount"] == 0
        fresh = emu.add_function(lambda req: {"fresh": True}, name="fresh")
        assert invoke(url, emu, fresh.function_id).json() == {"fresh": True}


def test_reset_while_a_latency_fault_is_in_flight() -> None:
    with served() as (emu, url):
        r = requests.post(
            f"{url}/_emulator/faults",
            json={"operation": "list", "latency": 1.0, "times": None},
            timeout=5,
        )
        assert r.status_code == 200
        out: dict[str, Any] = {}

        def client() -> None:
            try:
                out["r"] = requests.get(f"{url}/v2/nvcf/assets", headers=emu.headers, timeout=5)
            except Exception as exc:
                out["exc"] = exc

        (fault,) = emu.faults
        t = threading.Thread(target=client)
        t.start()
        try:
            # The client's call took the fault and now waits out its latency (the count is
            # observable state; a fixed sleep was too short for a loaded machine).
            deadline = time.monotonic() + 10
            while fault.fired < 1:
                assert time.monotonic() < deadline, "the client's call never took the fault"
                time.sleep(0.01)
            assert requests.post(f"{url}/_emulator/reset", timeout=5).status_code == 200
            assert requests.get(f"{url}/_emulator/faults", timeout=5).json() == {"faults": []}
        finally:
            t.join(6)
        assert "exc" not in out, out.get("exc")
        assert out["r"].status_code == 200
        assert requests.get(f"{url}/v2/nvcf/assets", headers=emu.headers, timeout=5).ok
        # The fault is gone: the call above did not take it (no 1 s latency was added). Counted
        # instead of timed: a loaded CI machine cannot make this fail.
        assert fault.fired == 1


# -- (b) container adapters fed misbehaving user code --------------------------------------------


@pytest.fixture
def worker() -> Iterator[tuple[Emulator, str]]:
    with served(container_timeout=1.0) as pair:
        yield pair


def _str_body(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["hello"]


def test_wsgi_app_returning_str_is_a_500_that_says_why(worker: tuple[Emulator, str]) -> None:
    emu, url = worker
    fn = emu.add_function(healthy_wsgi(_str_body), name="wsgi-str")
    assert_problem(invoke(url, emu, fn.function_id), 500)
    assert "the WSGI app yielded str, not bytes" in last_error(emu)
    still_serving(url)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (healthy_wsgi(_str_body), "the WSGI app yielded str, not bytes"),
        (lambda req: object(), "a container cannot answer with object"),
        (lambda req: (b"x", "abc"), "invalid literal for int()"),
    ],
)
def test_state_and_dashboard_show_why_a_container_failed(
    worker: tuple[Emulator, str], target: Any, reason: str
) -> None:
    """``GET /_emulator/state`` (what the dashboard shows) previews an invocation's error; the
    preview must keep the exception's message, not only the top of its traceback."""
    emu, url = worker
    fn = emu.add_function(target, name="why")
    assert_problem(invoke(url, emu, fn.function_id), 500)
    assert reason in last_error(emu)
    state = requests.get(f"{url}/_emulator/state", timeout=5).json()
    assert reason in state["invocations"][0]["error"]


def test_wsgi_event_stream_of_str_to_a_streaming_client_is_an_error_response(
    worker: tuple[Emulator, str],
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return ["data: not bytes\n\n"]

    emu, url = worker
    fn = emu.add_function(healthy_wsgi(app), name="wsgi-sse-str")
    try:
        r = invoke(url, emu, fn.function_id, stream=True)
        body = r.content
    except requests.ConnectionError as exc:
        pytest.fail(f"the client got a dropped connection instead of an error response: {exc}")
    assert r.status_code == 500, (r.status_code, body[:200])
    still_serving(url)


def test_wsgi_start_response_called_twice_is_an_error(worker: tuple[Emulator, str]) -> None:
    """PEP 3333: calling start_response again without exc_info is an error (wsgiref, werkzeug
    and gunicorn all raise); a real server would answer 500, not the second status."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("X-First", "1")])
        start_response("201 Created", [("X-Second", "2")])
        return [b"x"]

    emu, url = worker
    fn = emu.add_function(healthy_wsgi(app), name="wsgi-twice")
    r = invoke(url, emu, fn.function_id)
    assert_problem(r, 500)
    assert "start_response" in last_error(emu)


@pytest.mark.parametrize("status", ["abc", "", "OK 200", "2OO OK"])
def test_wsgi_unparseable_status_is_a_500_that_says_why(
    worker: tuple[Emulator, str], status: str
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response(status, [])
        return [b"x"]

    emu, url = worker
    fn = emu.add_function(healthy_wsgi(app), name="wsgi-bad-status")
    assert_problem(invoke(url, emu, fn.function_id), 500)
    assert repr(status.split(" ", 1)[0]) in last_error(emu)


@pytest.mark.parametrize("status", ["42 Tiny", "0 Zero", "-1 Negative", "1000 Huge"])
def test_wsgi_out_of_range_status_is_an_nvcf_error_not_a_broken_status_line(
    worker: tuple[Emulator, str], status: str
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response(status, [])
        return [b"x"]

    emu, url = worker
    fn = emu.add_function(healthy_wsgi(app), name="wsgi-range-status")
    try:
        r = invoke(url, emu, fn.function_id)
    except requests.ConnectionError as exc:
        pytest.fail(f"status {status!r} reached the client as a broken status line: {exc}")
    assert_problem(r, 500)
    still_serving(url)


@pytest.mark.parametrize("status", [0, 42, -5, 1000])
def test_callable_out_of_range_status_is_an_nvcf_error(
    worker: tuple[Emulator, str], status: int
) -> None:
    emu, url = worker
    fn = emu.add_function(lambda req: (b"x", status), name="callable-range-status")
    try:
        r = invoke(url, emu, fn.function_id)
    except requests.ConnectionError as exc:
        pytest.fail(f"status {status} reached the client as a broken status line: {exc}")
    assert_problem(r, 500)


def _non_latin1_wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [("X-Label", "caf\u00e9 \u2615")])
    return [b"x"]


@pytest.mark.parametrize("kind", ["wsgi", "callable"])
@pytest.mark.parametrize("stream", [False, True])
def test_non_latin1_container_header_never_drops_the_connection(
    worker: tuple[Emulator, str], kind: str, stream: bool
) -> None:
    emu, url = worker
    target: Any = (
        healthy_wsgi(_non_latin1_wsgi)
        if kind == "wsgi"
        else (lambda req: ("x", 200, {"X-Label": "caf\u00e9 \u2615"}))
    )
    fn = emu.add_function(target, name=f"{kind}-non-latin1")
    try:
        r = invoke(url, emu, fn.function_id, stream=stream)
        r.content  # noqa: B018 - read it all
    except requests.ConnectionError as exc:
        pytest.fail(f"the client's connection was dropped instead of an error answer: {exc}")
    # Either refused as an error answer, or carried as the UTF-8 bytes a real server sends.
    if r.status_code == 200:
        assert r.headers["X-Label"] == "caf\u00e9 \u2615".encode().decode("latin-1")
    else:
        assert r.status_code == 500, (r.status_code, r.headers)
    still_serving(url)


def test_newline_in_a_container_header_is_a_worker_error_not_an_emulator_crash(
    worker: tuple[Emulator, str],
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("X-Label", "a\r\nSet-Cookie: evil=1")])
        return [b"x"]

    emu, url = worker
    fn = emu.add_function(healthy_wsgi(app), name="wsgi-crlf")
    r = invoke(url, emu, fn.function_id)
    assert "evil" not in r.headers.get("Set-Cookie", "")
    doc = assert_problem(r, 500)
    # Not the emulator's own "failed to handle the request": the container's fault, said so.
    assert doc["detail"] != "The emulator failed to handle the request", doc
    assert "kaizen:problem-details:internal-server-error" not in doc["type"], doc
    assert r.headers.get("NVCF-STATUS") == "errored"


def test_huge_container_header_does_not_break_the_client(worker: tuple[Emulator, str]) -> None:
    """The emulator refuses request headers over 64 KiB (431); a container answering a 100 KB
    header line must not reach the client as an unparseable response."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("X-Big", "a" * 100_000)])
        return [b"x"]

    emu, url = worker
    fn = emu.add_function(healthy_wsgi(app), name="wsgi-big-header")
    try:
        r = invoke(url, emu, fn.function_id)
    except requests.ConnectionError as exc:
        pytest.fail(f"the client could not read the answer: {exc}")
    doc = assert_problem(r, 500)
    assert "headers total more than 65536 bytes (at X-Big)" in doc["detail"]
    still_serving(url)


def test_wsgi_app_that_never_calls_start_response(worker: tuple[Emulator, str]) -> None:
    emu, url = worker
    fn = emu.add_function(healthy_wsgi(lambda e, s: [b"x"]), name="wsgi-no-start")
    assert_problem(invoke(url, emu, fn.function_id), 500)
    assert "without calling start_response" in last_error(emu)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (object(), "cannot answer with object"),
        ((b"x",), "(body, status)"),
        ((b"x", 200, {}, "extra"), "(body, status)"),
        ((b"x", "abc"), "'abc'"),
        ({"when": object()}, "not JSON serializable"),
        ((b"x", 200, 5), "int"),
    ],
)
def test_callable_odd_answers_are_500_with_the_reason_recorded(
    worker: tuple[Emulator, str], answer: Any, fragment: str
) -> None:
    emu, url = worker
    fn = emu.add_function(lambda req: answer, name="odd")
    doc = assert_problem(invoke(url, emu, fn.function_id), 500)
    assert doc["detail"] == "Inference error"
    assert fragment in last_error(emu)
    still_serving(url)


@pytest.mark.parametrize("chunks", [[3], [b"data: 1\n\n", 4], [None]])
@pytest.mark.parametrize("stream", [False, True])
def test_callable_yielding_non_bytes_chunks_is_an_error_not_nul_bytes(
    worker: tuple[Emulator, str], chunks: list[Any], stream: bool
) -> None:
    """``bytes(3)`` is three NUL bytes: a generator yielding an int must not become a 200."""

    def gen(req: Any) -> Iterator[Any]:
        yield from chunks

    emu, url = worker
    fn = emu.add_function(gen, name="gen-ints")
    try:
        r = invoke(url, emu, fn.function_id, stream=stream)
        body = r.content
    except requests.RequestException:
        return  # a cut stream tells the client something went wrong
    assert b"\x00" not in body, (r.status_code, body)
    assert r.status_code == 500


def test_callable_generator_raising_mid_stream(worker: tuple[Emulator, str]) -> None:
    def gen(req: Any) -> Iterator[bytes]:
        yield b"data: 1\n\n"
        raise RuntimeError("boom midway")

    emu, url = worker
    fn = emu.add_function(gen, name="gen-raise")
    # A client reading it whole gets the worker's 500.
    assert_problem(invoke(url, emu, fn.function_id), 500)
    assert "boom midway" in last_error(emu)
    # A streaming client gets the first event, then a cut stream (never a clean end).
    r = invoke(url, emu, fn.function_id, stream=True)
    assert r.status_code == 200
    got = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in r.iter_content(None):
            got += chunk
    assert got == b"data: 1\n\n"
    still_serving(url)


# ASGI


async def _asgi_no_start(scope: Any, receive: Any, send: Any) -> None:
    return None


async def _asgi_two_starts(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"x"})


async def _asgi_raise_before(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("asgi boom before start")


async def _asgi_raise_after(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await asyncio.sleep(0.05)
    raise RuntimeError("asgi boom after start")


async def _asgi_raise_right_after_a_partial_body(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"partial":', "more_body": True})
    raise RuntimeError("asgi boom right after a partial body")


async def _asgi_forever(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    while True:
        await send({"type": "http.response.body", "body": b"data: tick\n\n", "more_body": True})
        await asyncio.sleep(0.02)


async def _asgi_hang(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(60)


async def _asgi_str_messages(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", "str")]})
    await send({"type": "http.response.body", "body": "str body"})


def test_asgi_app_that_returns_without_a_response_start_answers_promptly() -> None:
    """The WSGI adapter says at once "returned without calling start_response"; an ASGI app
    that returns without sending anything must not leave the client waiting for
    ``container_timeout`` (300 s by default)."""
    with served(container_timeout=30) as (emu, url):
        fn = emu.add_function(healthy_asgi(_asgi_no_start), name="asgi-no-start")
        t0 = time.monotonic()
        try:
            r = invoke(url, emu, fn.function_id, timeout=4)
        except requests.Timeout:
            pytest.fail(
                f"no answer after {time.monotonic() - t0:.1f} s: an ASGI app that sent no "
                "http.response.start is only noticed at container_timeout"
            )
        assert_problem(r, 500)


def test_asgi_app_sending_two_response_starts_is_an_error(worker: tuple[Emulator, str]) -> None:
    emu, url = worker
    fn = emu.add_function(healthy_asgi(_asgi_two_starts), name="asgi-two-starts")
    r = invoke(url, emu, fn.function_id)
    assert_problem(r, 500)


@pytest.mark.parametrize(
    ("app", "fragment"),
    [
        (_asgi_raise_before, "asgi boom before start"),
        (_asgi_str_messages, "str"),
    ],
)
def test_asgi_app_raising_before_start_is_a_500(
    worker: tuple[Emulator, str], app: Any, fragment: str
) -> None:
    emu, url = worker
    fn = emu.add_function(healthy_asgi(app), name="asgi-raise")
    assert assert_problem(invoke(url, emu, fn.function_id), 500)["detail"] == "Inference error"
    assert fragment in last_error(emu)
    still_serving(url)


def test_asgi_app_raising_after_start(worker: tuple[Emulator, str]) -> None:
    emu, url = worker
    fn = emu.add_function(healthy_asgi(_asgi_raise_after), name="asgi-raise-after")
    assert_problem(invoke(url, emu, fn.function_id), 500)
    assert "asgi boom after start" in last_error(emu)
    r = invoke(url, emu, fn.function_id, stream=True)
    got = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in r.iter_content(None):
            got += chunk
    assert got == b"data: 1\n\n"
    still_serving(url)


def test_asgi_app_raising_right_after_a_partial_body_is_never_a_200(
    worker: tuple[Emulator, str],
) -> None:
    """An app that raises mid-body did not answer: the client must get an error, every time,
    not (depending on a thread race) a 200 "fulfilled" with a truncated body."""
    emu, url = worker
    fn = emu.add_function(healthy_asgi(_asgi_raise_right_after_a_partial_body), name="asgi-cut")
    seen = []
    for _ in range(10):
        r = invoke(url, emu, fn.function_id)
        seen.append((r.status_code, r.headers.get("NVCF-STATUS"), r.content[:20]))
    assert all(status == 500 for status, _, _ in seen), seen


@pytest.mark.parametrize("app", [_asgi_forever, _asgi_hang])
def test_asgi_app_that_never_finishes_is_a_connection_error_after_the_timeout(
    worker: tuple[Emulator, str], app: Any
) -> None:
    emu, url = worker
    fn = emu.add_function(healthy_asgi(app), name="asgi-forever")
    t0 = time.monotonic()
    doc = assert_problem(invoke(url, emu, fn.function_id, timeout=6), 500)
    assert time.monotonic() - t0 < 5.5  # container_timeout (1 s), not the client timeout
    assert doc["detail"] == "Inference connection error while making inference request"
    assert "did not answer within" in last_error(emu)
    still_serving(url)


_forever_readers: list[threading.Thread] = []


def _wsgi_forever(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "application/json")])

    def body() -> Iterator[bytes]:
        _forever_readers.append(threading.current_thread())  # the worker reading it
        while True:
            time.sleep(0.02)
            yield b" "

    return body()


def test_a_body_that_never_ends_is_settled_as_timed_out_and_says_so(
    worker: tuple[Emulator, str],
) -> None:
    """The timeout settles the request while its body is still being read; the record keeps
    that reason ("did not answer within"), not the reader's later "no longer awaited"."""
    emu, url = worker
    fn = emu.add_function(healthy_wsgi(_wsgi_forever), name="wsgi-forever")
    _forever_readers.clear()
    doc = assert_problem(invoke(url, emu, fn.function_id), 500)
    assert doc["detail"] == "Inference connection error while making inference request"
    # The worker stuck in the body was replaced; it ends once it stops reading.
    [reader] = _forever_readers
    reader.join(5)
    assert not reader.is_alive()
    record = emu.invocations[-1]
    assert record.status.value == "errored"
    assert "did not answer within 1.0 s" in last_error(emu)
    still_serving(url)


def test_asgi_stream_forever_to_a_client_that_goes_away(worker: tuple[Emulator, str]) -> None:
    emu, url = worker
    fn = emu.add_function(healthy_asgi(_asgi_forever), name="asgi-forever-stream")
    for _ in range(2):
        r = invoke(url, emu, fn.function_id, stream=True)
        assert r.status_code == 200
        lines = r.iter_lines()
        assert [next(lines) for _ in range(5)].count(b"data: tick") >= 2
        r.close()
    still_serving(url)
    ok = emu.add_function(lambda req: {"ok": True}, name="after")
    assert invoke(url, emu, ok.function_id).json() == {"ok": True}


# URL containers


class RawContainer:
    """A loopback TCP server: health answers 200, every other request runs ``behaviour``."""

    def __init__(self, behaviour: Callable[[socket.socket], None]) -> None:
        self.behaviour = behaviour
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(3)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                piece = conn.recv(65536)
                if not piece:
                    return
                data += piece
            if data.startswith(b"GET /v2/health/ready"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                return
            # Read the whole request first: closing with unread bytes makes the kernel send a
            # reset, and the emulator would see "connection reset" instead of a cut-off answer.
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            missing = int(length.group(1)) - len(body) if length else 0
            while missing > 0:
                piece = conn.recv(min(missing, 65536))
                if not piece:
                    return
                missing -= len(piece)
            self.behaviour(conn)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def close_listener(self) -> None:
        self.stopped.set()
        self.thread.join(2)
        self.sock.close()

    def stop(self) -> None:
        self.close_listener()
        for t in self.threads:
            t.join(3)


@contextlib.contextmanager
def raw_container(behaviour: Callable[[socket.socket], None]) -> Iterator[RawContainer]:
    server = RawContainer(behaviour)
    try:
        yield server
    finally:
        server.stop()


def _until_the_emulator_hangs_up(conn: socket.socket) -> None:
    """Hold the connection until the emulator closes it (its container timeout), or 30 s: a
    timeout not enforced shows as the client's own, not hidden by the container giving up."""
    conn.settimeout(30)
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


def _hang(conn: socket.socket) -> None:
    _until_the_emulator_hangs_up(conn)


def _close_mid_body(conn: socket.socket) -> None:
    conn.sendall(
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"p'
    )


def _headers_then_hang(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
    _until_the_emulator_hangs_up(conn)


def _garbage(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


def _bad_gzip(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz")


def _bad_status(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 42 Weird\r\nContent-Length: 1\r\n\r\nx")


@pytest.mark.parametrize(
    ("behaviour", "fragment"),
    [
        (_hang, ""),
        (_close_mid_body, "IncompleteRead"),
        (_headers_then_hang, ""),  # the read timeout, or the watcher's "did not answer"
        (_garbage, "BadStatusLine"),
        (_bad_gzip, "decode"),
        (_bad_status, "BadStatusLine"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_url_container_misbehaving_is_an_inference_connection_error(
    worker: tuple[Emulator, str],
    behaviour: Callable[[socket.socket], None],
    fragment: str,
    stream: bool,
) -> None:
    emu, url = worker
    with raw_container(behaviour) as container:
        fn = emu.add_function(f"http://127.0.0.1:{container.port}/infer", name="raw")
        t0 = time.monotonic()
        r = invoke(url, emu, fn.function_id, stream=stream, timeout=6)
        doc = assert_problem(r, 500)
        assert time.monotonic() - t0 < 4
        assert doc["detail"] == "Inference connection error while making inference request"
        assert fragment in last_error(emu)
        assert r.headers.get("NVCF-STATUS") == "errored"
    still_serving(url)


def test_url_container_that_went_down_after_registration(worker: tuple[Emulator, str]) -> None:
    emu, url = worker
    container = RawContainer(_garbage)
    try:
        fn = emu.add_function(f"http://127.0.0.1:{container.port}/infer", name="gone")
    finally:
        container.stop()
    doc = assert_problem(invoke(url, emu, fn.function_id), 500)
    assert doc["detail"] == "Inference connection error while making inference request"
    assert "refused" in last_error(emu).lower()


def _cut_event_stream(conn: socket.socket) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n"
    )  # then the connection closes without the last chunk


def test_url_container_cutting_an_event_stream_is_not_a_clean_end(
    worker: tuple[Emulator, str],
) -> None:
    """A callable or ASGI stream that breaks reaches the client as a cut stream; a URL
    container whose connection breaks mid-stream must not look like a complete answer."""
    emu, url = worker
    with raw_container(_cut_event_stream) as container:
        fn = emu.add_function(f"http://127.0.0.1:{container.port}/infer", name="cut")
        r = invoke(url, emu, fn.function_id, stream=True)
        assert r.status_code == 200
        got = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in r.iter_content(None):
                got += chunk
        assert got == b"data: 1\n\n"
        assert "prematurely" in last_error(emu)


# -- (c) the CLI -----------------------------------------------------------------------------------


def _run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_EMULATOR_")}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [EXE, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=REPO,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"nvcf-emulate {args} env={env} started instead of refusing: {out!r}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "listening" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("nvcf-emulate: error:"), errors
    assert fragment in errors[0], errors


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--port", "abc"], "invalid int value"),
        (["--port", "70000"], "0-65535"),
        (["--port", "-1"], "0-65535"),
        (["--max-connections", "0"], "--max-connections"),
        (["--max-connections", "1.5"], "invalid int value"),
        (["--idle-timeout", "nan"], "--idle-timeout"),
        (["--idle-timeout", "-1"], "--idle-timeout"),
        (["--container-timeout", "nan"], "container_timeout"),
        (["--container-timeout", "-1"], "container_timeout"),
        (["--upload-url-ttl", "-5"], "upload_url_ttl"),
        (["--max-asset-bytes", "-1"], "max_asset_bytes"),
        (["--ram-staging-bytes", "-1"], "ram_staging_bytes"),
        (["--storage-quota-bytes", "-1"], "storage_quota_bytes"),
        (["--header-mismatch-status", "404"], "invalid choice"),
        (["--upload-etag", "sha1"], "invalid choice"),
        (["--log-level", "LOUD"], "invalid choice"),
        (["--public-url", "ftp://x"], "--public-url"),
        (["--public-url", "http://h/with/path"], "--public-url"),
        (["--api-key", "nokey"], "KEY=NCA_ID"),
        (["--api-key", "=nca"], "KEY=NCA_ID"),
        (["--function", "noequals"], "NAME=TARGET"),
        (["--function", "x=no_such_module_xyz:app"], "No module named"),
        (["--function", "x=os:no_such_attr"], "no_such_attr"),
        (["--function", "x=ftp://127.0.0.1:1/"], "--function"),
        (["--storage", "s3:/nobucket"], "storage"),
        (["--root-dir", "/etc/hostname"], "cannot start"),
        (["--state-dir", "/etc/hostname"], "cannot start"),
        (["--host", "nonexistent.invalid"], "cannot listen"),
        (["--bogus-flag"], "unrecognized arguments"),
    ],
)
def test_cli_bad_flags_exit_nonzero_with_one_error_line(args: list[str], fragment: str) -> None:
    _assert_one_line_error(_run_cli(*args), fragment)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("PORT", "abc", "NVCF_EMULATOR_PORT"),
        ("PORT", "99999", "0-65535"),
        ("IDLE_TIMEOUT", "soon", "NVCF_EMULATOR_IDLE_TIMEOUT"),
        ("CONTAINER_TIMEOUT", "nan", "container_timeout"),
        ("MAX_CONNECTIONS", "1e3", "NVCF_EMULATOR_MAX_CONNECTIONS"),
        ("HEADER_MISMATCH_STATUS", "404", "NVCF_EMULATOR_HEADER_MISMATCH_STATUS"),
        ("UPLOAD_ETAG", "sha1", "NVCF_EMULATOR_UPLOAD_ETAG"),
        ("LOG_LEVEL", "verbose", "NVCF_EMULATOR_LOG_LEVEL"),
        ("API_KEYS", "nokey", "KEY=NCA_ID"),
        ("FUNCTIONS", "noequals", "NAME=TARGET"),
        ("PUBLIC_URL", "not a url", "--public-url"),
    ],
)
def test_cli_bad_environment_values_exit_nonzero_with_one_error_line(
    name: str, value: str, fragment: str
) -> None:
    env = {f"NVCF_EMULATOR_{name}": value}
    result = subprocess.run(
        [EXE],
        capture_output=True,
        text=True,
        timeout=20,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("NVCF_EMULATOR_")},
            "NVCF_EMULATOR_PORT": "0",
            **env,
        },
        cwd=REPO,
    )
    _assert_one_line_error(result, fragment)


@pytest.mark.parametrize("value", ["inf", "1e300"])
def test_cli_infinite_idle_timeout_is_refused_or_works(value: str) -> None:
    """``--idle-timeout inf`` passes the start-up check; then it must either serve, or have
    been refused with a one-line error, not fail every connection."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_EMULATOR_")}
    proc = subprocess.Popen(
        [EXE, "--port", "0", "--idle-timeout", value],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening" not in line:
            out, err = proc.communicate(timeout=10)
            _assert_one_line_error(
                subprocess.CompletedProcess(proc.args, proc.returncode, line + out, err),
                "--idle-timeout",
            )
            return
        base = line.split()[-1]
        try:
            r = requests.get(f"{base}/_emulator/health", timeout=3)
        except requests.ConnectionError as exc:
            pytest.fail(f"started with --idle-timeout {value} but every connection fails: {exc}")
        assert r.status_code == 200
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


MARKER_ENV = "NVCF_REVIEW_EDGES_MARKER"


def slow_container(req: Any) -> Any:
    """Used by the CLI tests (``--function slow=tests.test_review_edges:slow_container``)."""
    marker = os.environ.get(MARKER_ENV)
    if marker:
        Path(marker).write_text(req.request_id)
    time.sleep(1.0)
    return {"slept": True, "body": req.json()}


@contextlib.contextmanager
def _cli_with_a_request_in_flight(
    tmp_path: Path, body: Any
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """``nvcf-emulate`` serving ``slow_container``, with one client's POST of ``body`` inside
    the container: (the process, what the client got: ``r`` or ``exc``). The process is
    killed and the client joined on the way out, whatever the test did."""
    marker = tmp_path / "entered"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVCF_EMULATOR_")}
    env[MARKER_ENV] = str(marker)
    proc = subprocess.Popen(
        [EXE, "--port", "0", "--function", "slow=tests.test_review_edges:slow_container"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    t: threading.Thread | None = None
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"functionId=(\S+)", first)
        assert match, (first, proc.stderr.read() if proc.poll() is not None else "")
        listening = proc.stdout.readline()
        assert "listening" in listening, listening
        base = listening.split()[-1]
        out: dict[str, Any] = {}

        def client() -> None:
            try:
                out["r"] = requests.post(
                    f"{base}/v2/nvcf/pexec/functions/{match.group(1)}",
                    json=body,
                    headers={"Authorization": "Bearer nvapi-review"},
                    timeout=10,
                )
            except Exception as exc:
                out["exc"] = exc

        t = threading.Thread(target=client)
        t.start()
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the container was never called"
        yield proc, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        if t is not None:
            t.join(10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_signal_with_a_request_in_flight_finishes_it_and_exits_cleanly(
    tmp_path: Path, sig: int
) -> None:
    with _cli_with_a_request_in_flight(tmp_path, {"n": 1}) as (proc, out):
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=15)
    assert "exc" not in out, out.get("exc")
    assert out["r"].status_code == 200, out["r"].text
    assert out["r"].json() == {"slept": True, "body": {"n": 1}}
    assert proc.returncode == 0, err
    assert "nvcf-emulate stopped" in rest
    assert "Traceback" not in err, err


def test_cli_second_signal_during_shutdown_does_not_traceback(tmp_path: Path) -> None:
    with _cli_with_a_request_in_flight(tmp_path, {}) as (proc, _):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    # The second signal ends the graceful stop at once, as a shell reports a kill by SIGINT.
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "second signal: exiting now" in err
    assert "Traceback" not in err, err
