#!/usr/bin/env python3
"""Per-container network setup: matou's raw netlink vs pyroute2 vs `ip` subprocesses, interleaved, in one run.

What one container needs on a bridge network (what the daemon does on `run`): a network namespace pinned by a bind
mount, a veth pair (host end up on the bridge, the other end created inside the namespace with its MAC), then inside:
loopback up, eth0 up, the address, the default route. The namespace is created the same way for all three (it is
measured on its own); the rest is done with each implementation:

- raw:      matou.network.netlink.RawNetlink (what matoud uses): 1 message on the host socket, 4 inside;
- pyroute2: IPRoute on the host (opened once) + an IPRoute opened inside the namespace per container;
- ip:       `ip link add ... netns PATH` + `nsenter --net=PATH ip -batch -` (two processes).

Everything happens inside a scratch network namespace standing in for the host, so the host's links are never
touched; all namespaces are removed at the end. Also reports pyroute2's import time (what the daemon would pay at
start). Goal (issue 4): network setup <= 15 ms per container.

    .venv/bin/python bench/netlink.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from matou.network import netns  # noqa: E402
from matou.network.bridge import mac_for  # noqa: E402
from matou.network.netlink import RawNetlink  # noqa: E402

BRIDGE = "bnbr0"


def ms(t: float) -> float:
    return (time.perf_counter() - t) * 1000


def raw(host: RawNetlink, br: int, path: str, i: int) -> None:
    ip = f"10.77.{i // 250}.{i % 250 + 2}"
    ns_nl = netns.create(path, RawNetlink) if not os.path.exists(path) else None
    assert ns_nl is not None
    try:
        ns_nl.set_up(1)
        fd = os.open(path, os.O_RDONLY)
        try:
            host.create_veth(f"bv{i}", "eth0", fd, master=br, peer_mac=mac_for(ip))
        finally:
            os.close(fd)
        eth = ns_nl.link("eth0")
        assert eth is not None
        ns_nl.set_up(eth.index)
        ns_nl.add_address(eth.index, f"{ip}/16")
        ns_nl.add_default_route("10.77.0.1", eth.index)
    finally:
        ns_nl.close()


def pyroute2(ipr: object, br: int, path: str, i: int) -> None:
    from pyroute2 import IPRoute

    ip = f"10.77.{i // 250}.{i % 250 + 2}"
    netns.create(path, lambda: None)
    fd = os.open(path, os.O_RDONLY)
    try:
        ipr.link("add", ifname=f"bv{i}", kind="veth", master=br, state="up",  # type: ignore[attr-defined]
                 peer={"ifname": "eth0", "net_ns_fd": fd, "address": mac_for(ip)})
    finally:
        os.close(fd)
    with netns.entered(path):
        inner = IPRoute()
    try:
        idx = inner.link_lookup(ifname="eth0")[0]
        inner.link("set", index=1, state="up")
        inner.link("set", index=idx, state="up")
        inner.addr("add", index=idx, address=ip, prefixlen=16)
        inner.route("add", gateway="10.77.0.1", oif=idx)
    finally:
        inner.close()


def iproute(path: str, i: int) -> None:
    ip = f"10.77.{i // 250}.{i % 250 + 2}"
    netns.create(path, lambda: None)
    subprocess.run(["ip", "link", "add", f"bv{i}", "master", BRIDGE, "up", "type", "veth", "peer", "name", "eth0",
                    "netns", path, "address", mac_for(ip)], check=True)
    subprocess.run(["nsenter", f"--net={path}", "ip", "-batch", "-"], check=True,
                   input=f"link set lo up\nlink set eth0 up\naddr add {ip}/16 dev eth0\n"
                         "route add default via 10.77.0.1\n".encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="nlb-", dir="/tmp")
    paths: list[str] = []
    try:
        t = time.perf_counter()
        import pyroute2 as _p2  # noqa: F401

        imp = ms(t)
        host_ns = os.path.join(work, "host")
        netns.create(host_ns, lambda: None)
        paths.append(host_ns)
        with netns.entered(host_ns):
            from pyroute2 import IPRoute

            nl = RawNetlink()
            nl.set_up(1)
            br = nl.create_bridge(BRIDGE)
            nl.add_address(br, "10.77.0.1/16")
            ipr = IPRoute()
            samples: dict[str, list[float]] = {"netns (unshare + bind mount)": [], "raw netlink (matou)": [],
                                               "pyroute2": [], "ip subprocesses": []}
            n = 0
            for r in range(a.rounds):
                p = os.path.join(work, f"bare{r}")
                t = time.perf_counter()
                netns.create(p, lambda: None)
                samples["netns (unshare + bind mount)"].append(ms(t))
                netns.remove(p)
                for name, fn in (("raw netlink (matou)", lambda p, i: raw(nl, br, p, i)),
                                 ("pyroute2", lambda p, i: pyroute2(ipr, br, p, i)),
                                 ("ip subprocesses", iproute)):
                    n += 1
                    p = os.path.join(work, f"ns{n}")
                    paths.append(p)
                    t = time.perf_counter()
                    fn(p, n)
                    samples[name].append(ms(t))
            ipr.close()
            nl.close()
        print(f"per-container network setup, {a.rounds} interleaved rounds, medians (p90); the last three include "
              "the namespace:")
        for k, v in samples.items():
            v.sort()
            print(f"  {k:<30} {statistics.median(v):7.2f} ms  ({v[int(len(v) * 0.9)]:.2f})")
        print(f"  pyroute2 import                {imp:7.1f} ms (once per daemon start)")
        print("goal: <= 15 ms per container on the run path")
    finally:
        for p in reversed(paths):
            netns.remove(p)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
