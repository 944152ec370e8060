"""Typed, validated access to a request's ``params``, and the definitions they are read by.

A method declares its params once, as a :class:`Signature` of :class:`Field` objects: the server
binds a request's params with it (by name or, where the method allows, by position), handlers read
values through the same fields, and the OpenRPC document (:mod:`aisd.rpc.openrpc`) is generated
from them. docs/api.md describes every method in prose.

Every failure is an ``RpcError(-32602)`` whose message names the field and what it must be,
never the value: a caller may have put a secret in the wrong field.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar, cast, overload

from aisd.rpc._errors import INVALID_PARAMS, RpcError

T = TypeVar("T")

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

    __slots__ = ("_checked", "_values")

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = dict(values)
        # Values already validated, by the reader that validated them: binding checks every
        # field and the handler then reads them again.
        self._checked: dict[object, object] = {}

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

    def __getitem__(self, field: Field[T]) -> T:
        """The value of ``field``, validated by its rules (see :class:`Field`)."""
        return field.read(self)

    def __repr__(self) -> str:
        return f"Params(fields={sorted(self._values)!r})"

    def _get(self, name: str, required: bool) -> object | None:
        value = self._values.get(name)
        if value is None and required:
            raise _invalid(name, "is required")
        return value

    def has(self, name: str) -> bool:
        """Whether ``name`` is given (present and not null)."""
        return self._values.get(name) is not None

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
    def number_(
        self, name: str, *, required: Literal[True] = ..., min: float = ..., max: float = ...
    ) -> float: ...
    @overload
    def number_(
        self, name: str, *, required: bool, min: float = ..., max: float = ...
    ) -> float | None: ...
    def number_(
        self, name: str, *, required: bool = True, min: float = 0.0, max: float = 1.0
    ) -> float | None:
        """Read a JSON number (integer or fractional; booleans are refused) within a range.

        Raises:
            RpcError: -32602 when missing (and required), not a number or out of range.
        """
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise _invalid(name, "must be a number")
        number = float(value)
        if not min <= number <= max:
            raise _invalid(name, f"must be a number from {min:g} to {max:g}")
        return number

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


_Reader = Callable[[Params, bool], T | None]


class Field(Generic[T]):
    """One named parameter: its rules, its JSON Schema and its description, in one place.

    Build fields with :func:`text`, :func:`integer`, :func:`date`, :func:`month`,
    :func:`choice` and :func:`flag`; they are required unless made :meth:`optional` or given
    a :meth:`default`. Handlers read a value with ``params[field]``.

    Args:
        name: The member name in ``params``.
        description: What the value means, for the API reference.
        schema: The JSON Schema of an accepted value (without description or default).
        reader: Reads and validates the value through a :class:`Params` getter; the second
            argument says whether the field is required.
        required: Whether a missing (or null) value is refused.
        default: The value a missing optional field reads as.
    """

    __slots__ = ("_optional", "_reader", "default", "description", "name", "required", "schema")

    def __init__(
        self,
        name: str,
        description: str,
        schema: Mapping[str, object],
        reader: _Reader[Any],
        *,
        required: bool = True,
        default: object = None,
    ) -> None:
        self.name = name
        self.description = description
        self.schema = dict(schema)
        self._reader = reader
        self.required = required
        self.default = default
        self._optional: Field[T | None] | None = None

    def __repr__(self) -> str:
        return f"Field({self.name!r}, required={self.required})"

    def optional(self) -> Field[T | None]:
        """The same field, optional: a missing value reads as ``None``."""
        # Made once: handlers ask for it at every request.
        if self._optional is None:
            self._optional = Field(
                self.name, self.description, self.schema, self._reader, required=False
            )
        return self._optional

    def or_default(self, default: T) -> Field[T]:
        """The same field, optional: a missing value reads as ``default``."""
        return Field(
            self.name, self.description, self.schema, self._reader, required=False, default=default
        )

    def read(self, params: Params) -> T:
        """The validated value of this field in ``params``.

        Raises:
            RpcError: -32602 naming the field when the value breaks the field's rules.
        """
        # A value the same reader accepted is valid for this field too: its variants (optional,
        # with a default) share the reader and differ only in what a missing value reads as.
        value = params._checked.get(self._reader)
        if value is None:
            value = self._reader(params, self.required)
            if value is not None:
                params._checked[self._reader] = value
        return cast(T, self.default if value is None else value)

    def json_schema(self) -> dict[str, object]:
        """The JSON Schema of the value, with its description and default."""
        out: dict[str, object] = {**self.schema, "description": self.description}
        if self.default is not None:
            out["default"] = self.default
        return out


def text(
    name: str,
    description: str,
    *,
    max_len: int = 512,
    min_len: int = 1,
    pattern: str | None = None,
) -> Field[str]:
    """A string field of ``min_len`` to ``max_len`` characters, matching ``pattern`` whole."""
    schema: dict[str, object] = {"type": "string", "minLength": min_len, "maxLength": max_len}
    if pattern is not None:
        schema["pattern"] = f"^(?:{pattern})$"
    return Field(
        name,
        description,
        schema,
        lambda params, required: params.str_(
            name, required=required, max_len=max_len, min_len=min_len, pattern=pattern
        ),
    )


def integer(
    name: str, description: str, *, min: int | None = None, max: int | None = None
) -> Field[int]:
    """An integer field within ``min``..``max`` (JSON booleans and floats are refused)."""
    schema: dict[str, object] = {"type": "integer"}
    if min is not None:
        schema["minimum"] = min
    if max is not None:
        schema["maximum"] = max
    return Field(
        name,
        description,
        schema,
        lambda params, required: params.int_(name, required=required, min=min, max=max),
    )


def number(name: str, description: str, *, min: float, max: float) -> Field[float]:
    """A number field (integer or fractional) within ``min``..``max``."""
    return Field(
        name,
        description,
        {"type": "number", "minimum": min, "maximum": max},
        lambda params, required: params.number_(name, required=required, min=min, max=max),
    )


def date(name: str, description: str) -> Field[dt.date]:
    """A calendar date field written ``YYYY-MM-DD``."""
    return Field(
        name,
        description,
        {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        lambda params, required: params.date_(name, required=required),
    )


def month(name: str, description: str) -> Field[dt.date]:
    """A month field written ``YYYY-MM``; it reads as the month's first day."""
    return Field(
        name,
        description,
        {"type": "string", "pattern": "^(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])$"},
        lambda params, required: params.month_(name, required=required),
    )


def choice(name: str, description: str, choices: Collection[str]) -> Field[str]:
    """A string field that must be one of ``choices``."""
    listed = sorted(choices)
    return Field(
        name,
        description,
        {"type": "string", "enum": listed},
        lambda params, required: params.enum_(name, listed, required=required),
    )


def flag(name: str, description: str) -> Field[bool]:
    """A JSON boolean field."""
    return Field(
        name,
        description,
        {"type": "boolean"},
        lambda params, required: params.bool_(name, required=required),
    )


@dataclass(frozen=True, slots=True)
class Signature:
    """The params of one method.

    Attributes:
        fields: The params, in their positional order.
        by_position: Whether an array of params is accepted, read in ``fields`` order; methods
            without a natural order take params by name only.
        exactly_one: Names of which exactly one must be given (e.g. ``token.revoke``).
    """

    fields: tuple[Field[Any], ...] = ()
    by_position: bool = False
    exactly_one: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The field names, in positional order."""
        return tuple(field.name for field in self.fields)

    def bind(self, raw: Mapping[str, object] | list[object]) -> Params:
        """Validate a request's params against this signature.

        Args:
            raw: The ``params`` member: an object, or an array when ``by_position``.

        Returns:
            The params, every field already validated once.

        Raises:
            RpcError: -32602 naming the field at fault, or the rule broken.
        """
        if isinstance(raw, list):
            if not self.by_position:
                raise RpcError(
                    INVALID_PARAMS,
                    "invalid params: this method takes its params by name (an object)",
                )
            if len(raw) > len(self.fields):
                raise RpcError(
                    INVALID_PARAMS,
                    f"invalid params: at most {len(self.fields)} params by position",
                )
            params = Params(dict(zip(self.names, raw, strict=False)))
        else:
            params = Params(raw)
        params.reject_unknown(self.names)
        for field in self.fields:
            field.read(params)
        if self.exactly_one:
            given = [name for name in self.exactly_one if params.has(name)]
            if len(given) != 1:
                quoted = " or ".join(repr(name) for name in self.exactly_one)
                raise RpcError(
                    INVALID_PARAMS,
                    f"invalid params: exactly one of {quoted} is required",
                    {"field": self.exactly_one[0]},
                )
        return params
