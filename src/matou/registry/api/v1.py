"""Docker's v1 endpoints that clients still use: ``/v1/_ping`` and ``/v1/search`` (Docker Hub's JSON shape).

Search lists only repositories the caller may pull; credentials (Basic or a Bearer token) widen it,
their absence narrows it to public repositories, and bad credentials are refused.
"""

from __future__ import annotations

import json

from aiohttp import web

from matou.registry.api.errors import ApiError, json_error
from matou.registry.api.gate import identify
from matou.registry.core import Registry

_MAX_PAGE_SIZE = 100


class V1Api:
    def __init__(self, reg: Registry) -> None:
        self.reg = reg

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(body=b"true", headers={"Content-Type": "application/json",
                                                   "X-Docker-Registry-Standalone": "true",
                                                   "X-Docker-Registry-Version": "0.6.0"})

    async def search(self, request: web.Request) -> web.Response:
        try:
            ident = identify(self.reg, request, "registry:catalog:search")
        except ApiError as e:
            return json_error(e.status, e.code, e.message, e.headers)
        q = request.query.get("q", "")
        try:
            n = int(request.query.get("n") or 25)
            page = int(request.query.get("page") or 1)
        except ValueError:
            return json_error(400, "INVALID", "n and page must be integers")
        n = max(1, min(n, _MAX_PAGE_SIZE))
        page = max(1, page)
        total, repos = self.reg.index.search(self.reg.viewer(ident.subject), q, n, (page - 1) * n)
        results = [{"name": r.name, "description": r.description, "star_count": r.star_count,
                    "pull_count": r.pull_count, "is_official": r.name.startswith("library/"),
                    "is_automated": False, "is_trusted": False} for r in repos]
        body = {"num_pages": (total + n - 1) // n, "num_results": total, "page": page, "page_size": n,
                "query": q, "results": results}
        return web.Response(body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
