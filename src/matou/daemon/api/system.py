"""/_ping, /version, /info, /events, /system/df."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from matou.daemon.api.app import Router, services
from matou.daemon.config import API_VERSION
from matou.util import filters as flt


async def ping(request: web.Request) -> web.StreamResponse:
    headers = {"Api-Version": API_VERSION, "Ostype": "linux", "Docker-Experimental": "false",
               "Builder-Version": "1", "Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}
    if request.method == "HEAD":
        return web.Response(status=200, headers={**headers, "Content-Type": "text/plain; charset=utf-8",
                                                  "Content-Length": "0"})
    return web.Response(text="OK", headers=headers)


async def version(request: web.Request) -> web.StreamResponse:
    return web.json_response(services(request).system.version())


async def info(request: web.Request) -> web.StreamResponse:
    return web.json_response(await asyncio.to_thread(services(request).system.info))


async def df(request: web.Request) -> web.StreamResponse:
    return web.json_response(await asyncio.to_thread(services(request).system.df))


async def events(request: web.Request) -> web.StreamResponse:
    bus = services(request).events
    f = flt.parse(request.query.get("filters"))
    since = _ts(request.query.get("since"))
    until = _ts(request.query.get("until"))
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    q = bus.subscribe()
    try:
        if since is not None:
            for ev in list(bus.history):
                if ev.time_nano / 1e9 >= since and (until is None or ev.time_nano / 1e9 <= until) and _match(ev, f):
                    await resp.write(json.dumps(ev.to_json()).encode() + b"\n")
        if until is not None and until <= time.time():
            return resp
        while True:
            timeout = None if until is None else max(0.0, until - time.time())
            try:
                ev = await asyncio.wait_for(q.get(), timeout)
            except TimeoutError:
                break
            if until is not None and ev.time_nano / 1e9 > until:
                break
            if _match(ev, f):
                await resp.write(json.dumps(ev.to_json()).encode() + b"\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        bus.unsubscribe(q)
    return resp


def _ts(v: str | None) -> float | None:
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        from matou.types.image import parse_time

        t = parse_time(v)
        if t:
            return t
        units = {"s": 1, "m": 60, "h": 3600}
        if v[-1] in units and v[:-1].isdigit():
            return time.time() - int(v[:-1]) * units[v[-1]]
        return None


def _match(ev, f: dict[str, list[str]]) -> bool:  # type: ignore[no-untyped-def]
    if not f:
        return True
    if "type" in f and ev.type not in f["type"]:
        return False
    if "event" in f and ev.action.split(":")[0] not in f["event"] and ev.action not in f["event"]:
        return False
    for key in ("container", "image", "network", "volume"):
        if key in f:
            if ev.type != key and not (key == "image" and ev.type == "container"):
                return False
            vals = f[key]
            names = {ev.id, ev.id[:12], ev.attributes.get("name", ""), ev.attributes.get("image", "")}
            if not any(v in names or ev.id.startswith(v) for v in vals):
                return False
    if "label" in f and not flt.labels_match(ev.attributes, f["label"]):
        return False
    return True


def register(r: Router) -> None:
    r.get("/_ping", ping)
    r.head("/_ping", ping)
    r.get("/version", version)
    r.get("/info", info)
    r.get("/events", events)
    r.get("/system/df", df)
