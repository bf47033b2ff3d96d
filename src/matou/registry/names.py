"""Repository names, tags and token scopes: the distribution spec's grammars, checked before anything is stored."""

from __future__ import annotations

import re
from dataclasses import dataclass

from matou.errors import InvalidArgument

NAME_MAX = 255
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_ACCOUNT_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")

ACTIONS = ("pull", "push", "delete")


def is_valid_name(name: str) -> bool:
    return len(name) <= NAME_MAX and bool(_NAME_RE.match(name))


def check_name(name: str) -> str:
    if not is_valid_name(name):
        raise InvalidArgument(f"invalid repository name: {name!r}")
    return name


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


def check_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise InvalidArgument(f"invalid tag: {tag!r}")
    return tag


def check_account(name: str) -> str:
    """User and organisation names: one repository path component, so ``NAME/...`` is their namespace."""
    if not _ACCOUNT_RE.match(name or ""):
        raise InvalidArgument(f"invalid account name {name!r}: use 1-64 of a-z, 0-9, '_' and '-'")
    return name


def namespace_of(name: str) -> str | None:
    """``alice/app`` -> ``alice``; a one-component name has no namespace (only admins create those)."""
    i = name.find("/")
    return name[:i] if i > 0 else None


@dataclass(frozen=True, slots=True)
class Scope:
    """One ``type:name:actions`` item of Docker's token scope grammar."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, value: str) -> Scope:
        parts = value.split(":")
        if len(parts) < 3:
            raise InvalidArgument(f"invalid scope: {value!r}")
        typ, actions = parts[0], parts[-1]
        name = ":".join(parts[1:-1])
        if not typ or not name:
            raise InvalidArgument(f"invalid scope: {value!r}")
        acts = tuple(a for a in actions.split(",") if a)
        return cls(typ, name, acts)

    @classmethod
    def parse_many(cls, values: list[str]) -> list[Scope]:
        """Several ``scope`` parameters, each possibly holding several space-separated scopes."""
        out: list[Scope] = []
        for v in values:
            for item in v.split():
                out.append(cls.parse(item))
        return out

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"
