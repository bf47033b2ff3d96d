"""Turns an ``Authorization`` header into a Subject: Bearer tokens, Basic (index users, then htpasswd), or none.

A Basic login through an htpasswd file for a name the index does not know creates that user (without a
password of its own), so memberships and namespaces work the same for both kinds of users.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from matou.errors import Unauthorized
from matou.registry.auth.acl import ANONYMOUS, Subject
from matou.registry.auth.htpasswd import HtpasswdFile
from matou.registry.auth.passwords import Passwords
from matou.registry.auth.tokens import TokenService
from matou.registry.index import Index


@dataclass(frozen=True, slots=True)
class Identity:
    subject: Subject
    method: str  # "none", "basic" or "bearer"
    grants: dict[tuple[str, str], frozenset[str]] | None = None  # a bearer token's; None = not limited by one

    def granted(self, typ: str, name: str) -> frozenset[str] | None:
        if self.grants is None:
            return None
        acts = self.grants.get((typ, name), frozenset())
        if "*" in acts:
            return frozenset(("pull", "push", "delete"))
        return acts


NO_CREDENTIALS = Identity(ANONYMOUS, "none")


class Authenticator:
    def __init__(self, index: Index, passwords: Passwords, tokens: TokenService, htpasswd: str = "") -> None:
        self.index = index
        self.passwords = passwords
        self.tokens = tokens
        self.htpasswd = HtpasswdFile(htpasswd) if htpasswd else None

    def login(self, name: str, password: str) -> Subject:
        """Checks a user name and password; raises Unauthorized."""
        acct = self.index.get_account(name)
        if acct is not None and acct.kind == "user" and self.passwords.verify(name, acct.password_hash, password):
            return Subject(acct.id, acct.name, acct.is_admin)
        if self.htpasswd is not None and (acct is None or acct.kind == "user"):
            stored = self.htpasswd.lookup(name)
            if stored and self.passwords.verify(name, stored, password):
                if acct is None:
                    from matou.errors import Conflict
                    from matou.registry.names import check_account

                    try:
                        acct = self.index.create_account(check_account(name), "user")
                    except Conflict:
                        acct = self.index.get_account(name)
                    if acct is None:
                        raise Unauthorized("authentication failed")
                return Subject(acct.id, acct.name, acct.is_admin)
        raise Unauthorized("authentication failed: wrong user name or password")

    def subject_named(self, name: str) -> Subject:
        if not name:
            return ANONYMOUS
        acct = self.index.get_account(name)
        if acct is None or acct.kind != "user":
            raise Unauthorized("invalid token: unknown subject")
        return Subject(acct.id, acct.name, acct.is_admin)

    def identify(self, header: str | None) -> Identity:
        if not header:
            return NO_CREDENTIALS
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and value:
            claims = self.tokens.verify(value)
            return Identity(self.subject_named(claims.subject), "bearer", claims.grants)
        if scheme == "basic" and value:
            name, password = decode_basic(value)
            return Identity(self.login(name, password), "basic")
        raise Unauthorized("unsupported authorization scheme")


def decode_basic(value: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    name, sep, password = raw.partition(":")
    if not sep:
        raise Unauthorized("malformed Basic credentials")
    return name, password
