"""Registry configuration: defaults, then a TOML or JSON file, then command-line flags.

The file format is chosen by extension (``.json`` is JSON, anything else TOML). Every key is optional:

    addr = "127.0.0.1:5000"          # host:port to listen on
    root = "/var/lib/matou-registry" # all state: blobs, uploads, index.db, signing key
    tls_cert = ""                    # PEM files; both set -> HTTPS
    tls_key = ""

    [auth]
    anonymous_pull = true            # anonymous clients may pull public repositories
    anonymous_push = false           # open mode: anonymous clients may also push/delete (new repos are public)
    default_visibility = "private"   # visibility of a repository created by a push
    service = "matou-registry"       # token audience and the challenge's service=
    issuer = "matou-registry"        # token issuer
    realm = ""                       # token URL in challenges; "" = <scheme>://<Host>/token of each request
    token_ttl = 300                  # seconds an access token lives
    refresh_ttl = 2592000            # seconds a refresh token lives
    htpasswd = ""                    # optional htpasswd file of extra Basic-auth users (bcrypt, {SHA} or argon2)

    [gc]
    grace = 3600                     # unreferenced data younger than this is never collected
    interval = 0                     # seconds between online collections; 0 = only when asked
    upload_ttl = 86400               # an upload session idle this long is dropped
    delete_untagged = false          # also delete manifests no tag or index refers to

    [limits]
    max_manifest_bytes = 4194304
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from matou.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class AuthConfig:
    anonymous_pull: bool = True
    anonymous_push: bool = False
    default_visibility: str = "private"
    service: str = "matou-registry"
    issuer: str = "matou-registry"
    realm: str = ""
    token_ttl: int = 300
    refresh_ttl: int = 30 * 86400
    htpasswd: str = ""


@dataclass(frozen=True, slots=True)
class GcConfig:
    grace: float = 3600.0
    interval: float = 0.0
    upload_ttl: float = 86400.0
    delete_untagged: bool = False


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_manifest_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    addr: str = "127.0.0.1:5000"
    root: str = "/var/lib/matou-registry"
    tls_cert: str = ""
    tls_key: str = ""
    auth: AuthConfig = field(default_factory=AuthConfig)
    gc: GcConfig = field(default_factory=GcConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    @property
    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.addr.rpartition(":")
        if not sep or not port.isdigit():
            raise InvalidArgument(f"invalid --addr {self.addr!r}: expected HOST:PORT")
        return (host.strip("[]") or "0.0.0.0"), int(port)

    @property
    def index_path(self) -> str:
        return os.path.join(self.root, "index.db")


_SECTIONS = {"auth": AuthConfig, "gc": GcConfig, "limits": LimitsConfig}


def _coerce(cls: type, section: str, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = known.get(key)
        if f is None:
            raise InvalidArgument(f"unknown config key {section + '.' if section else ''}{key}")
        default = getattr(cls(), key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise InvalidArgument(f"config key {section}.{key} must be true or false")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidArgument(f"config key {section}.{key} must be a number")
            value = type(default)(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise InvalidArgument(f"config key {section}.{key} must be a string")
        kwargs[key] = value
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> RegistryConfig:
    top: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise InvalidArgument(f"config section {key} must be a table")
            sections[key] = _coerce(_SECTIONS[key], key, value)
        else:
            top[key] = value
    cfg = _coerce(RegistryConfig, "", top)
    cfg = replace(cfg, **sections)
    validate(cfg)
    return cfg


def load(path: str | None) -> RegistryConfig:
    """The configuration in ``path`` (TOML, or JSON for ``*.json``), or the defaults when path is None."""
    if not path:
        return RegistryConfig()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read config {path}: {e.strerror}")
    try:
        if path.endswith(".json"):
            data = json.loads(raw)
        else:
            import tomllib

            data = tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"invalid config {path}: {e}")
    if not isinstance(data, dict):
        raise InvalidArgument(f"invalid config {path}: not a table")
    return from_dict(data)


def validate(cfg: RegistryConfig) -> None:
    if cfg.auth.default_visibility not in ("public", "private"):
        raise InvalidArgument("auth.default_visibility must be 'public' or 'private'")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise InvalidArgument("TLS needs both a certificate and a key")
    if cfg.auth.token_ttl <= 0 or cfg.auth.refresh_ttl <= 0:
        raise InvalidArgument("token lifetimes must be positive")
    cfg.host_port  # noqa: B018  (raises on a bad address)
