"""The daemon's nftables table: masquerading, isolation between bridge networks, published ports.

One table per daemon (``ip <name>``), rebuilt whole and atomically whenever the set of networks changes (rare), and
changed by map elements only when a container publishes ports (one small transaction, ~0.2 ms in-process), so
there is no per-container rule to leak. Deleting the table removes everything.

Published ports are DNAT maps keyed by (host address, port) or by port alone for 0.0.0.0, consulted for packets
to any local address, arriving (prerouting) or sent by the host itself (output; 127.0.0.1 works because bridges get
``route_localnet`` and loopback sources are masqueraded to the bridge's address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from matou.network.nftables import Nft

PROTOS = ("tcp", "udp")


@dataclass(frozen=True)
class BridgeRules:
    bridge: str
    subnet: str
    internal: bool = False
    masquerade: bool = True


@dataclass(frozen=True)
class PortMap:
    proto: str       # tcp | udp
    host_ip: str     # "0.0.0.0" for every local address
    host_port: int
    ip: str          # the container's address
    port: int

    @property
    def any_address(self) -> bool:
        return self.host_ip in ("", "0.0.0.0")

    def key(self) -> str:
        return str(self.host_port) if self.any_address else f"{self.host_ip} . {self.host_port}"

    def element(self) -> str:
        return f"{self.key()} : {self.ip} . {self.port}"

    def map_name(self) -> str:
        return f"pub_{self.proto}" + ("_any" if self.any_address else "")


def _q(name: str) -> str:
    return '"' + name.replace('"', "") + '"'


class Firewall:
    def __init__(self, nft: Nft, table: str) -> None:
        self.nft = nft
        self.table = table

    def render(self, bridges: Iterable[BridgeRules], ports: Iterable[PortMap]) -> str:
        bridges = list(bridges)
        ports = list(ports)
        t = self.table
        lines = [f"table ip {t} {{"]
        for proto in PROTOS:
            for any_ in (False, True):
                name = f"pub_{proto}" + ("_any" if any_ else "")
                key = "inet_service" if any_ else "ipv4_addr . inet_service"
                elems = [p.element() for p in ports if p.proto == proto and p.any_address == any_]
                lines.append(f"  map {name} {{ type {key} : ipv4_addr . inet_service;"
                             + (f" elements = {{ {', '.join(elems)} }};" if elems else "") + " }")
        names = [_q(b.bridge) for b in bridges]
        lines.append("  set bridges { type ifname;" + (f" elements = {{ {', '.join(names)} }};" if names else "") + " }")
        lines.append("  chain prerouting { type nat hook prerouting priority dstnat; policy accept; "
                     "fib daddr type local jump publish; }")
        lines.append("  chain output { type nat hook output priority -100; policy accept; "
                     "fib daddr type local jump publish; }")
        lines.append("  chain publish {")
        for proto in PROTOS:
            lines.append(f"    dnat ip to ip daddr . {proto} dport map @pub_{proto}")
            lines.append(f"    dnat ip to {proto} dport map @pub_{proto}_any")
        lines.append("  }")
        lines.append("  chain postrouting { type nat hook postrouting priority srcnat; policy accept;")
        for b in bridges:
            if b.masquerade and not b.internal:
                net = ipaddress.IPv4Network(b.subnet, strict=False)
                lines.append(f"    ip saddr {net} oifname != {_q(b.bridge)} masquerade")
        lines.append("    ip saddr 127.0.0.0/8 oifname @bridges masquerade")
        lines.append("  }")
        lines.append("  chain forward { type filter hook forward priority filter; policy accept;")
        for b in bridges:
            if b.internal:
                lines.append(f"    iifname {_q(b.bridge)} oifname != {_q(b.bridge)} drop")
                lines.append(f"    oifname {_q(b.bridge)} iifname != {_q(b.bridge)} drop")
            else:
                lines.append(f"    iifname {_q(b.bridge)} oifname @bridges oifname != {_q(b.bridge)} drop")
        lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def rebuild(self, bridges: Iterable[BridgeRules], ports: Iterable[PortMap]) -> None:
        """Replace the table with one built from scratch, in one transaction."""
        self.nft.run(f"table ip {self.table} {{ }}\ndelete table ip {self.table}\n" + self.render(bridges, ports))

    def add_ports(self, ports: Iterable[PortMap]) -> None:
        cmds = [f"add element ip {self.table} {p.map_name()} {{ {p.element()} }}" for p in ports]
        if cmds:
            self.nft.run("\n".join(cmds) + "\n", fast=True)

    def remove_ports(self, ports: Iterable[PortMap]) -> None:
        cmds = [f"delete element ip {self.table} {p.map_name()} {{ {p.key()} }}" for p in ports]
        if not cmds:
            return
        try:
            self.nft.run("\n".join(cmds) + "\n", fast=True)
        except Exception:  # one element already gone fails the batch: remove the others one by one
            for c in cmds:
                self.nft.run(c + "\n", check=False, fast=True)

    def destroy(self) -> None:
        self.nft.run(f"table ip {self.table} {{ }}\ndelete table ip {self.table}\n", check=False)

    def forward_dropped_elsewhere(self) -> bool:
        """True if iptables' FORWARD chain drops by default (dockerd sets that): a drop in any base chain is final,
        so containers' outbound and published-port traffic would die there whatever this table says."""
        out = self.nft.run("list chain ip filter FORWARD\n", check=False)
        return "policy drop" in out

    def exists(self) -> bool:
        return f"table ip {self.table}" in self.nft.run("list tables\n", check=False)
