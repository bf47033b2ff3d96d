"""Where a reference's registry lives: Docker Hub's names, insecure registries, mirrors.

Docker's rules (``registry/config.go``, ``service_v2.go``):
- ``docker.io`` (and ``index.docker.io``) is served by ``registry-1.docker.io``; login and search talk to
  ``index.docker.io``; credentials for it are stored under ``https://index.docker.io/v1/``.
- a registry is insecure when it is in ``insecure-registries`` (a host[:port] or a CIDR) or its address is a
  loopback one (127.0.0.0/8, ::1, ``localhost``). Insecure registries are tried over HTTPS without certificate
  checks first, then over plain HTTP; all others over HTTPS with the system's CAs.
- ``registry-mirrors`` serve Docker Hub pulls; ``registry-mirrors-by-host`` (matou's) does the same per registry.
  Mirrors are tried in order before the registry itself, for pulls only, without credentials.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from matou.errors import InvalidArgument

DOCKER_HUB = "docker.io"
HUB_REGISTRY = "registry-1.docker.io"
HUB_INDEX = "index.docker.io"
HUB_SERVER_ADDRESS = "https://index.docker.io/v1/"
_HUB_ALIASES = {DOCKER_HUB, HUB_INDEX, HUB_REGISTRY, "registry.hub.docker.com", "hub.docker.com"}


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    insecure: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    mirrors_by_host: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place to send registry requests: ``host`` (host[:port]) over ``schemes`` (tried in order)."""

    host: str
    schemes: tuple[str, ...] = ("https",)
    verify: bool = True
    mirror: bool = False
    path: str = ""  # a mirror's URL path prefix, if any

    def __str__(self) -> str:
        return f"{self.schemes[0]}://{self.host}{self.path}"


def is_docker_hub(domain: str) -> bool:
    return domain.lower() in _HUB_ALIASES


def registry_host(domain: str) -> str:
    """The host serving a reference's domain: Docker Hub's registry for docker.io."""
    return HUB_REGISTRY if is_docker_hub(domain) else domain


def _split_host(host: str) -> str:
    """host[:port] -> host (IPv6 brackets removed)."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _addresses(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(name)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    out = []
    for info in infos:
        try:
            out.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    return out


def is_insecure(host: str, settings: RegistrySettings) -> bool:
    """Docker's rule: listed in insecure-registries (name or CIDR), or a loopback address."""
    name = _split_host(host).lower()
    if name == "localhost":
        return True
    nets = []
    for entry in settings.insecure:
        e = entry.strip().lower()
        if "://" in e:
            e = urlsplit(e).netloc
        e = e.rstrip("/")
        if e in (host.lower(), name):
            return True
        if "/" in e:
            try:
                nets.append(ipaddress.ip_network(e, strict=False))
            except ValueError:
                continue
    try:
        literal = ipaddress.ip_address(name)
    except ValueError:
        literal = None
    if literal is not None and literal.is_loopback:
        return True
    if not nets and literal is None:
        return False
    addrs = [literal] if literal is not None else _addresses(name)
    return any(a.is_loopback or any(a in n for n in nets) for a in addrs)


def endpoint_for(host: str, settings: RegistrySettings) -> Endpoint:
    if is_insecure(host, settings):
        return Endpoint(host, ("https", "http"), verify=False)
    return Endpoint(host)


def mirror_endpoint(url: str, settings: RegistrySettings) -> Endpoint:
    if "://" not in url:
        url = "https://" + url
    p = urlsplit(url)
    if p.scheme not in ("http", "https") or not p.netloc:
        raise InvalidArgument(f"invalid mirror URL {url!r}")
    insecure = is_insecure(p.netloc, settings)
    return Endpoint(p.netloc, (p.scheme,), verify=not insecure, mirror=True, path=p.path.rstrip("/"))


def endpoints(domain: str, settings: RegistrySettings, *, pull: bool) -> list[Endpoint]:
    """Endpoints to try for a reference's domain: mirrors first (pulls only), then the registry."""
    out: list[Endpoint] = []
    if pull:
        mirrors: tuple[str, ...] = tuple(settings.mirrors_by_host.get(domain, ()))
        if is_docker_hub(domain):
            mirrors = tuple(settings.mirrors) + mirrors
        out.extend(mirror_endpoint(m, settings) for m in mirrors)
    out.append(endpoint_for(registry_host(domain), settings))
    return out


def normalize_server(address: str) -> str:
    """A login/search server address -> the registry domain it stands for (docker's ConvertToHostname)."""
    a = (address or "").strip()
    if not a:
        return DOCKER_HUB
    if "://" in a:
        a = a.split("://", 1)[1]
    a = a.split("/", 1)[0].lower()
    return DOCKER_HUB if is_docker_hub(a) else a


def server_address(domain: str) -> str:
    """The key credentials are stored under for a registry domain (docker's convention)."""
    return HUB_SERVER_ADDRESS if is_docker_hub(domain) else domain
