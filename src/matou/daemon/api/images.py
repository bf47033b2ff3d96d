"""/images/* routes."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from matou.daemon.api.app import Router, qbool, services
from matou.daemon.api.streams import buffered_reader, buffered_writer, error_message, json_stream, write_json_line
from matou.errors import InvalidArgument


async def list_images(request: web.Request) -> web.StreamResponse:
    s = services(request).images
    out = await asyncio.to_thread(s.list, qbool(request, "all"), request.query.get("filters"), qbool(request, "digests"))
    return web.json_response(out)


async def inspect(request: web.Request) -> web.StreamResponse:
    return web.json_response(await asyncio.to_thread(services(request).images.inspect, request.match_info["name"]))


async def history(request: web.Request) -> web.StreamResponse:
    return web.json_response(await asyncio.to_thread(services(request).images.history, request.match_info["name"]))


async def tag(request: web.Request) -> web.StreamResponse:
    await asyncio.to_thread(services(request).images.tag, request.match_info["name"], request.query.get("repo", ""),
                            request.query.get("tag") or None)
    return web.Response(status=201)


async def remove(request: web.Request) -> web.StreamResponse:
    out = await asyncio.to_thread(services(request).images.remove, request.match_info["name"],
                                  qbool(request, "force"), qbool(request, "noprune"))
    return web.json_response(out)


async def prune(request: web.Request) -> web.StreamResponse:
    return web.json_response(await asyncio.to_thread(services(request).images.prune, request.query.get("filters")))


async def get_many(request: web.Request) -> web.StreamResponse:
    names = request.query.getall("names", [])
    if not names:
        raise InvalidArgument("no image names given")
    return await _save(request, names)


async def get_one(request: web.Request) -> web.StreamResponse:
    return await _save(request, [request.match_info["name"]])


async def _save(request: web.Request, names: list[str]) -> web.StreamResponse:
    s = services(request).images
    fmt = request.query.get("format", "docker")
    for n in names:  # fail before the 200 is sent
        await asyncio.to_thread(s.get, n)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    out = buffered_writer(resp)

    def run() -> None:
        s.save(names, out, fmt)
        out.flush()

    await asyncio.to_thread(run)
    await resp.write_eof()
    return resp


async def load(request: web.Request) -> web.StreamResponse:
    s = services(request).images
    quiet = qbool(request, "quiet")
    src = buffered_reader(request)
    resp = await json_stream(request)
    try:
        lines = await asyncio.to_thread(s.load, src)
        for line in lines:
            await write_json_line(resp, {"stream": line + "\n"})
    except Exception as e:
        await write_json_line(resp, error_message(e))
    _ = quiet
    return resp


async def create(request: web.Request) -> web.StreamResponse:
    """POST /images/create: fromSrc (import) here; fromImage (pull) when distribution is wired."""
    svcs = services(request)
    q = request.query
    if q.get("fromImage"):
        if svcs.distribution is None:
            raise InvalidArgument("pulling images is not available in this build")
        from matou.daemon.api.distribution import pull

        return await pull(request)
    src_name = q.get("fromSrc")
    if not src_name:
        raise InvalidArgument("fromImage or fromSrc is required")
    if src_name != "-":
        raise InvalidArgument("importing from a URL is not supported; send the tarball as the body (fromSrc=-)")
    src = buffered_reader(request)
    resp = await json_stream(request)
    try:
        img = await asyncio.to_thread(
            svcs.images.import_, src, repo=q.get("repo") or None, tag=q.get("tag") or None,
            changes=q.getall("changes", []), message=q.get("message", ""), platform=q.get("platform") or None)
        await write_json_line(resp, {"status": img.id})
    except Exception as e:
        await write_json_line(resp, error_message(e))
    return resp


async def bootstrap(request: web.Request) -> web.StreamResponse:
    """matou extension: POST /images/bootstrap?base=busybox|debian&tag=..."""
    s = services(request).images
    img = await asyncio.to_thread(s.bootstrap, request.query.get("base", "busybox"), request.query.get("tag") or None)
    return web.json_response({"Id": img.id, "RepoTags": img.repo_tags})


def register(r: Router) -> None:
    r.get("/images/json", list_images)
    r.post("/images/create", create)
    r.post("/images/load", load)
    r.get("/images/get", get_many)
    r.post("/images/prune", prune)
    r.post("/images/bootstrap", bootstrap)
    r.get("/images/{name:.+}/json", inspect)
    r.get("/images/{name:.+}/history", history)
    r.get("/images/{name:.+}/get", get_one)
    r.post("/images/{name:.+}/tag", tag)
    r.delete("/images/{name:.+}", remove)
    _ = json
