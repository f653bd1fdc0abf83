"""A Flask inference container that reads its NVCF input assets (your container's code).

NVCF's worker stages each asset referenced by the client at ``<NVCF-ASSET-DIR>/<asset id>`` and
lists the ids in ``NVCF-FUNCTION-ASSET-IDS``. Files written to ``NVCF-LARGE-OUTPUT-DIR`` reach the
client in a zip (a 302 to it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

app = Flask("asset-reader")


@app.get("/v2/health/ready")  # NVCF's default health URI
def ready() -> str:
    return "ok"


@app.post("/infer")
def infer() -> ResponseReturnValue:
    asset_dir = Path(request.headers["NVCF-ASSET-DIR"])  # header names: case-insensitive
    asset_ids = [i for i in request.headers.get("NVCF-FUNCTION-ASSET-IDS", "").split(",") if i]
    if not asset_ids:
        return jsonify(error="reference at least one asset (NVCF-INPUT-ASSET-REFERENCES)"), 400
    report = {
        asset_id: {
            "bytes": (asset_dir / asset_id).stat().st_size,
            "sha256": hashlib.sha256((asset_dir / asset_id).read_bytes()).hexdigest(),
        }
        for asset_id in asset_ids
    }
    if request.get_json(silent=True, force=True) == {"write_report": True}:
        out = Path(request.headers["NVCF-LARGE-OUTPUT-DIR"])
        (out / "report.txt").write_text("\n".join(f"{k} {v['sha256']}" for k, v in report.items()))
    return jsonify(report)
