"""The OpenAPI 3.1 document of the emulated NVCF API and the admin API
(``GET /_emulator/openapi.json``). Fuzzing (schemathesis) and the dashboard read it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import __version__
from ..config import EmulatorConfig
from ..domain.assets import (
    CONTENT_TYPE_PATTERN,
)
from ..domain.faults import OPERATIONS
from ..domain.functions import FunctionStatus
from ..domain.invocations import InvocationStatus
from .admin import PREVIEW_CHARS, STATE_ASSETS, STATE_INVOCATIONS

JSON = "application/json"
HTML = "text/html"
PROBLEM = "application/problem+json"


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _ok(schema: str, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid request",
        401: "Missing or invalid API key",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        409: "Conflict",
        406: "Accept admits no application/json",
        413: "Body too large",
        415: "Content-Type is not application/json",
        431: "Headers too large",
    }
    return {str(c): _problem(text[c]) for c in codes}


def _exact(properties: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly these members, all of them present."""
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


ASSET_ID = {
    "name": "assetId",
    "in": "path",
    "required": True,
    "description": "A UUID, in any case (anything else is 400)",
    "schema": {"type": "string", "format": "uuid"},
}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "requestId": {"type": "string"},
        },
    },
    "CreateAssetRequest": {
        "type": "object",
        "required": ["contentType", "description"],
        "properties": {
            "contentType": {
                "type": "string",
                "pattern": CONTENT_TYPE_PATTERN,
                "not": {"pattern": "\\n"},
            },
            "description": {"type": "string"},
        },
    },
    "CreateAssetResponse": {
        "type": "object",
        "required": ["assetId", "uploadUrl", "contentType", "description"],
        "properties": {
            "assetId": {"type": "string", "format": "uuid"},
            "uploadUrl": {"type": "string"},
            "contentType": {"type": "string"},
            "description": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "AssetSummary": {
        "type": "object",
        "required": ["assetId", "contentType", "description"],
        "properties": {
            "assetId": {"type": "string", "format": "uuid"},
            "contentType": {"type": "string"},
            "description": {"type": "string"},
        },
    },
    "ListAssetsResponse": {
        "type": "object",
        "required": ["assets"],
        "properties": {
            "assets": {
                "type": "array",
                "maxItems": 1000,
                "items": {"$ref": "#/components/schemas/AssetSummary"},
            }
        },
    },
    "AssetResponse": {
        "type": "object",
        "required": ["asset"],
        "properties": {
            "asset": {
                "allOf": [
                    {"$ref": "#/components/schemas/AssetSummary"},
                    {
                        "type": "object",
                        "required": ["createdAt"],
                        "properties": {"createdAt": {"type": "string", "format": "date-time"}},
                    },
                ]
            }
        },
    },
    "Clock": {
        "type": "object",
        "required": ["now", "epoch", "offsetSeconds"],
        "properties": {
            "now": {"type": "string"},
            "epoch": {"type": "number"},
            "offsetSeconds": {"type": "number"},
        },
    },
    "ClockChange": {
        "oneOf": [
            {
                "type": "object",
                "required": ["advance"],
                "properties": {"advance": {"type": "number"}},
                "not": {"required": ["set"]},
            },
            {
                "type": "object",
                "required": ["set"],
                "properties": {"set": {"type": "string", "format": "date-time"}},
                "not": {"required": ["advance"]},
            },
        ]
    },
    "StateAsset": _exact(
        {
            "assetId": {"type": "string"},
            "ncaId": {"type": "string"},
            "contentType": {"type": "string"},
            "description": {"type": "string"},
            "createdAt": {"type": "string", "format": "date-time"},
            "uploaded": {"type": "boolean"},
            "uploadedAt": {"type": ["string", "null"], "format": "date-time"},
            "size": {"type": ["integer", "null"], "minimum": 0},
            "ageSeconds": {"type": "number", "minimum": 0},
            "expiresAt": {"type": "string", "format": "date-time"},
            "secondsLeft": {"type": "number", "minimum": 0},
        }
    ),
    "StateVersion": _exact(
        {
            "versionId": {"type": "string"},
            "name": {"type": "string"},
            "status": {"enum": [s.value for s in FunctionStatus]},
            "createdAt": {"type": "string", "format": "date-time"},
            "inferenceUrl": {"type": "string"},
            "inferencePort": {"type": "integer"},
            "containerImage": {"type": ["string", "null"]},
            "secretsFile": {
                "type": ["string", "null"],
                "description": "The secrets.json its container reads (null: it has no secrets)",
            },
        }
    ),
    "StateFunction": _exact(
        {
            "functionId": {"type": "string"},
            "name": {"type": "string"},
            "ncaId": {"type": "string"},
            "versions": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/StateVersion"},
            },
        }
    ),
    "StateInvocation": _exact(
        {
            "requestId": {"type": "string"},
            "functionId": {"type": "string"},
            "functionVersionId": {"type": "string"},
            "functionName": {"type": "string"},
            "ncaId": {"type": "string"},
            "status": {"enum": [s.value for s in InvocationStatus]},
            "createdAt": {"type": "string", "format": "date-time"},
            "startedAt": {"type": ["string", "null"], "format": "date-time"},
            "finishedAt": {"type": ["string", "null"], "format": "date-time"},
            "durationSeconds": {"type": ["number", "null"], "minimum": 0},
            "assetIds": {"type": "array", "items": {"type": "string"}},
            "stagedFiles": {"type": "array", "items": {"type": "string"}},
            "containerHeaders": {
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
            "responseStatus": {"type": ["integer", "null"]},
            "responseBytes": {"type": ["integer", "null"], "minimum": 0},
            "responsePreview": {
                "type": ["string", "null"],
                "maxLength": PREVIEW_CHARS + 1,
                "description": f"The container's answer, decoded as UTF-8, cut after "
                f"{PREVIEW_CHARS} characters (then ending with '…')",
            },
            "delivered": {"type": "array", "items": {"type": "integer"}},
            "error": {"type": ["string", "null"], "maxLength": PREVIEW_CHARS + 1},
        }
    ),
    "State": _exact(
        {
            "clock": {"$ref": "#/components/schemas/Clock"},
            "assetTtlSeconds": {"type": "number"},
            "assetCount": {"type": "integer", "minimum": 0},
            "assets": {
                "type": "array",
                "maxItems": STATE_ASSETS,
                "description": f"The newest {STATE_ASSETS} assets, oldest first",
                "items": {"$ref": "#/components/schemas/StateAsset"},
            },
            "functions": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/StateFunction"},
            },
            "invocationCount": {"type": "integer", "minimum": 0},
            "invocations": {
                "type": "array",
                "maxItems": STATE_INVOCATIONS,
                "description": f"The last {STATE_INVOCATIONS} invocations, newest first",
                "items": {"$ref": "#/components/schemas/StateInvocation"},
            },
        }
    ),
    "Seed": {
        "type": "object",
        "required": ["seed"],
        "properties": {"seed": {"type": ["integer", "null"]}},
    },
    "Object": {"type": "object"},
    "Fault": {
        "type": "object",
        "required": ["operation"],
        "additionalProperties": False,
        "properties": {
            "operation": {"enum": list(OPERATIONS)},
            "status": {"type": ["integer", "null"], "minimum": 400, "maximum": 599},
            "latency": {"type": "number", "minimum": 0, "maximum": 600},
            "drop": {"type": "boolean"},
            "times": {"type": ["integer", "null"], "minimum": 1},
            "probability": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "seed": {"type": ["integer", "null"]},
            "message": {"type": ["string", "null"]},
            "retry_after": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "Seconds for a Retry-After header on the status answer (needs "
                "status; NVCF's own 429s send none)",
            },
        },
        "anyOf": [
            {"required": ["status"], "properties": {"status": {"type": "integer"}}},
            {"required": ["drop"], "properties": {"drop": {"const": True}}},
            {"required": ["latency"], "properties": {"latency": {"exclusiveMinimum": 0}}},
        ],
        "not": {
            "required": ["drop", "status"],
            "properties": {"drop": {"const": True}, "status": {"type": "integer"}},
        },
    },
}


def _asset_paths() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "/v2/nvcf/assets": {
            "post": {
                "operationId": "createAsset",
                "tags": ["assets"],
                "security": secured,
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": {"$ref": "#/components/schemas/CreateAssetRequest"}}
                    },
                },
                "responses": {
                    "200": _ok("CreateAssetResponse"),
                    **_errors(400, 401, 406, 413, 415, 431),
                },
            },
            "get": {
                "operationId": "listAssets",
                "tags": ["assets"],
                "security": secured,
                "responses": {"200": _ok("ListAssetsResponse"), **_errors(401, 406, 431)},
            },
        },
        "/v2/nvcf/assets/{assetId}": {
            "parameters": [ASSET_ID],
            "get": {
                "operationId": "getAsset",
                "tags": ["assets"],
                "security": secured,
                "responses": {"200": _ok("AssetResponse"), **_errors(400, 401, 404, 406, 431)},
            },
            "delete": {
                "operationId": "deleteAsset",
                "tags": ["assets"],
                "security": secured,
                "responses": {
                    "204": {"description": "Deleted"},
                    **_errors(400, 401, 404, 406, 431),
                },
            },
        },
    }


def _admin_paths() -> dict[str, Any]:
    def op(op_id: str, schema: str = "Object", body: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "operationId": op_id,
            "tags": ["admin"],
            # 403: a cross-site browser request that would change the emulator (CSRF).
            "responses": {"200": _ok(schema), **_errors(400, 401, 403, 404, 413, 415, 431)},
        }
        if body:
            spec["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{body}"}}},
            }
        return spec

    def page(op_id: str) -> dict[str, Any]:
        return {
            "operationId": op_id,
            "tags": ["admin"],
            "summary": "The dashboard: an HTML page that shows the state and polls it",
            "description": "Served without the admin token (the page holds no data until its "
            "script reads /_emulator/state with the token given as ?token= or typed in).",
            "responses": {
                "200": {
                    "description": "The page",
                    "content": {HTML: {"schema": {"type": "string"}}},
                },
                **_errors(404, 405, 431),
            },
        }

    return {
        "/_emulator/health": {
            "get": {
                **op("health"),
                "description": "Served without the admin token (for healthchecks).",
            }
        },
        "/_emulator/reset": {"post": op("reset")},
        "/_emulator/state": {"get": op("state", "State")},
        "/_emulator/": {"get": page("dashboard")},
        "/_emulator/ui": {"get": page("dashboardUi")},
        "/_emulator/clock": {
            "get": op("getClock", "Clock"),
            "post": op("setClock", "Clock", "ClockChange"),
        },
        "/_emulator/requests": {"get": op("listRequests")},
        "/_emulator/faults": {
            "get": op("listFaults"),
            "post": op("addFault", body="Fault"),
            "delete": op("clearFaults"),
        },
        "/_emulator/seed": {"post": op("seedIds", body="Seed")},
        "/_emulator/openapi.json": {"get": op("openapi")},
    }


#: Extra paths other route modules contribute (functions, pexec, ...): name → builder.
EXTRA_PATHS: list[Callable[[EmulatorConfig], dict[str, Any]]] = []


def document(config: EmulatorConfig | None = None) -> dict[str, Any]:
    """The OpenAPI document; limits it states (the poll window, the body size) are
    ``config``'s (a running emulator's), else the defaults."""
    from . import openapi_functions  # noqa: F401  (adds the function and invocation API)

    paths: dict[str, Any] = {**_asset_paths(), **_admin_paths()}
    for build in EXTRA_PATHS:
        paths.update(build(config or EmulatorConfig()))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nvcf-emulator",
            "version": __version__,
            "description": "The emulated NVIDIA Cloud Functions API, and the emulator's admin API "
            "under /_emulator/. Pre-signed upload URLs (S3, SigV4) are not described here: they "
            "are made by POST /v2/nvcf/assets. The function management paths (/v2/nvcf/functions, "
            "/v2/nvcf/metadata/..., /v2/nvcf/deployments/...) also answer under /v2/orgs/{org} "
            "and /v2/orgs/{org}/teams/{team} (as ngcsdk calls them); only the plain paths are "
            "listed. Pass-through invocation is not described either: any method, path and "
            "query on the host <functionId>.invocation.<this host> (or "
            "<versionId>.<functionId>.invocation.<this host>, or any host with function-id and "
            "function-version-id headers) reach the function's container as they are, and its "
            "answer comes back as it is; a slow one is a 202 polled at "
            "/v2/nvcf/pexec/status/{requestId}.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }


# -- the legacy envelope API (exec_api.py) ---------------------------------------------------------

SCHEMAS["ExecResponse"] = {
    "type": "object",
    "description": "NVCF's InvokeFunctionResponse; members that do not apply are absent",
    "required": ["reqId", "status"],
    "properties": {
        "reqId": {"type": "string", "format": "uuid"},
        "status": {"enum": ["fulfilled", "in-progress", "errored"]},
        "responseReference": {"type": "string"},
        "percentComplete": {"const": 100},
        "errorCode": {"type": "integer"},
        "response": {},
    },
    "additionalProperties": False,
}


def _exec_paths(config: EmulatorConfig) -> dict[str, Any]:
    """``/v2/nvcf/exec/...``: pexec wrapped in NVCF's envelope (exec_api.py)."""
    from .ids import RUST_UUID_PATTERN
    from .openapi_functions import FUNCTION_ID, REQUEST_ID, TEXT, VERSION_ID, _preflight

    request = {
        "type": "object",
        "description": "NVCF's InvokeFunctionRequest: requestBody (any JSON, null too) reaches "
        "the container as JSON, written again as serde_json writes it (keys sorted, compact). "
        "Other members are ignored; one of these twice is a 400.",
        "required": ["requestBody"],
        "properties": {
            "requestHeader": {
                "type": ["object", "null"],
                "properties": {
                    "inputAssetReferences": {
                        "type": ["array", "null"],
                        "description": "Asset ids, each a whole UUID (hyphenated, simple, "
                        "braced or urn:uuid:); each must be an uploaded asset of the caller "
                        "(404). Anything else is a 400 (NVCF: a 500).",
                        # The end as ECMA-262 (JSON Schema's dialect) and Python both read
                        # it: Python's $ lets a trailing newline through, \Z is not ECMA's.
                        "items": {
                            "type": "string",
                            "pattern": f"^(?:{RUST_UUID_PATTERN})(?![\\s\\S])",
                        },
                    },
                    "pollDurationSeconds": {
                        "type": ["integer", "null"],
                        "description": "Seconds the call may wait before answering 202: 0 to "
                        f"{config.max_poll_seconds} (0 counts as 1). Default "
                        f"{config.poll_seconds}.",
                        "minimum": 0,
                        "maximum": config.max_poll_seconds,
                    },
                },
            },
            "requestBody": {},
        },
    }
    envelope = {JSON: {"schema": {"$ref": "#/components/schemas/ExecResponse"}}}
    problem_json = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    text = {TEXT: {"schema": {"type": "string"}}}

    def answer(description: str, *kinds: dict[str, Any]) -> dict[str, Any]:
        content: dict[str, Any] = {}
        for kind in kinds:
            content.update(kind)
        return {"description": description, "content": content}

    responses = {
        "200": answer("fulfilled: response (the container's JSON) or responseReference", envelope),
        "202": answer("in-progress: poll GET /v2/nvcf/exec/status/{reqId}", envelope),
        "400": answer(
            "A path id that is not a UUID (text/plain), an envelope that is not one, a bad "
            "asset id or pollDurationSeconds (problem JSON), or the container's 400 (errored)",
            envelope,
            problem_json,
            text,
        ),
        "401": answer(
            "No Authorization header (text/plain), or an invalid key (problem JSON)",
            problem_json,
            text,
        ),
        "404": answer(
            "Unknown or not invocable function or asset (problem JSON), or the container's 404",
            envelope,
            problem_json,
        ),
        "413": _problem("requestBody, written again, is larger than max_request_bytes"),
        "431": _problem("Headers too large"),
        "2XX": answer("Another 2xx of the container: errored, with errorCode", envelope),
        "3XX": answer("Another 3xx of the container: errored, with errorCode", envelope),
        "4XX": answer("The container's error (errored, errorCode)", envelope, problem_json),
        "5XX": answer(
            "The container failed or timed out (errored, errorCode); a 200 that is not JSON "
            "(problem JSON: the result is lost, as in NVCF)",
            envelope,
            problem_json,
        ),
    }

    def invoke(op_id: str, summary: str) -> dict[str, Any]:
        return {
            "operationId": op_id,
            "tags": ["invocation"],
            "summary": summary,
            "description": "NVCF's legacy envelope API: pexec with a JSON envelope each way. "
            "Client headers (NVCF-POLL-SECONDS, NVCF-INPUT-ASSET-REFERENCES, Accept) are not "
            "read; the body is at most 2 MiB (axum's default limit: 400 past it).",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {JSON: {"schema": request}}},
            "responses": responses,
        }

    return {
        "/v2/nvcf/exec/functions/{functionId}": {
            "parameters": [FUNCTION_ID],
            "post": invoke("execFunction", "Invoke a function with NVCF's envelope"),
            "options": _preflight("execFunctionPreflight", "functionId"),
        },
        "/v2/nvcf/exec/functions/{functionId}/versions/{versionId}": {
            "parameters": [FUNCTION_ID, VERSION_ID],
            "post": invoke("execFunctionVersion", "Invoke one version with NVCF's envelope"),
            "options": _preflight("execFunctionVersionPreflight", "functionId", "versionId"),
        },
        "/v2/nvcf/exec/status/{requestId}": {
            "parameters": [REQUEST_ID],
            "get": {
                "operationId": "getExecStatus",
                "tags": ["invocation"],
                "summary": "Poll a request (exec's or pexec's) and get the envelope; an unknown "
                f"or delivered request is a 404 envelope (reqId the nil UUID). The window is "
                f"always the default {config.poll_seconds} s: NVCF reads no header here.",
                "security": [{"bearer": []}],
                "responses": {k: v for k, v in responses.items() if k != "413"},
            },
            "options": _preflight("getExecStatusPreflight", "requestId"),
        },
    }


EXTRA_PATHS.append(_exec_paths)
