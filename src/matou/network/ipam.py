"""IP address management: pools, static and dynamic allocation, persisted in the metadata database.

An allocation is a row ``ip_allocations(network_id, address, owner)``; the primary key makes "the same address
twice" impossible even if two daemons' worth of callers raced, and every allocation is one ``BEGIN IMMEDIATE``
transaction, so concurrent ``run``s serialise on SQLite, not on luck. Allocations live as long as the container
(released on ``rm``), so a daemon restart changes nothing.

Dynamic allocation is serial, like libnetwork's: it continues after the last address handed out on that network and
wraps, so a just-released address (whose MAC may still sit in a neighbour's ARP cache) is not reused at once.

Lifecycle of a backend: ``allocate``/``release`` per endpoint, ``release_owner`` when a container goes,
``release_network`` when a network goes. Implementations run the conformance suite in tests/network/test_ipam.py.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from dataclasses import dataclass
from typing import Protocol

from matou.errors import Conflict, InvalidArgument, Unavailable
from matou.store.metadata import Database

IPv4 = ipaddress.IPv4Address
Net4 = ipaddress.IPv4Network


@dataclass(frozen=True)
class Pool:
    """A network's address space: its subnet, the gateway (never handed out) and an optional range for dynamic use."""

    subnet: Net4
    gateway: IPv4 | None = None
    ip_range: Net4 | None = None

    @classmethod
    def parse(cls, subnet: str, gateway: str | None = None, ip_range: str | None = None) -> Pool:
        try:
            net = ipaddress.IPv4Network(subnet, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid subnet {subnet!r}: not an IPv4 CIDR (IPv6 is not supported)") from None
        if net.prefixlen > 30:
            raise InvalidArgument(f"invalid subnet {subnet}: a /{net.prefixlen} leaves no room for containers")
        gw = None
        if gateway:
            try:
                gw = ipaddress.IPv4Address(gateway)
            except ValueError:
                raise InvalidArgument(f"invalid gateway address {gateway!r}") from None
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise InvalidArgument(f"gateway {gateway} is not a usable address of subnet {net}")
        rng = None
        if ip_range:
            try:
                rng = ipaddress.IPv4Network(ip_range, strict=False)
            except ValueError:
                raise InvalidArgument(f"invalid ip-range {ip_range!r}") from None
            if not rng.subnet_of(net):
                raise InvalidArgument(f"ip-range {rng} is not inside subnet {net}")
        return cls(net, gw, rng)

    def check_static(self, ip: IPv4) -> None:
        net = self.subnet
        if ip not in net:
            raise InvalidArgument(f"invalid address {ip}: it does not belong to the network's subnet {net}")
        if ip in (net.network_address, net.broadcast_address):
            raise InvalidArgument(f"invalid address {ip}: it is the network or broadcast address of {net}")
        if ip == self.gateway:
            raise Conflict(f"address {ip} is the network's gateway")

    def dynamic_bounds(self) -> tuple[int, int]:
        """First and last address (as integers) handed out dynamically."""
        space = self.ip_range or self.subnet
        lo, hi = int(space.network_address), int(space.broadcast_address)
        net = self.subnet
        lo = max(lo, int(net.network_address) + 1)
        hi = min(hi, int(net.broadcast_address) - 1)
        return lo, hi


class IPAM(Protocol):
    def allocate(self, network_id: str, pool: Pool, owner: str, address: str | None = None) -> IPv4: ...
    def release(self, network_id: str, address: str) -> None: ...
    def release_owner(self, owner: str, network_id: str | None = None) -> None: ...
    def release_network(self, network_id: str) -> None: ...
    def allocated(self, network_id: str) -> dict[str, str]: ...
    def owner(self, network_id: str, address: str) -> str | None: ...


class DatabaseIPAM:
    """The IPAM backend over the metadata database (table ``ip_allocations``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._last: dict[str, int] = {}  # network id -> last address handed out (serial allocation)

    def allocate(self, network_id: str, pool: Pool, owner: str, address: str | None = None) -> IPv4:
        if address:
            try:
                ip = ipaddress.IPv4Address(address)
            except ValueError:
                raise InvalidArgument(f"invalid IPv4 address: {address}") from None
            pool.check_static(ip)
            try:
                with self.db.tx() as tx:
                    tx.execute("INSERT INTO ip_allocations(network_id, address, owner) VALUES(?,?,?)",
                               (network_id, str(ip), owner))
            except sqlite3.IntegrityError:
                row = self.db.one("SELECT owner FROM ip_allocations WHERE network_id=? AND address=?",
                                  (network_id, str(ip)))
                if row is not None and row["owner"] == owner:
                    return ip
                raise Conflict(f"Address already in use: {ip} is taken on this network") from None
            return ip
        lo, hi = pool.dynamic_bounds()
        gw = int(pool.gateway) if pool.gateway else -1
        with self.db.tx() as tx:
            taken = {int(ipaddress.IPv4Address(r[0])) for r in
                     tx.execute("SELECT address FROM ip_allocations WHERE network_id=?", (network_id,))}
            start = self._last.get(network_id, lo - 1) + 1
            if not lo <= start <= hi:
                start = lo
            n = hi - lo + 1
            for i in range(n):
                cand = lo + (start - lo + i) % n
                if cand != gw and cand not in taken:
                    ip = ipaddress.IPv4Address(cand)
                    tx.execute("INSERT INTO ip_allocations(network_id, address, owner) VALUES(?,?,?)",
                               (network_id, str(ip), owner))
                    self._last[network_id] = cand
                    return ip
        raise Unavailable(f"no available IPv4 addresses on this network's address pools ({pool.ip_range or pool.subnet})")

    def release(self, network_id: str, address: str) -> None:
        self.db.execute("DELETE FROM ip_allocations WHERE network_id=? AND address=?", (network_id, address))

    def release_owner(self, owner: str, network_id: str | None = None) -> None:
        if network_id is None:
            self.db.execute("DELETE FROM ip_allocations WHERE owner=?", (owner,))
        else:
            self.db.execute("DELETE FROM ip_allocations WHERE owner=? AND network_id=?", (owner, network_id))

    def release_network(self, network_id: str) -> None:
        self.db.execute("DELETE FROM ip_allocations WHERE network_id=?", (network_id,))

    def owner(self, network_id: str, address: str) -> str | None:
        return self.db.scalar("SELECT owner FROM ip_allocations WHERE network_id=? AND address=?",
                              (network_id, address))

    def allocated(self, network_id: str) -> dict[str, str]:
        return {r["address"]: r["owner"] for r in
                self.db.all("SELECT address, owner FROM ip_allocations WHERE network_id=?", (network_id,))}


def pick_subnet(pools: list[dict[str, object]], avoid: list[Net4]) -> Net4:
    """The first subnet of the daemon's default address pools that overlaps nothing in ``avoid``
    (other networks, host routes and addresses), as Docker picks one for ``network create`` without --subnet."""
    for p in pools:
        try:
            base = ipaddress.IPv4Network(str(p.get("base")), strict=False)
            size = int(str(p.get("size") or 24))
        except ValueError:
            continue
        if size < base.prefixlen:
            continue
        for sub in base.subnets(new_prefix=size):
            if not any(sub.overlaps(a) for a in avoid):
                return sub
    raise Unavailable("could not find an available, non-overlapping IPv4 address pool among the defaults to "
                      "assign to the network")
