"""One conformance suite for LinkOps: the raw netlink client and pyroute2, in scratch namespaces."""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable, Iterator

import pytest

from matou.network import netns
from matou.network.netlink import LinkOps, RawNetlink
from tests.network.conftest import Scratch


def _pyroute2() -> LinkOps:
    pytest.importorskip("pyroute2")
    from matou.network.pyroute2_links import PyRoute2Links

    return PyRoute2Links()


IMPLS: dict[str, Callable[[], LinkOps]] = {"raw": RawNetlink, "pyroute2": _pyroute2}


@pytest.fixture(params=sorted(IMPLS))
def ops(request: pytest.FixtureRequest, scratch: Scratch) -> Iterator[tuple[LinkOps, Scratch, str]]:
    """A LinkOps opened inside a scratch 'host' namespace."""
    host = scratch.new("host")
    with netns.entered(host):
        o = IMPLS[request.param]()
    try:
        yield o, scratch, host
    finally:
        o.close()


def test_bridge_create_lookup_delete(ops: tuple[LinkOps, Scratch, str]) -> None:
    o, _, _ = ops
    assert o.link("nobr0") is None
    idx = o.create_bridge("tbr0", mac="02:42:0a:01:02:03")
    link = o.link("tbr0")
    assert link is not None and link.index == idx and link.kind == "bridge" and link.up
    assert link.mac == "02:42:0a:01:02:03"
    with pytest.raises(OSError) as e:
        o.create_bridge("tbr0")
    assert e.value.errno == errno.EEXIST
    assert "tbr0" in [x.name for x in o.links()]
    o.delete_link(idx)
    assert o.link("tbr0") is None


def test_addresses(ops: tuple[LinkOps, Scratch, str]) -> None:
    o, _, _ = ops
    idx = o.create_bridge("tbr1")
    o.add_address(idx, "10.9.0.1/24")
    assert (idx, ipaddress.IPv4Interface("10.9.0.1/24")) in o.addresses()
    with pytest.raises(OSError) as e:
        o.add_address(idx, "10.9.0.1/24")
    assert e.value.errno == errno.EEXIST
    assert any(r.dst == ipaddress.IPv4Network("10.9.0.0/24") for r in o.routes())
    o.delete_address(idx, "10.9.0.1/24")
    assert all(i != idx for i, _ in o.addresses())


def test_veth_into_namespace(ops: tuple[LinkOps, Scratch, str]) -> None:
    o, scratch, _ = ops
    br = o.create_bridge("tbr2")
    o.add_address(br, "10.9.1.1/24")
    sandbox = scratch.new("sandbox")
    fd = os.open(sandbox, os.O_RDONLY)
    try:
        o.create_veth("tv0", "eth0", fd, master=br, peer_mac="02:42:0a:09:01:02")
    finally:
        os.close(fd)
    host_end = o.link("tv0")
    assert host_end is not None and host_end.master == br and host_end.up and host_end.kind == "veth"
    assert o.link("eth0") is None  # the peer lives in the sandbox
    with netns.entered(sandbox):
        inner = RawNetlink()
    try:
        eth = inner.link("eth0")
        assert eth is not None and eth.mac == "02:42:0a:09:01:02"
        inner.set_up(1)
        inner.set_up(eth.index)
        inner.add_address(eth.index, "10.9.1.2/24")
        inner.add_default_route("10.9.1.1", eth.index)
        routes = inner.routes()
        assert any(r.dst.prefixlen == 0 and r.gateway == "10.9.1.1" and r.oif == eth.index for r in routes)
    finally:
        inner.close()
    o.delete_link(host_end.index)  # takes the peer along
    assert o.link("tv0") is None


def test_set_master_and_up(ops: tuple[LinkOps, Scratch, str]) -> None:
    o, scratch, _ = ops
    br = o.create_bridge("tbr3")
    sandbox = scratch.new("sandbox3")
    fd = os.open(sandbox, os.O_RDONLY)
    try:
        idx = o.create_veth("tv3", "eth0", fd)
    finally:
        os.close(fd)
    link = o.link("tv3")
    assert link is not None and link.master == 0
    o.set_master(idx, br)
    o.set_up(idx)
    link = o.link("tv3")
    assert link is not None and link.master == br and link.up


def test_set_link_in_one_message(ops: tuple[LinkOps, Scratch, str]) -> None:
    """What taking a spare sandbox does: a host end created down and on no bridge, then up, enslaved and (for the
    inner end) given its MAC, each in one message."""
    o, scratch, _ = ops
    br = o.create_bridge("tbr4")
    sandbox = scratch.new("sandbox4")
    fd = os.open(sandbox, os.O_RDONLY)
    try:
        idx = o.create_veth("tv4", "eth0", fd, up=False)
    finally:
        os.close(fd)
    link = o.link("tv4")
    assert link is not None and link.master == 0 and not link.up
    o.set_link(idx, up=True, master=br, mac="02:42:0a:09:04:01")
    link = o.link("tv4")
    assert link is not None and link.master == br and link.up and link.mac == "02:42:0a:09:04:01"
    o.set_link(idx, up=False)
    link = o.link("tv4")
    assert link is not None and not link.up and link.master == br


def test_missing_link_errors(ops: tuple[LinkOps, Scratch, str]) -> None:
    o, _, _ = ops
    with pytest.raises(OSError) as e:
        o.delete_link(999999)
    assert e.value.errno == errno.ENODEV
