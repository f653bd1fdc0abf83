"""NVCF-shaped (problem JSON) and S3-shaped (XML) responses."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from ..domain.errors import NvcfError, StorageError

PROBLEM_TYPE_PREFIX = "urn:kaizen:problem-details:"

#: A route: path rule, methods, handler ``(emulator, request, **path_args) -> Response``.
Route = tuple[str, list[str], Callable[..., Response]]

#: Set in the environ when the answer is a stream still being produced (an event stream passed
#: through): what a server stopping mid-answer would cut (the in-process transports cut it when
#: the emulator closes; a buffered answer was sent whole).
STREAMED_KEY = "nvcf_emulator.streamed"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def kebab(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class ProblemResponse(Response):
    """Problem JSON, remembering its ``requestId`` so the call log need not parse the body."""

    request_id: str = ""


class EnvelopeResponse(Response):
    """exec's JSON envelope, remembering its ``reqId`` (it has no ``NVCF-REQID`` header) so
    the call log need not parse the body."""

    request_id: str = ""


def problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    type_prefix: str = PROBLEM_TYPE_PREFIX,
    type_: str | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """RFC 7807 problem JSON with the members NVCF clients look at; ``type`` is
    ``type_prefix`` and the kebab-case title unless ``type_`` gives it whole."""
    request_id = request_id or str(uuid.uuid4())
    body = {
        "type": type_ if type_ is not None else type_prefix + kebab(title),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
        "requestId": request_id,
    }
    response = ProblemResponse(
        json.dumps(body, separators=(",", ":")),
        status=status,
        headers=headers,
        content_type="application/problem+json",
    )
    response.request_id = request_id
    return response


def nvcf_error(request: Request, error: NvcfError) -> Response:
    return problem(request, error.status, error.title, error.detail, headers=error.headers)


def s3_error(error: StorageError, request_id: str, resource: str) -> Response:
    """An S3 error document, as S3 (and moto) write it."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
        f"<Code>{escape(error.code)}</Code>",
        f"<Message>{escape(error.message)}</Message>",
    ]
    parts += [f"<{k}>{escape(str(v))}</{k}>" for k, v in error.fields.items()]
    parts += [
        f"<Resource>{escape(resource)}</Resource>",
        f"<RequestId>{request_id}</RequestId>",
        f"<HostId>{request_id}</HostId>",
        "</Error>",
    ]
    return Response(
        "".join(parts),
        status=error.status,
        content_type="application/xml",
        headers={"x-amz-request-id": request_id, "x-amz-id-2": request_id},
    )
