"""Validators for the OCI JSON schemas vendored in tests/schemas/ (draft-04).

The schemas ``$ref`` each other by relative file name under several nested base ids, so
every reference is resolved by its last path segment inside the spec's folder.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SCHEMAS = Path(__file__).resolve().parent / "schemas"


@functools.cache
def validator(spec: str, schema_file: str) -> Any:
    """``validator("image-spec", "image-manifest-schema.json")``; spec is image-spec or
    runtime-spec."""
    folder = SCHEMAS / spec

    def retrieve(uri: str) -> Resource:
        name = uri.rstrip("#").rstrip("/").rsplit("/", 1)[-1]
        return Resource.from_contents(json.loads((folder / name).read_text()),
                                      default_specification=DRAFT4)

    schema = json.loads((folder / schema_file).read_text())
    return jsonschema.Draft4Validator(schema, registry=Registry(retrieve=retrieve),  # type: ignore[call-arg]
                                      format_checker=jsonschema.FormatChecker())


def validate(doc: Any, spec: str, schema_file: str) -> None:
    validator(spec, schema_file).validate(doc)
