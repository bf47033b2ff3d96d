"""POST /build (Docker's legacy builder protocol: a tar context in, JSON messages out) and POST /build/prune.

The response starts only with the first message, so an error found before any output (a Dockerfile that does not
parse, a missing Dockerfile) is an HTTP error with Docker's ``{"message": ...}``, as dockerd answers; later errors
are ``errorDetail`` messages (with the exit code of a failed RUN as ``code``, which the docker CLI exits with).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from matou.build.options import from_query
from matou.build.runstep import StepFailed
from matou.daemon.api.app import Router, qbool, services
from matou.daemon.api.streams import buffered_reader, json_stream, write_json_line
from matou.errors import InvalidArgument, MatouError, Unsupported


async def _drain(request: web.Request) -> None:
    while await request.content.read(1 << 20):
        pass


async def build(request: web.Request) -> web.StreamResponse:
    svcs = services(request)
    if svcs.builds is None:
        raise Unsupported("this daemon has no builder")
    q = request.query
    try:
        if q.get("remote"):
            raise Unsupported("remote build contexts are not supported: send the context as the request body")
        if q.get("version") == "2":
            raise Unsupported("BuildKit is not supported by matoud: use the legacy builder (DOCKER_BUILDKIT=0)")
        opts = from_query(q, q.getall, request.headers)
    except MatouError:
        await _drain(request)
        raise
    body = buffered_reader(request)
    resp: web.StreamResponse | None = None

    async def emit(msg: dict[str, Any]) -> None:
        nonlocal resp
        if resp is None:
            resp = await json_stream(request)
        await write_json_line(resp, msg)

    try:
        await svcs.builds.build(opts, body, emit)
    except (MatouError, OSError) as e:
        if resp is None:
            await _drain(request)
            if isinstance(e, MatouError):
                raise
            raise InvalidArgument(str(e)) from None
        msg = e.message if isinstance(e, MatouError) else str(e)
        detail: dict[str, Any] = {"message": msg}
        if isinstance(e, StepFailed):
            detail["code"] = e.code
        await write_json_line(resp, {"errorDetail": detail, "error": msg})
    if resp is None:
        resp = await json_stream(request)
    await resp.write_eof()
    return resp


async def prune(request: web.Request) -> web.StreamResponse:
    svcs = services(request)
    if svcs.builds is None:
        raise Unsupported("this daemon has no builder")
    until = None
    filters = request.query.get("filters")
    if filters:
        try:
            f = json.loads(filters)
        except ValueError:
            raise InvalidArgument("invalid filters JSON") from None
        u = f.get("until") if isinstance(f, dict) else None
        if isinstance(u, dict):
            u = next(iter(u), None)
        elif isinstance(u, list):
            u = u[0] if u else None
        if u:
            until = _duration(str(u))
    out = await asyncio.to_thread(svcs.builds.prune, qbool(request, "all"), until)
    return web.json_response(out)


def _duration(v: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if v[-1] in units:
            return float(v[:-1]) * units[v[-1]]
        return float(v)
    except (ValueError, IndexError):
        raise InvalidArgument(f"invalid until value {v!r}: use a duration such as 24h") from None


async def check(request: web.Request) -> web.StreamResponse:
    """matou: ``{"files": [[sha256 hex, size], ...]}`` -> ``{"missing": [hex, ...]}`` (see build.filestore)."""
    svcs = services(request)
    if svcs.builds is None:
        raise Unsupported("this daemon has no builder")
    try:
        body = await request.json()
        items = [(str(h), int(n)) for h, n in body.get("files") or []]
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgument('the body must be {"files": [[sha256 hex, size], ...]}') from None
    missing = await asyncio.to_thread(svcs.builds.missing, items)
    return web.json_response({"missing": missing})


async def cancel(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


def register(r: Router) -> None:
    r.post("/build", build)
    r.post("/build/prune", prune)
    r.post("/build/cancel", cancel)
    r.post("/build/check", check)
