"""Benchmark: the disk's floor under a durable answer, the fsync of a small append.

Usage: ``python bench/disk_floor.py [DIR] [--samples 400]``

With ``synchronous=FULL`` every SQLite commit in WAL mode ends with an fsync of the log, and
aisd answers a ``consent.submit`` only after the commit holding it: no answer can come sooner
than one fsync after its request arrived, and one writer commits at most one batch per fsync.
This appends 8 KiB (two WAL frames of 4 KiB pages) to a file in ``DIR`` (default: the system's
temporary directory, where the other benchmarks keep their databases) and fsyncs it,
``--samples`` times, and prints the latency percentiles and fsyncs/s. ``intake_bench.py`` and
``submit_bench.py`` print the same line for their own directory in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FRAME = b"\0" * 8192


@dataclass(frozen=True, slots=True)
class FsyncFloor:
    """Latency of one fsync'd 8 KiB append, in seconds."""

    directory: Path
    p50: float
    p99: float
    worst: float
    per_second: float

    def line(self) -> str:
        """One line of the figures."""
        return (
            f"disk floor (fsync of an 8 KiB append in {self.directory}): "
            f"p50 {self.p50 * 1e3:.2f} ms  p99 {self.p99 * 1e3:.2f} ms  "
            f"max {self.worst * 1e3:.2f} ms  {self.per_second:,.0f} fsyncs/s; a durable answer "
            f"waits for at least one, so no p99 below {self.p99 * 1e3:.1f} ms is possible here"
        )


def fsync_floor(directory: Path, samples: int = 400) -> FsyncFloor:
    """Append and fsync ``samples`` times to a scratch file in ``directory`` (removed after)."""
    fd, name = tempfile.mkstemp(dir=directory, prefix="fsync-floor-")
    latencies: list[float] = []
    try:
        began = time.perf_counter()
        for _ in range(samples):
            os.write(fd, FRAME)
            start = time.perf_counter()
            os.fsync(fd)
            latencies.append(time.perf_counter() - start)
        elapsed = time.perf_counter() - began
    finally:
        os.close(fd)
        os.unlink(name)
    latencies.sort()
    return FsyncFloor(
        directory=directory,
        p50=latencies[len(latencies) // 2],
        p99=latencies[min(len(latencies) - 1, (len(latencies) * 99) // 100)],
        worst=latencies[-1],
        per_second=samples / elapsed,
    )


def main() -> None:
    """Measure the floor in the given directory and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    print(fsync_floor(args.directory, args.samples).line())


if __name__ == "__main__":
    main()
