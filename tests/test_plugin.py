"""The pytest plugin as a user's suite meets it (run in a pytester sandbox)."""

from __future__ import annotations

import pytest

SUITE = """
import pytest, requests

def _create(base, headers):
    return requests.post(f"{base}/v2/nvcf/assets", headers=headers,
                         json={"contentType": "a/b", "description": "d"}).json()

def _put(asset, data):
    return requests.put(asset["uploadUrl"], data=data,
                        headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"})

def test_ini_setting_applies(nvcf):
    assert nvcf.config.max_asset_bytes == 8
    assert _put(_create(nvcf.base_url, nvcf.headers), b"123456789").status_code == 400

@pytest.mark.nvcf(max_asset_bytes=100)
def test_marker_beats_ini(nvcf):
    assert _put(_create(nvcf.base_url, nvcf.headers), b"123456789").status_code == 200

@pytest.mark.nvcf(max_asset_bytes=2)
def test_server_marker(nvcf_server):
    assert nvcf_server.config.max_asset_bytes == 2
    asset = _create(nvcf_server.url, nvcf_server.headers)
    assert _put(asset, b"abc").status_code == 400

def test_server_is_reset_between_tests_a(nvcf_server):
    assert nvcf_server.config.max_asset_bytes == 8
    assert _put(_create(nvcf_server.url, nvcf_server.headers), b"x").status_code == 200
    assert len(nvcf_server.stored_assets()) == 1

def test_server_is_reset_between_tests_b(nvcf_server):
    assert nvcf_server.stored_assets() == []
    r = requests.get(f"{nvcf_server.url}/v2/nvcf/assets", headers=nvcf_server.headers)
    assert r.json() == {"assets": []}

def test_fixture_is_fresh_per_test(nvcf):
    assert nvcf.stored_assets() == []
    assert nvcf.clock.offset == 0
    nvcf.clock.advance(10)
"""


def test_fixtures_marker_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnvcf_settings =\n    max_asset_bytes=8\n")
    pytester.makepyfile(test_user=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


def test_safe_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnvcf_settings =\n    max_asset_bytes=8\n")
    pytester.makepyfile(test_user=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=6)


def test_bad_ini_setting_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnvcf_settings =\n    max_asset_bites=8\n")
    pytester.makepyfile(test_user="def test_x(nvcf):\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*unknown emulator setting: max_asset_bites*"])


def test_unknown_marker_setting_fails_the_test_with_its_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="import pytest\n@pytest.mark.nvcf(colour=1)\ndef test_x(nvcf):\n    pass\n"
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown emulator setting(s): colour*"])
