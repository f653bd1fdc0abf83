"""Review of the dashboard (``/_emulator/``) and the state it reads (``GET /_emulator/state``),
as a security reviewer and as a user: hostile strings from every source render as text, the
answers are hardened, no secret reaches the page, and the page keeps working with a token, with
many assets, with the clock moved far, in a narrow window and with its server gone.

The browser tests drive the page in headless Chromium (Playwright, the system's
``/usr/bin/chromium``) as ``tests/test_dashboard.py`` does; they skip without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.server import EmulatorServer

#: Sets ``window.__pwned`` wherever it would run: as markup, in an attribute, as a URL.
PAYLOAD = '"><img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
JS_URL = "javascript:window.__pwned=3"
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: shows the text after it mirrored
LONG = "x" * 3000  # no space to break at


def _served(tmp_path: Path, **settings: Any) -> tuple[Emulator, EmulatorServer]:
    emu = Emulator(root_dir=tmp_path, **settings)
    return emu, emu.serve()


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    marker = request.node.get_closest_marker("nvcf")
    emu, server = _served(tmp_path, **(marker.kwargs if marker else {}))
    try:
        yield server
    finally:
        server.stop()
        emu.close()


def _create_asset(
    server: EmulatorServer, description: str = "d", content_type: str = "text/plain"
) -> dict[str, Any]:
    r = requests.post(
        f"{server.url}/v2/nvcf/assets",
        headers=server.headers,
        json={"contentType": content_type, "description": description},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- the answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/_emulator/state", "/_emulator/clock", "/_emulator/requests", "/_emulator/faults"]
)
def test_admin_answers_are_neither_cached_nor_sniffed(served: EmulatorServer, path: str) -> None:
    """``/_emulator/state`` holds what the container got (client headers, its answer,
    tracebacks): it came without ``Cache-Control``, so a browser or a proxy could keep a copy
    of an admin-token-protected answer, and without ``nosniff``. (JSON needs no charset: the
    body is ASCII, ``json.dumps`` escapes the rest.)"""
    r = requests.get(f"{served.url}{path}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.content.isascii()


def test_page_cannot_be_framed(served: EmulatorServer) -> None:
    """The page has a reset button and clock controls: clickjacking. ``frame-ancestors 'none'``
    was there; browsers without CSP 2 read only ``X-Frame-Options``."""
    r = requests.get(f"{served.url}/_emulator/")
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.nvcf(asset_ttl=30 * 86400)
def test_state_and_page_survive_an_expiry_past_the_year_9999(served: EmulatorServer) -> None:
    """The clock stops at 9999-12-30 so that it can always be printed; an asset's expiry (its
    creation plus ``asset_ttl``) can lie beyond. With a 30-day TTL and the clock moved to
    9999-12-29, the state and the page were a 500 (``year 10000 is out of range``) and the
    dashboard said only that it could not read the state."""
    r = requests.post(f"{served.url}/_emulator/clock", json={"set": "9999-12-29T00:00:00Z"})
    assert r.status_code == 200
    asset = _create_asset(served)
    r = requests.get(f"{served.url}/_emulator/state")
    assert r.status_code == 200, r.text
    (entry,) = r.json()["assets"]
    assert entry["assetId"] == asset["assetId"]
    assert entry["expiresAt"] == "9999-12-31T23:59:59.999Z"  # the last time that prints
    assert 30 * 86400 - 60 < entry["secondsLeft"] <= 30 * 86400
    page = requests.get(f"{served.url}/_emulator/")
    assert page.status_code == 200 and asset["assetId"] in page.text


SECRETS_KEY = "nvapi-dashboard-review-key"
SECRETS_TOKEN = "admin-t0ken-for-review"


@pytest.mark.nvcf(api_keys={SECRETS_KEY: "review-nca"}, admin_token=SECRETS_TOKEN)
def test_no_secret_reaches_the_state_or_the_page(served: EmulatorServer) -> None:
    """The README lists what the state shows; API keys, the admin token, the URL-signing
    secret, upload URLs' signatures and functions' secret values are not in it, nor in the
    page, nor in the call log (it shows the key redacted)."""
    emu = served.emulator
    key = {"Authorization": f"Bearer {SECRETS_KEY}"}
    admin = {"Authorization": f"Bearer {SECRETS_TOKEN}"}
    r = requests.post(
        f"{served.url}/v2/nvcf/assets", headers=key, json={"contentType": "a/b", "description": "d"}
    )
    upload_url = r.json()["uploadUrl"]
    signature = upload_url.rpartition("X-Amz-Signature=")[2]
    assert len(signature) == 64
    requests.put(
        upload_url,
        data=b"x",
        headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"},
    )
    secret_value = "function-secret-value-42"
    r = requests.post(
        f"{served.url}/v2/nvcf/functions",
        headers=key,
        json={
            "name": "with-secret",
            "inferenceUrl": "/x",
            "inferencePort": 8000,
            "containerImage": "nvcr.io/a/b:1",
            "secrets": [{"name": "TOKEN", "value": secret_value}],
        },
    )
    assert r.status_code == 200, r.text
    fid, _ = emu.add_function(lambda req: {"ok": True}, name="plain", nca_id="review-nca")
    r = requests.post(f"{served.url}/v2/nvcf/pexec/functions/{fid}", headers=key, json={})
    assert r.status_code == 200, r.text

    texts = {
        path: requests.get(f"{served.url}{path}", headers=admin).text
        for path in ("/_emulator/state", "/_emulator/", "/_emulator/requests")
    }
    assert "with-secret" in texts["/_emulator/state"] and "plain" in texts["/_emulator/"]
    for path, text in texts.items():
        for secret in (SECRETS_KEY, SECRETS_TOKEN, emu.signer.secret_key, signature, secret_value):
            assert secret not in text, (path, secret)
        assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text, path
