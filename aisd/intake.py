"""The rule for a repeated ``consent.submit``: the same consent again, or a conflict.

A widget's ``sessionId`` names one consent. A repeat that carries the same owner and secrets is a
retry and gets the first submit's ids; one that differs in any of them is someone else's (or a
mix-up) and must never be handed those ids.
"""

from __future__ import annotations

import hmac

from aisd.store import ConsentIn, StoredConsent

__all__ = ["differing_field"]


def _same(given: str, stored: str) -> bool:
    # Secrets are compared in constant time; the owner id too, for one code path.
    return hmac.compare_digest(given.encode(), stored.encode())


def differing_field(submitted: ConsentIn, stored: StoredConsent) -> str | None:
    """The first param of ``submitted`` that differs from the consent stored under its
    ``sessionId``, or ``None`` when it is an exact repeat.

    A secret the store no longer keeps (a final token's ``multipleAccessId``) cannot be
    compared and is taken as the same; a token given now where none was stored, or the
    reverse, is a difference.

    Returns:
        ``"ownerExternalId"``, ``"sessionIdSignature"``, ``"multipleAccessId"`` or ``None``.
    """
    if not _same(submitted.owner_external_id, stored.owner_external_id):
        return "ownerExternalId"
    if stored.session_signature is not None and not _same(
        submitted.session_signature, stored.session_signature
    ):
        return "sessionIdSignature"
    if (submitted.multiple_access_id is None) != (stored.token_id is None):
        return "multipleAccessId"
    if (
        submitted.multiple_access_id is not None
        and stored.multiple_access_id is not None
        and not _same(submitted.multiple_access_id, stored.multiple_access_id)
    ):
        return "multipleAccessId"
    return None
