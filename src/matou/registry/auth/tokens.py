"""Docker registry tokens: ES256-signed JWTs as distribution's token auth specifies them.

An access token carries ``iss``, ``sub`` (the user name, "" for anonymous), ``aud`` (the service), ``exp``,
``nbf``, ``iat``, ``jti`` and ``access: [{type, name, actions}]``; its header names the key with a libtrust
``kid``, so a CNCF distribution registry configured with our public key would accept it too. Refresh tokens
(OAuth2 ``refresh_token`` grant, ``offline_token=true``) are JWTs of their own type that name the user and
their ``token_version``: changing the password or removing the user kills them.

The signing key lives in ``<root>/keys/token-es256.pem`` (PKCS#8 PEM, 0600), created on first start;
several processes on one root agree on it (create-exclusive, then everyone loads the winner). Signing and
verification go through the system libcrypto (es256.py explains why not the cryptography wheel); the JWS
compact form is simple enough to write here: only ``alg: ES256`` is accepted, and ``exp``, ``iss`` and
``aud`` are required.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from matou.errors import Unauthorized
from matou.registry.auth.es256 import EcKey

_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    grants: dict[tuple[str, str], frozenset[str]]
    expires: float


_LEEWAY = 5


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def libtrust_kid(public_der: bytes) -> str:
    s = base64.b32encode(hashlib.sha256(public_der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


class TokenService:
    def __init__(self, key_dir: str, issuer: str, service: str, ttl: int, refresh_ttl: int) -> None:
        self.key_dir = key_dir
        self.issuer = issuer
        self.service = service
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl
        self._key: Any = None
        self._public: Any = None
        self._kid = ""
        self._cache: dict[str, AccessClaims] = {}

    @property
    def key_path(self) -> str:
        return os.path.join(self.key_dir, "token-es256.pem")

    def _load(self) -> None:
        if self._key is not None:
            return
        os.makedirs(self.key_dir, mode=0o700, exist_ok=True)
        if not os.path.exists(self.key_path):
            pem = EcKey.generate().private_pem()
            tmp = f"{self.key_path}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.key_path)  # first writer wins; everyone loads the winner
            os.unlink(tmp)
        with open(self.key_path, "rb") as f:
            try:
                key = EcKey.from_pem(f.read())
            except ValueError:
                raise RuntimeError(f"{self.key_path} is not a P-256 private key") from None
        self._kid = libtrust_kid(key.public_der())
        self._key = key

    def public_pem(self) -> bytes:
        """The public key, for a distribution registry (or anyone) that should trust these tokens."""
        self._load()
        return self._key.public_pem()

    def _encode(self, claims: dict[str, Any]) -> str:
        self._load()
        header = {"alg": "ES256", "typ": "JWT", "kid": self._kid}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64(json.dumps(claims, separators=(",", ":")).encode()))
        return signing_input + "." + _b64(self._key.sign(signing_input.encode()))

    def issue(self, subject: str, access: list[dict[str, Any]]) -> tuple[str, int, float]:
        """An access token; returns (token, expires_in, issued_at)."""
        now = time.time()
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": int(now) + self.ttl,
                  "nbf": int(now) - 1, "iat": int(now), "jti": uuid.uuid4().hex, "access": access}
        return self._encode(claims), self.ttl, now

    def issue_refresh(self, subject: str, version: int) -> str:
        now = int(time.time())
        return self._encode({"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + self.refresh_ttl,
                             "iat": now, "jti": uuid.uuid4().hex, "typ": "refresh", "ver": version})

    def _decode(self, token: str) -> dict[str, Any]:
        self._load()
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthorized("invalid token: not a JWS")
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise Unauthorized("invalid token: malformed") from None
        if not isinstance(header, dict) or header.get("alg") != "ES256":
            raise Unauthorized("invalid token: the algorithm must be ES256")
        if not self._key.verify(f"{parts[0]}.{parts[1]}".encode(), signature):
            raise Unauthorized("invalid token: bad signature")
        if not isinstance(claims, dict):
            raise Unauthorized("invalid token: malformed claims")
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise Unauthorized("invalid token: no expiry")
        if now > exp + _LEEWAY:
            raise Unauthorized("invalid token: expired")
        if nbf is not None and (not isinstance(nbf, (int, float)) or now < nbf - _LEEWAY):
            raise Unauthorized("invalid token: not valid yet")
        if claims.get("iss") != self.issuer:
            raise Unauthorized("invalid token: wrong issuer")
        aud = claims.get("aud")
        if not (aud == self.service or (isinstance(aud, list) and self.service in aud)):
            raise Unauthorized("invalid token: wrong audience")
        return claims

    def verify(self, token: str) -> AccessClaims:
        """Checks signature, issuer, audience, expiry; returns the subject and granted actions."""
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None:
            if hit.expires > now:
                return hit
            del self._cache[token]
        claims = self._decode(token)
        if claims.get("typ") == "refresh":
            raise Unauthorized("invalid token: a refresh token is not an access token")
        grants: dict[tuple[str, str], frozenset[str]] = {}
        access = claims.get("access") or []
        if not isinstance(access, list):
            raise Unauthorized("invalid token: malformed access claim")
        for item in access:
            if not isinstance(item, dict):
                raise Unauthorized("invalid token: malformed access claim")
            key = (str(item.get("type", "")), str(item.get("name", "")))
            grants[key] = grants.get(key, frozenset()) | frozenset(str(a) for a in item.get("actions") or [])
        sub = claims.get("sub") or ""
        if not isinstance(sub, str):
            raise Unauthorized("invalid token: malformed subject")
        result = AccessClaims(sub, grants, float(claims["exp"]))
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = result
        return result

    def verify_refresh(self, token: str) -> tuple[str, int]:
        claims = self._decode(token)
        if claims.get("typ") != "refresh" or not claims.get("sub"):
            raise Unauthorized("invalid refresh token")
        return str(claims["sub"]), int(claims.get("ver", -1))
