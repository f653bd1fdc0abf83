"""The pre-signed S3 storage endpoint: ``PUT`` to an upload URL, checked as S3 would."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.wrappers import Request, Response

from ..domain.assets import incomplete_body, is_asset_id
from ..domain.errors import StorageError
from ..storage.presign import (
    DESCRIPTION_HEADER,
    HeaderMismatch,
    PresignedRequest,
    decode_query,
    new_request_id,
)
from .responses import s3_error

if TYPE_CHECKING:
    from ..emulator import Emulator

log = logging.getLogger("nvcf_emulator")


def is_storage_request(emu: Emulator, request: Request) -> bool:
    host = request.host.lower().partition(":")[0]
    return host in emu.storage_hosts or request.path.startswith(f"/{emu.config.bucket}/")


def object_key(emu: Emulator, request: Request) -> str:
    """The object key addressed: virtual-hosted (``bucket.s3...``) or path-style (``/bucket/``)."""
    path = request.path
    prefix = f"/{emu.config.bucket}/"
    host = request.host.lower().partition(":")[0]
    if host not in emu.storage_hosts and path.startswith(prefix):
        return path[len(prefix) :]
    return path.lstrip("/")


def too_large_headers(request: Request) -> Response:
    request_id = new_request_id()
    error = StorageError(
        400,
        "RequestHeaderSectionTooLarge",
        "Your request header section exceeds the maximum allowed size.",
    )
    return s3_error(error, request_id, request.path)


def handle(emu: Emulator, request: Request) -> Response:
    request_id = new_request_id()
    try:
        if request.method != "PUT":
            raise StorageError(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                Method=request.method,
                ResourceType="OBJECT",
            )
        return _put(emu, request, request_id)
    except StorageError as error:
        return s3_error(error, request_id, request.path)
    except ClientDisconnected:
        return s3_error(incomplete_body(), request_id, request.path)
    except HTTPException as exc:
        invalid = StorageError(exc.code or 400, "InvalidRequest", exc.description or exc.name)
        return s3_error(invalid, request_id, request.path)
    except Exception:
        log.exception("unhandled storage error on %s %s", request.method, request.path)
        internal = StorageError(500, "InternalError", "We encountered an internal error.")
        return s3_error(internal, request_id, request.path)


def _put(emu: Emulator, request: Request, request_id: str) -> Response:
    key = object_key(emu, request)
    nca_id, _, asset_id = key.partition("/")
    asset = emu.assets.find(asset_id) if is_asset_id(asset_id) else None
    expected = None
    if asset is not None and asset.nca_id == nca_id:
        expected = {"content-type": asset.content_type, DESCRIPTION_HEADER: asset.description}
    presigned = PresignedRequest(
        method=request.method,
        scheme=request.scheme,
        host=request.host,
        path=request.path,
        query=decode_query(request.query_string.decode("latin-1")),
        headers={k.lower(): v for k, v in request.headers.items()},
    )
    try:
        verified = emu.signer.verify(presigned, expected)
    except HeaderMismatch as mismatch:
        raise StorageError(
            emu.config.header_mismatch_status,
            "SignatureDoesNotMatch",
            f"Upload headers do not match the asset: {mismatch}",
        ) from None
    unsigned = sorted(
        name
        for name in presigned.headers
        if name.startswith("x-amz-meta-") and name not in verified.signed_headers
    )
    if unsigned:
        raise StorageError(
            403,
            "AccessDenied",
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(unsigned),
        )
    if asset is None or asset.nca_id != nca_id:
        raise StorageError(404, "NoSuchUpload", "The asset this URL was made for is gone")
    raw_length = request.headers.get("Content-Length")
    if raw_length is not None and not raw_length.strip().isdigit():
        raise StorageError(
            400, "InvalidArgument", f"Content-Length '{raw_length}' is not a valid number"
        )
    length = request.content_length
    stored = emu.assets.upload(nca_id, asset_id, request.stream, length)
    return Response(
        b"",
        status=200,
        headers={
            "ETag": f'"{stored.etag}"',
            "x-amz-request-id": request_id,
            "x-amz-id-2": request_id,
        },
    )
