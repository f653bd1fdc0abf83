"""Shared helpers: result rows, statistics, and fresh-subprocess measurements."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MiB = 1024 * 1024
GiB = 1024 * MiB
_MARK = "@@BENCH-RESULT@@"

#: Environment for every child: fake AWS credentials (moto), no proxy, no instance metadata.
CHILD_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "*",
    "no_proxy": "*",
}


@dataclass
class Row:
    """One line of the table. ``ok``: True pass, False fail, None not gated (info / skipped)."""

    target: str
    name: str
    measured: str
    baseline: str
    ratio: float | None
    goal: str
    ok: bool | None
    note: str = ""

    @property
    def status(self) -> str:
        if self.ok is None:
            return "SKIP" if self.note.startswith("not yet available") else "info"
        return "PASS" if self.ok else "FAIL"


@dataclass
class Stat:
    """A median with its spread (min..max) over ``n`` repetitions."""

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            raise ValueError("no samples")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, unit: str, scale: float = 1.0, digits: int = 3) -> str:
        def g(v: float) -> str:
            return f"{v * scale:.{digits}g}"

        return f"{g(self.median)} {unit} [{g(self.lo)}-{g(self.hi)}] n={self.n}"


def child(module: str, func: str, /, timeout: float = 240, **kwargs: Any) -> Any:
    """Run ``benchmarks/<module>.py:<func>(**kwargs)`` in a fresh interpreter; its JSON result.

    A fresh process per memory measurement: peak RSS (``ru_maxrss``) is per process, so one
    measurement's allocations never show up in another's.
    """
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        f"import {module} as m\n"
        f"r = m.{func}(**json.loads(sys.argv[1]))\n"
        f"print({_MARK!r} + json.dumps(r), flush=True)\n"
    )
    env = {**os.environ, **CHILD_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK) :])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"{module}.{func} failed (exit {proc.returncode}):\n{tail}")


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far: ``ru_maxrss`` is KiB on Linux and bytes
    on macOS; Windows has no ``resource`` (psutil's ``peak_wset`` there)."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return int(psutil.Process().memory_info().peak_wset)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def bench_tmpdir() -> str:
    """A scratch dir for big files: under $BENCH_TMP, else the system temp dir."""
    return tempfile.mkdtemp(prefix="nvcf-bench-", dir=os.environ.get("BENCH_TMP"))


def ram_tmpdir() -> str:
    """A scratch dir on tmpfs (/dev/shm) when there is one, else :func:`bench_tmpdir`: for
    measurements about the emulator's own data structures, not the disk under them."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return tempfile.mkdtemp(prefix="nvcf-bench-", dir="/dev/shm")
    return bench_tmpdir()


def ratio_row(
    target: str,
    name: str,
    measured: Stat,
    baseline: Stat,
    unit: str,
    *,
    scale: float = 1.0,
    at_most: float | None = None,
    at_least: float | None = None,
    baseline_label: str = "",
    note: str = "",
) -> Row:
    """A gated row comparing two medians measured in the same run."""
    ratio = measured.median / baseline.median
    if at_most is not None:
        ok, goal = ratio <= at_most, f"<= {at_most:g}x"
    elif at_least is not None:
        ok, goal = ratio >= at_least, f">= {at_least:g}x"
    else:
        raise ValueError("give at_most or at_least")
    base = baseline.fmt(unit, scale)
    return Row(
        target,
        name,
        measured.fmt(unit, scale),
        f"{baseline_label}: {base}" if baseline_label else base,
        ratio,
        goal,
        ok,
        note,
    )
