"""Request authorisation for /v2: identify the caller, apply the policy and the token's grants, or refuse.

How a refusal looks (the registry's README section has the full table):
- no credentials at all                      -> 401 UNAUTHORIZED with a Bearer challenge for the needed scope
- the policy allows it but the token does not -> 401 with ``error="insufficient_scope"``
- the repository is missing or invisible     -> 404 NAME_UNKNOWN (a private repository looks missing)
- anonymous token, visible repository        -> 401 UNAUTHORIZED (logging in may help)
- a user who may see but not do this          -> 403 DENIED
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from matou.errors import Unauthorized
from matou.registry.api.errors import ApiError
from matou.registry.auth.identity import Identity
from matou.registry.core import Registry, RepoNotFound
from matou.registry.index import Access


@dataclass(frozen=True, slots=True)
class Grant:
    identity: Identity
    actions: frozenset[str]
    access: Access


def realm(reg: Registry, request: web.Request) -> str:
    if reg.cfg.auth.realm:
        return reg.cfg.auth.realm
    return f"{request.scheme}://{request.host}/token"


def challenge(reg: Registry, request: web.Request, scope: str | None = None, error: str | None = None) -> str:
    parts = [f'realm="{realm(reg, request)}"', f'service="{reg.cfg.auth.service}"']
    if scope:
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    return "Bearer " + ",".join(parts)


def identify(reg: Registry, request: web.Request, scope: str | None = None) -> Identity:
    try:
        return reg.authn.identify(request.headers.get("Authorization"))
    except Unauthorized as e:
        raise ApiError(401, "UNAUTHORIZED", str(e), {"WWW-Authenticate": challenge(reg, request, scope)}) from None


def _scope(name: str, need: str) -> str:
    return f"repository:{name}:{'pull,push' if need == 'push' else need}"


def authorize(reg: Registry, request: web.Request, name: str, need: str) -> Grant:
    scope = _scope(name, need)
    ident = identify(reg, request, scope)
    acts, access = reg.authz.check(ident.subject, name)
    granted = ident.granted("repository", name)
    effective = acts if granted is None else acts & granted
    if need in effective:
        return Grant(ident, effective, access)
    if ident.method == "none":
        raise ApiError(401, "UNAUTHORIZED", "authentication required",
                       {"WWW-Authenticate": challenge(reg, request, scope)})
    if need in acts:  # the policy allows it; the token was asked for less
        raise ApiError(401, "UNAUTHORIZED", "authentication required: the token does not cover this action",
                       {"WWW-Authenticate": challenge(reg, request, scope, "insufficient_scope")})
    if "pull" not in acts:
        raise RepoNotFound(name)
    if ident.subject.anonymous:
        raise ApiError(401, "UNAUTHORIZED", "authentication required",
                       {"WWW-Authenticate": challenge(reg, request, scope)})
    raise ApiError(403, "DENIED", "requested access to the resource is denied")
