"""htpasswd files (Apache's format, as distribution's htpasswd auth reads them): ``name:hash`` per line.

Hashes understood: bcrypt (``$2y$``, ``$2b$``, ``$2a$``; needs the ``bcrypt`` module), ``{SHA}`` and argon2.
Plain-text and crypt/MD5 entries are refused. The file is re-read when its mtime changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os


def verify_hash(stored: str, password: str) -> bool:
    if stored.startswith(("$2y$", "$2b$", "$2a$")):
        try:
            import bcrypt
        except ImportError:
            return False
        try:
            return bool(bcrypt.checkpw(password.encode(), stored.replace("$2y$", "$2b$", 1).encode()))
        except ValueError:
            return False
    if stored.startswith("{SHA}"):
        want = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        return hmac.compare_digest(want, stored[5:])
    if stored.startswith("$argon2"):
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return bool(PasswordHasher().verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False
    return False


class HtpasswdFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = -1.0
        self._entries: dict[str, str] = {}

    def lookup(self, name: str) -> str | None:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return None
        if mtime != self._mtime:
            entries: dict[str, str] = {}
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line or line.startswith("#") or ":" not in line:
                        continue
                    user, _, h = line.partition(":")
                    entries[user] = h
            self._entries, self._mtime = entries, mtime
        return self._entries.get(name)
