"""Target 5: startup — ``import nvcf_emulator`` + first request vs ``import moto`` +
``mock_aws`` + first S3 call, each in a fresh interpreter (timed from inside, after the
interpreter itself is up; both pay the same interpreter start)."""

from __future__ import annotations

import os
import subprocess
import sys

from _common import CHILD_ENV, REPO, Row, Stat, ratio_row

REPS = 5
_MARK = "@@STARTUP@@"

EMULATOR = f"""
import time
t0 = time.perf_counter()
import requests
import nvcf_emulator
with nvcf_emulator.Emulator() as emu:
    r = requests.post(f"{{emu.base_url}}/v2/nvcf/assets", headers=emu.headers,
                      json={{"contentType": "text/plain", "description": "first"}})
    assert r.status_code == 200, r.text
    t1 = time.perf_counter()
print("{_MARK}", t1 - t0)
"""

MOTO = f"""
import time
t0 = time.perf_counter()
import boto3
import moto
from moto import mock_aws
with mock_aws():
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="first")
    t1 = time.perf_counter()
print("{_MARK}", t1 - t0)
"""


def _once(code: str) -> float:
    env = {**os.environ, **CHILD_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            return float(line.split()[1])
    raise RuntimeError(f"startup child failed (exit {proc.returncode}): {proc.stderr[-800:]}")


def run() -> list[Row]:
    _once(EMULATOR)  # byte-code caches written, files in the page cache
    _once(MOTO)
    emu, moto = [], []
    for _ in range(REPS):
        emu.append(_once(EMULATOR))
        moto.append(_once(MOTO))
    return [
        ratio_row(
            "5",
            "import + first request (fresh process)",
            Stat.of(emu),
            Stat.of(moto),
            "ms",
            scale=1e3,
            at_most=1,
            baseline_label="import moto+mock_aws+1st S3 call",
        )
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
