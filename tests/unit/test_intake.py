"""A repeated consent.submit: an exact repeat, or the field that differs."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from aisd.intake import differing_field
from aisd.store import ConsentIn, StoredConsent

FIRST = ConsentIn("alice", "sess-1", "signature-1", multiple_access_id="mai-secret-1")
STORED = StoredConsent("alice", "signature-1", "mai-secret-1", token_id="tok_1")


def test_an_exact_repeat_is_no_conflict() -> None:
    assert differing_field(FIRST, STORED) is None
    # Target and cost limits are not part of the identity: a retry may leave them out.
    assert differing_field(replace(FIRST, target="Other", max_imports=3), STORED) is None


def test_each_differing_field_is_named() -> None:
    assert differing_field(replace(FIRST, owner_external_id="mallory"), STORED) == (
        "ownerExternalId"
    )
    assert differing_field(replace(FIRST, session_signature="signature-2"), STORED) == (
        "sessionIdSignature"
    )
    assert differing_field(replace(FIRST, multiple_access_id="mai-secret-2"), STORED) == (
        "multipleAccessId"
    )
    assert differing_field(replace(FIRST, multiple_access_id=None), STORED) == "multipleAccessId"
    without_token = StoredConsent("alice", "signature-1", None, token_id=None)
    assert differing_field(FIRST, without_token) == "multipleAccessId"
    assert differing_field(replace(FIRST, multiple_access_id=None), without_token) is None


def test_the_owner_is_named_first() -> None:
    everything = ConsentIn("mallory", "sess-1", "other-signature", multiple_access_id="other-mai")
    assert differing_field(everything, STORED) == "ownerExternalId"


def test_a_secret_no_longer_kept_counts_as_the_same() -> None:
    forgotten = StoredConsent("alice", "signature-1", None, token_id="tok_1")
    assert differing_field(replace(FIRST, multiple_access_id="anything-else"), forgotten) is None


_TEXT = st.sampled_from(["a", "b", "alice", "signature-1", "mai-secret-1"])


@given(
    owner=_TEXT,
    signature=_TEXT,
    mai=st.none() | _TEXT,
    stored_owner=_TEXT,
    stored_signature=_TEXT,
    stored_mai=st.none() | _TEXT,
)
def test_no_conflict_exactly_when_owner_and_secrets_match(
    owner: str,
    signature: str,
    mai: str | None,
    stored_owner: str,
    stored_signature: str,
    stored_mai: str | None,
) -> None:
    submitted = ConsentIn(owner, "sess", signature, multiple_access_id=mai)
    stored = StoredConsent(
        stored_owner, stored_signature, stored_mai, "tok" if stored_mai else None
    )
    same = (owner, signature, mai) == (stored_owner, stored_signature, stored_mai)
    assert (differing_field(submitted, stored) is None) is same
