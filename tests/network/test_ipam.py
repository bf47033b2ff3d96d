"""IPAM conformance suite (every IPAM backend runs it): pools, static and dynamic allocation, persistence."""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Iterator

import pytest

from matou.errors import Conflict, InvalidArgument, Unavailable
from matou.network.ipam import IPAM, DatabaseIPAM, Pool, pick_subnet
from matou.store.metadata import Database


@pytest.fixture
def dbpath(tmpdir_root: str) -> str:
    return os.path.join(tmpdir_root, "metadata.db")


BACKENDS: dict[str, Callable[[str], IPAM]] = {"database": lambda p: DatabaseIPAM(Database(p))}


@pytest.fixture(params=sorted(BACKENDS))
def make(request: pytest.FixtureRequest, dbpath: str) -> Iterator[Callable[[], IPAM]]:
    yield lambda: BACKENDS[request.param](dbpath)


POOL = Pool.parse("10.50.0.0/29", "10.50.0.1")  # hosts .1-.6; .1 is the gateway


def test_dynamic_skips_gateway_network_and_broadcast(make: Callable[[], IPAM]) -> None:
    ipam = make()
    got = [str(ipam.allocate("n1", POOL, f"c{i}")) for i in range(5)]
    assert got == ["10.50.0.2", "10.50.0.3", "10.50.0.4", "10.50.0.5", "10.50.0.6"]
    with pytest.raises(Unavailable):
        ipam.allocate("n1", POOL, "c9")


def test_networks_are_independent(make: Callable[[], IPAM]) -> None:
    ipam = make()
    assert ipam.allocate("n1", POOL, "a") == ipam.allocate("n2", POOL, "b")


def test_ip_range(make: Callable[[], IPAM]) -> None:
    ipam = make()
    pool = Pool.parse("10.51.0.0/24", "10.51.0.1", "10.51.0.128/30")
    got = {str(ipam.allocate("n", pool, f"c{i}")) for i in range(4)}
    assert got == {"10.51.0.128", "10.51.0.129", "10.51.0.130", "10.51.0.131"}
    with pytest.raises(Unavailable):
        ipam.allocate("n", pool, "c5")
    # a static address outside the range but inside the subnet is fine
    assert str(ipam.allocate("n", pool, "s", "10.51.0.20")) == "10.51.0.20"


def test_static(make: Callable[[], IPAM]) -> None:
    ipam = make()
    assert str(ipam.allocate("n", POOL, "a", "10.50.0.5")) == "10.50.0.5"
    with pytest.raises(Conflict):
        ipam.allocate("n", POOL, "b", "10.50.0.5")
    assert str(ipam.allocate("n", POOL, "a", "10.50.0.5")) == "10.50.0.5"  # idempotent for its owner
    for bad in ("10.60.0.2", "10.50.0.0", "10.50.0.7", "nonsense"):
        with pytest.raises(InvalidArgument):
            ipam.allocate("n", POOL, "b", bad)
    with pytest.raises(Conflict):
        ipam.allocate("n", POOL, "b", "10.50.0.1")  # the gateway
    assert "10.50.0.5" not in [str(ipam.allocate("n", POOL, f"d{i}")) for i in range(4)]


def test_release_and_serial_reuse(make: Callable[[], IPAM]) -> None:
    ipam = make()
    a = ipam.allocate("n", POOL, "a")
    b = ipam.allocate("n", POOL, "b")
    ipam.release("n", str(a))
    c = ipam.allocate("n", POOL, "c")
    assert c not in (a, b)  # serial: the just-released address is not handed out at once
    ipam.release_owner("b")
    ipam.release_owner("c", "n")
    assert set(ipam.allocated("n")) == set()
    assert ipam.owner("n", str(a)) is None


def test_release_network(make: Callable[[], IPAM]) -> None:
    ipam = make()
    ipam.allocate("n", POOL, "a")
    ipam.allocate("m", POOL, "a")
    ipam.release_network("n")
    assert ipam.allocated("n") == {} and len(ipam.allocated("m")) == 1


def test_persisted(make: Callable[[], IPAM]) -> None:
    a = make()
    ip = a.allocate("n", POOL, "x")
    b = make()  # a new instance over the same store: what a restarted daemon sees
    assert b.allocated("n") == {str(ip): "x"}
    assert b.allocate("n", POOL, "y") != ip


def test_concurrent_allocations_are_distinct(make: Callable[[], IPAM]) -> None:
    ipam = make()
    pool = Pool.parse("10.52.0.0/24", "10.52.0.1")
    out: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(10):
            ip = str(ipam.allocate("n", pool, f"c{i}-{j}"))
            with lock:
                out.append(ip)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 200 and len(set(out)) == 200


def test_pool_validation() -> None:
    with pytest.raises(InvalidArgument):
        Pool.parse("10.0.0.0/31")
    with pytest.raises(InvalidArgument):
        Pool.parse("fd00::/64")
    with pytest.raises(InvalidArgument):
        Pool.parse("10.0.0.0/24", "10.0.1.1")
    with pytest.raises(InvalidArgument):
        Pool.parse("10.0.0.0/24", None, "10.0.1.0/25")
    assert Pool.parse("10.0.0.7/24").subnet == ipaddress.IPv4Network("10.0.0.0/24")


def test_pick_subnet_avoids_overlaps() -> None:
    pools: list[dict[str, object]] = [{"base": "10.70.0.0/16", "size": 24}]
    taken = [ipaddress.IPv4Network("10.70.0.0/24"), ipaddress.IPv4Network("10.70.1.0/25")]
    assert str(pick_subnet(pools, taken)) == "10.70.2.0/24"
    with pytest.raises(Unavailable):
        pick_subnet([{"base": "10.71.0.0/24", "size": 24}], [ipaddress.IPv4Network("10.0.0.0/8")])
