"""Networking through the real daemon and CLI: bridge, user networks with DNS, published ports, modes, the CLI."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Daemon, _new_daemon
from tests.network.conftest import bridge_ports, daemon_config, nft_table

HTTPD = ["httpd", "-f", "-p", "80", "-h", "/etc"]  # serves /etc/hostname: the container's short id


def http_get(host: str, port: int, path: str = "/hostname", timeout: float = 10) -> str:
    """GET with retries until the server answers (containers start their server asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = http.client.HTTPConnection(host, port, timeout=2)
            c.request("GET", path)
            body = c.getresponse().read().decode()
            c.close()
            return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def inspect(d: Daemon, ref: str) -> dict:
    return json.loads(d.out("inspect", ref))[0]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(cond: Callable[[], object], timeout: float = 10) -> None:
    """Removal finishes in the background (the record goes first): poll until ``cond()`` holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {getattr(cond, '__name__', cond)}")
        time.sleep(0.05)


def db_rows(d: Daemon, sql: str, args: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(f"file:{os.path.join(d.data_root, 'metadata.db')}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


@pytest.fixture
def names(netd: Daemon) -> Iterator[list[str]]:
    """Containers and networks a test creates, removed afterwards whatever happens."""
    created: list[str] = []
    yield created
    for n in created:
        netd.cli("rm", "-f", n, check=False)
    for n in created:
        netd.cli("network", "rm", n, check=False)


def test_default_bridge(netd: Daemon, names: list[str]) -> None:
    d = netd
    cfg = daemon_config(d)
    names += ["b1", "b2"]
    for n in ("b1", "b2"):
        d.cli("run", "-d", "--name", n, "busybox", *HTTPD)
    i1, i2 = inspect(d, "b1"), inspect(d, "b2")
    ips = [i["NetworkSettings"]["IPAddress"] for i in (i1, i2)]
    gw = cfg["bip"].split("/")[0]
    assert ips[0] != ips[1]
    for i, ip in zip((i1, i2), ips, strict=True):
        ns = i["NetworkSettings"]
        ep = ns["Networks"]["bridge"]
        assert ep["IPAddress"] == ip and ep["Gateway"] == gw == ns["Gateway"]
        assert ep["IPPrefixLen"] == 24 and ep["MacAddress"] == ns["MacAddress"] != ""
        assert ep["NetworkID"] and ep["EndpointID"] and ns["SandboxKey"] and ns["SandboxID"]
        assert ip.rsplit(".", 1)[0] == gw.rsplit(".", 1)[0]
        # the host reaches the TCP server in each container
        assert http_get(ip, 80).strip() == i["Config"]["Hostname"]
    # each container reaches the host through the gateway
    host_srv = socket.socket()
    host_srv.bind((gw, 0))
    host_srv.listen(4)
    port = host_srv.getsockname()[1]
    got: list[str] = []

    def accept() -> None:
        for _ in range(2):
            c, peer = host_srv.accept()
            got.append(peer[0])
            c.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        for n in ("b1", "b2"):
            r = d.cli("exec", n, "sh", "-c", f"ping -c1 -W2 {gw} >/dev/null && echo hi | nc -w 2 {gw} {port}; echo $?")
            assert r.stdout.decode().strip().endswith("0")
        t.join(10)
    finally:
        host_srv.close()
    assert sorted(got) == sorted(ips)
    hosts = d.out("exec", "b1", "cat", "/etc/hosts")
    assert f"{ips[0]}\t{i1['Config']['Hostname']}" in hosts
    out = d.out("run", "--rm", "--add-host", "gw:host-gateway", "busybox", "sh", "-c",
                "grep -w gw /etc/hosts; ip route; cat /sys/class/net/eth0/address")
    assert f"{gw}\tgw" in out and f"default via {gw} dev eth0" in out


def test_user_network_dns_and_isolation(netd: Daemon, names: list[str]) -> None:
    d = netd
    names += ["web", "nA", "nB"]
    d.cli("network", "create", "nA")
    d.cli("network", "create", "nB")
    d.cli("run", "-d", "--name", "web", "--network", "nA", "--network-alias", "www", "busybox",
          "httpd", "-f", "-p", "8000", "-h", "/etc")
    web = inspect(d, "web")
    short = web["Config"]["Hostname"]
    ep = web["NetworkSettings"]["Networks"]["nA"]
    assert ep["Aliases"] == ["www"] and "web" in ep["DNSNames"] and "www" in ep["DNSNames"]
    wget = "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://{0}:8000/hostname && exit 0; sleep 0.2; done; exit 1"
    for name in ("web", "www", "web.nA", short):
        out = d.out("run", "--rm", "--network", "nA", "busybox", "sh", "-c", wget.format(name))
        assert out.strip() == short
    out = d.out("run", "--rm", "--network", "nA", "busybox", "cat", "/etc/resolv.conf")
    assert "nameserver 127.0.0.11" in out
    # names that are not containers go to the host's resolvers: the answer is whatever the host would say
    r = d.cli("run", "--rm", "--network", "nA", "busybox", "nslookup", "-type=a", "localhost.invalid", check=False)
    assert b"127.0.0.11" in r.stdout
    # from another network: neither the name nor the address
    r = d.cli("run", "--rm", "--network", "nB", "busybox", "nslookup", "web", check=False)
    assert r.returncode != 0
    ip = ep["IPAddress"]
    r = d.cli("run", "--rm", "--network", "nB", "busybox", "sh", "-c",
              f"echo -e 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8000", check=False)
    assert short.encode() not in r.stdout
    # the default bridge has no name resolution and is isolated from user networks too
    r = d.cli("run", "--rm", "busybox", "sh", "-c", f"echo -e 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8000",
              check=False)
    assert short.encode() not in r.stdout
    # network inspect lists the running container
    net = json.loads(d.out("network", "inspect", "nA"))[0]
    assert net["Containers"][web["Id"]]["Name"] == "web"
    assert net["Containers"][web["Id"]]["IPv4Address"] == f"{ip}/{ep['IPPrefixLen']}"


def test_published_ports(netd: Daemon, names: list[str]) -> None:
    d = netd
    names += ["p1", "p2", "p3", "p4"]
    port = free_port()
    d.cli("run", "-d", "--name", "p1", "-p", f"127.0.0.1:{port}:80", "busybox", *HTTPD)
    short = inspect(d, "p1")["Config"]["Hostname"]
    assert http_get("127.0.0.1", port).strip() == short
    assert d.out("port", "p1").strip() == f"80/tcp -> 127.0.0.1:{port}"
    assert d.out("port", "p1", "80").strip() == f"127.0.0.1:{port}"
    assert f"127.0.0.1:{port}->80/tcp" in d.out("ps", "--format", "{{.Ports}}", "--filter", "name=p1")
    # the same host port again: a clear error, and the first mapping still works
    r = d.cli("run", "-d", "--name", "p2", "-p", f"127.0.0.1:{port}:80", "busybox", *HTTPD, check=False)
    assert r.returncode == 125 and b"port is already allocated" in r.stderr
    assert http_get("127.0.0.1", port).strip() == short
    # -P: the image's EXPOSEd ports (here --expose) on free host ports, reachable on the host's own address
    d.cli("run", "-d", "--name", "p3", "--expose", "80", "-P", "busybox", *HTTPD)
    ports = inspect(d, "p3")["NetworkSettings"]["Ports"]
    hp = int(ports["80/tcp"][0]["HostPort"])
    assert ports["80/tcp"][0]["HostIp"] == "0.0.0.0" and hp > 0
    assert http_get("127.0.0.1", hp).strip() == inspect(d, "p3")["Config"]["Hostname"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("198.51.100.1", 9))  # no packet: just the source address of the default route
        host_ip = s.getsockname()[0]
    except OSError:
        host_ip = ""
    finally:
        s.close()
    if host_ip:
        assert http_get(host_ip, hp).strip() == inspect(d, "p3")["Config"]["Hostname"]
    table = nft_table("matou_" + daemon_config(d)["bridge"]) or ""
    assert f"{hp} :" in table
    # ranges, and UDP (the UDP path itself is exercised in test_bridge.py: busybox has no UDP server)
    a, u = free_port(), free_port()
    d.cli("run", "-d", "--name", "p4", "-p", f"127.0.0.1:{a}-{a + 1}:7000-7001", "-p", f"127.0.0.1:{u}:53/udp",
          "busybox", "httpd", "-f", "-p", "7001", "-h", "/etc")
    assert d.out("port", "p4", "7001").strip() == f"127.0.0.1:{a + 1}"
    assert d.out("port", "p4", "53/udp").strip() == f"127.0.0.1:{u}"
    assert http_get("127.0.0.1", a + 1).strip() == inspect(d, "p4")["Config"]["Hostname"]
    table = nft_table("matou_" + daemon_config(d)["bridge"]) or ""
    assert f"127.0.0.1 . {u} : " in table.split("map pub_udp ")[1].split("}")[0]
    d.cli("rm", "-f", "p1", "p3", "p4")
    table = nft_table("matou_" + daemon_config(d)["bridge"]) or ""
    assert f"{hp} :" not in table and f"{port} :" not in table
    with pytest.raises(OSError):
        http_get("127.0.0.1", port, timeout=0.5)


def test_network_commands(netd: Daemon, names: list[str]) -> None:
    d = netd
    names += ["s1", "s2", "s3", "cn", "bb", "nC", "nD", "nE"]
    nid = d.out("network", "create", "--subnet", "10.77.3.0/24", "--gateway", "10.77.3.254", "--ip-range",
                "10.77.3.16/28", "--label", "team=blue", "nC").strip()
    assert len(nid) == 64
    r = d.cli("network", "create", "nC", check=False)
    assert r.returncode == 1 and b"already exists" in r.stderr
    r = d.cli("network", "create", "--subnet", "10.77.3.128/25", "nX", check=False)
    assert r.returncode == 1 and b"overlaps" in r.stderr
    net = json.loads(d.out("network", "inspect", "nC"))[0]
    assert net["IPAM"]["Config"] == [{"Subnet": "10.77.3.0/24", "Gateway": "10.77.3.254", "IPRange": "10.77.3.16/28"}]
    assert net["Labels"] == {"team": "blue"} and net["Driver"] == "bridge" and net["Scope"] == "local"
    assert d.out("network", "ls", "-q", "--filter", "label=team=blue").strip() == nid[:12]
    assert "nC" in d.out("network", "ls", "--format", "{{.Name}}", "--filter", "type=custom")
    assert d.out("network", "ls", "--format", "{{.Name}}", "--filter", "type=builtin").split() == \
        ["bridge", "host", "none"]
    # dynamic addresses come from the ip-range; --ip takes a fixed one, with clear errors
    d.cli("run", "-d", "--name", "s1", "--network", "nC", "busybox", "sleep", "600")
    ip1 = inspect(d, "s1")["NetworkSettings"]["Networks"]["nC"]["IPAddress"]
    assert ip1.startswith("10.77.3.") and 16 <= int(ip1.rsplit(".", 1)[1]) < 32
    d.cli("run", "-d", "--name", "s2", "--network", "nC", "--ip", "10.77.3.100", "busybox", "sleep", "600")
    assert inspect(d, "s2")["NetworkSettings"]["Networks"]["nC"]["IPAddress"] == "10.77.3.100"
    assert "inet 10.77.3.100/24" in d.out("exec", "s2", "ip", "addr", "show", "eth0")
    r = d.cli("run", "-d", "--name", "s3", "--network", "nC", "--ip", "10.77.3.100", "busybox", "true", check=False)
    assert r.returncode == 125 and b"already in use" in r.stderr
    r = d.cli("run", "-d", "--name", "s3", "--network", "nC", "--ip", "10.99.0.5", "busybox", "true", check=False)
    assert r.returncode == 125 and b"does not belong to the network" in r.stderr
    r = d.cli("run", "--rm", "--network", "nosuchnet", "busybox", "true", check=False)
    assert r.returncode == 125 and b"network nosuchnet not found" in r.stderr
    r = d.cli("run", "--rm", "--network-alias", "x", "busybox", "true", check=False)
    assert r.returncode == 125 and b"user-defined networks" in r.stderr
    # rm while a container runs on it: refused; predefined networks: refused
    r = d.cli("network", "rm", "nC", check=False)
    assert r.returncode == 1 and b"active endpoints" in r.stderr
    r = d.cli("network", "rm", "bridge", check=False)
    assert r.returncode == 1 and b"pre-defined" in r.stderr
    # connect a running container to a second network: a new interface, and names there resolve
    d.cli("network", "create", "nD")
    d.cli("run", "-d", "--name", "cn", "--network", "nD", "busybox", "sleep", "600")
    d.cli("network", "connect", "--alias", "second", "nD", "s1")
    s1 = inspect(d, "s1")["NetworkSettings"]["Networks"]
    assert set(s1) == {"nC", "nD"} and s1["nD"]["Aliases"] == ["second"]
    assert s1["nD"]["IPAddress"] in d.out("exec", "s1", "ip", "addr", "show", "eth1")
    assert s1["nD"]["IPAddress"] in d.out("exec", "cn", "nslookup", "second")
    r = d.cli("network", "connect", "nD", "s1", check=False)
    assert r.returncode == 1 and b"already exists" in r.stderr
    # a default-bridge container joining its first user network gets the embedded resolver too
    d.cli("run", "-d", "--name", "bb", "--mac-address", "02:11:22:33:44:55", "busybox", "sleep", "600")
    assert d.out("exec", "bb", "cat", "/sys/class/net/eth0/address").strip() == "02:11:22:33:44:55"
    d.cli("network", "connect", "nD", "bb")
    assert "nameserver 127.0.0.11" in d.out("exec", "bb", "cat", "/etc/resolv.conf")
    assert inspect(d, "cn")["NetworkSettings"]["Networks"]["nD"]["IPAddress"] in d.out("exec", "bb", "nslookup", "cn")
    d.cli("network", "disconnect", "nD", "s1")
    assert set(inspect(d, "s1")["NetworkSettings"]["Networks"]) == {"nC"}
    assert d.cli("exec", "s1", "ip", "link", "show", "eth1", check=False).returncode != 0
    # connect a stopped container: takes effect at its next start
    d.cli("create", "--name", "s3", "--network", "nC", "busybox", "sleep", "600")
    d.cli("network", "connect", "nD", "s3")
    d.cli("start", "s3")
    out = d.out("exec", "s3", "ip", "-o", "-4", "addr")
    assert "eth0" in out and "eth1" in out
    # prune removes unused networks only
    d.cli("network", "create", "nE")
    d.cli("rm", "-f", "s1", "s2", "s3", "cn", "bb")
    out = d.out("network", "prune", "-f")
    assert "nC" in out and "nD" in out and "nE" in out
    assert d.out("network", "ls", "-q", "--filter", "type=custom").strip() == ""
    wait_for(lambda: db_rows(d, "SELECT * FROM ip_allocations WHERE network_id=?", (nid,)) == [])


def test_network_modes(netd: Daemon, names: list[str]) -> None:
    d = netd
    names += ["m1"]
    out = d.out("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    assert "lo" in out and "eth0" not in out
    assert json.loads(d.out("create", "--network", "none", "busybox", "true").strip() and
                      d.out("network", "inspect", "none"))[0]["Driver"] == "null"
    host_links = set(os.listdir("/sys/class/net"))
    out = d.out("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net")
    assert set(out.split()) & host_links - {"lo"}
    d.cli("run", "-d", "--name", "m1", "busybox", "sleep", "600")
    ip = inspect(d, "m1")["NetworkSettings"]["IPAddress"]
    out = d.out("run", "--rm", "--network", "container:m1", "busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert ip in out
    for c in d.out("ps", "-aq", "--filter", "status=created").split():
        d.cli("rm", c)


def test_trace_shows_network(netd: Daemon) -> None:
    r = netd.cli("run", "--rm", "--trace", "busybox", "true")
    assert b"network" in r.stderr


def test_run_rm_cycles_leave_nothing(netd: Daemon, names: list[str]) -> None:
    d = netd
    names += ["nF"]
    d.cli("network", "create", "nF")
    bridge = daemon_config(d)["bridge"]
    for i in range(6):
        d.cli("run", "--rm", *(["--network", "nF"] if i % 2 else []), "-p", "127.0.0.1::80", "busybox", "true")
    wait_for(lambda: db_rows(d, "SELECT * FROM sandboxes") == [])
    wait_for(lambda: db_rows(d, "SELECT * FROM ip_allocations WHERE owner NOT IN (SELECT id FROM containers)") == [])
    wait_for(lambda: os.listdir(os.path.join(d.exec_root, "netns")) == [])
    wait_for(lambda: bridge_ports(bridge) == [])


@pytest.mark.slow
def test_100_concurrent_runs(netd: Daemon, names: list[str]) -> None:
    d = netd
    names += ["nG"]
    nid = d.out("network", "create", "--subnet", "10.77.8.0/24", "nG").strip()
    bridge = json.loads(d.out("network", "inspect", "nG"))[0]["Options"].get("com.docker.network.bridge.name") \
        or f"br-{nid[:12]}"
    ids: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        r = d.cli("run", "-d", "--network", "nG", "busybox", "sleep", "600", check=False)
        with lock:
            (ids if r.returncode == 0 else errors).append(r.stdout.decode().strip() or r.stderr.decode())

    t0 = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    t1 = time.monotonic()
    eps = json.loads(d.out("network", "inspect", "nG"))[0]["Containers"]
    assert sorted(eps) == sorted(ids)
    assert len({e["IPv4Address"] for e in eps.values()}) == 100
    recorded = {r[0] for r in db_rows(d, "SELECT address FROM ip_allocations WHERE network_id=?", (nid,))}
    assert recorded == {e["IPv4Address"].split("/")[0] for e in eps.values()}
    assert len(bridge_ports(bridge)) == 100
    t2 = time.monotonic()
    d.cli("rm", "-f", *ids)
    print(f"100 concurrent runs: {t1 - t0:.1f} s, checks {t2 - t1:.1f} s, rm -f {time.monotonic() - t2:.1f} s")
    wait_for(lambda: db_rows(d, "SELECT * FROM ip_allocations WHERE network_id=?", (nid,)) == [])
    wait_for(lambda: db_rows(d, "SELECT * FROM sandboxes") == [])
    wait_for(lambda: os.listdir(os.path.join(d.exec_root, "netns")) == [])
    wait_for(lambda: bridge_ports(bridge) == [])
    table = nft_table("matou_" + daemon_config(d)["bridge"]) or ""
    assert "10.77.8." not in table.split("chain")[0]  # no map element left (the masquerade rule stays)


def _host_peer(ns_path: str, ifname: str = "eth0") -> str:
    """The host-side name of the veth whose other end is ``ifname`` in the namespace pinned at ``ns_path``."""
    out = subprocess.run(["nsenter", f"--net={ns_path}", "ip", "-o", "link", "show", ifname], capture_output=True,
                         text=True, check=True).stdout
    index = out.split("@if", 1)[1].split(":", 1)[0]
    for name in os.listdir("/sys/class/net"):
        with contextlib.suppress(OSError), open(f"/sys/class/net/{name}/ifindex") as f:
            if f.read().strip() == index:
                return name
    raise AssertionError(f"no host link with index {index}")


def test_default_bridge_sandbox_made_ahead() -> None:
    """The default bridge's next sandbox (namespace, loopback, veth pair) is made before any run asks for it: the
    run only configures it. Until taken, its host end is on no bridge; a clean stop removes it."""
    d = _new_daemon("matou-spare-")
    d.start()
    try:
        d.cli("image", "bootstrap", "busybox")
        ready = os.path.join(d.exec_root, "netns-ready")
        wait_for(lambda: len(os.listdir(ready)) == 1)
        spare = os.path.join(ready, os.listdir(ready)[0])
        bridge = daemon_config(d)["bridge"]
        assert bridge_ports(bridge) == []  # nobody's port until taken
        veth = _host_peer(spare)
        d.cli("run", "-d", "--name", "sp1", "busybox", "sleep", "600")
        ns = inspect(d, "sp1")["NetworkSettings"]
        assert ns["SandboxKey"] == spare
        assert bridge_ports(bridge) == [veth]
        link = d.out("exec", "sp1", "ip", "-o", "link", "show", "eth0")
        assert ns["MacAddress"] in link and "UP" in link
        assert f"{ns['IPAddress']}/{ns['IPPrefixLen']}" in d.out("exec", "sp1", "ip", "-o", "-4", "addr", "show", "eth0")
        assert f"default via {ns['Gateway']}" in d.out("exec", "sp1", "ip", "route")
        d.cli("exec", "sp1", "ping", "-c", "1", "-W", "5", ns["Gateway"])
        wait_for(lambda: len(os.listdir(ready)) == 2)  # sp1's pin, and the next spare
        d.cli("rm", "-f", "sp1")
        wait_for(lambda: len(os.listdir(ready)) == 1 and bridge_ports(bridge) == [] and not os.path.exists(spare))
        nxt = os.path.join(ready, os.listdir(ready)[0])
        nxt_veth = _host_peer(nxt)
        d.stop()
        assert os.listdir(ready) == []
        wait_for(lambda: not os.path.exists(f"/sys/class/net/{nxt_veth}"))
    finally:
        d.cleanup()


def test_a_bridge_deleted_behind_the_daemon_is_made_again(netd: Daemon) -> None:
    """Another process deleting the default bridge (a second daemon using the same bridge name removes it when it
    stops) does not break the next runs: the daemon makes it again, with its address, when it finds it gone."""
    bridge, gw = daemon_config(netd)["bridge"], daemon_config(netd)["bip"].split("/")[0]
    assert netd.out("run", "--rm", "busybox", "true") == ""
    subprocess.run(["ip", "link", "del", bridge], check=True)
    out = netd.out("run", "--rm", "busybox", "sh", "-c", f"ping -c1 -W2 {gw} >/dev/null && echo reached")
    assert out == "reached\n"
    assert f"inet {gw}/" in subprocess.run(["ip", "-4", "addr", "show", bridge], capture_output=True,
                                           text=True).stdout


def test_a_firewall_table_deleted_behind_the_daemon_is_rebuilt(netd: Daemon, names: list[str]) -> None:
    """The daemon's nftables table deleted by another process (a second daemon of the same table name stopping, a
    firewall reload): the next published port rebuilds it from the daemon's records, the earlier ports included."""
    d = netd
    names += ["fw1", "fw2"]
    table = "matou_" + daemon_config(d)["bridge"]
    p1, p2 = free_port(), free_port()
    d.cli("run", "-d", "--name", "fw1", "-p", f"127.0.0.1:{p1}:80", "busybox", *HTTPD)
    assert http_get("127.0.0.1", p1).strip() == inspect(d, "fw1")["Config"]["Hostname"]
    subprocess.run(["nft", "delete", "table", "ip", table], check=True)
    d.cli("run", "-d", "--name", "fw2", "-p", f"127.0.0.1:{p2}:80", "busybox", *HTTPD)
    assert http_get("127.0.0.1", p2).strip() == inspect(d, "fw2")["Config"]["Hostname"]
    assert http_get("127.0.0.1", p1).strip() == inspect(d, "fw1")["Config"]["Hostname"]
    assert f"{p1}" in (nft_table(table) or "")
