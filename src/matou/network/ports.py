"""Published ports: what a container asks for (``-p``, ``-P``) and the host ports that back it.

Every published host port is *reserved* by a socket the daemon binds (and, for TCP, listens on) for as long as the
mapping lives, as docker-proxy does: another program cannot take the port afterwards, a port already taken fails
with a clear error, and ``-P`` gets a free port from the kernel (bind to port 0). The socket never sees traffic:
nftables rewrites every IPv4 packet for that port before it would reach it.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from matou.errors import Conflict, InvalidArgument


@dataclass(frozen=True)
class Request:
    """One wanted mapping: container port -> host address and port (0 = any free), or a host port range."""

    proto: str
    port: int
    host_ip: str
    host_lo: int
    host_hi: int

    @property
    def key(self) -> str:
        return f"{self.port}/{self.proto}"


def _port_range(v: str, what: str) -> tuple[int, int]:
    lo, _, hi = str(v).partition("-")
    try:
        a = int(lo)
        b = int(hi) if hi else a
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {v}") from None
    if not (0 <= a <= 65535 and 0 <= b <= 65535) or b < a:
        raise InvalidArgument(f"invalid {what}: {v}")
    return a, b


def requests(port_bindings: dict[str, Any] | None, publish_all: bool,
             exposed: dict[str, Any] | None) -> list[Request]:
    """HostConfig.PortBindings (+ every ExposedPorts entry for PublishAllPorts) as a flat list of requests."""
    out: list[Request] = []
    seen: set[str] = set()
    for key, binds in (port_bindings or {}).items():
        port_s, _, proto = key.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp"):
            raise InvalidArgument(f"publishing {proto} ports is not supported (tcp, udp)")
        lo, hi = _port_range(port_s, "containerPort")
        for p in range(lo, hi + 1):
            seen.add(f"{p}/{proto}")
            for b in binds or [{}]:
                ip = (b or {}).get("HostIp") or "0.0.0.0"
                try:
                    addr = ipaddress.ip_address(ip)
                except ValueError:
                    raise InvalidArgument(f"invalid host IP address {ip!r} for port {key}") from None
                if addr.version != 4:
                    if str(addr) == "::":
                        continue  # the IPv6 half of a dual-stack binding: this engine is IPv4 only
                    raise InvalidArgument(f"publishing on IPv6 address {ip} is not supported")
                hp = (b or {}).get("HostPort") or ""
                h_lo, h_hi = _port_range(hp, "hostPort") if hp else (0, 0)
                out.append(Request(proto, p, str(addr), h_lo, h_hi))
    if publish_all:
        for key in sorted(exposed or {}):
            port_s, _, proto = key.partition("/")
            proto = proto or "tcp"
            if key in seen or f"{port_s}/{proto}" in seen or proto not in ("tcp", "udp"):
                continue
            lo, hi = _port_range(port_s, "containerPort")
            for p in range(lo, hi + 1):
                out.append(Request(proto, p, "0.0.0.0", 0, 0))
    return out


def reserve(req: Request, owner: str) -> tuple[socket.socket, int]:
    """Bind the host side of one mapping; returns the holding socket and the host port."""
    kind = socket.SOCK_STREAM if req.proto == "tcp" else socket.SOCK_DGRAM
    candidates = [0] if req.host_lo == 0 else list(range(req.host_lo, req.host_hi + 1))
    last: OSError | None = None
    for port in candidates:
        s = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
        try:
            s.bind((req.host_ip, port))
            if kind == socket.SOCK_STREAM:
                s.listen(1)
            return s, s.getsockname()[1]
        except OSError as e:
            s.close()
            last = e
            if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                break
    shown = f"{req.host_ip}:{req.host_lo}" + (f"-{req.host_hi}" if req.host_hi != req.host_lo else "")
    if last is not None and last.errno == errno.EADDRNOTAVAIL:
        raise InvalidArgument(f"driver failed programming external connectivity on endpoint {owner}: "
                              f"cannot publish on {req.host_ip}: it is not an address of this host")
    raise Conflict(f"driver failed programming external connectivity on endpoint {owner}: "
                   f"Bind for {shown} failed: port is already allocated")
