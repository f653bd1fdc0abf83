"""A client with retries, as a model repo writes one: the code the fault tests exercise."""

from __future__ import annotations

import os

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

NVCF_API = os.environ.get("NVCF_API", "https://api.nvcf.nvidia.com")


def session() -> requests.Session:
    """Retries 429/500/503 and dropped connections, with no real waiting in tests."""
    retry = Retry(
        total=4,
        backoff_factor=float(os.environ.get("NVCF_BACKOFF", "0")),
        status_forcelist=(429, 500, 503),
        allowed_methods=None,  # POST too: creating an asset twice is harmless
        raise_on_status=False,
    )
    s = requests.Session()
    s.mount("https://", HTTPAdapter(max_retries=retry))
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.headers["Authorization"] = f"Bearer {os.environ['NGC_API_KEY']}"
    return s


def create_asset(
    s: requests.Session, content_type: str, description: str, timeout: float = 30
) -> dict[str, str]:
    r = s.post(
        f"{NVCF_API}/v2/nvcf/assets",
        json={"contentType": content_type, "description": description},
        timeout=timeout,
    )
    r.raise_for_status()
    return dict(r.json())
