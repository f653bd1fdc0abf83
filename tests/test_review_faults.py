"""Adversarial review: fault injection as a user testing a retrying client meets it.

urllib3 ``Retry`` behind ``requests``, httpx with a read timeout, an SDK that polls
``pexec/status`` and downloads a large result: each fault kind on each surface, in-process and
over a socket (the ``api`` fixture), and what a fault leaves behind (nothing, unless the
operation ran and only its answer was late).
"""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Callable
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from nvcf_emulator import Faults
from nvcf_emulator.worker import ContainerRequest

from .conftest import Api

DESC = "x-amz-meta-nvcf-asset-description"


def _prefix(api: Api) -> str:
    return api.base_url.split("://")[0] + "://"


def _logged(api: Api, path: str, count: int) -> list[int]:
    """The logged statuses of ``path``, once there are ``count`` (waiting at most 5 s): over a
    socket, a call is logged after its client saw the answer (or the drop, or gave up)."""
    deadline = time.monotonic() + 5
    while True:
        statuses = [c.status for c in api.emulator.calls if c.path == path]
        if len(statuses) >= count or time.monotonic() > deadline:
            return statuses
        time.sleep(0.01)


class _Counting:
    """A container that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, req: ContainerRequest) -> Any:
        self.calls += 1
        return {"n": self.calls}


# -- latency: the answer comes late, past the client's read timeout -----------------------------


def _call(api: Api, operation: str, client: str, timeout: float) -> Callable[[], Any]:
    """One call of ``operation`` (each sends a body) with ``client`` and a read timeout."""
    if operation == "create":
        method, url, body = "POST", f"{api.base_url}/v2/nvcf/assets", None
        json: Any = {"contentType": "text/plain", "description": "d"}
        headers = api.headers
    elif operation == "upload":
        asset = api.create_asset("text/plain", "d")
        method, url, body, json = "PUT", asset["uploadUrl"], b"late bytes", None
        headers = {"Content-Type": "text/plain", DESC: "d"}
    else:
        fid, _ = api.emulator.add_function(_Counting(), name="late")
        method, url, body = "POST", f"{api.base_url}/v2/nvcf/pexec/functions/{fid}", None
        json, headers = {"x": 1}, api.headers
    if client == "requests":
        return lambda: requests.request(
            method, url, data=body, json=json, headers=headers, timeout=(5, timeout)
        )
    return lambda: httpx.request(
        method,
        url,
        content=body,
        json=json,
        headers=headers,
        timeout=httpx.Timeout(5, read=timeout),
    )


@pytest.mark.parametrize(
    ("operation", "client"),
    [
        ("create", "requests"),
        ("create", "httpx"),
        ("upload", "requests"),
        ("upload", "httpx"),
        ("invoke", "requests"),
    ],
)
def test_latency_past_the_read_timeout_is_a_read_timeout_for_calls_with_a_body(
    api: Api, operation: str, client: str
) -> None:
    """``add("invoke", latency=2.0)`` is how a user checks that the client's timeout fires.
    In-process, a latency on a call with a body (create, upload, invoke) used to delay the
    app's reading of the body, which restarted the read timeout: the late answer came back 200.
    The latency delays the answer; the operation ran (a client that gave up may find its
    asset created), as with a slow server."""
    call = _call(api, operation, client, timeout=0.05)
    before = len(api.emulator.calls)
    api.emulator.faults.add(operation, latency=0.25)  # type: ignore[arg-type]
    with pytest.raises((requests.ReadTimeout, httpx.ReadTimeout)):
        call()
    deadline = time.monotonic() + 5
    while len(api.emulator.calls) == before and time.monotonic() < deadline:
        time.sleep(0.01)  # over a socket, the late answer is still on its way
    assert api.emulator.calls[-1].status == 200  # it ran; only the answer was late
    if operation == "upload":
        assert len([a for a in api.emulator.stored_assets() if a.size]) == 1
    if operation == "invoke":
        assert len(api.emulator.invocations) == 1


# -- drops --------------------------------------------------------------------------------------


def test_a_dropped_call_is_logged_without_a_status(api: Api) -> None:
    """The call log (``nvcf.calls``, ``GET /_emulator/requests``) said 500 for a dropped
    connection, an answer nobody sent: a test asserting ``[c.status for c in nvcf.calls]``
    after a retry read a 500 the client never saw. A drop is status 0."""
    api.emulator.faults.add("list", drop=True)
    url = f"{api.base_url}/v2/nvcf/assets"
    with pytest.raises(requests.ConnectionError):
        requests.get(url, headers=api.headers, timeout=5)
    assert _logged(api, "/v2/nvcf/assets", 1) == [0]
    assert requests.get(url, headers=api.headers, timeout=5).status_code == 200
    assert _logged(api, "/v2/nvcf/assets", 2) == [0, 200]
    logged = requests.get(f"{api.base_url}/_emulator/requests", timeout=5).json()["requests"]
    assert [c["status"] for c in logged if c["path"] == "/v2/nvcf/assets"] == [0, 200]


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("POST", False)])
def test_urllib3_default_retry_retries_a_dropped_get_not_a_post(
    api: Api, method: str, retried: bool
) -> None:
    """``Retry(total=2)`` with its default ``allowed_methods``: a dropped GET is retried, a
    dropped POST is not (urllib3 cannot know it did not run), the same in both modes."""
    operation = "list" if method == "GET" else "create"
    api.emulator.faults.add(operation, drop=True)
    with requests.Session() as s:
        s.mount(_prefix(api), HTTPAdapter(max_retries=Retry(total=2)))
        url = f"{api.base_url}/v2/nvcf/assets"
        body = {"contentType": "text/plain", "description": "d"} if method == "POST" else None
        if retried:
            assert s.request(method, url, json=body, headers=api.headers, timeout=5).ok
        else:
            with pytest.raises(requests.ConnectionError):
                s.request(method, url, json=body, headers=api.headers, timeout=5)
    assert _logged(api, "/v2/nvcf/assets", 2 if retried else 1) == ([0, 200] if retried else [0])
    assert api.emulator.stored_assets() == []  # the dropped create created nothing


# -- nothing happens behind an injected status or drop ------------------------------------------


@pytest.mark.parametrize("kind", ["status", "drop"])
def test_a_failed_invoke_calls_no_container_and_leaves_no_invocation(api: Api, kind: str) -> None:
    container = _Counting()
    fid, _ = api.emulator.add_function(container, name="counted")
    fault: dict[str, Any] = {"status": 503} if kind == "status" else {"drop": True}
    api.emulator.faults.add("invoke", **fault)
    url = f"{api.base_url}/v2/nvcf/pexec/functions/{fid}"
    try:
        r = requests.post(url, json={}, headers=api.headers, timeout=5)
        assert r.status_code == 503 and r.json()["status"] == 503
        assert "NVCF-REQID" not in r.headers  # no request was made
    except requests.ConnectionError:
        assert kind == "drop"
    assert (container.calls, api.emulator.invocations) == (0, [])
    assert requests.post(url, json={}, headers=api.headers, timeout=5).json() == {"n": 1}


@pytest.mark.nvcf(always_async=True)
def test_faulted_status_polls_do_not_lose_the_result(api: Api) -> None:
    """An SDK polling ``pexec/status`` through 503s and a dropped poll (a ``Retry`` on GET)
    gets the result once; the record is purged after that delivery only."""
    fid, _ = api.emulator.add_function(_Counting(), name="polled")
    r = requests.post(
        f"{api.base_url}/v2/nvcf/pexec/functions/{fid}", json={}, headers=api.headers, timeout=5
    )
    assert r.status_code == 202
    status_url = f"{api.base_url}/v2/nvcf/pexec/status/{r.headers['NVCF-REQID']}"
    api.emulator.faults.add("status", status=503, times=2)
    api.emulator.faults.add("status", drop=True)
    policy = Retry(total=5, status_forcelist=[503], backoff_factor=0)
    with requests.Session() as s:
        s.mount(_prefix(api), HTTPAdapter(max_retries=policy))
        r = s.get(status_url, headers=api.headers, timeout=5)
        while r.status_code == 202:
            r = s.get(status_url, headers=api.headers, timeout=5)
    assert (r.status_code, r.json()) == (200, {"n": 1})
    polls = _logged(api, urlsplit(status_url).path, 4)
    assert polls[:3] == [503, 503, 0] and polls[-1] == 200
    again = requests.get(status_url, headers=api.headers, timeout=5)
    assert again.status_code == 404


# -- the large-result download ------------------------------------------------------------------


@pytest.mark.nvcf(max_response_bytes=16)
def test_the_large_result_download_can_fail_and_be_retried(api: Api) -> None:
    """The 302's zip comes from S3 in NVCF (a pre-signed URL): ``add("download", ...)`` makes
    it fail as S3 does (XML ``SlowDown``) or drop; the zip stays there for the retry."""
    fid, _ = api.emulator.add_function(lambda req: b"z" * 100, name="big")
    r = requests.post(
        f"{api.base_url}/v2/nvcf/pexec/functions/{fid}",
        json={},
        headers=api.headers,
        allow_redirects=False,
        timeout=5,
    )
    assert r.status_code == 302
    location = r.headers["Location"]
    api.emulator.faults.add("download", status=503)
    failed = requests.get(location, timeout=5)
    assert failed.status_code == 503
    assert failed.headers["Content-Type"] == "application/xml"
    assert "<Code>SlowDown</Code>" in failed.text
    api.emulator.faults.add("download", drop=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(location, timeout=5)
    got = requests.get(location, timeout=5)
    assert got.status_code == 200
    assert zipfile.ZipFile(BytesIO(got.content)).namelist()


# -- Retry-After ----------------------------------------------------------------------------------


def test_retry_after_is_sent_only_when_asked(api: Api) -> None:
    """NVCF's rate limiter sends no ``Retry-After`` (BucketRateLimiter: a bare 429), so neither
    does a plain status fault; ``retry_after=`` adds one, to test a client that honours it
    (urllib3's ``Retry`` does, for 413, 429 and 503)."""
    url = f"{api.base_url}/v2/nvcf/assets"
    api.emulator.faults.add("list", status=429)
    assert "Retry-After" not in requests.get(url, headers=api.headers, timeout=5).headers
    api.emulator.faults.add("list", status=429, retry_after=0)
    r = requests.get(url, headers=api.headers, timeout=5)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "0")
    asset = api.create_asset("text/plain", "d")
    r = requests.post(
        f"{api.base_url}/_emulator/faults",
        json={"operation": "upload", "status": 503, "retry_after": 2},
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["retry_after"] == 2
    r = requests.put(
        asset["uploadUrl"], data=b"x", headers={"Content-Type": "text/plain", DESC: "d"}
    )
    assert (r.status_code, r.headers["Retry-After"]) == (503, "2")
    assert "<Code>SlowDown</Code>" in r.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"operation": "list", "latency": 1, "retry_after": 1}, "retry_after needs a status"),
        ({"operation": "list", "drop": True, "retry_after": 1}, "retry_after needs a status"),
        ({"operation": "list", "status": 503, "retry_after": -1}, "retry_after"),
        ({"operation": "list", "status": 503, "retry_after": "1"}, "retry_after"),
        ({"operation": "list", "status": 503, "retry_after": True}, "retry_after"),
        ({"operation": "list", "status": 503, "retry_after": 1.5}, "retry_after"),
        ({"operation": "download", "status": 99}, "4xx or 5xx"),
    ],
)
def test_bad_retry_after_is_a_400_naming_it(api: Api, body: dict[str, Any], fragment: str) -> None:
    r = requests.post(f"{api.base_url}/_emulator/faults", json=body, timeout=5)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["detail"]
    assert len(api.emulator.faults) == 0
    with pytest.raises(ValueError, match=fragment.split()[0]):
        api.emulator.faults.add(**body)


# -- S3-shaped upload errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "InvalidRequest"), (403, "AccessDenied"), (500, "InternalError"), (503, "SlowDown")],
)
def test_injected_upload_errors_carry_s3_codes(api: Api, status: int, code: str) -> None:
    """A client re-asks for an upload URL on S3's 403 ``AccessDenied`` (an expired URL):
    an injected 403 on the storage host carries that code, not a made-up one."""
    asset = api.create_asset("text/plain", "d")
    api.emulator.faults.add("upload", status=status)
    r = requests.put(
        asset["uploadUrl"], data=b"x", headers={"Content-Type": "text/plain", DESC: "d"}
    )
    assert r.status_code == status
    assert f"<Code>{code}</Code>" in r.text
    assert api.emulator.asset_path(asset["assetId"]) is None


# -- matching: order, counts, seeded flakiness, threads --------------------------------------------


def test_rules_fire_in_the_order_added_and_go_when_spent() -> None:
    faults = Faults()
    first = faults.add("create", status=503, times=2)
    second = faults.add("create", status=500)
    fired = [faults.take("create") for _ in range(4)]
    assert [f.id if f else None for f in fired] == [first.id, first.id, second.id, None]
    assert (first.fired, second.fired, len(faults)) == (2, 1, 0)


def test_seeded_flakiness_ignores_other_operations_traffic() -> None:
    """The pattern of a seeded rule depends on its seed and on the calls of its operation only:
    other calls (and other seeded rules) in between do not shift it."""

    def pattern(noise: bool) -> list[bool]:
        faults = Faults()
        faults.add("create", status=500, times=None, probability=0.4, seed=11)
        faults.add("list", status=503, times=None, probability=0.5, seed=3)
        out = []
        for _ in range(40):
            if noise:
                faults.take("list")
                faults.take("status")
            out.append(faults.take("create") is not None)
        return out

    quiet = pattern(noise=False)
    assert quiet == pattern(noise=True)
    assert 0 < sum(quiet) < 40


def test_times_is_exact_under_concurrent_calls(api: Api) -> None:
    api.emulator.faults.add("list", status=503, times=7)
    url = f"{api.base_url}/v2/nvcf/assets"
    codes: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            code = requests.get(url, headers=api.headers, timeout=10).status_code
            with lock:
                codes.append(code)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(codes) == [200] * 23 + [503] * 7


@pytest.mark.parametrize(
    ("allowed", "retried"), [(None, True), (Retry.DEFAULT_ALLOWED_METHODS, False)]
)
def test_urllib3_retry_retries_a_read_timeout_as_over_a_socket(
    api: Api, allowed: Any, retried: bool
) -> None:
    """A late answer is a read error to urllib3: with ``allowed_methods=None`` a timed-out POST
    is sent again (in-process, ``Retry`` used to skip read timeouts: the first one raised), and
    both creates happened; with the default methods the POST's ``ReadTimeout`` comes back."""
    api.emulator.faults.add("create", latency=0.25)
    with requests.Session() as s:
        s.mount(_prefix(api), HTTPAdapter(max_retries=Retry(total=2, allowed_methods=allowed)))

        def create() -> requests.Response:
            return s.post(
                f"{api.base_url}/v2/nvcf/assets",
                json={"contentType": "text/plain", "description": "d"},
                headers=api.headers,
                timeout=(5, 0.05),
            )

        if retried:
            assert create().status_code == 200
        else:
            with pytest.raises(requests.ReadTimeout):
                create()
    assert _logged(api, "/v2/nvcf/assets", 2 if retried else 1) == [200] * (2 if retried else 1)
    assert len(api.emulator.stored_assets()) == (2 if retried else 1)  # a timeout is no failure
