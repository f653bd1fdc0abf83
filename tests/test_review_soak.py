"""Long sessions: one emulator shared by many tests (or ``nvcf-emulate`` running for days) keeps
what it holds per request bounded, ``reset()`` releases it all, and closing gives back every
thread, descriptor and file."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.domain import invocations
from nvcf_emulator.domain.calls import MAX_CALLS, Call
from nvcf_emulator.worker import ContainerRequest


def _invoke(base: str, emu: Emulator, fid: str, **kwargs: object) -> requests.Response:
    return requests.post(
        f"{base}/v2/nvcf/pexec/functions/{fid}",
        headers={**emu.headers, **kwargs.pop("headers", {})},  # type: ignore[dict-item]
        allow_redirects=False,
        **kwargs,  # type: ignore[arg-type]
    )


def _bodies(emu: Emulator) -> int:
    """Bytes of request and response bodies the invocation records hold."""
    total = 0
    for inv in emu.invocations:
        total += len(inv.request_body)
        if inv.container_response is not None:
            total += len(inv.container_response.body)
    return total


# -- the invocation records ---------------------------------------------------------------------


def test_the_invocation_records_keep_a_bounded_amount_of_bodies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 records of 5 MiB requests and answers would hold 10 GiB: the oldest records go once
    their bodies pass MAX_HISTORY_BYTES, the newest stay, whole."""
    monkeypatch.setattr(invocations, "MAX_HISTORY_BYTES", 100_000)
    with Emulator() as emu:
        fid, _ = emu.add_function(lambda req: req.body, name="echo")
        for i in range(200):
            r = _invoke(emu.base_url, emu, fid, data=bytes([i]) * 1000)
            assert r.status_code == 200 and r.content == bytes([i]) * 1000
        history = emu.invocations
        assert _bodies(emu) <= 100_000
        assert 45 <= len(history) <= 50  # 2,000 bytes each
        assert [inv.request_body[:1] for inv in history] == [
            bytes([i]) for i in range(200 - len(history), 200)
        ]
        assert history[-1].response_body == bytes([199]) * 1000


def test_a_record_larger_than_the_budget_is_kept_as_the_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invocations, "MAX_HISTORY_BYTES", 10_000)
    with Emulator() as emu:
        fid, _ = emu.add_function(lambda req: b"ok", name="f")
        for size in (100, 100, 50_000):
            assert _invoke(emu.base_url, emu, fid, data=b"x" * size).status_code == 200
        assert [len(inv.request_body) for inv in emu.invocations] == [50_000]
        assert _invoke(emu.base_url, emu, fid, data=b"y").status_code == 200
        assert [len(inv.request_body) for inv in emu.invocations] == [1]


def test_the_byte_budget_counts_from_zero_again_after_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invocations, "MAX_HISTORY_BYTES", 10_000)
    with Emulator() as emu:
        fid, _ = emu.add_function(lambda req: b"", name="f", persistent=True)
        for _ in range(9):
            assert _invoke(emu.base_url, emu, fid, data=b"x" * 1000).status_code == 200
        emu.reset()
        for _ in range(9):
            assert _invoke(emu.base_url, emu, fid, data=b"x" * 1000).status_code == 200
        assert len(emu.invocations) == 9  # none dropped for the bytes of records reset forgot


def test_the_call_log_keeps_the_last_max_calls() -> None:
    with Emulator() as emu:
        for i in range(MAX_CALLS + 50):
            emu.calls.record(Call(float(i), "GET", f"/{i}", 200, 0.0, None, None, "control"))
        r = requests.get(f"{emu.base_url}/_emulator/requests")
        assert r.status_code == 200
        paths = [c["path"] for c in r.json()["requests"]]
        assert len(paths) == MAX_CALLS
        assert paths == [f"/{i}" for i in range(50, MAX_CALLS + 50)]


def test_a_record_keeps_its_latest_progress_updates_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container writing progress every frame for its 300 s would leave 30,000 updates (and
    their partial responses) on its record: it keeps the latest MAX_PROGRESS_KEPT."""
    monkeypatch.setattr(invocations, "MAX_PROGRESS_KEPT", 5)
    with Emulator() as emu:

        def frames(req: ContainerRequest) -> dict[str, str]:
            for i in range(1, 13):
                req.write_progress(i, {"frame": i})
                deadline = time.monotonic() + 5  # until the worker's watcher has read it
                while not (emu.invocations[-1].progress or [None])[-1] or (
                    emu.invocations[-1].progress[-1].progress != i
                ):
                    assert time.monotonic() < deadline, f"update {i} never seen"
                    time.sleep(0.002)
            return {"done": "1"}

        fid, _ = emu.add_function(frames, name="frames")
        r = _invoke(emu.base_url, emu, fid, headers={"NVCF-POLL-SECONDS": "5"})
        while r.status_code == 202:
            r = requests.get(
                f"{emu.base_url}/v2/nvcf/pexec/status/{r.headers['NVCF-REQID']}",
                headers=emu.headers,
            )
        assert r.status_code == 200 and r.json() == {"done": "1"}
        assert [u.progress for u in emu.invocations[-1].progress] == [8, 9, 10, 11, 12]


# -- large results --------------------------------------------------------------------------------


def _wait_done(emu: Emulator, request_id: str) -> None:
    """Until the worker thread has settled ``request_id`` (real time: a thread, not a TTL)."""
    deadline = time.monotonic() + 10
    while not any(i.request_id == request_id and i.done for i in emu.invocations):
        assert time.monotonic() < deadline, "the container never finished"
        time.sleep(0.005)


def test_a_large_result_whose_request_was_abandoned_is_removed_with_it(tmp_path: Path) -> None:
    """The zip of a 302 nobody was given (the client went away after its 202) cannot be fetched
    by anyone: it goes with the request, not a day later (large outputs are the big files)."""
    gate = threading.Event()

    def render(req: ContainerRequest) -> dict[str, str]:
        assert gate.wait(10)
        (req.output_dir / "frame.png").write_bytes(b"p" * 1000)
        return {"frames": "1"}

    with Emulator(root_dir=tmp_path) as emu:
        fid, _ = emu.add_function(render, name="render")
        r = _invoke(emu.base_url, emu, fid, headers={"NVCF-POLL-SECONDS": "0"})
        assert r.status_code == 202
        request_id = r.headers["NVCF-REQID"]
        gate.set()
        _wait_done(emu, request_id)
        assert [p.name for p in (tmp_path / "results").iterdir()] == [f"{request_id}.zip"]
        emu.clock.advance(61)  # past the 10 s the client had to poll again, and a sweep's minute
        status = requests.get(
            f"{emu.base_url}/v2/nvcf/pexec/status/{request_id}", headers=emu.headers
        )
        assert status.status_code == 404
        assert list((tmp_path / "results").iterdir()) == []
        assert emu.invocation_service._results == {}


def test_a_large_result_handed_out_stays_for_its_link_lifetime(tmp_path: Path) -> None:
    def render(req: ContainerRequest) -> dict[str, str]:
        (req.output_dir / "frame.png").write_bytes(b"p" * 1000)
        return {"frames": "1"}

    with Emulator(root_dir=tmp_path) as emu:
        fid, _ = emu.add_function(render, name="render")
        r = _invoke(emu.base_url, emu, fid)
        while r.status_code == 202:
            r = requests.get(
                f"{emu.base_url}/v2/nvcf/pexec/status/{r.headers['NVCF-REQID']}",
                headers=emu.headers,
                allow_redirects=False,
            )
        assert r.status_code == 302
        emu.clock.advance(3 * 3600)
        emu.sweep()
        assert requests.get(r.headers["Location"]).status_code == 200
        emu.clock.advance(21 * 3600)
        emu.sweep()
        assert list((tmp_path / "results").iterdir()) == []


# -- a served emulator under a mixed load: reset releases it, close gives it all back -----------


def _open_fds() -> dict[str, str]:
    """This process's open descriptors, each with what it points to (listdir's own, closed by
    the time it is read, is left out)."""
    named = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            named[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    return named


def _fds() -> set[str]:
    return set(_open_fds())


def _new_fds(before: set[str], within: float = 5.0) -> dict[str, str]:
    """Descriptors open now and not in ``before``, with what they point to, once none is left
    or after ``within`` s: a thread another test in this xdist process left running may hold
    a file open for a moment, while a leaked descriptor stays open."""
    deadline = time.monotonic() + within
    while _fds() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    return {fd: target for fd, target in _open_fds().items() if fd not in before}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def baseline() -> Iterator[tuple[set[threading.Thread], set[str]]]:
    yield set(threading.enumerate()), _fds()


def _mixed_load(emu: Emulator, base: str, rounds: int) -> None:
    """Per round: an asset made, uploaded and used, a large (302) result fetched or left, a
    container error, an event stream read or dropped, an asset deleted, a fault fired."""

    def big(req: ContainerRequest) -> dict[str, str]:
        (req.output_dir / "out.bin").write_bytes(b"o" * 500)
        return {"ok": "1"}

    fids = {
        "echo": emu.add_function(lambda req: req.body, name="echo").function_id,
        "big": emu.add_function(big, name="big").function_id,
        "boom": emu.add_function(lambda req: (b"bad", 500), name="boom").function_id,
        "sse": emu.add_function(
            lambda req: iter([b"data: 1\n\n", b"data: 2\n\n"]), name="sse"
        ).function_id,
    }
    pexec = f"{base}/v2/nvcf/pexec"
    with requests.Session() as s:
        s.headers.update(emu.headers)
        for n in range(rounds):
            asset = s.post(
                f"{base}/v2/nvcf/assets", json={"contentType": "a/b", "description": "d"}
            ).json()
            put = s.put(
                asset["uploadUrl"],
                data=b"a" * 50,
                headers={"Content-Type": "a/b", "x-amz-meta-nvcf-asset-description": "d"},
            )
            assert put.status_code == 200
            refs = {"NVCF-INPUT-ASSET-REFERENCES": asset["assetId"]}
            r = s.post(f"{pexec}/functions/{fids['echo']}", data=b"e", headers=refs)
            assert r.status_code == 200
            r = s.post(f"{pexec}/functions/{fids['big']}", allow_redirects=False)
            while r.status_code == 202:
                r = s.get(f"{pexec}/status/{r.headers['NVCF-REQID']}", allow_redirects=False)
            assert r.status_code == 302
            if n % 2:
                assert requests.get(r.headers["Location"]).status_code == 200
            assert s.post(f"{pexec}/functions/{fids['boom']}").status_code == 500
            with s.post(
                f"{pexec}/functions/{fids['sse']}",
                headers={"Accept": "text/event-stream"},
                stream=True,
            ) as r:
                assert r.status_code == 200
                if n % 2:
                    assert b"".join(r.iter_content(None)) == b"data: 1\n\ndata: 2\n\n"
            if n % 3 == 0:
                assert s.delete(f"{base}/v2/nvcf/assets/{asset['assetId']}").status_code == 204
            emu.faults.add("list", status=503)
            assert s.get(f"{base}/v2/nvcf/assets").status_code == 503


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_a_served_emulator_under_mixed_load_resets_clean_and_closes_without_leaks(
    baseline: tuple[set[threading.Thread], set[str]], tmp_path: Path
) -> None:
    threads_before, fds_before = baseline
    emu = Emulator(root_dir=tmp_path / "root", max_response_bytes=100)
    server = emu.serve()
    ram = None
    try:
        _mixed_load(emu, server.url, 60)
        assert len(emu.invocations) == 240
        assert len([f for f in _files(emu.root / "results") if f.endswith(".zip")]) == 60
        assert emu.invocation_service._records == {}  # every result was fetched

        emu.reset()
        assert emu.invocations == [] and len(emu.calls) == 0 and len(emu.faults) == 0
        assert emu.stored_assets() == []
        assert _files(emu.root) == [".nvcf-emulator.lock"]  # no zips, no asset bytes
        ram = emu._ram_roots
        if ram is not None:  # the RAM staging dirs hold nothing between requests
            assert [p for root in ram for p in root.iterdir()] == []
    finally:
        server.stop()
        emu.close()
    leaked = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert leaked == []
    assert _new_fds(fds_before) == {}
    if ram is not None:
        assert not ram[0].parent.exists()


@pytest.mark.nvcf(worker_threads=1, container_timeout=0.3)
def test_a_container_that_never_returns_does_not_take_a_worker_for_good(nvcf: Emulator) -> None:
    """Python cannot stop a thread inside a callable container. Once its request timed out,
    the worker thread left in it is replaced, so a few hung tests do not leave every later
    invocation of the session queued for ever; it ends when the container returns."""
    release = threading.Event()

    def hang(req: ContainerRequest) -> dict[str, bool]:
        release.wait(30)
        return {"late": True}

    try:
        hung, _ = nvcf.add_function(hang, name="hang")
        quick, _ = nvcf.add_function(lambda req: {"ok": True}, name="quick")
        assert _invoke(nvcf.base_url, nvcf, quick).status_code == 200  # the pool is up
        before = threading.active_count()
        for _ in range(2):  # more hung requests than workers
            r = _invoke(nvcf.base_url, nvcf, hung, headers={"NVCF-POLL-SECONDS": "5"})
            assert r.status_code != 200, r.text  # the container timed out
        r = _invoke(nvcf.base_url, nvcf, quick, headers={"NVCF-POLL-SECONDS": "5"})
        assert (r.status_code, r.json()) == (200, {"ok": True})
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while threading.active_count() > before:  # the hung ones end once their container returns
        assert time.monotonic() < deadline, threading.enumerate()
        time.sleep(0.01)
