"""Target 3: invocation overhead — a small-asset pexec call of a trivial container, in-process
vs calling that container straight through ``werkzeug.test.Client``; and server-mode
requests/s with 8 concurrent clients vs a bare threaded werkzeug server of the same container.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from _common import Row, Stat, bench_tmpdir, child, ratio_row

BATCH = 25
BATCHES = 16
CLIENTS = 8
LOAD_SECONDS = 1.5
LOAD_ROUNDS = 3
ASSET_BYTES = 1024
BODY = {"prompt": "hello", "n": 1}


def container_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The trivial container: health 200; inference reads its input asset and echoes the body."""
    if environ["PATH_INFO"] == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.loads(environ["wsgi.input"].read(length) or b"{}")
    size = 0
    asset_dir = environ.get("HTTP_NVCF_ASSET_DIR")
    for asset_id in filter(None, environ.get("HTTP_NVCF_FUNCTION_ASSET_IDS", "").split(",")):
        with open(os.path.join(asset_dir or "", asset_id), "rb") as f:
            size += len(f.read())
    out = json.dumps({"echo": body, "assetBytes": size}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]


def _setup(emu: Any, session: Any, base: str) -> tuple[str, str]:
    """Register the container and upload one small asset; (function id, asset id)."""
    fn = emu.add_function(container_app, name="bench", inference_url="/infer", health_uri="/health")
    created = session.post(
        f"{base}/v2/nvcf/assets",
        headers=emu.headers,
        json={"contentType": "application/octet-stream", "description": "bench input"},
    )
    created.raise_for_status()
    asset = created.json()
    put = session.put(
        asset["uploadUrl"],
        data=b"a" * ASSET_BYTES,
        headers={
            "Content-Type": "application/octet-stream",
            "x-amz-meta-nvcf-asset-description": "bench input",
        },
    )
    put.raise_for_status()
    return fn.function_id, asset["assetId"]


def _staged_copy(scratch: Path, asset_id: str) -> Path:
    """The asset as the worker stages it, for the direct (baseline) calls."""
    asset_dir = scratch / "staged"
    asset_dir.mkdir()
    (asset_dir / asset_id).write_bytes(b"a" * ASSET_BYTES)
    return asset_dir


def inprocess(batch: int, batches: int, disk_staging: bool = False) -> dict[str, Any]:
    """Interleaved batches of: pexec through ``requests`` (what a test does), pexec through
    ``werkzeug.test.Client`` on the emulator's app (no ``requests``), the container directly,
    and ``requests`` alone on an adapter that answers at once (what the client costs).
    ``disk_staging``: the per-request asset/output dirs under ``root_dir`` on disk
    (``ram_staging_bytes=0``) instead of the default RAM staging."""
    import requests
    from requests.adapters import BaseAdapter
    from werkzeug.test import Client

    from nvcf_emulator import Emulator

    class Answered(BaseAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
            resp = requests.Response()
            resp.status_code, resp._content = 200, b'{"assetBytes": 1024}'
            resp.request, resp.url = request, request.url
            return resp

        def close(self) -> None:
            pass

    scratch = Path(bench_tmpdir())
    emu = Emulator(root_dir=scratch / "emu", ram_staging_bytes=0 if disk_staging else 1 << 24)
    emu.__enter__()
    session = requests.Session()
    try:
        function_id, asset_id = _setup(emu, session, emu.base_url)
        url = f"{emu.base_url}/v2/nvcf/pexec/functions/{function_id}"
        headers = {**emu.headers, "NVCF-INPUT-ASSET-REFERENCES": asset_id}
        client = Client(container_app)
        direct_headers = {
            "NVCF-ASSET-DIR": str(_staged_copy(scratch, asset_id)),
            "NVCF-FUNCTION-ASSET-IDS": asset_id,
        }

        def via_emulator() -> None:
            resp = session.post(url, headers=headers, json=BODY)
            if resp.status_code != 200 or resp.json()["assetBytes"] != ASSET_BYTES:
                raise RuntimeError(f"invoke answered {resp.status_code}: {resp.text[:300]}")

        app_client = Client(emu.app)
        app_path = f"/v2/nvcf/pexec/functions/{function_id}"

        def via_app() -> None:  # the emulator without requests: its own share of the cost
            resp = app_client.post(app_path, headers=headers, json=BODY, base_url=emu.base_url)
            if resp.status_code != 200:
                raise RuntimeError(f"invoke answered {resp.status_code}: {resp.text[:300]}")

        def direct() -> None:
            resp = client.post("/infer", headers=direct_headers, json=BODY)
            if resp.status_code != 200 or resp.get_json()["assetBytes"] != ASSET_BYTES:
                raise RuntimeError(f"direct call answered {resp.status_code}")

        bare = requests.Session()
        bare.mount("http://answered.invalid/", Answered())
        bare_url = "http://answered.invalid" + app_path

        def requests_only() -> None:
            resp = bare.post(bare_url, headers=headers, json=BODY)
            if resp.json()["assetBytes"] != ASSET_BYTES:
                raise RuntimeError("the null adapter answered something else")

        emu_t, app_t, direct_t, req_t = [], [], [], []
        for _ in range(3):
            via_emulator()
            via_app()
            direct()
            requests_only()
        for _ in range(batches):  # interleaved batches: both see the same machine
            started = time.perf_counter()
            for _ in range(batch):
                via_emulator()
            emu_t.append((time.perf_counter() - started) / batch)
            started = time.perf_counter()
            for _ in range(batch):
                via_app()
            app_t.append((time.perf_counter() - started) / batch)
            started = time.perf_counter()
            for _ in range(batch):
                direct()
            direct_t.append((time.perf_counter() - started) / batch)
            started = time.perf_counter()
            for _ in range(batch):
                requests_only()
            req_t.append((time.perf_counter() - started) / batch)
    finally:
        session.close()
        emu.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"emu": emu_t, "app": app_t, "direct": direct_t, "requests": req_t}


def load(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    clients: int,
    seconds: float,
    close: bool = False,
) -> float:
    """Requests/s that ``clients`` keep-alive connections (threads) complete in ``seconds``
    (``close``: each request asks for ``Connection: close``, so each one connects anew)."""
    body = json.dumps(BODY).encode()
    hdrs = {**headers, "Content-Type": "application/json"}
    if close:
        hdrs["Connection"] = "close"
    counts = [0] * clients
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            start.wait()
            while time.perf_counter() < deadline[0]:
                conn.request("POST", path, body=body, headers=hdrs)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors.append(f"{resp.status}")
                    return
                counts[i] += 1
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"load errors: {errors[:3]}")
    return sum(counts) / elapsed


def server(clients: int, seconds: float, rounds: int) -> dict[str, Any]:
    import requests
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass  # as the emulator's handler: no access line on stderr per request

    from nvcf_emulator import Emulator

    scratch = Path(bench_tmpdir())
    emu = Emulator(root_dir=scratch / "emu")
    emu_server = emu.serve()
    bare = make_server("127.0.0.1", 0, container_app, threaded=True, request_handler=QuietHandler)
    bare_thread = threading.Thread(target=bare.serve_forever, daemon=True)
    bare_thread.start()
    session = requests.Session()
    try:
        function_id, asset_id = _setup(emu, session, emu_server.url)
        emu_headers = {**emu.headers, "NVCF-INPUT-ASSET-REFERENCES": asset_id}
        bare_headers = {
            "NVCF-ASSET-DIR": str(_staged_copy(scratch, asset_id)),
            "NVCF-FUNCTION-ASSET-IDS": asset_id,
        }
        emu_target = (emu_server.port, f"/v2/nvcf/pexec/functions/{function_id}", emu_headers)
        targets = {
            "emu": (*emu_target, False),
            "bare": (bare.server_port, "/infer", bare_headers, False),
            # The bare werkzeug server closes every connection; the emulator keeps them. Its
            # cost per request when each client asks to close, for a like-for-like row:
            "emu_close": (*emu_target, True),
        }
        out: dict[str, list[float]] = {name: [] for name in targets}
        out.update({f"{name}_cpu": [] for name in targets})

        def load_in_child(target: tuple[int, str, dict[str, str], bool], seconds: float) -> float:
            port, path, hdrs, close = target
            return float(
                child(
                    "bench_invoke",
                    "load",
                    host="127.0.0.1",
                    port=port,
                    path=path,
                    headers=hdrs,
                    clients=clients,
                    seconds=seconds,
                    close=close,
                )
            )

        for target in targets.values():  # warm-up
            load_in_child(target, 0.3)
        for _ in range(rounds):
            for name, target in targets.items():
                # This process runs both servers; only the one under load works meanwhile, so
                # its CPU time (user + system) over the load is that server's.
                cpu = os.times()
                rate = load_in_child(target, seconds)
                used = os.times()
                spent = (used.user - cpu.user) + (used.system - cpu.system)
                out[name].append(rate)
                out[f"{name}_cpu"].append(spent / (rate * seconds))
    finally:
        session.close()
        bare.shutdown()
        bare.server_close()
        bare_thread.join(5)
        emu_server.stop()
        emu.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def run() -> list[Row]:
    ip = child("bench_invoke", "inprocess", batch=BATCH, batches=BATCHES)
    disk = child("bench_invoke", "inprocess", batch=BATCH, batches=6, disk_staging=True)
    sv = child("bench_invoke", "server", clients=CLIENTS, seconds=LOAD_SECONDS, rounds=LOAD_ROUNDS)
    direct = Stat.of(ip["direct"])

    def info(name: str, stat: Stat, base: Stat, note: str) -> Row:
        return Row(
            "3",
            name,
            stat.fmt("ms", 1e3),
            f"werkzeug Client: {base.fmt('ms', 1e3)}",
            stat.median / base.median,
            "info",
            None,
            note,
        )

    return [
        ratio_row(
            "3",
            "invoke in-process (1 KiB asset), per call",
            Stat.of(ip["emu"]),
            direct,
            "ms",
            scale=1e3,
            at_most=3,
            baseline_label="werkzeug Client",
        ),
        info(
            "  same, werkzeug Client on emu.app (no requests)",
            Stat.of(ip["app"]),
            direct,
            "the emulator's own share of the in-process invoke (no requests client)",
        ),
        info(
            "  requests alone, adapter answering at once",
            Stat.of(ip["requests"]),
            direct,
            "what requests.Session.post costs before any transport: the floor of the first row",
        ),
        info(
            "  same as the first row, staging on disk",
            Stat.of(disk["emu"]),
            Stat.of(disk["direct"]),
            "ram_staging_bytes=0: per-request mkdir/copy/rmtree under root_dir on disk",
        ),
        ratio_row(
            "3",
            f"invoke server, {CLIENTS} clients",
            Stat.of(sv["emu"]),
            Stat.of(sv["bare"]),
            "req/s",
            at_least=0.5,
            baseline_label="bare werkzeug",
        ),
        Row(
            "3",
            "  same, server CPU per request (user + system)",
            Stat.of(sv["emu_cpu"]).fmt("ms", 1e3),
            f"bare werkzeug: {Stat.of(sv['bare_cpu']).fmt('ms', 1e3)}",
            Stat.of(sv["emu_cpu"]).median / Stat.of(sv["bare_cpu"]).median,
            "info",
            None,
            "both servers are bound by one GIL (~1.1 cores): req/s follows CPU per request",
        ),
        Row(
            "3",
            "  same, each request with Connection: close",
            Stat.of(sv["emu_close"]).fmt("req/s"),
            f"bare werkzeug: {Stat.of(sv['bare']).fmt('req/s')}",
            Stat.of(sv["emu_close"]).median / Stat.of(sv["bare"]).median,
            "info",
            None,
            "werkzeug's server closes every connection; the emulator's keeps them alive (the "
            "first row). Here every client asks to close: a new connection per request, as bare",
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
