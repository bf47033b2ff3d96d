"""JSON request bodies checked against the OpenAPI document before a handler sees them, as dockerd's Go decoder does.

dockerd decodes a body into typed structs: ``null`` is any field's zero value, unknown fields are ignored, and a
value of the wrong JSON type fails with ``json: cannot unmarshal array into Go struct field Config.Image of type
string`` (400). Handlers here assume the types the document promises; this middleware makes that true for every
operation the document declares a JSON body for (a wrong type used to surface as a 500 from deep in a service).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from matou.errors import InvalidArgument

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_VERSION_PREFIX = re.compile(r"^/v\{api_version[^}]*\}")
_GO_TYPES = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool", "array": "[]",
             "object": "map"}


@functools.cache
def _document() -> dict[str, Any]:
    from matou.daemon.api.openapi import JSON_PATH

    with open(JSON_PATH) as f:
        return json.load(f)


@functools.cache
def _body_schemas() -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(METHOD, path template) -> (struct name for messages, schema) for operations with a JSON object body."""
    out: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for path, ops in _document()["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                if p.get("in") != "body":
                    continue
                schema = p.get("schema") or {}
                if schema.get("type") == "string":  # a tar or other binary stream
                    continue
                ref = schema.get("$ref", "")
                name = ref.rsplit("/", 1)[-1] if ref else (op.get("operationId") or "body")
                out[(method.upper(), path)] = (name, schema)
    for ext, same in _EXTENSION_BODIES.items():
        if same in out:
            out[ext] = out[same]
    return out


# matou's own operations (docs/compat.md) whose body is a documented operation's
_EXTENSION_BODIES = {("POST", "/containers/run"): ("POST", "/containers/create")}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = _document()["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _properties(schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Properties of an object schema (allOf merged) and its additionalProperties schema, if any."""
    schema = _resolve(schema)
    props: dict[str, Any] = dict(schema.get("properties") or {})
    extra = schema.get("additionalProperties")
    for part in schema.get("allOf") or []:
        p, e = _properties(part)
        props.update(p)
        extra = extra or e
    return props, extra if isinstance(extra, dict) else None


def _kind(schema: dict[str, Any]) -> str | None:
    schema = _resolve(schema)
    if "allOf" in schema:
        return "object"
    return schema.get("type")


def check(value: Any, schema: dict[str, Any], field: str) -> Any:
    """The value as Go would decode it (a null string in a map or list becomes ""); raises InvalidArgument with
    Go's decoder message where the value does not have the schema's JSON type."""
    kind = _kind(schema)
    if value is None:
        return None
    if kind is None:
        return value
    bad = ((kind == "string" and not isinstance(value, str))
           or (kind == "boolean" and not isinstance(value, bool))
           or (kind == "integer" and (isinstance(value, bool) or not (isinstance(value, int) or (
               isinstance(value, float) and value.is_integer()))))
           or (kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)))
           or (kind == "array" and not isinstance(value, list))
           or (kind == "object" and not isinstance(value, dict)))
    if bad:
        shown = "number " + json.dumps(value) if _json_type(value) == "number" else _json_type(value)
        raise InvalidArgument(f"json: cannot unmarshal {shown} into Go struct field {field} of type "
                              f"{_GO_TYPES.get(kind, kind)}")
    if kind == "integer":
        if abs(int(value)) >= 1 << 63:
            raise InvalidArgument(f"json: cannot unmarshal number {value} into Go struct field {field} of type int64")
        return int(value)
    if kind == "array":
        items = _resolve(schema).get("items") or {}
        return [_zero(check(x, items, field), items) for x in value]
    if kind == "object":
        props, extra = _properties(schema)
        out = {}
        for k, v in value.items():
            sub = props.get(k)
            if sub is not None:
                out[k] = check(v, sub, f"{field}.{k}")
            elif extra is not None:
                out[k] = _zero(check(v, extra, field), extra)
            else:
                out[k] = v
        return out
    return value


def _zero(value: Any, schema: dict[str, Any]) -> Any:
    """Go's zero value for a null element of a map or list (a struct field stays null: "not set")."""
    if value is not None:
        return value
    return {"string": "", "integer": 0, "number": 0, "boolean": False}.get(_kind(schema) or "", None)


def _template(request: web.Request) -> str | None:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    if not canonical:
        return None
    return _VERSION_PREFIX.sub("", canonical)


def _refill(request: web.Request, raw: bytes) -> None:
    """Give the handler its body back: read() answers from aiohttp's cache, but handlers that first ask
    ``can_read_body`` (or read ``request.content``) need a payload that is not at its end yet."""
    from aiohttp.streams import StreamReader

    payload = StreamReader(request.protocol, 1 << 16, loop=asyncio.get_running_loop())
    payload.feed_data(raw)
    payload.feed_eof()
    request._payload = payload  # type: ignore[attr-defined]  # no public way to put a body back


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in ("POST", "PUT") and request.can_read_body:
        tpl = _template(request)
        entry = _body_schemas().get((request.method, tpl)) if tpl else None
        if entry is not None:
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise InvalidArgument(f"invalid JSON body: {e}") from None
                except UnicodeDecodeError:
                    raise InvalidArgument("invalid JSON body: not UTF-8") from None
                name, schema = entry
                normal = check(body, schema, name)
                if normal != body:
                    raw = json.dumps(normal).encode()
                    request._read_bytes = raw  # type: ignore[attr-defined]  # read() answers from this cache
            _refill(request, raw)
    return await handler(request)
