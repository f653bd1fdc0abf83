"""Control-plane routes: ``/v2/nvcf/assets``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Request, Response

from ..domain.accounts import Account
from ..domain.assets import Asset
from ..domain.clock import isoformat
from .bodies import read_json_object, require_json
from .ids import control_id
from .responses import Route, json_response

if TYPE_CHECKING:
    from ..emulator import Emulator


def authenticate(emu: Emulator, request: Request) -> Account:
    return emu.accounts.authenticate(request.headers.get("Authorization"))


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


def create_asset(emu: Emulator, request: Request) -> Response:
    account = authenticate(emu, request)
    require_json(request)
    body = read_json_object(request)
    # Unknown members are ignored, as NVCF's Spring control plane does (Jackson's default there).
    asset = emu.assets.create(account, body.get("contentType"), body.get("description"))
    return json_response({**_summary(asset), "uploadUrl": emu.upload_url(asset)})


def list_assets(emu: Emulator, request: Request) -> Response:
    account = authenticate(emu, request)
    return json_response({"assets": [_summary(a) for a in emu.assets.listing(account)]})


def get_asset(emu: Emulator, request: Request, asset_id: str) -> Response:
    account = authenticate(emu, request)
    asset = emu.assets.get(account, _asset_id(asset_id))
    created = asset.uploaded_at if asset.uploaded_at is not None else asset.created_at
    return json_response({"asset": {**_summary(asset), "createdAt": isoformat(created)}})


def delete_asset(emu: Emulator, request: Request, asset_id: str) -> Response:
    account = authenticate(emu, request)
    emu.assets.delete(account, _asset_id(asset_id))
    return Response(status=204)


ROUTES: list[Route] = [
    ("/v2/nvcf/assets", ["POST"], create_asset),
    ("/v2/nvcf/assets", ["GET"], list_assets),
    ("/v2/nvcf/assets/<path:asset_id>", ["GET"], get_asset),
    ("/v2/nvcf/assets/<path:asset_id>", ["DELETE"], delete_asset),
]
