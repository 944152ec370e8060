"""Pure conversions of the data side: owners and verbatim fields to JSON and back, and the
figures an ``import.succeeded`` event adds about what a reply held."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aisd.kontomatik._models import Field, FieldValue, Owner

__all__ = [
    "fields_from_json",
    "fields_json",
    "fields_to_json",
    "owner_json",
    "owners_json",
]


def _value_json(value: FieldValue) -> Any:
    return value if isinstance(value, str) else fields_json(value)


def fields_json(fields: Iterable[Field]) -> dict[str, Any]:
    """Verbatim fields as a JSON object; nested ones as nested objects, a repeated tag as a
    list of its values in reply order."""
    grouped: dict[str, list[Any]] = {}
    for tag, value in fields:
        grouped.setdefault(tag, []).append(_value_json(value))
    return {tag: items[0] if len(items) == 1 else items for tag, items in grouped.items()}


def owner_json(owner: Owner) -> dict[str, Any]:
    """An owner with every field the bank sent: ``name``, ``kind``, ``address`` and the rest
    (``polishPesel``, ``phone``, ``email``, ``birthDate``...) under their own names."""
    return {
        **fields_json(owner.extra),
        "name": owner.name,
        "kind": owner.kind,
        "address": owner.address,
    }


def owners_json(owners: Sequence[Owner]) -> list[dict[str, Any]]:
    """Owners as ``owner.data`` and the ``persons``/``owners`` columns hold them."""
    return [owner_json(o) for o in owners]


def fields_from_json(value: Any) -> tuple[Field, ...]:
    """Stored ``[[tag, value], ...]`` back into verbatim fields, nested ones as tuples (so a
    stored transaction equals the one parsed from the same reply)."""
    return tuple((tag, v if isinstance(v, str) else fields_from_json(v)) for tag, v in value)


def fields_to_json(fields: Sequence[Field]) -> list[Any]:
    """Verbatim fields as stored: ``[[tag, value], ...]``, nesting kept."""
    return [[tag, v if isinstance(v, str) else fields_to_json(v)] for tag, v in fields]
