"""Docker registry tokens: ES256-signed JWTs as distribution's token auth specifies them.

An access token carries ``iss``, ``sub`` (the user name, "" for anonymous), ``aud`` (the service), ``exp``,
``nbf``, ``iat``, ``jti`` and ``access: [{type, name, actions}]``; its header names the key with a libtrust
``kid``, so a CNCF distribution registry configured with our public key would accept it too. Refresh tokens
(OAuth2 ``refresh_token`` grant, ``offline_token=true``) are JWTs of their own type that name the user and
their ``token_version``: changing the password or removing the user kills them.

The signing key lives in ``<root>/keys/token-es256.pem`` (0600), created the first time a token is needed;
several processes on one root agree on it (create-exclusive, then everyone loads the winner). cryptography
and PyJWT are imported only then, so a registry that never sees a token never pays for them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from matou.errors import Unauthorized

_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    grants: dict[tuple[str, str], frozenset[str]]
    expires: float


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
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        os.makedirs(self.key_dir, mode=0o700, exist_ok=True)
        if not os.path.exists(self.key_path):
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
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
            key = serialization.load_pem_private_key(f.read(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise RuntimeError(f"{self.key_path} is not an EC private key")
        self._public = key.public_key()
        der = self._public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self._kid = libtrust_kid(der)
        self._key = key

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        self._load()
        return self._public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def issue(self, subject: str, access: list[dict[str, Any]]) -> tuple[str, int, float]:
        """An access token; returns (token, expires_in, issued_at)."""
        import jwt

        self._load()
        now = time.time()
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": int(now) + self.ttl,
                  "nbf": int(now) - 1, "iat": int(now), "jti": uuid.uuid4().hex, "access": access}
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._kid})
        return token, self.ttl, now

    def issue_refresh(self, subject: str, version: int) -> str:
        import jwt

        self._load()
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + self.refresh_ttl,
                  "iat": now, "jti": uuid.uuid4().hex, "typ": "refresh", "ver": version}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._kid})

    def _decode(self, token: str) -> dict[str, Any]:
        import jwt

        self._load()
        try:
            return jwt.decode(token, self._public, algorithms=["ES256"], audience=self.service, issuer=self.issuer,
                              options={"require": ["exp", "iss", "aud"]}, leeway=5)
        except jwt.PyJWTError as e:
            raise Unauthorized(f"invalid token: {e}") from None

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
