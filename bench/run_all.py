"""Run every benchmark and write bench/results.md: the machine, the date, each figure with
the baseline it was measured against in the same run (``make bench``).

Each script prints its own figures and ratios; this runs them one after another (never
side by side: they would measure each other) and keeps what they print, whole.

Run: .venv/bin/python bench/run_all.py [--out bench/results.md]
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

ROOT = Path(__file__).resolve().parents[1]
# (script, what its baseline is), in the order they run.
SCRIPTS: tuple[tuple[str, str], ...] = (
    ("bench/bus.py", "raw redis-py XADD / XREADGROUP + XACK on the same server"),
    ("bench/backtest.py", "backtrader on the same candles"),
    ("bench/exchange_client.py", "bare ccxt on the same simulator"),
    ("bench/signals_throughput.py", "a bare XREADGROUP + XACK loop over the same backlog"),
    ("bench/profile_signals.py", "none: where one worker's time goes (pyinstrument)"),
    ("bench/latency.py", "a bare three-hop XADD -> XREADGROUP relay on the same server"),
    ("bench/scale.py", "the same bot with 8 symbols"),
    ("bench/aof_fsync.py", "Redis with appendonly off"),
    ("bench/redis_wait.py", "the same writes without WAIT"),
)


def machine() -> str:
    """Return the CPU model, core count, memory, OS and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    with_model = Path("/proc/cpuinfo")
    if with_model.exists():
        for line in with_model.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kb = int(meminfo.read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def main(
    out: Annotated[Path, typer.Option(help="Where to write the results.")] = ROOT
    / "bench"
    / "results.md",
) -> None:
    """Run every benchmark in turn and write their figures to one Markdown file."""
    started = datetime.now(UTC)
    sections: list[str] = []
    failed: list[str] = []
    for script, baseline in SCRIPTS:
        print(f"== {script} (baseline: {baseline})", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, script], cwd=ROOT, capture_output=True, text=True, check=False
        )
        took = time.perf_counter() - t0
        text = (proc.stdout + ("\n" + proc.stderr if proc.returncode else "")).strip()
        print(text, flush=True)
        status = "" if proc.returncode == 0 else f", exit code {proc.returncode}: target missed"
        if proc.returncode:
            failed.append(script)
        sections.append(
            f"## {script}\n\nBaseline: {baseline}. Took {took:.0f} s{status}.\n\n```\n{text}\n```\n"
        )
    header = (
        "# Benchmark results\n\n"
        f"Written by `make bench` on {started:%Y-%m-%d %H:%M} UTC.\n"
        f"Machine: {machine()}.\n\n"
        "Every figure is compared with a baseline measured in the same run on the same\n"
        "machine; see docs/performance.md for what each measures and the targets.\n\n"
    )
    out.write_text(header + "\n".join(sections))
    print(f"-> {out}")
    if failed:  # reported, not an error of `make bench`: the figures are the result
        print(f"missed their target: {', '.join(failed)} (docs/performance.md says why)")


if __name__ == "__main__":
    typer.run(main)
