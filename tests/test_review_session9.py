"""Review of function secrets, rate limits and authorized parties against NVIDIA/nvcf's sources
(SecretManagementFacade / SecretDto, the ratelimiter's rate_limiter.go, RateLimitDto,
AuthorizedParties{Controller,Facade,Service,Request}): what a user would trip over.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import ContainerRequest, Emulator

KEYS = {"nvapi-a": "nca-a", "nvapi-a2": "nca-a", "nvapi-b": "nca-b", "nvapi-c": "nca-c"}
A, A2, B = ({"Authorization": f"Bearer {k}"} for k in ("nvapi-a", "nvapi-a2", "nvapi-b"))
pytestmark = pytest.mark.nvcf(api_keys=KEYS)


def echo(request: ContainerRequest) -> dict[str, Any]:
    return {"ok": True}


def pexec(emu: Emulator, who: dict[str, str], fid: str) -> int:
    r = requests.post(f"{emu.base_url}/v2/nvcf/pexec/functions/{fid}", headers=who, json={})
    assert r.status_code in (200, 429), r.text
    return r.status_code


def authorizations(emu: Emulator, fid: str) -> str:
    return f"{emu.base_url}/v2/nvcf/authorizations/functions/{fid}"


def put_secrets(emu: Emulator, fid: str, vid: str, value: Any) -> requests.Response:
    return requests.put(
        f"{emu.base_url}/v2/nvcf/secrets/functions/{fid}/versions/{vid}",
        headers=A,
        json={"secrets": [{"name": "TOKEN", "value": value}]},
    )


# -- rate limits ----------------------------------------------------------------------------------


def test_a_key_over_its_per_user_rate_does_not_use_up_the_accounts_rate(nvcf: Emulator) -> None:
    """Two keys of one account, a per-user rate of 1 a minute and an account rate of 2: the
    first key's refused calls stop at the user tier, so the second key still has the
    account's second call."""
    fid, _ = nvcf.add_function(
        echo,
        nca_id="nca-a",
        rateLimit={"rateLimit": "2-M", "perUserRate": "1-M", "syncCheck": True},
    )
    assert [pexec(nvcf, A, fid) for _ in range(4)] == [200, 429, 429, 429]
    assert [pexec(nvcf, A2, fid) for _ in range(2)] == [200, 429]  # user tier: 1-M


def test_an_account_exempted_twice_is_one_exemption(nvcf: Emulator) -> None:
    """RateLimitDto's ``exemptedNcaIds`` is a ``Set<String>``: Jackson folds repeats before
    ``@Size(max = 32)`` counts, so 40 copies of one account are one exemption."""
    policy = {"rateLimit": "1-M", "exemptedNcaIds": ["nca-b"] * 40, "syncCheck": True}
    r = requests.post(
        f"{nvcf.base_url}/v2/nvcf/functions",
        headers=A,
        json={"name": "limited", "inferenceUrl": "/", "containerImage": "x", "rateLimit": policy},
    )
    assert r.status_code == 200, r.text
    fid, _ = nvcf.add_function(echo, nca_id="nca-a", shared_with=["nca-b"], rateLimit=policy)
    assert [pexec(nvcf, B, fid) for _ in range(3)] == [200, 200, 200]  # exempt
    assert [pexec(nvcf, A, fid) for _ in range(2)] == [200, 429]


@pytest.mark.parametrize("sync", [True, False])
def test_a_clock_moved_back_before_a_window_opens_a_new_one(nvcf: Emulator, sync: bool) -> None:
    """Windows follow the emulator's clock, which a test may move back (``clock.set`` to a
    fixed date, freezegun): a window that starts after "now" is no window, and neither is
    the 60 s memory of a refusal, else the caller stays refused until the clock catches up
    with the old time (months, after ``clock.set("2026-01-01T00:00:00Z")``)."""
    fid, _ = nvcf.add_function(
        echo, nca_id="nca-a", rateLimit={"rateLimit": "1-M", "syncCheck": sync}
    )
    assert [pexec(nvcf, A, fid) for _ in range(3)] == ([200, 429, 429] if sync else [200, 200, 429])
    nvcf.clock.advance(-3600)
    first = [200, 429] if sync else [200, 200, 429]
    assert [pexec(nvcf, A, fid) for _ in range(len(first))] == first
    nvcf.clock.advance(60)  # and the next window opens on time from there
    assert pexec(nvcf, A, fid) == 200


def test_under_a_frozen_clock_calls_of_one_instant_share_a_window(nvcf: Emulator) -> None:
    """freezegun set to a date before the emulator started (the clock goes back), and frozen:
    every call is at one instant, in one window, until the test moves time on."""
    from freezegun import freeze_time

    fid, _ = nvcf.add_function(
        echo, nca_id="nca-a", rateLimit={"rateLimit": "2-M", "syncCheck": True}
    )
    assert pexec(nvcf, A, fid) == 200  # a window at the real time
    with freeze_time("2024-02-29T12:00:00Z") as frozen:
        assert [pexec(nvcf, A, fid) for _ in range(3)] == [200, 200, 429]
        frozen.tick(60)
        assert [pexec(nvcf, A, fid) for _ in range(3)] == [200, 200, 429]


# -- authorized parties ---------------------------------------------------------------------------


def test_an_empty_client_id_is_a_400_as_nvcf_finds_it_only_whitespace(nvcf: Emulator) -> None:
    """AuthorizedPartiesRequest: commons-lang3 ``isWhitespace("")`` is true, so a ``clientId``
    of ``""`` is MESG_INVALID_MAPPING; ``null`` (or none) is fine."""
    fid, _ = nvcf.add_function(echo, name="mine", nca_id="nca-a")
    body = {"authorizedParties": [{"ncaId": "nca-b", "clientId": ""}]}
    r = requests.post(authorizations(nvcf, fid), headers=A, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "Invalid request: Issues with the request payload"
    assert (
        requests.get(authorizations(nvcf, fid), headers=A).json()["functions"][0][
            "authorizedParties"
        ]
        == []
    )
    body = {"authorizedParties": [{"ncaId": "nca-b", "clientId": None}]}
    assert requests.post(authorizations(nvcf, fid), headers=A, json=body).status_code == 200


def test_changing_another_accounts_public_function_is_the_public_400(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(echo, name="for-all", nca_id="nca-b", public=True)
    r = requests.patch(
        authorizations(nvcf, fid) + "/add", headers=A, json={"authorizedParty": {"ncaId": "nca-c"}}
    )
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == (
        f"Function id '{fid}': Cannot add authorized parties for public function"
    )


# -- secrets --------------------------------------------------------------------------------------


def test_a_json_secret_with_non_ascii_text_is_measured_as_nvcf_writes_it(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(echo, nca_id="nca-a", secrets=[{"name": "TOKEN", "value": "v"}])
    value = {"greeting": "\u00e9" * 20000}  # 20016 characters as Jackson writes it
    r = put_secrets(nvcf, fid, vid, value)
    assert r.status_code == 204, r.text


def test_a_no_break_space_is_a_secret_value(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(echo, nca_id="nca-a", secrets=[{"name": "TOKEN", "value": "v"}])
    assert put_secrets(nvcf, fid, vid, "\u00a0").status_code == 204


def test_the_owner_of_a_public_function_sees_the_wildcard_among_its_parties(
    nvcf: Emulator,
) -> None:
    fid, vid = nvcf.add_function(echo, name="for-all", nca_id="nca-a", public=True)
    r = requests.get(f"{authorizations(nvcf, fid)}/versions/{vid}", headers=A)
    assert r.status_code == 200, r.text
    assert r.json()["function"]["authorizedParties"] == [{"ncaId": "*"}]


def test_a_restart_keeps_version_level_sharing_of_a_python_registered_function(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state, api_keys=KEYS) as emu:
        fid, vid = emu.add_function(echo, name="kept", nca_id="nca-a")
        body = {"authorizedParties": [{"ncaId": "nca-b"}]}
        for tail in ("", f"/versions/{vid}"):
            body["authorizedParties"][0]["ncaId"] = "nca-b" if tail else "nca-c"
            r = requests.post(authorizations(emu, fid) + tail, headers=A, json=body)
            assert r.status_code == 200, r.text
    with Emulator(state_dir=state, api_keys=KEYS) as emu:
        assert tuple(emu.add_function(echo, name="kept", nca_id="nca-a")) == (fid, vid)
        r = requests.get(f"{authorizations(emu, fid)}/versions/{vid}", headers=A)
        parties = [p["ncaId"] for p in r.json()["function"]["authorizedParties"]]
        assert parties == ["nca-c", "nca-b"]  # the function's, then the version's


def test_a_lone_surrogate_in_a_secret_value_is_no_500(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(echo, nca_id="nca-a", secrets=[{"name": "TOKEN", "value": "v"}])
    r = requests.put(
        f"{nvcf.base_url}/v2/nvcf/secrets/functions/{fid}/versions/{vid}",
        headers={**A, "Content-Type": "application/json"},
        data='{"secrets": [{"name": "TOKEN", "value": "\\ud800"}]}',
    )
    assert r.status_code == 204, r.text
    assert json.loads(nvcf.secrets_file(fid, vid).read_text()) == {"TOKEN": "\ud800"}


def test_a_nan_secret_is_a_400_and_never_reaches_the_containers_file(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(echo, nca_id="nca-a", secrets=[{"name": "TOKEN", "value": "v"}])
    r = requests.put(
        f"{nvcf.base_url}/v2/nvcf/secrets/functions/{fid}/versions/{vid}",
        headers={**A, "Content-Type": "application/json"},
        data='{"secrets": [{"name": "TOKEN", "value": NaN}]}',
    )
    assert r.status_code == 400, r.text
    text = nvcf.secrets_file(fid, vid).read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in secrets.json"))
