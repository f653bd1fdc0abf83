"""Function management routes: ``/v2/nvcf/functions``, deployments and metadata.

Also served under ngcsdk's ``/v2/orgs/{org}[/teams/{team}]/nvcf/...`` prefixes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from werkzeug.wrappers import Request, Response

from ..domain.errors import BadRequest
from .bodies import read_json_object
from .control import control_account
from .ids import control_id
from .responses import Route, json_response

if TYPE_CHECKING:
    from ..emulator import Emulator


def _ids(function_id: str, version_id: str) -> tuple[str, str]:
    """The path's ids as the control plane reads them (400 unless UUIDs; any case)."""
    return control_id("functionId", function_id), control_id("functionVersionId", version_id)


def create_function(emu: Emulator, request: Request, **_: str) -> Response:
    account = control_account(emu, request, body=True)
    version = emu.functions.create(account, read_json_object(request), strict=True)
    return json_response({"function": version.dto(account.nca_id)})


def create_version(emu: Emulator, request: Request, function_id: str, **_: str) -> Response:
    account = control_account(emu, request, body=True)
    function_id = control_id("functionId", function_id)
    body = read_json_object(request)
    version = emu.functions.create_version(account, function_id, body, strict=True)
    return json_response({"function": version.dto(account.nca_id)})


def _visibility(request: Request) -> list[str] | None:
    """The ``visibility`` query: repeated or comma-joined, trimmed, in any case (NVCF's
    VisibilityEnum.fromText upper-cases it); none given is all three."""
    visibility = [
        item.strip().lower()
        for value in request.args.getlist("visibility")
        for item in value.split(",")
        if item.strip()
    ]
    return visibility or None


def list_functions(emu: Emulator, request: Request, **_: str) -> Response:
    account = control_account(emu, request)
    versions = emu.functions.listing(account, _visibility(request))
    return json_response({"functions": [v.dto(account.nca_id) for v in versions]})


def list_ids(emu: Emulator, request: Request, **_: str) -> Response:
    """The ids of :func:`list_functions`, with the same ``visibility`` filter."""
    account = control_account(emu, request)
    ids: list[str] = []
    for version in emu.functions.listing(account, _visibility(request)):
        if version.function_id not in ids:
            ids.append(version.function_id)
    return json_response({"functionIds": ids})


def list_versions(emu: Emulator, request: Request, function_id: str, **_: str) -> Response:
    account = control_account(emu, request)
    versions = emu.functions.versions(account, control_id("functionId", function_id))
    return json_response({"functions": [v.dto(account.nca_id) for v in versions]})


#: What Spring's StringToBooleanConverter reads as a boolean query value (any case).
_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})


def _flag(request: Request, name: str, default: bool) -> bool:
    value = request.args.get(name, "")
    word = value.strip().lower()
    if not word:
        return default
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise BadRequest(f"Invalid value for query parameter '{name}': {value!r} is not a boolean")


def get_version(
    emu: Emulator, request: Request, function_id: str, version_id: str, **_: str
) -> Response:
    account = control_account(emu, request)
    function_id, version_id = _ids(function_id, version_id)
    include_secrets = _flag(request, "includeSecrets", True)
    version = emu.functions.get(account, function_id, version_id)
    return json_response({"function": version.dto(account.nca_id, include_secrets=include_secrets)})


def delete_version(
    emu: Emulator, request: Request, function_id: str, version_id: str, **_: str
) -> Response:
    account = control_account(emu, request)
    function_id, version_id = _ids(function_id, version_id)
    emu.functions.delete(account, function_id, version_id)
    return Response(status=204)


def update_metadata(
    emu: Emulator, request: Request, function_id: str, version_id: str, **_: str
) -> Response:
    account = control_account(emu, request, body=True)
    function_id, version_id = _ids(function_id, version_id)
    body = read_json_object(request)
    version = emu.functions.update_tags(account, function_id, version_id, body)
    return json_response({"function": version.dto(account.nca_id)})


def update_secrets(
    emu: Emulator, request: Request, function_id: str, version_id: str, **_: str
) -> Response:
    """``PUT /v2/nvcf/secrets/functions/{fid}/versions/{vid}``: 204; the container's
    ``secrets.json`` has the new values from then on."""
    account = control_account(emu, request, body=True)
    function_id, version_id = _ids(function_id, version_id)
    body = read_json_object(request)
    emu.functions.update_secrets(account, function_id, version_id, body)
    return Response(status=204)


def deploy(
    emu: Emulator, request: Request, function_id: str, version_id: str, **_: str
) -> Response:
    account = control_account(emu, request, body=True)
    function_id, version_id = _ids(function_id, version_id)
    body = read_json_object(request)
    version = emu.functions.deploy(account, function_id, version_id, body)
    return json_response({"deployment": version.deployment_dto()})


def get_deployment(
    emu: Emulator, request: Request, function_id: str, version_id: str, **_: str
) -> Response:
    account = control_account(emu, request)
    function_id, version_id = _ids(function_id, version_id)
    version = emu.functions.deployment(account, function_id, version_id)
    emu.functions.refresh(version)
    return json_response({"deployment": version.deployment_dto()})


def update_deployment(
    emu: Emulator, request: Request, function_id: str, version_id: str, **_: str
) -> Response:
    account = control_account(emu, request, body=True)
    function_id, version_id = _ids(function_id, version_id)
    body = read_json_object(request)
    version = emu.functions.update_deployment(account, function_id, version_id, body)
    return json_response({"deployment": version.deployment_dto()})


def get_deployment_by_id(emu: Emulator, request: Request, deployment_id: str, **_: str) -> Response:
    """``GET /v2/nvcf/deployments/{deploymentId}``: the same DTO, found by its id."""
    account = control_account(emu, request)
    version = emu.functions.by_deployment_id(account, control_id("deploymentId", deployment_id))
    emu.functions.refresh(version)
    return json_response({"deployment": version.deployment_dto()})


def update_gpu_specification(
    emu: Emulator, request: Request, deployment_id: str, gpu_spec_id: str, **_: str
) -> Response:
    """NVCF's per-spec deployment update (the ``PUT`` above is deprecated in its favour);
    what NVIDIA's nvcf-cli ``deploy update`` sends."""
    account = control_account(emu, request, body=True)
    deployment_id = control_id("deploymentId", deployment_id)
    gpu_spec_id = control_id("gpuSpecId", gpu_spec_id)
    body = read_json_object(request)
    spec = emu.functions.update_gpu_specification(account, deployment_id, gpu_spec_id, body)
    return json_response({"gpuSpecification": spec})


def undeploy(
    emu: Emulator, request: Request, function_id: str, version_id: str, **_: str
) -> Response:
    account = control_account(emu, request)
    function_id, version_id = _ids(function_id, version_id)
    version = emu.functions.undeploy(account, function_id, version_id)
    return json_response({"function": version.dto(account.nca_id)})


_F = "/nvcf/functions"
_V = "/nvcf/functions/<function_id>/versions/<version_id>"
_D = "/nvcf/deployments/functions/<function_id>/versions/<version_id>"
_ROUTES: list[Route] = [
    (_F, ["POST"], create_function),
    (_F, ["GET"], list_functions),
    (f"{_F}/ids", ["GET"], list_ids),
    (f"{_F}/<function_id>/versions", ["POST"], create_version),
    (f"{_F}/<function_id>/versions", ["GET"], list_versions),
    (_V, ["GET"], get_version),
    (_V, ["DELETE"], delete_version),
    # the metadata PUT is deprecated for the same PUT on the version (FunctionManagementController)
    (_V, ["PUT"], update_metadata),
    ("/nvcf/metadata/functions/<function_id>/versions/<version_id>", ["PUT"], update_metadata),
    ("/nvcf/secrets/functions/<function_id>/versions/<version_id>", ["PUT"], update_secrets),
    (_D, ["POST"], deploy),
    (_D, ["GET"], get_deployment),
    (_D, ["PUT"], update_deployment),
    (_D, ["DELETE"], undeploy),
    ("/nvcf/deployments/<deployment_id>", ["GET"], get_deployment_by_id),
    (
        "/nvcf/deployments/<deployment_id>/gpu-specifications/<gpu_spec_id>",
        ["PATCH"],
        update_gpu_specification,
    ),
]

ROUTES: list[Route] = [
    (prefix + path, methods, handler)
    for prefix in ("/v2", "/v2/orgs/<org>", "/v2/orgs/<org>/teams/<team>")
    for path, methods, handler in _ROUTES
]
