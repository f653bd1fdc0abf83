"""Control-plane routes: ``/v2/nvcf/assets``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Request, Response

from ..config import check_base_url
from ..domain.accounts import Account
from ..domain.assets import Asset
from ..domain.clock import isoformat
from ..domain.errors import NvcfError
from .bodies import read_json_object, require_json
from .ids import control_id
from .responses import Route, json_response

if TYPE_CHECKING:
    from ..emulator import Emulator


def authenticate(emu: Emulator, request: Request) -> Account:
    return emu.accounts.authenticate(request.headers.get("Authorization"))


def control_account(emu: Emulator, request: Request, *, body: bool = False) -> Account:
    """The caller of a control-plane call, checked as NVCF's control plane checks it: the key
    (401), for a call with a JSON ``body`` its Content-Type (415), then an ``Accept`` that
    admits JSON (its controllers are ``produces = application/json``: ``Accept: text/html`` is
    406; none, ``*/*`` or ``application/*`` will do)."""
    account = authenticate(emu, request)
    if body:
        require_json(request)
    accept = request.accept_mimetypes
    if accept and accept.quality("application/json") <= 0:
        shown = request.headers.get("Accept", "")
        raise NvcfError(
            406,
            f"Acceptable representations: [application/json]; Accept '{shown}' admits none",
        )
    return account


def _summary(asset: Asset) -> dict[str, str]:
    return {
        "assetId": asset.asset_id,
        "contentType": asset.content_type,
        "description": asset.description,
    }


def _asset_id(value: str) -> str:
    if "/" in value:  # /v2/nvcf/assets/a/b: no such route
        raise NotFound()
    return control_id("assetId", value)


#: Set in the environ by a server whose upload URLs point at itself (no public URL given):
#: the storage URL it set.
SERVER_STORAGE_KEY = "nvcf_emulator.server_storage_url"


def _upload_base(emu: Emulator, request: Request) -> str | None:
    """Where a served emulator's upload URLs point for this caller: the origin it called
    (docker compose: ``http://nvcf:8080``, while the server binds 0.0.0.0), unless a public
    URL (``--public-url``, ``storage_base_url``) says where clients reach storage, or the
    ``Host`` names no URL."""
    own = request.environ.get(SERVER_STORAGE_KEY)
    if own is None or emu.storage_url != own:
        return None
    try:
        base = f"{request.host_url.rstrip('/')}/{emu.config.bucket}"
        return check_base_url(base, "Host")
    except ValueError:
        return None


def create_asset(emu: Emulator, request: Request) -> Response:
    account = control_account(emu, request, body=True)
    body = read_json_object(request)
    # Unknown members are ignored, as NVCF's Spring control plane does (Jackson's default there).
    asset = emu.assets.create(account, body.get("contentType"), body.get("description"))
    upload_url = emu.upload_url(asset, _upload_base(emu, request))
    return json_response({**_summary(asset), "uploadUrl": upload_url})


def list_assets(emu: Emulator, request: Request) -> Response:
    account = control_account(emu, request)
    return json_response({"assets": [_summary(a) for a in emu.assets.listing(account)]})


def get_asset(emu: Emulator, request: Request, asset_id: str) -> Response:
    account = control_account(emu, request)
    asset = emu.assets.get(account, _asset_id(asset_id))
    created = asset.uploaded_at if asset.uploaded_at is not None else asset.created_at
    return json_response({"asset": {**_summary(asset), "createdAt": isoformat(created)}})


def delete_asset(emu: Emulator, request: Request, asset_id: str) -> Response:
    account = control_account(emu, request)
    emu.assets.delete(account, _asset_id(asset_id))
    return Response(status=204)


ROUTES: list[Route] = [
    ("/v2/nvcf/assets", ["POST"], create_asset),
    ("/v2/nvcf/assets", ["GET"], list_assets),
    ("/v2/nvcf/assets/<path:asset_id>", ["GET"], get_asset),
    ("/v2/nvcf/assets/<path:asset_id>", ["DELETE"], delete_asset),
]
