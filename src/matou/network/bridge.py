"""The kernel side of bridge networks: bridges, sandboxes (network namespaces) and the veth pairs between them.

Blocking and not thread-safe: one instance per thread (each has its own netlink socket). Per container on the run
path, when a spare sandbox was made ahead (premake_sandbox, the default bridge's usual case): three small
messages (host end up and on its bridge; eth0 up with its MAC; address) and the default route. Otherwise: one
``unshare`` and bind mount, one netlink message for the veth pair (host end created up and on its bridge, the
other end created inside the container's namespace), and four small messages inside (loopback up, eth0 up,
address, default route). Nothing is deleted on the run path: dropping the namespace takes the container's veth
along.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

from matou.errors import Conflict, SystemError_
from matou.network import dns, netns
from matou.network.netlink import LinkOps, RawNetlink

log = logging.getLogger("matoud.network")


@dataclass(frozen=True)
class LinkSpec:
    """One interface of a sandbox: ``ifname`` inside, ``veth`` on the host enslaved to ``bridge``."""

    veth: str
    ifname: str
    bridge: str
    cidr: str
    mac: str
    gateway: str | None = None  # default route through it (the primary network only)
    mtu: int = 0


@dataclass
class SpareSandbox:
    """A sandbox made before any container asked for it (see BridgeDriver.premake_sandbox): pinned at ``path``,
    loopback up, ``ifname`` inside (down, no address) and its peer ``veth`` on the host (down, on no bridge, so
    that it is nobody's port until it is taken). ``nl`` is a netlink socket opened inside."""

    path: str
    veth: str
    veth_index: int
    ifname: str
    ifindex: int
    mtu: int
    nl: LinkOps


def veth_name() -> str:
    return "veth" + secrets.token_hex(4)[:7]


def mac_for(ip: str) -> str:
    """Docker's classic MAC scheme: 02:42 and the IPv4 address, unique on its network and stable across restarts."""
    b = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        log.warning("sysctl %s=%s: %s", path, value, e)


class BridgeDriver:
    def __init__(self, links: Callable[[], LinkOps] = RawNetlink, made: dict[str, tuple[str, int]] | None = None,
                 ) -> None:
        """``made``: bridge -> (gateway/prefix, mtu) of the bridges ensure_bridge() made, to make one again if it
        goes (see _on_bridge); drivers of one daemon share it."""
        self._links = links
        self._nl: LinkOps | None = None
        self._index: dict[str, int] = {}
        self._made = made if made is not None else {}

    @property
    def nl(self) -> LinkOps:
        if self._nl is None:
            self._nl = self._links()
        return self._nl

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None

    # ------------------------------------------------------------------ bridges
    def ensure_bridge(self, name: str, gateway_cidr: str, mtu: int = 0) -> int:
        """Create the bridge (or adopt the one a previous daemon left), with the gateway address, up."""
        link = self.nl.link(name)
        if link is not None and link.kind and link.kind != "bridge":
            raise Conflict(f"cannot use {name} as a bridge: a {link.kind} link of that name exists")
        gw = ipaddress.IPv4Interface(gateway_cidr)
        if link is None:
            try:
                index = self.nl.create_bridge(name, mtu=mtu, mac=mac_for(str(gw.ip)))
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise SystemError_(f"creating bridge {name}: {e.strerror}") from None
                index = self.nl.link(name).index  # type: ignore[union-attr]
        else:
            index = link.index
            if not link.up:
                self.nl.set_up(index)
        have = [a for i, a in self.nl.addresses() if i == index]
        for other in have:
            if other != gw:  # an address from an old configuration (bip changed)
                log.info("bridge %s: replacing address %s with %s", name, other, gw)
                with contextlib.suppress(OSError):
                    self.nl.delete_address(index, str(other))
        if gw not in have:
            try:
                self.nl.add_address(index, str(gw))
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise SystemError_(f"adding {gw} to bridge {name}: {e.strerror}") from None
        self._index[name] = index
        self._made[name] = (gateway_cidr, mtu)
        _sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")
        return index

    def delete_bridge(self, name: str) -> None:
        self._index.pop(name, None)
        self._made.pop(name, None)
        link = self.nl.link(name)
        if link is not None and link.kind == "bridge":
            with contextlib.suppress(OSError):
                self.nl.delete_link(link.index)

    def bridge_index(self, name: str) -> int:
        idx = self._index.get(name)
        if idx is None:
            link = self.nl.link(name)
            if link is None:
                raise SystemError_(f"bridge {name} does not exist")
            idx = self._index[name] = link.index
        return idx

    def host_networks(self) -> list[ipaddress.IPv4Network]:
        """Subnets in use on the host (addresses and routes), which a new network must not overlap."""
        out = [a.network for _i, a in self.nl.addresses() if not a.ip.is_loopback]
        out += [r.dst for r in self.nl.routes() if r.dst.prefixlen > 0 and not r.dst.is_loopback]
        return out

    @staticmethod
    def enable_forwarding() -> None:
        _sysctl("/proc/sys/net/ipv4/ip_forward", "1")

    # ------------------------------------------------------------------ sandboxes
    def create_sandbox(self, path: str, links: list[LinkSpec], want_dns: bool,
                       pid: int | None = None) -> tuple[socket.socket, socket.socket] | None:
        """A network namespace pinned at ``path`` with its interfaces configured; the DNS sockets if asked.
        The namespace is new, or with ``pid`` the one that process made for itself (see netns.adopt)."""
        def inside() -> tuple[RawNetlink, tuple[socket.socket, socket.socket] | None]:
            return RawNetlink(), (dns.open_sockets() if want_dns else None)

        ns_nl, socks = netns.create(path, inside) if pid is None else netns.adopt(path, pid, inside)
        try:
            ns_nl.set_up(1)  # lo is always index 1 in a new namespace
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                for spec in links:
                    self._veth(spec, fd)
            finally:
                os.close(fd)
            for spec in links:
                self._configure(ns_nl, spec)
            if socks is not None:
                dns.bind_sockets(*socks)
            return socks
        except BaseException:
            if socks is not None:
                for s in socks:
                    s.close()
            netns.remove(path)  # the veth pairs go with the namespace
            raise
        finally:
            ns_nl.close()

    def premake_sandbox(self, path: str, ifname: str, mtu: int) -> SpareSandbox:
        """The part of a sandbox that does not depend on its container: the namespace, its pin, loopback and the
        veth pair (the kernel's dearest step, ~1.2 ms here). Taking it (take_sandbox) is three small messages."""
        ns_nl = netns.create(path, RawNetlink)
        try:
            ns_nl.set_up(1)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                veth = veth_name()
                index = self.nl.create_veth(veth, ifname, fd, mtu=mtu, up=False)
            finally:
                os.close(fd)
            link = ns_nl.link(ifname)
            if link is None:
                raise SystemError_(f"{ifname} did not appear in the spare namespace")
            return SpareSandbox(path, veth, index, ifname, link.index, mtu, ns_nl)
        except BaseException:
            ns_nl.close()
            netns.remove(path)  # the veth pair goes with the namespace
            raise

    def take_sandbox(self, spare: SpareSandbox, spec: LinkSpec) -> None:
        """Give a spare sandbox its container's interface: ``spec.veth`` must be ``spare.veth``. On failure the
        spare is removed (the caller has nothing to undo)."""
        try:
            self._on_bridge(spec.bridge, lambda master: self.nl.set_link(spare.veth_index, up=True, master=master))
            spare.nl.set_link(spare.ifindex, up=True, mac=spec.mac)
            spare.nl.add_address(spare.ifindex, spec.cidr)
            if spec.gateway:
                spare.nl.add_default_route(spec.gateway, spare.ifindex)
        except BaseException:
            netns.remove(spare.path)
            raise
        finally:
            spare.nl.close()

    @staticmethod
    def discard_spare(spare: SpareSandbox) -> None:
        spare.nl.close()
        netns.remove(spare.path)

    def _on_bridge(self, bridge: str, fn: Callable[[int], object]) -> None:
        """``fn(the bridge's index)``; once more with a fresh index if the bridge was recreated (ENODEV, or EINVAL
        when its old index went to another kind of link), and made again first if it is gone: another process
        deleted it (a second daemon on the same bridge name, stopping), and nothing else would bring it back."""
        try:
            fn(self.bridge_index(bridge))
            return
        except SystemError_:  # not there (bridge_index)
            if bridge not in self._made:
                raise
        except OSError as e:
            if e.errno not in (errno.ENODEV, errno.EINVAL):
                raise
        self._index.pop(bridge, None)
        link = self.nl.link(bridge)
        if (link is None or link.kind != "bridge") and bridge in self._made:
            log.warning("bridge %s is gone: making it again", bridge)
            self.ensure_bridge(bridge, *self._made[bridge])
        fn(self.bridge_index(bridge))

    def _veth(self, spec: LinkSpec, ns_fd: int) -> None:
        try:
            self._on_bridge(spec.bridge, lambda master: self.nl.create_veth(
                spec.veth, spec.ifname, ns_fd, master=master, peer_mac=spec.mac, mtu=spec.mtu))
        except OSError as e:
            raise SystemError_(f"creating veth pair {spec.veth}/{spec.ifname}: {e.strerror}") from None

    @staticmethod
    def _configure(ns_nl: LinkOps, spec: LinkSpec) -> None:
        link = ns_nl.link(spec.ifname)
        if link is None:
            raise SystemError_(f"{spec.ifname} did not appear in the container's namespace")
        ns_nl.set_up(link.index)
        ns_nl.add_address(link.index, spec.cidr)
        if spec.gateway:
            ns_nl.add_default_route(spec.gateway, link.index)

    def add_link(self, path: str, spec: LinkSpec) -> None:
        """Connect a running sandbox to one more network."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._veth(spec, fd)
        finally:
            os.close(fd)
        try:
            with netns.entered(path):
                ns_nl = RawNetlink()
            try:
                self._configure(ns_nl, spec)
            finally:
                ns_nl.close()
        except BaseException:
            self.delete_veth(spec.veth)
            raise

    def delete_veth(self, name: str) -> None:
        """Delete a host-side veth (and so its peer). Slow in the kernel (20-30 ms): never on the run path."""
        with contextlib.suppress(OSError):
            link = self.nl.link(name)
            if link is not None:
                self.nl.delete_link(link.index)

    def reattach(self, spec: LinkSpec) -> bool:
        """After a restart that recreated the bridge: put the surviving host end back on it. False if it is gone."""
        link = self.nl.link(spec.veth)
        if link is None:
            return False
        master = self.bridge_index(spec.bridge)
        if link.master != master:
            self.nl.set_master(link.index, master)
        if not link.up:
            self.nl.set_up(link.index)
        return True

    def open_dns(self, path: str) -> tuple[socket.socket, socket.socket]:
        """DNS sockets for an existing sandbox (after a daemon restart)."""
        with netns.entered(path):
            socks = dns.open_sockets()
        try:
            dns.bind_sockets(*socks)
        except BaseException:
            for s in socks:
                s.close()
            raise
        return socks

    @staticmethod
    def remove_sandbox(path: str) -> None:
        netns.remove(path)
