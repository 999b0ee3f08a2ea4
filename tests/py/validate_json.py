"""Validate JSON documents against the schemas in proto/schema/.

Usage: validate_json.py SCHEMA_NAME FILE...   (each FILE holds one JSON document,
or, with SCHEMA_NAME of the form stream:EVENT, the data of one event).
Exits 1 with the first error found.
"""
import json
import pathlib
import sys

import jsonschema
from referencing import Registry, Resource

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "proto" / "schema"


def main() -> int:
    docs = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")}
    registry = Registry().with_resources(
        (name, Resource.from_contents(doc)) for name, doc in docs.items()
    )
    name = sys.argv[1]
    if name.startswith("stream:"):
        schema = {"$ref": f"stream.schema.json#/$defs/{name.split(':', 1)[1]}"}
    else:
        schema = {"$ref": f"{name}.schema.json"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    for path in sys.argv[2:]:
        doc = json.loads(pathlib.Path(path).read_text())
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            print(f"{path}: {'/'.join(map(str, e.path))}: {e.message}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
