"""``LinkOps`` over pyroute2: the reference implementation the raw netlink client is checked and measured against.

Not used by the daemon (its import alone costs ~300-400 ms, its per-container path 15-30 ms on this VM; see
bench/run_network.py); kept so tests/network/test_links.py runs one conformance suite over both.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any

from matou.network.netlink import Link, NetlinkError, Route


def _err(e: Exception) -> OSError:
    code = getattr(e, "code", None)
    if isinstance(code, int) and code > 0:
        return NetlinkError(code, f"netlink: {e}")
    if isinstance(e, OSError):
        return e
    return NetlinkError(errno.EIO, f"netlink: {e}")


class PyRoute2Links:
    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def _call(self, fn: Any, *a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except Exception as e:
            raise _err(e) from None

    @staticmethod
    def _link(msg: Any) -> Link:
        info = msg.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
        return Link(msg["index"], msg.get_attr("IFLA_IFNAME") or "", kind, msg.get_attr("IFLA_MASTER") or 0,
                    bool(msg["flags"] & 1), msg.get_attr("IFLA_ADDRESS") or "")

    def link(self, name: str) -> Link | None:
        idx = self._call(self.ipr.link_lookup, ifname=name)
        if not idx:
            return None
        return self._link(self._call(self.ipr.get_links, idx[0])[0])

    def links(self) -> list[Link]:
        return [self._link(m) for m in self._call(self.ipr.get_links)]

    def create_bridge(self, name: str, mtu: int = 0, mac: str | None = None) -> int:
        kw: dict[str, Any] = {"ifname": name, "kind": "bridge", "state": "up"}
        if mtu:
            kw["mtu"] = mtu
        if mac:
            kw["address"] = mac
        self._call(self.ipr.link, "add", **kw)
        return self._call(self.ipr.link_lookup, ifname=name)[0]

    def create_veth(self, name: str, peer: str, peer_netns_fd: int, *, master: int = 0, peer_mac: str | None = None,
                    mtu: int = 0, up: bool = True) -> int:
        p: dict[str, Any] = {"ifname": peer, "net_ns_fd": peer_netns_fd}
        if peer_mac:
            p["address"] = peer_mac
        if mtu:
            p["mtu"] = mtu
        kw: dict[str, Any] = {"ifname": name, "kind": "veth", "peer": p, "state": "up" if up else "down"}
        if master:
            kw["master"] = master
        if mtu:
            kw["mtu"] = mtu
        self._call(self.ipr.link, "add", **kw)
        return self._call(self.ipr.link_lookup, ifname=name)[0]

    def set_up(self, index: int) -> None:
        self._call(self.ipr.link, "set", index=index, state="up")

    def set_master(self, index: int, master: int) -> None:
        self._call(self.ipr.link, "set", index=index, master=master)

    def set_link(self, index: int, *, up: bool, master: int = 0, mac: str | None = None) -> None:
        kw: dict[str, Any] = {"index": index, "state": "up" if up else "down"}
        if master:
            kw["master"] = master
        if mac:
            kw["address"] = mac
        self._call(self.ipr.link, "set", **kw)

    def delete_link(self, index: int) -> None:
        self._call(self.ipr.link, "del", index=index)

    def add_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.IPv4Interface(cidr)
        self._call(self.ipr.addr, "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                   broadcast=str(iface.network.broadcast_address))

    def delete_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.IPv4Interface(cidr)
        self._call(self.ipr.addr, "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def addresses(self) -> list[tuple[int, ipaddress.IPv4Interface]]:
        out = []
        for m in self._call(self.ipr.get_addr, family=socket.AF_INET):
            a = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
            if a:
                out.append((m["index"], ipaddress.IPv4Interface(f"{a}/{m['prefixlen']}")))
        return out

    def add_default_route(self, gateway: str, oif: int) -> None:
        self._call(self.ipr.route, "add", gateway=gateway, oif=oif)

    def routes(self) -> list[Route]:
        out = []
        for m in self._call(self.ipr.get_routes, family=socket.AF_INET, table=254):
            if m["type"] != 1:
                continue
            dst = m.get_attr("RTA_DST") or "0.0.0.0"
            out.append(Route(ipaddress.IPv4Network(f"{dst}/{m['dst_len']}"), m.get_attr("RTA_OIF") or 0,
                             m.get_attr("RTA_GATEWAY")))
        return out
