"""Two accounts x every operation: a cross-account attempt is refused exactly as if the thing
did not exist, and credentials never show up in logs or records."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

import pytest
import requests

from nvcf_emulator.worker import ContainerRequest

from .conftest import Api

ALICE, BOB = "nvapi-alice-secret-key", "nvapi-bob-secret-key"
KEYS = {ALICE: "nca-alice", BOB: "nca-bob"}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def hash_assets(req: ContainerRequest) -> dict[str, Any]:
    return {i: hashlib.sha256((req.asset_dir / i).read_bytes()).hexdigest() for i in req.asset_ids}


def _shape(r: requests.Response, *ids: str) -> tuple[int, str]:
    """Status and detail with ids blanked, so 'not yours' and 'no such thing' compare equal."""
    detail = r.json().get("detail", "") if r.content else ""
    for i in ids:
        detail = detail.replace(i, "<id>")
    return r.status_code, detail


@pytest.mark.nvcf(api_keys=KEYS, always_async=True)
def test_cross_account_matrix(api: Api) -> None:
    base = api.base_url
    emu = api.emulator
    alice_fn = emu.add_function(hash_assets, name="alice-fn", nca_id="nca-alice")
    bob_fn = emu.add_function(hash_assets, name="bob-fn", nca_id="nca-bob")
    asset = api.new_asset(b"alice's data", key=ALICE)
    aid = asset["assetId"]
    ghost = str(uuid.uuid4())

    # list: Bob sees nothing of Alice's.
    assert requests.get(f"{base}/v2/nvcf/assets", headers=auth(BOB)).json() == {"assets": []}
    # get / delete: the same answer as for an id that never existed.
    for method in ("GET", "DELETE"):
        theirs = requests.request(method, f"{base}/v2/nvcf/assets/{aid}", headers=auth(BOB))
        nothing = requests.request(method, f"{base}/v2/nvcf/assets/{ghost}", headers=auth(BOB))
        assert (
            _shape(theirs, aid)
            == _shape(nothing, ghost)
            == (
                404,
                "Asset '<id>' does not exist for account 'nca-bob'",
            )
        )
    # upload: Alice's URL re-pointed at a key of Bob's account is refused, nothing written.
    bob_asset = api.create_asset(key=BOB)
    forged = asset["uploadUrl"].replace(f"nca-alice/{aid}", f"nca-bob/{bob_asset['assetId']}")
    r = api.upload(bob_asset | {"uploadUrl": forged}, b"evil")
    assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text
    assert emu.asset_path(bob_asset["assetId"]) is None
    # invoke Bob's own function with Alice's asset: as if the asset did not exist.
    invoke = f"{base}/v2/nvcf/pexec/functions/{bob_fn.function_id}"
    theirs = requests.post(
        invoke, json={}, headers={**auth(BOB), "NVCF-INPUT-ASSET-REFERENCES": aid}
    )
    nothing = requests.post(
        invoke, json={}, headers={**auth(BOB), "NVCF-INPUT-ASSET-REFERENCES": ghost}
    )
    assert (
        _shape(theirs, aid)
        == _shape(nothing, ghost)
        == (404, "NotFound error: failed to find asset <id>")
    )
    # invoke Alice's (unshared) function: as if it did not exist.
    theirs = requests.post(
        f"{base}/v2/nvcf/pexec/functions/{alice_fn.function_id}", json={}, headers=auth(BOB)
    )
    nothing = requests.post(f"{base}/v2/nvcf/pexec/functions/{ghost}", json={}, headers=auth(BOB))
    assert _shape(theirs, alice_fn.function_id) == _shape(nothing, ghost)
    assert theirs.status_code == 404
    # read the status of Alice's request: as if it did not exist.
    r = requests.post(
        f"{base}/v2/nvcf/pexec/functions/{alice_fn.function_id}",
        json={},
        headers={**auth(ALICE), "NVCF-INPUT-ASSET-REFERENCES": aid},
    )
    assert r.status_code == 202
    req_id = r.headers["NVCF-REQID"]
    theirs = requests.get(f"{base}/v2/nvcf/pexec/status/{req_id}", headers=auth(BOB))
    nothing = requests.get(f"{base}/v2/nvcf/pexec/status/{ghost}", headers=auth(BOB))
    assert _shape(theirs, req_id) == _shape(nothing, ghost)
    assert theirs.status_code == 404
    # Alice's things are all still there and work.
    r = requests.get(
        f"{base}/v2/nvcf/pexec/status/{req_id}", headers={**auth(ALICE), "NVCF-POLL-SECONDS": "10"}
    )
    assert r.status_code == 200
    assert r.json() == {aid: hashlib.sha256(b"alice's data").hexdigest()}
    assert emu.asset_bytes(aid) == b"alice's data"


@pytest.mark.nvcf(api_keys=KEYS)
def test_keys_never_reach_logs_records_or_containers(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[dict[str, str]] = []

    def spy(req: ContainerRequest) -> dict[str, str]:
        seen.append(dict(req.headers))
        return {}

    fn = api.emulator.add_function(spy, name="spy", nca_id="nca-alice")
    asset = api.new_asset(b"x", key=ALICE)
    r = requests.post(
        f"{api.base_url}/v2/nvcf/pexec/functions/{fn.function_id}",
        json={},
        headers={**auth(ALICE), "NVCF-INPUT-ASSET-REFERENCES": asset["assetId"]},
    )
    assert r.status_code == 200
    requests.get(f"{api.base_url}/v2/nvcf/assets", headers=auth("nvapi-wrong-key-123456"))
    calls = requests.get(f"{api.base_url}/_emulator/requests").json()
    records = repr(api.emulator.invocations) + repr(list(api.emulator.calls))
    for secret in (ALICE, "nvapi-wrong-key-123456"):
        assert secret not in caplog.text
        assert secret not in str(calls)
        assert secret not in records
    assert "authorization" not in {k.lower() for k in seen[0]}
