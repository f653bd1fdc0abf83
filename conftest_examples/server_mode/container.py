"""The container under test (yours goes here): reads its NVCF input assets, answers their sizes
and SHA-256s. It lives in this folder so that the folder can be copied on its own."""

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
    asset_dir = Path(request.headers["NVCF-ASSET-DIR"])
    asset_ids = [i for i in request.headers.get("NVCF-FUNCTION-ASSET-IDS", "").split(",") if i]
    return jsonify(
        {
            asset_id: {
                "bytes": (asset_dir / asset_id).stat().st_size,
                "sha256": hashlib.sha256((asset_dir / asset_id).read_bytes()).hexdigest(),
            }
            for asset_id in asset_ids
        }
    )
