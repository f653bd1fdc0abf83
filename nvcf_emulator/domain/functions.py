"""Functions and their versions, per account, with NVCF's statuses and invocation rules.

A version's container is resolved when it is deployed: the container given to
``Emulator.add_function``, or the one registered for its ``containerImage``. ``DEPLOYING`` turns
into ``ACTIVE`` lazily, once ``deploy_delay`` seconds have passed on the :class:`Clock` and the
container's health URI answers the expected status (``ERROR`` when no container is registered
for the image).

With a state store (``--state-dir``) every version record is saved on change and loaded at
start-up. Containers are Python objects and are not saved: a loaded version that was running is
*detached* -- reported as ``ERROR`` with a ``healthInfo`` reason, its saved status kept on disk --
until ``add_function``/``--function`` with the same name (same account) or ``register_image``
for its image attaches a container again; its ids stay the same.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..storage.state import NullStateStore, StateStore
from . import authorizations, ratelimits
from .accounts import Account
from .clock import Clock, isoformat
from .errors import BadRequest, Forbidden, NotFound

if TYPE_CHECKING:
    from ..worker.containers import Container

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_]*$")
MAX_NAME_CHARS = 128
MAX_TAGS = 64
MAX_TAG_CHARS = 128
#: NVCF's ``TAG_REGEX`` (NvcfConstants.java), matched against the whole tag.
TAG_RE = re.compile(r"[a-zA-Z0-9\-_:=]+")
#: NVCF's ``MAX_DESCRIPTION_LENGTH``.
MAX_DESCRIPTION_CHARS = 256
#: A secret's name (SecretDto.java: ``SECRET_NAME_REGEX``, 1-48 characters).
SECRET_NAME_RE = re.compile(r"^[a-z0-9A-Z][a-z0-9A-Z_.\-]*$")
MAX_SECRET_NAME_CHARS = 48
#: A secret's value, as text (NvcfConstants.java: ``MAX_SECRET_VALUE_LENGTH``).
MAX_SECRET_VALUE_CHARS = 32768
#: What NVCF hides of a function owned by another account (FunctionManagementFacade.java,
#: ``hideDetailsForPublicAndSharedFunctions``).
HIDDEN_FROM_OTHER_ACCOUNTS = (
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
)
API_BODY_FORMATS = ("PREDICT_V2", "CUSTOM")
FUNCTION_TYPES = ("DEFAULT", "STREAMING")
#: The ``visibility`` values of ``GET /v2/nvcf/functions``.
VISIBILITIES = ("authorized", "private", "public")
DEFAULT_INFERENCE_PORT = 8000
#: ``NVCF_ENV`` / ``NVCF-ENV``: NVCF's spot environment; here, the emulator.
ENVIRONMENT = "emulator"
DEFAULT_HEALTH_URI = "/v2/health/ready"
#: The record kind function versions are kept under in a state store.
KIND = "function"

log = logging.getLogger("nvcf_emulator.functions")


class FunctionStatus(StrEnum):
    INACTIVE = "INACTIVE"
    DEPLOYING = "DEPLOYING"
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"
    DEGRADING = "DEGRADING"
    DEGRADED = "DEGRADED"
    DELETED = "DELETED"


INVOCABLE = frozenset({FunctionStatus.ACTIVE, FunctionStatus.DEGRADING})
#: Statuses that need a running container: a loaded version in one of them is detached until
#: a container is attached again.
RUNNING = frozenset(
    {
        FunctionStatus.DEPLOYING,
        FunctionStatus.ACTIVE,
        FunctionStatus.DEGRADING,
        FunctionStatus.DEGRADED,
    }
)


def not_found_message(function_id: str, version_id: str | None, nca_id: str) -> str:
    """NVCF's text (``version 'null'`` when the call named no version)."""
    return (
        f"Function id '{function_id}' version '{version_id or 'null'}': "
        f"Specified function in account '{nca_id}' is not found"
    )


def version_not_found_message(function_id: str, version_id: str, nca_id: str) -> str:
    """The control plane's text (FunctionManagementService.java:
    MESG_FUNCTION_VERSION_NOT_IN_ACCOUNT)."""
    return f"Function id '{function_id}', version '{version_id}': Not found in account '{nca_id}'"


@dataclass
class FunctionVersion:
    """One version of a function: the FunctionDTO plus what the emulator needs to run it."""

    function_id: str
    version_id: str
    name: str
    nca_id: str
    created_at: float
    status: FunctionStatus = FunctionStatus.INACTIVE
    function_type: str = "DEFAULT"
    inference_url: str = "/"
    inference_port: int = DEFAULT_INFERENCE_PORT
    health_uri: str = DEFAULT_HEALTH_URI
    health: dict[str, Any] = field(default_factory=dict)
    api_body_format: str = "CUSTOM"
    container_image: str | None = None
    #: Other members of the create body (containerArgs, models, tags, description, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    #: The container given directly (Python API / CLI); otherwise resolved from the image.
    container: Container | None = None
    deployment: dict[str, Any] | None = None
    deploy_started_at: float | None = None
    #: NCA ids this version is shared with (``visibility=authorized`` for them): NVCF's
    #: version-level authorized accounts.
    shared_with: frozenset[str] = frozenset()
    #: The function-level ones (the same on every version of the function).
    function_shared_with: frozenset[str] = frozenset()
    public: bool = False
    #: Set by ``set_status``: the status stays as forced until the next deploy.
    pinned: bool = False
    #: Why the version is ``ERROR`` (shown as the deployment's ``healthInfo``).
    error_reason: str | None = None
    #: What the last health check of a ``DEPLOYING`` version got, when it failed (shown as
    #: the deployment's ``healthInfo`` until it passes; not kept on disk).
    health_note: str | None = None
    #: Made with a container given directly (``add_function``/``--function``), not an image.
    direct: bool = False
    #: Loaded from the state dir with no container to run it: the status it was saved with
    #: (what the record keeps; it is reported as ``ERROR`` until a container is attached).
    detached_status: FunctionStatus | None = None

    def record(self) -> dict[str, Any]:
        """The JSON-able record a state store keeps (everything but the container)."""
        data: dict[str, Any] = {
            "function_id": self.function_id,
            "version_id": self.version_id,
            "name": self.name,
            "nca_id": self.nca_id,
            "created_at": self.created_at,
            "status": (self.detached_status or self.status).value,
            "function_type": self.function_type,
            "inference_url": self.inference_url,
            "inference_port": self.inference_port,
            "health_uri": self.health_uri,
            "health": self.health,
            "api_body_format": self.api_body_format,
            "container_image": self.container_image,
            "extra": self.extra,
            "deployment": self.deployment,
            "deploy_started_at": self.deploy_started_at,
            "shared_with": sorted(self.shared_with),
            "function_shared_with": sorted(self.function_shared_with),
            "public": self.public,
            "pinned": self.pinned,
            "error_reason": None if self.detached_status else self.error_reason,
            "direct": self.direct,
        }
        # Definition members given from Python may hold values JSON has no form for.
        result: dict[str, Any] = json.loads(json.dumps(data, default=str))
        return result

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> FunctionVersion:
        fields = dict(data)
        fields["status"] = FunctionStatus(fields["status"])
        fields["shared_with"] = frozenset(fields.get("shared_with") or ())
        fields["function_shared_with"] = frozenset(fields.get("function_shared_with") or ())
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in fields.items() if k in known})

    @property
    def expected_health_status(self) -> int:
        return int(self.health.get("expectedStatusCode", 200))

    @property
    def health_port(self) -> int:
        """Where health is checked: ``health.port``, else the inference port (NVIDIA's worker,
        worker.go: ``HealthCheckConfig(..., InferenceHealthPort, InferencePort)``). A container
        URL with its own port keeps that port for both."""
        port = self.health.get("port")
        if isinstance(port, int | float) and not isinstance(port, bool) and port >= 1:
            return int(port)
        return self.inference_port

    def placement(self) -> tuple[str, str]:
        """Where the version runs, as the worker's ``NVCF-BACKEND`` / ``NVCF-INSTANCETYPE``
        headers and the container's ``NVCF_BACKEND`` / ``NVCF_INSTANCETYPE`` say it: its first
        deployment specification's backend and instance type, or the emulator's."""
        specs = (self.deployment or {}).get("deploymentSpecifications") or []
        spec = specs[0] if specs and isinstance(specs[0], dict) else {}
        return str(spec.get("backend", "nvcf-emulator")), str(spec.get("instanceType", "EMULATOR"))

    def container_environment(self, region: str) -> dict[str, str]:
        """The environment NVCF gives the version's container: its ``containerEnvironment``,
        then the ``NVCF_*`` variables (function-creation.md; reserved, they win)."""
        env = {
            str(item["key"]): str(item["value"])
            for item in self.extra.get("containerEnvironment") or ()
            if isinstance(item, dict) and "key" in item and "value" in item
        }
        backend, instance_type = self.placement()
        env.update(
            {
                "NVCF_BACKEND": backend,
                "NVCF_ENV": ENVIRONMENT,
                "NVCF_FUNCTION_ID": self.function_id,
                "NVCF_FUNCTION_NAME": self.name,
                "NVCF_FUNCTION_VERSION_ID": self.version_id,
                "NVCF_INSTANCETYPE": instance_type,
                "NVCF_NCA_ID": self.nca_id,
                "NVCF_REGION": region,
            }
        )
        return env

    def shared_with_account(self, nca_id: str) -> bool:
        """Authorized at the version or the function level."""
        return nca_id in self.shared_with or nca_id in self.function_shared_with

    def secret_values(self) -> dict[str, Any]:
        """The version's secrets as the container's ``secrets.json`` holds them: name to value
        (a string, or the JSON given); empty when it has none."""
        secrets = self.extra.get("secrets") or ()
        return {s["name"]: s["value"] for s in secrets if isinstance(s, dict) and "name" in s}

    def dto(self, viewer_nca: str | None = None, *, include_secrets: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.function_id,
            "versionId": self.version_id,
            "name": self.name,
            "ncaId": self.nca_id,
            "status": self.status.value,
            "createdAt": isoformat(self.created_at),
            "functionType": self.function_type,
            "healthUri": self.health_uri,
            "inferenceUrl": self.inference_url,
            "inferencePort": self.inference_port,
            "apiBodyFormat": self.api_body_format,
            "health": dict(self.health),
        }
        if self.container_image is not None:
            out["containerImage"] = self.container_image
        for key, value in self.extra.items():
            if key == "secrets":
                # FunctionDto's ``Set<String> secrets``: the names, never the values (and not
                # even those with ``includeSecrets=false``).
                if include_secrets:
                    out[key] = [s.get("name") for s in value if isinstance(s, dict)]
            else:
                out[key] = copy.deepcopy(value)
        if self.status in INVOCABLE:
            out["activeInstances"] = [self._instance()]
        if viewer_nca is not None and viewer_nca != self.nca_id:
            # Another account (shared or public) sees neither how it runs nor its secrets.
            for key in HIDDEN_FROM_OTHER_ACCOUNTS:
                out.pop(key, None)
            out["ownedByDifferentAccount"] = True
        return out

    def _instance(self) -> dict[str, Any]:
        spec = (self.deployment or {}).get("deploymentSpecifications") or [{}]
        first = spec[0] if isinstance(spec[0], dict) else {}
        when = isoformat(self.deploy_started_at or self.created_at)
        backend, instance_type = self.placement()
        return {
            "instanceId": f"emulator-{self.version_id[:8]}",
            "instanceType": instance_type,
            "instanceStatus": "ACTIVE",
            "gpu": first.get("gpu", "EMULATOR"),
            "backend": backend,
            "location": "local",
            "functionId": self.function_id,
            "functionVersionId": self.version_id,
            "ncaId": self.nca_id,
            "instanceCreatedAt": when,
            "instanceUpdatedAt": when,
        }

    def deployment_dto(self) -> dict[str, Any]:
        """FunctionDeploymentDto, with the ``deploymentId`` that
        ``PATCH /v2/nvcf/deployments/{deploymentId}/gpu-specifications/{id}`` takes (NVIDIA's
        nvcf-cli ``deploy update`` reads it from here). Each spec is shown as it was sent, with
        the ``gpuSpecificationId`` NVCF's GpuSpecificationDto gives it (that PATCH's other
        id)."""
        deployment = self.deployment or {}
        created = self.deploy_started_at or self.created_at
        ids = {"deploymentId": deployment["deploymentId"]} if "deploymentId" in deployment else {}
        specs = copy.deepcopy(deployment.get("deploymentSpecifications", []))
        return {
            "functionId": self.function_id,
            "functionVersionId": self.version_id,
            **ids,
            "functionName": self.name,
            "ncaId": self.nca_id,
            "functionStatus": self.status.value,
            "deploymentSpecifications": specs,
            "createdAt": isoformat(created),
            "lastUpdatedAt": isoformat(deployment.get("lastUpdatedAt") or created),
            **({"healthInfo": [{"error": note}]} if (note := self._health_info()) else {}),
        }

    def _health_info(self) -> str | None:
        if self.status is FunctionStatus.ERROR:
            return self.error_reason
        return self.health_note if self.status is FunctionStatus.DEPLOYING else None


def _str(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _validate_health(health: Mapping[str, Any]) -> None:
    """NVCF's ``health`` object: ``{protocol: HTTP|gRPC, uri, port, timeout, expectedStatusCode}``
    (each optional here; defaults fill the rest)."""
    if "expectedStatusCode" in health and not (
        _is_int(health["expectedStatusCode"]) and 100 <= health["expectedStatusCode"] <= 599
    ):
        raise BadRequest("health.expectedStatusCode must be an HTTP status (100-599)")
    if "protocol" in health and health["protocol"] not in ("HTTP", "gRPC"):
        raise BadRequest("health.protocol must be HTTP or gRPC")
    if "uri" in health and not (isinstance(health["uri"], str) and health["uri"].startswith("/")):
        raise BadRequest("health.uri must be a path starting with /")
    if "port" in health and not (_is_int(health["port"]) and 1 <= health["port"] <= 65535):
        raise BadRequest("health.port must be a port number (1-65535)")
    if "timeout" in health and not (
        isinstance(health["timeout"], str) and DURATION_RE.fullmatch(health["timeout"])
    ):
        raise BadRequest("health.timeout must be an ISO-8601 duration, e.g. PT10S")


#: ISO-8601 durations as NVCF's health timeout takes them (PT10S, PT1M30S, P1D, ...).
DURATION_RE = re.compile(r"P(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?")


def _objects(value: object, keys: tuple[str, ...]) -> bool:
    """A list of objects whose ``keys`` are all present, as strings (NVCF's DTOs mark each
    ``@NotNull``: ContainerEnvironmentEntryDto, FunctionModelDto, ArtifactDto)."""
    return isinstance(value, list) and all(
        isinstance(item, dict) and all(isinstance(item.get(k), str) for k in keys) for item in value
    )


def _validate_extras(body: Mapping[str, Any]) -> None:
    """The create body's other members have NVCF's types (they are echoed back as JSON)."""
    for key in ("description", "containerArgs"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise BadRequest(f"{key} must be a string")
    description = body.get("description")
    if description is not None and len(description) > MAX_DESCRIPTION_CHARS:
        raise BadRequest(f"Maximum description length of {MAX_DESCRIPTION_CHARS} is exceeded.")
    env = body.get("containerEnvironment")
    if env is not None and not _objects(env, ("key", "value")):
        raise BadRequest("containerEnvironment must be a list of {key, value} strings")
    for key in ("models", "resources"):
        if body.get(key) is not None and not _objects(body[key], ("name", "version", "uri")):
            raise BadRequest(f"{key} must be a list of {{name, version, uri}} objects")
    if body.get("telemetries") is not None and not isinstance(body["telemetries"], dict):
        raise BadRequest("telemetries must be an object")
    if body.get("rateLimit") is not None:
        ratelimits.validate(body["rateLimit"])


def _validate_tags(tags: object) -> list[str]:
    if (
        not isinstance(tags, list)
        or len(tags) > MAX_TAGS
        or any(
            not isinstance(t, str) or len(t) > MAX_TAG_CHARS or not TAG_RE.fullmatch(t)
            for t in tags
        )
    ):
        raise BadRequest(
            f"tags must be a list of at most {MAX_TAGS} strings of at most "
            f"{MAX_TAG_CHARS} characters matching {TAG_RE.pattern}"
        )
    return list(tags)


def _validate_secrets(secrets: object, function_id: str, version_id: str) -> list[dict[str, Any]]:
    """SecretDto: a name (``SECRET_NAME_REGEX``, 1-48 characters) and a value (a string or
    JSON such as an object) whose text is 1-32768 characters once trimmed; then, as
    EssService.hasDupeSecrets, no name twice with different values (the same pair twice is
    one, as in NVCF's ``Set<SecretDto>``). Returns the secrets without repeats."""
    if not isinstance(secrets, list) or any(not isinstance(s, dict) for s in secrets):
        raise BadRequest("secrets must be a list of {name, value} objects")
    for secret in secrets:
        name = secret.get("name")
        if (
            not isinstance(name, str)
            or not 1 <= len(name) <= MAX_SECRET_NAME_CHARS
            or not SECRET_NAME_RE.fullmatch(name)
        ):
            raise BadRequest(
                f"Invalid secret name: secrets[].name must be 1-{MAX_SECRET_NAME_CHARS} "
                f"characters matching {SECRET_NAME_RE.pattern}, got {name!r}"
            )
        value = secret.get("value")
        # SecretDto: @NonNull, and its text 1-32768 chars once Java's trim() took what is at
        # most U+0020 off both ends (a no-break space is a value). The text is Jackson's: a
        # string as it is, anything else as compact JSON, non-ASCII unescaped; its length in
        # Java chars (UTF-16 code units; a lone surrogate is one).
        text = (
            value
            if isinstance(value, str)
            else json.dumps(value, separators=_COMPACT, ensure_ascii=False, default=str)
        )
        trimmed = text.strip(_JAVA_TRIMMED)
        if value is None or not trimmed:
            raise BadRequest(f"Invalid secret value specified: secret {name!r} has no value")
        length = len(trimmed.encode("utf-16-le", "surrogatepass")) // 2
        if length > MAX_SECRET_VALUE_CHARS:
            raise BadRequest(
                f"Invalid secret value specified: secret {name!r}: Secret value's length must "
                f"be between 1 - {MAX_SECRET_VALUE_CHARS} chars long, got {length}"
            )
    unique: list[dict[str, Any]] = []
    for secret in secrets:
        pair = {"name": secret["name"], "value": secret["value"]}
        if pair not in unique:
            unique.append(pair)
    if len({s["name"] for s in unique}) != len(unique):
        raise BadRequest(
            f"Function id '{function_id}', version '{version_id}': "
            "Duplicate secrets keys in the payload"
        )
    return unique


_BLANK = re.compile(r"\s*")
_COMPACT = (",", ":")
#: What Java's ``String.trim()`` takes off: every character up to U+0020.
_JAVA_TRIMMED = "".join(map(chr, range(0x21)))


def _validate_model_updates(updates: object) -> None:
    """UpdateFunctionRequest's ``modelUpdates``: objects with a ``modelName`` (``@NotBlank``),
    no name twice, each with an ``llmConfig`` that sets ``tokenRateLimit`` or
    ``routingMethod`` (ValidUpdateFunctionRequestValidator's messages)."""
    if updates is None:
        return
    if not isinstance(updates, list) or any(not isinstance(u, dict) for u in updates):
        raise BadRequest("modelUpdates must be a list of {modelName, llmConfig} objects")
    names = [u.get("modelName") for u in updates]
    if any(not isinstance(n, str) or _blank(n) for n in names):
        raise BadRequest("modelUpdates[].modelName must not be blank")
    if len(set(names)) != len(names):
        raise BadRequest("Invalid request: duplicate model names are not allowed in 'modelUpdates'")
    for update in updates:
        config = update.get("llmConfig")
        if not isinstance(config, dict) or (
            config.get("tokenRateLimit") is None and config.get("routingMethod") is None
        ):
            raise BadRequest(
                "Invalid request: at least one of 'tokenRateLimit' or 'routingMethod' must be "
                "specified"
            )


def _blank(value: object) -> bool:
    """Apache's ``StringUtils.isBlank``: absent, or whitespace only."""
    return value is None or (isinstance(value, str) and _BLANK.fullmatch(value) is not None)


#: CreateFunctionRequest.java's ``CreateFunctionRequestValidator`` messages.
MISSING_ARTIFACT = (
    "Invalid request: One of the following properties 'containerImage', 'models', "
    "or 'helmChart' must be specified in the payload"
)
HELM_SERVICE_NAME = (
    "Invalid request: Either both or none of 'helmChart' and 'helmChartServiceName' "
    "properties must be specified"
)
#: UpdateFunctionRequest.java's MESG_FUNCTION_UPDATE_REQUIRED.
UPDATE_REQUIRED = (
    "Invalid request: at least one of 'tags', 'rateLimit', 'modelUpdates', or "
    "'llmInvocationConfig' must be specified"
)
HEALTH_MEMBERS = ("protocol", "uri", "port", "timeout", "expectedStatusCode")


def validate_definition(body: Mapping[str, Any]) -> None:
    """The rules NVCF's create body (``POST /v2/nvcf/functions[/{id}/versions]``) adds to the
    member types :meth:`FunctionService._build` checks: something to run (a container image,
    models or a helm chart), a helm chart alone with its service name, a complete ``health``.
    ``Emulator.add_function`` does not need them (its container is given)."""
    chart = body.get("helmChart")
    if body.get("containerImage") is None and not body.get("models") and chart is None:
        raise BadRequest(MISSING_ARTIFACT)
    if chart is not None:
        if body.get("containerImage") is not None:
            raise BadRequest(
                "Invalid request: Cannot specify both 'containerImage' and 'helmChart' "
                "properties in the payload"
            )
        if not _blank(body.get("containerArgs")):
            raise BadRequest(
                "Invalid request: Cannot specify both 'containerArgs' and 'helmChart' "
                "properties in the payload"
            )
        if body.get("containerEnvironment") is not None:
            raise BadRequest(
                "Invalid request: Cannot specify both 'containerEnvironment' and 'helmChart' "
                "properties in the payload"
            )
    if (chart is None) != _blank(body.get("helmChartServiceName")):
        raise BadRequest(HELM_SERVICE_NAME)
    health = body.get("health")
    if isinstance(health, dict):
        missing = [key for key in HEALTH_MEMBERS if health.get(key) is None]
        if missing:
            raise BadRequest(
                f"health.{missing[0]} is required: a health object has all of "
                f"{', '.join(HEALTH_MEMBERS)}"
            )


def _validate_name(name: object) -> str:
    if name is None:
        raise BadRequest("name is required")
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= MAX_NAME_CHARS
        or not NAME_RE.fullmatch(name)
    ):
        raise BadRequest(
            f"name must be 1-{MAX_NAME_CHARS} characters matching {NAME_RE.pattern}, got {name!r}"
        )
    return name


def _api_body(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """A create body from the API, held to every rule of NVCF's (:func:`validate_definition`),
    with its default description: NVCF stores the name when none is given
    (FunctionMapperService.java, ``toFunctionEntity``); a blank one is not shown."""
    validate_definition(body)
    if body.get("description") is None:
        return {**body, "description": name}
    return body


#: The widest ``maxRequestConcurrency`` a client accepts (ngcsdk: 16384; the SDK: 1024).
MAX_REQUEST_CONCURRENCY = 16384


def _is_int(value: object) -> bool:
    """An integer as JSON Schema (and Jackson) count them: ``8000`` or ``8000.0``, not ``true``."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_deployment(body: Mapping[str, Any]) -> dict[str, Any]:
    specs = body.get("deploymentSpecifications")
    if not isinstance(specs, list) or not specs:
        raise BadRequest("deploymentSpecifications is required: a non-empty list")
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise BadRequest(f"deploymentSpecifications[{i}] must be an object")
        for key in ("gpu", "instanceType", "minInstances", "maxInstances"):
            if key not in spec:
                raise BadRequest(f"deploymentSpecifications[{i}].{key} is required")
        for key in ("gpu", "instanceType", "backend"):
            if key in spec and not isinstance(spec[key], str):
                raise BadRequest(f"deploymentSpecifications[{i}].{key} must be a string")
        for key in ("gpu", "instanceType"):  # GpuSpecificationDto.java: @NotBlank
            if _blank(spec[key]):
                raise BadRequest(f"deploymentSpecifications[{i}].{key} must not be blank")
        lo, hi = spec["minInstances"], spec["maxInstances"]
        if not _is_int(lo) or not _is_int(hi) or lo < 0 or hi < max(lo, 1):
            raise BadRequest(
                f"deploymentSpecifications[{i}]: minInstances and maxInstances must be integers "
                "with 0 <= minInstances <= maxInstances and maxInstances >= 1"
            )
        mrc = spec.get("maxRequestConcurrency")
        if mrc is not None and (not _is_int(mrc) or not 1 <= mrc <= MAX_REQUEST_CONCURRENCY):
            raise BadRequest(
                f"deploymentSpecifications[{i}].maxRequestConcurrency must be an integer from 1 "
                f"to {MAX_REQUEST_CONCURRENCY}, got {mrc!r}"
            )
    return {"deploymentSpecifications": copy.deepcopy(specs)}


def _with_ids(
    deployment: dict[str, Any], now: float, old: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A deployment with the ids NVCF assigns (the client's own are not taken): a
    ``deploymentId``, kept from ``old`` when there is one, and a ``gpuSpecificationId`` per
    spec, kept from the spec at the same place in ``old`` (a PUT names no ids); and when it
    last changed."""
    old = old or {}
    old_specs = old.get("deploymentSpecifications") or []
    deployment["deploymentId"] = old.get("deploymentId") or str(uuid.uuid4())
    for i, spec in enumerate(deployment["deploymentSpecifications"]):
        before = old_specs[i] if i < len(old_specs) and isinstance(old_specs[i], dict) else {}
        spec["gpuSpecificationId"] = before.get("gpuSpecificationId") or str(uuid.uuid4())
    deployment["lastUpdatedAt"] = now
    return deployment


#: UpdateGpuSpecificationRequest's members; AutoscalingConfigurationPolicyEnum.
GPU_SPEC_UPDATES = (
    "maxInstances",
    "minInstances",
    "autoscalingConfiguration",
    "autoscalingConfigurationPolicy",
)
AUTOSCALING_POLICIES = ("CUSTOM_CONFIGURATION", "PLATFORM_CONFIGURATION")
#: FunctionStatus.BUSY_STATUSES: the statuses a GPU specification may be changed in.
BUSY = frozenset(
    {
        FunctionStatus.ACTIVE,
        FunctionStatus.DEPLOYING,
        FunctionStatus.DEGRADED,
        FunctionStatus.DEGRADING,
    }
)


def _validate_gpu_spec_update(body: Mapping[str, Any], function_id: str, version_id: str) -> None:
    """UpdateGpuSpecificationRequest (``@Positive`` maxInstances, ``@PositiveOrZero``
    minInstances) and DeploymentValidationService's MESG_EMPTY_UPDATE_REQUEST."""
    if all(body.get(key) is None for key in GPU_SPEC_UPDATES):
        raise BadRequest(
            f"Function id '{function_id}', version '{version_id}': Empty update gpu "
            "specification request. At least one field should be provided."
        )
    hi, lo = body.get("maxInstances"), body.get("minInstances")
    if hi is not None and not (_is_int(hi) and hi >= 1):
        raise BadRequest("maxInstances must be greater than 0")
    if lo is not None and not (_is_int(lo) and lo >= 0):
        raise BadRequest("minInstances must be greater than or equal to 0")
    scaling = body.get("autoscalingConfiguration")
    if scaling is not None and not isinstance(scaling, dict):
        raise BadRequest("autoscalingConfiguration must be an object")
    policy = body.get("autoscalingConfigurationPolicy")
    if policy is not None and policy not in AUTOSCALING_POLICIES:
        raise BadRequest(
            f"autoscalingConfigurationPolicy must be one of {', '.join(AUTOSCALING_POLICIES)}"
        )


_KNOWN = {
    "name",
    "inferenceUrl",
    "inferencePort",
    "healthUri",
    "health",
    "containerImage",
    "apiBodyFormat",
    "functionType",
}
_EXTRA = (
    "containerArgs",
    "containerEnvironment",
    "models",
    "resources",
    "helmChart",
    "helmChartServiceName",
    "description",
    "tags",
    "secrets",
    "rateLimit",
    "telemetries",
)


class FunctionService:
    """Every function of one emulator. Thread-safe."""

    def __init__(
        self,
        clock: Clock,
        *,
        deploy_delay: Callable[[], float],
        resolve_image: Callable[[str], Container | None],
        state: StateStore | None = None,
        on_secrets: Callable[[str, Mapping[str, Any] | None], None] | None = None,
    ) -> None:
        """``on_secrets(version_id, values)``: told a version's secrets (name to value) each
        time its record is written, and ``None`` once it is gone (the worker keeps the
        container's ``secrets.json`` from it)."""
        self.clock = clock
        self._deploy_delay = deploy_delay
        self._resolve_image = resolve_image
        self.state: StateStore = state or NullStateStore()
        self._lock = threading.RLock()
        self._versions: dict[str, FunctionVersion] = {}  # by version id, in creation order
        self._on_secrets = on_secrets or (lambda version_id, values: None)

    # -- persistence ----------------------------------------------------------------------------

    def _save(self, version: FunctionVersion) -> None:
        with self._lock:
            if self._versions.get(version.version_id) is version:
                self.state.put(KIND, version.version_id, version.record())
                self._on_secrets(version.version_id, version.secret_values())

    def _change(self, version: FunctionVersion, **fields: Any) -> None:
        """Set ``fields`` on a version and write its record; when the write fails (a full
        disk) the version is put back as it was, so memory never runs ahead of disk."""
        with self._lock:
            before = {name: getattr(version, name) for name in fields}
            for name, value in fields.items():
                setattr(version, name, value)
            try:
                self._save(version)
            except BaseException:
                for name, value in before.items():
                    setattr(version, name, value)
                raise

    def _insert(self, version: FunctionVersion) -> None:
        """Add a new version and its record; when the record cannot be written (a full disk),
        the version is not added either: the caller's error leaves no function behind."""
        with self._lock:
            self._versions[version.version_id] = version
            try:
                self._save(version)
            except BaseException:
                del self._versions[version.version_id]
                raise

    def load(self) -> int:
        """Read the versions a state store kept (at start-up); returns the count.

        A version saved while it needed a container (``DEPLOYING``, ``ACTIVE``, ``DEGRADING``,
        ``DEGRADED``) has none now: it is detached (see :meth:`_detach`) until one is attached.
        """
        with self._lock:
            for version_id, data in self.state.load(KIND):
                try:
                    version = FunctionVersion.from_record(data)
                except (KeyError, TypeError, ValueError):
                    log.warning("dropping an unreadable function record %s", version_id)
                    self.state.delete(KIND, version_id)
                    continue
                self._versions[version.version_id] = version
                self._on_secrets(version.version_id, version.secret_values())
                if version.status in RUNNING and self.container_for(version) is None:
                    self._detach(version)
            return len(self._versions)

    def _detach(self, version: FunctionVersion) -> None:
        how = (
            f"register_image({version.container_image!r}, container)"
            if version.container_image and not version.direct
            else f"nvcf-emulate --function {version.name}=TARGET, or "
            f"Emulator.add_function(container, name={version.name!r})"
        )
        version.detached_status = version.status
        version.status = FunctionStatus.ERROR
        version.error_reason = (
            "the emulator restarted and no container is attached to this version: "
            f"attach one with {how}"
        )
        log.warning(
            "function %s (%s version %s) has no container since the restart; attach one with %s",
            version.name,
            version.function_id,
            version.version_id,
            how,
        )

    def _attach(self, version: FunctionVersion) -> None:
        """Give a detached version its saved status back (redeployed: health checked again)."""
        saved = version.detached_status
        if saved is None:
            return
        version.detached_status = None
        version.error_reason = None
        version.status = saved if version.pinned else FunctionStatus.DEPLOYING
        if version.deploy_started_at is None:
            version.deploy_started_at = self.clock.now()

    def attach_image(self, image: str) -> list[FunctionVersion]:
        """``register_image``: versions of ``image`` detached at start-up run again."""
        with self._lock:
            found = [
                v
                for v in self._versions.values()
                if v.container_image == image and not v.direct and v.detached_status is not None
            ]
            for version in found:
                self._attach(version)
                self._save(version)
        for version in found:
            self.refresh(version)
        return found

    def _saved_direct(
        self, account: Account, name: str, function_id: str | None
    ) -> FunctionVersion | None:
        """The first loaded ``add_function`` version of ``name`` with no container yet."""
        with self._lock:
            for version in self._versions.values():
                if (
                    version.direct
                    and version.container is None
                    and version.nca_id == account.nca_id
                    and version.name == name
                    and function_id in (None, version.function_id)
                ):
                    return version
        return None

    # -- creation -----------------------------------------------------------------------------

    def _build(
        self, account: Account, body: Mapping[str, Any], function_id: str, name: str
    ) -> FunctionVersion:
        version_id = str(uuid.uuid4())
        inference_url = _str(body, "inferenceUrl", required=True)
        assert inference_url is not None
        port = body.get("inferencePort", DEFAULT_INFERENCE_PORT)
        if not _is_int(port) or not 1 <= port <= 65535:
            raise BadRequest("inferencePort must be an integer between 1 and 65535")
        port = int(port)
        health_uri = _str(body, "healthUri") or DEFAULT_HEALTH_URI
        health = body.get("health")
        if health is None:
            health = {
                # FunctionMapperService.java: a function at /grpc has a gRPC health check.
                "protocol": "gRPC" if inference_url == "/grpc" else "HTTP",
                "uri": health_uri,
                "port": port,
                "timeout": "PT10S",
                "expectedStatusCode": 200,
            }
        elif not isinstance(health, dict):
            raise BadRequest("health must be an object")
        else:
            _validate_health(health)
            health = {
                "protocol": "HTTP",
                "uri": health_uri,
                "port": port,
                "timeout": "PT10S",
                "expectedStatusCode": 200,
                **health,
            }
            health_uri = str(health["uri"])
        fmt = _str(body, "apiBodyFormat")
        fmt = "CUSTOM" if fmt is None else fmt
        if fmt not in API_BODY_FORMATS:
            raise BadRequest("apiBodyFormat must be PREDICT_V2 or CUSTOM")
        ftype = _str(body, "functionType")
        ftype = "DEFAULT" if ftype is None else ftype
        if ftype == "LLM":  # NVCF's FunctionTypeEnum has it; its routing is not emulated
            raise BadRequest(
                "functionType LLM is not supported by the emulator (NVCF's LLM functions and "
                "their llm.<host> routing are not emulated): use DEFAULT or STREAMING"
            )
        if ftype not in FUNCTION_TYPES:
            raise BadRequest("functionType must be DEFAULT or STREAMING")
        image = _str(body, "containerImage")
        chart = _str(body, "helmChart")
        service = _str(body, "helmChartServiceName")
        if chart is not None and image is not None:
            raise BadRequest("a function has either a helmChart or a containerImage, not both")
        if chart is not None and not service:
            raise BadRequest("helmChartServiceName is required with helmChart")
        if body.get("tags") is not None:
            _validate_tags(body["tags"])
        _validate_extras(body)
        extra = {k: copy.deepcopy(body[k]) for k in _EXTRA if body.get(k) is not None}
        if "secrets" in extra:
            extra["secrets"] = _validate_secrets(extra["secrets"], function_id, version_id)
        with self._lock:
            # FunctionManagementService.findAuthNcaIds: a new version of a function inherits
            # its function-level authorized accounts.
            sibling = next(
                (v for v in self._versions.values() if v.function_id == function_id), None
            )
        return FunctionVersion(
            function_id=function_id,
            version_id=version_id,
            name=name,
            nca_id=account.nca_id,
            created_at=self.clock.now(),
            function_type=ftype,
            inference_url=inference_url,
            inference_port=port,
            health_uri=health_uri,
            health=health,
            api_body_format=fmt,
            container_image=image,
            extra=extra,
            function_shared_with=sibling.function_shared_with if sibling else frozenset(),
        )

    def create(
        self, account: Account, body: Mapping[str, Any], *, strict: bool = False
    ) -> FunctionVersion:
        """``POST /v2/nvcf/functions``: a new function with one ``INACTIVE`` version.

        ``strict`` (the API) applies every rule of NVCF's create body (:func:`validate_definition`)
        and its default description, the name."""
        name = _validate_name(body.get("name"))
        if strict:
            body = _api_body(body, name)
        version = self._build(account, body, str(uuid.uuid4()), name)
        self._insert(version)
        return version

    def create_version(
        self, account: Account, function_id: str, body: Mapping[str, Any], *, strict: bool = False
    ) -> FunctionVersion:
        """``POST /v2/nvcf/functions/{fid}/versions``: same id, new version id. Without
        ``strict`` the name defaults to the function's; NVCF's body needs one, as at create."""
        existing = self.versions(account, function_id)
        if all(v.nca_id != account.nca_id for v in existing):  # shared or public: not yours
            raise NotFound(not_found_message(function_id, None, account.nca_id))
        name = body.get("name")
        name = _validate_name(name) if name is not None or strict else existing[0].name
        if strict:
            body = _api_body(body, name)
        version = self._build(account, body, function_id, name)
        self._insert(version)
        return version

    def add(
        self,
        account: Account,
        container: Container,
        body: Mapping[str, Any],
        *,
        function_id: str | None = None,
        shared_with: Iterable[str] = (),
        public: bool = False,
    ) -> FunctionVersion:
        """Create and deploy a version running ``container`` (the Python API and the CLI).

        A version loaded from the state dir with the same name (and ``function_id``, when
        given) in the same account, made this way and with no container yet, is re-attached
        instead: it keeps its ids, takes the new definition and runs ``container``.
        """
        name = _validate_name(body.get("name"))
        saved = self._saved_direct(account, name, function_id)
        if function_id is not None and saved is None:
            self.versions(account, function_id)
        version = self._build(
            account, body, saved.function_id if saved else function_id or str(uuid.uuid4()), name
        )
        version.container = container
        version.shared_with = frozenset(shared_with)
        version.public = public
        version.direct = True
        if saved is not None:
            with self._lock:
                for attr in (
                    "function_type",
                    "inference_url",
                    "inference_port",
                    "health_uri",
                    "health",
                    "api_body_format",
                    "extra",
                    "container",
                    "public",
                ):
                    setattr(saved, attr, getattr(version, attr))
                if version.shared_with:  # else: what the API shared it with before the restart
                    saved.shared_with = version.shared_with
                self._attach(saved)
                self._save(saved)
            return self.refresh(saved)
        version.deploy_started_at = self.clock.now()
        version.deployment = _with_ids({"deploymentSpecifications": []}, version.deploy_started_at)
        version.status = FunctionStatus.DEPLOYING
        self._insert(version)
        self.refresh(version)
        return version

    # -- status -------------------------------------------------------------------------------

    def container_for(self, version: FunctionVersion) -> Container | None:
        if version.container is not None:
            return version.container
        if version.container_image is not None:
            return self._resolve_image(version.container_image)
        return None

    def refresh(self, version: FunctionVersion) -> FunctionVersion:
        """Move ``DEPLOYING`` on once the deploy delay has passed and the container is healthy."""
        with self._lock:
            if version.status is not FunctionStatus.DEPLOYING or version.pinned:
                return version
            started = version.deploy_started_at or version.created_at
            if self.clock.now() < started + self._deploy_delay():
                return version
            container = self.container_for(version)
        reason = None
        if container is None:
            status = FunctionStatus.ERROR
            reason = (
                f"no container is registered for image '{version.container_image}' "
                "(Emulator.register_image)"
                if version.container_image
                else "the function has no container image"
            )
        else:
            note = health_problem(container, version)
            if note is None:
                status = FunctionStatus.ACTIVE
            else:  # still starting: checked again on the next look
                if note != version.health_note:
                    version.health_note = note
                    log.warning(
                        "function %r version %s: %s", version.name, version.version_id, note
                    )
                return version
        with self._lock:
            if version.status is FunctionStatus.DEPLOYING:
                version.status = status
                version.error_reason = reason
                version.health_note = None
                self._save(version)
        return version

    def set_status(self, function_id: str, version_id: str, status: FunctionStatus | str) -> None:
        """Force a status (tests: ``DEGRADED``, ``ERROR``, ...)."""
        with self._lock:
            version = self._versions.get(version_id)
            if version is None or version.function_id != function_id:
                raise KeyError(version_id)
            version.status = FunctionStatus(status)
            version.pinned = True
            version.detached_status = None
            self._save(version)

    # -- queries -----------------------------------------------------------------------------

    def all(self) -> list[FunctionVersion]:
        with self._lock:
            versions = list(self._versions.values())
        return [self.refresh(v) for v in versions]

    def _visible(self, version: FunctionVersion, nca_id: str) -> bool:
        return version.nca_id == nca_id or version.shared_with_account(nca_id) or version.public

    def listing(
        self, account: Account, visibility: Iterable[str] | None = None
    ) -> list[FunctionVersion]:
        wanted = set(visibility or VISIBILITIES)
        bad = wanted - set(VISIBILITIES)
        if bad:
            raise BadRequest(
                f"visibility must be authorized, private or public, got {', '.join(sorted(bad))}"
            )
        out = []
        for version in self.all():
            if version.status is FunctionStatus.DELETED:
                continue
            own = version.nca_id == account.nca_id
            if (
                ("private" in wanted and own)
                or (
                    "authorized" in wanted
                    and not own
                    and version.shared_with_account(account.nca_id)
                )
                or ("public" in wanted and version.public and not own)
            ):
                out.append(version)
        return out

    def versions(self, account: Account, function_id: str) -> list[FunctionVersion]:
        found = [
            v
            for v in self.all()
            if v.function_id == function_id
            and v.status is not FunctionStatus.DELETED
            and self._visible(v, account.nca_id)
        ]
        if not found:
            # FunctionManagementService.java: MESG_FUNCTION_NOT_IN_ACCOUNT
            raise NotFound(f"Function id '{function_id}': Not found in account '{account.nca_id}'")
        return found

    def get(self, account: Account, function_id: str, version_id: str) -> FunctionVersion:
        for version in self.versions(account, function_id):
            if version.version_id == version_id:
                return version
        raise NotFound(version_not_found_message(function_id, version_id, account.nca_id))

    def _own(self, account: Account, function_id: str, version_id: str) -> FunctionVersion:
        version = self.get(account, function_id, version_id)
        if version.nca_id != account.nca_id:
            raise NotFound(not_found_message(function_id, version_id, account.nca_id))
        return version

    def resolve_invocation(
        self, account: Account, function_id: str, version_id: str | None
    ) -> FunctionVersion:
        """The version a pexec call runs on, or NVCF's 404 / 400 (DEGRADED)."""
        candidates = [
            v
            for v in self.all()
            if v.function_id == function_id
            and (version_id is None or v.version_id == version_id)
            and v.status is not FunctionStatus.DELETED
            and self._visible(v, account.nca_id)
        ]
        invocable = [v for v in candidates if v.status in INVOCABLE]
        if invocable:
            return invocable[0] if len(invocable) == 1 else _pick(invocable)
        if any(v.status is FunctionStatus.DEGRADED for v in candidates):
            raise BadRequest(f"Function id '{function_id}': DEGRADED function cannot be invoked")
        raise NotFound(not_found_message(function_id, version_id, account.nca_id))

    # -- commands ----------------------------------------------------------------------------

    def delete(self, account: Account, function_id: str, version_id: str) -> FunctionVersion:
        version = self._own(account, function_id, version_id)
        with self._lock:
            self.state.delete(KIND, version.version_id)  # the record first, then memory
            self._versions.pop(version.version_id, None)
            self._on_secrets(version.version_id, None)
            version.status = FunctionStatus.DELETED
            version.detached_status = None
        return version

    def update_tags(
        self, account: Account, function_id: str, version_id: str, body: Mapping[str, Any]
    ) -> FunctionVersion:
        """NVCF's UpdateFunctionRequest: ``tags`` and/or ``rateLimit`` replace the version's;
        a member left out (or null) keeps its value; none given is a 400. ``modelUpdates`` and
        ``llmInvocationConfig`` are for LLM functions, which the emulator has none of: checked
        as NVCF checks them, then refused as NVCF refuses them on any other function."""
        tags, rate_limit = body.get("tags"), body.get("rateLimit")
        model_updates, llm_config = body.get("modelUpdates"), body.get("llmInvocationConfig")
        if tags is None and rate_limit is None and not model_updates and llm_config is None:
            raise BadRequest(UPDATE_REQUIRED)
        if tags is not None:
            tags = _validate_tags(tags)
        if rate_limit is not None:
            ratelimits.validate(rate_limit)
        _validate_model_updates(model_updates)
        version = self._own(account, function_id, version_id)
        if model_updates:  # FunctionLlmService.java: MESG_FUNCTION_NOT_LLM
            raise BadRequest(
                f"Function id '{function_id}', version '{version_id}': "
                "Only LLM functions support model config updates"
            )
        if llm_config is not None:
            raise BadRequest("Only LLM functions support llmInvocationConfig")
        extra = dict(version.extra)
        if tags is not None:
            extra["tags"] = list(tags)
        if rate_limit is not None:
            extra["rateLimit"] = copy.deepcopy(rate_limit)
        self._change(version, extra=extra)
        return version

    def update_secrets(
        self, account: Account, function_id: str, version_id: str, body: Mapping[str, Any]
    ) -> FunctionVersion:
        """``PUT /v2/nvcf/secrets/functions/{fid}/versions/{vid}`` (SecretManagementFacade.java):
        the given secrets are merged into the version's, a name given again takes its new
        value. A version that has none yet takes them only while ``INACTIVE``."""
        secrets = body.get("secrets")
        if secrets is None:  # UpdateFunctionSecretsRequest: ``@NotNull``
            raise BadRequest("Invalid request: 'secrets' must not be null")
        if isinstance(secrets, list) and not secrets:
            raise BadRequest(
                f"Function id '{function_id}', version '{version_id}': "
                "Missing secrets in the payload"
            )
        given = _validate_secrets(secrets, function_id, version_id)
        with self._lock:
            version = self._versions.get(version_id)
            if (
                version is None
                or version.function_id != function_id
                or version.nca_id != account.nca_id  # shared with it, or public: not its own
            ):
                raise NotFound(version_not_found_message(function_id, version_id, account.nca_id))
            existing = version.secret_values()
            if not existing and version.status is not FunctionStatus.INACTIVE:
                raise BadRequest(
                    f"Function id '{function_id}', version '{version_id}': "
                    "Add secrets only when the function is 'INACTIVE'"
                )
            merged = {**existing, **{s["name"]: s["value"] for s in given}}
            extra = dict(version.extra)
            extra["secrets"] = [{"name": k, "value": v} for k, v in merged.items()]
            self._change(version, extra=extra)
        return version

    # -- authorized parties (authorizations.py) ------------------------------------------------

    def _refuse_public(self, function_id: str, version_id: str | None, operation: str) -> None:
        """AuthorizedPartiesController's first check, whoever owns the function: a public one
        (or version) is NVIDIA's to change."""
        with self._lock:
            public = any(
                v.public
                for v in self._versions.values()
                if v.function_id == function_id
                and (version_id is None or v.version_id == version_id)
            )
        if public:
            raise BadRequest(
                f"{authorizations.where(function_id, version_id)}: Cannot {operation} "
                "authorized parties for public function"
            )

    def _authorization_targets(
        self, account: Account, function_id: str, version_id: str | None
    ) -> list[FunctionVersion]:
        """The account's own versions an authorization call acts on: the one named, or every
        version of the function (oldest first); NVCF's 404 when there is none."""
        with self._lock:
            mine = [
                v
                for v in self._versions.values()
                if v.function_id == function_id
                and v.nca_id == account.nca_id
                and (version_id is None or v.version_id == version_id)
            ]
        if not mine:
            raise NotFound(
                f"{authorizations.where(function_id, version_id)}: Not found in account "
                f"'{account.nca_id}'"
            )
        return mine

    def _level(self, version: FunctionVersion, version_id: str | None) -> frozenset[str]:
        return version.shared_with if version_id is not None else version.function_shared_with

    def _set_level(
        self, versions: list[FunctionVersion], version_id: str | None, accounts: frozenset[str]
    ) -> None:
        with self._lock:
            for version in versions:
                if version_id is not None:
                    self._change(version, shared_with=accounts)
                else:
                    self._change(version, function_shared_with=accounts)

    def authorized_parties(
        self, account: Account, function_id: str, version_id: str | None
    ) -> list[dict[str, Any]]:
        """Each version's authorized accounts, both levels merged (the function's first)."""
        out = []
        for v in self._authorization_targets(account, function_id, version_id):
            merged = list(dict.fromkeys([*sorted(v.function_shared_with), *sorted(v.shared_with)]))
            if v.public:  # NVCF keeps a public function as the wildcard account
                merged.append(authorizations.WILDCARD)
            out.append(authorizations.parties_dto(v.function_id, v.nca_id, v.version_id, merged))
        return out

    def authorize(
        self,
        account: Account,
        function_id: str,
        version_id: str | None,
        body: Mapping[str, Any],
        known: Collection[str] | None,
    ) -> dict[str, Any]:
        """Replace the accounts of one level (the POST)."""
        parties = authorizations.validate_parties(body)
        self._refuse_public(function_id, version_id, "create")
        if any(nca_id == authorizations.WILDCARD for nca_id, _ in parties):
            raise BadRequest(
                f"{authorizations.where(function_id, version_id)}: Only NVIDIA Super Admin can "
                "make a function public"
            )
        versions = self._authorization_targets(account, function_id, version_id)
        for nca_id, client_id in parties:
            authorizations.check_party(nca_id, client_id, account.nca_id, known)
        accounts = frozenset(nca_id for nca_id, _ in parties)
        self._set_level(versions, version_id, accounts)
        return authorizations.parties_dto(
            function_id, versions[0].nca_id, version_id, sorted(accounts)
        )

    def change_authorization(
        self,
        account: Account,
        function_id: str,
        version_id: str | None,
        body: Mapping[str, Any],
        known: Collection[str] | None,
        *,
        add: bool,
    ) -> dict[str, Any]:
        """Add or remove one account at one level (the PATCHes)."""
        operation = "add" if add else "remove"
        nca_id, client_id = authorizations.party_of(body)
        self._refuse_public(function_id, version_id, operation)
        versions = self._authorization_targets(account, function_id, version_id)
        at = authorizations.where(function_id, version_id)
        if nca_id == authorizations.WILDCARD:
            raise BadRequest(f"{at}: Invalid authz account '*' specified for {operation} operation")
        authorizations.check_party(nca_id, client_id, account.nca_id, known)
        with self._lock:
            current = self._level(versions[0], version_id)
            if not current:
                raise NotFound(f"{at}: Does not have any authorized parties to be patched")
            level = "function version" if version_id is not None else "function"
            if add and nca_id in current:
                raise authorizations.Conflict(
                    f"{at}: Account '{nca_id}' is already authorized to access the {level}"
                )
            if not add and nca_id not in current:
                raise NotFound(
                    f"{at}: Specified account '{nca_id}' is not an authorized party for the {level}"
                )
            accounts = current | {nca_id} if add else current - {nca_id}
            self._set_level(versions, version_id, accounts)
        return authorizations.parties_dto(
            function_id, versions[0].nca_id, version_id, sorted(accounts)
        )

    def clear_authorizations(
        self, account: Account, function_id: str, version_id: str | None
    ) -> dict[str, Any]:
        """Forget the accounts of one level (the DELETE)."""
        self._refuse_public(function_id, version_id, "delete")
        versions = self._authorization_targets(account, function_id, version_id)
        self._set_level(versions, version_id, frozenset())
        return authorizations.parties_dto(function_id, versions[0].nca_id, version_id, None)

    def deploy(
        self, account: Account, function_id: str, version_id: str, body: Mapping[str, Any]
    ) -> FunctionVersion:
        version = self._own(account, function_id, version_id)
        deployment = _validate_deployment(body)
        with self._lock:
            if version.deployment is not None and version.status is not FunctionStatus.INACTIVE:
                raise BadRequest(
                    f"Function id '{function_id}' version '{version_id}' is already deployed"
                )
            now = self.clock.now()
            self._change(
                version,
                deployment=_with_ids(deployment, now),
                pinned=False,
                deploy_started_at=now,
                status=FunctionStatus.DEPLOYING,
                detached_status=None,
            )
        return self.refresh(version)

    def deployment(self, account: Account, function_id: str, version_id: str) -> FunctionVersion:
        version = self._own(account, function_id, version_id)
        if version.deployment is None:
            raise NotFound(f"Function id '{function_id}' version '{version_id}' has no deployment")
        return version

    def update_deployment(
        self, account: Account, function_id: str, version_id: str, body: Mapping[str, Any]
    ) -> FunctionVersion:
        version = self.deployment(account, function_id, version_id)
        new = _validate_deployment(body)
        old = version.deployment or {}
        old_specs = old.get("deploymentSpecifications", [])
        if old_specs and len(old_specs) != len(new["deploymentSpecifications"]):
            # DeploymentValidationService.java: MESG_SPECS_MISMATCH
            raise BadRequest(
                f"Function id '{function_id}', version ='{version_id}': GPU / InstanceType specs "
                "must match the ones in the original deployment"
            )
        for i, spec in enumerate(new["deploymentSpecifications"]):
            if i < len(old_specs) and (
                spec.get("gpu") != old_specs[i].get("gpu")
                or spec.get("backend", old_specs[i].get("backend")) != old_specs[i].get("backend")
            ):
                raise BadRequest("a deployment update cannot change the gpu or the backend")
        self._change(version, deployment=_with_ids(new, self.clock.now(), old))
        return version

    def _deployed_as(self, deployment_id: str) -> FunctionVersion:
        """The version whose deployment has this id, in any account
        (FunctionDeploymentLookupService.java: MESG_DEPLOYMENT_NOT_FOUND when none has)."""
        for version in self.all():
            if (
                version.deployment is not None
                and version.deployment.get("deploymentId") == deployment_id
                and version.status is not FunctionStatus.DELETED
            ):
                return version
        raise NotFound(f"Deployment id '{deployment_id}': Deployment not found")

    def by_deployment_id(self, account: Account, deployment_id: str) -> FunctionVersion:
        """The version whose deployment has this id, in the caller's account (another
        account's deployment is not found either)."""
        version = self._deployed_as(deployment_id)
        if version.nca_id != account.nca_id:
            raise NotFound(f"Deployment id '{deployment_id}': Deployment not found")
        return version

    def update_gpu_specification(
        self, account: Account, deployment_id: str, spec_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """NVCF's ``PATCH /v2/nvcf/deployments/{deploymentId}/gpu-specifications/{id}``
        (GpuSpecificationService.updateGpuSpecification): min/max instances and autoscaling of
        one spec change, on a version that is deployed (BUSY_STATUSES); the spec as it is now."""
        with self._lock:
            version = self._deployed_as(deployment_id)
            function_id, version_id = version.function_id, version.version_id
            if version.nca_id != account.nca_id:
                # NVCF finds the deployment in any account, then refuses another's
                # (MESG_FORBIDDEN_DEPLOYMENT_OPERATION)
                raise Forbidden(
                    f"Function id '{function_id}', version '{version_id}': "
                    "Forbidden to 'update' deployment"
                )
            if version.status not in BUSY:
                raise BadRequest(
                    f"Function id '{function_id}', version '{version_id}': "
                    f"Invalid status '{version.status.value}'"
                )
            _validate_gpu_spec_update(body, function_id, version_id)
            deployment = copy.deepcopy(version.deployment or {})
            specs = deployment.get("deploymentSpecifications") or []
            spec = next((s for s in specs if s.get("gpuSpecificationId") == spec_id), None)
            if spec is None:
                raise NotFound(f"Invalid request: Unknown gpu-specification-id '{spec_id}'")
            lo, hi = body.get("minInstances"), body.get("maxInstances")  # null: kept
            lo = spec.get("minInstances") if lo is None else lo
            hi = spec.get("maxInstances") if hi is None else hi
            if lo > hi:
                raise BadRequest(
                    f"Invalid request: minInstances '{int(lo)}' must be lesser than or equal to "
                    f"maxInstances '{int(hi)}'"
                )
            spec["minInstances"], spec["maxInstances"] = int(lo), int(hi)
            if body.get("autoscalingConfigurationPolicy") == "PLATFORM_CONFIGURATION":
                spec.pop("autoscalingConfiguration", None)
            elif body.get("autoscalingConfiguration") is not None:
                spec["autoscalingConfiguration"] = copy.deepcopy(body["autoscalingConfiguration"])
            deployment["lastUpdatedAt"] = self.clock.now()
            self._change(version, deployment=deployment)
            return copy.deepcopy(spec)

    def undeploy(self, account: Account, function_id: str, version_id: str) -> FunctionVersion:
        version = self.deployment(account, function_id, version_id)
        self._change(
            version,
            deployment=None,
            pinned=False,
            deploy_started_at=None,
            status=FunctionStatus.INACTIVE,
            detached_status=None,
            error_reason=None,
        )
        return version

    def restore(self, version: FunctionVersion) -> None:
        """Put back a version that survives resets (``--function`` on the CLI), redeployed."""
        with self._lock:
            version.status = FunctionStatus.DEPLOYING
            version.deploy_started_at = self.clock.now()
            version.detached_status = None
            self._versions[version.version_id] = version
            self._save(version)
        self.refresh(version)

    def clear(self) -> None:
        """Forget every version (and its saved record)."""
        with self._lock:
            for version_id in self._versions:
                self.state.delete(KIND, version_id)
                self._on_secrets(version_id, None)
            self._versions.clear()


def health_problem(container: Container, version: FunctionVersion) -> str | None:
    """``None`` when the version's health check passes, else what it got. A ``gRPC`` check of
    a container URL asks its gRPC server (grpc.health.v1) as NVIDIA's worker does (health.go:
    "grpc doesn't support path or status"); any other check is ``GET healthUri``."""
    from ..worker.containers import UrlContainer

    if version.health.get("protocol") == "gRPC" and isinstance(container, UrlContainer):
        host = f"[{container.host}]" if ":" in container.host else container.host
        target = f"{host}:{container.port or version.health_port}"
        try:
            from ..grpc_proxy import grpc_health_problem
        except ImportError as exc:
            return f"gRPC health check of {target} cannot run: {exc}"
        try:
            return grpc_health_problem(target, secure=container.scheme == "https")
        except Exception as exc:  # a check that breaks is a failed check, as below
            return f"gRPC health check of {target} failed: {exc}"
    try:
        code = container.health(version.health_uri, version.health_port)
    except Exception:
        code = 0
    if code == version.expected_health_status:
        return None
    return (
        f"health check GET {version.health_uri} on port {version.health_port} "
        f"answered {code or 'nothing'} (expected {version.expected_health_status})"
    )


def _pick(versions: list[FunctionVersion]) -> FunctionVersion:
    import random

    return random.choice(versions)
