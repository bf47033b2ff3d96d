"""Fixtures for the network tests: scratch network namespaces (nothing touches the host's), a daemon of our own."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from matou.network import netns
from tests.conftest import Daemon, _new_daemon


class Scratch:
    """Network namespaces pinned under a temp directory; removing the pins destroys them and all their links."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths: list[str] = []

    def new(self, name: str) -> str:
        path = os.path.join(self.root, name)
        netns.create(path, lambda: None)
        self.paths.append(path)
        return path

    def cleanup(self) -> None:
        for p in self.paths:
            netns.remove(p)


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    root = tempfile.mkdtemp(prefix="matou-ns-", dir="/tmp")
    s = Scratch(root)
    try:
        yield s
    finally:
        s.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def daemon_config(d: Daemon) -> dict:
    with open(d.extra_args[d.extra_args.index("--config-file") + 1]) as f:
        return json.load(f)


def bridge_ports(bridge: str) -> list[str]:
    """Names of the links enslaved to a bridge on the host."""
    r = subprocess.run(["ip", "-j", "link", "show", "master", bridge], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    return [x["ifname"] for x in json.loads(r.stdout)]


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def nft_table(name: str) -> str | None:
    r = subprocess.run(["nft", "list", "table", "ip", name], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


@pytest.fixture(scope="module")
def netd() -> Iterator[Daemon]:
    """A daemon of this module's own (own bridge, subnets, nftables table), with busybox; checks it leaves nothing."""
    d = _new_daemon("matou-net-")
    d.start()
    cfg = daemon_config(d)
    try:
        d.cli("image", "bootstrap", "busybox")
        yield d
    finally:
        with contextlib.suppress(Exception):
            ids = d.out("ps", "-aq").split()
            if ids:
                d.cli("rm", "-f", *ids, check=False)
        with contextlib.suppress(Exception):
            nets = [n for n in d.out("network", "ls", "-q", "--filter", "type=custom").split()]
            if nets:
                d.cli("network", "rm", *nets, check=False)
        d.cleanup()
        table = "matou_" + cfg["bridge"]
        leaks = [x for x in (cfg["bridge"],) if link_exists(x)] + ([table] if nft_table(table) else [])
        assert not leaks, f"left behind: {leaks}"
