"""Does my client survive NVCF having a bad day? Inject the failures, assert the recovery."""

from __future__ import annotations

import pytest
import requests

from nvcf_emulator import Emulator, EmulatorServer

from . import client


def test_retries_through_two_503s(nvcf: Emulator) -> None:
    nvcf.faults.add("create", status=503, times=2)
    asset = client.create_asset(client.session(), "image/png", "cat")
    assert asset["contentType"] == "image/png"
    statuses = [c.status for c in nvcf.calls if c.path == "/v2/nvcf/assets"]
    assert statuses == [503, 503, 200]


def test_retries_through_a_dropped_connection(nvcf: Emulator) -> None:
    nvcf.faults.add("create", drop=True)
    assert client.create_asset(client.session(), "image/png", "cat")["assetId"]


def test_a_timed_out_create_that_is_retried_makes_two_assets(nvcf: Emulator) -> None:
    """A slow answer is no failure: NVCF made the asset, the client gave up and asked again."""
    nvcf.faults.add("create", latency=0.2)  # the answer comes 0.2 s late, past the timeout
    assert client.create_asset(client.session(), "image/png", "cat", timeout=0.05)["assetId"]
    assert len(nvcf.stored_assets()) == 2  # dedupe on your side if that matters


def test_gives_up_when_the_outage_outlasts_the_retries(nvcf: Emulator) -> None:
    nvcf.faults.add("create", status=429, times=None)  # until cleared
    with pytest.raises(requests.HTTPError, match="429"):
        client.create_asset(client.session(), "image/png", "cat")
    assert nvcf.stored_assets() == []


def test_flaky_service_with_a_seeded_probability(nvcf: Emulator) -> None:
    nvcf.faults.add("create", status=500, times=None, probability=0.3, seed=1)
    s = client.session()
    created = [client.create_asset(s, "text/plain", f"n{i}") for i in range(10)]
    assert len(created) == 10  # every call got through, some after retries
    assert any(c.status == 500 for c in nvcf.calls)


def test_same_faults_over_http_for_a_shared_server(
    nvcf_server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server shared by several services: inject through its admin API."""
    monkeypatch.setattr(client, "NVCF_API", nvcf_server.url)
    r = requests.post(
        f"{nvcf_server.url}/_emulator/faults", json={"operation": "create", "status": 503}
    )
    assert r.status_code == 200
    assert client.create_asset(client.session(), "image/png", "cat")["assetId"]
