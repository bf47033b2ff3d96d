"""Image references with the distribution grammar (github.com/distribution/reference).

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [domain "/"] remote-name
    domain      := host [":" port]            (a first component with "." or ":", or "localhost")
    remote-name := path-component ("/" path-component)*
    path-component := [a-z0-9]+ ((\\.|_|__|-+)[a-z0-9]+)*
    tag         := [\\w][\\w.-]{0,127}

Normalisation follows docker: ``ubuntu`` -> ``docker.io/library/ubuntu:latest``. Error messages are the
grammar's own, so users see what docker would print.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from matou.errors import InvalidArgument
from matou.types.digest import Digest

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_ANCHORED_TAG = re.compile(rf"^{_TAG}$")
_ANCHORED_ID = re.compile(r"^[a-f0-9]{64}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")


@dataclass(frozen=True, slots=True)
class Reference:
    """A fully normalised reference: domain and path always set; tag and/or digest optional."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Full repository name, e.g. ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """What docker prints: ``busybox`` for ``docker.io/library/busybox``."""
        if self.domain == DEFAULT_DOMAIN:
            if self.path.startswith(OFFICIAL_PREFIX) and self.path.count("/") == 1:
                return self.path[len(OFFICIAL_PREFIX):]
            return self.path
        return self.name

    def with_tag(self, tag: str) -> Reference:
        if not _ANCHORED_TAG.match(tag):
            raise InvalidArgument("invalid tag format")
        return Reference(self.domain, self.path, tag, None)

    def with_default_tag(self) -> Reference:
        if self.tag is None and self.digest is None:
            return Reference(self.domain, self.path, DEFAULT_TAG, None)
        return self

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def familiar(self) -> str:
        s = self.familiar_name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s


def split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    if i == -1 or not (
        "." in name[:i] or ":" in name[:i] or name[:i] == "localhost" or name[:i].lower() != name[:i]
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = name[:i], name[i + 1 :]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(value: str) -> Reference:
    """Parses and normalises like docker's ParseNormalizedNamed; raises InvalidArgument with its messages."""
    if not value:
        raise InvalidArgument("invalid reference format: repository name must have at least one component")
    if _ANCHORED_ID.match(value):
        raise InvalidArgument(
            f"invalid repository name ({value}), cannot specify 64-byte hexadecimal strings"
        )
    m = _REFERENCE_RE.match(value)
    if not m:
        lowered = value.lower()
        if lowered != value and _REFERENCE_RE.match(_lower_name_part(value)):
            raise InvalidArgument(f"invalid reference format: repository name ({_name_part(value)}) must be lowercase")
        raise InvalidArgument("invalid reference format")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(f"invalid reference format: repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    domain, path = split_domain(name)
    if path.lower() != path or not _PATH_RE.match(path):
        raise InvalidArgument(f"invalid reference format: repository name ({path}) must be lowercase")
    if digest is not None:
        Digest.parse(digest)
    return Reference(domain, path, tag, digest)


def parse_normalized_tagged(value: str) -> Reference:
    """``parse`` plus docker's default ``:latest`` when neither tag nor digest is given."""
    return parse(value).with_default_tag()


def parse_repository(value: str) -> Reference:
    """A repository name alone (no tag, no digest), e.g. for ``images REPOSITORY``."""
    ref = parse(value)
    if ref.tag or ref.digest:
        raise InvalidArgument(f"invalid repository name: {value}")
    return ref


def is_valid_tag(tag: str) -> bool:
    return bool(_ANCHORED_TAG.match(tag))


def _name_part(value: str) -> str:
    at = value.find("@")
    if at != -1:
        value = value[:at]
    slash = value.rfind("/")
    colon = value.rfind(":")
    if colon > slash:
        value = value[:colon]
    return value


def _lower_name_part(value: str) -> str:
    n = _name_part(value)
    return n.lower() + value[len(n):]
