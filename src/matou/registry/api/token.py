"""/token: Docker's token endpoint (GET, Basic or anonymous) and its OAuth2 form (POST, password and
refresh_token grants). A token grants, per asked scope, the intersection of the asked and the allowed
actions; asking for something not allowed is not an error (the token just lacks it), as in distribution.

Scopes: ``repository:NAME:ACTIONS`` (pull, push, delete, or ``*``), ``registry:catalog:*`` (anyone),
``registry:api:*`` (the management API; logged-in users only).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from matou.errors import InvalidArgument, Unauthorized
from matou.registry.auth.acl import ANONYMOUS, Subject
from matou.registry.auth.identity import decode_basic
from matou.registry.core import Registry
from matou.registry.names import Scope, is_valid_name


def _json(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    h = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    h.update(headers or {})
    return web.Response(status=status, body=json.dumps(data).encode(), headers=h)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenApi:
    def __init__(self, reg: Registry) -> None:
        self.reg = reg

    def grant(self, subject: Subject, scopes: list[Scope]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for s in scopes:
            asked = set(s.actions)
            if s.type == "repository":
                if not is_valid_name(s.name):
                    continue
                allowed, _ = self.reg.authz.check(subject, s.name)
                give = set(allowed) if "*" in asked else asked & allowed
                if "*" in asked and allowed == {"pull", "push", "delete"}:
                    give.add("*")
            elif s.type == "registry" and s.name == "catalog":
                give = asked & {"*", "search"}
            elif s.type == "registry" and s.name == "api":
                give = asked & {"*"} if not subject.anonymous else set()
            else:
                give = set()
            out.append({"type": s.type, "name": s.name, "actions": sorted(give)})
        return out

    def _unauthorized(self, msg: str) -> web.Response:
        return _json({"errors": [{"code": "UNAUTHORIZED", "message": msg}]}, 401,
                     {"WWW-Authenticate": f'Basic realm="{self.reg.cfg.auth.service}"'})

    def _check_service(self, service: str | None) -> None:
        if service and service != self.reg.cfg.auth.service:
            raise InvalidArgument(f"unknown service {service!r}")

    async def get(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            self._check_service(q.get("service"))
            scopes = Scope.parse_many(q.getall("scope", []))
            subject = ANONYMOUS
            auth = request.headers.get("Authorization", "")
            if auth[:6].lower() == "basic ":
                name, password = decode_basic(auth[6:].strip())
                subject = self.reg.authn.login(name, password)
            elif auth[:7].lower() == "bearer ":
                pass  # clients may resend an old token here; it is no credential for a new one
        except Unauthorized as e:
            return self._unauthorized(str(e))
        except InvalidArgument as e:
            return _json({"errors": [{"code": "INVALID", "message": str(e)}]}, 400)
        access = self.grant(subject, scopes)
        token, ttl, issued = self.reg.tokens.issue(subject.name, access)
        body: dict[str, Any] = {"token": token, "access_token": token, "expires_in": ttl, "issued_at": _iso(issued)}
        if q.get("offline_token") == "true" and not subject.anonymous:
            acct = self.reg.index.get_account(subject.name)
            if acct is not None:
                body["refresh_token"] = self.reg.tokens.issue_refresh(subject.name, acct.token_version)
        return _json(body)

    async def post(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant_type = str(form.get("grant_type", ""))
        try:
            self._check_service(str(form.get("service", "")) or None)
            scopes = Scope.parse_many([str(v) for v in form.getall("scope", [])])
        except InvalidArgument as e:
            return _json({"error": "invalid_request", "error_description": str(e)}, 400)
        offline = str(form.get("access_type", "")) == "offline"
        try:
            if grant_type == "password":
                subject = self.reg.authn.login(str(form.get("username", "")), str(form.get("password", "")))
            elif grant_type == "refresh_token":
                name, version = self.reg.tokens.verify_refresh(str(form.get("refresh_token", "")))
                acct = self.reg.index.get_account(name)
                if acct is None or acct.kind != "user" or acct.token_version != version:
                    raise Unauthorized("refresh token revoked")
                subject = Subject(acct.id, acct.name, acct.is_admin)
                offline = True
            else:
                return _json({"error": "unsupported_grant_type", "error_description": grant_type}, 400)
        except Unauthorized as e:
            return _json({"error": "invalid_grant", "error_description": str(e)}, 401)
        access = self.grant(subject, scopes)
        token, ttl, issued = self.reg.tokens.issue(subject.name, access)
        body: dict[str, Any] = {"access_token": token, "token": token, "expires_in": ttl,
                                "issued_at": _iso(issued), "scope": " ".join(str(s) for s in scopes)}
        if offline:
            acct = self.reg.index.get_account(subject.name)
            if acct is not None:
                if grant_type == "refresh_token":
                    body["refresh_token"] = str(form.get("refresh_token"))
                else:
                    body["refresh_token"] = self.reg.tokens.issue_refresh(subject.name, acct.token_version)
        return _json(body)
