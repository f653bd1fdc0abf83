"""The admin API under ``/_emulator/``: health, reset, clock, state."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from werkzeug.wrappers import Request, Response

from ..domain.clock import isoformat
from ..domain.errors import BadRequest
from .bodies import read_json_object
from .responses import Route, json_response

if TYPE_CHECKING:
    from ..emulator import Emulator


def health(emu: Emulator, request: Request) -> Response:
    return json_response({"status": "ok"})


def reset(emu: Emulator, request: Request) -> Response:
    emu.reset()
    return json_response({"status": "reset"})


def _clock_state(emu: Emulator) -> dict[str, object]:
    now = emu.clock.now()
    return {"now": isoformat(now), "epoch": now, "offsetSeconds": emu.clock.offset}


def get_clock(emu: Emulator, request: Request) -> Response:
    return json_response(_clock_state(emu))


def set_clock(emu: Emulator, request: Request) -> Response:
    body = read_json_object(request)
    if ("advance" in body) == ("set" in body):
        raise BadRequest('Send exactly one of {"advance": <seconds>} or {"set": "<ISO 8601>"}')
    if "advance" in body:
        seconds = body["advance"]
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise BadRequest("advance must be a number of seconds")
        emu.clock.advance(seconds)
    else:
        when = body["set"]
        if not isinstance(when, str):
            raise BadRequest("set must be an ISO 8601 date-time string")
        try:
            emu.clock.set(datetime.fromisoformat(when))
        except ValueError:
            raise BadRequest(f"set: '{when}' is not an ISO 8601 date-time") from None
    emu.sweep()
    return json_response(_clock_state(emu))


def state(emu: Emulator, request: Request) -> Response:
    ttl = emu.config.asset_ttl
    now = emu.clock.now()
    assets = [
        {
            "assetId": a.asset_id,
            "ncaId": a.nca_id,
            "contentType": a.content_type,
            "description": a.description,
            "createdAt": isoformat(a.created_at),
            "uploadedAt": isoformat(a.uploaded_at) if a.uploaded_at is not None else None,
            "size": a.size,
            "expiresAt": isoformat(a.expires_at(ttl)),
            "secondsLeft": max(0.0, a.expires_at(ttl) - now),
        }
        for a in emu.assets.all()
    ]
    return json_response({"clock": _clock_state(emu), "assets": assets})


def requests_log(emu: Emulator, request: Request) -> Response:
    return json_response({"requests": [c.as_json() for c in emu.calls]})


def seed(emu: Emulator, request: Request) -> Response:
    body = read_json_object(request)
    value = body.get("seed")
    if "seed" not in body or not (
        value is None or (isinstance(value, int) and not isinstance(value, bool))
    ):
        raise BadRequest('Send {"seed": <integer>} for repeatable ids, or {"seed": null}')
    emu.ids.seed(value)
    return json_response({"seed": value})


ROUTES: list[Route] = [
    ("/_emulator/requests", ["GET"], requests_log),
    ("/_emulator/seed", ["POST"], seed),
    ("/_emulator/health", ["GET"], health),
    ("/_emulator/reset", ["POST"], reset),
    ("/_emulator/clock", ["GET"], get_clock),
    ("/_emulator/clock", ["POST"], set_clock),
    ("/_emulator/state", ["GET"], state),
]
