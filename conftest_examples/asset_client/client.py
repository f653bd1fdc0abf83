"""Client code as a model repo writes it: plain requests against the production URL."""

from __future__ import annotations

import os
from pathlib import Path

import requests

NVCF_API = "https://api.nvcf.nvidia.com"


def upload_asset(path: Path, content_type: str, description: str) -> str:
    """Create an asset, upload ``path`` to its pre-signed URL, return the asset id."""
    headers = {"Authorization": f"Bearer {os.environ['NGC_API_KEY']}"}
    created = requests.post(
        f"{NVCF_API}/v2/nvcf/assets",
        headers=headers,
        json={"contentType": content_type, "description": description},
        timeout=30,
    )
    created.raise_for_status()
    asset = created.json()
    with path.open("rb") as f:
        put = requests.put(
            asset["uploadUrl"],
            data=f,
            headers={
                "Content-Type": content_type,
                "x-amz-meta-nvcf-asset-description": description,
            },
            timeout=300,
        )
    put.raise_for_status()
    return str(asset["assetId"])
