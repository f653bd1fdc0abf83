"""Schema-driven fuzzing (schemathesis) of the whole documented API, in-process and over a socket.

Every response must be documented for its operation and match its schema; no 5xx, ever. The
number of examples per operation is small in ``make test`` and larger in ``make fuzz``
(``NVCF_FUZZ_EXAMPLES``). The schema is the one the emulator serves at
``/_emulator/openapi.json``.

The fuzzed emulator has an echo function, and in half of the cases (chosen by a hash of the
generated case, so runs repeat) the generated id is replaced by a real one: the echo function's
for invocations and queues, a fresh function's for function management (``INACTIVE`` to deploy
it, else deployed), a request answered with 202 for status polls and queue positions, a large
result's token for its download. So bodies and headers reach the checks that follow the lookup
instead of stopping at a 404.
"""

from __future__ import annotations

import os
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from nvcf_emulator.http.openapi import document
from nvcf_emulator.worker import ContainerRequest

from .conftest import Api

EXAMPLES = int(os.environ.get("NVCF_FUZZ_EXAMPLES", "15"))
AUTH = {"Authorization": "Bearer nvapi-fuzz"}

# Injected faults (latency up to 10 minutes, any 4xx/5xx) would turn later fuzz calls into the
# very failures the fuzzer looks for; the fault API has its own tests (test_faults.py).
schema = schemathesis.openapi.from_dict(document()).exclude(path="/_emulator/faults", method="POST")


def echo(request: ContainerRequest) -> dict[str, Any]:
    """The fuzzed function: says what it received (the body is any bytes, so not echoed)."""
    return {"bytes": len(request.body), "contentType": request.header("Content-Type")}


def with_file(request: ContainerRequest) -> dict[str, Any]:
    """Leaves a file in its output directory: the answer is a 302 to a result zip."""
    (request.output_dir / "out.txt").write_text("fuzz")
    return {"files": 1}


@dataclass
class Targets:
    """Real ids for the fuzzer to use instead of generated ones."""

    api: Api
    echo_ids: tuple[str, str]
    result: tuple[str, str] | None = None

    def _invoke(self, function_id: str) -> requests.Response:
        url = f"{self.api.base_url}/v2/nvcf/pexec/functions/{function_id}"
        return requests.post(url, headers=AUTH, json={}, allow_redirects=False)

    def pending_request(self) -> str:
        """The id of a request answered with 202 (its result comes with the next poll)."""
        emu = self.api.emulator
        emu.configure(always_async=True)
        try:
            r = self._invoke(self.echo_ids[0])
        finally:
            emu.configure(always_async=False)
        assert r.status_code == 202, r.text
        return r.headers["NVCF-REQID"]

    def result_zip(self) -> tuple[str, str]:
        """``token`` and ``name`` of a large result's download URL."""
        if self.result is None:
            fid, _ = self.api.emulator.add_function(with_file, name="fuzz-files")
            r = self._invoke(fid)
            assert r.status_code == 302, r.text
            token, name = r.headers["Location"].rsplit("/", 2)[-2:]
            self.result = (token, name)
        return self.result

    def inactive_function(self) -> tuple[str, str]:
        emu = self.api.emulator
        account = emu.accounts.authenticate(AUTH["Authorization"])
        version = emu.functions.create(account, {"name": "fuzz-inactive", "inferenceUrl": "/"})
        return version.function_id, version.version_id

    def deployed_function(self) -> tuple[str, str]:
        fid, vid = self.api.emulator.add_function(echo, name="fuzz-deployed")
        return fid, vid

    def deployment(self) -> tuple[str, str]:
        """``deploymentId`` and ``gpuSpecificationId`` of an ACTIVE version with one spec."""
        emu = self.api.emulator
        emu.register_image("fuzz/echo:1", echo)
        account = emu.accounts.authenticate(AUTH["Authorization"])
        body = {"name": "fuzz-spec", "inferenceUrl": "/", "containerImage": "fuzz/echo:1"}
        version = emu.functions.create(account, body)
        fid, vid = version.function_id, version.version_id
        r = requests.post(
            f"{self.api.base_url}/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
            headers=AUTH,
            json={"deploymentSpecifications": [SPEC]},
        )
        assert r.status_code == 200, r.text
        deployment = r.json()["deployment"]
        (spec,) = deployment["deploymentSpecifications"]
        return deployment["deploymentId"], spec["gpuSpecificationId"]


@pytest.fixture
def targets(api: Api) -> Targets:
    fid, vid = api.emulator.add_function(echo, name="fuzz-echo")
    return Targets(api, (fid, vid))


SPEC = {"gpu": "L40S", "instanceType": "gl40s_1", "minInstances": 1, "maxInstances": 2}


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _use_real_ids(case: schemathesis.Case, targets: Targets) -> None:
    params = case.path_parameters or {}
    seen = repr((params, case.headers, case.query, case.body)).encode("utf-8", "replace")
    if zlib.crc32(seen) % 2:
        return
    negative = case.meta is not None and not case.meta.generation.mode.is_positive
    names = ("functionId", "versionId", "requestId", "deploymentId", "gpuSpecId")
    ids = [params[k] for k in names if k in params]
    if negative and not all(_is_uuid(i) for i in ids):
        return  # the id is what makes this case invalid: keep it
    if "deploymentId" in params:
        deployment_id, spec_id = targets.deployment()
        params["deploymentId"] = deployment_id
        if "gpuSpecId" in params:
            params["gpuSpecId"] = spec_id
        return
    if "requestId" in params:
        params["requestId"] = targets.pending_request()
        return
    if "token" in params:
        params["token"], params["name"] = targets.result_zip()
        return
    if "functionId" not in params:
        return
    if case.path.startswith(("/v2/nvcf/pexec/", "/v2/nvcf/exec/", "/v2/nvcf/queues/")):
        fid, vid = targets.echo_ids
    elif case.path.startswith("/v2/nvcf/deployments/") and case.method == "POST":
        fid, vid = targets.inactive_function()  # deploying it succeeds once
    elif case.path.startswith("/v2/nvcf/secrets/"):
        fid, vid = targets.inactive_function()  # an ACTIVE one without secrets takes none
    else:
        fid, vid = targets.deployed_function()  # no specifications: a PUT may set any
    params["functionId"] = fid
    if "versionId" in params:
        params["versionId"] = vid


def _min_not_above_max(case: schemathesis.Case) -> None:
    """``minInstances <= maxInstances`` spans two members, which JSON Schema cannot state (the
    schema says it in prose): in a schema-valid case, order a generated pair that breaks it."""
    body = case.body
    specs = body.get("deploymentSpecifications") if isinstance(body, dict) else None
    for spec in specs if isinstance(specs, list) else []:
        if not isinstance(spec, dict):
            continue
        lo, hi = spec.get("minInstances"), spec.get("maxInstances")
        if _is_number(lo) and _is_number(hi) and lo > hi:
            spec["minInstances"], spec["maxInstances"] = hi, lo
    if case.method == "PATCH" and isinstance(body, dict):
        # A PATCH's minInstances must not exceed the maxInstances it keeps (SPEC's).
        lo, hi = body.get("minInstances"), body.get("maxInstances")
        top = hi if _is_number(hi) else SPEC["maxInstances"]
        if _is_number(lo) and lo > top:
            if _is_number(hi):
                body["minInstances"], body["maxInstances"] = hi, lo
            else:
                body["minInstances"] = top


def _one_value_per_secret(case: schemathesis.Case) -> None:
    """No secret name twice with different values spans items, which JSON Schema cannot state
    (the schema says it in prose): in a schema-valid case, keep each name's first value."""
    secrets = case.body.get("secrets") if isinstance(case.body, dict) else None
    if isinstance(secrets, list):
        first: dict[object, object] = {}
        for item in secrets:
            if isinstance(item, dict) and "name" in item and "value" in item:
                item["value"] = first.setdefault(item["name"], item["value"])


def _no_exemption_with_its_own_rate(case: schemathesis.Case) -> None:
    """An NCA id with a perNcaIdRate may not be in exemptedNcaIds, across two members, which
    JSON Schema cannot state (the schema says it in prose): in a schema-valid case, drop
    such ids from the exemptions."""
    policy = case.body.get("rateLimit") if isinstance(case.body, dict) else None
    if not isinstance(policy, dict):
        return
    per_nca, exempted = policy.get("perNcaIdRate"), policy.get("exemptedNcaIds")
    if isinstance(per_nca, dict) and isinstance(exempted, list):
        policy["exemptedNcaIds"] = [n for n in exempted if n not in per_nca]


def _one_entry_per_account(case: schemathesis.Case) -> None:
    """No NCA id twice among authorizedParties (JSON Schema's uniqueItems compares whole
    items, not one member): in a schema-valid case, keep each account's first entry."""
    parties = case.body.get("authorizedParties") if isinstance(case.body, dict) else None
    if isinstance(parties, list):
        seen: set[object] = set()
        kept = []
        for party in parties:
            nca_id = party.get("ncaId") if isinstance(party, dict) else None
            if nca_id not in seen:
                seen.add(nca_id)
                kept.append(party)
        case.body["authorizedParties"] = kept


#: Rules across members that JSON Schema cannot state (the schema says them in prose): each
#: rewrites a schema-valid (positive) case that breaks its rule into one that keeps it.
_CROSS_MEMBER_RULES = (
    _min_not_above_max,
    _one_value_per_secret,
    _no_exemption_with_its_own_rate,
    _one_entry_per_account,
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_fuzz(case: schemathesis.Case, api: Api, targets: Targets) -> None:
    _use_real_ids(case, targets)
    if case.meta is not None and case.meta.generation.mode.is_positive:
        for keep_schema_valid in _CROSS_MEMBER_RULES:
            keep_schema_valid(case)
    # A case without Authorization is one that tests its absence: send it as generated.
    auth = AUTH if "Authorization" in (case.headers or {}) else None
    case.call_and_validate(base_url=api.base_url, headers=auth)


def test_served_schema_is_the_fuzzed_one(api: Api) -> None:
    assert requests.get(f"{api.base_url}/_emulator/openapi.json").json() == document()


def test_served_schema_states_the_running_limits(api: Api) -> None:
    """The poll window and body size the document states are the emulator's configuration."""
    import re

    api.emulator.configure(max_poll_seconds=120, poll_seconds=30, max_request_bytes=1000)
    doc = requests.get(f"{api.base_url}/_emulator/openapi.json").json()
    invoke = doc["paths"]["/v2/nvcf/pexec/functions/{functionId}"]["post"]
    poll = next(p for p in invoke["parameters"] if p["name"] == "NVCF-POLL-SECONDS")
    pattern = re.compile(poll["schema"]["pattern"])
    assert pattern.match("120") and pattern.match(" +007 ") and not pattern.match("121")
    assert "0 to 120" in poll["description"] and "Default 30" in poll["description"]
    assert "max_request_bytes (1000)" in invoke["description"]
    status = doc["paths"]["/v2/nvcf/pexec/status/{requestId}"]["get"]
    assert status["parameters"] == [poll]
    # and the handler agrees with the document
    fn = api.emulator.add_function(lambda req: {}, name="f")
    url = f"{api.base_url}/v2/nvcf/pexec/functions/{fn.function_id}"
    over = requests.post(url, headers={**api.headers, "NVCF-POLL-SECONDS": "121"}, json={})
    assert over.status_code == 400
    at = requests.post(url, headers={**api.headers, "NVCF-POLL-SECONDS": "120"}, json={})
    assert at.status_code == 200


def test_every_route_is_documented() -> None:
    """Each route of the app is in the document (the /v2/orgs/... aliases of the function API
    and the catch-all CORS preflight aside: its three invocation paths are documented)."""
    import re

    from nvcf_emulator.http.app import ROUTES

    def camel(match: re.Match[str]) -> str:
        return "{" + re.sub(r"_([a-z])", lambda m: m.group(1).upper(), match.group(1)) + "}"

    paths = document()["paths"]
    missing = [
        f"{method} {path}"
        for rule, methods, _ in ROUTES
        if not rule.startswith("/v2/orgs/") and rule != "/v2/nvcf/pexec/<path:rest>"
        for path in [re.sub(r"<(?:path:)?([a-z_]+)>", camel, rule)]
        for method in methods
        if method.lower() not in paths.get(path, {})
    ]
    assert missing == []
