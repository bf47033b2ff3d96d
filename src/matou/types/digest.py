"""Content digests (``algorithm:hex``) as the OCI image spec defines them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from matou.errors import InvalidArgument

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, value: str) -> Digest:
        m = _DIGEST_RE.match(value or "")
        if not m:
            raise InvalidArgument(f"invalid digest format: {value!r}")
        algo, hx = m.group(1), m.group(2)
        want = _ALGORITHMS.get(algo)
        if want is None:
            raise InvalidArgument(f"unsupported digest algorithm: {algo}")
        if len(hx) != want or not all(c in "0123456789abcdef" for c in hx):
            raise InvalidArgument(f"invalid checksum digest format: {value!r}")
        return cls(algo, hx)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    @property
    def encoded(self) -> str:
        return self.hex

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: str) -> bool:
    try:
        Digest.parse(value)
    except InvalidArgument:
        return False
    return True


def validate(value: str) -> str:
    """Returns the digest string unchanged, or raises InvalidArgument."""
    Digest.parse(value)
    return value
