"""The OpenRPC meta-schema (tests/data/openrpc), as a validator that works offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

META_SCHEMA = Path(__file__).parent / "data" / "openrpc" / "meta-schema.json"


def openrpc_validator() -> jsonschema.Draft7Validator:
    """The OpenRPC meta-schema, its JSON Schema reference resolved offline (see SOURCE.md)."""
    meta = json.loads(META_SCHEMA.read_text())
    draft7 = jsonschema.Draft7Validator.META_SCHEMA
    # meta.json-schema.tools is a JSON Schema meta-schema whose definitions include
    # JSONSchemaObject; Draft 7's own meta-schema stands in for both.
    tools = {**draft7, "definitions": {**draft7["definitions"], "JSONSchemaObject": draft7}}
    registry: Registry[Any] = Registry().with_resources(
        [
            ("https://meta.json-schema.tools", Resource.from_contents(tools, DRAFT7)),
            ("https://meta.json-schema.tools/", Resource.from_contents(tools, DRAFT7)),
        ]
    )
    return jsonschema.Draft7Validator(meta, registry=registry)
