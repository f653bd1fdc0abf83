"""``make bench``: every performance target of issue 7, each against a baseline measured in the
same run, as one table. Exits 1 when a target is missed (or a benchmark broke).

    .venv/bin/python benchmarks/run.py            # everything (a few minutes)
    .venv/bin/python benchmarks/run.py --only 2,5 # some targets
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fixtures
import bench_invoke
import bench_scale
import bench_startup
import bench_streaming
from _common import Row

TARGETS = {
    "1": ("streaming uploads", bench_streaming),
    "2": ("fixture cost", bench_fixtures),
    "3": ("invocation overhead", bench_invoke),
    "4": ("scale", bench_scale),
    "5": ("startup", bench_startup),
}
HEADERS = (
    "#",
    "measurement",
    "measured (median [min-max] n)",
    "baseline",
    "ratio",
    "target",
    "result",
)


def table(rows: list[Row]) -> str:
    cells = [HEADERS] + [
        (
            r.target,
            r.name,
            r.measured,
            r.baseline,
            "-" if r.ratio is None else f"{r.ratio:.3g}x",
            r.goal,
            r.status,
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = []
    for n, c in enumerate(cells):
        lines.append(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))
    notes = [f"  [{r.target}] {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))


def machine() -> str:
    mem = ""
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs{mem}, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated target numbers (1-5)")
    args = parser.parse_args(argv)
    chosen = [t.strip() for t in args.only.split(",") if t.strip()] or list(TARGETS)
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    began = time.perf_counter()
    rows: list[Row] = []
    for key in chosen:
        title, module = TARGETS[key]
        print(f"[{key}] {title} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            rows += module.run()
        except Exception as exc:
            traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            rows.append(
                Row(
                    key,
                    f"{title}: benchmark failed",
                    "-",
                    "-",
                    None,
                    "runs",
                    False,
                    f"{type(exc).__name__}: {first}",
                )
            )
        print(f"[{key}] done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    elapsed = time.perf_counter() - began
    print()
    print(f"nvcf-emulator benchmarks - {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}")
    print()
    print(table(rows))
    failed = [r for r in rows if r.ok is False]
    passed = [r for r in rows if r.ok is True]
    print()
    print(
        f"{len(passed)} passed, {len(failed)} failed, "
        f"{len(rows) - len(passed) - len(failed)} not gated; {elapsed:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
