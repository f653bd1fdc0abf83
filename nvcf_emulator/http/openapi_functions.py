"""The OpenAPI description of the function management API and the invocation API.

Registered into :func:`nvcf_emulator.http.openapi.document` (its ``EXTRA_PATHS`` and
``SCHEMAS``) when that module builds the document. Only the plain ``/v2/nvcf/...`` paths are
described; the same function routes also answer under ``/v2/orgs/{org}[/teams/{team}]``.

Every rule here is the server's own: the patterns are the ones the handlers check (with Python's
``re``), so a request this document accepts is one the emulator accepts, and the other way round.
"""

from __future__ import annotations

from typing import Any

from ..config import EmulatorConfig
from ..domain.functions import (
    API_BODY_FORMATS,
    DURATION_RE,
    FUNCTION_TYPES,
    GPU_SPEC_UPDATES,
    HEALTH_MEMBERS,
    MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS,
    MAX_SECRET_NAME_CHARS,
    MAX_SECRET_VALUE_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    NAME_RE,
    SECRET_NAME_RE,
    TAG_RE,
    VISIBILITIES,
    FunctionStatus,
)
from ..domain.invocations import InvocationStatus
from ..domain.ratelimits import MAX_EXEMPTED, MAX_PER_NCA, RATE_PATTERN
from .openapi import EXTRA_PATHS, JSON, PROBLEM, SCHEMAS, _errors, _exact, _ok, _problem
from .pexec import ASSET_REFERENCES_PATTERN, ASSETS_HEADER, POLL_HEADER, RESULTS_PREFIX

TEXT = "text/plain"
ANY: dict[str, Any] = {}
_DEFAULTS = EmulatorConfig()


def _objects_of(*keys: str) -> dict[str, Any]:
    """A list of objects with ``keys``, each a string (other members are kept)."""
    return {
        "type": ["array", "null"],
        "items": {
            "type": "object",
            "required": list(keys),
            "properties": {k: {"type": "string"} for k in keys},
        },
    }


#: Not blank (Apache's StringUtils.isBlank is false): some character that is not whitespace.
NOT_BLANK = r"\S"
_TAGS: dict[str, Any] = {
    "type": ["array", "null"],
    "maxItems": MAX_TAGS,
    "items": {"type": "string", "maxLength": MAX_TAG_CHARS, "pattern": f"^{TAG_RE.pattern}$"},
}

_RATE: dict[str, Any] = {"type": "string", "pattern": RATE_PATTERN}
#: RateLimitDto: the rates, and who is exempt; enforced on every invocation (429).
RATE_LIMIT: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "rateLimit": {**_RATE, "type": ["string", "null"]},
        "exemptedNcaIds": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": f"At most {MAX_EXEMPTED} distinct NCA ids (a repeat counts once)",
        },
        "perNcaIdRate": {
            "type": ["object", "null"],
            "maxProperties": MAX_PER_NCA,
            "additionalProperties": _RATE,
        },
        "perUserRate": {**_RATE, "type": ["string", "null"]},
        "syncCheck": {"type": ["boolean", "null"]},
    },
    # One of the three rates; exemptions only beside a global rate.
    "anyOf": [
        {"type": "null"},
        *(
            {"required": [name], "properties": {name: {"type": kind}}}
            for name, kind in (
                ("rateLimit", "string"),
                ("perNcaIdRate", "object"),
                ("perUserRate", "string"),
            )
        ),
    ],
    "if": {
        "type": "object",
        "required": ["exemptedNcaIds"],
        "properties": {"exemptedNcaIds": {"type": "array", "minItems": 1}},
    },
    "then": {"required": ["rateLimit"], "properties": {"rateLimit": {"type": "string"}}},
    "description": "Rates are N-S, N-M, N-H or N-D, comma-separated, no unit twice. An NCA id "
    "with a perNcaIdRate may not be in exemptedNcaIds (400 otherwise)",
}

#: Optional create-body members, checked for their type and returned in the FunctionDTO.
_TYPED_FIELDS: dict[str, Any] = {
    "description": {"type": ["string", "null"], "maxLength": MAX_DESCRIPTION_CHARS},
    "containerArgs": {"type": ["string", "null"]},
    "containerEnvironment": _objects_of("key", "value"),
    "models": _objects_of("name", "version", "uri"),
    "resources": _objects_of("name", "version", "uri"),
    "rateLimit": RATE_LIMIT,
    "telemetries": {"type": ["object", "null"]},
}


def unsigned_at_most(limit: int) -> str:
    """A regex (no anchors) for the decimal numbers 0..``limit``, leading zeros allowed."""
    digits = str(limit)
    alternatives = [digits]
    if len(digits) > 1:
        alternatives.append(f"[0-9]{{1,{len(digits) - 1}}}")
    for i, d in enumerate(digits):
        if d != "0":
            rest = len(digits) - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            alternatives.append(f"{digits[:i]}[0-{int(d) - 1}]{tail}")
    return "0*(?:" + "|".join(alternatives) + ")"


def poll_seconds_pattern(max_poll_seconds: int) -> str:
    """``NVCF-POLL-SECONDS`` as the handler reads it: trimmed, an optional ``+``, then a decimal
    number no larger than ``max_poll_seconds``."""
    return rf"^\s*\+?{unsigned_at_most(max_poll_seconds)}\s*$"


#: The pattern under the default configuration (3600).
POLL_SECONDS_PATTERN = poll_seconds_pattern(_DEFAULTS.max_poll_seconds)

# Any case, spelt with letter classes: ECMA-262 (JSON Schema's pattern dialect) has no inline
# (?i:...) group, so JavaScript validators could not compile the pattern.
_VISIBILITY = (
    "(?:" + "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in v) for v in VISIBILITIES) + ")"
)
#: One ``visibility`` query value: comma-separated names in any case, trimmed, empty items
#: skipped.
VISIBILITY_PATTERN = rf"^\s*{_VISIBILITY}?\s*(?:,\s*{_VISIBILITY}?\s*)*$"


#: SecretDto: a name and a value (a string that is not blank, or JSON such as an object).
_SECRET: dict[str, Any] = {
    "type": "object",
    "required": ["name", "value"],
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SECRET_NAME_CHARS,
            "pattern": SECRET_NAME_RE.pattern,
        },
        "value": {
            "description": "A string with a character above U+0020 (Java's trim), or JSON (an "
            "object); at most 32768 characters once trimmed",
            "not": {"type": "null"},
            "anyOf": [
                {"not": {"type": "string"}},
                {
                    "type": "string",
                    "pattern": r"[^\x00-\x20]",
                    "maxLength": MAX_SECRET_VALUE_CHARS,
                },
            ],
        },
    },
}


def _definition(*, version: bool) -> dict[str, Any]:
    """The create body of a function (``version=False``) or of a new version of one."""
    name: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME_CHARS,
        "pattern": NAME_RE.pattern,
    }
    if version:
        name = {**name, "description": "A version has its own name, as at create"}
    something_to_run = [
        {"required": ["containerImage"], "properties": {"containerImage": {"type": "string"}}},
        {"required": ["models"], "properties": {"models": {"type": "array", "minItems": 1}}},
        {"required": ["helmChart"], "properties": {"helmChart": {"type": "string"}}},
    ]
    blank_or_null = {"anyOf": [{"type": "null"}, {"type": "string", "pattern": r"^\s*$"}]}
    with_helm = {
        "if": {"required": ["helmChart"], "properties": {"helmChart": {"type": "string"}}},
        "then": {
            "required": ["helmChartServiceName"],
            "properties": {
                "containerImage": {"type": "null"},
                "containerArgs": blank_or_null,
                "containerEnvironment": {"type": "null"},
                "helmChartServiceName": {"type": "string", "pattern": NOT_BLANK},
            },
        },
        "else": {"properties": {"helmChartServiceName": blank_or_null}},
    }
    return {
        "type": "object",
        "description": "One of containerImage, models (not empty) or helmChart is required; "
        "a helmChart comes with a helmChartServiceName and without containerImage, "
        "containerArgs or containerEnvironment.",
        "required": ["name", "inferenceUrl"],
        "properties": {
            "name": name,
            "inferenceUrl": {"type": "string"},
            "inferencePort": {"type": "integer", "minimum": 1, "maximum": 65535},
            "healthUri": {"type": ["string", "null"]},
            "health": {
                "type": ["object", "null"],
                "required": list(HEALTH_MEMBERS),
                "properties": {
                    "expectedStatusCode": {"type": "integer", "minimum": 100, "maximum": 599},
                    "protocol": {"enum": ["HTTP", "gRPC"]},
                    "uri": {"type": "string", "pattern": "^/"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "timeout": {"type": "string", "pattern": f"^{DURATION_RE.pattern}$"},
                },
            },
            "apiBodyFormat": {"enum": [*API_BODY_FORMATS, None]},
            "functionType": {"enum": [*FUNCTION_TYPES, None]},
            "containerImage": {"type": ["string", "null"]},
            "helmChart": {"type": ["string", "null"]},
            "helmChartServiceName": {"type": ["string", "null"]},
            "tags": _TAGS,
            "secrets": {"type": ["array", "null"], "items": _SECRET},
            **_TYPED_FIELDS,
        },
        "anyOf": something_to_run,
        **with_helm,
    }


_STATUS = {"enum": [s.value for s in FunctionStatus]}
_ID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}

FUNCTION_SCHEMAS: dict[str, Any] = {
    "CreateFunctionRequest": _definition(version=False),
    "CreateFunctionVersionRequest": _definition(version=True),
    "Instance": _exact(
        {
            "instanceId": {"type": "string"},
            "instanceType": ANY,
            "instanceStatus": {"const": "ACTIVE"},
            "gpu": ANY,
            "backend": ANY,
            "location": {"type": "string"},
            "functionId": _ID,
            "functionVersionId": _ID,
            "ncaId": {"type": "string"},
            "instanceCreatedAt": _TIME,
            "instanceUpdatedAt": _TIME,
        }
    ),
    "Function": {
        "type": "object",
        "description": "A FunctionDTO: one version of a function",
        "required": [
            "id",
            "versionId",
            "name",
            "ncaId",
            "status",
            "createdAt",
            "functionType",
            "healthUri",
            "apiBodyFormat",
            "health",
        ],
        "properties": {
            "id": _ID,
            "versionId": _ID,
            "name": {"type": "string"},
            "ncaId": {"type": "string"},
            "status": _STATUS,
            "createdAt": _TIME,
            "functionType": {"enum": list(FUNCTION_TYPES)},
            "healthUri": {"type": "string"},
            "inferenceUrl": {"type": "string"},
            "inferencePort": {"type": "integer", "minimum": 1, "maximum": 65535},
            "apiBodyFormat": {"enum": list(API_BODY_FORMATS)},
            "health": {"type": "object"},
            "containerImage": {"type": "string"},
            "helmChart": {"type": "string"},
            "helmChartServiceName": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "secrets": {
                "type": "array",
                "description": "Names only: values are never returned",
                "items": {"type": "string"},
            },
            **{key: ANY for key in _TYPED_FIELDS},  # as stored
            "activeInstances": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Instance"},
            },
            "ownedByDifferentAccount": {"const": True},
        },
        "additionalProperties": False,
    },
    "FunctionResponse": _exact({"function": {"$ref": "#/components/schemas/Function"}}),
    "FunctionsResponse": _exact(
        {"functions": {"type": "array", "items": {"$ref": "#/components/schemas/Function"}}}
    ),
    "FunctionIdsResponse": _exact({"functionIds": {"type": "array", "items": _ID}}),
    "UpdateFunctionSecretsRequest": {
        "type": "object",
        "required": ["secrets"],
        "properties": {
            "secrets": {
                "type": "array",
                "minItems": 1,
                "items": _SECRET,
                "description": "No name twice with different values (400)",
            }
        },
    },
    "UpdateMetadataRequest": {
        "type": "object",
        "properties": {
            "tags": _TAGS,
            "rateLimit": RATE_LIMIT,
            "modelUpdates": {
                "type": ["array", "null"],
                "maxItems": 0,
                "description": "For LLM functions, which the emulator has none of: model "
                "updates are a 400, as NVCF answers them for any other function",
            },
            "llmInvocationConfig": {
                "type": "null",
                "description": "For LLM functions: anything but null is a 400",
            },
        },
        "anyOf": [
            {"required": ["tags"], "properties": {"tags": {"type": "array"}}},
            {"required": ["rateLimit"], "properties": {"rateLimit": {"type": "object"}}},
        ],
        "description": "Replaces the version's tags and/or rate limit (a member left out or "
        "null is kept; one of them is required)",
    },
    "DeploymentSpecification": {
        "type": "object",
        "required": ["gpu", "instanceType", "minInstances", "maxInstances"],
        "properties": {
            "gpuSpecificationId": {
                **_ID,
                "readOnly": True,
                "description": "Assigned by the emulator (one given is not taken)",
            },
            "gpu": {"type": "string", "pattern": NOT_BLANK},
            "instanceType": {"type": "string", "pattern": NOT_BLANK},
            "backend": {"type": "string"},
            "minInstances": {"type": "integer", "minimum": 0},
            "maxInstances": {"type": "integer", "minimum": 1},
        },
        "description": "minInstances must not exceed maxInstances (400 otherwise)",
    },
    "DeploymentRequest": {
        "type": "object",
        "required": ["deploymentSpecifications"],
        "properties": {
            "deploymentSpecifications": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/DeploymentSpecification"},
            }
        },
    },
    "Deployment": {
        "type": "object",
        "required": [
            "functionId",
            "functionVersionId",
            "functionName",
            "ncaId",
            "functionStatus",
            "deploymentSpecifications",
            "createdAt",
            "lastUpdatedAt",
        ],
        "properties": {
            "functionId": _ID,
            "functionVersionId": _ID,
            "deploymentId": _ID,
            "functionName": {"type": "string"},
            "ncaId": {"type": "string"},
            "functionStatus": _STATUS,
            "deploymentSpecifications": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/DeploymentSpecification"},
            },
            "createdAt": _TIME,
            "lastUpdatedAt": _TIME,
            "healthInfo": {
                "type": "array",
                "items": _exact({"error": {"type": "string"}}),
            },
        },
        "additionalProperties": False,
    },
    "DeploymentResponse": _exact({"deployment": {"$ref": "#/components/schemas/Deployment"}}),
    "UpdateGpuSpecificationRequest": {
        "type": "object",
        "properties": {
            "maxInstances": {"type": ["integer", "null"], "minimum": 1},
            "minInstances": {"type": ["integer", "null"], "minimum": 0},
            "autoscalingConfiguration": {"type": ["object", "null"]},
            "autoscalingConfigurationPolicy": {
                "enum": ["CUSTOM_CONFIGURATION", "PLATFORM_CONFIGURATION", None]
            },
        },
        # At least one member that is not null (MESG_EMPTY_UPDATE_REQUEST otherwise).
        "anyOf": [
            {"required": [key], "properties": {key: {"not": {"type": "null"}}}}
            for key in GPU_SPEC_UPDATES
        ],
        "description": "At least one member that is not null; minInstances must not exceed "
        "maxInstances once applied (400 otherwise)",
    },
    "UpdateGpuSpecificationResponse": _exact(
        {"gpuSpecification": {"$ref": "#/components/schemas/DeploymentSpecification"}}
    ),
    "QueuePosition": _exact(
        {
            "functionId": _ID,
            "functionVersionId": _ID,
            "positionInQueue": {"type": "integer", "minimum": 0, "maximum": 1000},
        }
    ),
    "Queues": _exact(
        {
            "functionId": {"type": "string"},
            "queues": {
                "type": "array",
                "items": _exact(
                    {
                        "functionName": {"type": "string"},
                        "functionStatus": _STATUS,
                        "functionVersionId": _ID,
                        "queueDepth": {"type": "integer", "minimum": 0},
                    }
                ),
            },
        }
    ),
    "InvocationRecord": _exact(
        {
            "requestId": _ID,
            "functionId": _ID,
            "functionVersionId": _ID,
            "functionName": {"type": "string"},
            "ncaId": {"type": "string"},
            "status": {"enum": [s.value for s in InvocationStatus]},
            "createdAt": _TIME,
            "assetIds": {"type": "array", "items": {"type": "string"}},
            "pollSeconds": {"type": "integer", "minimum": 1},
            "streaming": {"type": "boolean"},
            "requestBytes": {"type": "integer", "minimum": 0},
            "containerHeaders": {"type": "object", "additionalProperties": {"type": "string"}},
            "containerCalls": {"type": "integer", "minimum": 0},
            "stagedFiles": {"type": "array", "items": {"type": "string"}},
            "outputFiles": {"type": "array", "items": {"type": "string"}},
            "progress": {"type": "array", "items": {"type": "number"}},
            "responseStatus": {"type": ["integer", "null"]},
            "delivered": {"type": "array", "items": {"type": "integer"}},
            "error": {"type": ["string", "null"]},
            "durationSeconds": {"type": ["number", "null"], "minimum": 0},
        }
    ),
    "Invocations": _exact(
        {
            "invocations": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/InvocationRecord"},
            }
        }
    ),
}

_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


def _path(name: str, description: str | None = None, *, uuid: bool = False) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "path", "required": True}
    param["schema"] = {"type": "string", "format": "uuid"} if uuid else {"type": "string"}
    if description:
        param["description"] = description
    return param


_UUID_TEXT = "A UUID, in any case (anything else is 400)"
FUNCTION_ID = _path("functionId", _UUID_TEXT, uuid=True)
VERSION_ID = _path("versionId", _UUID_TEXT, uuid=True)
REQUEST_ID = _path("requestId", _UUID_TEXT, uuid=True)
DEPLOYMENT_ID = _path("deploymentId", _UUID_TEXT, uuid=True)
GPU_SPEC_ID = _path("gpuSpecId", _UUID_TEXT, uuid=True)


def _json_body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _function_op(
    op_id: str,
    schema: str,
    *codes: int,
    body: str | None = None,
    status: str = "200",
    summary: str = "",
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "No content"} if status == "204" else _ok(schema)
    spec: dict[str, Any] = {
        "operationId": op_id,
        "tags": ["functions"],
        "summary": summary,
        "security": _SECURED,
        "responses": {status: ok, **_errors(400, 401, 406, 431, *codes)},
    }
    if body is not None:
        spec["requestBody"] = _json_body(body)
        spec["responses"].update(_errors(400, 413, 415))
    return spec


_VISIBILITY_QUERY: dict[str, Any] = {
    "name": "visibility",
    "in": "query",
    "required": False,
    "style": "form",
    "explode": True,
    "description": "Repeated, or comma-joined, in any case; all three when absent",
    "schema": {
        "type": "array",
        "items": {"type": "string", "pattern": VISIBILITY_PATTERN},
    },
}


#: A boolean query value as Spring reads it: these words in any case, or empty (the default).
_BOOLEAN_PATTERN = (
    r"^\s*(?:"
    + "|".join(
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)
        for word in ("true", "false", "on", "off", "yes", "no", "1", "0")
    )
    + r")?\s*$"
)
_INCLUDE_SECRETS_QUERY: dict[str, Any] = {
    "name": "includeSecrets",
    "in": "query",
    "required": False,
    "description": "false: the version's secret names are left out (default true)",
    "schema": {"type": "string", "pattern": _BOOLEAN_PATTERN},
}


def function_paths() -> dict[str, Any]:
    versions = "/v2/nvcf/functions/{functionId}/versions"
    version = versions + "/{versionId}"
    deployment = "/v2/nvcf/deployments/functions/{functionId}/versions/{versionId}"
    return {
        "/v2/nvcf/functions": {
            "post": _function_op(
                "createFunction",
                "FunctionResponse",
                body="CreateFunctionRequest",
                summary="A new function, with one INACTIVE version",
            ),
            "get": {
                **_function_op(
                    "listFunctions",
                    "FunctionsResponse",
                    400,
                    summary="One entry per version the account owns or may see",
                ),
                "parameters": [_VISIBILITY_QUERY],
            },
        },
        "/v2/nvcf/functions/ids": {
            "get": {
                **_function_op(
                    "listFunctionIds",
                    "FunctionIdsResponse",
                    400,
                    summary="The ids of listFunctions, with the same visibility filter",
                ),
                "parameters": [_VISIBILITY_QUERY],
            },
        },
        versions: {
            "parameters": [FUNCTION_ID],
            "post": _function_op(
                "createFunctionVersion",
                "FunctionResponse",
                404,
                body="CreateFunctionVersionRequest",
                summary="A new version of a function: same id, new version id",
            ),
            "get": _function_op("listFunctionVersions", "FunctionsResponse", 404),
        },
        version: {
            "parameters": [FUNCTION_ID, VERSION_ID],
            "get": {
                **_function_op("getFunctionVersion", "FunctionResponse", 404),
                "parameters": [_INCLUDE_SECRETS_QUERY],
            },
            "delete": _function_op("deleteFunctionVersion", "", 404, status="204"),
            "put": _function_op(
                "updateFunction",
                "FunctionResponse",
                404,
                body="UpdateMetadataRequest",
                summary="Replace tags and/or rate limit (what the metadata PUT does)",
            ),
        },
        "/v2/nvcf/metadata/functions/{functionId}/versions/{versionId}": {
            "parameters": [FUNCTION_ID, VERSION_ID],
            "put": _function_op(
                "updateFunctionMetadata",
                "FunctionResponse",
                404,
                body="UpdateMetadataRequest",
            ),
        },
        deployment: {
            "parameters": [FUNCTION_ID, VERSION_ID],
            "post": _function_op(
                "deployFunction",
                "DeploymentResponse",
                404,
                body="DeploymentRequest",
                summary="Deploy an INACTIVE version (400 when it is already deployed)",
            ),
            "get": _function_op("getDeployment", "DeploymentResponse", 404),
            "put": _function_op(
                "updateDeployment",
                "DeploymentResponse",
                404,
                body="DeploymentRequest",
                summary="Change a deployment (400 when it would change a gpu or backend, or "
                "the number of specifications)",
            ),
            "delete": _function_op(
                "undeployFunction",
                "FunctionResponse",
                404,
                summary="Undeploy: the version is INACTIVE again",
            ),
        },
        "/v2/nvcf/secrets/functions/{functionId}/versions/{versionId}": {
            "parameters": [FUNCTION_ID, VERSION_ID],
            "put": _function_op(
                "updateFunctionSecrets",
                "",
                404,
                body="UpdateFunctionSecretsRequest",
                status="204",
                summary="Merge secrets into a version's (a name given again takes its new "
                "value); a version with none takes them only while INACTIVE (else 400)",
            ),
        },
        "/v2/nvcf/deployments/{deploymentId}": {
            "parameters": [DEPLOYMENT_ID],
            "get": _function_op("getDeploymentById", "DeploymentResponse", 404),
        },
        "/v2/nvcf/deployments/{deploymentId}/gpu-specifications/{gpuSpecId}": {
            "parameters": [DEPLOYMENT_ID, GPU_SPEC_ID],
            "patch": _function_op(
                "updateGpuSpecification",
                "UpdateGpuSpecificationResponse",
                403,
                404,
                body="UpdateGpuSpecificationRequest",
                summary="Change one GPU specification of a deployed version (400 when the "
                "version is not deployed, 403 for another account's deployment)",
            ),
        },
    }


def _poll(config: EmulatorConfig) -> dict[str, Any]:
    return {
        "name": POLL_HEADER,
        "in": "header",
        "required": False,
        "description": "Seconds this call may wait for the result before answering 202: 0 to "
        f"{config.max_poll_seconds} (max_poll_seconds; 0 counts as 1). Default "
        f"{config.poll_seconds}, or {config.sse_poll_seconds} when Accept is "
        "text/event-stream (streaming).",
        "schema": {"type": "string", "pattern": poll_seconds_pattern(config.max_poll_seconds)},
    }


_ASSETS = {
    "name": ASSETS_HEADER,
    "in": "header",
    "required": False,
    "description": "Comma-separated asset ids (UUIDs: hyphenated, simple, braced or urn:uuid:), "
    "trimmed, empty items skipped. Each must be an uploaded asset of the caller's account (404).",
    "schema": {"type": "string", "pattern": ASSET_REFERENCES_PATTERN},
}
_REQID = {"description": "The request id", "schema": {"type": "string", "format": "uuid"}}


def _nvcf_headers(status: str, *, required: bool = True) -> dict[str, Any]:
    return {
        "NVCF-REQID": {**_REQID, "required": required},
        "NVCF-STATUS": {"required": required, "schema": {"const": status}},
    }


_INVOCATION_RESPONSES: dict[str, Any] = {
    "200": {
        "description": "The container's answer, passed through (fulfilled)",
        "headers": _nvcf_headers("fulfilled"),
        "content": {"*/*": {"schema": ANY}},
    },
    "2XX": {
        "description": "Another 2xx answer of the container, passed through",
        "headers": _nvcf_headers("fulfilled"),
        "content": {"*/*": {"schema": ANY}},
    },
    "202": {
        "description": "Not done within the poll window: poll GET /v2/nvcf/pexec/status/{"
        "requestId}. The body is empty, or the progress file's partialResponse (JSON).",
        "headers": {
            **_nvcf_headers("in-progress"),
            "NVCF-PERCENT-COMPLETE": {"required": False, "schema": {"type": "string"}},
        },
        "content": {JSON: {"schema": ANY}},
    },
    "302": {
        "description": "A large result (or output files): Location is the result zip",
        "headers": {
            **_nvcf_headers("fulfilled"),
            "Location": {"required": True, "schema": {"type": "string"}},
        },
    },
    "3XX": {
        "description": "Another 3xx answer of the container, passed through",
        "headers": _nvcf_headers("fulfilled"),
        "content": {"*/*": {"schema": ANY}},
    },
    "400": {
        "description": "A path id that is not a UUID ('Invalid URL: ...') or a bad "
        "NVCF-INPUT-ASSET-REFERENCES (text/plain), a bad NVCF-POLL-SECONDS or a DEGRADED "
        "function (problem JSON), or the container's 400",
        "content": {
            TEXT: {"schema": {"type": "string"}},
            PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}},
        },
    },
    "401": {
        "description": "No Authorization header (text/plain), or an invalid key (problem JSON)",
        "content": {
            TEXT: {"schema": {"type": "string"}},
            PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}},
        },
    },
    "404": _problem("Unknown or not invocable function, asset or request"),
    "413": _problem("Body larger than max_request_bytes (5242880 by default)"),
    "429": _problem("Over the function's rateLimit (or an injected fault)"),
    "431": _problem("Headers too large"),
    "4XX": {
        **_problem("The container's error, as problem JSON (errored)"),
        "headers": _nvcf_headers("errored", required=False),
    },
    "5XX": {
        **_problem("The container failed or timed out (errored)"),
        "headers": _nvcf_headers("errored", required=False),
    },
}

_PREFLIGHT = {
    "operationId": "",
    "tags": ["invocation"],
    "summary": "CORS preflight, as the invocation service's CORS layer (tower-http, very "
    "permissive) answers any OPTIONS: the Origin, method and headers asked for are mirrored",
    "responses": {
        "200": {
            "description": "Allowed",
            "headers": {
                "Access-Control-Allow-Credentials": {"required": True, "schema": {"const": "true"}},
                "Access-Control-Max-Age": {"required": True, "schema": {"const": "86400"}},
                "Allow": {"required": True, "schema": {"type": "string"}},
                "Vary": {"required": True, "schema": {"type": "string"}},
            },
        }
    },
}


def _preflight(op_id: str, *names: str) -> dict[str, Any]:
    """The preflight of a route: answered before the path is parsed, so any id will do."""
    return {**_PREFLIGHT, "operationId": op_id, "parameters": [_path(n) for n in names]}


def _invoke(op_id: str, summary: str, config: EmulatorConfig) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "tags": ["invocation"],
        "summary": summary,
        "description": "The body is passed to the container's inferenceUrl unchanged: any bytes, "
        f"at most max_request_bytes ({config.max_request_bytes}), JSON or not. Accept: "
        "text/event-stream asks for streaming (server-sent events passed through as they come).",
        "security": _SECURED,
        "parameters": [_poll(config), _ASSETS],
        "requestBody": {
            "required": False,
            "content": {JSON: {"schema": ANY}, "application/octet-stream": {"schema": ANY}},
        },
        "responses": _INVOCATION_RESPONSES,
    }


def invocation_paths(config: EmulatorConfig) -> dict[str, Any]:
    status_responses = {k: v for k, v in _INVOCATION_RESPONSES.items() if k not in ("413",)}
    return {
        "/v2/nvcf/pexec/functions/{functionId}": {
            "parameters": [FUNCTION_ID],
            "post": _invoke(
                "invokeFunction", "Invoke an ACTIVE (or DEGRADING) version of a function", config
            ),
            "options": _preflight("invokeFunctionPreflight", "functionId"),
        },
        "/v2/nvcf/pexec/functions/{functionId}/versions/{versionId}": {
            "parameters": [FUNCTION_ID, VERSION_ID],
            "post": _invoke("invokeFunctionVersion", "Invoke one version of a function", config),
            "options": _preflight("invokeFunctionVersionPreflight", "functionId", "versionId"),
        },
        "/v2/nvcf/pexec/status/{requestId}": {
            "parameters": [REQUEST_ID],
            "get": {
                "operationId": "getInvocationStatus",
                "tags": ["invocation"],
                "summary": "Poll a request answered with 202: the same answers as the "
                "invocation; once a final answer is delivered the request is gone (404)",
                "security": _SECURED,
                "parameters": [_poll(config)],
                "responses": status_responses,
            },
            "options": _preflight("getInvocationStatusPreflight", "requestId"),
        },
        "/v2/nvcf/queues/{requestId}/position": {
            "parameters": [REQUEST_ID],
            "get": {
                "operationId": "getQueuePosition",
                "tags": ["invocation"],
                "security": _SECURED,
                "responses": {"200": _ok("QueuePosition"), **_errors(400, 401, 404, 406, 431)},
            },
        },
        "/v2/nvcf/queues/functions/{functionId}": {
            "parameters": [FUNCTION_ID],
            "get": {
                "operationId": "getQueues",
                "tags": ["invocation"],
                "security": _SECURED,
                "responses": {"200": _ok("Queues"), **_errors(400, 401, 404, 406, 431)},
            },
        },
        "/v2/nvcf/queues/functions/{functionId}/versions/{versionId}": {
            "parameters": [FUNCTION_ID, VERSION_ID],
            "get": {
                "operationId": "getVersionQueues",
                "tags": ["invocation"],
                "security": _SECURED,
                "responses": {"200": _ok("Queues"), **_errors(400, 401, 404, 406, 431)},
            },
        },
        RESULTS_PREFIX + "/{token}/{name}": {
            "parameters": [_path("token"), _path("name", "<requestId>.zip")],
            "get": {
                "operationId": "downloadResult",
                "tags": ["invocation"],
                "summary": "A large result's zip (the URL of a 302); the token is the "
                "credential, Authorization is not needed",
                "responses": {
                    "200": {
                        "description": "The zip: <requestId>.response and the output files",
                        "content": {"application/zip": {"schema": {"type": "string"}}},
                    },
                    # NVCF's link is a pre-signed S3 GET: its errors are S3's XML documents.
                    "403": {
                        "description": "The link expired (S3's AccessDenied, Request has expired)",
                        "content": {"application/xml": {"schema": {"type": "string"}}},
                    },
                    "404": {
                        "description": "No such result (S3's NoSuchKey)",
                        "content": {"application/xml": {"schema": {"type": "string"}}},
                    },
                    **_errors(431),
                },
            },
        },
        "/_emulator/invocations": {
            "get": {
                "operationId": "listInvocations",
                "tags": ["admin"],
                "summary": "Every invocation since the last reset, oldest first",
                "responses": {"200": _ok("Invocations"), **_errors(401, 404, 431)},
            }
        },
    }


def _party(client_id: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["ncaId"],
        "properties": {
            "ncaId": {
                "type": "string",
                "pattern": NOT_BLANK,
                "not": {"const": "*"},
                "description": "An account the emulator knows (any, when it takes any key); "
                "not the owner's, and not * (only NVIDIA makes a function public)",
            },
            "clientId": {
                **client_id,
                "description": "Not to be given (NVCF: should not be specified anymore); the "
                "emulator has no OAuth clients",
            },
        },
    }


#: A create body's party: no clientId at all (an empty one is "only whitespace", a 400).
_PARTY = _party({"type": "null"})
#: A PATCH body's party: a blank clientId is as none.
_PATCH_PARTY = _party({"type": ["string", "null"], "pattern": r"^\s*$"})
_PARTIES_DTO: dict[str, Any] = {
    "type": "object",
    "required": ["id", "ncaId"],
    "properties": {
        "id": _ID,
        "ncaId": {"type": "string"},
        "versionId": _ID,
        "authorizedParties": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["ncaId"],
                "properties": {"ncaId": {"type": "string"}},
            },
        },
    },
    "additionalProperties": False,
}
FUNCTION_SCHEMAS.update(
    {
        "AuthorizedPartiesRequest": {
            "type": "object",
            "required": ["authorizedParties"],
            "properties": {
                "authorizedParties": {"type": "array", "minItems": 1, "items": _PARTY},
            },
            "description": "No account twice (400)",
        },
        "PatchAuthorizedPartyRequest": {
            "type": "object",
            "required": ["authorizedParty"],
            "properties": {"authorizedParty": _PATCH_PARTY},
        },
        "AuthorizedPartiesResponse": _exact({"function": _PARTIES_DTO}),
        "ListAuthorizedPartiesResponse": _exact(
            {"functions": {"type": "array", "items": _PARTIES_DTO}}
        ),
    }
)


def _authorization_op(op_id: str, *codes: int, body: str | None = None, **kw: Any) -> Any:
    return _function_op(op_id, "AuthorizedPartiesResponse", 404, *codes, body=body, **kw)


def authorization_paths() -> dict[str, Any]:
    """``/v2/nvcf/authorizations/functions/{fid}[/versions/{vid}]``: who else may invoke."""
    out: dict[str, Any] = {}
    for level, params, suffix in (
        ("Function", [FUNCTION_ID], ""),
        ("Version", [FUNCTION_ID, VERSION_ID], "/versions/{versionId}"),
    ):
        base = f"/v2/nvcf/authorizations/functions/{{functionId}}{suffix}"
        listing = (
            _function_op(f"list{level}Authorizations", "ListAuthorizedPartiesResponse", 404)
            if level == "Function"
            else _authorization_op(f"get{level}Authorizations")
        )
        out[base] = {
            "parameters": params,
            "post": _authorization_op(
                f"authorize{level}",
                body="AuthorizedPartiesRequest",
                summary=f"Replace the {level.lower()}-level authorized accounts",
            ),
            "get": listing,
            "delete": _authorization_op(
                f"clear{level}Authorizations",
                summary=f"Forget the {level.lower()}-level authorized accounts",
            ),
        }
        for verb, code in (("add", 409), ("remove", 404)):
            out[f"{base}/{verb}"] = {
                "parameters": params,
                "patch": _authorization_op(
                    f"{verb}{level}Authorization",
                    code,
                    body="PatchAuthorizedPartyRequest",
                    summary=f"{verb.capitalize()} one account at the {level.lower()} level "
                    "(404 when it has none yet)",
                ),
            }
    return out


def paths(config: EmulatorConfig) -> dict[str, Any]:
    return {**function_paths(), **authorization_paths(), **invocation_paths(config)}


SCHEMAS.update(FUNCTION_SCHEMAS)
EXTRA_PATHS.append(paths)
