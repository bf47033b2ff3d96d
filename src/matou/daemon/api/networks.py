"""/networks routes (Docker Engine API): list, inspect, create, remove, connect, disconnect, prune."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from matou.daemon.api.app import Router, services
from matou.errors import InvalidArgument, Unsupported


def _svc(request: web.Request) -> Any:
    s = services(request).networks
    if s is None:
        raise Unsupported("networking is not available in this daemon")
    return s


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read() if request.can_read_body else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(f"invalid JSON body: {e}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: expected an object")
    return body


async def list_networks(request: web.Request) -> web.StreamResponse:
    return web.json_response(_svc(request).list(request.query.get("filters")))


async def inspect(request: web.Request) -> web.StreamResponse:
    return web.json_response(_svc(request).inspect(request.match_info["id"]))


async def create(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _svc(request).create(await _body(request)), status=201)


async def remove(request: web.Request) -> web.StreamResponse:
    await _svc(request).remove(request.match_info["id"])
    return web.Response(status=204)


async def connect(request: web.Request) -> web.StreamResponse:
    await _svc(request).connect(request.match_info["id"], await _body(request))
    return web.Response(status=200)


async def disconnect(request: web.Request) -> web.StreamResponse:
    await _svc(request).disconnect(request.match_info["id"], await _body(request))
    return web.Response(status=200)


async def prune(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _svc(request).prune(request.query.get("filters")))


def register(r: Router) -> None:
    r.get("/networks", list_networks)
    r.post("/networks/create", create)
    r.post("/networks/prune", prune)
    r.get("/networks/{id}", inspect)
    r.delete("/networks/{id}", remove)
    r.post("/networks/{id}/connect", connect)
    r.post("/networks/{id}/disconnect", disconnect)
