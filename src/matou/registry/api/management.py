"""The management API: JSON over HTTP under /api/v1, what ``matou registry ... --url`` speaks.

Credentials: Basic, or a Bearer token from /token whose access includes ``registry:api:*`` (only given to
logged-in users, so a pull token handed to a daemon cannot manage anything). Without credentials the
caller is anonymous and can only list what anonymous users may see.

    GET    /api/v1/whoami
    GET    /api/v1/users                                   (admins)
    POST   /api/v1/users                {name, password, admin}
    DELETE /api/v1/users/NAME
    PUT    /api/v1/users/NAME/password  {password}         (admins, or the user)
    POST   /api/v1/orgs                 {name}             (creator becomes its admin)
    DELETE /api/v1/orgs/NAME
    PUT    /api/v1/orgs/NAME/members/USER {role}; DELETE same
    GET    /api/v1/repositories?q=&n=&page=
    POST   /api/v1/repositories         {name, visibility, description, owner}
    GET    /api/v1/repositories/NAME                       (with tags; members for managers)
    PATCH  /api/v1/repositories/NAME    {visibility, description, immutable_tags, owner}
    DELETE /api/v1/repositories/NAME
    PUT    /api/v1/repositories/NAME/-/members/USER {role}; DELETE same
    PUT    /api/v1/repositories/NAME/-/star; DELETE same
    POST   /api/v1/gc                   {dry_run, grace, delete_untagged}   (admins)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from matou.errors import Forbidden, InvalidArgument, MatouError, Unauthorized
from matou.registry.api.errors import classify, json_error, message_of
from matou.registry.auth.acl import ALL, Subject
from matou.registry.core import Registry


def _ok(data: Any = None, status: int = 200) -> web.Response:
    if data is None:
        return web.Response(status=204)
    return web.Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"})


class ManagementApi:
    def __init__(self, reg: Registry) -> None:
        self.reg = reg

    def _subject(self, request: web.Request) -> Subject:
        header = request.headers.get("Authorization")
        ident = self.reg.authn.identify(header)
        if ident.method == "bearer" and not ident.subject.anonymous:
            if "*" not in (ident.grants or {}).get(("registry", "api"), frozenset()):
                raise Unauthorized("this token does not grant registry:api:*")
        return ident.subject

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            subject = self._subject(request)
            body: dict[str, Any] = {}
            if request.method in ("POST", "PUT", "PATCH") and request.can_read_body:
                raw = await request.read()
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise InvalidArgument("request body is not JSON") from None
                    if not isinstance(body, dict):
                        raise InvalidArgument("request body must be a JSON object")
            return await self._route(request, subject, body)
        except MatouError as e:
            status, code = classify(e)
            headers = {"WWW-Authenticate": 'Basic realm="matou-registry"'} if status == 401 else None
            return json_error(status, code, message_of(e), headers)
        except (ValueError, TypeError) as e:  # malformed numbers or field types in the request
            return json_error(400, "INVALID", str(e))

    async def _route(self, request: web.Request, who: Subject, body: dict[str, Any]) -> web.StreamResponse:
        reg = self.reg
        m = request.method
        tail = request.match_info.get("tail", "").strip("/")
        parts = tail.split("/") if tail else []
        if parts == ["whoami"] and m == "GET":
            return _ok({"name": who.name or None, "admin": who.is_admin, "anonymous": who.anonymous})
        if parts[:1] == ["users"]:
            if len(parts) == 1 and m == "GET":
                reg._require_admin(who)
                return _ok([{"name": a.name, "admin": a.is_admin, "created": a.created}
                            for a in reg.index.list_accounts("user")])
            if len(parts) == 1 and m == "POST":
                reg.add_user(who, _str(body, "name"), _str(body, "password"), bool(body.get("admin", False)))
                return _ok({"name": body["name"]}, 201)
            if len(parts) == 2 and m == "DELETE":
                reg.remove_user(who, parts[1])
                return _ok()
            if len(parts) == 3 and parts[2] == "password" and m == "PUT":
                reg.set_password(who, parts[1], _str(body, "password"))
                return _ok()
        if parts[:1] == ["orgs"]:
            if len(parts) == 1 and m == "POST":
                reg.add_org(who, _str(body, "name"))
                return _ok({"name": body["name"]}, 201)
            if len(parts) == 2 and m == "DELETE":
                reg.remove_org(who, parts[1])
                return _ok()
            if len(parts) == 4 and parts[2] == "members" and m in ("PUT", "DELETE"):
                reg.org_member(who, parts[1], parts[3], _str(body, "role") if m == "PUT" else None)
                return _ok()
        if parts[:1] == ["repositories"]:
            return await self._repos(request, who, parts[1:], body)
        if parts == ["gc"] and m == "POST":
            reg._require_admin(who)
            if who.anonymous:
                raise Forbidden("only registry administrators may do this")
            from matou.registry.gc import collect

            grace = body.get("grace")
            report = await asyncio.get_running_loop().run_in_executor(
                None, lambda: collect(reg, dry_run=bool(body.get("dry_run", False)),
                                      grace=float(grace) if grace is not None else None,
                                      delete_untagged=body.get("delete_untagged")))
            return _ok(report.to_json())
        return json_error(404, "NOT_FOUND", f"no such endpoint: {m} /api/v1/{tail}")

    async def _repos(self, request: web.Request, who: Subject, parts: list[str], body: dict[str, Any]) -> web.StreamResponse:
        reg = self.reg
        m = request.method
        if not parts:
            if m == "GET":
                q = request.query.get("q", "")
                n = max(1, min(int(request.query.get("n") or 100), 1000))
                page = max(1, int(request.query.get("page") or 1))
                total, repos = reg.index.search(reg.viewer(who), q, n, (page - 1) * n)
                return _ok({"total": total, "page": page, "repositories": [r.to_json() for r in repos]})
            if m == "POST":
                repo = reg.create_repo(who, _str(body, "name"), body.get("visibility"), body.get("description") or "",
                                       body.get("owner"))
                return _ok(repo.to_json(), 201)
        if "-" in parts:
            i = parts.index("-")
            name, rest = "/".join(parts[:i]), parts[i + 1:]
        else:
            name, rest = "/".join(parts), []
        if not rest:
            if m == "GET":
                repo, acts = reg.visible_repo(who, name)
                out = repo.to_json()
                out["tags"] = [{"name": t[0], "digest": t[1], "media_type": t[2], "size": t[3], "updated": t[4]}
                               for t in reg.index.tag_details(repo.id)]
                if acts == ALL:
                    out["members"] = [{"user": u, "role": r} for u, r in reg.index.members(repo.id)]
                return _ok(out)
            if m == "PATCH":
                tags = body.get("immutable_tags")
                if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
                    raise InvalidArgument("immutable_tags must be a list of patterns")
                repo = reg.update_repo(who, name, visibility=body.get("visibility"),
                                       description=body.get("description"), immutable_tags=tags,
                                       owner=body.get("owner"))
                return _ok(repo.to_json())
            if m == "DELETE":
                reg.remove_repo(who, name)
                return _ok()
        elif rest[0] == "members":
            if len(rest) == 1 and m == "GET":
                repo, _ = reg.visible_repo(who, name)
                return _ok([{"user": u, "role": r} for u, r in reg.index.members(repo.id)])
            if len(rest) == 2 and m in ("PUT", "DELETE"):
                reg.repo_member(who, name, rest[1], _str(body, "role") if m == "PUT" else None)
                return _ok()
        elif rest == ["star"] and m in ("PUT", "DELETE"):
            reg.star(who, name, m == "PUT")
            return _ok()
        return json_error(404, "NOT_FOUND", f"no such endpoint: {m} {request.path}")


def _str(body: dict[str, Any], key: str) -> str:
    v = body.get(key)
    if not isinstance(v, str) or not v:
        raise InvalidArgument(f"{key} is required")
    return v
