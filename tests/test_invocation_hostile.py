"""The invocation life cycle under hostile use: races, resets, hangs, abandoned streams.

Each test is what a demanding user's suite would do to the emulator, and what it must still
see: NVCF's status codes and headers, no hang (every wait here is at most 10 s), no thread,
temp dir or RAM staging dir left behind, and no exception escaping into a worker thread.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import Emulator
from nvcf_emulator.domain.clock import monotonic as real_monotonic
from nvcf_emulator.worker import ContainerRequest, ContainerResponse

from .conftest import Gate

API = "https://api.nvcf.nvidia.com"
CONNECTION_ERROR = "Inference connection error while making inference request"


# -- helpers ------------------------------------------------------------------------------------


def invoke(
    emu: Emulator,
    fid: str,
    body: Any = None,
    *,
    base: str = API,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    return requests.post(
        f"{base}/v2/nvcf/pexec/functions/{fid}",
        headers={**emu.headers, **(headers or {})},
        json=body if body is not None else {"x": 1},
        allow_redirects=False,
        **kwargs,
    )


def poll(
    emu: Emulator,
    req_id: str,
    *,
    base: str = API,
    seconds: int | None = None,
    extra: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    headers = {**emu.headers, **(extra or {})}
    if seconds is not None:
        headers["NVCF-POLL-SECONDS"] = str(seconds)
    return requests.get(
        f"{base}/v2/nvcf/pexec/status/{req_id}",
        headers=headers,
        allow_redirects=False,
        **kwargs,
    )


def poll_until_done(emu: Emulator, req_id: str, *, timeout: float = 10.0) -> requests.Response:
    """Poll (1 s windows) until an answer other than 202, within ``timeout`` real seconds."""
    deadline = time.monotonic() + timeout
    while True:
        r = poll(emu, req_id, seconds=1)
        if r.status_code != 202:
            return r
        assert time.monotonic() < deadline, f"still 202 after {timeout} s"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.005)


def emulator_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.is_alive() and t.name.startswith(("nvcf-worker", "nvcf-progress-watcher"))
    ]


def ram_dirs() -> set[Path]:
    """This process's RAM staging dirs (``/dev/shm/nvcf-emulator-<pid>-*``)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return set()
    return set(shm.glob(f"nvcf-emulator-{os.getpid()}-*"))


def leftover_staging(emu: Emulator) -> list[Path]:
    """Per-request dirs still present under every staging root the emulator uses."""
    roots = [emu.root / "inputAssets", emu.root / "response"]
    if emu._ram_roots is not None:
        roots += list(emu._ram_roots)
    return [p for root in roots if root.is_dir() for p in root.iterdir()]


def new_asset(emu: Emulator, data: bytes, base: str = API) -> str:
    r = requests.post(
        f"{base}/v2/nvcf/assets",
        headers=emu.headers,
        json={"contentType": "application/octet-stream", "description": "input"},
    )
    assert r.status_code == 200, r.text
    asset = r.json()
    put = requests.put(
        asset["uploadUrl"],
        data=data,
        headers={
            "Content-Type": "application/octet-stream",
            "x-amz-meta-nvcf-asset-description": "input",
        },
    )
    assert put.status_code == 200, put.text
    return str(asset["assetId"])


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException]]:
    """Exceptions that escape any thread while the test runs."""
    seen: list[BaseException] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            seen.append(args.exc_value)
        previous(args)

    threading.excepthook = hook
    yield seen
    threading.excepthook = previous


# -- queueing and polling ------------------------------------------------------------------------


@pytest.mark.nvcf(always_async=True, worker_threads=2)
def test_more_invocations_than_workers_queue_in_order_and_all_complete(nvcf: Emulator) -> None:
    """Six calls on two workers: two run, four wait with positions 1-4; all end in 200."""
    gate = Gate()
    started = threading.Semaphore(0)
    gate.before = lambda req: started.release()
    fid, vid = nvcf.add_function(gate, name="busy")
    try:
        ids = [invoke(nvcf, fid, {"n": i}).headers["NVCF-REQID"] for i in range(6)]
        assert started.acquire(timeout=5) and started.acquire(timeout=5)
        positions = [
            requests.get(f"{API}/v2/nvcf/queues/{i}/position", headers=nvcf.headers).json()
            for i in ids
        ]
        assert [p["positionInQueue"] for p in positions] == [0, 0, 1, 2, 3, 4]
        assert all(p["functionVersionId"] == vid for p in positions)
        depth = requests.get(f"{API}/v2/nvcf/queues/functions/{fid}", headers=nvcf.headers)
        assert depth.json()["queues"][0]["queueDepth"] == 4
    finally:
        gate.open()
    answers = [poll_until_done(nvcf, i) for i in ids]
    assert [a.status_code for a in answers] == [200] * 6
    assert [r.request_body for r in nvcf.invocations] == [
        json.dumps({"n": i}).encode() for i in range(6)
    ]
    assert gate.calls == 6


@pytest.mark.nvcf(always_async=True)
def test_polls_racing_the_result_see_202s_then_the_result_once_then_404(nvcf: Emulator) -> None:
    """Poll at once, again and again, while the container finishes: never a lost result."""
    fid, _ = nvcf.add_function(lambda req: {"n": req.json()["n"]}, name="quick")
    for n in range(40):
        req_id = invoke(nvcf, fid, {"n": n}).headers["NVCF-REQID"]
        statuses = []
        while True:
            r = poll(nvcf, req_id, seconds=1)
            statuses.append(r.status_code)
            if r.status_code != 202:
                break
            assert len(statuses) < 20
        assert r.status_code == 200 and r.json() == {"n": n}, statuses
        assert r.headers["NVCF-REQID"] == req_id
        assert poll(nvcf, req_id).status_code == 404


def test_every_kind_of_result_is_delivered_once_then_404(nvcf: Emulator) -> None:
    """200, a container's 4xx, a 302 zip and a raised exception: each fetched once, then 404."""

    def work(req: ContainerRequest) -> Any:
        kind = req.json()["kind"]
        if kind == "error":
            return {"error": "bad prompt"}, 400
        if kind == "zip":
            (req.output_dir / "out.bin").write_bytes(b"z")
        if kind == "raise":
            raise RuntimeError("boom")
        return {"kind": kind}

    fid, _ = nvcf.add_function(work, name="kinds")
    for kind, status in (("ok", 200), ("error", 400), ("zip", 302), ("raise", 500)):
        r = invoke(nvcf, fid, {"kind": kind}, headers={"NVCF-POLL-SECONDS": "5"})
        assert r.status_code == status, (kind, r.text)
        again = poll(nvcf, r.headers["NVCF-REQID"])
        assert again.status_code == 404, kind
        assert again.json()["detail"] == f"Request id '{r.headers['NVCF-REQID']}' not found"


# -- cancel and expiry on the emulator clock -----------------------------------------------------


def test_an_abandoned_request_drops_its_late_result_and_its_dirs(
    nvcf: Emulator, gate: Gate
) -> None:
    """No poll within max(2 x poll, 10 s) after a 202: 404, even once the container answers."""
    fid, _ = nvcf.add_function(gate, name="slow")
    asset = new_asset(nvcf, b"input bytes")
    r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1", "NVCF-INPUT-ASSET-REFERENCES": asset})
    assert r.status_code == 202
    req_id = r.headers["NVCF-REQID"]
    nvcf.clock.advance(11)
    nvcf.sweep()  # what the once-a-minute sweep does
    record = nvcf.invocations[-1]
    assert record.status == "cancelled"
    gate.open()
    wait_for(lambda: record.finished_at is not None and not leftover_staging(nvcf), what="cleanup")
    assert poll(nvcf, req_id).status_code == 404
    assert nvcf.asset_bytes(asset) == b"input bytes"
    assert nvcf.invocation_service._running == set()


@pytest.mark.nvcf(always_async=True, worker_threads=1)
def test_a_queued_request_that_expires_never_reaches_the_container(
    nvcf: Emulator, gate: Gate
) -> None:
    """A request still queued after its 1 h record lifetime is 404 and never runs."""
    fid, _ = nvcf.add_function(gate, name="slow")
    first = invoke(nvcf, fid).headers["NVCF-REQID"]
    assert gate.entered.wait(5)
    queued = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "3600"}).headers["NVCF-REQID"]
    nvcf.clock.advance(3601)
    assert poll(nvcf, queued).status_code == 404
    assert poll(nvcf, first).status_code == 404
    gate.open()
    wait_for(lambda: all(i.finished_at is not None for i in nvcf.invocations), what="settled")
    assert gate.calls == 1
    assert nvcf.invocation_service.queue_depth(fid) == 0


@pytest.mark.parametrize("library", ["freezegun", "time-machine"])
def test_frozen_time_moves_ttls_but_never_hangs_a_poll_or_a_stuck_container(
    nvcf: Emulator, gate: Gate, library: str
) -> None:
    """Under a frozen clock: the poll window and container_timeout still run in real time,
    and ticking the frozen clock cancels an abandoned request."""
    import time_machine
    from freezegun import freeze_time

    fid, _ = nvcf.add_function(gate, name="slow")
    nvcf.configure(container_timeout=0.5)
    ctx: Any = (
        freeze_time("2030-06-01 12:00:00")
        if library == "freezegun"
        else time_machine.travel(1906632000, tick=False)
    )
    with ctx as frozen:
        tick = frozen.tick if library == "freezegun" else frozen.shift
        started = real_monotonic()  # time.perf_counter is frozen too
        stuck = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "8"})
        assert real_monotonic() - started < 5  # container_timeout (0.5 s), not the 8 s window
        assert stuck.status_code == 500 and stuck.json()["detail"] == CONNECTION_ERROR
        gate.open()
        nvcf.configure(container_timeout=300.0)
        gate.opened.clear()
        r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"})
        assert r.status_code == 202
        tick(11)  # no poll within max(2 x 1 s, 10 s)
        assert poll(nvcf, r.headers["NVCF-REQID"]).status_code == 404
        gate.open()


def _waiting_poll(
    nvcf: Emulator, req_id: str, seconds: int
) -> tuple[threading.Thread, list[requests.Response]]:
    answers: list[requests.Response] = []
    thread = threading.Thread(target=lambda: answers.append(poll(nvcf, req_id, seconds=seconds)))
    thread.start()
    record = nvcf.invocation_service._records[req_id]
    wait_for(lambda: record._waiters >= 1, what="the poll to wait")
    return thread, answers


def test_a_long_poll_in_progress_keeps_the_request_alive(nvcf: Emulator, gate: Gate) -> None:
    """POST with a 1 s window (202), then one poll with a 30 s window: 15 s into that poll
    the client is still polling, so the request must not be cancelled under it."""
    fid, _ = nvcf.add_function(gate, name="slow")
    req_id = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"}).headers["NVCF-REQID"]
    thread, answers = _waiting_poll(nvcf, req_id, 30)
    nvcf.clock.advance(15)  # 15 s of the 30 s poll window pass
    nvcf.sweep()  # the periodic sweep (server timer, or any request once a minute)
    gate.open()
    thread.join(10)
    assert not thread.is_alive()
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json() == {"done": True}


@pytest.mark.nvcf(always_async=True)
def test_the_idle_window_after_a_202_follows_that_polls_window(nvcf: Emulator, gate: Gate) -> None:
    """A 202 to a poll with a 30 s window leaves the client max(2 x 30, 10) = 60 s."""
    gate.before = lambda req: req.write_progress(10)  # the first poll answers at once
    fid, _ = nvcf.add_function(gate, name="slow")
    req_id = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"}).headers["NVCF-REQID"]
    assert gate.entered.wait(5)
    wait_for(lambda: bool(nvcf.invocations[-1].progress), what="the progress update")
    first = poll(nvcf, req_id, seconds=30)
    assert first.status_code == 202 and first.headers["NVCF-PERCENT-COMPLETE"] == "10"
    nvcf.clock.advance(30)  # well within 60 s
    gate.open()
    assert poll(nvcf, req_id, seconds=5).status_code == 200


# -- reset and close with work in flight -----------------------------------------------------------


@pytest.mark.nvcf(worker_threads=1)
def test_reset_with_running_and_queued_work_answers_waiters_and_runs_nothing_more(
    nvcf: Emulator, gate: Gate, thread_errors: list[BaseException]
) -> None:
    """reset() mid-flight: the waiting poll ends at once, the queued call never runs, the
    running one's dirs go when it returns, and no worker thread raises."""
    fid, _ = nvcf.add_function(gate, name="slow")
    running = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"}).headers["NVCF-REQID"]
    assert gate.entered.wait(5)
    queued = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"}).headers["NVCF-REQID"]
    thread, answers = _waiting_poll(nvcf, running, 30)
    threads_before = len(emulator_threads())
    started = time.monotonic()
    nvcf.reset()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert answers[0].status_code in (404, 500)
    assert nvcf.invocations == []
    gate.open()
    wait_for(lambda: not leftover_staging(nvcf), what="staged dirs removed")
    time.sleep(0.2)  # give a wrongly dequeued call the time to reach the container
    assert gate.calls == 1
    assert poll(nvcf, queued).status_code == 404
    assert len(emulator_threads()) == threads_before
    assert thread_errors == []


def test_close_with_a_hung_container_and_a_waiting_poll_returns_promptly_and_leaks_nothing(
    gate: Gate, thread_errors: list[BaseException]
) -> None:
    """close() while a container hangs and a client waits: both return within seconds, and
    once the container returns no emulator thread, temp dir or RAM dir is left."""
    before_threads = {t.ident for t in emulator_threads()}
    before_ram = ram_dirs()
    emu = Emulator(worker_threads=2, always_async=True)
    emu.__enter__()
    root = emu.root
    fid, _ = emu.add_function(gate, name="hung")
    asset = new_asset(emu, b"abc")
    ids = [
        invoke(emu, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": asset}).headers["NVCF-REQID"]
        for _ in range(4)  # two run, two wait in the queue
    ]
    wait_for(lambda: gate.calls == 2, what="two containers to start")
    thread, answers = _waiting_poll(emu, ids[0], 30)
    started = time.monotonic()
    emu.close()
    assert time.monotonic() - started < 6  # not the hung containers' 10 s
    thread.join(5)
    assert not thread.is_alive()
    assert answers[0].status_code in (404, 500)
    assert not root.exists()
    gate.open()
    wait_for(
        lambda: {t.ident for t in emulator_threads()} <= before_threads,
        what="emulator threads to stop",
    )
    assert ram_dirs() <= before_ram
    assert gate.calls == 2  # the queued calls were dropped, not run after close
    assert thread_errors == []


def test_close_while_assets_are_being_staged_leaves_no_thread_and_calls_no_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow asset download (e.g. S3) is in progress when the emulator closes."""
    before = {t.ident for t in emulator_threads()}
    emu = Emulator(root_dir=tmp_path, ram_staging_bytes=0)
    emu.__enter__()
    calls: list[str] = []
    fid, _ = emu.add_function(lambda req: calls.append(req.request_id) or {}, name="f")
    asset = new_asset(emu, b"abc")
    staging, release = threading.Event(), threading.Event()
    stage = emu.store.stage

    def slow_stage(key: str, dest: Path) -> None:
        staging.set()
        release.wait(10)
        stage(key, dest)

    monkeypatch.setattr(emu.store, "stage", slow_stage)
    r = invoke(emu, fid, headers={"NVCF-POLL-SECONDS": "1", "NVCF-INPUT-ASSET-REFERENCES": asset})
    assert r.status_code == 202
    assert staging.wait(5)
    emu.close()
    release.set()
    # The straggler worker finishes its request and ends (waited for, not a fixed 0.3 s that
    # a loaded machine could overrun); once it is gone it cannot call the container any more.
    wait_for(
        lambda: not [t for t in emulator_threads() if t.ident not in before],
        timeout=10,
        what="the straggler worker to end",
    )
    leaked = [t.name for t in emulator_threads() if t.ident not in before]
    assert (calls, leaked) == ([], [])


# -- progress files --------------------------------------------------------------------------------


def test_progress_written_long_after_the_watcher_went_idle_reaches_the_poller(
    nvcf: Emulator, gate: Gate
) -> None:
    """The watcher sleeps while nothing runs; a container that writes progress only after a
    while (not at its start) still produces its 202 with NVCF-PERCENT-COMPLETE."""
    service = nvcf.invocation_service
    quick, _ = nvcf.add_function(lambda req: {}, name="quick")
    assert invoke(nvcf, quick).status_code == 200
    wait_for(lambda: service._watcher_idle, what="the watcher to go idle")
    written, polled = threading.Event(), threading.Event()

    def late(req: ContainerRequest) -> dict[str, bool]:
        assert gate.opened.wait(10)
        req.write_progress(70, {"stage": "late"})
        written.set()
        # Still running until the test has polled (not a fixed 0.5 s that a loaded machine
        # could overrun): the watcher, not the worker's last look, reports the progress.
        polled.wait(10)
        return {"done": True}

    fid, _ = nvcf.add_function(late, name="late")
    req_id = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"}).headers["NVCF-REQID"]
    gate.open()
    try:
        assert written.wait(5)
        r = poll(nvcf, req_id, seconds=5)
    finally:
        polled.set()
    assert r.status_code == 202 and r.headers["NVCF-PERCENT-COMPLETE"] == "70"
    assert r.json() == {"stage": "late"}
    assert poll_until_done(nvcf, req_id).status_code == 200


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("seen_by", ["watcher", "worker"])
def test_a_nan_or_infinite_progress_value_is_dropped_not_fatal(
    nvcf: Emulator, value: float, seen_by: str, thread_errors: list[BaseException]
) -> None:
    """A container computing ``100 * done / total`` badly writes NaN: NVCF's worker cannot
    parse it and drops the update; the result still comes back, nothing else breaks."""

    def work(req: ContainerRequest) -> dict[str, bool]:
        if seen_by == "watcher":
            req.write_progress(value)  # type: ignore[arg-type]
            time.sleep(0.2)  # the watcher (every 10 ms) reads it while the container runs
        else:
            time.sleep(0.05)
            req.write_progress(value)  # type: ignore[arg-type]  # only the final look sees it
        return {"done": True}

    interval = 0.01 if seen_by == "watcher" else 2.0  # "worker": the watcher looks too late
    nvcf.configure(container_timeout=1.0, progress_interval=interval)
    fid, _ = nvcf.add_function(work, name="nan")
    r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "2"})
    if r.status_code == 202:
        r = poll_until_done(nvcf, r.headers["NVCF-REQID"])
    assert r.status_code == 200, r.text
    assert nvcf.invocations[-1].progress == []
    assert leftover_staging(nvcf) == []
    watcher = nvcf.invocation_service._watcher
    assert watcher is not None and watcher.is_alive()
    assert thread_errors == []


@pytest.mark.nvcf(always_async=True)
def test_each_progress_write_is_delivered_exactly_once(nvcf: Emulator) -> None:
    """The watcher and the worker's final look must not both report the same write."""
    fid, _ = nvcf.add_function(lambda req: req.write_progress(50) or {"ok": True}, name="p")
    for _ in range(60):
        req_id = invoke(nvcf, fid).headers["NVCF-REQID"]
        percents = []
        while True:
            r = poll(nvcf, req_id, seconds=2)
            if r.status_code != 202:
                break
            percents.append(r.headers.get("NVCF-PERCENT-COMPLETE"))
        assert r.status_code == 200
        assert percents.count("50") <= 1, percents
        assert [u.progress for u in nvcf.invocations[-1].progress] == [50]


# -- containers that hang, answer 202, raise -------------------------------------------------------


@pytest.mark.nvcf(container_timeout=0.3, worker_threads=1)
def test_a_hung_container_times_out_and_its_late_answer_is_dropped(
    nvcf: Emulator, gate: Gate, thread_errors: list[BaseException]
) -> None:
    """500 connection error after container_timeout; the late answer reaches nobody, the
    staged dirs go when it returns, and the freed worker serves the next call."""
    fid, _ = nvcf.add_function(gate, name="stuck")
    started = time.monotonic()
    r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "20"})
    assert time.monotonic() - started < 5  # container_timeout (0.3 s), not the gate's 10 s
    assert r.status_code == 500 and r.json()["detail"] == CONNECTION_ERROR
    assert r.headers["NVCF-STATUS"] == "errored"
    req_id = r.headers["NVCF-REQID"]
    record = nvcf.invocations[-1]
    assert record.status == "errored" and "did not answer within" in (record.error or "")
    gate.open()
    wait_for(lambda: not leftover_staging(nvcf), what="staged dirs removed")
    assert poll(nvcf, req_id).status_code == 404
    ok, _ = nvcf.add_function(lambda req: {"ok": True}, name="ok")
    assert invoke(nvcf, ok).json() == {"ok": True}
    assert record.outcome is not None and record.outcome.status == 500
    assert thread_errors == []


def test_a_container_answering_202_repeatedly_is_asked_once_per_poll(nvcf: Emulator) -> None:
    """Four 202s then 200 (without the compatibility mapping, which re-asks on each poll):
    the client sees 202 in-progress four times, then the result."""
    answers = iter([ContainerResponse(202)] * 4 + [ContainerResponse(200, b'{"v":5}')])
    fid, _ = nvcf.add_function(lambda req: next(answers), name="self-async")
    compat_off = {"nvcf-feature-disable-worker-compatibility": "true"}
    r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "5", **compat_off})
    statuses = [r.status_code]
    req_id = r.headers["NVCF-REQID"]
    while r.status_code == 202:
        assert r.headers["NVCF-STATUS"] == "in-progress"
        r = poll(nvcf, req_id, seconds=5)
        statuses.append(r.status_code)
        assert len(statuses) < 10
    assert statuses == [202, 202, 202, 202, 200]
    assert r.content == b'{"v":5}'
    record = nvcf.invocations[-1]
    assert record.container_calls == 5
    assert [c.method for c in record.container_requests] == ["POST"] + ["GET"] * 4


@pytest.mark.nvcf(container_timeout=0.5)
def test_a_container_answering_202_forever_ends_in_the_connection_error(nvcf: Emulator) -> None:
    """However eagerly the client polls, container_timeout bounds a 202 loop."""
    fid, _ = nvcf.add_function(lambda req: ContainerResponse(202), name="forever")
    r = invoke(nvcf, fid, headers={"NVCF-POLL-SECONDS": "1"})
    assert r.status_code == 202
    done = poll_until_done(nvcf, r.headers["NVCF-REQID"], timeout=5)
    assert done.status_code == 500 and done.json()["detail"] == CONNECTION_ERROR
    assert leftover_staging(nvcf) == []


def test_a_container_raising_leaves_the_stored_asset_and_no_dirs(nvcf: Emulator) -> None:
    """It raises after scribbling on its staged copy: 500 problem JSON, the asset intact."""

    def broken(req: ContainerRequest) -> None:
        for asset_id in req.asset_ids:
            req.asset_path(asset_id).write_bytes(b"scribbled")
        (req.asset_dir / "extra.tmp").write_bytes(b"left behind")
        (req.output_dir / "half.bin").write_bytes(b"half")
        raise RuntimeError("CUDA error: an illegal memory access")

    fid, _ = nvcf.add_function(broken, name="broken")
    asset = new_asset(nvcf, b"original")
    r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": asset})
    assert r.status_code == 500
    assert r.json()["type"] == "urn:inference-service:problem-details:internal-server-error"
    assert nvcf.asset_bytes(asset) == b"original"
    assert "illegal memory access" in (nvcf.invocations[-1].error or "")
    assert leftover_staging(nvcf) == []


# -- event streams ---------------------------------------------------------------------------------


class Events:
    """An SSE container: one event, then more as the test allows; notes when it is closed."""

    def __init__(self, count: int = 100) -> None:
        self.count = count
        self.more = threading.Event()
        self.closed = threading.Event()
        self.sent = 0

    def __call__(self, req: ContainerRequest) -> Iterator[str]:
        try:
            for i in range(self.count):
                if i == 1:
                    self.more.wait(10)
                self.sent += 1
                yield f"data: {i}\n\n"
                time.sleep(0.005)
        finally:
            self.closed.set()


def _events_app(events: Events) -> Any:
    from flask import Flask, Response

    app = Flask("sse")
    app.add_url_rule("/v2/health/ready", "ready", lambda: "ok")

    @app.post("/stream")
    def stream() -> Response:
        return Response(events(None), mimetype="text/event-stream")  # type: ignore[arg-type]

    return app


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        ("flask", "inprocess"),
        ("flask", "server"),
        ("callable", "inprocess"),
        ("callable", "server"),
    ],
)
def test_an_sse_client_that_hangs_up_mid_stream_releases_the_container_and_dirs(
    request: pytest.FixtureRequest, kind: str, mode: str
) -> None:
    """Read one event, close the response: the container's generator is closed (its
    ``finally`` runs, as a server's would on a dropped connection), and the request's
    staged dirs are removed."""
    if mode == "server":
        server = request.getfixturevalue("nvcf_server")
        emu, base = server.emulator, server.url
    else:
        emu = request.getfixturevalue("nvcf")
        base = API
    events = Events()
    if kind == "flask":
        fid, _ = emu.add_function(_events_app(events), name="sse", inference_url="/stream")
    else:
        fid, _ = emu.add_function(events, name="sse")
    r = invoke(emu, fid, base=base, headers={"Accept": "text/event-stream"}, stream=True)
    assert r.status_code == 200
    lines = r.iter_lines()
    assert next(lines) == b"data: 0"
    r.close()
    events.more.set()
    wait_for(lambda: not leftover_staging(emu), what="staged dirs removed")
    assert events.closed.wait(2), "the container kept its stream open for nobody"
    assert events.sent < events.count


def test_two_polls_on_one_streamed_request_never_split_the_stream(nvcf: Emulator) -> None:
    """A stream can be delivered once: one poller gets every event, the other none of them."""
    events = Events(count=40)
    ready = threading.Event()

    def slow_start(req: ContainerRequest) -> Iterator[str]:
        ready.wait(10)  # headers come only after the POST's poll window
        return events(req)

    fid, _ = nvcf.add_function(slow_start, name="sse")
    r = invoke(nvcf, fid, headers={"Accept": "text/event-stream", "NVCF-POLL-SECONDS": "1"})
    assert r.status_code == 202
    req_id = r.headers["NVCF-REQID"]
    bodies: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def reader() -> None:
        try:
            got = poll(nvcf, req_id, seconds=10, extra={"Accept": "text/event-stream"})
            answer = (got.status_code, got.content)
        except Exception as exc:  # e.g. "generator already executing" from a shared stream
            answer = (0, repr(exc).encode())
        with lock:
            bodies.append(answer)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    record = nvcf.invocation_service._records[req_id]
    wait_for(lambda: record._waiters >= 2, what="both polls to wait")
    ready.set()
    events.more.set()
    for t in threads:
        t.join(10)
    full = b"".join(f"data: {i}\n\n".encode() for i in range(40))
    assert len(bodies) == 2
    streamed = [body for status, body in bodies if status == 200 and body]
    assert streamed == [full], bodies
    assert sorted(status for status, _ in bodies) == [200, 404]


def test_an_sse_container_that_raises_mid_stream_ends_the_stream_and_frees_the_dirs(
    nvcf_server: Any, thread_errors: list[BaseException]
) -> None:
    """Events already sent arrive; then the stream ends (cut, as a dead container's would)
    and the emulator keeps serving."""
    emu: Emulator = nvcf_server.emulator

    def dies(req: ContainerRequest) -> Iterator[str]:
        yield "data: 0\n\n"
        raise RuntimeError("segfault in the tokenizer")

    fid, _ = emu.add_function(dies, name="dies")
    got: list[bytes] = []
    r = invoke(emu, fid, base=nvcf_server.url, headers={"Accept": "text/event-stream"}, stream=True)
    assert r.status_code == 200
    try:
        for line in r.iter_lines():
            got.append(line)
    except requests.RequestException:
        pass  # a cut stream is what a client of a crashed container sees
    finally:
        r.close()
    assert got[:1] == [b"data: 0"]
    wait_for(lambda: not leftover_staging(emu), what="staged dirs removed")
    ok, _ = emu.add_function(lambda req: {"ok": True}, name="ok")
    assert invoke(emu, ok, base=nvcf_server.url).json() == {"ok": True}


# -- outputs, staging dirs, stored assets ----------------------------------------------------------


@pytest.mark.nvcf(max_response_bytes=1024)
def test_large_outputs_and_files_left_in_the_asset_dir_leave_no_dirs_and_intact_assets(
    nvcf: Emulator,
) -> None:
    """A 302 zip (big body plus nested output files) while the container litters its asset
    dir: the zip is complete, every staged dir is gone, the stored asset is unchanged."""
    import io
    import zipfile

    def render(req: ContainerRequest) -> bytes:
        (req.asset_dir / "scratch").mkdir()
        (req.asset_dir / "scratch" / "tmp.bin").write_bytes(b"t" * 100)
        req.asset_path(req.asset_ids[0]).write_bytes(b"overwritten")
        (req.output_dir / "a" / "b").mkdir(parents=True)
        (req.output_dir / "a" / "b" / "frame.png").write_bytes(b"p" * 5000)
        req.write_progress(100)
        return b"x" * 4096

    fid, _ = nvcf.add_function(render, name="render")
    data = os.urandom(3000)
    asset = new_asset(nvcf, data)
    before = ram_dirs()
    for _ in range(3):
        r = invoke(nvcf, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": asset})
        req_id = r.headers["NVCF-REQID"]
        if r.status_code == 202:  # the progress update may come first
            r = poll_until_done(nvcf, req_id)
        assert r.status_code == 302
        archive = zipfile.ZipFile(io.BytesIO(requests.get(r.headers["Location"]).content))
        assert set(archive.namelist()) == {f"{req_id}.response", "a/b/frame.png"}
        assert archive.read(f"{req_id}.response") == b"x" * 4096
        assert leftover_staging(nvcf) == []
        assert nvcf.asset_bytes(asset) == data
    assert len(ram_dirs() - before) <= 1  # one RAM dir per emulator, not one per request


def test_the_ram_staging_dir_is_emptied_per_request_and_removed_on_close(tmp_path: Path) -> None:
    """``/dev/shm/nvcf-emulator-<pid>-*`` holds nothing between requests and goes on close."""
    before = ram_dirs()
    with Emulator(root_dir=tmp_path) as emu:
        fid, _ = emu.add_function(
            lambda req: {"n": len(req.asset_path(req.asset_ids[0]).read_bytes())}, name="f"
        )
        asset = new_asset(emu, b"y" * 1000)
        for _ in range(5):
            r = invoke(emu, fid, headers={"NVCF-INPUT-ASSET-REFERENCES": asset})
            assert r.json() == {"n": 1000}
            assert leftover_staging(emu) == []
        if emu._ram_roots is None:
            pytest.skip("no roomy tmpfs here: nothing is staged in RAM")
        made = ram_dirs() - before
        assert len(made) == 1 and emu._ram_roots[0].parent in made
    assert ram_dirs() == before


# -- server mode, many threads, many tests ---------------------------------------------------------


def test_one_function_invoked_from_many_threads_over_a_socket(nvcf_server: Any) -> None:
    """16 threads x 10 calls of one function on a live server, more than worker_threads:
    every caller gets its own answer (no cross-talk), none hangs."""
    emu: Emulator = nvcf_server.emulator

    def echo(req: ContainerRequest) -> dict[str, Any]:
        time.sleep(0.002)
        return {"echo": req.json(), "reqid": req.request_id}

    fid, _ = emu.add_function(echo, name="echo")
    errors: list[str] = []

    def client(worker: int) -> None:
        with requests.Session() as session:
            for i in range(10):
                body = {"worker": worker, "i": i}
                r = session.post(
                    f"{nvcf_server.url}/v2/nvcf/pexec/functions/{fid}",
                    headers=emu.headers,
                    json=body,
                    timeout=10,
                )
                doc = r.json() if r.status_code == 200 else None
                if doc is None or doc["echo"] != body or doc["reqid"] != r.headers["NVCF-REQID"]:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(emu.invocations) == 160
    assert emu.invocation_service._records == {}


def test_reusing_one_server_across_many_tests_keeps_threads_and_dirs_flat(
    nvcf_server_session: Any,
) -> None:
    """30 "tests" on the session server, each reset (as the nvcf_server fixture does), with
    Flask, ASGI and callable containers, settings changed per test: thread count stays flat."""
    from fastapi import FastAPI

    emu: Emulator = nvcf_server_session.emulator
    base = nvcf_server_session.url

    def one_test(n: int) -> None:
        emu.reset(worker_threads=1 + n % 3)
        app = FastAPI()
        app.get("/v2/health/ready")(lambda: {"ok": True})
        app.post("/infer")(lambda: {"asgi": True})
        asgi, _ = emu.add_function(app, name="asgi", inference_url="/infer")
        plain, _ = emu.add_function(lambda req: {"n": n}, name="plain")
        assert invoke(emu, asgi, base=base).json() == {"asgi": True}
        assert invoke(emu, plain, base=base).json() == {"n": n}

    try:
        for n in range(5):  # warm up: the pool, the watcher, the server's threads
            one_test(n)
        baseline = threading.active_count()
        for n in range(5, 30):
            one_test(n)
        wait_for(lambda: threading.active_count() <= baseline + 1, what="threads to settle")
        assert len(ram_dirs()) <= 1
    finally:
        emu.reset()


@pytest.mark.nvcf(always_async=True, worker_threads=1)
def test_changing_worker_threads_with_work_queued_loses_no_request(
    nvcf: Emulator, gate: Gate
) -> None:
    """configure(worker_threads=...) on a busy emulator: the queued call still runs."""
    fid, _ = nvcf.add_function(gate, name="slow")
    first = invoke(nvcf, fid).headers["NVCF-REQID"]
    assert gate.entered.wait(5)
    queued = invoke(nvcf, fid).headers["NVCF-REQID"]
    nvcf.configure(worker_threads=4)
    quick, _ = nvcf.add_function(lambda req: {"ok": True}, name="quick")
    third = invoke(nvcf, quick).headers["NVCF-REQID"]  # the first call on the new pool
    gate.open()
    assert poll_until_done(nvcf, first).status_code == 200
    assert poll_until_done(nvcf, third).status_code == 200
    assert poll_until_done(nvcf, queued, timeout=2).status_code == 200


def test_the_invocation_history_is_bounded(nvcf: Emulator) -> None:
    """More calls than MAX_HISTORY keep only the newest records (memory stays bounded)."""
    from nvcf_emulator.domain.invocations import MAX_HISTORY

    fid, _ = nvcf.add_function(lambda req: b"r" * 100, name="f")
    for _ in range(MAX_HISTORY + 20):
        assert invoke(nvcf, fid).status_code == 200
    history = nvcf.invocations
    assert len(history) == MAX_HISTORY
    assert history[-1].finished_at is not None
    assert nvcf.invocation_service._records == {}
    assert nvcf.invocation_service._running == set()
