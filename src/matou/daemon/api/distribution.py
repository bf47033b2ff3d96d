"""Registry routes: POST /images/create?fromImage= (pull), POST /images/{name}/push, POST /auth, GET /images/search.

Pull and push run in a worker thread and stream Docker's JSON progress messages. An error before the first message
(unknown manifest, access denied) is an HTTP error status, as dockerd answers; after it, an ``errorDetail`` line.
A client that goes away cancels the transfer (partial downloads stay for the next attempt to resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from matou.daemon.api.app import Router, qint, services
from matou.daemon.api.streams import error_message, json_stream, write_json_line
from matou.distribution.auth import Credentials
from matou.distribution.progress import Sink
from matou.errors import InvalidArgument

Work = Callable[[Sink, threading.Event], Any]


def _credentials(request: web.Request) -> Credentials:
    return Credentials.from_header(request.headers.get("X-Registry-Auth"))


async def _progress_stream(request: web.Request, work: Work) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def sink(msg: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("msg", msg))

    async def run() -> None:
        try:
            await asyncio.to_thread(work, sink, cancel)
        except BaseException as e:  # noqa: BLE001 - handed to the response
            queue.put_nowait(("error", e))
        else:
            queue.put_nowait(("done", None))

    task = asyncio.create_task(run())
    try:
        kind, item = await queue.get()
        if kind == "error":
            raise item
        resp = await json_stream(request)
        while kind != "done":
            if kind == "msg":
                await write_json_line(resp, item)
            else:
                await write_json_line(resp, error_message(item))
                break
            kind, item = await queue.get()
        return resp
    finally:
        if not task.done():
            cancel.set()
            with contextlib.suppress(BaseException):
                await asyncio.shield(task)


async def pull(request: web.Request) -> web.StreamResponse:
    """POST /images/create?fromImage=NAME&tag=TAG|DIGEST&platform=OS/ARCH (called by daemon.api.images)."""
    svc = services(request).distribution
    q = request.query
    from_image = q.get("fromImage", "")
    if not from_image:
        raise InvalidArgument("fromImage is required")
    creds = _credentials(request)

    def work(sink: Sink, cancel: threading.Event) -> None:
        svc.pull(from_image, q.get("tag") or None, q.get("platform") or None, creds, sink, cancel)

    return await _progress_stream(request, work)


async def push(request: web.Request) -> web.StreamResponse:
    svc = services(request).distribution
    name = request.match_info["name"]
    tag = request.query.get("tag") or None
    creds = _credentials(request)

    def work(sink: Sink, cancel: threading.Event) -> None:
        svc.push(name, tag, creds, sink, cancel)

    return await _progress_stream(request, work)


async def auth(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("the body must be a JSON AuthConfig") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON AuthConfig")
    creds = Credentials.from_json(body)
    svc = services(request).distribution
    out = await asyncio.to_thread(svc.login, creds)
    return web.json_response(out)


async def search(request: web.Request) -> web.StreamResponse:
    svc = services(request).distribution
    q = request.query
    creds = _credentials(request)
    out = await asyncio.to_thread(svc.search, q.get("term", ""), qint(request, "limit"), q.get("filters"), creds)
    return web.Response(body=json.dumps(out).encode(), content_type="application/json")


def register(r: Router) -> None:
    r.post("/images/{name:.+}/push", push)
    r.post("/auth", auth)
    r.get("/images/search", search)
