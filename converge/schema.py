"""The baseline format as data: a JSON Schema for editors, and the README's key tables.

Both come from the installed providers' pydantic models (third-party providers included), so the
field descriptions written once in a provider's `spec.py` are what an editor shows, what
`converge schema` prints and what the README lists.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from converge.baseline import META_TABLE, REQUIRED_KEY, BaselineMeta
from converge.registry import Registry

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://converge.invalid/baseline.schema.json"


def _prefixed(node: Any, prefix: str) -> Any:
    """`node` with every local `$ref` renamed into the provider's own part of `$defs`."""
    if isinstance(node, dict):
        return {
            key: (f"#/$defs/{prefix}.{value.removeprefix('#/$defs/')}" if key == "$ref" and isinstance(value, str)
                  else _prefixed(value, prefix))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_prefixed(item, prefix) for item in node]
    return node


def baseline_schema(registry: Registry) -> dict[str, Any]:
    """A JSON Schema (2020-12) of a whole baseline for the installed providers."""
    definitions: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    models: list[tuple[str, type[BaseModel]]] = [(META_TABLE, BaselineMeta)]
    models += [(name, registry.get(name).spec_model) for name in registry.names()]
    for name, model in models:
        schema = _prefixed(model.model_json_schema(mode="validation"), name)
        definitions |= {f"{name}.{key}": value for key, value in schema.pop("$defs", {}).items()}
        if name != META_TABLE and schema.get("type") == "object":
            schema.setdefault("properties", {})[REQUIRED_KEY] = {
                "type": "boolean", "default": False,
                "description": ("An error, not a skip, when the host lacks this subsystem "
                                "or cannot have a declared resource (a container)."),
            }
        if name != META_TABLE:
            schema["description"] = registry.get(name).summary
        properties[name] = schema
    return {
        "$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID, "title": "converge baseline",
        "type": "object", "properties": properties, "additionalProperties": False, "$defs": definitions,
    }


def _type_of(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " \\| ".join(json.dumps(value) for value in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "anyOf" in schema:
        kinds = [_type_of(option) for option in schema["anyOf"] if option.get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds))
    if "$ref" in schema:
        return "table"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if kind == "object":
        return "table"
    return str(kind)


def key_table(registry: Registry, provider: str) -> str:
    """The Markdown table of a provider's keys, with descriptions from its model: key, type,
    default, meaning. Nested tables are listed by their dotted path."""
    schema = baseline_schema(registry)
    rows: list[tuple[str, str, str, str]] = []

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        for option in [node, *node.get("anyOf", [])]:
            if "$ref" in option:
                resolved: dict[str, Any] = schema["$defs"][option["$ref"].removeprefix("#/$defs/")]
                return resolved
        return node

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, field in resolve(node).get("properties", {}).items():
            path = f"{prefix}.{key}" if prefix else key
            meaning = " ".join((field.get("description") or resolve(field).get("description", "")).split())
            nested = [(resolve(field), path, "table"),
                      (resolve(field.get("items", {})), f"{path}[]", "array of tables")]
            if isinstance(field.get("additionalProperties"), dict):
                nested.append((resolve(field["additionalProperties"]), f"{path}.NAME", "tables by name"))
            table = next(((target, where, kind) for target, where, kind in nested if "properties" in target), None)
            if table:
                rows.append((path, table[2], "", meaning))
                walk(table[0], table[1])
                continue
            default = json.dumps(field["default"]) if field.get("default") not in (None, [], {}) else ""
            rows.append((path, _type_of(field), default, meaning))

    walk(schema["properties"][provider], "")
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {kind} | {f'`{default}`' if default else ''} | {meaning} |" for key, kind, default, meaning in rows]
    return "\n".join(lines)


_BLOCK = re.compile(r"(<!-- keys:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /keys -->)", re.DOTALL)


def readme_with_key_tables(text: str, registry: Registry) -> str:
    """`text` (the README) with every `<!-- keys:NAME -->` block regenerated from the models."""
    return _BLOCK.sub(lambda match: f"{match[1]}{key_table(registry, match['name'])}\n{match[4]}", text)


if __name__ == "__main__":  # python -m converge.schema README.md: rewrite the key tables in place
    import sys
    from pathlib import Path

    for path in map(Path, sys.argv[1:]):
        path.write_text(readme_with_key_tables(path.read_text(encoding="utf-8"), Registry()), encoding="utf-8")
