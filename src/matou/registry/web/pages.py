"""HTML pages over the same listing and policy as /v1/search: the viewer sees what they may pull.

A browser logs in with HTTP Basic: ``/login`` answers 401 with a Basic challenge until it gets valid
credentials, then redirects home; later pages read the same Authorization header.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from matou.errors import NotFound, Unauthorized
from matou.registry.auth.acl import ANONYMOUS, Subject
from matou.registry.core import Registry

_PAGE = 25


class WebPages:
    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self._env: Any = None

    def _render(self, name: str, **ctx: Any) -> web.Response:
        if self._env is None:
            import jinja2

            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
                autoescape=True)
            env.filters["ts"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else ""
            self._env = env
        html = self._env.get_template(name).render(**ctx)
        return web.Response(text=html, content_type="text/html")

    def _viewer(self, request: web.Request) -> Subject:
        try:
            ident = self.reg.authn.identify(request.headers.get("Authorization"))
        except Unauthorized:
            return ANONYMOUS
        return ident.subject

    async def index(self, request: web.Request) -> web.Response:
        who = self._viewer(request)
        q = request.query.get("q", "")
        try:
            page = max(1, int(request.query.get("page") or 1))
        except ValueError:
            page = 1
        total, repos = self.reg.index.search(self.reg.viewer(who), q, _PAGE, (page - 1) * _PAGE)
        return self._render("index.html.j2", repos=repos, total=total, q=q, page=page, page_size=_PAGE,
                            viewer=who.name)

    async def repo(self, request: web.Request) -> web.Response:
        who = self._viewer(request)
        name = request.match_info["name"]
        try:
            repo, _ = self.reg.visible_repo(who, name)
        except NotFound:
            raise web.HTTPNotFound(text="repository not found") from None
        tags = self.reg.index.tag_details(repo.id)
        return self._render("repo.html.j2", repo=repo, tags=tags, q="", viewer=who.name, host=request.host)

    async def login(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if header[:6].lower() == "basic ":
            try:
                if not self.reg.authn.identify(header).subject.anonymous:
                    raise web.HTTPFound("/")
            except Unauthorized:
                pass
        return web.Response(status=401, text="log in with your registry user name and password",
                            headers={"WWW-Authenticate": 'Basic realm="matou registry", charset="UTF-8"'})
