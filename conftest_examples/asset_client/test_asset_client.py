from __future__ import annotations

from pathlib import Path

import pytest
import requests

from nvcf_emulator import Emulator

from .client import upload_asset


def test_upload_asset_stores_the_file(nvcf: Emulator, tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG fake image")

    asset_id = upload_asset(image, "image/png", "red-cat-photo")

    assert nvcf.asset_bytes(asset_id) == image.read_bytes()
    (stored,) = nvcf.stored_assets()
    assert (stored.content_type, stored.description) == ("image/png", "red-cat-photo")


@pytest.mark.nvcf(max_asset_bytes=10)
def test_too_large_upload_raises(nvcf: Emulator, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 11)
    with pytest.raises(requests.HTTPError, match="400"):
        upload_asset(big, "application/octet-stream", "too big")
