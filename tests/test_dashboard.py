"""The dashboard at /_emulator/: the page over plain HTTP, the state it reads, and the page itself
driven in headless Chromium (Playwright with the system's ``/usr/bin/chromium``)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.http import admin
from nvcf_emulator.http.dashboard import fmt_bytes, fmt_duration, fmt_seconds
from nvcf_emulator.http.openapi import document
from nvcf_emulator.server import EmulatorServer
from nvcf_emulator.worker import ContainerRequest

from .conftest import Api

HOSTILE = "<script>window.pwned = 1</script><img src=x onerror=window.pwned=2> & {{asset_rows}}"


def echo(req: ContainerRequest) -> dict[str, Any]:
    return {"answer": "<b>42</b>", "assets": req.headers.get("NVCF-FUNCTION-ASSET-IDS")}


def invoke(base_url: str, headers: dict[str, str], fid: str, *asset_ids: str) -> str:
    r = requests.post(
        f"{base_url}/v2/nvcf/pexec/functions/{fid}",
        headers={**headers, "NVCF-INPUT-ASSET-REFERENCES": ",".join(asset_ids)},
        json={"prompt": "hi"},
    )
    assert r.status_code == 200, r.text
    return r.headers["NVCF-REQID"]


# -- the state behind the page ---------------------------------------------------------------------


def test_state_lists_functions_and_invocations(api: Api) -> None:
    fid, vid = api.emulator.add_function(echo, name="echo", inference_url="/infer")
    asset = api.new_asset(b"12345", description="cat")
    api.emulator.clock.advance(60)
    request_id = invoke(api.base_url, api.headers, fid, asset["assetId"])
    state = requests.get(f"{api.base_url}/_emulator/state").json()

    (entry,) = state["assets"]
    assert entry["uploaded"] is True
    assert 60 <= entry["ageSeconds"] < 70
    assert state["assetTtlSeconds"] == 86400
    assert state["functions"] == [
        {
            "functionId": fid,
            "name": "echo",
            "ncaId": "nvcf-emulator-nca",
            "versions": [
                {
                    "versionId": vid,
                    "name": "echo",
                    "status": "ACTIVE",
                    "createdAt": state["functions"][0]["versions"][0]["createdAt"],
                    "inferenceUrl": "/infer",
                    "inferencePort": 8000,
                    "containerImage": None,
                    "secretsFile": None,
                }
            ],
        }
    ]
    assert state["invocationCount"] == 1
    (inv,) = state["invocations"]
    assert inv["requestId"] == request_id
    assert (inv["functionId"], inv["functionVersionId"], inv["functionName"]) == (fid, vid, "echo")
    assert inv["status"] == "fulfilled"
    assert inv["assetIds"] == [asset["assetId"]]
    assert [Path(p).name for p in inv["stagedFiles"]] == [asset["assetId"]]
    assert inv["containerHeaders"]["NVCF-REQID"] == request_id
    assert "Authorization" not in inv["containerHeaders"]
    assert inv["responseStatus"] == 200
    assert '"answer":"<b>42</b>"' in inv["responsePreview"].replace(" ", "")
    assert inv["responseBytes"] == len(inv["responsePreview"].encode())
    assert inv["durationSeconds"] >= 0
    assert inv["startedAt"] and inv["finishedAt"]
    assert inv["error"] is None


def test_state_matches_its_schema_exactly(api: Api) -> None:
    from jsonschema import Draft202012Validator

    fid, _ = api.emulator.add_function(echo, name="echo", inference_url="/infer")
    api.emulator.add_function(echo, name="echo", inference_url="/v2", function_id=fid)
    asset = api.new_asset()
    api.create_asset()  # never uploaded
    invoke(api.base_url, api.headers, fid, asset["assetId"])
    r = requests.post(  # an invocation that fails in the container
        f"{api.base_url}/v2/nvcf/pexec/functions/{fid}",
        headers={**api.headers, "NVCF-INPUT-ASSET-REFERENCES": "not-an-asset"},
    )
    assert r.status_code >= 400
    state = requests.get(f"{api.base_url}/_emulator/state").json()
    assert len(state["functions"][0]["versions"]) == 2
    assert {a["uploaded"] for a in state["assets"]} == {True, False}
    schema = {**document(), "$ref": "#/components/schemas/State"}
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    validator.validate(state)
    extra = {**state, "surprise": 1}
    assert not validator.is_valid(extra)


def test_state_lists_the_newest_assets_only(nvcf: Emulator, monkeypatch: Any) -> None:
    """The dashboard reads ``/_emulator/state`` every second: with every asset of a long
    session in it (300 B each; 6 MB and 0.25 s of the emulator's CPU for 20,000), an open tab
    slowed the tests down. It lists the newest ``STATE_ASSETS``; ``assetCount`` has them all,
    and the page says so."""
    monkeypatch.setattr(admin, "STATE_ASSETS", 2)
    ids = [
        requests.post(
            f"{nvcf.base_url}/v2/nvcf/assets",
            headers=nvcf.headers,
            json={"contentType": "text/plain", "description": str(i)},
        ).json()["assetId"]
        for i in range(3)
    ]
    state = requests.get(f"{nvcf.base_url}/_emulator/state").json()
    assert state["assetCount"] == 3
    assert [a["assetId"] for a in state["assets"]] == ids[1:]
    page = requests.get(f"{nvcf.base_url}/_emulator/").text
    assert "The newest 2 of 3 assets." in page


def test_state_keeps_previews_and_the_log_bounded(nvcf: Emulator, monkeypatch: Any) -> None:
    monkeypatch.setattr(admin, "STATE_INVOCATIONS", 3)
    fid, _ = nvcf.add_function(lambda req: b"x" * 5000, name="big")
    ids = [invoke(nvcf.base_url, nvcf.headers, fid) for _ in range(5)]
    state = requests.get(f"{nvcf.base_url}/_emulator/state").json()
    assert state["invocationCount"] == 5
    assert [i["requestId"] for i in state["invocations"]] == ids[:1:-1]  # newest first
    preview = state["invocations"][0]["responsePreview"]
    assert preview == "x" * admin.PREVIEW_CHARS + "…"
    assert state["invocations"][0]["responseBytes"] == 5000


def test_formatting() -> None:
    assert [fmt_seconds(s) for s in (0, 12.4, 250, 86399, 90000)] == [
        "0 s",
        "12 s",
        "4 min 10 s",
        "23 h 59 min",
        "1 d 1 h",
    ]
    assert [fmt_bytes(n) for n in (None, 5, 2048, 3 * 1024 * 1024)] == [
        "—",
        "5 B",
        "2.0 KiB",
        "3.0 MiB",
    ]
    assert [fmt_duration(d) for d in (None, 0.0123, 2.5)] == ["—", "12 ms", "2.50 s"]


# -- the page over plain HTTP ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/_emulator/", "/_emulator", "/_emulator/ui"])
def test_page_is_html_with_a_strict_policy(api: Api, path: str) -> None:
    r = requests.get(f"{api.base_url}{path}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Cache-Control"] == "no-store"
    csp = r.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and "default-src 'none'" in csp and "connect-src 'self'" in csp
    html = r.text
    assert html.count(f'nonce="{nonce.group(1)}"') == 2  # the one style and the one script
    # Offline: nothing is loaded from anywhere else.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert '<html lang="en">' in html and "<main" in html and 'role="status"' in html
    assert 'data-api="/_emulator"' in html
    assert len(re.findall(r"<th scope=\"col\"[ >]", html)) == 9 + 7 + 10
    for control in ("advance-amount", "advance-unit", "token-input"):
        assert f'<label for="{control}"' in html
    # A new nonce every time.
    assert requests.get(f"{api.base_url}{path}").headers["Content-Security-Policy"] != csp


def test_page_renders_the_state_escaped(api: Api) -> None:
    fid, _ = api.emulator.add_function(echo, name="echo", inference_url="/infer")
    asset = api.new_asset(description=HOSTILE)
    request_id = invoke(api.base_url, api.headers, fid, asset["assetId"])
    html = requests.get(f"{api.base_url}/_emulator/").text
    assert asset["assetId"] in html and request_id in html and fid in html
    assert (
        "&lt;script&gt;window.pwned = 1&lt;/script&gt;&lt;img src=x onerror=window.pwned=2&gt;"
        in html
    )
    assert "&amp; {{asset_rows}}" in html  # user text is not a template placeholder
    assert "<script>window" not in html and "<img src=x" not in html
    # The container's answer is escaped too (it holds <b>).
    assert "&lt;b&gt;42&lt;/b&gt;" in html and "<b>42</b>" not in html
    assert html.count("<script") == 1


def test_page_shows_empty_tables(api: Api) -> None:
    html = requests.get(f"{api.base_url}/_emulator/").text
    for text in ("No assets.", "No functions.", "No invocations."):
        assert text in html


@pytest.mark.nvcf(admin_token="s3cret")
def test_page_with_an_admin_token(api: Api) -> None:
    asset = api.new_asset(description="secret-cat")
    # The page itself is served without the token, and shows nothing then.
    r = requests.get(f"{api.base_url}/_emulator/?token=s3cret")
    assert r.status_code == 200
    assert asset["assetId"] not in r.text and "secret-cat" not in r.text
    assert "s3cret" not in r.text  # the token given in the URL is not echoed
    assert "Waiting for the admin token" in r.text
    # Its data still needs it.
    assert requests.get(f"{api.base_url}/_emulator/state").status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert requests.get(f"{api.base_url}/_emulator/state", headers=auth).status_code == 200
    # With the token, the page comes with the state.
    assert asset["assetId"] in requests.get(f"{api.base_url}/_emulator/", headers=auth).text
    wrong = requests.get(f"{api.base_url}/_emulator/", headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 200 and asset["assetId"] not in wrong.text
    # Only the page is exempt.
    assert requests.get(f"{api.base_url}/_emulator/uix").status_code == 401


@pytest.mark.nvcf(admin_enabled=False)
def test_page_is_gone_with_the_admin_api(api: Api) -> None:
    assert requests.get(f"{api.base_url}/_emulator/").status_code == 404


def test_dashboard_helper_serves_an_in_process_emulator(nvcf: Emulator) -> None:
    before = nvcf.storage_url
    url = nvcf.dashboard()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/_emulator/", url)
    assert nvcf.dashboard() == url  # one server
    # In-process clients and upload URLs are untouched...
    assert nvcf.storage_url == before
    asset = requests.post(
        f"{nvcf.base_url}/v2/nvcf/assets",
        headers=nvcf.headers,
        json={"contentType": "text/plain", "description": "d"},
    ).json()
    assert asset["uploadUrl"].startswith(before)
    # ...and the page shows the same emulator.
    assert asset["assetId"] in requests.get(url).text
    server = nvcf._dashboard
    assert server is not None
    nvcf.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def test_dashboard_url_carries_the_admin_token(tmp_path: Path) -> None:
    emu = Emulator(root_dir=tmp_path, admin_token="a b&c")
    try:
        url = emu.dashboard()
        assert url.endswith("/_emulator/?token=a+b%26c")
    finally:
        emu.close()


# -- the page in a browser -------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where the browser test writes its screenshot when asked to (``NVCF_DASHBOARD_SCREENSHOT=1``).
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if executable is None:
        pytest.skip(f"{CHROMIUM} is not installed (make test installs the Debian chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    marker = request.node.get_closest_marker("nvcf")
    emu = Emulator(root_dir=tmp_path, **(marker.kwargs if marker else {}))
    server = emu.serve()
    try:
        yield server
    finally:
        server.stop()
        emu.close()


@pytest.fixture
def console() -> list[str]:
    """The page's console errors and uncaught exceptions (a test may drop expected ones)."""
    return []


@pytest.fixture
def page(browser: Any, console: list[str]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    try:
        yield page
        assert console == []  # no script error, no CSP violation, no failed request
    finally:
        context.close()


def test_browser_shows_assets_and_invocations_and_moves_the_clock(
    served: EmulatorServer, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    base = served.url
    page.goto(f"{base}/_emulator/")
    assets = page.locator("#assets tbody")
    invocations = page.locator("#invocations tbody")
    expect(assets).to_contain_text("No assets.")

    # Made through the API while the page is open: it shows them without a reload.
    fid, vid = served.emulator.add_function(echo, name="echo", inference_url="/infer")

    def create(description: str) -> dict[str, Any]:
        r = requests.post(
            f"{base}/v2/nvcf/assets",
            headers=served.headers,
            json={"contentType": "image/png", "description": description},
        )
        return dict(r.json())

    hostile = create(HOSTILE)  # never uploaded
    asset = create("red cat, 2 KiB")
    r = requests.put(
        asset["uploadUrl"],
        data=b"\x89PNG" + b"\0" * 2044,
        headers={
            "Content-Type": "image/png",
            "x-amz-meta-nvcf-asset-description": "red cat, 2 KiB",
        },
    )
    assert r.status_code == 200
    request_id = invoke(base, served.headers, fid, asset["assetId"])

    row = page.locator(f'#assets tr[data-asset-id="{asset["assetId"]}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("2.0 KiB")
    expect(row).to_contain_text("23 h 59 min")
    bad = page.locator(f'#assets tr[data-asset-id="{hostile["assetId"]}"]')
    expect(bad.locator("td.text")).to_have_text(HOSTILE)  # shown as text, never run
    expect(bad).to_contain_text("no (waiting for its upload)")
    expect(page.locator(f'#functions tr[data-version-id="{vid}"]')).to_contain_text("ACTIVE")
    inv = invocations.locator(f'tr[data-request-id="{request_id}"]')
    expect(inv).to_contain_text("fulfilled")
    expect(inv).to_contain_text(asset["assetId"])
    # Headers and the answer open with the keyboard.
    inv.get_by_text("HTTP 200").focus()
    page.keyboard.press("Enter")
    expect(inv.locator("pre")).to_contain_text('"answer": "<b>42</b>"')
    expect(page.get_by_role("status")).to_contain_text("2 assets, 1 function version, 1 invocation")
    assert page.evaluate("window.pwned") is None

    shot = SCREENSHOT if os.environ.get("NVCF_DASHBOARD_SCREENSHOT") else tmp_path / "d.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.querySelectorAll('.scroll').forEach(e => { e.scrollLeft = 0 })")
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # 25 hours later, with the page's own control, the asset has expired.
    page.get_by_label("Advance the clock by").fill("25")
    page.get_by_label("Unit").select_option(label="hours")
    page.get_by_role("button", name="Advance").click()
    expect(page.get_by_role("status")).to_contain_text("Clock advanced by 25 hours")
    expect(row).to_have_count(0)
    expect(bad).to_have_count(0)
    expect(assets).to_contain_text("No assets.")
    expect(page.locator("#clock-offset")).to_have_text("1 d 1 h ahead of real time")
    expect(inv).to_be_visible()  # the invocation log stays
    # The details the reader opened stay open across refreshes.
    expect(inv.locator('details[data-key^="response:"]')).to_have_attribute("open", "")
    assert served.emulator.stored_assets() == []

    # Reset, from the keyboard.
    page.get_by_role("button", name="Reset the emulator").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("reset")
    expect(invocations).to_contain_text("No invocations.")
    expect(page.locator("#clock-offset")).to_have_text("in step with real time")


@pytest.mark.nvcf(admin_token="s3cret")
def test_browser_asks_for_the_admin_token(
    served: EmulatorServer, page: Any, console: list[str]
) -> None:
    from playwright.sync_api import expect

    asset = requests.post(
        f"{served.url}/v2/nvcf/assets",
        headers=served.headers,
        json={"contentType": "text/plain", "description": "cat"},
    ).json()
    row = page.locator(f'#assets tr[data-asset-id="{asset["assetId"]}"]')

    page.goto(f"{served.url}/_emulator/")
    expect(page.get_by_role("status")).to_contain_text("needs its token")
    page.get_by_label("Token").fill("s3cret")
    page.get_by_label("Token").press("Enter")
    expect(row).to_be_visible()
    expect(page.locator("#token-form")).to_be_hidden()

    # ?token= works too, and leaves the address bar.
    page.context.clear_cookies()
    page.evaluate("sessionStorage.clear()")
    page.goto(f"{served.url}/_emulator/?token=s3cret&x=1")
    expect(row).to_be_visible()
    assert page.url == f"{served.url}/_emulator/?x=1"
    assert page.evaluate("sessionStorage.getItem('nvcf-emulator-admin-token')") == "s3cret"
    # The first state read was refused, as it should be: the only request that failed.
    assert len(console) == 1 and "401" in console[0]
    console.clear()
