"""The kernel side, end to end inside scratch namespaces: bridge, sandbox, veth, DNAT of published ports."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from matou.errors import SystemError_
from matou.network import dns, netns
from matou.network.bridge import BridgeDriver, LinkSpec, mac_for
from matou.network.firewall import BridgeRules, Firewall, PortMap
from matou.network.netlink import RawNetlink
from matou.network.nftables import Nft
from matou.network.ports import Request, reserve
from tests.network.conftest import Scratch


@pytest.fixture
def host(scratch: Scratch) -> Iterator[str]:
    """A scratch namespace standing in for the host, loopback up; the test thread stays inside it."""
    path = scratch.new("host")
    with netns.entered(path):
        with RawNetlink() as nl:
            nl.set_up(1)
        yield path


def _spec(i: int, bridge: str = "tbr0", net: str = "10.88.0") -> LinkSpec:
    ip = f"{net}.{i + 1}"
    return LinkSpec(f"tveth{i}", "eth0", bridge, f"{ip}/24", mac_for(ip), f"{net}.1")


def _listen_in(path: str, addr: tuple[str, int]) -> socket.socket:
    with netns.entered(path):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen(8)
    s.settimeout(5)
    return s


def _connect(addr: tuple[str, int]) -> tuple[socket.socket, str]:
    c = socket.create_connection(addr, timeout=5)
    return c, c.getsockname()[0]


def test_sandbox_and_published_port(host: str, scratch: Scratch) -> None:
    drv = BridgeDriver()
    nft = Nft()
    fw = Firewall(nft, "mtest")
    try:
        drv.ensure_bridge("tbr0", "10.88.0.1/24")
        assert drv.ensure_bridge("tbr0", "10.88.0.1/24") == drv.bridge_index("tbr0")  # adopting is idempotent
        path = os.path.join(scratch.root, "sb1")
        socks = drv.create_sandbox(path, [_spec(1)], want_dns=True)
        scratch.paths.append(path)
        assert socks is not None
        assert socks[0].getsockname() == (dns.ADDRESS, 53) and socks[1].getsockname() == (dns.ADDRESS, 53)
        for s in socks:
            s.close()
        with netns.entered(path), RawNetlink() as inner:
            eth = inner.link("eth0")
            assert eth is not None and eth.up and eth.mac == mac_for("10.88.0.2")
            assert any(str(a) == "10.88.0.2/24" for _, a in inner.addresses())
            assert any(r.dst.prefixlen == 0 and r.gateway == "10.88.0.1" for r in inner.routes())
        assert drv.nl.link("tveth1").master == drv.bridge_index("tbr0")  # type: ignore[union-attr]

        srv = _listen_in(path, ("10.88.0.2", 80))
        try:
            c, _ = _connect(("10.88.0.2", 80))  # the host reaches the container
            conn, peer = srv.accept()
            assert peer[0] == "10.88.0.1"
            conn.close()
            c.close()

            fw.rebuild([BridgeRules("tbr0", "10.88.0.0/24")], [])
            held, port = reserve(Request("tcp", 80, "127.0.0.1", 0, 0), "t")
            try:
                fw.add_ports([PortMap("tcp", "127.0.0.1", port, "10.88.0.2", 80)])
                c, _ = _connect(("127.0.0.1", port))  # 127.0.0.1:port -> DNAT -> the container
                conn, peer = srv.accept()
                assert peer[0] == "10.88.0.1"  # loopback sources are masqueraded to the bridge address
                conn.close()
                c.close()
                # UDP the same way
                with netns.entered(path):
                    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                us.bind(("10.88.0.2", 53))
                us.settimeout(5)
                uheld, uport = reserve(Request("udp", 53, "0.0.0.0", 0, 0), "t")
                try:
                    fw.add_ports([PortMap("udp", "0.0.0.0", uport, "10.88.0.2", 53)])
                    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    c.sendto(b"ping", ("127.0.0.1", uport))
                    data, peer = us.recvfrom(100)
                    assert data == b"ping" and peer[0] == "10.88.0.1"
                    c.close()
                finally:
                    us.close()
                    uheld.close()
                fw.remove_ports([PortMap("tcp", "127.0.0.1", port, "10.88.0.2", 80),
                                 PortMap("udp", "0.0.0.0", uport, "10.88.0.2", 53)])
                assert "10.88.0.2" not in nft.run("list table ip mtest\n")
            finally:
                held.close()
        finally:
            srv.close()
        drv.remove_sandbox(path)
        assert not os.path.exists(path)
        deadline = time.monotonic() + 5
        while drv.nl.link("tveth1") is not None and time.monotonic() < deadline:
            time.sleep(0.02)  # the kernel destroys the namespace, and the veth with it, asynchronously
        assert drv.nl.link("tveth1") is None
    finally:
        fw.destroy()
        nft.close()
        drv.close()


def test_add_link_and_reattach(host: str, scratch: Scratch) -> None:
    drv = BridgeDriver()
    try:
        drv.ensure_bridge("tbr0", "10.88.0.1/24")
        drv.ensure_bridge("tbr1", "10.89.0.1/24")
        path = os.path.join(scratch.root, "sb2")
        drv.create_sandbox(path, [_spec(2)], want_dns=False)
        scratch.paths.append(path)
        spec = LinkSpec("tvethx", "eth1", "tbr1", "10.89.0.5/24", mac_for("10.89.0.5"))
        drv.add_link(path, spec)
        with netns.entered(path), RawNetlink() as inner:
            assert inner.link("eth1") is not None
        # a restart that recreated the bridge: the veth comes back onto it
        drv.delete_bridge("tbr1")
        assert drv.nl.link("tvethx").master == 0  # type: ignore[union-attr]
        drv.ensure_bridge("tbr1", "10.89.0.1/24")
        assert drv.reattach(spec)
        assert drv.nl.link("tvethx").master == drv.bridge_index("tbr1")  # type: ignore[union-attr]
        drv.delete_veth("tvethx")
        assert drv.nl.link("tvethx") is None
        assert not drv.reattach(spec)
        # a changed bip: the old address goes
        drv.ensure_bridge("tbr1", "10.90.0.1/24")
        assert [str(a) for i, a in drv.nl.addresses() if i == drv.bridge_index("tbr1")] == ["10.90.0.1/24"]
    finally:
        drv.close()


def test_failed_sandbox_leaves_nothing(host: str, scratch: Scratch) -> None:
    drv = BridgeDriver()
    try:
        drv.ensure_bridge("tbr0", "10.88.0.1/24")
        path = os.path.join(scratch.root, "sb3")
        with pytest.raises(SystemError_, match="bridge nosuchbr does not exist"):
            drv.create_sandbox(path, [_spec(3, bridge="nosuchbr")], want_dns=True)
        assert not os.path.exists(path)
    finally:
        drv.close()


def test_firewall_render_is_one_transaction(host: str) -> None:
    nft = Nft()
    fw = Firewall(nft, "mtest2")
    try:
        ports = [PortMap("tcp", "0.0.0.0", 8080, "10.1.0.2", 80), PortMap("udp", "127.0.0.1", 5353, "10.1.0.3", 53)]
        fw.rebuild([BridgeRules("b0", "10.1.0.0/24"), BridgeRules("b1", "10.2.0.0/24", internal=True)], ports)
        out = nft.run("list table ip mtest2\n")
        assert "8080 : 10.1.0.2 . 80" in out and "127.0.0.1 . 5353 : 10.1.0.3 . 53" in out
        assert 'ip saddr 10.1.0.0/24 oifname != "b0" masquerade' in out
        assert "10.2.0.0/24" not in out  # internal: no masquerade
        fw.rebuild([BridgeRules("b0", "10.1.0.0/24")], [])  # replaces everything
        out = nft.run("list table ip mtest2\n")
        assert "8080" not in out and '"b1"' not in out
        fw.remove_ports(ports)  # removing what is not there is harmless
        assert fw.exists()
        fw.destroy()
        assert not fw.exists()
        fw.destroy()
    finally:
        fw.destroy()
        nft.close()
