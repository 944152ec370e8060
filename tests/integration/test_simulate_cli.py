"""``aisd simulate`` through the real CLI: progress on stderr (a bar on a terminal, plain lines
otherwise) and a report on stdout that explains its setup and figures."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from aisd._simulation import ConsentPlan, Progress, Setup, Summary, progress_line, render
from tests.integration.test_simulate import START

ARGS = [sys.executable, "-m", "aisd", "simulate", "--days", "1", "--tokens", "2"]
TIMEOUT = 120.0


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AISD_")}
    return {**env, "TMPDIR": str(tmp_path), "COLUMNS": "120"}


def test_without_a_terminal_progress_is_plain_lines_and_the_report_explains_itself(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        ARGS, env=_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    progress = [line for line in lines if line.startswith("day ")]
    assert progress, done.stderr
    assert "\r" not in done.stderr
    assert progress[0].startswith("day   0.0/1")
    assert progress[-1].startswith("day   1.0/1")
    assert all("imports/s" in line for line in progress)
    report = done.stdout
    for heading in ("setup", "results", "consents      2", "quota         4 Reuse", "verdict"):
        assert heading in report
    assert "every rule held" in report
    assert "(limit 4)" in report


def test_on_a_terminal_progress_is_a_bar_redrawn_in_place(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            ARGS, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=follower, text=False
        )
        os.close(follower)
        seen = b""
        while True:
            ready, _, _ = select.select([leader], [], [], TIMEOUT)
            assert ready, "no output from the terminal within the timeout"
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        out, _ = process.communicate(timeout=TIMEOUT)
    finally:
        os.close(leader)
    assert process.returncode == 0
    # The terminal turns each newline into CR LF; what is left of a lone CR is a redraw.
    shown = seen.decode().replace("\r\n", "\n")
    assert shown.count("\r[") >= 1
    assert "#" in shown
    assert shown.endswith("\n")
    assert "100%" in shown.rsplit("\r", 1)[-1]
    assert b"verdict" in out


def test_a_progress_line_counts_days_imports_and_the_rate() -> None:
    at = Progress(START, START + timedelta(days=10), START + timedelta(days=5), imports=300)
    assert at.fraction == 0.5
    assert progress_line(at, 30.0) == (
        "day   5.0/10  imports    300    10.0 imports/s  elapsed 30s  left ~30s"
    )
    bar = progress_line(at, 30.0, bar=10)
    assert bar.startswith("[#####.....]  50%  day   5.0/10")
    done = Progress(START, START + timedelta(days=1), START + timedelta(days=2), imports=1)
    assert done.fraction == 1.0
    assert "left" not in progress_line(done, 1.0)


def test_the_report_names_the_setup_it_ran() -> None:
    plans = (
        ConsentPlan("sim-001", timedelta(0), timedelta(days=180)),
        ConsentPlan("sim-002", timedelta(hours=3), timedelta(days=2), shares_with=0),
    )
    setup = Setup(
        days=3,
        plans=plans,
        refreshes_per_day=3,
        history_days=365,
        overlap_days=3,
        command_seconds=8.0,
        poll_seconds=(2.0, 5.0),
        max_running=8,
        tick_seconds=30.0,
        database="/dev/shm",
    )
    summary = Summary(
        started_at=START,
        ended_at=START + timedelta(days=3),
        real_seconds=1.5,
        refreshes_per_day=3,
        imports={"initial": {"successful": 2}},
        reuses=0,
        windows={"PL01": 3, "PL02": 3, "PL03": 1},
        limit_answers=0,
        late_reuses=0,
        events={},
        tokens={"active": 1, "expired": 1},
        months=(),
        billed=(0, 0),
    )
    text = render(summary, setup)
    assert "consents      2, arriving over the first 3 h; 1 of them" in text
    assert "sim-002's only 2 days" in text
    assert "3 Reuse Multiple Access per account" in text
    assert "    3 in 24 h   2 accounts" in text
    assert "    1 in 24 h   1 account\n" in text
    assert "/dev/shm" in text
