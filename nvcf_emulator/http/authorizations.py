"""Authorized-party routes: ``/v2/nvcf/authorizations/functions/{fid}[/versions/{vid}]`` (POST
replaces, GET lists, PATCH ``.../add`` and ``.../remove`` change one account, DELETE clears);
the rules are in :mod:`nvcf_emulator.domain.authorizations`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from werkzeug.wrappers import Request, Response

from .bodies import read_json_object
from .control import control_account
from .ids import control_id
from .responses import Route, json_response

if TYPE_CHECKING:
    from ..emulator import Emulator


def _ids(function_id: str, version_id: str | None) -> tuple[str, str | None]:
    fid = control_id("functionId", function_id)
    return fid, None if version_id is None else control_id("functionVersionId", version_id)


def authorize(
    emu: Emulator, request: Request, function_id: str, version_id: str | None = None, **_: str
) -> Response:
    account = control_account(emu, request, body=True)
    fid, vid = _ids(function_id, version_id)
    body = read_json_object(request)
    dto = emu.functions.authorize(account, fid, vid, body, emu.accounts.nca_ids())
    return json_response({"function": dto})


def listing(
    emu: Emulator, request: Request, function_id: str, version_id: str | None = None, **_: str
) -> Response:
    account = control_account(emu, request)
    fid, vid = _ids(function_id, version_id)
    dtos = emu.functions.authorized_parties(account, fid, vid)
    return json_response({"functions": dtos} if vid is None else {"function": dtos[0]})


def _patch(
    emu: Emulator, request: Request, function_id: str, version_id: str | None, *, add: bool
) -> Response:
    account = control_account(emu, request, body=True)
    fid, vid = _ids(function_id, version_id)
    body = read_json_object(request)
    known = emu.accounts.nca_ids()
    dto = emu.functions.change_authorization(account, fid, vid, body, known, add=add)
    return json_response({"function": dto})


def add(
    emu: Emulator, request: Request, function_id: str, version_id: str | None = None, **_: str
) -> Response:
    return _patch(emu, request, function_id, version_id, add=True)


def remove(
    emu: Emulator, request: Request, function_id: str, version_id: str | None = None, **_: str
) -> Response:
    return _patch(emu, request, function_id, version_id, add=False)


def clear(
    emu: Emulator, request: Request, function_id: str, version_id: str | None = None, **_: str
) -> Response:
    account = control_account(emu, request)
    fid, vid = _ids(function_id, version_id)
    return json_response({"function": emu.functions.clear_authorizations(account, fid, vid)})


_F = "/nvcf/authorizations/functions/<function_id>"
_V = _F + "/versions/<version_id>"
ROUTES: list[Route] = [
    (prefix + path + tail, methods, handler)
    for prefix in ("/v2", "/v2/orgs/<org>", "/v2/orgs/<org>/teams/<team>")
    for path in (_F, _V)
    for tail, methods, handler in (
        ("", ["POST"], authorize),
        ("", ["GET"], listing),
        ("", ["DELETE"], clear),
        ("/add", ["PATCH"], add),
        ("/remove", ["PATCH"], remove),
    )
]
