"""In-process routing: unmodified client code, and moto / responses working beside it."""

from __future__ import annotations

import boto3
import pytest
import requests
import responses
from moto import mock_aws

from nvcf_emulator import Emulator


def _create(emu: Emulator) -> requests.Response:
    return requests.post(
        "https://api.nvcf.nvidia.com/v2/nvcf/assets",
        headers={"Authorization": "Bearer nvapi-anything"},
        json={"contentType": "text/plain", "description": "notes"},
    )


def test_hard_coded_production_url_reaches_the_fixture(nvcf: Emulator) -> None:
    r = _create(nvcf)
    assert r.status_code == 200
    asset = r.json()
    assert asset["uploadUrl"].startswith("https://nvcf-assets.s3.us-west-2.amazonaws.com/")
    put = requests.put(
        asset["uploadUrl"],
        data=b"hello",
        headers={"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "notes"},
    )
    assert put.status_code == 200
    assert nvcf.asset_bytes(asset["assetId"]) == b"hello"


def test_sessions_and_streamed_responses_work(nvcf: Emulator) -> None:
    with requests.Session() as session:
        session.headers.update(nvcf.headers)
        r = session.get(f"{nvcf.base_url}/v2/nvcf/assets", stream=True)
        assert r.status_code == 200
        assert b"".join(r.iter_content(3)) == b'{"assets":[]}'


def test_routing_stops_when_the_emulator_closes() -> None:
    emu = Emulator()
    with emu:
        assert _create(emu).status_code == 200
    assert requests.Session.get_adapter is requests.Session.__dict__["get_adapter"]
    with responses.RequestsMock() as rsps:
        rsps.post("https://api.nvcf.nvidia.com/v2/nvcf/assets", status=418)
        assert _create(emu).status_code == 418  # not the emulator any more


def test_nested_emulators_route_to_the_innermost() -> None:
    with Emulator() as outer:
        with Emulator() as inner:
            asset = _create(inner).json()
            assert inner.assets.find(asset["assetId"]) is not None
            assert outer.assets.find(asset["assetId"]) is None
        asset = _create(outer).json()
        assert outer.assets.find(asset["assetId"]) is not None


@pytest.mark.parametrize("responses_first", [True, False])
def test_user_responses_mocks_keep_working(responses_first: bool) -> None:
    rsps = responses.RequestsMock(assert_all_requests_are_fired=True)
    rsps.get("https://example.com/weather", json={"sunny": True})
    emu = Emulator()
    if responses_first:
        rsps.start()
        emu.__enter__()
    else:
        emu.__enter__()
        rsps.start()
    try:
        assert requests.get("https://example.com/weather").json() == {"sunny": True}
        assert _create(emu).status_code == 200
        assert len(rsps.calls) == 1  # the emulator's calls are not in the user's log
    finally:
        if responses_first:
            emu.close()
            rsps.stop()
        else:
            rsps.stop()
            emu.close()
    rsps.reset()


@pytest.mark.parametrize("moto_first", [True, False])
def test_moto_mock_aws_keeps_working(moto_first: bool) -> None:
    mock = mock_aws()
    emu = Emulator()
    if moto_first:
        mock.start()
        emu.__enter__()
    else:
        emu.__enter__()
        mock.start()
    try:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="user-bucket")
        s3.put_object(Bucket="user-bucket", Key="k", Body=b"moto bytes")
        asset = _create(emu).json()
        put = requests.put(
            asset["uploadUrl"],
            data=b"emulator bytes",
            headers={"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "notes"},
        )
        assert put.status_code == 200
        assert s3.get_object(Bucket="user-bucket", Key="k")["Body"].read() == b"moto bytes"
        assert emu.asset_bytes(asset["assetId"]) == b"emulator bytes"
        # A presigned URL of the user's own (moto) bucket still goes to moto.
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "user-bucket", "Key": "k"})
        assert requests.get(url).content == b"moto bytes"
    finally:
        if moto_first:
            emu.close()
            mock.stop()
        else:
            mock.stop()
            emu.close()


def test_the_fixture_and_responses_decorator_together(nvcf: Emulator) -> None:
    @responses.activate
    def inner() -> None:
        responses.get("https://example.com/x", body="mocked")
        assert requests.get("https://example.com/x").text == "mocked"
        assert _create(nvcf).status_code == 200

    inner()


def test_a_users_retry_policy_applies_in_process(nvcf: Emulator) -> None:
    """An HTTPAdapter(max_retries=Retry(...)) mounted by the user still retries (as over a
    socket): the emulator swaps the transport, not the policy."""
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    nvcf.faults.add("create", status=503, times=2)
    with requests.Session() as s:
        s.mount(
            "https://",
            HTTPAdapter(max_retries=Retry(total=3, status_forcelist=[503], allowed_methods=None)),
        )
        r = s.post(
            "https://api.nvcf.nvidia.com/v2/nvcf/assets",
            headers=nvcf.headers,
            json={"contentType": "text/plain", "description": "notes"},
        )
    assert r.status_code == 200
    assert [c.status for c in nvcf.calls] == [503, 503, 200]
    # Without a policy (requests' default), nothing is retried.
    nvcf.faults.add("create", status=503)
    assert _create(nvcf).status_code == 503


def test_retries_run_out_as_urllib3_says(nvcf: Emulator) -> None:
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    nvcf.faults.add("list", status=503, times=None)
    with requests.Session() as s:
        s.mount("https://", HTTPAdapter(max_retries=Retry(total=2, status_forcelist=[503])))
        with pytest.raises(requests.exceptions.RetryError):
            s.get("https://api.nvcf.nvidia.com/v2/nvcf/assets", headers=nvcf.headers)
    assert len([c for c in nvcf.calls if c.status == 503]) == 3
