"""Argon2id password hashing, with a short-lived cache of successful checks.

Parameters are OWASP's (19 MiB, 2 passes): a registry checks a password on every Basic-authenticated request,
and the default 64 MiB profile would make each check cost as much memory as the whole server. Successful
checks are remembered for a minute under a salted hash of (name, password, stored hash), so a password change
invalidates them at once.
"""

from __future__ import annotations

import hashlib
import os
import time

_CACHE_TTL = 60.0
_CACHE_MAX = 1024


class Passwords:
    def __init__(self) -> None:
        self._hasher = None
        self._salt = os.urandom(16)
        self._ok: dict[bytes, float] = {}

    def _ph(self):  # noqa: ANN202 - argon2 is imported only when a password is first used
        if self._hasher is None:
            from argon2 import PasswordHasher

            self._hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
        return self._hasher

    def hash(self, password: str) -> str:
        return self._ph().hash(password)

    def verify(self, name: str, stored: str | None, password: str) -> bool:
        if not stored or not password:
            return False
        key = hashlib.sha256(self._salt + f"{name}\0{password}\0{stored}".encode()).digest()
        now = time.monotonic()
        hit = self._ok.get(key)
        if hit is not None and hit > now:
            return True
        if stored.startswith("$argon2"):
            from argon2.exceptions import InvalidHashError, VerificationError

            try:
                ok = bool(self._ph().verify(stored, password))
            except (VerificationError, InvalidHashError):
                ok = False
        else:
            from matou.registry.auth.htpasswd import verify_hash

            ok = verify_hash(stored, password)
        if ok:
            if len(self._ok) >= _CACHE_MAX:
                self._ok.clear()
            self._ok[key] = now + _CACHE_TTL
        return ok
