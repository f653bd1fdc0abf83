"""Review of the function side of the control plane and the queue endpoints against NVIDIA's
open-source NVCF (repo NVIDIA/nvcf, control plane "nvcf-core"; paths below are under
src/control-plane-services/cloud-functions/nvcf-core/src/main/java/com/nvidia/nvcf/).

Each test says what a user sees and where NVCF does the same.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from .conftest import Api

BODY = {"name": "my-fn", "inferenceUrl": "/predict", "containerImage": "nvcr.io/me/img:1"}
SPEC = {"gpu": "L40S", "instanceType": "gl40s_1", "minInstances": 1, "maxInstances": 1}
KEYS = {"nvapi-a": "nca-a", "nvapi-b": "nca-b"}
AS_A = {"Authorization": "Bearer nvapi-a"}
AS_B = {"Authorization": "Bearer nvapi-b"}
HEALTH = {
    "protocol": "HTTP",
    "uri": "/v2/health/ready",
    "port": 8000,
    "timeout": "PT10S",
    "expectedStatusCode": 200,
}


def create(api: Api, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return requests.post(
        f"{api.base_url}/v2/nvcf/functions", headers=headers or api.headers, json=body, timeout=10
    )


def problem(r: requests.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    detail: str = r.json()["detail"]
    return detail


# -- what another account sees ------------------------------------------------------------------

HIDDEN = {
    "inferenceUrl",
    "inferencePort",
    "containerArgs",
    "containerEnvironment",
    "containerImage",
    "models",
    "resources",
    "helmChart",
    "helmChartServiceName",
    "activeInstances",
    "secrets",
    "rateLimit",
}


@pytest.mark.nvcf(api_keys=KEYS)
def test_a_function_shared_with_another_account_hides_how_it_runs(api: Api) -> None:
    """NVCF strips inferenceUrl/Port, the container's image, args and environment, models,
    resources, helm chart, active instances, secret names and rate limit from a function another
    account owns, and sets ownedByDifferentAccount (FunctionManagementFacade.java,
    hideDetailsForPublicAndSharedFunctions); the owner still sees them all."""
    fn = api.emulator.add_function(
        lambda req: {"ok": True},
        name="shared",
        nca_id="nca-a",
        shared_with=["nca-b"],
        containerImage="nvcr.io/a/secret-image:1",
        containerArgs="--token-file /x",
        containerEnvironment=[{"key": "K", "value": "V"}],
        secrets=[{"name": "api-key", "value": "s3cret"}],
        rateLimit={"rateLimit": "5-S"},
    )
    b = api.base_url
    version_url = f"{b}/v2/nvcf/functions/{fn.function_id}/versions/{fn.version_id}"
    seen_by_b = [
        requests.get(version_url, headers=AS_B, timeout=10).json()["function"],
        *requests.get(f"{b}/v2/nvcf/functions", headers=AS_B, timeout=10).json()["functions"],
        *requests.get(f"{b}/v2/nvcf/functions/{fn.function_id}/versions", headers=AS_B).json()[
            "functions"
        ],
    ]
    for dto in seen_by_b:
        assert HIDDEN.isdisjoint(dto), sorted(HIDDEN & set(dto))
        assert dto["ownedByDifferentAccount"] is True
        assert (dto["id"], dto["name"], dto["status"]) == (fn.function_id, "shared", "ACTIVE")
    own = requests.get(version_url, headers=AS_A, timeout=10).json()["function"]
    assert "ownedByDifferentAccount" not in own
    assert own["containerImage"] == "nvcr.io/a/secret-image:1"
    assert own["secrets"] == ["api-key"]
    assert own["activeInstances"][0]["functionVersionId"] == fn.version_id
    # b may still invoke it
    r = requests.post(f"{b}/v2/nvcf/pexec/functions/{fn.function_id}", headers=AS_B, json={})
    assert r.json() == {"ok": True}


# -- listing ------------------------------------------------------------------------------------


@pytest.mark.nvcf(api_keys=KEYS)
def test_function_ids_take_the_visibility_filter_in_any_case(api: Api) -> None:
    """GET /v2/nvcf/functions/ids has the same ``visibility`` query as the list
    (FunctionManagementController.java, getFunctionIds), and the values are read in any case
    (VisibilityEnum.fromText upper-cases them; VisibilityEnumConverter.java)."""
    mine = create(api, BODY, AS_A).json()["function"]["id"]
    shared = api.emulator.add_function(
        lambda req: {}, name="b-fn", nca_id="nca-b", shared_with=["nca-a"]
    ).function_id
    b = api.base_url

    def ids(query: str) -> list[str]:
        r = requests.get(f"{b}/v2/nvcf/functions/ids{query}", headers=AS_A, timeout=10)
        assert r.status_code == 200, r.text
        return sorted(r.json()["functionIds"])

    assert ids("") == sorted([mine, shared])
    assert ids("?visibility=private") == [mine]
    assert ids("?visibility=authorized") == [shared]
    assert ids("?visibility=PUBLIC") == []
    problem(requests.get(f"{b}/v2/nvcf/functions/ids?visibility=all", headers=AS_A), 400)
    listed = requests.get(f"{b}/v2/nvcf/functions?visibility=Private", headers=AS_A)
    assert listed.status_code == 200, listed.text
    assert [f["id"] for f in listed.json()["functions"]] == [mine]


# -- the create body ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        # CreateFunctionRequest.java, CreateFunctionRequestValidator
        ({"containerImage": None}, "'containerImage', 'models', or 'helmChart'"),
        ({"containerImage": None, "models": []}, "'containerImage', 'models', or 'helmChart'"),
        ({"helmChartServiceName": "svc"}, "'helmChart' and 'helmChartServiceName'"),
        (
            {"containerImage": None, "helmChart": "oci://c", "helmChartServiceName": "s"}
            | {"containerArgs": "--x"},
            "'containerArgs' and 'helmChart'",
        ),
        (
            {"containerImage": None, "helmChart": "oci://c", "helmChartServiceName": "s"}
            | {"containerEnvironment": []},
            "'containerEnvironment' and 'helmChart'",
        ),
        # HealthDto.java: every member @NotNull
        ({"health": {"expectedStatusCode": 200}}, "health.protocol"),
        ({"health": {k: v for k, v in HEALTH.items() if k != "timeout"}}, "health.timeout"),
        # MAX_DESCRIPTION_LENGTH (NvcfConstants.java)
        ({"description": "d" * 257}, "description"),
        # TAG_REGEX (NvcfConstants.java)
        ({"tags": ["has space"]}, "tags"),
        # SecretDto.java: SECRET_NAME_REGEX, 1-48 characters, a value that is not blank
        ({"secrets": [{"name": "-bad", "value": "v"}]}, "secret name"),
        ({"secrets": [{"name": "n" * 49, "value": "v"}]}, "secret name"),
        ({"secrets": [{"name": "ok"}]}, "secret value"),
        ({"secrets": [{"name": "ok", "value": "  "}]}, "secret value"),
        # FunctionModelDto / ArtifactDto / ContainerEnvironmentEntryDto: members @NotNull
        ({"models": [{"name": "m"}]}, "models"),
        ({"resources": [{"name": "r", "version": "1"}]}, "resources"),
        ({"containerEnvironment": [{"key": "K"}]}, "containerEnvironment"),
    ],
)
def test_create_bodies_nvcf_refuses_are_400(api: Api, change: dict[str, Any], words: str) -> None:
    """Each of these is a 400 problem JSON naming what is wrong, as NVCF answers it."""
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    assert words in problem(create(api, body), 400)
    assert api.emulator.functions.all() == []


def test_create_bodies_nvcf_accepts(api: Api) -> None:
    """Models alone, a helm chart with its service name, a JSON secret value and NVCF's tag
    characters are all fine (CreateFunctionRequest.java, SecretDto.java, TAG_REGEX)."""
    no_image = {k: v for k, v in BODY.items() if k != "containerImage"}
    for change in (
        {"models": [{"name": "m", "version": "1", "uri": "ngc://m"}]},
        {"helmChart": "oci://chart", "helmChartServiceName": "svc", "containerArgs": " "},
        {"containerImage": "i", "secrets": [{"name": "a.b_c-1", "value": {"k": "v"}}]},
        {"containerImage": "i", "tags": ["team:ml", "env=prod", "a-b_c"], "health": HEALTH},
    ):
        r = create(api, {**no_image, **change})
        assert r.status_code == 200, (change, r.text)


def test_the_description_defaults_to_the_name_and_grpc_gets_a_grpc_health_check(
    api: Api,
) -> None:
    """NVCF stores the name as the description when none is given, and a function whose
    inferenceUrl is /grpc gets protocol gRPC in its default health block
    (FunctionMapperService.java, toFunctionEntity)."""
    fn = create(api, BODY).json()["function"]
    assert fn["description"] == "my-fn"
    grpc = create(api, {**BODY, "inferenceUrl": "/grpc", "description": "mine"}).json()
    assert grpc["function"]["description"] == "mine"
    assert grpc["function"]["health"]["protocol"] == "gRPC"
    assert fn["health"]["protocol"] == "HTTP"


def test_a_new_version_needs_a_full_create_body(api: Api) -> None:
    """POST /v2/nvcf/functions/{id}/versions takes the same CreateFunctionRequest as create
    (FunctionManagementController.java): the name is required and something to run too; a
    version may have its own name."""
    fid = create(api, BODY).json()["function"]["id"]
    url = f"{api.base_url}/v2/nvcf/functions/{fid}/versions"
    no_name = {k: v for k, v in BODY.items() if k != "name"}
    assert "name" in problem(requests.post(url, headers=api.headers, json=no_name), 400)
    no_image = {k: v for k, v in BODY.items() if k != "containerImage"}
    assert "containerImage" in problem(requests.post(url, headers=api.headers, json=no_image), 400)
    r = requests.post(url, headers=api.headers, json={**BODY, "name": "my-fn-v2"})
    assert r.status_code == 200, r.text
    assert (r.json()["function"]["id"], r.json()["function"]["name"]) == (fid, "my-fn-v2")


def test_metadata_update_needs_tags_or_a_rate_limit_and_keeps_what_is_left_out(api: Api) -> None:
    """UpdateFunctionRequest.java: one of tags, rateLimit, ... is required (400 otherwise); a
    member left out keeps its value (FunctionManagementService.java, updateFunction)."""
    fn = create(api, {**BODY, "tags": ["old"]}).json()["function"]
    url = f"{api.base_url}/v2/nvcf/metadata/functions/{fn['id']}/versions/{fn['versionId']}"
    assert "at least one of 'tags'" in problem(requests.put(url, headers=api.headers, json={}), 400)
    r = requests.put(url, headers=api.headers, json={"rateLimit": {"rateLimit": "10-S"}})
    assert r.status_code == 200, r.text
    assert r.json()["function"]["tags"] == ["old"]
    assert r.json()["function"]["rateLimit"] == {"rateLimit": "10-S"}
    r = requests.put(url, headers=api.headers, json={"tags": ["new"]})
    assert (r.json()["function"]["tags"], r.json()["function"]["rateLimit"]) == (
        ["new"],
        {"rateLimit": "10-S"},
    )
    assert "tags" in problem(requests.put(url, headers=api.headers, json={"tags": ["a b"]}), 400)


# -- not found ----------------------------------------------------------------------------------


def test_unknown_function_and_version_say_so_in_nvcf_words(api: Api) -> None:
    """FunctionManagementService.java: MESG_FUNCTION_NOT_IN_ACCOUNT and
    MESG_FUNCTION_VERSION_NOT_IN_ACCOUNT."""
    fn = create(api, BODY).json()["function"]
    fid, ghost = fn["id"], "00000000-0000-4000-8000-000000000000"
    nca = api.emulator.config.default_nca_id
    b = f"{api.base_url}/v2/nvcf/functions"
    r = requests.get(f"{b}/{ghost}/versions", headers=api.headers)
    assert problem(r, 404) == f"Function id '{ghost}': Not found in account '{nca}'"
    r = requests.get(f"{b}/{fid}/versions/{ghost}", headers=api.headers)
    expected = f"Function id '{fid}', version '{ghost}': Not found in account '{nca}'"
    assert problem(r, 404) == expected


# -- deployments --------------------------------------------------------------------------------


@pytest.mark.parametrize("member", ["gpu", "instanceType"])
def test_a_blank_gpu_or_instance_type_is_400(api: Api, member: str) -> None:
    """GpuSpecificationDto.java: gpu and instanceType are @NotBlank; the version stays
    INACTIVE."""
    fn = create(api, BODY).json()["function"]
    url = f"{api.base_url}/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"
    r = requests.post(
        url, headers=api.headers, json={"deploymentSpecifications": [{**SPEC, member: " "}]}
    )
    assert member in problem(r, 400)
    assert api.emulator.function(fn["id"], fn["versionId"]).status.value == "INACTIVE"


def test_a_deployment_update_keeps_the_number_of_specifications(api: Api) -> None:
    """PUT on a deployment changes the instance counts of its specifications; one more or one
    fewer is a 400 (DeploymentValidationService.java, validateAndUpdateDeploymentSpecs:
    MESG_SPECS_MISMATCH) and the deployment is unchanged."""
    api.emulator.register_image("nvcr.io/me/img:1", lambda req: {})
    fn = create(api, BODY).json()["function"]
    url = f"{api.base_url}/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"
    up = requests.post(url, headers=api.headers, json={"deploymentSpecifications": [SPEC]})
    assert up.status_code == 200, up.text
    two = {"deploymentSpecifications": [SPEC, {**SPEC, "gpu": "H100"}]}
    assert "must match" in problem(requests.put(url, headers=api.headers, json=two), 400)
    got = requests.get(url, headers=api.headers).json()["deployment"]
    (spec,) = got["deploymentSpecifications"]
    assert spec.pop("gpuSpecificationId") and spec == SPEC  # as sent, with NVCF's spec id
    more = {"deploymentSpecifications": [{**SPEC, "maxInstances": 3}]}
    r = requests.put(url, headers=api.headers, json=more)
    assert r.status_code == 200, r.text
    assert r.json()["deployment"]["deploymentSpecifications"][0]["maxInstances"] == 3


# -- queues -------------------------------------------------------------------------------------


def test_queue_details_list_only_deployed_versions(api: Api) -> None:
    """NVCF reports queues of ACTIVE or DEPLOYING versions only, and a function with none is a
    404 'Queue not found' (QueueFacade.java, getQueuesDetails)."""
    api.emulator.register_image("nvcr.io/me/img:1", lambda req: {})
    fn = create(api, BODY).json()["function"]
    fid, inactive = fn["id"], fn["versionId"]
    q = f"{api.base_url}/v2/nvcf/queues/functions/{fid}"
    expected = f"Function id '{fid}': Queue not found - Function is likely not deployed"
    assert problem(requests.get(q, headers=api.headers), 404) == expected
    assert problem(requests.get(f"{q}/versions/{inactive}", headers=api.headers), 404) == expected
    deployed = requests.post(
        f"{api.base_url}/v2/nvcf/functions/{fid}/versions", headers=api.headers, json=BODY
    ).json()["function"]["versionId"]
    r = requests.post(
        f"{api.base_url}/v2/nvcf/deployments/functions/{fid}/versions/{deployed}",
        headers=api.headers,
        json={"deploymentSpecifications": [SPEC]},
    )
    assert r.status_code == 200, r.text
    got = requests.get(q, headers=api.headers).json()
    assert got == {
        "functionId": fid,
        "queues": [
            {
                "functionName": "my-fn",
                "functionStatus": "ACTIVE",
                "functionVersionId": deployed,
                "queueDepth": 0,
            }
        ],
    }
    assert problem(requests.get(f"{q}/versions/{inactive}", headers=api.headers), 404) == expected
