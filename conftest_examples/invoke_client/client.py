"""Client code as a model repo writes it: create and upload assets, invoke, poll for the result.

NVCF's pexec answers ``200`` when the function is done within the poll window, else ``202`` with
an ``NVCF-REQID`` header: poll ``GET /v2/nvcf/pexec/status/{reqId}`` until it is no longer 202
(a 202 may carry ``NVCF-PERCENT-COMPLETE`` and a partial response). A ``302`` points at a zip of
a large result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

NVCF_API = os.environ.get("NVCF_API", "https://api.nvcf.nvidia.com")


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['NGC_API_KEY']}"}


def upload_asset(path: Path, content_type: str, description: str) -> str:
    """Create an asset, PUT ``path`` to its pre-signed URL, return the asset id."""
    created = requests.post(
        f"{NVCF_API}/v2/nvcf/assets",
        headers=_headers(),
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


@dataclass
class Result:
    status: int
    body: Any  # decoded JSON, or bytes
    request_id: str
    progress: list[int] = field(default_factory=list)  # NVCF-PERCENT-COMPLETE values seen
    zip_bytes: bytes | None = None


class InvocationError(RuntimeError):
    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"{response.status_code}: {response.text}")
        self.response = response


def invoke(
    function_id: str,
    payload: Any,
    asset_ids: Iterable[str] = (),
    *,
    poll_seconds: int = 60,
    max_wait: float = 600,
    sleep: Callable[[float], None] = time.sleep,
) -> Result:
    """Invoke ``function_id`` and wait for its answer (200/302), raising on an error status."""
    headers = {**_headers(), "NVCF-POLL-SECONDS": str(poll_seconds)}
    ids = ",".join(asset_ids)
    if ids:
        headers["NVCF-INPUT-ASSET-REFERENCES"] = ids
    r = requests.post(
        f"{NVCF_API}/v2/nvcf/pexec/functions/{function_id}",
        json=payload,
        headers=headers,
        allow_redirects=False,
        timeout=poll_seconds + 30,
    )
    progress: list[int] = []
    deadline = time.monotonic() + max_wait
    while r.status_code == 202:
        request_id = r.headers["NVCF-REQID"]
        if "NVCF-PERCENT-COMPLETE" in r.headers:
            progress.append(int(r.headers["NVCF-PERCENT-COMPLETE"]))
        if time.monotonic() > deadline:
            raise TimeoutError(f"request {request_id} still running after {max_wait} s")
        sleep(0.1)  # the status call itself waits up to NVCF-POLL-SECONDS
        r = requests.get(
            f"{NVCF_API}/v2/nvcf/pexec/status/{request_id}",
            headers={**_headers(), "NVCF-POLL-SECONDS": str(poll_seconds)},
            allow_redirects=False,
            timeout=poll_seconds + 30,
        )
    if r.status_code >= 400:
        raise InvocationError(r)
    request_id = r.headers.get("NVCF-REQID", "")
    if r.status_code == 302:  # a large result: a zip, fetched without Authorization
        zipped = requests.get(r.headers["Location"], timeout=300)
        zipped.raise_for_status()
        return Result(302, None, request_id, progress, zipped.content)
    is_json = r.headers.get("Content-Type", "").startswith("application/json")
    return Result(r.status_code, r.json() if is_json else r.content, request_id, progress)
