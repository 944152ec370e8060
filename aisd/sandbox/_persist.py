"""The sandbox's state as a JSON file, so that a restarted sandbox is the same provider.

A restarted sandbox that forgot its sessions and tokens would hand out the same ids again and
fail every token a daemon still holds; one that kept them behaves as Kontomatik does across a
deploy. The file holds what the rules need (sessions, tokens, commands, the rolling reuse windows,
the id generator, the clock offset and the fault rates set at run time), is written whole to a
temporary file and renamed over the old one, and is mode 0600: it holds session signatures and
tokens, like the provider's own database would.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aisd.kontomatik._models import CommandFailure

FORMAT = 1


def rng_state(rng: random.Random) -> list[Any]:
    """A JSON-able form of a generator's state."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list[Any]) -> None:
    """Restore a state made by :func:`rng_state`."""
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


def failure_json(failure: CommandFailure | None) -> dict[str, Any] | None:
    """A command's failure, or None."""
    if failure is None:
        return None
    return {"name": failure.name, "message": failure.message}


def failure_from(raw: Mapping[str, Any] | None) -> CommandFailure | None:
    """The failure written by :func:`failure_json`."""
    return None if raw is None else CommandFailure(raw["name"], raw["message"])


def write(path: Path, state: Mapping[str, Any]) -> None:
    """Replace the file at ``path`` with ``state``, atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    data = json.dumps({"format": FORMAT, **state}, separators=(",", ":")).encode()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def read(path: Path) -> dict[str, Any] | None:
    """The state saved at ``path``, or None when there is none yet.

    Raises:
        ValueError: The file is not a sandbox state file of this format.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        state = json.loads(raw)
    except ValueError:
        raise ValueError(f"{path} is not a sandbox state file") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a sandbox state file of format {FORMAT}")
    return state
