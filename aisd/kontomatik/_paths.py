"""Every Kontomatik endpoint aisd calls, in one place.

Default Import, Get Import Result and owner scores are confirmed by real replies. Reuse Multiple
Access and Revoke Multiple Access Consent are known only from other clients: their paths (and
the reply shapes ``parse_session`` accepts) are the first thing to change if upstream differs.
"""

from __future__ import annotations

from urllib.parse import quote

DEFAULT_IMPORT = "/v1/command/default-import.xml"
# Uncertain: taken from other clients, not confirmed by a captured reply.
REUSE_MULTIPLE_ACCESS = "/v1/command/reuse-multiple-access.xml"
# Uncertain: path and reply body both unconfirmed (an empty ``<reply status="200 OK"/>`` expected).
REVOKE_MULTIPLE_ACCESS = "/v1/command/delete-multiple-access.xml"
OWNER_SCORES = "/v1/owner-scores.xml"
# The paths that name no command.
FIXED = (DEFAULT_IMPORT, REUSE_MULTIPLE_ACCESS, REVOKE_MULTIPLE_ACCESS, OWNER_SCORES)


def command_result(command_id: str) -> str:
    """The Get Import Result path of a command.

    The id is percent-encoded: it comes from a reply, and must not be able to reach another path.
    """
    return f"/v1/command/{quote(command_id, safe='')}.xml"


def endpoint_name(path: str) -> str:
    """A path's endpoint as metrics name it (a command id never becomes a label)."""
    named = {
        DEFAULT_IMPORT: "default_import",
        REUSE_MULTIPLE_ACCESS: "reuse_multiple_access",
        REVOKE_MULTIPLE_ACCESS: "revoke_multiple_access",
        OWNER_SCORES: "owner_scores",
    }
    if path in named:
        return named[path]
    return "import_result" if path.startswith("/v1/command/") else "other"
