"""GET /openapi.json and /openapi.yaml: the Swagger 2.0 document of the Engine API subset matoud implements.

openapi.yaml is the source (Docker's shapes, from moby's docs/api/v1.45.yaml); openapi.json is generated from it
so the daemon needs no YAML parser: ``python -m matou.daemon.api.openapi`` rewrites it after an edit, and
tests/compat/test_openapi.py fails while the two disagree. Both are read once, on the first request.
"""

from __future__ import annotations

import functools
import json
import os
import sys

from aiohttp import web

from matou.daemon.api.app import Router

HERE = os.path.dirname(os.path.abspath(__file__))
YAML_PATH = os.path.join(HERE, "openapi.yaml")
JSON_PATH = os.path.join(HERE, "openapi.json")


@functools.cache
def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def openapi_json(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_read(JSON_PATH), content_type="application/json")


async def openapi_yaml(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_read(YAML_PATH), content_type="application/yaml")


def register(r: Router) -> None:
    r.get("/openapi.json", openapi_json)
    r.get("/openapi.yaml", openapi_yaml)


def generate() -> dict:  # type: ignore[type-arg]
    """The document as data, parsed from the YAML source (needs PyYAML: a development tool, not the daemon)."""
    import yaml  # type: ignore[import-untyped]

    with open(YAML_PATH) as f:
        doc = yaml.safe_load(f)
    return json.loads(json.dumps(doc))  # YAML's int keys (status codes) become strings, as JSON has them


def main() -> int:
    text = json.dumps(generate(), indent=1, sort_keys=False) + "\n"
    with open(JSON_PATH, "w") as f:
        f.write(text)
    print(f"wrote {JSON_PATH} ({len(text)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
