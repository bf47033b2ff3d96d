"""A minimal rtnetlink client: the handful of link, address and route messages a bridge network needs.

Why not pyroute2 on the run path: measured on this VM (bench/run_network.py), pyroute2 took 15-30 ms to set up one
container's veth, address and route, and its import alone costs ~400 ms of daemon start; these few messages,
packed with ``struct`` on one socket, take well under a millisecond each. pyroute2 remains the reference: the
same ``LinkOps`` protocol is implemented over it in ``matou.network.pyroute2_links`` and both run one
conformance suite (tests/network/test_links.py).

A socket belongs to the network namespace it was created in, so a socket opened inside a container's
namespace (see ``matou.network.netns``) configures that namespace from any thread.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Protocol

# message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
# flags
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
# attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 4, 5, 10, 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NLA_F_NESTED = 0x8000
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RTPROT_KERNEL = 2
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1

_HDR = struct.Struct("=IHHII")      # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")   # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTA = struct.Struct("=HH")


def _attr(kind: int, data: bytes) -> bytes:
    n = _RTA.size + len(data)
    return _RTA.pack(n, kind) + data + b"\0" * ((4 - n % 4) % 4)


def _nest(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _str(kind: int, s: str) -> bytes:
    return _attr(kind, s.encode() + b"\0")


def _u32(kind: int, v: int) -> bytes:
    return _attr(kind, struct.pack("=I", v))


def _s32(kind: int, v: int) -> bytes:
    return _attr(kind, struct.pack("=i", v))


def _parse_attrs(data: bytes, off: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + _RTA.size <= len(data):
        n, kind = _RTA.unpack_from(data, off)
        if n < _RTA.size:
            break
        out[kind & ~NLA_F_NESTED] = data[off + _RTA.size:off + n]
        off += (n + 3) & ~3
    return out


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str
    master: int
    up: bool
    mac: str


@dataclass(frozen=True)
class Route:
    dst: ipaddress.IPv4Network
    oif: int
    gateway: str | None


class LinkOps(Protocol):
    """The link operations a bridge network needs, in the network namespace the instance was opened in.

    Lifecycle: open (in the namespace to configure), call, ``close``. Errors are ``OSError`` with the kernel's errno
    (EEXIST, ENODEV, ...), so callers can treat "already there" and "already gone" as success where that is right.
    """

    def close(self) -> None: ...
    def link(self, name: str) -> Link | None: ...
    def links(self) -> list[Link]: ...
    def create_bridge(self, name: str, mtu: int = 0, mac: str | None = None) -> int: ...
    def create_veth(self, name: str, peer: str, peer_netns_fd: int, *, master: int = 0, peer_mac: str | None = None,
                    mtu: int = 0, up: bool = True) -> int: ...
    def set_up(self, index: int) -> None: ...
    def set_master(self, index: int, master: int) -> None: ...
    def set_link(self, index: int, *, up: bool, master: int = 0, mac: str | None = None) -> None: ...
    def delete_link(self, index: int) -> None: ...
    def add_address(self, index: int, cidr: str) -> None: ...
    def delete_address(self, index: int, cidr: str) -> None: ...
    def addresses(self) -> list[tuple[int, ipaddress.IPv4Interface]]: ...
    def add_default_route(self, gateway: str, oif: int) -> None: ...
    def routes(self) -> list[Route]: ...


class NetlinkError(OSError):
    pass


class RawNetlink:
    """rtnetlink over one NETLINK_ROUTE socket, in the namespace of the thread that created it. Not thread-safe."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport
    def _request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request and collect its replies (until the ack, or DONE for a dump)."""
        self._seq += 1
        seq = self._seq
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + _HDR.size <= len(data):
                n, mtype, _fl, mseq, _pid = _HDR.unpack_from(data, off)
                payload = data[off + _HDR.size:off + n]
                off += (n + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        raise NetlinkError(err, f"netlink: {os.strerror(err)}")
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append((mtype, payload))

    # ------------------------------------------------------------------ links
    @staticmethod
    def _link_from(payload: bytes) -> Link:
        _fam, _type, index, flags, _chg = _IFINFO.unpack_from(payload)
        a = _parse_attrs(payload, _IFINFO.size)
        kind = ""
        if IFLA_LINKINFO in a:
            kind = _parse_attrs(a[IFLA_LINKINFO]).get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
        mac = ":".join(f"{b:02x}" for b in a.get(IFLA_ADDRESS, b""))
        master = struct.unpack("=I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else 0
        return Link(index, a.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(), kind, master, bool(flags & IFF_UP), mac)

    def link(self, name: str) -> Link | None:
        try:
            r = self._request(RTM_GETLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0) + _str(IFLA_IFNAME, name))
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return self._link_from(r[0][1]) if r else None

    def links(self) -> list[Link]:
        return [self._link_from(p) for t, p in self._request(RTM_GETLINK, NLM_F_DUMP, _IFINFO.pack(0, 0, 0, 0, 0))
                if t == RTM_NEWLINK]

    def create_bridge(self, name: str, mtu: int = 0, mac: str | None = None) -> int:
        attrs = _str(IFLA_IFNAME, name) + _nest(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge"))
        if mtu:
            attrs += _u32(IFLA_MTU, mtu)
        if mac:
            attrs += _attr(IFLA_ADDRESS, mac_bytes(mac))
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + attrs)
        link = self.link(name)
        if link is None:
            raise NetlinkError(errno.ENODEV, f"bridge {name} vanished after creation")
        return link.index

    def create_veth(self, name: str, peer: str, peer_netns_fd: int, *, master: int = 0, peer_mac: str | None = None,
                    mtu: int = 0, up: bool = True) -> int:
        """One message: the host end (up, on ``master``) and the peer, created inside the target namespace.

        The peer cannot be brought up in the same message (the kernel answers ENOTCONN: the pair is not linked yet
        when the peer's flags are applied); bring it up from inside its namespace."""
        peer_attrs = _str(IFLA_IFNAME, peer) + _s32(IFLA_NET_NS_FD, peer_netns_fd)
        if peer_mac:
            peer_attrs += _attr(IFLA_ADDRESS, mac_bytes(peer_mac))
        if mtu:
            peer_attrs += _u32(IFLA_MTU, mtu)
        info = _nest(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "veth"),
                     _nest(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0) + peer_attrs)))
        attrs = _str(IFLA_IFNAME, name) + info
        if master:
            attrs += _u32(IFLA_MASTER, master)
        if mtu:
            attrs += _u32(IFLA_MTU, mtu)
        flags = IFF_UP if up else 0
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _IFINFO.pack(0, 0, 0, flags, IFF_UP) + attrs)
        link = self.link(name)
        if link is None:
            raise NetlinkError(errno.ENODEV, f"veth {name} vanished after creation")
        return link.index

    def set_up(self, index: int) -> None:
        self._request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, IFF_UP, IFF_UP))

    def set_master(self, index: int, master: int) -> None:
        self._request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, 0, 0) + _u32(IFLA_MASTER, master))

    def set_link(self, index: int, *, up: bool, master: int = 0, mac: str | None = None) -> None:
        """Up (or down), enslaved to ``master`` and with MAC ``mac`` (when given), in one message."""
        attrs = (_u32(IFLA_MASTER, master) if master else b"") + (_attr(IFLA_ADDRESS, mac_bytes(mac)) if mac else b"")
        self._request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, IFF_UP if up else 0, IFF_UP) + attrs)

    def delete_link(self, index: int) -> None:
        self._request(RTM_DELLINK, 0, _IFINFO.pack(0, 0, index, 0, 0))

    # ------------------------------------------------------------------ addresses and routes
    def add_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.IPv4Interface(cidr)
        body = _IFADDR.pack(socket.AF_INET, iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, iface.ip.packed) + _attr(IFA_ADDRESS, iface.ip.packed)
        if iface.network.prefixlen < 31:
            body += _attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
        self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.IPv4Interface(cidr)
        body = _IFADDR.pack(socket.AF_INET, iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, iface.ip.packed) + _attr(IFA_ADDRESS, iface.ip.packed)
        self._request(RTM_DELADDR, 0, body)

    def addresses(self) -> list[tuple[int, ipaddress.IPv4Interface]]:
        out = []
        for t, p in self._request(RTM_GETADDR, NLM_F_DUMP, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)):
            if t != RTM_NEWADDR:
                continue
            _fam, plen, _fl, _scope, index = _IFADDR.unpack_from(p)
            a = _parse_attrs(p, _IFADDR.size)
            raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if raw and len(raw) == 4:
                out.append((index, ipaddress.IPv4Interface((raw, plen))))
        return out

    def add_default_route(self, gateway: str, oif: int) -> None:
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        body += _attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed) + _u32(RTA_OIF, oif)
        self._request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)

    def routes(self) -> list[Route]:
        out = []
        for t, p in self._request(RTM_GETROUTE, NLM_F_DUMP, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
            if t != RTM_NEWROUTE:
                continue
            _fam, dst_len, _s, _tos, table, _proto, _scope, rtype, _f = _RTMSG.unpack_from(p)
            a = _parse_attrs(p, _RTMSG.size)
            if RTA_TABLE in a:
                table = struct.unpack("=I", a[RTA_TABLE])[0]
            if table != RT_TABLE_MAIN or rtype != RTN_UNICAST:
                continue
            dst = ipaddress.IPv4Network((a.get(RTA_DST, b"\0\0\0\0"), dst_len))
            oif = struct.unpack("=I", a[RTA_OIF])[0] if RTA_OIF in a else 0
            gw = str(ipaddress.IPv4Address(a[RTA_GATEWAY])) if RTA_GATEWAY in a else None
            out.append(Route(dst, oif, gw))
        return out
