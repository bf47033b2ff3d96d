"""The daemon dies (SIGKILL) or stops cleanly with containers on two networks: everything comes back."""

from __future__ import annotations

import json

from tests.conftest import Daemon
from tests.network.conftest import bridge_ports, daemon_config, link_exists, nft_table
from tests.network.test_daemon import HTTPD, free_port, http_get, inspect, wait_for


def _addresses(d: Daemon, names: list[str]) -> dict[str, dict[str, str]]:
    return {n: {k: v["IPAddress"] for k, v in inspect(d, n)["NetworkSettings"]["Networks"].items()} for n in names}


def _traffic(d: Daemon, port: int, pub_short: str, web_short: str) -> None:
    assert http_get("127.0.0.1", port).strip() == pub_short  # published port (nftables DNAT)
    out = d.out("exec", "client", "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web:8000/hostname "
                "&& exit 0; sleep 0.2; done; exit 1")  # DNS by name on the user network
    assert out.strip() == web_short


def test_sigkill_and_clean_restart(fresh_daemon: Daemon) -> None:
    d = fresh_daemon
    cfg = daemon_config(d)
    table = "matou_" + cfg["bridge"]
    d.cli("image", "bootstrap", "busybox")
    d.cli("network", "create", "appnet")
    port = free_port()
    d.cli("run", "-d", "--name", "pub", "-p", f"127.0.0.1:{port}:80", "busybox", *HTTPD)
    d.cli("run", "-d", "--name", "web", "--network", "appnet", "busybox", "httpd", "-f", "-p", "8000", "-h", "/etc")
    d.cli("run", "-d", "--name", "client", "--network", "appnet", "busybox", "sleep", "600")
    names = ["pub", "web", "client"]
    before = _addresses(d, names)
    pub_short = inspect(d, "pub")["Config"]["Hostname"]
    web_short = inspect(d, "web")["Config"]["Hostname"]
    user_bridge = f"br-{json.loads(d.out('network', 'inspect', 'appnet'))[0]['Id'][:12]}"
    _traffic(d, port, pub_short, web_short)

    # SIGKILL: rules and links stay in the kernel; the new daemon adopts them and rebuilds its table
    d.kill()
    d.start()
    assert _addresses(d, names) == before
    assert f"{port} : " in (nft_table(table) or "")
    _traffic(d, port, pub_short, web_short)
    d.cli("run", "--rm", "busybox", "true")  # and new containers still work

    # clean stop: bridges and the table go, the containers keep running; the next start puts everything back
    d.stop()
    assert not link_exists(cfg["bridge"]) and not link_exists(user_bridge) and nft_table(table) is None
    d.start()
    assert _addresses(d, names) == before
    assert len(bridge_ports(user_bridge)) == 2 and len(bridge_ports(cfg["bridge"])) == 1
    _traffic(d, port, pub_short, web_short)

    d.cli("rm", "-f", *names)
    d.cli("network", "rm", "appnet")
    wait_for(lambda: bridge_ports(cfg["bridge"]) == [])
    assert not link_exists(user_bridge)
    d.stop()
    assert not link_exists(cfg["bridge"]) and nft_table(table) is None
