"""Registry authentication: credentials, ``WWW-Authenticate`` challenges, Docker's token protocol, a token cache.

The flow (docker's ``registry/auth.go`` and distribution's ``token`` spec):

1. ``GET /v2/`` answers 200 (no auth), or 401 with a challenge: ``Basic realm=...`` or
   ``Bearer realm="https://host/token",service="..."``.
2. Basic: every request carries ``Authorization: Basic base64(user:password)``.
3. Bearer: ask the realm for a token per scope set (``repository:NAME:pull,push``): ``GET realm?service=&scope=``
   with Basic credentials (or none, for anonymous pulls), or, holding a refresh token (docker's "identity token"
   from ``login``), ``POST realm`` with ``grant_type=refresh_token`` (the OAuth2 form). Tokens are cached per
   (realm, service, credentials, scopes) until shortly before they expire.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from matou.distribution.http import HTTPClient, error_text
from matou.errors import InvalidArgument, Unauthorized, Unavailable

CLIENT_ID = "matou"
_MIN_TTL = 60
_TOKEN_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client sends in ``X-Registry-Auth``: a password, a refresh ("identity") token, or a bearer token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""
    server: str = ""

    @property
    def anonymous(self) -> bool:
        return not (self.password or self.identity_token or self.registry_token)

    @property
    def key(self) -> str:
        """A fingerprint that keeps one user's tokens from serving another (never the secret itself)."""
        if self.anonymous:
            return "anonymous"
        raw = f"{self.username}\0{self.password}\0{self.identity_token}\0{self.registry_token}".encode()
        return hashlib.sha256(raw).hexdigest()[:32]

    def basic(self) -> str | None:
        if not (self.username and self.password):
            return None
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    @classmethod
    def from_header(cls, value: str | None) -> Credentials:
        """Decode docker's ``X-Registry-Auth``: base64url (padded or not) JSON of an AuthConfig."""
        if not value or not value.strip():
            return cls()
        v = value.strip()
        try:
            raw = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
        except (ValueError, TypeError):
            try:
                raw = base64.b64decode(v + "=" * (-len(v) % 4))
            except (ValueError, TypeError):
                raise InvalidArgument("X-Registry-Auth is not valid base64") from None
        try:
            d = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise InvalidArgument("X-Registry-Auth is not valid JSON") from None
        if not isinstance(d, dict):
            return cls()
        return cls.from_json(d)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Credentials:
        user, pw = str(d.get("username") or ""), str(d.get("password") or "")
        if d.get("auth") and not (user or pw):
            try:
                user, _, pw = base64.b64decode(str(d["auth"])).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument("invalid auth field in credentials") from None
        return cls(user, pw, str(d.get("identitytoken") or ""), str(d.get("registrytoken") or ""),
                   str(d.get("serveraddress") or ""))


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


_TCHARS = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (RFC 7235: several challenges, quoted or token params)."""
    out: list[Challenge] = []
    for value in values:
        i, n = 0, len(value)
        cur: Challenge | None = None
        while i < n:
            while i < n and value[i] in " \t,":
                i += 1
            j = i
            while j < n and value[j] in _TCHARS:
                j += 1
            if j == i:
                i += 1
                continue
            tok = value[i:j]
            k = j
            while k < n and value[k] in " \t":
                k += 1
            if k < n and value[k] == "=" and cur is not None:
                k += 1
                while k < n and value[k] in " \t":
                    k += 1
                if k < n and value[k] == '"':
                    k += 1
                    buf = []
                    while k < n and value[k] != '"':
                        if value[k] == "\\" and k + 1 < n:
                            k += 1
                        buf.append(value[k])
                        k += 1
                    val = "".join(buf)
                    k += 1
                else:
                    m = k
                    while m < n and value[m] not in ", \t":
                        m += 1
                    val = value[k:m]
                    k = m
                cur.params[tok.lower()] = val
                i = k
            else:
                cur = Challenge(tok.lower(), {})
                out.append(cur)
                i = j
    return out


@dataclass(frozen=True, slots=True)
class Token:
    token: str
    expires_at: float
    refresh_token: str = ""


class TokenCache:
    """Bearer tokens by (realm, service, credentials, scopes); thread-safe, shared by every pull and push."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, tuple[str, ...]], Token] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str, tuple[str, ...]]) -> Token | None:
        with self._lock:
            t = self._tokens.get(key)
            if t is not None and t.expires_at <= time.time():
                del self._tokens[key]
                return None
            return t

    def put(self, key: tuple[str, str, str, tuple[str, ...]], token: Token) -> None:
        with self._lock:
            if len(self._tokens) > 1000:
                now = time.time()
                self._tokens = {k: v for k, v in self._tokens.items() if v.expires_at > now}
            self._tokens[key] = token

    def drop(self, key: tuple[str, str, str, tuple[str, ...]]) -> None:
        with self._lock:
            self._tokens.pop(key, None)


def fetch_token(http: HTTPClient, challenge: Challenge, creds: Credentials, scopes: tuple[str, ...], *,
                verify: bool = True, offline: bool = False) -> Token:
    """Ask the challenge's realm for a token; raises Unauthorized for bad credentials."""
    realm = challenge.realm
    if not realm:
        raise Unavailable("the registry's Bearer challenge names no realm")
    service = challenge.params.get("service", "")
    if creds.identity_token:
        form: list[tuple[str, str]] = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token),
                                       ("service", service), ("client_id", CLIENT_ID)]
        if scopes:
            form.append(("scope", " ".join(scopes)))
        if offline:
            form.append(("access_type", "offline"))
        resp = http.request("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"},
                            urlencode(form).encode(), verify=verify)
    else:
        q: list[tuple[str, str]] = []
        if service:
            q.append(("service", service))
        q.extend(("scope", s) for s in scopes)
        if offline and creds.basic():
            q += [("offline_token", "true"), ("client_id", CLIENT_ID)]
        url = realm + ("&" if "?" in realm else "?") + urlencode(q) if q else realm
        headers = {}
        basic = creds.basic()
        if basic:
            headers["Authorization"] = basic
        resp = http.request("GET", url, headers, verify=verify)
    with resp:
        if resp.status in (401, 403):
            msg = error_text(resp) or "incorrect username or password"
            raise Unauthorized(f"unauthorized: {msg}")
        if resp.status != 200:
            raise Unavailable(f"token server {realm} answered {resp.status}: {error_text(resp)}")
        try:
            d = json.loads(resp.read(_TOKEN_LIMIT))
        except ValueError:
            raise Unavailable(f"token server {realm} sent invalid JSON") from None
    tok = str(d.get("access_token") or d.get("token") or "")
    if not tok:
        raise Unavailable(f"token server {realm} sent no token")
    try:
        ttl = max(int(d.get("expires_in") or _MIN_TTL), _MIN_TTL)
    except (TypeError, ValueError):
        ttl = _MIN_TTL
    # refresh a little early: a token that expires in flight costs a failed request
    return Token(tok, time.time() + ttl * 0.9, str(d.get("refresh_token") or ""))


def scope(repository: str, actions: tuple[str, ...]) -> str:
    return f"repository:{repository}:{','.join(actions)}"
