"""Hostile use of what a user's suite leans on: the pytest plugin, time travel, persistence.

User suites run in pytester sandboxes (subprocesses, some under xdist); time-travel and
persistence scenarios run in this process. Each test says what a user sees.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import time_machine
from freezegun import freeze_time

from nvcf_emulator import ContainerRequest, Emulator, EmulatorServer
from nvcf_emulator.domain.clock import monotonic as real_monotonic

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "conftest_examples"
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
UPLOAD_HEADERS = {"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"}
TIMEOUT = 30.0

pytest_plugins = ["pytester"]


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=TIMEOUT)


def _create(base_url: str, headers: dict[str, str]) -> dict[str, Any]:
    r = requests.post(
        f"{base_url}/v2/nvcf/assets",
        headers=headers,
        json={"contentType": "a/b", "description": "d"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _put(asset: dict[str, Any], data: Any = b"x") -> requests.Response:
    return requests.put(asset["uploadUrl"], data=data, headers=UPLOAD_HEADERS)


def _status(emu: Emulator | EmulatorServer, base_url: str, asset: dict[str, Any]) -> int:
    r = requests.get(f"{base_url}/v2/nvcf/assets/{asset['assetId']}", headers=emu.headers)
    return r.status_code


# -- the ready-to-copy examples, copied as their README says ---------------------------------------

COPYABLE = [
    "asset_client",
    "flask_container",
    "fastapi_container",
    "triton_model",
    "invoke_client",
    "time_travel",
    "fault_injection",
]


def test_examples_copied_folder_by_folder_run_green(pytester: pytest.Pytester) -> None:
    """Each example folder, copied as a whole into a repo's tests/, runs green there."""
    for name in COPYABLE:
        shutil.copytree(
            EXAMPLES / name,
            pytester.path / "tests" / name,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    result = _run(pytester, "tests", "-rA")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == outcomes.get("errors", 0) == 0, result.stdout.str()
    for name in COPYABLE:
        result.stdout.fnmatch_lines([f"PASSED tests/{name}/test_*"])


def test_server_mode_example_copied_as_a_folder_runs_green(pytester: pytest.Pytester) -> None:
    """The server_mode folder, copied as a whole, runs (or skips without curl) instead of
    failing collection with 'attempted relative import beyond top-level package'."""
    shutil.copytree(
        EXAMPLES / "server_mode",
        pytester.path / "tests" / "server_mode",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    result = _run(pytester, "tests")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) == outcomes.get("failed", 0) == 0, result.stdout.str()
    if shutil.which("curl") is not None:
        assert outcomes.get("passed", 0) == 2, result.stdout.str()


# -- the plugin: markers, ini, fixtures side by side -----------------------------------------------

SIDE_BY_SIDE = """
import boto3, pytest, requests, responses as responses_lib
from moto import mock_aws

H = {"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"}

def _create(base, headers):
    return requests.post(f"{base}/v2/nvcf/assets", headers=headers,
                         json={"contentType": "a/b", "description": "d"}).json()

@pytest.fixture
def aws(monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client("s3")

@pytest.fixture
def rsps():
    with responses_lib.RequestsMock() as r:
        yield r

@pytest.mark.parametrize("order", [("nvcf", "aws", "rsps"), ("aws", "rsps", "nvcf")])
def test_responses_moto_and_nvcf(order, request):
    f = {name: request.getfixturevalue(name) for name in order}
    nvcf, s3, rsps = f["nvcf"], f["aws"], f["rsps"]
    assert nvcf.stored_assets() == []
    rsps.add(responses_lib.GET, "https://example.com/x", json={"hi": 1})
    s3.create_bucket(Bucket="user-bucket")
    s3.put_object(Bucket="user-bucket", Key="k", Body=b"v")
    asset = _create(nvcf.base_url, nvcf.headers)
    assert requests.put(asset["uploadUrl"], data=b"abc", headers=H).status_code == 200
    assert nvcf.asset_bytes(asset["assetId"]) == b"abc"
    assert requests.get("https://example.com/x").json() == {"hi": 1}
    assert s3.get_object(Bucket="user-bucket", Key="k")["Body"].read() == b"v"

@pytest.mark.nvcf(max_asset_bytes=100, upload_url_ttl=5)
class TestClassMarker:
    @pytest.mark.nvcf(max_asset_bytes=8)
    def test_closest_marker_wins_per_setting(self, nvcf, nvcf_server):
        for emu in (nvcf, nvcf_server):
            assert (emu.config.max_asset_bytes, emu.config.upload_url_ttl) == (8, 5)
        a = _create(nvcf.base_url, nvcf.headers)
        b = _create(nvcf_server.url, nvcf_server.headers)
        assert requests.put(a["uploadUrl"], data=b"x", headers=H).status_code == 200
        assert requests.put(b["uploadUrl"], data=b"y", headers=H).status_code == 200
        assert [x.asset_id for x in nvcf.stored_assets()] == [a["assetId"]]
        assert [x.asset_id for x in nvcf_server.stored_assets()] == [b["assetId"]]

@pytest.mark.xfail(raises=RuntimeError, strict=True)  # the user's body raises, as over a socket
@pytest.mark.parametrize("which", ["nvcf", "nvcf_server"])
def test_user_code_dies_mid_upload(which, request):
    emu = request.getfixturevalue(which)
    base = emu.url if which == "nvcf_server" else emu.base_url
    asset = _create(base, emu.headers)
    emu.clock.advance(60)
    emu.faults.add("list", status=503, times=None)
    emu.add_function(lambda req: {"ok": 1}, name="leaky")
    def body():
        yield b"part"
        raise RuntimeError("user code blew up mid-upload")
    requests.put(asset["uploadUrl"], data=body(), headers=H)

@pytest.mark.parametrize("n", range(4))
@pytest.mark.parametrize("which", ["nvcf", "nvcf_server"])
def test_next_test_starts_clean(which, n, request):
    emu = request.getfixturevalue(which)
    assert emu.stored_assets() == []
    assert emu.store.pending_uploads() == []
    assert emu.clock.offset == 0
    assert emu.functions.all() == []
    assert requests.get(f"{getattr(emu, 'url', emu.base_url)}/v2/nvcf/assets",
                        headers=emu.headers).status_code == 200  # the 503 fault is gone
    assert emu.config.max_asset_bytes == 5 * 1024**3
"""


def test_fixtures_beside_responses_moto_and_a_failed_upload_under_xdist(
    pytester: pytest.Pytester,
) -> None:
    """Under ``-n 2 --strict-markers``: responses + mock_aws + nvcf in either order, nvcf and
    nvcf_server in one test, class/function markers merged per setting, and a test that dies
    mid-upload (after moving the clock, adding a fault and a function) leaves the next test
    of the same worker a clean emulator."""
    pytester.makepyfile(test_user=SIDE_BY_SIDE)
    result = _run(pytester, "-p", "xdist", "-n", "2", "--strict-markers")
    result.assert_outcomes(passed=11, xfailed=2)


MARKER_ERRORS = """
import pytest

@pytest.mark.nvcf(8)
def test_positional(nvcf):
    pass

@pytest.mark.nvcf(max_asset_bytes="1024")
def test_string_for_int(nvcf):
    pass

@pytest.mark.nvcf(max_asset_bytes=8)
def test_server_too(nvcf_server):
    assert nvcf_server.config.max_asset_bytes == 8
"""


def test_marker_mistakes_name_what_is_wrong(pytester: pytest.Pytester) -> None:
    """A positional marker argument or a string for an int setting errors that test with the
    reason; a misspelled marker name stops a ``--strict-markers`` run naming it."""
    pytester.makepyfile(test_user=MARKER_ERRORS)
    result = _run(pytester)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.nvcf takes keyword settings only*",
            "*max_asset_bytes must be a non-negative integer, got '1024'*",
        ]
    )
    pytester.makepyfile(
        test_user="import pytest\n@pytest.mark.nvfc(max_asset_bytes=8)\n"
        "def test_x(nvcf):\n    pass\n"
    )
    result = _run(pytester, "--strict-markers")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*'nvfc' not found in `markers` configuration option*"])


def test_ini_boolean_typo_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """``always_async = Ture`` stops the run naming the setting, rather than meaning False."""
    pytester.makeini("[pytest]\nnvcf_settings =\n    always_async=Ture\n")
    pytester.makepyfile(test_user="def test_x(nvcf):\n    pass\n")
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*always_async*"])


@pytest.mark.parametrize(
    "line",
    ["upload_url_ttl=0", "container_timeout=nan"],
)
def test_ini_value_out_of_range_stops_the_run_once(pytester: pytest.Pytester, line: str) -> None:
    """A valid-looking but out-of-range ini value is one usage error at start-up, naming it."""
    name = line.split("=")[0]
    pytester.makeini(f"[pytest]\nnvcf_settings =\n    {line}\n")
    pytester.makepyfile(test_user="def test_a(nvcf):\n    pass\n\ndef test_b(nvcf):\n    pass\n")
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([f"*nvcf_settings*{name}*"])


STATE_DIR_SUITE = """
import requests

H = {"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"}

def _upload(nvcf):
    a = requests.post(f"{nvcf.base_url}/v2/nvcf/assets", headers=nvcf.headers,
                      json={"contentType": "a/b", "description": "d"}).json()
    assert requests.put(a["uploadUrl"], data=b"x", headers=H).status_code == 200

def test_a(nvcf):
    assert nvcf.stored_assets() == []
    _upload(nvcf)

def test_b(nvcf):
    assert nvcf.stored_assets() == []
    _upload(nvcf)
"""


def test_ini_state_dir_keeps_nvcf_fresh_per_test(pytester: pytest.Pytester) -> None:
    """``nvcf`` is documented as fresh per test; an ini ``state_dir`` must not carry one test's
    assets into the next (or it should be refused at start-up)."""
    state = pytester.path / "state"
    pytester.makeini(f"[pytest]\nnvcf_settings =\n    state_dir={state}\n")
    pytester.makepyfile(test_user=STATE_DIR_SUITE)
    result = _run(pytester)
    if result.ret == pytest.ExitCode.USAGE_ERROR:
        result.stderr.fnmatch_lines(["*state_dir*"])
    else:
        result.assert_outcomes(passed=2)


def test_marker_state_dir_on_nvcf_server_is_honoured_or_refused(
    pytester: pytest.Pytester,
) -> None:
    """``@pytest.mark.nvcf(state_dir=...)`` on an nvcf_server test either persists there or
    errors naming the setting; it is not silently ignored while ``.config`` claims it."""
    state = pytester.path / "state"
    pytester.makepyfile(
        test_user=f"""
import pathlib, pytest, requests
H = {{"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"}}

@pytest.mark.nvcf(state_dir={str(state)!r})
def test_x(nvcf_server):
    a = requests.post(f"{{nvcf_server.url}}/v2/nvcf/assets", headers=nvcf_server.headers,
                      json={{"contentType": "a/b", "description": "d"}}).json()
    assert requests.put(a["uploadUrl"], data=b"x", headers=H).status_code == 200
    assert (pathlib.Path({str(state)!r}) / "state.sqlite3").exists()
"""
    )
    result = _run(pytester)
    if result.parseoutcomes().get("errors"):
        result.stdout.fnmatch_lines(["*state_dir*"])
    else:
        result.assert_outcomes(passed=1)


# -- time travel ---------------------------------------------------------------------------------


def test_frozen_before_and_after_an_assets_creation(nvcf: Emulator) -> None:
    """Frozen a day before an upload: the asset is there, a URL signed then is expired after
    thawing; frozen before a URL's signing: 'not yet valid'; two days after: gone for good."""
    asset = _create(nvcf.base_url, nvcf.headers)
    assert _put(asset).status_code == 200
    with freeze_time(datetime.now(UTC) - timedelta(days=1)):
        assert _status(nvcf, nvcf.base_url, asset) == 200
        early = _create(nvcf.base_url, nvcf.headers)
    r = _put(early)  # signed a day ago: expired now
    assert r.status_code == 403 and "Request has expired" in r.text
    assert _status(nvcf, nvcf.base_url, asset) == 200
    later = _create(nvcf.base_url, nvcf.headers)
    with freeze_time(datetime.now(UTC) - timedelta(hours=2)):
        r = _put(later)  # signed two hours "from now"
        assert r.status_code == 403 and "Request is not yet valid" in r.text
    with freeze_time(datetime.now(UTC) + timedelta(days=2)):
        assert _status(nvcf, nvcf.base_url, asset) == 404
    assert _status(nvcf, nvcf.base_url, asset) == 404  # gone for good, bytes too
    assert nvcf.asset_path(asset["assetId"]) is None


def test_freezegun_tick_true(nvcf: Emulator) -> None:
    """freeze_time(..., tick=True) plus frozen.tick(3601) expires an upload URL."""
    with freeze_time(START, tick=True) as frozen:
        first, second = _create(nvcf.base_url, nvcf.headers), _create(nvcf.base_url, nvcf.headers)
        assert _put(first).status_code == 200
        frozen.tick(3601)
        r = _put(second)
        assert r.status_code == 403 and "<ServerTime>2026-03-01T13:00:0" in r.text


def test_clock_advance_under_a_frozen_time_and_backwards(nvcf: Emulator) -> None:
    """nvcf.clock.advance moves a frozen clock exactly, back and forth; the offset outlives
    the freeze."""
    with freeze_time(START):
        asset = _create(nvcf.base_url, nvcf.headers)
        assert nvcf.clock.advance(3601) == START.timestamp() + 3601
        assert _put(asset).status_code == 403
        nvcf.clock.advance(-3601)
        assert _put(asset).status_code == 200
        nvcf.clock.advance(-10 * 86400)  # before the upload: still there
        assert _status(nvcf, nvcf.base_url, asset) == 200
        nvcf.clock.advance(11 * 86400 + 1)
        assert _status(nvcf, nvcf.base_url, asset) == 404
    assert nvcf.clock.offset == pytest.approx(86400 + 1)


def test_time_machine_ticking_with_clock_advance(nvcf: Emulator) -> None:
    """time_machine.travel (ticking) + shift + nvcf.clock.advance add up on one clock."""
    with time_machine.travel(START) as traveller:
        asset = _create(nvcf.base_url, nvcf.headers)
        assert _put(asset).status_code == 200
        traveller.shift(23 * 3600)
        nvcf.clock.advance(59 * 60 - 5)
        assert _status(nvcf, nvcf.base_url, asset) == 200
        nvcf.clock.advance(70)
        assert _status(nvcf, nvcf.base_url, asset) == 404


def test_server_sweeper_under_freezegun_keeps_live_assets(
    nvcf_server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's 1 s sweep thread reads real time for its schedule (freezegun ignores
    'threading' frames) but must sweep on the frozen clock: a fresh asset survives it."""
    ticks: list[str] = []
    maybe_sweep = nvcf_server.emulator.maybe_sweep

    def counted() -> None:
        maybe_sweep()
        if threading.current_thread().name.startswith("nvcf-emulate-sweep"):
            ticks.append("swept")

    monkeypatch.setattr(nvcf_server.emulator, "maybe_sweep", counted)
    with freeze_time(START):
        asset = _create(nvcf_server.url, nvcf_server.headers)
        assert _put(asset).status_code == 200
        # Two ticks of the real-time sweep thread (not a TTL), counted: a fixed 2.2 s sleep
        # could end before them on a loaded machine, and the test then checked nothing.
        seen, deadline = len(ticks), real_monotonic() + 15
        while len(ticks) < seen + 2:
            assert real_monotonic() < deadline, "the sweep thread did not tick twice in 15 s"
            time.sleep(0.05)
        assert _status(nvcf_server, nvcf_server.url, asset) == 200
        assert nvcf_server.asset_path(asset["assetId"]) is not None


def test_invocation_times_follow_freezegun_in_worker_threads(nvcf: Emulator) -> None:
    """Under freeze_time, an invocation's startedAt is the frozen time, like createdAt and
    finishedAt (README: the clock follows freezegun in worker threads)."""

    def echo(request: ContainerRequest) -> dict[str, int]:
        return {"ok": 1}

    fid, _ = nvcf.add_function(echo, name="echo")
    with freeze_time(START):
        r = requests.post(
            f"{nvcf.base_url}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={}
        )
        assert r.status_code == 200
        (entry,) = requests.get(f"{nvcf.base_url}/_emulator/state").json()["invocations"]
    assert entry["finishedAt"].startswith("2026-03-01T12:00:00")
    assert entry["startedAt"].startswith("2026-03-01T12:00:00")


def test_clock_set_before_year_1000_still_signs_valid_urls(nvcf: Emulator) -> None:
    """Clock docs promise years 0001..9999; an upload URL made in year 999 is valid then."""
    nvcf.clock.set(datetime(999, 6, 1, tzinfo=UTC))
    asset = _create(nvcf.base_url, nvcf.headers)
    assert "X-Amz-Date=09990601T" in asset["uploadUrl"]
    assert _put(asset).status_code == 200
    assert requests.get(f"{nvcf.base_url}/_emulator/clock").json()["now"].startswith("0999-06-01")


# -- persistence -----------------------------------------------------------------------------------


@pytest.fixture
def held_state(tmp_path: Path) -> Iterator[tuple[Emulator, Path]]:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        yield emu, state


def test_second_emulator_on_a_live_state_dir(held_state: tuple[Emulator, Path]) -> None:
    """Opening a second emulator on a state dir in use is refused with a clear error, or at
    least does not break the first one's upload in flight."""
    first, state = held_state
    asset = _create(first.base_url, first.headers)
    opened: list[Emulator] = []
    refused: list[Exception] = []

    def body() -> Iterator[bytes]:
        yield b"first half "
        try:
            opened.append(Emulator(state_dir=state, bucket="other-bucket"))
        except Exception as exc:  # the fix: refused, naming the state dir
            refused.append(exc)
        yield b"second half"

    try:
        r = _put(asset, body())
    finally:
        for emu in opened:
            emu.close()
    if refused:
        assert str(state) in str(refused[0])
    assert r.status_code == 200, r.text
    assert first.asset_bytes(asset["assetId"]) == b"first half second half"
