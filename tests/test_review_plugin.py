"""Review: the pytest plugin as a demanding user's suite leans on it (inner pytester sessions)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "conftest_examples"
TIMEOUT = 120.0

HELPERS = """
import requests

H = {"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"}


def create(base, headers):
    r = requests.post(f"{base}/v2/nvcf/assets", headers=headers,
                      json={"contentType": "a/b", "description": "d"})
    assert r.status_code == 200, r.text
    return r.json()


def upload(asset, data=b"x"):
    return requests.put(asset["uploadUrl"], data=data, headers=H)


def listed(base, headers):
    return requests.get(f"{base}/v2/nvcf/assets", headers=headers).json()["assets"]
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", *args, timeout=TIMEOUT)


def _suite(pytester: pytest.Pytester, **files: str) -> None:
    pytester.makepyfile(nvcf_helpers=HELPERS, **files)


# -- markers: class, module, ini, merging ---------------------------------------------------------

MERGE = """
import pytest

pytestmark = pytest.mark.nvcf(list_limit=7, upload_url_ttl=11)


def test_module_marker_and_ini(nvcf):
    assert nvcf.config.max_asset_bytes == 8      # ini
    assert nvcf.config.list_limit == 7           # module
    assert nvcf.config.upload_url_ttl == 11      # module


@pytest.mark.nvcf(list_limit=3)
class TestClass:
    def test_class_beats_module(self, nvcf):
        assert nvcf.config.list_limit == 3
        assert nvcf.config.upload_url_ttl == 11
        assert nvcf.config.max_asset_bytes == 8

    @pytest.mark.nvcf(list_limit=2, max_asset_bytes=99)
    def test_function_beats_class_and_ini(self, nvcf):
        assert nvcf.config.list_limit == 2
        assert nvcf.config.max_asset_bytes == 99
        assert nvcf.config.upload_url_ttl == 11

    def test_server_gets_the_same_merge(self, nvcf_server):
        assert nvcf_server.config.list_limit == 3
        assert nvcf_server.config.upload_url_ttl == 11
        assert nvcf_server.config.max_asset_bytes == 8


def test_server_after_class_is_back_to_module(nvcf_server):
    assert nvcf_server.config.list_limit == 7
    assert nvcf_server.config.max_asset_bytes == 8


@pytest.mark.parametrize("n", [1, 2, 3])
def test_parametrized_with_marks(n, nvcf):
    assert nvcf.config.list_limit == 7


@pytest.mark.parametrize("n", [pytest.param(5, marks=pytest.mark.nvcf(list_limit=5)), 6])
def test_param_level_marker(n, nvcf_server):
    assert nvcf_server.config.list_limit == (5 if n == 5 else 7)
"""


def test_marker_on_module_class_param_merges_with_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnvcf_settings =\n    max_asset_bytes=8\n")
    pytester.makepyfile(test_merge=MERGE)
    result = _run(pytester, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=10)


BAD_MARKERS = """
import pytest

@pytest.mark.nvcf(max_asset_bites=1)
def test_unknown_name_nvcf(nvcf):
    pass

@pytest.mark.nvcf(max_asset_bites=1)
def test_unknown_name_server(nvcf_server):
    pass

@pytest.mark.nvcf(list_limit="lots")
def test_wrong_type_server(nvcf_server):
    pass

@pytest.mark.nvcf(list_limit=-4)
def test_out_of_range(nvcf):
    pass

def test_after_the_bad_ones_nvcf(nvcf):
    assert nvcf.config.list_limit == 1000

def test_after_the_bad_ones_server(nvcf_server):
    assert nvcf_server.config.list_limit == 1000
    assert nvcf_server.config.max_asset_bytes == 5368709120
"""


def test_bad_marker_settings_error_only_their_test_and_name_the_setting(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_bad=BAD_MARKERS)
    result = _run(pytester, "-p", "no:cacheprovider", "-rE")
    result.assert_outcomes(passed=2, errors=4)
    out = result.stdout.str()
    assert out.count("max_asset_bites") >= 2, out
    result.stdout.fnmatch_lines(["*ERROR*test_wrong_type_server*list_limit*"])
    result.stdout.fnmatch_lines(["*ERROR*test_out_of_range*list_limit*"])


def test_fixed_setting_in_marker_on_server_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fixed="""
import pytest

@pytest.mark.nvcf(root_dir="/tmp/elsewhere-nvcf-review")
def test_root_on_server(nvcf_server):
    pass

def test_next(nvcf_server):
    assert str(nvcf_server.config.root_dir) != "/tmp/elsewhere-nvcf-review"
"""
    )
    result = _run(pytester, "-p", "no:cacheprovider", "-rE")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*root_dir cannot change on a running emulator*"])


# -- state must not leak between tests on the shared server ----------------------------------------

LEAKS = """
import datetime
import pytest, requests
from nvcf_helpers import create, upload, listed


def echo(req):
    return {"ok": True}


def test_1_dirty_everything(nvcf_server):
    base, h = nvcf_server.url, nvcf_server.headers
    a = create(base, h)
    assert upload(a).status_code == 200
    nvcf_server.add_function(echo, name="leaky")
    nvcf_server.faults.add("create", status=503, times=None)
    nvcf_server.clock.advance(5000)
    nvcf_server.configure(max_asset_bytes=1, always_async=True, list_limit=1)
    r = requests.post(f"{base}/_emulator/faults", json={"operation": "list", "status": 500})
    assert r.status_code == 200
    raise AssertionError("dies midway, dirty")


def test_2_starts_clean(nvcf_server):
    base, h = nvcf_server.url, nvcf_server.headers
    assert nvcf_server.stored_assets() == []
    assert listed(base, h) == []
    assert list(nvcf_server.faults) == []
    assert requests.get(f"{base}/_emulator/faults").json() == {"faults": []}
    assert abs(nvcf_server.clock.now() - __import__("time").time()) < 60
    assert nvcf_server.config.max_asset_bytes == 5368709120
    assert nvcf_server.config.always_async is False
    assert nvcf_server.config.list_limit == 1000
    r = requests.get(f"{base}/v2/nvcf/functions", headers=h)
    assert r.status_code == 200, r.text
    assert [f["name"] for f in r.json()["functions"]] == []
    assert nvcf_server.invocations == []
    a = create(base, h)
    assert upload(a, b"0123456789").status_code == 200


def test_3_exception_midway(nvcf_server):
    nvcf_server.clock.advance(-3600)
    nvcf_server.faults.add("create", drop=True, times=None)
    raise RuntimeError("boom")


def test_4_clean_again(nvcf_server):
    base, h = nvcf_server.url, nvcf_server.headers
    assert create(base, h)["assetId"]
    assert nvcf_server.calls and all(c.status == 200 for c in nvcf_server.calls)


def test_5_http_reset_and_clock_via_admin(nvcf_server):
    base = nvcf_server.url
    assert requests.post(f"{base}/_emulator/clock", json={"advance": 86400 * 3}).status_code == 200
    create(base, nvcf_server.headers)
    assert False


def test_6_after_admin_clock(nvcf_server):
    r = requests.get(f"{nvcf_server.url}/_emulator/clock").json()
    assert r["offsetSeconds"] == 0, r
    assert nvcf_server.stored_assets() == []
"""


def test_shared_server_state_never_leaks_even_after_failures(pytester: pytest.Pytester) -> None:
    _suite(pytester, test_leaks=LEAKS)
    result = _run(pytester, "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(
        ["*FAILED*test_1_dirty_everything*", "*FAILED*test_3_exception_midway*"]
    )
    assert "test_2_starts_clean" not in "".join(
        line for line in result.outlines if line.startswith("FAILED")
    ), result.stdout.str()


def test_fault_added_before_reset_does_not_hit_next_test_under_lf(
    pytester: pytest.Pytester,
) -> None:
    """--lf then a full run: the cache plugin and a shared server cooperate."""
    _suite(pytester, test_leaks=LEAKS)
    first = _run(pytester, "-q")
    first.assert_outcomes(passed=3, failed=3)
    again = _run(pytester, "-q", "--lf")
    again.assert_outcomes(failed=3)
    stop = _run(pytester, "-q", "-x")
    stop.assert_outcomes(failed=1)


STORAGE_MARKERS = """
import pytest
from nvcf_helpers import create, upload


@pytest.mark.nvcf(bucket="other-bucket")
def test_bucket_marker_nvcf(nvcf):
    a = create(nvcf.base_url, nvcf.headers)
    assert "other-bucket" in a["uploadUrl"]
    assert upload(a).status_code == 200


@pytest.mark.nvcf(bucket="other-bucket")
def test_bucket_marker_server(nvcf_server):
    pass


@pytest.mark.nvcf(storage_base_url="http://storage.example.test")
def test_storage_base_url_marker_server(nvcf_server):
    pass


@pytest.mark.nvcf(region="eu-central-1")
def test_region_marker_server(nvcf_server):
    pass
"""


def test_storage_url_markers_apply_to_the_shared_server(pytester: pytest.Pytester) -> None:
    """bucket / storage_base_url / region are signed into the upload URLs a running server
    already handed out: on nvcf_server a marker changing them is refused by name (they were
    silently ignored); on nvcf, a fresh emulator per test, they apply."""
    _suite(pytester, test_storage=STORAGE_MARKERS)
    result = _run(pytester, "-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1, errors=3)
    for name in ("bucket", "storage_base_url", "region"):
        result.stdout.fnmatch_lines([f"*{name} cannot change on a running emulator*"])


# -- both fixtures in one test; freezegun and time-machine -----------------------------------------

BOTH = """
import datetime, time
import pytest, requests, time_machine
from freezegun import freeze_time
from nvcf_helpers import create, upload, listed

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def test_both_fixtures_side_by_side(nvcf, nvcf_server):
    a = create(nvcf.base_url, nvcf.headers)
    b = create(nvcf_server.url, nvcf_server.headers)
    assert upload(a, b"in").status_code == 200
    assert upload(b, b"srv").status_code == 200
    assert nvcf.asset_bytes(a["assetId"]) == b"in"
    assert nvcf_server.asset_bytes(b["assetId"]) == b"srv"
    assert len(nvcf.stored_assets()) == 1
    assert len(nvcf_server.stored_assets()) == 1
    assert nvcf.root != nvcf_server.root


@pytest.mark.parametrize("tool", ["freezegun", "time_machine"])
def test_frozen_time_with_both(tool, nvcf, nvcf_server):
    cm = freeze_time(T0) if tool == "freezegun" else time_machine.travel(T0, tick=False)
    with cm:
        a = create(nvcf.base_url, nvcf.headers)
        b = create(nvcf_server.url, nvcf_server.headers)
        nvcf.clock.advance(3601)
        nvcf_server.clock.advance(3601)
        assert upload(a).status_code == 403
        assert upload(b).status_code == 403


def test_after_frozen_time_server_clock_is_real(nvcf_server):
    assert abs(nvcf_server.clock.now() - time.time()) < 60
    b = create(nvcf_server.url, nvcf_server.headers)
    assert upload(b).status_code == 200
"""


def test_both_fixtures_and_time_travel(pytester: pytest.Pytester) -> None:
    _suite(pytester, test_both=BOTH)
    result = _run(pytester, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


# -- scope mistakes, plugin disabled ---------------------------------------------------------------


def test_module_fixture_on_nvcf_is_a_clear_scope_mismatch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_scope="""
import pytest

@pytest.fixture(scope="module")
def uploaded(nvcf):
    return nvcf

@pytest.fixture(scope="module")
def served(nvcf_server):
    return nvcf_server

def test_a(uploaded):
    pass

def test_b(served):
    pass

def test_fine(nvcf, nvcf_server):
    pass
"""
    )
    result = _run(pytester, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*ScopeMismatch*", "*function scoped fixture nvcf*"])
    result.stdout.fnmatch_lines(["*function scoped fixture nvcf_server*"])


def test_plugin_disabled(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnvcf_settings =\n    max_asset_bytes=8\n")
    pytester.makepyfile(
        test_off="""
import pytest

@pytest.mark.nvcf(max_asset_bytes=1)
def test_uses(nvcf):
    pass

def test_plain():
    pass
"""
    )
    result = _run(pytester, "-p", "no:nvcf_emulator", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'nvcf' not found*"])
    on = _run(pytester, "-p", "no:cacheprovider", "--strict-markers", "-W", "error")
    on.assert_outcomes(passed=2)


# -- xdist: two workers, two servers, two dirs -----------------------------------------------------

XDIST = """
import json, os, pytest
from nvcf_helpers import create, upload


@pytest.mark.parametrize("n", range(8))
def test_record(n, nvcf, nvcf_server, tmp_path_factory):
    out = os.environ["REVIEW_OUT"]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    a = create(nvcf_server.url, nvcf_server.headers)
    assert upload(a, str(n).encode()).status_code == 200
    assert len(nvcf_server.stored_assets()) == 1
    b = create(nvcf.base_url, nvcf.headers)
    assert upload(b).status_code == 200
    with open(os.path.join(out, f"{worker}-{n}.json"), "w") as f:
        json.dump({"worker": worker, "port": nvcf_server.port, "server_root": str(nvcf_server.root),
                   "root": str(nvcf.root)}, f)
"""


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist")
def test_xdist_workers_do_not_share_ports_or_dirs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = pytester.path / "out"
    out.mkdir()
    monkeypatch.setenv("REVIEW_OUT", str(out))
    _suite(pytester, test_xd=XDIST)
    result = _run(pytester, "-p", "no:cacheprovider", "-n", "2", "--dist", "load")
    result.assert_outcomes(passed=8)
    rows = [json.loads(p.read_text()) for p in out.glob("*.json")]
    workers = {r["worker"] for r in rows}
    per_worker = {
        w: {(r["port"], r["server_root"]) for r in rows if r["worker"] == w} for w in workers
    }
    assert all(len(v) == 1 for v in per_worker.values()), per_worker
    if len(workers) == 2:
        (a,), (b,) = per_worker.values()
        assert a[0] != b[0] and a[1] != b[1]
    assert len({r["root"] for r in rows}) == 8


# -- requests sessions made at import time ---------------------------------------------------------

IMPORT_TIME = """
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

SESSION = requests.Session()
RETRYING = requests.Session()
RETRYING.mount("https://", HTTPAdapter(max_retries=Retry(total=3, backoff_factor=0,
                                                         status_forcelist=[503],
                                                         allowed_methods=None)))
H = {"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"}
API = "https://api.nvcf.nvidia.com"


def test_plain_import_time_session(nvcf):
    r = SESSION.post(f"{API}/v2/nvcf/assets", headers=nvcf.headers,
                     json={"contentType": "a/b", "description": "d"})
    assert r.status_code == 200, r.text
    assert SESSION.put(r.json()["uploadUrl"], data=b"hi", headers=H).status_code == 200
    assert nvcf.asset_bytes(r.json()["assetId"]) == b"hi"


def test_retrying_import_time_session(nvcf):
    nvcf.faults.add("create", status=503, times=2)
    r = RETRYING.post(f"{API}/v2/nvcf/assets", headers=nvcf.headers,
                      json={"contentType": "a/b", "description": "d"})
    assert r.status_code == 200, r.text
    assert [c.status for c in nvcf.calls] == [503, 503, 200]


def test_session_after_emulator_closed_is_not_routed():
    import pytest
    with pytest.raises(requests.exceptions.ConnectionError):
        SESSION.get(f"http://127.0.0.1:9/v2/nvcf/assets", timeout=2)
"""


def test_sessions_created_at_import_time_are_routed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_import_time=IMPORT_TIME)
    result = _run(pytester, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


# -- the examples as a user copies them ------------------------------------------------------------


def test_examples_copied_with_their_conftests_into_one_tests_dir(
    pytester: pytest.Pytester,
) -> None:
    """All examples, copied into a user's tests/ next to each other, plus an ini, run green
    (twice: once plain, once under xdist)."""
    for src in sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "__pycache__"):
        shutil.copytree(
            src, pytester.path / "tests" / src.name, ignore=shutil.ignore_patterns("__pycache__")
        )
    pytester.makeini("[pytest]\ntestpaths = tests\n")
    result = _run(pytester, "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) > 10
    if importlib.util.find_spec("xdist") is not None:
        result = _run(pytester, "-p", "no:cacheprovider", "-n", "2")
        outcomes = result.parseoutcomes()
        assert outcomes.get("failed", 0) == outcomes.get("errors", 0) == 0, result.stdout.str()
