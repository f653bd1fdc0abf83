"""Review of the dashboard (``/_emulator/``) and the state it reads (``GET /_emulator/state``),
as a security reviewer and as a user: hostile strings from every source render as text, the
answers are hardened, no secret reaches the page, and the page keeps working with a token, with
many assets, with the clock moved far, in a narrow window and with its server gone.

The browser tests drive the page in headless Chromium (Playwright, the system's
``/usr/bin/chromium``) as ``tests/test_dashboard.py`` does; they skip without it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.server import EmulatorServer
from nvcf_emulator.worker import ContainerRequest

#: Sets ``window.__pwned`` wherever it would run: as markup, in an attribute, as a URL.
PAYLOAD = '"><img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
#: What an NCA id may hold of it: attribute-breaking quotes and entities that must stay text.
NCA_PAYLOAD = "' onmouseover='window.__pwned=3' &lt;b&gt;x&lt;/b&gt;"
JS_URL = "javascript:window.__pwned=3"
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: shows the text after it mirrored
LONG = "x" * 3000  # no space to break at


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    """A server of its own per test (``@pytest.mark.nvcf(...)`` settings), stopped after it."""
    marker = request.node.get_closest_marker("nvcf")
    with Emulator(root_dir=tmp_path, **(marker.kwargs if marker else {})) as emu:
        server = emu.serve()
        try:
            yield server
        finally:
            server.stop()


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


def test_state_keeps_long_descriptions_to_a_preview(served: EmulatorServer) -> None:
    """A description may be most of a MiB (NVCF checks only that there is one): each such
    asset put all of it in every state read, every second while a dashboard is open (1,000
    of them: a GB a second). The state shows a preview, as it does of a container's answer;
    the assets API keeps the whole text."""
    from nvcf_emulator.http.admin import PREVIEW_CHARS

    content_type = "text/" + "x" * 100_000
    asset = _create_asset(served, "d" * 800_000, content_type)
    assert len(asset["description"]) == 800_000
    r = requests.get(f"{served.url}/_emulator/state")
    assert len(r.content) < 10_000
    (entry,) = r.json()["assets"]
    assert entry["description"] == "d" * PREVIEW_CHARS + "…"
    assert entry["contentType"] == content_type[:PREVIEW_CHARS] + "…"
    assert len(requests.get(f"{served.url}/_emulator/").content) < 100_000


SECRETS_KEY = "nvapi-dashboard-review-key"
SECRETS_TOKEN = "admin-t0ken-for-review"


@pytest.mark.nvcf(
    api_keys={SECRETS_KEY: "review-nca"}, admin_token=SECRETS_TOKEN, max_response_bytes=1024
)
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
    # A large result: a 302 to a link that works without a key, so its token is a secret too.
    big, _ = emu.add_function(lambda req: b"x" * 4096, name="big", nca_id="review-nca")
    r = requests.post(
        f"{served.url}/v2/nvcf/pexec/functions/{big}", headers=key, allow_redirects=False
    )
    assert r.status_code == 302, r.text
    link = r.headers["Location"]
    assert requests.get(link).status_code == 200
    result_token = link.split("/_nvcf/results/")[1].split("/")[0]
    assert len(result_token) > 32, link

    texts = {
        path: requests.get(f"{served.url}{path}", headers=admin).text
        for path in ("/_emulator/state", "/_emulator/", "/_emulator/requests")
    }
    assert "with-secret" in texts["/_emulator/state"] and "plain" in texts["/_emulator/"]
    for path, text in texts.items():
        secrets = (SECRETS_KEY, SECRETS_TOKEN, emu.signer.secret_key, signature, secret_value)
        # The call log names the download's path, token and all (see the next test).
        for secret in (*secrets, *([result_token] if path != "/_emulator/requests" else [])):
            assert secret not in text, (path, secret)
        assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text, path


@pytest.mark.nvcf(max_response_bytes=1024)
def test_call_log_keeps_a_large_results_token_out(served: EmulatorServer) -> None:
    """A large result's link works without a key for 24 h: its token is a bearer secret, as
    an upload URL's signature is. The signature is in the query, which the call log and the
    access log leave out; the token is in the path, which both record as it is."""
    emu = served.emulator
    fid, _ = emu.add_function(lambda req: b"x" * 4096, name="big")
    r = requests.post(
        f"{served.url}/v2/nvcf/pexec/functions/{fid}", headers=served.headers, allow_redirects=False
    )
    assert r.status_code == 302
    link = r.headers["Location"]
    token = link.split("/_nvcf/results/")[1].split("/")[0]
    assert requests.get(link).status_code == 200
    log = requests.get(f"{served.url}/_emulator/requests").json()
    assert token not in json.dumps(log)
    downloads = [c for c in log["requests"] if c["path"].startswith("/_nvcf/results/")]
    assert downloads and downloads[-1]["status"] == 200  # the call is still logged


def test_page_survives_a_lone_surrogate_in_a_traceback(served: EmulatorServer) -> None:
    """A container's exception may hold a lone surrogate (bytes decoded with
    ``surrogateescape``: file names, a subprocess's output). The state escapes it (JSON), but
    the page could not be encoded as UTF-8: a 500 instead of the dashboard, on every load,
    until a reset. It shows U+FFFD there, as a browser does for the state's copy."""

    def failing(req: ContainerRequest) -> Any:
        raise RuntimeError("lone \udcff surrogate")

    fid, _ = served.emulator.add_function(failing, name="failing")
    r = requests.post(f"{served.url}/v2/nvcf/pexec/functions/{fid}", headers=served.headers)
    assert r.status_code >= 500
    assert requests.get(f"{served.url}/_emulator/state").status_code == 200
    page = requests.get(f"{served.url}/_emulator/")
    assert page.status_code == 200, page.text
    assert "lone \ufffd surrogate" in page.text


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
def console() -> list[str]:
    """The page's console errors and uncaught exceptions (a test may drop expected ones)."""
    return []


@pytest.fixture
def page(browser: Any, console: list[str], request: pytest.FixtureRequest) -> Iterator[Any]:
    width = getattr(request, "param", 1280)
    context = browser.new_context(viewport={"width": width, "height": 720})
    page = context.new_page()
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    try:
        yield page
        assert console == []  # no script error, no CSP violation, no failed request
        assert page.evaluate("window.__pwned") is None
    finally:
        context.close()


def hostile_container(req: ContainerRequest) -> Any:
    if req.headers.get("X-Fail"):
        raise RuntimeError(PAYLOAD + " failed")
    return (PAYLOAD.encode(), 200, {"Content-Type": "text/html"})


def test_browser_shows_hostile_strings_as_typed_and_runs_none(
    served: EmulatorServer, page: Any
) -> None:
    """Every user string that reaches the page (asset description and content type, a
    function's inference URL and image, the headers a client sent on to the container, its
    answer and its traceback), first rendered by the server, then by the script: shown as
    text, exactly as typed (NUL and bidi controls included), and nothing runs."""
    from playwright.sync_api import expect

    base = served.url
    description = PAYLOAD + " \0 " + JS_URL + " " + RLO + "end"
    asset = _create_asset(served, description, "text/x-" + "a" * 40)
    r = requests.post(
        f"{base}/v2/nvcf/functions",
        headers=served.headers,
        json={
            "name": "hostile",
            "inferenceUrl": "/" + PAYLOAD,
            "inferencePort": 8000,
            "containerImage": JS_URL,
        },
    )
    assert r.status_code == 200, r.text
    vid = r.json()["function"]["versionId"]
    fid, _ = served.emulator.add_function(hostile_container, name="echo")
    # An account of its own, as hostile as the NCA id rule lets it be (it refuses '<>"').
    _, other_vid = served.emulator.add_function(hostile_container, name="other", nca_id=NCA_PAYLOAD)
    ok = requests.post(
        f"{base}/v2/nvcf/pexec/functions/{fid}",
        headers={**served.headers, "X-Note": PAYLOAD, "X-Link": JS_URL},
        json={},
    )
    assert ok.status_code == 200
    failed = requests.post(
        f"{base}/v2/nvcf/pexec/functions/{fid}", headers={**served.headers, "X-Fail": "1"}
    )
    assert failed.status_code >= 500

    # Server-rendered first (a script in it would run while the page loads)...
    page.goto(f"{base}/_emulator/")
    assert page.locator("img, a[href^='javascript']").count() == 0
    # ...then rendered again by the script, from the state (the NUL shows it: the HTML
    # parser turns one into U+FFFD, textContent keeps it).
    row = page.locator(f'#assets tr[data-asset-id="{asset["assetId"]}"]')
    expect(row.locator("td.text")).to_have_text(description)
    function = page.locator(f'#functions tr[data-version-id="{vid}"]')
    expect(function).to_contain_text("/" + PAYLOAD)
    expect(function).to_contain_text(JS_URL)
    other = page.locator(f'#functions tr[data-version-id="{other_vid}"]')
    expect(other.locator("td").last).to_have_text(NCA_PAYLOAD)
    inv = page.locator(f'#invocations tr[data-request-id="{ok.headers["NVCF-REQID"]}"]')
    inv.get_by_text("headers").click()
    expect(inv.locator("dl.headers")).to_contain_text(PAYLOAD)
    inv.get_by_text("HTTP 200").click()
    expect(inv.locator("pre")).to_have_text(PAYLOAD)
    bad = page.locator(f'#invocations tr[data-request-id="{failed.headers["NVCF-REQID"]}"]')
    bad.get_by_text("error", exact=True).click()
    expect(bad.locator('details[data-key^="error:"] pre')).to_contain_text(PAYLOAD + " failed")
    assert page.locator("img, a[href^='javascript'], #invocations script").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_browser_keeps_an_override_inside_its_string(served: EmulatorServer, page: Any) -> None:
    """An inference URL with RIGHT-TO-LEFT OVERRIDE mirrored the rest of its cell: the page
    read ``0008 trop`` for `` port 8000``. Each user string is now isolated (its own text is
    still shown as typed)."""
    from playwright.sync_api import expect

    r = requests.post(
        f"{served.url}/v2/nvcf/functions",
        headers=served.headers,
        json={
            "name": "bidi",
            "inferenceUrl": "/a" + RLO + "bc",
            "inferencePort": 8000,
            "containerImage": "nvcr.io/a/b:1",
        },
    )
    assert r.status_code == 200, r.text
    vid = r.json()["function"]["versionId"]
    page.goto(f"{served.url}/_emulator/")
    cell = page.locator(f'#functions tr[data-version-id="{vid}"] td').nth(2)
    expect(cell).to_have_text("/a" + RLO + "bc port 8000")
    # Where " port 8000" is drawn: its "p" left of its "8", as in any left-to-right text.
    p_x, eight_x = cell.evaluate(
        """(td) => {
            const text = [...td.childNodes].find((n) => n.data && n.data.includes("port"));
            const at = (i) => {
                const range = document.createRange();
                range.setStart(text, i);
                range.setEnd(text, i + 1);
                return range.getBoundingClientRect().x;
            };
            return [at(text.data.indexOf("p")), at(text.data.indexOf("8"))];
        }"""
    )
    assert p_x < eight_x


def test_browser_keeps_long_strings_inside_their_columns(served: EmulatorServer, page: Any) -> None:
    """A 3,000-character content type (NVCF's pattern allows it) made the assets table 29,000
    pixels wide: every other column was far off to the right. Long strings from users wrap in
    their cell, like the description already did."""
    from playwright.sync_api import expect

    asset = _create_asset(served, LONG, "text/" + LONG)
    r = requests.post(
        f"{served.url}/v2/nvcf/functions",
        headers=served.headers,
        json={
            "name": "long",
            "inferenceUrl": "/" + LONG,
            "inferencePort": 8000,
            "containerImage": "nvcr.io/" + LONG,
        },
    )
    assert r.status_code == 200, r.text
    fid, _ = served.emulator.add_function(lambda req: LONG, name="long-answer")
    long_header = "X-" + "h" * 1000
    r = requests.post(
        f"{served.url}/v2/nvcf/pexec/functions/{fid}",
        headers={**served.headers, long_header: LONG},
        json={},
    )
    assert r.status_code == 200
    page.goto(f"{served.url}/_emulator/")
    expect(page.locator(f'#assets tr[data-asset-id="{asset["assetId"]}"]')).to_be_visible()
    page.locator("#invocations summary", has_text="headers").click()
    page.locator("#invocations summary", has_text="HTTP 200").click()
    widths = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('table')]"
        ".map((t) => [t.id, t.scrollWidth]))"
    )
    assert all(width < 2600 for width in widths.values()), widths  # about two windows


def test_browser_keeps_a_text_selection_across_refreshes(served: EmulatorServer, page: Any) -> None:
    """Copying an asset id off the page did not work: the ages change every second, so every
    refresh rebuilt the whole assets table and the selection vanished under the mouse. Only
    the cells that changed are replaced now."""
    from playwright.sync_api import expect

    asset = _create_asset(served)
    page.goto(f"{served.url}/_emulator/")
    row = page.locator(f'#assets tr[data-asset-id="{asset["assetId"]}"]')
    age = row.locator("td").nth(4)
    served.emulator.clock.advance(3600)
    expect(age).to_have_text("1 h 0 min")  # the script has rendered the table
    row.locator("th code").evaluate("(code) => getSelection().selectAllChildren(code)")
    served.emulator.clock.advance(3600)
    expect(age).to_have_text("2 h 0 min")  # and again, with the selection made
    assert page.evaluate("getSelection().toString()") == asset["assetId"]


def test_browser_says_when_its_server_is_gone(
    served: EmulatorServer, page: Any, console: list[str]
) -> None:
    """The server stops under an open page: the page says it lost the emulator (no uncaught
    error), keeps what it last showed, and keeps trying until the server is back."""
    from playwright.sync_api import expect

    asset = _create_asset(served)
    page.goto(f"{served.url}/_emulator/")
    row = page.locator(f'#assets tr[data-asset-id="{asset["assetId"]}"]')
    expect(row).to_be_visible()
    served.stop()
    expect(page.get_by_role("status")).to_contain_text(
        "Lost the connection to the emulator", timeout=10_000
    )
    expect(row).to_be_visible()
    # Back on the same port (a restarted nvcf-emulate): the page picks it up by itself.
    again = served.emulator.serve(port=served.port)
    try:
        expect(page.get_by_role("status")).to_have_text("Connected again.", timeout=10_000)
    finally:
        page.goto("about:blank")  # no more polling
        again.stop()
    # What failed: only the state reads (the browser logs each refused connection).
    failed = "Failed to load resource: net::ERR_"  # refused, or cut by the stop mid-read
    assert console and all(line.startswith(failed) for line in console), console
    console.clear()


@pytest.mark.nvcf(admin_token="narrow-token")
@pytest.mark.parametrize("page", [360], indirect=True)
def test_browser_with_a_token_far_in_the_future_in_a_narrow_window(
    served: EmulatorServer, page: Any
) -> None:
    """A phone-sized window, an admin token and the clock at 9999-12-29: the page reads the
    state with the token, shows the date, and nothing but the tables' own scrolling is
    wider than the window."""
    from playwright.sync_api import expect

    auth = {"Authorization": "Bearer narrow-token"}
    r = requests.post(
        f"{served.url}/_emulator/clock", headers=auth, json={"set": "9999-12-29T00:00:00Z"}
    )
    assert r.status_code == 200
    asset = _create_asset(served)
    page.goto(f"{served.url}/_emulator/?token=narrow-token")
    expect(page.locator("#clock-now")).to_contain_text("9999-12-29")
    expect(page.locator(f'#assets tr[data-asset-id="{asset["assetId"]}"]')).to_be_visible()
    expect(page.locator("#clock-offset")).to_contain_text("ahead of real time")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert "narrow-token" not in page.url


def test_browser_with_more_assets_than_the_state_lists(served: EmulatorServer, page: Any) -> None:
    """1,500 assets: the state lists the newest 1,000 and the page says so; it keeps up."""
    from playwright.sync_api import expect

    emu = served.emulator
    account = emu.accounts.authenticate(served.headers["Authorization"])
    ids = [emu.assets.create(account, "text/plain", f"asset {i}").asset_id for i in range(1500)]
    page.goto(f"{served.url}/_emulator/")
    expect(page.locator("#assets-note")).to_have_text("The newest 1000 of 1500 assets.")
    expect(page.locator("#assets tbody tr")).to_have_count(1000)
    expect(page.locator(f'#assets tr[data-asset-id="{ids[-1]}"]')).to_be_visible()
    expect(page.locator(f'#assets tr[data-asset-id="{ids[499]}"]')).to_have_count(0)
    new = _create_asset(served, "the newest")
    expect(page.locator(f'#assets tr[data-asset-id="{new["assetId"]}"]')).to_be_visible()
    expect(page.locator("#assets-note")).to_have_text("The newest 1000 of 1501 assets.")
    expect(page.locator(f'#assets tr[data-asset-id="{ids[500]}"]')).to_have_count(0)
    state = json.loads(page.evaluate("fetch('/_emulator/state').then((r) => r.text())"))
    assert state["assetCount"] == 1501


@pytest.mark.nvcf(admin_token="right-token")
@pytest.mark.parametrize("typo", ["%E2%82%AC", "%0A"])  # a euro sign, a line break
def test_browser_asks_again_for_a_token_it_cannot_send(
    served: EmulatorServer, page: Any, typo: str
) -> None:
    """A token with a character beyond Latin-1 (a pasted curly quote, a euro sign) or a line
    break cannot go in an HTTP header: fetch threw before sending, the page said every second
    that it could not read the state, and never showed the token form again; the tab stayed
    stuck with it (sessionStorage) even across reloads. It now asks for the token again."""
    from playwright.sync_api import expect

    asset = _create_asset(served)
    page.goto(f"{served.url}/_emulator/?token=right-token{typo}")
    expect(page.get_by_role("status")).to_contain_text("type it again")
    expect(page.locator("#token-form")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('nvcf-emulator-admin-token')") is None
    page.get_by_label("Token").fill("right-token")
    page.get_by_label("Token").press("Enter")
    expect(page.locator(f'#assets tr[data-asset-id="{asset["assetId"]}"]')).to_be_visible()


def test_a_lone_surrogate_in_a_traceback_reaches_a_utf8_log_file(
    served: EmulatorServer, tmp_path: Path
) -> None:
    """The container's traceback is logged; a lone surrogate in it made a UTF-8 log file
    handler fail ("--- Logging error ---", the line lost) and pytest-xdist crash sending the
    captured log. It is written escaped."""
    import logging

    errors: list[BaseException | None] = []

    class Recording(logging.FileHandler):
        def handleError(self, record: logging.LogRecord) -> None:
            errors.append(sys.exc_info()[1])

    log_file = tmp_path / "emulator.log"
    handler = Recording(log_file, encoding="utf-8")
    logger = logging.getLogger("nvcf_emulator")
    logger.addHandler(handler)
    try:

        def failing(req: ContainerRequest) -> Any:
            raise RuntimeError("lone \udcff surrogate")

        fid, _ = served.emulator.add_function(failing, name="failing")
        requests.post(f"{served.url}/v2/nvcf/pexec/functions/{fid}", headers=served.headers)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert errors == []
    assert "lone \\udcff surrogate" in log_file.read_text(encoding="utf-8")
