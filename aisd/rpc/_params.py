"""Typed, validated access to a request's ``params`` object.

Every failure is an ``RpcError(-32602)`` whose message names the field and what it must be,
never the value: a caller may have put a secret in the wrong field.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from typing import Literal, overload

from aisd.rpc._errors import INVALID_PARAMS, RpcError

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")
# Field names come from the caller; they are quoted back, so keep them short.
_MAX_NAME_ECHO = 64


def _label(name: str) -> str:
    if len(name) > _MAX_NAME_ECHO:
        name = name[:_MAX_NAME_ECHO] + "..."
    return repr(name)


def _invalid(name: str, requirement: str) -> RpcError:
    return RpcError(
        INVALID_PARAMS,
        f"invalid params: {_label(name)} {requirement}",
        {"field": name[:_MAX_NAME_ECHO]},
    )


class Params:
    """The ``params`` object of one request, read through typed getters.

    A field that is absent or ``null`` counts as missing: a required getter refuses it,
    an optional one returns ``None``.

    Args:
        values: The decoded ``params`` object.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = dict(values)

    @classmethod
    def from_json(cls, raw: object) -> Params:
        """Wrap a decoded ``params`` member.

        Args:
            raw: The member's value; the server passes ``{}`` when it was absent.

        Returns:
            The wrapped params.

        Raises:
            RpcError: -32602 when ``raw`` is not an object (positional params are refused).
        """
        if not isinstance(raw, dict):
            raise RpcError(INVALID_PARAMS, "invalid params: params must be an object")
        return cls(raw)

    def __repr__(self) -> str:
        return f"Params(fields={sorted(self._values)!r})"

    def _get(self, name: str, required: bool) -> object | None:
        value = self._values.get(name)
        if value is None and required:
            raise _invalid(name, "is required")
        return value

    def reject_unknown(self, allowed: Collection[str]) -> None:
        """Refuse any field outside ``allowed``.

        Args:
            allowed: The field names the method accepts.

        Raises:
            RpcError: -32602 naming the first unknown field (in sorted order).
        """
        unknown = sorted(set(self._values) - set(allowed))
        if unknown:
            raise _invalid(unknown[0], "is not a known field")

    @overload
    def str_(
        self,
        name: str,
        *,
        required: Literal[True] = ...,
        max_len: int = ...,
        min_len: int = ...,
        pattern: str | re.Pattern[str] | None = ...,
    ) -> str: ...
    @overload
    def str_(
        self,
        name: str,
        *,
        required: bool,
        max_len: int = ...,
        min_len: int = ...,
        pattern: str | re.Pattern[str] | None = ...,
    ) -> str | None: ...
    def str_(
        self,
        name: str,
        *,
        required: bool = True,
        max_len: int = 512,
        min_len: int = 1,
        pattern: str | re.Pattern[str] | None = None,
    ) -> str | None:
        """Read a string field.

        Args:
            name: The field name.
            required: Whether a missing field is an error.
            max_len: The longest accepted length, in characters.
            min_len: The shortest accepted length; empty strings are refused by default.
            pattern: A regular expression the whole string must match.

        Returns:
            The string, or ``None`` when optional and missing.

        Raises:
            RpcError: -32602 when missing (and required), not a string, of the wrong
                length or not matching ``pattern``.
        """
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _invalid(name, "must be a string")
        if not min_len <= len(value) <= max_len:
            raise _invalid(name, f"must be a string of {min_len} to {max_len} characters")
        if pattern is not None and re.fullmatch(pattern, value) is None:
            raise _invalid(name, "must match the expected format")
        return value

    @overload
    def int_(
        self,
        name: str,
        *,
        required: Literal[True] = ...,
        min: int | None = ...,
        max: int | None = ...,
    ) -> int: ...
    @overload
    def int_(
        self, name: str, *, required: bool, min: int | None = ..., max: int | None = ...
    ) -> int | None: ...
    def int_(
        self,
        name: str,
        *,
        required: bool = True,
        min: int | None = None,
        max: int | None = None,
    ) -> int | None:
        """Read an integer field (JSON booleans and floats are refused).

        Args:
            name: The field name.
            required: Whether a missing field is an error.
            min: The smallest accepted value, if any.
            max: The largest accepted value, if any.

        Returns:
            The integer, or ``None`` when optional and missing.

        Raises:
            RpcError: -32602 when missing (and required), not an integer or out of range.
        """
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(name, "must be an integer")
        if min is not None and value < min:
            raise _invalid(name, f"must be an integer of at least {min}")
        if max is not None and value > max:
            raise _invalid(name, f"must be an integer of at most {max}")
        return value

    @overload
    def date_(self, name: str, *, required: Literal[True] = ...) -> dt.date: ...
    @overload
    def date_(self, name: str, *, required: bool) -> dt.date | None: ...
    def date_(self, name: str, *, required: bool = True) -> dt.date | None:
        """Read a calendar date written ``YYYY-MM-DD``.

        Args:
            name: The field name.
            required: Whether a missing field is an error.

        Returns:
            The date, or ``None`` when optional and missing.

        Raises:
            RpcError: -32602 when missing (and required) or not a valid date.
        """
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, str) and _DATE.fullmatch(value):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise _invalid(name, "must be a date (YYYY-MM-DD)")

    @overload
    def month_(self, name: str, *, required: Literal[True] = ...) -> dt.date: ...
    @overload
    def month_(self, name: str, *, required: bool) -> dt.date | None: ...
    def month_(self, name: str, *, required: bool = True) -> dt.date | None:
        """Read a month written ``YYYY-MM``.

        Args:
            name: The field name.
            required: Whether a missing field is an error.

        Returns:
            The first day of the month, or ``None`` when optional and missing.

        Raises:
            RpcError: -32602 when missing (and required) or not a valid month.
        """
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, str) and _MONTH.fullmatch(value):
            year, month = int(value[:4]), int(value[5:])
            if year >= 1 and 1 <= month <= 12:
                return dt.date(year, month, 1)
        raise _invalid(name, "must be a month (YYYY-MM)")

    @overload
    def enum_(
        self, name: str, choices: Collection[str], *, required: Literal[True] = ...
    ) -> str: ...
    @overload
    def enum_(self, name: str, choices: Collection[str], *, required: bool) -> str | None: ...
    def enum_(self, name: str, choices: Collection[str], *, required: bool = True) -> str | None:
        """Read a string field that must be one of a fixed set.

        Args:
            name: The field name.
            choices: The accepted values; they are listed in the error message.
            required: Whether a missing field is an error.

        Returns:
            The chosen value, or ``None`` when optional and missing.

        Raises:
            RpcError: -32602 when missing (and required) or not one of ``choices``.
        """
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or value not in choices:
            listed = ", ".join(repr(choice) for choice in sorted(choices))
            raise _invalid(name, f"must be one of {listed}")
        return value

    @overload
    def bool_(self, name: str, *, required: Literal[True] = ...) -> bool: ...
    @overload
    def bool_(self, name: str, *, required: bool) -> bool | None: ...
    def bool_(self, name: str, *, required: bool = True) -> bool | None:
        """Read a JSON boolean.

        Args:
            name: The field name.
            required: Whether a missing field is an error.

        Returns:
            The boolean, or ``None`` when optional and missing.

        Raises:
            RpcError: -32602 when missing (and required) or not a boolean.
        """
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise _invalid(name, "must be a boolean")
        return value
