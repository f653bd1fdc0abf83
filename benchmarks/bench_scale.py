"""Target 4: scale — list/get/delete with 100,000 assets stored vs 100 (and 1,000: the same
1000-id page), and metadata memory per asset (tracemalloc, in its own subprocess)."""

from __future__ import annotations

import io
import os
import random
import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _common import Row, Stat, bench_tmpdir, child, ram_tmpdir, ratio_row

SIZES = (100, 1_000, 100_000)
LIST_REPS = 30
GET_REPS = 300
DELETE_REPS = 150
ROUNDS = 6
MEMORY_ASSETS = 5_000
BYTES_CEILING = 1024


def _add(emu: Any, account: Any, count: int, start: int) -> list[str]:
    """``count`` uploaded assets (1-byte bodies), made through the domain to keep setup fast.
    Fresh strings per asset, as JSON parsing would make them."""
    ids = []
    for i in range(start, start + count):
        ctype = "".join(("application/", "octet-stream"))
        asset = emu.assets.create(account, ctype, f"scale asset {i:07d}")
        emu.assets.upload(account.nca_id, asset.asset_id, io.BytesIO(b"x"), 1)
        ids.append(asset.asset_id)
    return ids


def scale(sizes: list[int], rounds: int) -> dict[str, Any]:
    """One store per size, all alive at once; the measurements interleave round by round, so
    the machine's noise (and the file system's write-back after the bulk load) hits every size
    alike."""
    import requests

    from nvcf_emulator import Emulator

    scratch = Path(ram_tmpdir())  # 100k tiny files: the disk's noise is not the store's
    rng = random.Random(7)
    stores = []
    out: dict[str, Any] = {}
    try:
        for size in sizes:
            emu = Emulator(root_dir=scratch / f"emu{size}")
            account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
            stores.append((size, emu, account, _add(emu, account, size, 0)))
            out[str(size)] = {"list": [], "list100": [], "get": [], "delete": []}
        os.sync()
        for r in range(rounds):
            for size, emu, account, ids in stores:
                res = out[str(size)]
                base = f"{emu.base_url}/v2/nvcf/assets"
                with emu.activate(), requests.Session() as session:
                    session.get(base, headers=emu.headers).raise_for_status()
                    for limit, key in ((1000, "list"), (100, "list100")):
                        emu.configure(list_limit=limit)
                        for _ in range(LIST_REPS // rounds):
                            started = time.perf_counter()
                            resp = session.get(base, headers=emu.headers)
                            res[key].append(time.perf_counter() - started)
                            resp.raise_for_status()
                            want = min(size, limit)
                            if len(resp.json()["assets"]) != want:
                                raise RuntimeError(f"listed {len(resp.json()['assets'])} != {want}")
                    emu.configure(list_limit=1000)
                    for asset_id in rng.choices(ids, k=GET_REPS // rounds):
                        started = time.perf_counter()
                        resp = session.get(f"{base}/{asset_id}", headers=emu.headers)
                        res["get"].append(time.perf_counter() - started)
                        resp.raise_for_status()
                    gone = rng.sample(ids, min(DELETE_REPS // rounds, size // 2))
                    for asset_id in gone:
                        started = time.perf_counter()
                        resp = session.delete(f"{base}/{asset_id}", headers=emu.headers)
                        res["delete"].append(time.perf_counter() - started)
                        if resp.status_code != 204:
                            raise RuntimeError(f"delete answered {resp.status_code}")
                # Put as many back (untimed), so the store keeps its size.
                kept = set(ids).difference(gone)
                ids[:] = [i for i in ids if i in kept]
                ids += _add(emu, account, len(gone), 10_000_000 * (r + 1))
    finally:
        for _, emu, _, _ in stores:
            emu.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def metadata_memory(count: int) -> dict[str, Any]:
    """Python heap bytes per stored (uploaded) asset, by tracemalloc."""
    from nvcf_emulator import Emulator

    scratch = Path(bench_tmpdir())
    emu = Emulator(root_dir=scratch / "emu")
    account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
    try:
        _add(emu, account, 100, 0)  # lazily made structures exist before the baseline
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        _add(emu, account, count, 100)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        top = [
            (str(s.traceback), s.size_diff)
            for s in after.compare_to(before, "lineno")[:5]
            if s.size_diff > 0
        ]
    finally:
        emu.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"per_asset": grown / count, "top": top}


def run() -> list[Row]:
    res = child("bench_scale", "scale", sizes=list(SIZES), rounds=ROUNDS, timeout=240)
    mem = child("bench_scale", "metadata_memory", count=MEMORY_ASSETS)
    small, mid, big = (res[str(s)] for s in SIZES)
    rows = [
        ratio_row(
            "4",
            "list, 100k stored (1000 returned)",
            Stat.of(big["list"]),
            Stat.of(mid["list"]),
            "ms",
            scale=1e3,
            at_most=2,
            baseline_label="1k stored (1000 returned)",
        ),
        ratio_row(
            "4",
            "list, 100k stored (list_limit=100)",
            Stat.of(big["list100"]),
            Stat.of(small["list"]),
            "ms",
            scale=1e3,
            at_most=2,
            baseline_label="100 stored (100 returned)",
        ),
    ]
    literal = Stat.of(big["list"]).median / Stat.of(small["list"]).median
    rows.append(
        Row(
            "4",
            "list, 100k (1000 ids) vs 100 stored (100 ids)",
            f"{literal:.2f}x",
            "10x the page",
            literal,
            "info",
            None,
            "the page grows 10x; the rows above hold the page fixed",
        )
    )
    for op in ("get", "delete"):
        rows.append(
            ratio_row(
                "4",
                f"{op} one asset, 100k stored",
                Stat.of(big[op]),
                Stat.of(small[op]),
                "ms",
                scale=1e3,
                at_most=2,
                baseline_label="100 stored",
            )
        )
    per = mem["per_asset"]
    rows.append(
        Row(
            "4",
            f"metadata per asset ({MEMORY_ASSETS:,} assets, tracemalloc)",
            f"{per:.0f} B",
            "-",
            None,
            f"<= {BYTES_CEILING} B",
            per <= BYTES_CEILING,
        )
    )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
