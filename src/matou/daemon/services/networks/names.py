"""Names on user networks: what the embedded resolver answers, which upstreams it forwards to, resolv.conf.

A container resolves the names (container name, aliases, short ID; also ``name.network``) of the running containers
that share a user network with it, and nothing else; the default bridge has no name resolution, as in Docker.
"""

from __future__ import annotations

import contextlib
import logging
import os

from matou.daemon.config import DaemonConfig
from matou.daemon.services.containers.records import Container
from matou.daemon.services.networks.records import NetworkRecord, SandboxRecord
from matou.network import dns as dnsmod

log = logging.getLogger("matoud.networks")


def _user_nets_of(sandboxes: dict[str, SandboxRecord], nets: dict[str, NetworkRecord], cid: str) -> list[str]:
    sb = sandboxes.get(cid)
    if sb is None:
        return []
    return [nid for nid in sb.links if nid in nets and not nets[nid].is_default]


def resolve(sandboxes: dict[str, SandboxRecord], nets: dict[str, NetworkRecord], cid: str,
            name: str) -> list[str] | None:
    """The addresses ``name`` has for container ``cid``, or None if it names no container (then: forward)."""
    mine = _user_nets_of(sandboxes, nets, cid)
    if not mine:
        return None
    cands = [(name, mine)]
    for nid in mine:  # "web.mynet" names web on mynet
        suffix = "." + nets[nid].name.lower()
        if name.endswith(suffix):
            cands.append((name[: -len(suffix)], [nid]))
    out: list[str] = []
    for n, scope in cands:
        for sb in sandboxes.values():
            for nid in scope:
                lk = sb.links.get(nid)
                if lk is not None and any(n == x.lower() for x in lk.names) and lk.ip not in out:
                    out.append(lk.ip)
    return out or None


def reverse(sandboxes: dict[str, SandboxRecord], nets: dict[str, NetworkRecord], cid: str, ip: str) -> str | None:
    for sb in sandboxes.values():
        for nid in _user_nets_of(sandboxes, nets, cid):
            lk = sb.links.get(nid)
            if lk is not None and lk.ip == ip:
                return f"{sb.name}.{nets[nid].name}"
    return None


def dns_names(c: Container, aliases: list[str]) -> list[str]:
    out = [c.name]
    for a in aliases:
        if a not in out:
            out.append(a)
    out.append(c.id[:12])
    return out


def upstreams(c: Container, cfg: DaemonConfig) -> list[str]:
    return list(c.host_config.get("Dns") or []) or list(cfg.dns) or host_resolvers() or ["8.8.8.8"]


def host_resolvers() -> list[str]:
    out: list[str] = []
    with contextlib.suppress(OSError):
        with open("/etc/resolv.conf") as f:
            for line in f:
                w = line.split()
                if len(w) > 1 and w[0] == "nameserver":
                    out.append(w[1].split("%")[0])
    return out


def point_resolv_conf_at_dns(c: Container) -> None:
    """A running container joined its first user network: its resolv.conf (bind-mounted, so rewritten in place,
    same inode) now names the embedded resolver."""
    from matou.daemon.services.containers.bundle import resolv_conf

    hc = c.host_config
    if not c.resolv_conf_path or not os.path.exists(c.resolv_conf_path):
        return
    try:
        with open(c.resolv_conf_path, "r+") as f:
            f.write(resolv_conf(list(hc.get("Dns") or []), list(hc.get("DnsSearch") or []),
                                list(hc.get("DnsOptions") or []), dnsmod.ADDRESS))
            f.truncate()
    except OSError as e:
        log.warning("container %s: rewriting resolv.conf: %s", c.id[:12], e)
