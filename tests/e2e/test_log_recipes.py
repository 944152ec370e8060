"""The README's monitoring recipes, run with the real jq against a real daemon's log lines: the
events an operator acts on are there, at warning priority, with the fields the recipes read."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DaemonProcess, SandboxServer, wait_final

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed"),
]

README = Path(__file__).resolve().parents[2] / "README.md"
_RECIPE = re.compile(r"^journalctl -u aisd -o cat[^|]*\| (jq .*?)\s*(?:\| (sort \| uniq -c))?$")


def recipes() -> list[tuple[list[str], bool]]:
    """The jq commands of the README's journalctl recipes, and whether each ends in
    ``sort | uniq -c``."""
    found = []
    for line in README.read_text().splitlines():
        match = _RECIPE.match(line.strip())
        if match:
            found.append((_split(match[1]), match[2] is not None))
    return found


def _split(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "jq", command
    return words


def _journal(lines: list[str]) -> tuple[str, list[int]]:
    """What `journalctl -o cat` prints for these stdout lines, and each line's priority."""
    text, priorities = [], []
    for line in lines:
        match = re.match(r"<([0-7])>(.*)", line)
        assert match, line[:80]
        priorities.append(int(match[1]))
        text.append(match[2])
    return "\n".join(text) + "\n", priorities


def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_the_readme_recipes_find_what_they_promise(
    daemon: DaemonProcess, sandbox_server: SandboxServer
) -> None:
    found = recipes()
    assert len(found) == 3, found
    daemon.start(JOURNAL_STREAM="8:12345")  # as under systemd: each line gets its priority
    client = daemon.client

    # A failed first import.
    sandbox_server.configure(rate_import_error=1.0)
    failing = sandbox_server.mint("owner-failing")
    failed = client.submit_consent(failing.owner_external_id, failing.session_id, failing.signature)
    wait_final(client, [failed["importId"]], timeout=60)
    sandbox_server.configure(rate_import_error=0.0)

    # A token the bank killed, then a token another company's accesses crowd out.
    dead, crowded = sandbox_server.mint("owner-dead"), sandbox_server.mint("owner-crowded")
    ids = {}
    for consent in (dead, crowded):
        ids[consent.owner_external_id] = client.submit_consent(
            consent.owner_external_id,
            consent.session_id,
            consent.signature,
            multiple_access_id=consent.multiple_access_id,
        )
    wait_final(client, [i["importId"] for i in ids.values()], timeout=60)
    assert dead.multiple_access_id is not None
    sandbox_server.call(lambda: sandbox_server.sandbox.kill_token(str(dead.multiple_access_id)))
    client.refresh(ids["owner-dead"]["tokenId"])
    _until(
        lambda: (
            client.list_tokens(owner_external_id="owner-dead")["tokens"][0]["state"]
            == "reauth_required"
        ),
        "the dead token was not marked reauth_required",
    )
    sandbox_server.configure(rate_access_limit=1.0)
    client.refresh(ids["owner-crowded"]["tokenId"])

    def deferred() -> bool:
        text = daemon.log_path.read_text()
        return '"quota.deferred"' in text and "upstream_limit" in text

    _until(deferred, "no quota.deferred with reason upstream_limit")
    _until(lambda: '"token.reauth_required"' in daemon.log_path.read_text(), "no reauth log")

    journal, priorities = _journal(daemon.log_path.read_text().splitlines())
    by_event: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for priority, line in zip(priorities, journal.splitlines(), strict=True):
        entry = json.loads(line)
        by_event.setdefault(entry["event"], []).append((priority, entry))
    # `journalctl -p warning` shows priority 4 and more urgent.
    warnings: dict[str, Callable[[dict[str, Any]], bool]] = {
        "import.failed": lambda e: True,
        "token.reauth_required": lambda e: True,
        "quota.deferred": lambda e: e.get("reason") == "upstream_limit",
    }
    for event, selects in warnings.items():
        chosen = [p for p, entry in by_event.get(event, []) if selects(entry)]
        assert chosen, event
        assert all(p <= 4 for p in chosen), (event, chosen)
    assert all(p == 6 for p, _ in by_event["import.succeeded"])

    outputs = []
    for command, counted in found:
        done = subprocess.run(
            command, input=journal, capture_output=True, text=True, check=True, timeout=30
        )
        out = done.stdout
        if counted:
            out = subprocess.run(
                "sort | uniq -c",
                shell=True,
                input=out,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        outputs.append(out)
    failed_lines, failed_counts, reauth = outputs
    assert json.loads(failed_lines.splitlines()[0])["importId"] == failed["importId"]
    counts = {name: int(n) for n, name in (row.split() for row in failed_counts.splitlines())}
    # The failed first import, and the refreshes the dead and the crowded tokens could not make.
    assert counts["ServiceTemporarilyUnavailable"] == 1, counts
    assert counts["InvalidMultipleAccessId"] == 1, counts
    assert sum(counts.values()) == len(failed_lines.splitlines())
    assert json.loads(reauth) == {
        "tokenId": ids["owner-dead"]["tokenId"],
        "ownerExternalId": "owner-dead",
    }
