"""Function rate limits (``rateLimit`` of a create or update body), enforced on invocation as
NVCF's rate limiter and invocation service enforce them: fixed windows on the emulator's clock,
a 429 problem, the late first refusal of ``syncCheck: false``, per-account counters,
exemptions, per-NCA and per-user rates; and RateLimitDto's rules for the body.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from nvcf_emulator import ContainerRequest, Emulator
from nvcf_emulator.domain.ratelimits import parse_rates
from tests.conftest import Api

KEYS = {"nvapi-a": "nca-a", "nvapi-a2": "nca-a", "nvapi-b": "nca-b", "nvapi-c": "nca-c"}


def echo(request: ContainerRequest) -> dict[str, Any]:
    return {"ok": True}


def invoke(base: str, fid: str, key: str | None = None, emu: Emulator | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else (emu.headers if emu else {})
    r = requests.post(f"{base}/v2/nvcf/pexec/functions/{fid}", headers=headers, json={})
    assert r.status_code in (200, 429), r.text
    if r.status_code == 429:
        problem = r.json()
        assert r.headers["Content-Type"] == "application/problem+json"
        assert (problem["status"], problem["title"]) == (429, "Too Many Requests")
        assert "exceeded" in problem["detail"]
        assert "Retry-After" not in r.headers  # NVCF sends none
    return r.status_code


def statuses(base: str, fid: str, n: int, key: str | None = None, **kw: Any) -> list[int]:
    return [invoke(base, fid, key, **kw) for _ in range(n)]


# -- windows and the two ways of checking ---------------------------------------------------------


def test_sync_check_refuses_the_first_call_over_and_the_next_window_opens(api: Api) -> None:
    """Minute windows: the calls of one window need not fit in a second of a loaded machine."""
    emu = api.emulator
    fid, _ = emu.add_function(echo, rateLimit={"rateLimit": "3-M", "syncCheck": True})
    assert statuses(api.base_url, fid, 5, emu=emu) == [200, 200, 200, 429, 429]
    emu.clock.advance(30)  # the same one-minute window
    assert invoke(api.base_url, fid, emu=emu) == 429
    emu.clock.advance(30)  # a new one
    assert statuses(api.base_url, fid, 4, emu=emu) == [200, 200, 200, 429]


def test_without_sync_check_the_call_over_the_limit_still_runs_and_the_next_is_refused(
    api: Api,
) -> None:
    """NVCF's default: the check runs beside the call, so the call that goes over runs; the
    caller is then checked first on each call, for 60 s from the last refusal."""
    emu = api.emulator
    fid, _ = emu.add_function(echo, rateLimit={"rateLimit": "2-M"})
    assert statuses(api.base_url, fid, 4, emu=emu) == [200, 200, 200, 429]
    emu.clock.advance(30)  # the same window: refused, and remembered for 60 s from now
    assert invoke(api.base_url, fid, emu=emu) == 429
    emu.clock.advance(30)  # a new window, still remembered: checked first, so the call over
    assert statuses(api.base_url, fid, 3, emu=emu) == [200, 200, 429]  # is refused at once
    emu.clock.advance(61)  # forgotten, and a new window: the call over runs again
    assert statuses(api.base_url, fid, 4, emu=emu) == [200, 200, 200, 429]


def test_every_rate_of_a_list_counts_every_call_even_refused_ones(api: Api) -> None:
    emu = api.emulator
    fid, _ = emu.add_function(echo, rateLimit={"rateLimit": "2-M,3-H", "syncCheck": True})
    assert statuses(api.base_url, fid, 3, emu=emu) == [200, 200, 429]  # over 2-M
    emu.clock.advance(60)
    assert invoke(api.base_url, fid, emu=emu) == 429  # 2-M allows; the refused call made 3-H's 4
    emu.clock.advance(3600)
    assert statuses(api.base_url, fid, 2, emu=emu) == [200, 200]


def test_an_update_of_the_rate_limit_applies_to_the_next_call(api: Api) -> None:
    emu = api.emulator
    fid, vid = emu.add_function(echo, rateLimit={"rateLimit": "1-H", "syncCheck": True})
    assert statuses(api.base_url, fid, 2, emu=emu) == [200, 429]
    r = requests.put(
        f"{api.base_url}/v2/nvcf/functions/{fid}/versions/{vid}",
        headers=emu.headers,
        json={"rateLimit": {"rateLimit": "3-H", "syncCheck": True}},
    )
    assert r.status_code == 200, r.text
    assert statuses(api.base_url, fid, 4, emu=emu) == [200, 200, 200, 429]


def test_a_function_without_a_rate_limit_is_never_refused(api: Api) -> None:
    fid, _ = api.emulator.add_function(echo)
    assert set(statuses(api.base_url, fid, 30, emu=api.emulator)) == {200}


def test_reset_forgets_the_counters(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(
        echo, rateLimit={"rateLimit": "1-D", "syncCheck": True}, persistent=True
    )
    assert statuses(nvcf.base_url, fid, 2, emu=nvcf) == [200, 429]
    nvcf.reset()
    assert statuses(nvcf.base_url, fid, 2, emu=nvcf) == [200, 429]


# -- who is counted -------------------------------------------------------------------------------


@pytest.mark.nvcf(api_keys=KEYS)
def test_each_account_has_its_own_counters_and_exempt_accounts_none(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(
        echo,
        nca_id="nca-a",
        shared_with=["nca-b", "nca-c"],
        rateLimit={"rateLimit": "2-M", "exemptedNcaIds": ["nca-c"], "syncCheck": True},
    )
    base = nvcf.base_url
    assert statuses(base, fid, 3, "nvapi-a") == [200, 200, 429]
    assert statuses(base, fid, 3, "nvapi-b") == [200, 200, 429]  # its own window
    assert set(statuses(base, fid, 10, "nvapi-c")) == {200}  # exempt


@pytest.mark.nvcf(api_keys=KEYS)
def test_a_per_nca_rate_replaces_the_global_one_for_that_account(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(
        echo,
        nca_id="nca-a",
        shared_with=["nca-b"],
        rateLimit={"rateLimit": "1-M", "perNcaIdRate": {"nca-b": "3-M"}, "syncCheck": True},
    )
    assert statuses(nvcf.base_url, fid, 4, "nvapi-b") == [200, 200, 200, 429]
    assert statuses(nvcf.base_url, fid, 2, "nvapi-a") == [200, 429]


@pytest.mark.nvcf(api_keys=KEYS)
def test_a_per_user_rate_counts_each_key_on_top_of_the_accounts_rate(nvcf: Emulator) -> None:
    """Two keys of one account: each has its own per-user budget (2-M), and both share the
    account's (3-M). The per-user rate is checked first, and a call it refuses is not counted
    on the account's rate."""
    fid, _ = nvcf.add_function(
        echo,
        nca_id="nca-a",
        rateLimit={"rateLimit": "3-M", "perUserRate": "2-M", "syncCheck": True},
    )
    base = nvcf.base_url
    assert statuses(base, fid, 3, "nvapi-a") == [200, 200, 429]  # over its user budget
    # The account's rate counted two of those: one call left for the other key.
    assert statuses(base, fid, 2, "nvapi-a2") == [200, 429]
    nvcf.clock.advance(60)
    assert statuses(base, fid, 2, "nvapi-a2") == [200, 200]
    assert statuses(base, fid, 1, "nvapi-a") == [200]
    assert statuses(base, fid, 1, "nvapi-a2") == [429]


# -- every way in ---------------------------------------------------------------------------------


def test_exec_and_a_pass_through_call_are_counted_too(api: Api) -> None:
    emu = api.emulator
    fid, _ = emu.add_function(echo, rateLimit={"rateLimit": "2-M", "syncCheck": True})
    assert invoke(api.base_url, fid, emu=emu) == 200
    envelope = requests.post(
        f"{api.base_url}/v2/nvcf/exec/functions/{fid}",
        headers=emu.headers,
        json={"requestBody": {}},
    )
    assert envelope.status_code == 200, envelope.text
    refused = requests.post(
        f"{api.base_url}/v2/nvcf/exec/functions/{fid}",
        headers=emu.headers,
        json={"requestBody": {}},
    )
    assert refused.status_code == 429, refused.text
    passthrough = requests.post(
        f"{api.base_url}/anything",
        headers={**emu.headers, "function-id": fid},
        json={},
    )
    assert passthrough.status_code == 429, passthrough.text


# -- the body's rules -----------------------------------------------------------------------------

RULES = "Either global rateLimit, perNcaIdRate, or perUserRate must be non-null"


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ({}, RULES),
        ({"syncCheck": True}, RULES),
        ({"exemptedNcaIds": ["x"], "perUserRate": "1-S"}, RULES),
        ({"rateLimit": "1-S", "perNcaIdRate": {"x": "1-S"}, "exemptedNcaIds": ["x"]}, RULES),
        ({"rateLimit": "5-S,10-S"}, "Invalid rate: Must conform to regex"),
        ({"rateLimit": "0-S"}, "Invalid rate: Must conform to regex"),
        ({"rateLimit": "5-W"}, "Invalid rate: Must conform to regex"),
        ({"rateLimit": "5-s"}, "Invalid rate: Must conform to regex"),
        ({"rateLimit": "5-S,"}, "Invalid rate: Must conform to regex"),
        ({"rateLimit": 5}, "Invalid rate: Must conform to regex"),
        ({"perUserRate": "S-5"}, "Invalid per-user rate"),
        ({"perNcaIdRate": {"x": "1-X"}}, "Invalid rate limit"),
        ({"rateLimit": "1-S", "exemptedNcaIds": [f"n{i}" for i in range(33)]}, "of 32 is exceeded"),
        ({"perNcaIdRate": {f"n{i}": "1-S" for i in range(33)}}, "of 32 is exceeded"),
        ({"rateLimit": "1-S", "syncCheck": "yes"}, "syncCheck must be a boolean"),
        ("10-S", "rateLimit must be an object"),
    ],
)
def test_a_bad_rate_limit_is_a_400_at_create_and_update(api: Api, policy: Any, says: str) -> None:
    body = {"name": "limited", "inferenceUrl": "/", "containerImage": "img", "rateLimit": policy}
    created = requests.post(f"{api.base_url}/v2/nvcf/functions", headers=api.headers, json=body)
    assert created.status_code == 400, created.text
    assert says in created.json()["detail"]
    fid, vid = api.emulator.add_function(echo, rateLimit={"rateLimit": "1-D"})
    url = f"{api.base_url}/v2/nvcf/functions/{fid}/versions/{vid}"
    updated = requests.put(url, headers=api.headers, json={"rateLimit": policy})
    assert updated.status_code == 400, updated.text
    assert says in updated.json()["detail"]
    kept = requests.get(url, headers=api.headers).json()["function"]["rateLimit"]
    assert kept == {"rateLimit": "1-D"}


@pytest.mark.parametrize(
    "policy",
    [
        {"rateLimit": "5-S, 300-H,1-D"},
        {"rateLimit": "5-S,\n3-S"},  # Java's "." stops at a newline: the unit is not seen twice
        {"perNcaIdRate": {"x": "1-M"}, "exemptedNcaIds": []},
        {"perUserRate": "10-H", "syncCheck": False},
        {"rateLimit": "1-S", "exemptedNcaIds": ["a", "b"], "unknown": 1},
    ],
)
def test_a_good_rate_limit_is_taken_and_shown_as_given(api: Api, policy: Any) -> None:
    body = {"name": "limited", "inferenceUrl": "/", "containerImage": "img", "rateLimit": policy}
    created = requests.post(f"{api.base_url}/v2/nvcf/functions", headers=api.headers, json=body)
    assert created.status_code == 200, created.text
    assert created.json()["function"]["rateLimit"] == policy


def test_rates_of_one_period_keep_the_stricter() -> None:
    """rate_limiter.go's parseRates (a policy saved before validation, or the newline case)."""
    assert [r.text for r in parse_rates("5-S,\n3-S, 10-M,5-S,x-H")] == ["3-S", "10-M"]
