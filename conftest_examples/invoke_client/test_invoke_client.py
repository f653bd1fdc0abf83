"""The client in ``client.py`` against in-process containers: 200, 202 + polling, progress, 302."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from pathlib import Path

import pytest

from nvcf_emulator import ContainerRequest, Emulator

from .client import InvocationError, invoke, upload_asset


def word_count(request: ContainerRequest) -> dict[str, object]:
    """A container as a plain function: counts the words of each input asset."""
    return {
        asset_id: len(request.asset_path(asset_id).read_text().split())
        for asset_id in request.asset_ids
    } | {"echo": request.json()}


def test_create_upload_invoke(nvcf: Emulator, tmp_path: Path) -> None:
    fid, _ = nvcf.add_function(word_count, name="wc")
    doc = tmp_path / "doc.txt"
    doc.write_text("the quick brown fox")

    asset_id = upload_asset(doc, "text/plain", "a document")
    result = invoke(fid, {"lang": "en"}, [asset_id])

    assert result.status == 200
    assert result.body == {asset_id: 4, "echo": {"lang": "en"}}
    assert result.request_id == nvcf.invocations[-1].request_id


@pytest.mark.nvcf(always_async=True)  # every invocation answers 202 first, as a slow one would
def test_polls_after_202(nvcf: Emulator, tmp_path: Path) -> None:
    fid, _ = nvcf.add_function(word_count, name="wc")
    doc = tmp_path / "doc.txt"
    doc.write_text("one two")
    sleeps: list[float] = []

    asset_id = upload_asset(doc, "text/plain", "d")

    result = invoke(fid, {}, [asset_id], sleep=sleeps.append)

    assert result.status == 200
    assert sleeps  # it did poll GET /v2/nvcf/pexec/status/{reqId}
    assert result.body[asset_id] == 2


def test_progress_then_result(nvcf: Emulator) -> None:
    go_on = threading.Event()

    def slow(request: ContainerRequest) -> dict[str, str]:
        request.write_progress(40, {"stage": "halfway"})
        go_on.wait(10)
        return {"done": "yes"}

    fid, _ = nvcf.add_function(slow, name="slow")

    def release(_: float) -> None:
        go_on.set()  # the first poll lets the container finish

    result = invoke(fid, {}, poll_seconds=1, sleep=release)

    assert result.body == {"done": "yes"}
    assert result.progress == [40]


def test_large_output_comes_back_as_zip(nvcf: Emulator) -> None:
    def big(request: ContainerRequest) -> dict[str, str]:
        (request.output_dir / "image.png").write_bytes(b"\x89PNG" * 10)
        return {"see": "image.png"}

    fid, _ = nvcf.add_function(big, name="big")
    result = invoke(fid, {})

    assert result.status == 302 and result.zip_bytes is not None
    archive = zipfile.ZipFile(io.BytesIO(result.zip_bytes))
    assert archive.read("image.png") == b"\x89PNG" * 10
    assert json.loads(archive.read(f"{result.request_id}.response")) == {"see": "image.png"}


def test_unknown_asset_raises(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(word_count, name="wc")
    with pytest.raises(InvocationError) as info:
        invoke(fid, {}, ["00000000-0000-4000-8000-000000000000"])
    assert info.value.response.status_code == 404
