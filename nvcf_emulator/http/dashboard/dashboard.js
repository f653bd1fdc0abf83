// nvcf-emulator dashboard: polls GET /_emulator/state and renders it. No dependencies.
// Everything from the API is set with textContent (never innerHTML), so it shows as text.
(() => {
  "use strict";
  const body = document.body;
  const API = body.dataset.api;
  const POLL_MS = Number(body.dataset.pollMs) || 1000;
  const TOKEN_KEY = "nvcf-emulator-admin-token";
  const $ = (id) => document.getElementById(id);
  const live = $("live");

  // ?token= goes to sessionStorage and out of the address bar (and the history).
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }

  function announce(text) {
    live.textContent = text;
  }

  function askForToken(message) {
    $("token-form").hidden = false;
    const error = new Error(message);
    error.unauthorized = true;
    return error;
  }

  async function call(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    const token = sessionStorage.getItem(TOKEN_KEY);
    // A header holds Latin-1 without line breaks or NUL: else fetch would throw on every poll
    // (as if the server were gone), and the form would never come back.
    if (token && /[^\t\u0020-\u00ff]/.test(token)) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw askForToken("That token holds a character an HTTP header cannot carry; type it again.");
    }
    if (token) headers.Authorization = "Bearer " + token;
    let response;
    try {
      response = await fetch(API + path, { ...options, headers, cache: "no-store" });
    } catch (reason) {  // no answer at all: the server stopped, or the network is down
      const error = new Error("Lost the connection to the emulator (" + reason.message +
        "); trying again every " + POLL_MS / 1000 + " s.");
      error.lost = true;
      throw error;
    }
    if (response.status === 401) throw askForToken("The admin API needs its token.");
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error((data && data.detail) || "HTTP " + response.status);
    }
    return data;
  }

  // -- formatting (the same rules as the page's Python renderer) ---------------------------
  function fmtSeconds(seconds) {
    const total = Math.max(0, Math.round(seconds));
    const d = Math.floor(total / 86400), h = Math.floor((total % 86400) / 3600);
    const m = Math.floor((total % 3600) / 60), s = total % 60;
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${s} s`;
    return `${s} s`;
  }
  function fmtBytes(size) {
    if (size === null || size === undefined) return "—";
    if (size < 1024) return `${size} B`;
    if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
    return `${(size / (1024 * 1024)).toFixed(1)} MiB`;
  }
  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    return seconds < 1 ? `${(seconds * 1000).toFixed(0)} ms` : `${seconds.toFixed(2)} s`;
  }
  function fmtOffset(offset) {
    if (Math.abs(offset) < 0.5) return "in step with real time";
    return `${fmtSeconds(Math.abs(offset))} ${offset > 0 ? "ahead of" : "behind"} real time`;
  }

  // -- DOM building: strings become text nodes -------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }
  const code = (text) => el("code", null, String(text));
  const fmtTime = (iso) => (iso.length >= 19 ? `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC` : iso);
  function time(iso) {
    const [day, ...clock] = fmtTime(iso).split(" ");
    return el("time", { datetime: iso }, el("span", null, day), " ",
      el("span", null, clock.join(" ")));
  }
  const td = (...children) => el("td", null, ...children);
  const dash = () => td("—");
  function badge(value) {
    return el("span", { class: "badge badge-" + value.toLowerCase() }, value);
  }
  function list(items) {
    if (!items.length) return "—";
    return el("ul", { class: "plain" }, ...items.map((item) => el("li", null, code(item))));
  }
  function details(key, summary, ...content) {
    return el("details", { "data-key": key }, el("summary", null, summary), ...content);
  }
  function empty(columns, text) {
    return el("tr", { class: "empty" }, el("td", { colspan: String(columns) }, text));
  }

  function assetRows(assets) {
    if (!assets.length) return [empty(9, "No assets.")];
    return assets.map((a) =>
      el("tr", { "data-asset-id": a.assetId },
        el("th", { scope: "row" }, code(a.assetId)),
        el("td", { class: "wraps" }, a.contentType),
        el("td", { class: "text" }, a.description),
        td(fmtBytes(a.size)),
        td(a.uploaded ? "yes" : "no (waiting for its upload)"),
        td(fmtSeconds(a.ageSeconds)),
        td(fmtSeconds(a.secondsLeft)),
        td(time(a.expiresAt)),
        td(code(a.ncaId))));
  }

  function functionRows(functions) {
    const rows = [];
    for (const f of functions) {
      for (const v of f.versions) {
        rows.push(el("tr", { "data-version-id": v.versionId },
          el("th", { scope: "row" }, v.name, el("br"), code(f.functionId)),
          td(code(v.versionId)),
          td(badge(v.status)),
          el("td", { class: "wraps" }, code(v.inferenceUrl), ` port ${v.inferencePort}`),
          el("td", { class: "wraps" }, v.containerImage === null ? "—" : code(v.containerImage)),
          td(time(v.createdAt)),
          td(code(f.ncaId))));
      }
    }
    return rows.length ? rows : [empty(7, "No functions.")];
  }

  function headersCell(requestId, headers) {
    const names = Object.keys(headers);
    if (!names.length) return dash();
    const dl = el("dl", { class: "headers" });
    for (const name of names) dl.append(el("dt", null, name), el("dd", null, headers[name]));
    return td(details("headers:" + requestId, `${names.length} headers`, dl));
  }

  function responseCell(inv) {
    if (inv.responseStatus === null) return dash();
    return td(details("response:" + inv.requestId,
      `HTTP ${inv.responseStatus} · ${fmtBytes(inv.responseBytes)}`,
      el("pre", null, inv.responsePreview || "")));
  }

  function invocationRows(invocations) {
    if (!invocations.length) return [empty(10, "No invocations.")];
    return invocations.map((i) =>
      el("tr", { "data-request-id": i.requestId },
        el("th", { scope: "row" }, code(i.requestId)),
        td(i.functionName, el("br"), code(i.functionId), el("br"), "version ",
          code(i.functionVersionId)),
        td(badge(i.status)),
        td(time(i.createdAt)),
        td(fmtDuration(i.durationSeconds)),
        td(list(i.assetIds)),
        el("td", { class: "paths" }, i.stagedFiles.length
          ? details("files:" + i.requestId, plural(i.stagedFiles.length, "file"), list(i.stagedFiles))
          : "—"),
        headersCell(i.requestId, i.containerHeaders),
        responseCell(i),
        i.error ? td(details("error:" + i.requestId, "error", el("pre", null, i.error))) : dash()));
  }

  // Update a table when its data changed, replacing only the rows and cells that changed
  // (the ages change every second): a reader's text selection (an id being copied), an open
  // <details> and the focus stay where they are, in what did not change.
  const shown = {};
  const built = new WeakMap();  // a cell -> its HTML as built (before a reader opened it)
  const rowKey = (row) => row.dataset.assetId || row.dataset.versionId ||
    row.dataset.requestId || "empty:" + row.textContent;
  function update(before, row) {
    if (!before || before.cells.length !== row.cells.length) {
      for (const cell of row.cells) built.set(cell, cell.outerHTML);
      return row;
    }
    const olds = [...before.cells];
    [...row.cells].forEach((cell, i) => {
      const html = cell.outerHTML;
      if (built.get(olds[i]) === html) return;
      built.set(cell, html);
      olds[i].replaceWith(cell);
    });
    return before;
  }
  function fill(tableId, data, build) {
    const key = JSON.stringify(data);
    if (shown[tableId] === key) return;
    shown[tableId] = key;
    const tbody = $(tableId).tBodies[0];
    const open = new Set(
      [...tbody.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    const focused = document.activeElement && tbody.contains(document.activeElement)
      ? document.activeElement.closest("details") : null;
    const focusKey = focused ? focused.dataset.key : null;
    const old = new Map([...tbody.rows].map((row) => [rowKey(row), row]));
    const rows = build(data).map((row) => update(old.get(rowKey(row)), row));
    const keep = new Set(rows);
    for (const row of [...tbody.rows]) if (!keep.has(row)) row.remove();
    // Moving a row would drop a selection in it: rows are inserted, never moved, when in order.
    rows.forEach((row, i) => {
      if (tbody.rows[i] !== row) tbody.insertBefore(row, tbody.rows[i] || null);
    });
    for (const d of tbody.querySelectorAll("details")) {
      if (open.has(d.dataset.key)) d.open = true;
      if (focusKey && d.dataset.key === focusKey && !tbody.contains(document.activeElement)) {
        d.querySelector("summary").focus();
      }
    }
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  let lastCounts = null;
  function render(state) {
    $("clock-now").textContent = fmtTime(state.clock.now);
    $("clock-now").setAttribute("datetime", state.clock.now);
    $("clock-offset").textContent = fmtOffset(state.clock.offsetSeconds);
    fill("assets", state.assets, assetRows);
    fill("functions", state.functions, functionRows);
    fill("invocations", state.invocations, invocationRows);
    $("assets-note").textContent = state.assetCount > state.assets.length
      ? `The newest ${state.assets.length} of ${state.assetCount} assets.`
      : "";
    const shownCount = state.invocations.length;
    $("invocations-note").textContent = state.invocationCount > shownCount
      ? `The last ${shownCount} of ${state.invocationCount} invocations, newest first.`
      : "Newest first.";
    const versions = state.functions.reduce((n, f) => n + f.versions.length, 0);
    const counts = [plural(state.assetCount, "asset"), plural(versions, "function version"),
      plural(state.invocationCount, "invocation")].join(", ");
    const change = lastCounts !== null && counts !== lastCounts ? "Now " + counts + "." : "";
    lastCounts = counts;
    return change;
  }

  let timer = null;
  let failing = false;
  // Reads and shows the state; says what changed (or what went wrong) after `prefix`.
  async function refresh(prefix = "") {
    clearTimeout(timer);
    let message = prefix;
    let unauthorized = false;
    try {
      const change = render(await call("/state"));
      if (failing && !prefix) message = "Connected again.";
      message = [message, change].filter(Boolean).join(" ");
      failing = false;
    } catch (error) {
      unauthorized = Boolean(error.unauthorized);
      const problem = error.lost ? error.message : "Cannot read the state: " + error.message;
      if (!failing || prefix) message = [prefix, problem].filter(Boolean).join(" ");
      failing = true;
    }
    if (message) announce(message);
    // Without a (valid) token, polling waits for the token form.
    if (!unauthorized) timer = setTimeout(tick, POLL_MS);
  }
  function tick() {
    if (document.hidden) {
      timer = setTimeout(tick, POLL_MS);
    } else {
      refresh();
    }
  }

  async function act(button, work) {
    button.disabled = true;
    let message;
    try {
      message = await work();
    } catch (error) {
      message = "Failed: " + error.message;
    } finally {
      button.disabled = false;
    }
    await refresh(message);
  }

  $("advance-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const amount = Number($("advance-amount").value);
    const unit = $("advance-unit");
    const seconds = amount * Number(unit.value);
    act(event.submitter || $("advance-form").querySelector("button"), async () => {
      const clock = await call("/clock", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ advance: seconds }),
      });
      return `Clock advanced by ${amount} ${unit.selectedOptions[0].text}; it is now ${clock.now}.`;
    });
  });

  $("reset").addEventListener("click", (event) => {
    act(event.currentTarget, async () => {
      await call("/reset", { method: "POST" });
      return "The emulator was reset.";
    });
  });

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value);
    $("token-input").value = "";
    $("token-form").hidden = true;
    act(event.submitter || $("token-form").querySelector("button"), async () => "Token saved.");
  });

  refresh();
})();
