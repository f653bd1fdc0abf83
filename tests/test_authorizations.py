"""Authorized parties: ``/v2/nvcf/authorizations/functions/{fid}[/versions/{vid}]``, the API a
function's owner shares it with other accounts through (NVIDIA/nvcf AuthorizedParties*), and
what sharing changes for those accounts: they can invoke and list what they were given.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import ContainerRequest, Emulator

KEYS = {"nvapi-a": "nca-a", "nvapi-b": "nca-b", "nvapi-c": "nca-c"}
A, B, C = ({"Authorization": f"Bearer nvapi-{k}"} for k in "abc")
pytestmark = pytest.mark.nvcf(api_keys=KEYS)


def echo(request: ContainerRequest) -> dict[str, Any]:
    return {"version": request.headers["NVCF-FUNCTION-VERSION-ID"]}


def url(emu: Emulator, fid: str, vid: str | None = None, tail: str = "") -> str:
    version = f"/versions/{vid}" if vid else ""
    return f"{emu.base_url}/v2/nvcf/authorizations/functions/{fid}{version}{tail}"


def parties(*nca_ids: str) -> dict[str, Any]:
    return {"authorizedParties": [{"ncaId": n} for n in nca_ids]}


def party(nca_id: str) -> dict[str, Any]:
    return {"authorizedParty": {"ncaId": nca_id}}


def invoke(emu: Emulator, who: dict[str, str], fid: str, vid: str | None = None) -> int:
    path = f"/v2/nvcf/pexec/functions/{fid}" + (f"/versions/{vid}" if vid else "")
    return requests.post(f"{emu.base_url}{path}", headers=who, json={}).status_code


def names(r: requests.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [p["ncaId"] for p in r.json()["function"]["authorizedParties"]]


def detail(r: requests.Response) -> str:
    return str(r.json()["detail"])


def test_sharing_a_function_lets_another_account_invoke_and_list_it(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(echo, name="shared", nca_id="nca-a")
    assert invoke(nvcf, B, fid) == 404
    r = requests.post(url(nvcf, fid), headers=A, json=parties("nca-b"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "function": {"id": fid, "ncaId": "nca-a", "authorizedParties": [{"ncaId": "nca-b"}]}
    }
    assert invoke(nvcf, B, fid) == 200
    assert invoke(nvcf, C, fid) == 404
    listed = requests.get(
        f"{nvcf.base_url}/v2/nvcf/functions?visibility=authorized", headers=B
    ).json()["functions"]
    assert [(f["id"], f["ownedByDifferentAccount"]) for f in listed] == [(fid, True)]
    assert requests.get(url(nvcf, fid), headers=A).json() == {
        "functions": [
            {
                "id": fid,
                "ncaId": "nca-a",
                "versionId": vid,
                "authorizedParties": [{"ncaId": "nca-b"}],
            }
        ]
    }
    # A later version of the function is shared as well (the accounts are the function's).
    second = requests.post(
        f"{nvcf.base_url}/v2/nvcf/functions/{fid}/versions",
        headers=A,
        json={"name": "shared", "inferenceUrl": "/", "containerImage": "img"},
    )
    assert second.status_code == 200, second.text
    vid2 = second.json()["function"]["versionId"]
    assert names(requests.get(url(nvcf, fid, vid2), headers=A)) == ["nca-b"]
    # A POST replaces the accounts.
    assert names(requests.post(url(nvcf, fid), headers=A, json=parties("nca-c"))) == ["nca-c"]
    assert (invoke(nvcf, B, fid), invoke(nvcf, C, fid)) == (404, 200)


def test_a_version_is_shared_on_its_own_and_both_levels_are_listed(nvcf: Emulator) -> None:
    first = nvcf.add_function(echo, name="two", nca_id="nca-a")
    second = nvcf.add_function(echo, name="two", nca_id="nca-a", function_id=first.function_id)
    fid = first.function_id
    assert names(requests.post(url(nvcf, fid, second.version_id), headers=A, json=parties("nca-c")))
    assert invoke(nvcf, C, fid, second.version_id) == 200
    assert invoke(nvcf, C, fid, first.version_id) == 404
    requests.post(url(nvcf, fid), headers=A, json=parties("nca-b")).raise_for_status()
    merged = requests.get(url(nvcf, fid, second.version_id), headers=A)
    assert names(merged) == ["nca-b", "nca-c"]  # the function's first
    assert merged.json()["function"]["versionId"] == second.version_id
    listed = requests.get(url(nvcf, fid), headers=A).json()["functions"]
    assert {v["versionId"]: [p["ncaId"] for p in v["authorizedParties"]] for v in listed} == {
        first.version_id: ["nca-b"],
        second.version_id: ["nca-b", "nca-c"],
    }


def test_add_remove_and_delete_change_one_level(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(echo, name="patched", nca_id="nca-a")
    none_yet = requests.patch(url(nvcf, fid, tail="/add"), headers=A, json=party("nca-b"))
    assert none_yet.status_code == 404
    assert detail(none_yet) == (
        f"Function id '{fid}': Does not have any authorized parties to be patched"
    )
    requests.post(url(nvcf, fid), headers=A, json=parties("nca-b")).raise_for_status()
    added = requests.patch(url(nvcf, fid, tail="/add"), headers=A, json=party("nca-c"))
    assert names(added) == ["nca-b", "nca-c"]
    again = requests.patch(url(nvcf, fid, tail="/add"), headers=A, json=party("nca-c"))
    assert again.status_code == 409
    assert detail(again) == (
        f"Function id '{fid}': Account 'nca-c' is already authorized to access the function"
    )
    removed = requests.patch(url(nvcf, fid, tail="/remove"), headers=A, json=party("nca-b"))
    assert names(removed) == ["nca-c"]
    assert (invoke(nvcf, B, fid), invoke(nvcf, C, fid)) == (404, 200)
    gone = requests.patch(url(nvcf, fid, tail="/remove"), headers=A, json=party("nca-b"))
    assert gone.status_code == 404
    assert detail(gone) == (
        f"Function id '{fid}': Specified account 'nca-b' is not an authorized party for the "
        "function"
    )
    cleared = requests.delete(url(nvcf, fid), headers=A)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json() == {"function": {"id": fid, "ncaId": "nca-a"}}
    assert invoke(nvcf, C, fid) == 404
    assert names(requests.get(url(nvcf, fid, vid), headers=A)) == []
    # The version level, the same way.
    requests.post(url(nvcf, fid, vid), headers=A, json=parties("nca-b")).raise_for_status()
    assert names(requests.patch(url(nvcf, fid, vid, "/add"), headers=A, json=party("nca-c")))
    again = requests.patch(url(nvcf, fid, vid, "/add"), headers=A, json=party("nca-c"))
    assert again.status_code == 409
    assert "already authorized to access the function version" in detail(again)
    cleared = requests.delete(url(nvcf, fid, vid), headers=A)
    assert cleared.json() == {"function": {"id": fid, "ncaId": "nca-a", "versionId": vid}}
    assert invoke(nvcf, B, fid) == 404


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "authorizedParties must be a list that is not empty"),
        ({"authorizedParties": []}, "authorizedParties must be a list that is not empty"),
        ({"authorizedParties": [{"ncaId": " "}]}, "ncaId must not be blank"),
        (parties("nca-b", "nca-b"), "Duplicate authorized accounts specified"),
        (parties("*", "nca-b"), "Multiple authz parties or clientId specified with wildcard"),
        (parties("*"), "Only NVIDIA Super Admin can make a function public"),
        (parties("nca-a"), "Authorized party mapped to account 'nca-a' is invalid"),
        (parties("nca-zz"), "Account with ncaId 'nca-zz' not found"),
        ({"authorizedParties": [{"ncaId": "nca-b", "clientId": "c1"}]}, "no OAuth clients"),
        ({"authorizedParties": [{"ncaId": "nca-b", "clientId": "  "}]}, "Issues with the request"),
    ],
)
def test_bad_bodies_are_400_and_change_nothing(nvcf: Emulator, body: Any, says: str) -> None:
    fid, _ = nvcf.add_function(echo, name="kept", nca_id="nca-a")
    requests.post(url(nvcf, fid), headers=A, json=parties("nca-c")).raise_for_status()
    r = requests.post(url(nvcf, fid), headers=A, json=body)
    assert r.status_code == 400, r.text
    assert says in detail(r)
    assert r.headers["Content-Type"] == "application/problem+json"
    assert (invoke(nvcf, B, fid), invoke(nvcf, C, fid)) == (404, 200)


def test_the_wildcard_cannot_be_added_or_removed(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(echo, name="wild", nca_id="nca-a")
    requests.post(url(nvcf, fid), headers=A, json=parties("nca-b")).raise_for_status()
    for op in ("add", "remove"):
        r = requests.patch(url(nvcf, fid, vid, f"/{op}"), headers=A, json=party("*"))
        assert r.status_code == 400
        assert detail(r) == (
            f"Function id '{fid}', version '{vid}': Invalid authz account '*' specified for "
            f"{op} operation"
        )
    missing = requests.patch(url(nvcf, fid, tail="/add"), headers=A, json={})
    assert missing.status_code == 400


def test_only_the_owner_may_share_and_a_public_function_cannot_be_changed(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(echo, name="mine", nca_id="nca-a", shared_with=["nca-b"])
    for method, tail, body in (
        ("post", "", parties("nca-c")),
        ("get", "", None),
        ("delete", "", None),
        ("patch", "/add", party("nca-c")),
    ):
        r = requests.request(method, url(nvcf, fid, tail=tail), headers=B, json=body)
        assert r.status_code == 404, (method, r.text)
        assert detail(r) == f"Function id '{fid}': Not found in account 'nca-b'"
    other = str(uuid.uuid4())
    r = requests.get(url(nvcf, fid, other), headers=A)
    assert r.status_code == 404
    assert detail(r) == f"Function id '{fid}', version '{other}': Not found in account 'nca-a'"
    assert requests.get(url(nvcf, "not-a-uuid"), headers=A).status_code == 400
    assert requests.get(url(nvcf, fid)).status_code == 401
    public, _ = nvcf.add_function(echo, name="for-all", nca_id="nca-a", public=True)
    r = requests.post(url(nvcf, public), headers=A, json=parties("nca-b"))
    assert r.status_code == 400
    assert detail(r) == (
        f"Function id '{public}': Cannot create authorized parties for public function"
    )
    assert names(requests.get(url(nvcf, fid, vid), headers=A)) == ["nca-b"]  # shared_with=


@pytest.mark.nvcf(api_keys={})
def test_an_emulator_that_takes_any_key_takes_any_account(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(echo, name="open")
    r = requests.post(url(nvcf, fid), headers=nvcf.headers, json=parties("someone-else"))
    assert names(r) == ["someone-else"]


def test_a_state_dir_keeps_the_authorizations(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state, api_keys=KEYS) as emu:
        account = emu.accounts.authenticate(A["Authorization"])
        version = emu.functions.create(account, {"name": "kept", "inferenceUrl": "/"})
        fid, vid = version.function_id, version.version_id
        requests.post(url(emu, fid), headers=A, json=parties("nca-b")).raise_for_status()
        requests.post(url(emu, fid, vid), headers=A, json=parties("nca-c")).raise_for_status()
    with Emulator(state_dir=state, api_keys=KEYS) as emu:
        assert names(requests.get(url(emu, fid, vid), headers=A)) == ["nca-b", "nca-c"]
        seen = requests.get(
            f"{emu.base_url}/v2/nvcf/functions?visibility=authorized", headers=C
        ).json()["functions"]
        assert [f["id"] for f in seen] == [fid]
