"""Copy next to your model repository's tests: a Triton container for the in-process emulator.

``TritonContainer`` loads ``model_repository/`` as ``tritonserver --model-repository`` would, with
``--http-header-forward-pattern NVCF-.*`` (its default ``forward_pattern``). Needs numpy
(``pip install 'nvcf-emulator[triton]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.triton import TritonContainer

MODEL_REPOSITORY = Path(__file__).parent / "model_repository"
API = "https://api.nvcf.nvidia.com"


@pytest.fixture
def triton() -> Iterator[TritonContainer]:
    container = TritonContainer(MODEL_REPOSITORY)  # loads and initializes every model
    yield container
    container.close()  # calls each model's finalize()


@pytest.fixture
def upload_asset(nvcf: Emulator) -> Callable[[bytes], str]:
    """Create an asset, upload ``data``, return its id (as a client would)."""

    def upload(data: bytes) -> str:
        meta = {"contentType": "application/octet-stream", "description": "model input"}
        asset = requests.post(f"{API}/v2/nvcf/assets", headers=nvcf.headers, json=meta).json()
        r = requests.put(
            asset["uploadUrl"],
            data=data,
            headers={
                "Content-Type": meta["contentType"],
                "x-amz-meta-nvcf-asset-description": meta["description"],
            },
        )
        r.raise_for_status()
        return str(asset["assetId"])

    return upload
