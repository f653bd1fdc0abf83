"""Review: NVIDIA's own Go CLI, ``nvcf-cli`` (``src/clis/nvcf-cli`` of NVIDIA's open-source
NVCF), against the emulator. No Go toolchain here, so each test sends what the CLI's REST client
(``internal/client/client.go``) sends for one command -- method, path, query, its headers and the
JSON body as ``encoding/json`` marshals its request structs (fields in struct order, ``omitempty``
members left out) -- and checks that the answer would decode into the Go structs the CLI reads
(``json.Decoder`` fails on a JSON type that does not fit a field) and take the branch it takes
against NVCF (the status codes it tests for).

Function workflow only: create, list, ids, versions, get, update, deploy (create, get, update,
remove), delete, and REST ``invoke`` (pass-through: ``<functionId>.invocation.<host>`` or the
configured ``invoke_host`` as ``Host``).
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.worker import ContainerRequest

API = "https://api.nvcf.nvidia.com"
IMAGE = "nvcr.io/0651155215864979/ncp-dev/load_tester_supreme:0.0.8"

# -- what the CLI sends --------------------------------------------------------------------------


def go_headers(emu: Emulator, *, body: bool = False) -> dict[str, str]:
    """makeRequest + BearerTokenTransport: ``Accept: application/json``, the key as a bearer
    token, ``Content-Type`` only with a body; Go's own User-Agent and Accept-Encoding."""
    headers = {
        "Accept": "application/json",
        "Authorization": emu.headers["Authorization"],
        "User-Agent": "Go-http-client/1.1",
        "Accept-Encoding": "gzip",
    }
    if body:
        headers["Content-Type"] = "application/json"
    return headers


def go_json(value: Any) -> bytes:
    """``json.Marshal``: compact, UTF-8, and ``<``, ``>``, ``&`` escaped as ``\\u003c`` ..."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(ch, esc)
    return text.encode()


def cli(emu: Emulator, method: str, path: str, body: Any = None) -> requests.Response:
    """One ``Client.makeRequest`` against base_http_url = the emulator's API."""
    data = None if body is None else go_json(body)
    return requests.request(
        method, f"{API}{path}", headers=go_headers(emu, body=body is not None), data=data
    )


# -- what the CLI decodes into (Go field types; a member that is absent or null is fine) -------

STR, INT, BOOL = "string", "int", "bool"
HEALTH_DTO = {"protocol": STR, "uri": STR, "port": INT, "timeout": STR, "expectedStatusCode": INT}
#: client.FunctionDto (list, versions, get, and invoke's GetFunctionDetails).
FUNCTION_DTO: dict[str, Any] = {
    "id": STR,
    "ncaId": STR,
    "versionId": STR,
    "name": STR,
    "status": STR,
    "inferenceUrl": STR,
    "ownedByDifferentAccount": BOOL,
    "inferencePort": INT,
    "containerArgs": STR,
    "containerEnvironment": [{"key": STR, "value": STR}],
    "containerImage": STR,
    "apiBodyFormat": STR,
    "helmChart": STR,
    "helmChartServiceName": STR,
    "healthUri": STR,
    "createdAt": STR,
    "tags": [STR],
    "description": STR,
    "health": HEALTH_DTO,
    "functionType": STR,
    "secrets": [STR],
    "rateLimit": {"rateLimit": STR, "exemptedNcaIds": [STR], "syncCheck": BOOL},
    "models": [{"name": STR, "version": STR, "uri": STR}],
}
#: client.FunctionData (create's answer).
FUNCTION_DATA = {
    "id": STR,
    "versionId": STR,
    "name": STR,
    "status": STR,
    "inferenceUrl": STR,
    "inferencePort": INT,
    "containerImage": STR,
    "creationTime": STR,
}
#: client.FunctionDetails (GetFunction, which ``deploy create`` polls for ACTIVE).
FUNCTION_DETAILS = {
    **FUNCTION_DATA,
    "activeInstances": [{"instanceId": STR, "instanceType": STR, "gpu": STR, "status": STR}],
    "health": {"status": STR},
}
GPU_SPEC = {
    "gpuSpecificationId": STR,
    "gpu": STR,
    "instanceType": STR,
    "minInstances": INT,
    "maxInstances": INT,
    "backend": STR,
    "availabilityZones": [STR],
    "maxRequestConcurrency": INT,
    "configuration": {},
    "clusters": [STR],
    "regions": [STR],
    "attributes": [STR],
    "preferredOrder": INT,
}
#: client.FunctionDeploymentDto.
DEPLOYMENT = {
    "functionId": STR,
    "functionVersionId": STR,
    "deploymentId": STR,
    "functionName": STR,
    "ncaId": STR,
    "functionStatus": STR,
    "requestQueueUrl": STR,
    "healthInfo": [{"status": STR, "message": STR, "reason": STR}],
    "deploymentSpecifications": [GPU_SPEC],
    "createdAt": STR,
    "lastUpdatedAt": STR,
    "status": STR,
    "creationTime": STR,
}


def go_decodes(value: Any, shape: Any, where: str = "$") -> None:
    """Assert that ``encoding/json`` would decode ``value`` into a Go value of ``shape``
    (a dict is a struct: unknown members are ignored, ``{}`` a map; a one-item list a slice)."""
    if value is None:
        return  # null leaves a Go field as it is
    if shape == STR:
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
    elif shape == INT:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r}"
    elif shape == BOOL:
        assert isinstance(value, bool), f"{where}: {value!r} is not a bool"
    elif isinstance(shape, list):
        assert isinstance(value, list), f"{where}: {value!r} is not an array"
        for i, item in enumerate(value):
            go_decodes(item, shape[0], f"{where}[{i}]")
    else:
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        for key, sub in shape.items():
            if key in value:
                go_decodes(value[key], sub, f"{where}.{key}")


# -- the request bodies the CLI builds -----------------------------------------------------------

HEALTH = {
    "protocol": "HTTP",
    "uri": "/health",
    "port": 8000,
    "timeout": "PT30S",
    "expectedStatusCode": 200,
}
#: client.CreateFunctionRequest as the CLI marshals it for examples/*.json (via CreateConfig:
#: a member CreateConfig has no field for, such as ``authorizedParties``, is not sent).
CREATE_BODIES: dict[str, dict[str, Any]] = {
    "create-function.json": {
        "name": "example-function",
        "inferenceUrl": "/echo",
        "containerImage": IMAGE,
        "inferencePort": 8000,
        "health": HEALTH,
        "functionType": "DEFAULT",
        "apiBodyFormat": "CUSTOM",
        "containerArgs": "--model-path=/models --batch-size=32",
        "containerEnvironment": [
            {"key": "MODEL_PATH", "value": "/models"},
            {"key": "BATCH_SIZE", "value": "32"},
            {"key": "LOG_LEVEL", "value": "INFO"},
        ],
        "tags": ["example", "demo", "json-config"],
        "description": "Example function created from JSON configuration",
    },
    "create-function-advanced-health.json": {
        "name": "advanced-health-function",
        "inferenceUrl": "/echo",
        "containerImage": IMAGE,
        "inferencePort": 8000,
        "health": HEALTH,
        "functionType": "DEFAULT",
        "apiBodyFormat": "CUSTOM",
        "tags": ["advanced", "health", "monitoring"],
        "description": "Function with advanced health configuration",
    },
    "create-function-with-secrets.json": {
        "name": "function-with-secrets-2",
        "inferenceUrl": "/echo",
        "containerImage": IMAGE,
        "inferencePort": 8000,
        "health": HEALTH,
        "functionType": "DEFAULT",
        "apiBodyFormat": "CUSTOM",
        "secrets": [
            {"name": "database-credentials", "value": "user:password@host:5432/dbname"},
            {"name": "sidecar-auth", "value": "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."},
        ],
        "tags": ["secure", "secrets", "sidecar"],
        "description": "Function with sidecar credentials and secrets",
    },
    "create-function-with-secret-values-fixed.json": {
        "name": "function-with-secret-values",
        "inferenceUrl": "/echo",
        "containerImage": IMAGE,
        "inferencePort": 8000,
        "health": HEALTH,
        "functionType": "DEFAULT",
        "apiBodyFormat": "CUSTOM",
        "secrets": [
            {"name": "api-key", "value": "sk-1234567890abcdef"},
            {"name": "database-config", "value": {"host": "db.example.com", "port": 5432}},
        ],
        "tags": ["secrets", "example"],
        "description": "Function demonstrating secrets with actual values (OpenAPI compliant)",
    },
    "create-function-helm-nvcf-test-func.json": {
        "name": "nvcf-test-func-helm",
        "inferenceUrl": "/v1/chat/completions",
        "inferencePort": 8000,
        "health": {**HEALTH, "uri": "/v2/health/ready", "timeout": "PT10S"},
        "functionType": "DEFAULT",
        "apiBodyFormat": "CUSTOM",
        "helmChart": "https://helm.ngc.nvidia.com/0651155215864979/ncp-dev/charts/"
        "nvcf-test-func-0.0.1.tgz",
        "helmChartServiceName": "nvcf-test-func",
    },
    # --health-uri /health --health-timeout PT10S --health-expected-status 200 --rate-limit
    #   100-S --logs-telemetry-id ...: simpleHealthToClient sends healthUri and a full health
    #   on the inference port; rateLimit without its zero-valued members
    "flags-health-rate-limit": {
        "name": "flags-health",
        "inferenceUrl": "/echo",
        "containerImage": IMAGE,
        "inferencePort": 8000,
        "healthUri": "/health",
        "health": {**HEALTH, "timeout": "PT10S"},
        "functionType": "DEFAULT",
        "apiBodyFormat": "CUSTOM",
        "rateLimit": {"rateLimit": "100-S"},
        "telemetries": {"logsTelemetryId": "550e8400-e29b-41d4-a716-446655440001"},
    },
    # flags only: nvcf-cli function create --name f --inference-url /echo --inference-port 8000
    #   --container-image ... (functionType and apiBodyFormat get the CLI's defaults)
    "flags": {
        "name": "from-flags",
        "inferenceUrl": "/echo",
        "containerImage": IMAGE,
        "inferencePort": 8000,
        "functionType": "DEFAULT",
        "apiBodyFormat": "CUSTOM",
    },
}

#: client.FunctionDeploymentRequest for examples/deploy.json (zero-valued optional members of
#: GPUSpecificationDto are omitted; the four required ones are always sent).
DEPLOY_BODY = {
    "deploymentSpecifications": [
        {
            "gpu": "L40S",
            "instanceType": "NCP.GPU.L40S_1x",
            "minInstances": 1,
            "maxInstances": 1,
            "backend": "NCP",
            "maxRequestConcurrency": 1,
        }
    ]
}


def created(emu: Emulator, body: dict[str, Any]) -> dict[str, Any]:
    r = cli(emu, "POST", "/v2/nvcf/functions", body)
    assert r.status_code == 200, r.text  # CreateFunction: anything but 200 is an error
    function: dict[str, Any] = r.json()["function"]
    return function


def echo(request: ContainerRequest) -> Any:
    return {"echo": request.json(), "path": request.path}


# -- function create / list / ids / versions / get -----------------------------------------------


@pytest.mark.parametrize("example", sorted(CREATE_BODIES))
def test_create_with_each_example_decodes_into_create_function_response(
    nvcf: Emulator, example: str
) -> None:
    """``function create --input-file examples/<example>``: 200 and a ``function`` whose id,
    version id and name the CLI saves as the current function."""
    body = CREATE_BODIES[example]
    function = created(nvcf, body)
    go_decodes(function, FUNCTION_DATA)
    assert uuid.UUID(function["id"]) and uuid.UUID(function["versionId"])
    assert (function["name"], function["status"]) == (body["name"], "INACTIVE")
    if "secrets" not in body:  # see test_get_of_a_function_with_secrets_decodes
        path = f"/v2/nvcf/functions/{function['id']}/versions/{function['versionId']}"
        go_decodes(cli(nvcf, "GET", path).json(), {"function": FUNCTION_DTO})


def test_list_ids_versions_and_get_decode_into_function_dto(nvcf: Emulator) -> None:
    """``function list``, ``list-ids``, ``versions`` and ``get``: each a 200 whose DTOs decode
    into client.FunctionDto, with every member the create body set."""
    function = created(nvcf, CREATE_BODIES["create-function.json"])
    fid, vid = function["id"], function["versionId"]

    listed = cli(nvcf, "GET", "/v2/nvcf/functions")
    assert listed.status_code == 200
    for dto in listed.json()["functions"]:
        go_decodes(dto, FUNCTION_DTO)
    ids = cli(nvcf, "GET", "/v2/nvcf/functions/ids")
    assert ids.status_code == 200
    go_decodes(ids.json(), {"functionIds": [STR]})
    assert ids.json()["functionIds"] == [fid]
    versions = cli(nvcf, "GET", f"/v2/nvcf/functions/{fid}/versions")
    assert versions.status_code == 200
    assert [v["versionId"] for v in versions.json()["functions"]] == [vid]

    got = cli(nvcf, "GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")
    assert got.status_code == 200
    dto = got.json()["function"]  # GetFunctionDetails unwraps {"function": {...}}
    go_decodes(dto, FUNCTION_DTO)
    assert dto["ncaId"] and dto["createdAt"]
    assert dto["functionType"] == "DEFAULT"
    assert dto["health"] == HEALTH
    assert dto["containerArgs"] == "--model-path=/models --batch-size=32"
    assert dto["tags"] == ["example", "demo", "json-config"]


def test_an_llm_function_says_the_emulator_does_not_run_them(nvcf: Emulator) -> None:
    """examples/create-llm-function-routing-method.json (with apiBodyFormat CUSTOM: NVCF's
    ApiBodyFormat has no OPENAI_CHAT, so the example as written is a 400 there too). NVCF has
    LLM functions; the emulator does not, and says so rather than calling the type invalid."""
    body = {
        "name": "sample-llm-function",
        "inferenceUrl": "/",
        "containerImage": "nvcr.io/example/openai-compatible:latest",
        "inferencePort": 8000,
        "health": {**HEALTH, "timeout": "PT10S"},
        "functionType": "LLM",
        "apiBodyFormat": "CUSTOM",
        "models": [
            {
                "name": "dummy-model",
                "llmConfig": {"uris": ["/v1/chat/completions"], "routingMethod": "round_robin"},
            }
        ],
    }
    r = cli(nvcf, "POST", "/v2/nvcf/functions", body)
    assert r.status_code == 400
    assert "LLM is not supported by the emulator" in r.json()["detail"]


def test_the_clis_api_host_header_is_accepted(nvcf: Emulator) -> None:
    """``api_host`` (self-hosted gateways): hostHeaderTransport sends the control-plane calls
    to base_http_url with ``Host: <api_host>``; a Host that names no function is the control
    plane's, whatever its name."""
    function = created(nvcf, CREATE_BODIES["flags"])
    r = requests.get(
        f"{API}/v2/nvcf/functions/{function['id']}/versions/{function['versionId']}",
        headers={**go_headers(nvcf), "Host": "api.gateway.example.com"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["function"]["id"] == function["id"]


def test_an_unknown_version_is_a_404_the_cli_reports(nvcf: Emulator) -> None:
    """Every client call reports ``API error <status>: <body>`` for a status it does not
    expect; the body is NVCF's problem JSON."""
    missing = str(uuid.uuid4())
    r = cli(nvcf, "GET", f"/v2/nvcf/functions/{missing}/versions/{missing}")
    assert r.status_code == 404
    assert missing in r.json()["detail"]


# -- function update -----------------------------------------------------------------------------


def test_update_puts_on_the_version_path(nvcf: Emulator) -> None:
    """``function update --tags a,b``: UpdateFunctionMetadata PUTs
    client.UpdateFunctionMetadataRequest to ``/v2/nvcf/functions/{id}/versions/{versionId}``,
    NVCF's current update call (FunctionManagementController.updateFunction; the
    ``/v2/nvcf/metadata/...`` one is deprecated for it), and wants a 200. The emulator had
    only the metadata path: this PUT was a 405."""
    function = created(nvcf, CREATE_BODIES["flags"])
    path = f"/v2/nvcf/functions/{function['id']}/versions/{function['versionId']}"
    r = cli(nvcf, "PUT", path, {"tags": ["production", "v2-0"]})
    assert r.status_code == 200, r.text
    go_decodes(r.json()["function"], FUNCTION_DTO)
    assert cli(nvcf, "GET", path).json()["function"]["tags"] == ["production", "v2-0"]
    # the same rules as the metadata PUT: something to change is required
    empty = cli(nvcf, "PUT", path, {})
    assert empty.status_code == 400
    assert "at least one of" in empty.json()["detail"]


def test_update_with_model_updates_is_refused_for_a_non_llm_function(nvcf: Emulator) -> None:
    """``function update --input-file examples/update-metadata.json`` sends tags and
    ``modelUpdates``. NVCF refuses model config updates on a function that is not LLM
    (FunctionLlmService: MESG_FUNCTION_NOT_LLM) and changes nothing; the emulator (which has no
    LLM functions) took the tags and dropped the model updates without a word."""
    function = created(nvcf, CREATE_BODIES["flags"])
    fid, vid = function["id"], function["versionId"]
    path = f"/v2/nvcf/functions/{fid}/versions/{vid}"
    update = {
        "tags": ["production", "ml-model"],
        "modelUpdates": [
            {
                "modelName": "dummy-model",
                "llmConfig": {"tokenRateLimit": "1000-S", "routingMethod": "round_robin"},
            }
        ],
    }
    r = cli(nvcf, "PUT", path, update)
    assert r.status_code == 400
    assert r.json()["detail"] == (
        f"Function id '{fid}', version '{vid}': Only LLM functions support model config updates"
    )
    assert "tags" not in cli(nvcf, "GET", path).json()["function"]
    # model updates alone are an update (not "at least one of ... must be specified")
    alone = cli(nvcf, "PUT", path, {"modelUpdates": update["modelUpdates"]})
    assert "Only LLM functions" in alone.json()["detail"]
    # UpdateFunctionRequest's own rules come first (any function)
    twice = cli(nvcf, "PUT", path, {"modelUpdates": update["modelUpdates"] * 2})
    assert twice.json()["detail"] == (
        "Invalid request: duplicate model names are not allowed in 'modelUpdates'"
    )
    bare = cli(nvcf, "PUT", path, {"modelUpdates": [{"modelName": "m", "llmConfig": {}}]})
    assert bare.json()["detail"] == (
        "Invalid request: at least one of 'tokenRateLimit' or 'routingMethod' must be specified"
    )
    llm = cli(nvcf, "PUT", path, {"llmInvocationConfig": {}})
    assert (llm.status_code, llm.json()["detail"]) == (
        400,
        "Only LLM functions support llmInvocationConfig",
    )
    assert (
        cli(nvcf, "PUT", path, {"modelUpdates": []})
        .json()["detail"]
        .startswith("Invalid request: at least one of 'tags'")
    )


# -- deploy create / get / update / remove -------------------------------------------------------


def deployed(emu: Emulator) -> tuple[str, str]:
    """``function create`` then ``deploy create --input-file examples/deploy.json``."""
    emu.register_image(IMAGE, echo)
    function = created(emu, CREATE_BODIES["flags"])
    fid, vid = function["id"], function["versionId"]
    r = cli(emu, "POST", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", DEPLOY_BODY)
    assert r.status_code in (200, 202), r.text  # DeployFunction's two success codes
    return fid, vid


def test_deploy_create_then_wait_sees_active(nvcf: Emulator) -> None:
    """``deploy create`` polls GetFunction (client.FunctionDetails) until ``status`` is
    ACTIVE (ERROR/FAILED stop it)."""
    fid, vid = deployed(nvcf)
    r = cli(nvcf, "GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")
    assert r.status_code == 200
    go_decodes(r.json(), {"function": FUNCTION_DETAILS})
    assert r.json()["function"]["status"] == "ACTIVE"


def spec_ids(emu: Emulator, version_id: str) -> list[str]:
    """The ``gpuSpecificationId`` of each spec of a version's deployment, as the emulator
    keeps them (what its deployment DTO must show)."""
    (version,) = [v for v in emu.functions.all() if v.version_id == version_id]
    assert version.deployment is not None
    return [s["gpuSpecificationId"] for s in version.deployment["deploymentSpecifications"]]


def test_deploy_get_decodes_with_the_deployment_id(nvcf: Emulator) -> None:
    """``deploy get``: client.FunctionDeploymentDto. NVCF's FunctionDeploymentDto has
    ``deploymentId`` and ``lastUpdatedAt`` (@NotNull); the emulator's had neither, so
    ``deploy update`` stopped with "deployment response did not include a deploymentId"."""
    fid, vid = deployed(nvcf)
    r = cli(nvcf, "GET", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
    assert r.status_code == 200
    deployment = r.json()["deployment"]
    go_decodes(deployment, DEPLOYMENT)
    assert uuid.UUID(deployment["deploymentId"])
    assert deployment["lastUpdatedAt"] and deployment["createdAt"]
    (spec,) = deployment["deploymentSpecifications"]
    assert (spec["gpu"], spec["instanceType"], spec["backend"]) == (
        "L40S",
        "NCP.GPU.L40S_1x",
        "NCP",
    )
    # the same deployment by its id (FunctionDeploymentController: GET {deploymentId})
    by_id = cli(nvcf, "GET", f"/v2/nvcf/deployments/{deployment['deploymentId']}")
    assert by_id.status_code == 200
    assert by_id.json()["deployment"]["deploymentId"] == deployment["deploymentId"]


def test_deploy_get_shows_each_specs_id_for_deploy_update(nvcf: Emulator) -> None:
    """findDeployUpdateGPUSpecID: the spec matching --gpu and --instance-type must carry its
    ``gpuSpecificationId`` (NVCF's GpuSpecificationDto does), else "matched GPU spec has no
    gpuSpecificationId"."""
    fid, vid = deployed(nvcf)
    r = cli(nvcf, "GET", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
    (spec,) = r.json()["deployment"]["deploymentSpecifications"]
    assert spec["gpuSpecificationId"] == spec_ids(nvcf, vid)[0]


def test_deploy_update_patches_one_gpu_specification(nvcf: Emulator) -> None:
    """``deploy update --input-file examples/update-deployment.json``: GetDeployment for the
    deployment id (and the spec's id), then PATCH client.UpdateGpuSpecificationRequest to
    ``/v2/nvcf/deployments/{deploymentId}/gpu-specifications/{gpuSpecId}`` (200 or 202) and
    read ``gpuSpecification`` back. The emulator had no such route."""
    fid, vid = deployed(nvcf)
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    deployment = cli(nvcf, "GET", path).json()["deployment"]
    (spec_id,) = spec_ids(nvcf, vid)
    patch = f"/v2/nvcf/deployments/{deployment['deploymentId']}/gpu-specifications/{spec_id}"
    r = cli(nvcf, "PATCH", patch, {"minInstances": 2, "maxInstances": 3})
    assert r.status_code in (200, 202), r.text
    go_decodes(r.json(), {"gpuSpecification": GPU_SPEC})
    updated = r.json()["gpuSpecification"]
    assert (updated["minInstances"], updated["maxInstances"]) == (2, 3)
    assert (updated["gpu"], updated["instanceType"]) == ("L40S", "NCP.GPU.L40S_1x")
    assert updated["gpuSpecificationId"] == spec_id
    after = cli(nvcf, "GET", path).json()["deployment"]
    assert after["deploymentSpecifications"][0]["maxInstances"] == 3
    assert after["deploymentId"] == deployment["deploymentId"]

    # NVCF's refusals (DeploymentValidationService, GpuSpecificationService)
    empty = cli(nvcf, "PATCH", patch, {})
    assert empty.status_code == 400
    assert "At least one field should be provided" in empty.json()["detail"]
    crossed = cli(nvcf, "PATCH", patch, {"minInstances": 4})
    assert crossed.status_code == 400
    assert "must be lesser than or equal to maxInstances '3'" in crossed.json()["detail"]
    other = str(uuid.uuid4())
    unknown = cli(nvcf, "PATCH", patch.rsplit("/", 1)[0] + f"/{other}", {"maxInstances": 2})
    assert unknown.status_code == 404
    assert f"Unknown gpu-specification-id '{other}'" in unknown.json()["detail"]
    gone = cli(nvcf, "PATCH", f"/v2/nvcf/deployments/{other}/gpu-specifications/{other}", {})
    assert gone.status_code == 404
    assert cli(nvcf, "PATCH", "/v2/nvcf/deployments/x/gpu-specifications/y", {}).status_code == 400


def test_a_put_update_keeps_the_deployment_and_spec_ids(nvcf: Emulator) -> None:
    """The deprecated PUT changes the deployment NVCF already has: its ids stay."""
    fid, vid = deployed(nvcf)
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    before = cli(nvcf, "GET", path).json()["deployment"]
    ids = spec_ids(nvcf, vid)
    spec = {**DEPLOY_BODY["deploymentSpecifications"][0], "maxInstances": 2}
    r = cli(nvcf, "PUT", path, {"deploymentSpecifications": [spec]})
    assert r.status_code == 200, r.text
    after = r.json()["deployment"]
    assert after["deploymentId"] == before["deploymentId"]
    assert spec_ids(nvcf, vid) == ids
    assert after["deploymentSpecifications"][0]["maxInstances"] == 2


def test_patch_on_an_undeployed_version_is_refused(nvcf: Emulator) -> None:
    """After ``deploy remove`` the deployment is gone (NVCF deletes it): its id is a 404."""
    fid, vid = deployed(nvcf)
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    deployment = cli(nvcf, "GET", path).json()["deployment"]
    (spec_id,) = spec_ids(nvcf, vid)
    assert cli(nvcf, "DELETE", path).status_code == 200
    patch = f"/v2/nvcf/deployments/{deployment['deploymentId']}/gpu-specifications/{spec_id}"
    assert cli(nvcf, "PATCH", patch, {"maxInstances": 2}).status_code == 404


@pytest.mark.parametrize("query", ["", "?graceful=true"])
def test_deploy_remove_and_delete_deployment_only_get_200(nvcf: Emulator, query: str) -> None:
    """``deploy remove`` (graceful=false) and ``function delete --delete-deployment-only
    [--graceful]``: DELETE the deployment, 200 expected; the version is INACTIVE again."""
    fid, vid = deployed(nvcf)
    r = cli(nvcf, "DELETE", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}{query}")
    assert r.status_code == 200, r.text
    got = cli(nvcf, "GET", f"/v2/nvcf/functions/{fid}/versions/{vid}").json()["function"]
    assert got["status"] == "INACTIVE"


def test_function_delete_gets_204(nvcf: Emulator) -> None:
    """``function delete``: DeleteFunction wants exactly 204."""
    function = created(nvcf, CREATE_BODIES["flags"])
    path = f"/v2/nvcf/functions/{function['id']}/versions/{function['versionId']}"
    r = cli(nvcf, "DELETE", path)
    assert r.status_code == 204
    assert cli(nvcf, "GET", path).status_code == 404


# -- function invoke (REST) ----------------------------------------------------------------------


def invoke_headers(emu: Emulator, poll: int = 5) -> dict[str, str]:
    """newInvokeRequest: JSON, ``Accept: */*``, the key, ``NVCF-POLL-SECONDS`` (the CLI's
    ``--poll-duration`` defaults to 5)."""
    return {
        "Content-Type": "application/json",
        "Accept": "*/*",
        "Authorization": emu.headers["Authorization"],
        "User-Agent": "Go-http-client/1.1",
        "NVCF-POLL-SECONDS": str(poll),
    }


def test_invoke_direct_url_from_the_functions_inference_url(nvcf: Emulator) -> None:
    """``function invoke --request-body '{"message":"Hello"}'``: GetFunctionDetails for the
    inferenceUrl and functionType, then POST the body to directInvocationURL --
    ``<functionId>.invocation.<invoke host>`` + inferenceUrl. A 200's JSON object is printed
    as the response; the request id comes from ``NVCF-REQID``."""
    fid, vid = nvcf.add_function(echo, name="echo", inference_url="/echo")
    details = cli(nvcf, "GET", f"/v2/nvcf/functions/{fid}/versions/{vid}")
    assert details.status_code == 200
    dto = details.json()["function"]
    go_decodes(dto, FUNCTION_DTO)
    assert dto["functionType"] != "LLM" and dto["inferenceUrl"] == "/echo"

    # invoke_url https://invocation.api.nvcf.nvidia.com: an "invocation." host gets the id
    r = requests.post(
        f"https://{fid}.invocation.api.nvcf.nvidia.com{dto['inferenceUrl']}",
        headers=invoke_headers(nvcf),
        data=go_json({"message": "Hello"}),
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"echo": {"message": "Hello"}, "path": "/echo"}
    assert uuid.UUID(r.headers["NVCF-REQID"])
    assert r.headers["NVCF-STATUS"] == "fulfilled"


def test_invoke_through_a_gateway_with_invoke_host(nvcf: Emulator) -> None:
    """With ``invoke_host`` set the CLI posts to invoke_url + inferenceUrl and names the
    function in the ``Host`` header (``<functionId>.<invoke_host>``), as for a self-hosted
    gateway: the emulator takes a Host that starts with a function id as NVCF's TLB does."""
    fid, _ = nvcf.add_function(echo, name="echo", inference_url="/echo")
    r = requests.post(
        f"{API}/echo",
        headers={**invoke_headers(nvcf), "Host": f"{fid}.invocation.gateway.example.com"},
        data=go_json({"message": "via gateway"}),
    )
    assert r.status_code == 200, r.text
    assert r.json()["echo"] == {"message": "via gateway"}


def test_invoke_a_slow_function_gets_the_202_the_cli_prints(nvcf: Emulator) -> None:
    """Past ``--poll-duration`` NVCF answers 202 with ``NVCF-REQID`` and ``NVCF-STATUS`` and
    no body: decodeInvokeFunctionResponse takes any status under 400 but 200/302 as such and
    prints the request id and status (it does not poll; the id is NVCF's
    ``/v2/nvcf/pexec/status/{reqId}``, where the result is then fetched)."""
    release = threading.Event()

    def slow(request: ContainerRequest) -> Any:
        release.wait(30)
        return {"done": True}

    fid, _ = nvcf.add_function(slow, name="slow", inference_url="/work")
    try:
        r = requests.post(
            f"https://{fid}.invocation.api.nvcf.nvidia.com/work",
            headers=invoke_headers(nvcf, poll=1),
            data=go_json({}),
        )
        assert r.status_code == 202, r.text
        assert r.content == b""
        reqid = r.headers["NVCF-REQID"]
        assert uuid.UUID(reqid)
        assert r.headers["NVCF-STATUS"] == "in-progress"
    finally:
        release.set()
    polled = requests.get(
        f"{API}/v2/nvcf/pexec/status/{reqid}",
        headers={**nvcf.headers, "NVCF-POLL-SECONDS": "30"},
    )
    assert polled.status_code == 200
    assert polled.json() == {"done": True}


def test_invoke_error_status_is_the_containers(nvcf: Emulator) -> None:
    """A status of 400 or more is ``API error <status>: <body>``: pass-through hands back the
    container's own status and body."""
    from nvcf_emulator.worker import ContainerResponse

    fid, _ = nvcf.add_function(
        lambda req: ContainerResponse(
            422, b'{"error":"bad"}', [("Content-Type", "application/json")]
        ),
        name="picky",
        inference_url="/x",
    )
    r = requests.post(
        f"https://{fid}.invocation.api.nvcf.nvidia.com/x",
        headers=invoke_headers(nvcf),
        data=go_json({}),
    )
    assert (r.status_code, r.json()) == (422, {"error": "bad"})


def test_invoke_with_the_clis_default_invoke_url(nvcf: Emulator) -> None:
    """With no invoke_url the CLI turns ``https://api.nvcf.nvidia.com`` into
    ``https://<functionId>.invocation.nvcf.nvidia.com`` (directInvocationURL drops ``api.``):
    in-process, ``<id>.invocation.<d>`` is the emulator's when ``api.<d>`` is its API host,
    as ``<id>.invocation.api.<d>`` is."""
    fid, _ = nvcf.add_function(echo, name="echo", inference_url="/echo")
    r = requests.post(
        f"https://{fid}.invocation.nvcf.nvidia.com/echo",
        headers=invoke_headers(nvcf),
        data=go_json({"message": "Hello"}),
    )
    assert r.status_code == 200, r.text
    assert r.json()["echo"] == {"message": "Hello"}


def test_get_of_a_function_with_secrets_decodes(nvcf: Emulator) -> None:
    """``function get`` of a function created with secrets: client.FunctionDto's ``secrets``
    is ``[]string`` (NVCF's FunctionDto: ``Set<String> secrets``, names only); an array of
    objects makes json.Decoder fail, so the CLI reports "failed to decode response"."""
    function = created(nvcf, CREATE_BODIES["create-function-with-secrets.json"])
    path = f"/v2/nvcf/functions/{function['id']}/versions/{function['versionId']}"
    dto = cli(nvcf, "GET", path).json()["function"]
    go_decodes(dto, FUNCTION_DTO)
    assert dto["secrets"] == ["database-credentials", "sidecar-auth"]


def test_patch_of_a_version_that_failed_to_deploy_is_a_400(nvcf: Emulator) -> None:
    """GpuSpecificationService: only a version in BUSY_STATUSES (ACTIVE, DEPLOYING, DEGRADED,
    DEGRADING) may have a spec changed; one in ERROR (no container for its image) is
    NVCF's "Invalid status" 400."""
    function = created(nvcf, {**CREATE_BODIES["flags"], "containerImage": "nvcr.io/x/none:1"})
    fid, vid = function["id"], function["versionId"]
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    assert cli(nvcf, "POST", path, DEPLOY_BODY).status_code == 200
    deployment = cli(nvcf, "GET", path).json()["deployment"]
    assert deployment["functionStatus"] == "ERROR"
    (spec_id,) = spec_ids(nvcf, vid)
    patch = f"/v2/nvcf/deployments/{deployment['deploymentId']}/gpu-specifications/{spec_id}"
    r = cli(nvcf, "PATCH", patch, {"maxInstances": 2})
    assert r.status_code == 400
    assert r.json()["detail"] == f"Function id '{fid}', version '{vid}': Invalid status 'ERROR'"


@pytest.mark.nvcf(api_keys={"nvapi-a": "nca-a", "nvapi-b": "nca-b"})
def test_another_accounts_deployment_is_forbidden_to_patch(nvcf: Emulator) -> None:
    """NVCF looks a deployment up by its id in any account, then refuses to change another
    account's (GpuSpecificationService: "Forbidden to 'update' deployment", a 403); reading it
    by id is the caller's account only (404)."""
    nvcf.register_image(IMAGE, echo)
    as_a = {"Authorization": "Bearer nvapi-a", "Content-Type": "application/json"}
    as_b = {"Authorization": "Bearer nvapi-b", "Content-Type": "application/json"}
    function = requests.post(
        f"{API}/v2/nvcf/functions", headers=as_a, data=go_json(CREATE_BODIES["flags"])
    ).json()["function"]
    fid, vid = function["id"], function["versionId"]
    path = f"{API}/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    deployment = requests.post(path, headers=as_a, data=go_json(DEPLOY_BODY)).json()["deployment"]
    (spec_id,) = spec_ids(nvcf, vid)
    patch = f"{API}/v2/nvcf/deployments/{deployment['deploymentId']}/gpu-specifications/{spec_id}"
    r = requests.patch(patch, headers=as_b, data=go_json({"maxInstances": 2}))
    assert r.status_code == 403
    assert r.json()["detail"] == (
        f"Function id '{fid}', version '{vid}': Forbidden to 'update' deployment"
    )
    by_id = f"{API}/v2/nvcf/deployments/{deployment['deploymentId']}"
    assert requests.get(by_id, headers=as_b).status_code == 404
    assert requests.get(by_id, headers=as_a).status_code == 200
    assert requests.patch(patch, headers=as_a, data=go_json({"maxInstances": 2})).ok
