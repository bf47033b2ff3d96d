"""Networks: the predefined bridge/host/none, user bridge networks, container endpoints, published ports, DNS.

Where things live:
- networks: table ``networks`` (``NetworkRecord``), cached in memory (this daemon is the database's only writer);
- addresses: table ``ip_allocations`` through ``DatabaseIPAM``, allocated at container create, released at ``rm``;
- a running container's namespace, veths and published ports: table ``sandboxes`` (``SandboxRecord``), written at
  start, deleted at exit, so a restarted daemon can put everything back;
- the kernel: the run path (a container's namespace, veths, its published ports) is done inline on the event loop
  (``self.fast``, ~3-4 ms, measured ~1 ms faster and with a much shorter tail than a hop to a worker thread, whose
  every syscall return waits for the GIL under load); everything slow or rare (bridges, deleting links, unpinning
  namespaces after an exit, start and stop) runs on one worker thread (``self.driver`` via ``self._run``). Each
  thread has its own netlink socket; nftables is only used from the loop (and from the worker before the loop needs
  it, at start, or after, at stop), so the table and its port maps never race. A thread that switches network
  namespace always switches back before it returns.
- spare sandboxes: the worker keeps one sandbox ready for the next container on the default bridge (namespace
  pinned under ``netns-ready``, loopback up, a veth pair whose host end is on no bridge yet). ``plan`` takes it,
  the container's init joins it by path, and ``realize`` only configures it: ~1 ms inline instead of 2.5-5 ms
  (``run --trace``'s network step here). A taken spare's pin stays where it is, as the container's SandboxKey;
  an unused one is removed at stop, or swept at the next start after a crash.

Lifecycle: ``start`` (after the containers service re-adopted its containers) recreates bridges, re-attaches the
surviving veths of running containers, re-reserves their ports, restarts their DNS servers and rebuilds the
nftables table from the database; ``stop`` (clean shutdown) deletes the table and the bridges; running
containers keep their namespaces and get their bridge back at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from matou.daemon.config import DaemonConfig
from matou.daemon.services import Services
from matou.daemon.services.containers.records import Container
from matou.daemon.services.networks import names
from matou.daemon.services.networks.records import (
    DEFAULT_BRIDGE,
    OPT_BRIDGE_NAME,
    PREDEFINED,
    Link,
    NetworkRecord,
    SandboxRecord,
    empty_endpoint,
    matches,
    portdict,
)
from matou.errors import Conflict, Forbidden, InvalidArgument, NotFound, SystemError_, Unsupported
from matou.network import dns as dnsmod
from matou.network import netns
from matou.network import ports as portsmod
from matou.network.bridge import BridgeDriver, LinkSpec, SpareSandbox, mac_for, veth_name
from matou.network.dns import DNSServer
from matou.network.firewall import Firewall, PortMap
from matou.network.ipam import DatabaseIPAM, Pool, pick_subnet
from matou.network.nftables import Nft
from matou.store.metadata import Database
from matou.types.image import rfc3339
from matou.util import filters as flt
from matou.util.ids import new_id


@dataclass
class SandboxPlan:
    """A start's network setup before any kernel work (see NetworksService.plan)."""

    sb: SandboxRecord
    specs: list[LinkSpec]
    reqs: list[portsmod.Request]
    addresses: list[str]  # the container's, primary network first
    dns: str | None  # the embedded DNS server's address, if the container gets one
    plan_ms: float
    spare: SpareSandbox | None = None  # a premade sandbox taken for it: the init joins sb.path


log = logging.getLogger("matoud.networks")
# after a spare sandbox is taken, wait this long (s) before making the next: not on the CPUs the run that took it
# is using (2 here), yet ready for the next run of a loop
SPARE_REFILL_DELAY = 0.03
T = TypeVar("T")

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
SPECIAL_MODES = ("host", "none")


def _is_shared_mode(nm: str) -> bool:
    return nm in SPECIAL_MODES or nm.startswith("container:")


def table_name(bridge_name: str) -> str:
    """One nftables table per daemon, named after its default bridge so test daemons never share one."""
    if bridge_name == "matou0":
        return "matou"
    return "matou_" + re.sub(r"[^A-Za-z0-9_]", "_", bridge_name)


class NetworksService:
    def __init__(self, svcs: Services, db: Database) -> None:
        self.svcs = svcs
        self.cfg: DaemonConfig = svcs.config
        self.db = db
        self.ipam = DatabaseIPAM(db)
        self.netns_dir = os.path.join(self.cfg.exec_root, "netns")
        # sandboxes made ahead for the next container on the default bridge (see _refill); a taken one keeps its
        # pin here, as its container's SandboxKey
        self.spare_dir = os.path.join(self.cfg.exec_root, "netns-ready")
        self._spare: SpareSandbox | None = None
        self._refilling = False
        self._stopping = False
        self._taken: dict[str, SpareSandbox] = {}  # container id -> spare taken by plan(), until realize()
        made: dict[str, tuple[str, int]] = {}  # the bridges made, which either driver makes again if they go
        self.driver = BridgeDriver(made=made)  # the worker thread's
        self.fast = BridgeDriver(made=made)    # the event loop's (the run path)
        self._stale_bridge: str | None = None
        self.fw: Firewall | None = None
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="matou-net")
        self._nets: dict[str, NetworkRecord] = {}
        self._sandboxes: dict[str, SandboxRecord] = {}
        self._held: dict[str, list[socket.socket]] = {}  # container id -> port reservations
        self._dns: dict[str, DNSServer] = {}
        self._ready = asyncio.Event()
        self._started = False
        self._mutate = asyncio.Lock()
        self._pending: set[asyncio.Future[None]] = set()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._exec, functools.partial(fn, *args))

    # ------------------------------------------------------------------ records
    def _load(self) -> None:
        self._nets = {r["id"]: NetworkRecord.loads(r["record"]) for r in self.db.all("SELECT record, id FROM networks")}

    def _store(self, n: NetworkRecord) -> None:
        with self.db.tx() as tx:
            tx.execute("INSERT INTO networks(id, name, driver, created, record) VALUES(?,?,?,?,?) "
                       "ON CONFLICT(id) DO UPDATE SET name=excluded.name, driver=excluded.driver, "
                       "record=excluded.record", (n.id, n.name, n.driver, n.created, n.dumps()))
        self._nets[n.id] = n

    def find(self, ref: str) -> NetworkRecord:
        """By full ID, then name, then unique ID prefix (Docker's order)."""
        if ref in ("default", ""):
            ref = DEFAULT_BRIDGE
        n = self._nets.get(ref)
        if n is not None:
            return n
        for n in self._nets.values():
            if n.name == ref:
                return n
        hits = [n for n in self._nets.values() if n.id.startswith(ref)] if re.fullmatch(r"[0-9a-f]+", ref) else []
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise NotFound(f"network {ref} is ambiguous ({len(hits)} matches found based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def _ensure_predefined(self) -> None:
        try:
            gw = ipaddress.IPv4Interface(self.cfg.bip)
        except ValueError:
            raise InvalidArgument(f"invalid bip {self.cfg.bip!r}: expected an address with a prefix, as 172.28.0.1/16")
        byname = {n.name: n for n in self._nets.values()}
        br = byname.get(DEFAULT_BRIDGE)
        opts = {"com.docker.network.bridge.default_bridge": "true", "com.docker.network.bridge.enable_icc": "true",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
                "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0", OPT_BRIDGE_NAME: self.cfg.bridge_name,
                "com.docker.network.driver.mtu": "1500"}
        want = (str(gw.network), str(gw.ip), self.cfg.bridge_name)
        if br is None or (br.subnet, br.gateway, br.bridge) != want:
            if br is not None and br.bridge != self.cfg.bridge_name:
                self._stale_bridge = br.bridge  # the bridge option changed: the old one goes at start
            rec = NetworkRecord(id=br.id if br else new_id(), name=DEFAULT_BRIDGE, driver="bridge",
                                created=br.created if br else rfc3339(), subnet=str(gw.network), gateway=str(gw.ip),
                                bridge=self.cfg.bridge_name, options=opts)
            self._store(rec)
        for name, driver in (("host", "host"), ("none", "null")):
            if name not in byname:
                self._store(NetworkRecord(id=new_id(), name=name, driver=driver, created=rfc3339()))

    def _bridges(self) -> list[NetworkRecord]:
        return [n for n in self._nets.values() if n.is_bridge]

    def _all_ports(self) -> list[PortMap]:
        return [p for sb in self._sandboxes.values() for p in sb.port_maps()]

    def _save_sandbox(self, sb: SandboxRecord) -> None:
        self.db.execute("INSERT INTO sandboxes(container_id, record) VALUES(?,?) "
                        "ON CONFLICT(container_id) DO UPDATE SET record=excluded.record", (sb.container_id, sb.dumps()))

    def _save_container(self, c: Container) -> None:
        self.db.execute("UPDATE containers SET record=? WHERE id=?", (c.dumps(), c.id))

    def _publish(self, action: str, n: NetworkRecord, container: str | None = None) -> None:
        attrs = {"name": n.name, "type": n.driver}
        if container:
            attrs["container"] = container
        self.svcs.events.publish("network", action, n.id, attrs)

    # ------------------------------------------------------------------ daemon lifecycle
    async def start(self) -> None:
        self._load()
        self._ensure_predefined()
        # a crash between a container's removal and its (background) release leaves addresses with no owner
        n = self.db.execute("DELETE FROM ip_allocations WHERE owner NOT IN (SELECT id FROM containers)")
        if n:
            log.info("released %d addresses of containers that no longer exist", n)
        running: set[str] = set()
        for r in self.db.all("SELECT id, record FROM containers"):
            with contextlib.suppress(Exception):
                if Container.loads(r["record"]).state.Running:
                    running.add(r["id"])
        keep: list[SandboxRecord] = []
        drop: list[SandboxRecord] = []
        for r in self.db.all("SELECT record FROM sandboxes"):
            sb = SandboxRecord.loads(r["record"])
            (keep if sb.container_id in running else drop).append(sb)
        os.makedirs(self.netns_dir, 0o711, exist_ok=True)
        os.makedirs(self.spare_dir, 0o711, exist_ok=True)
        restored = await self._run(self._kernel_start, keep, drop)
        for sb in drop:
            self.db.execute("DELETE FROM sandboxes WHERE container_id=?", (sb.container_id,))
        for sb, held, socks in restored:
            self._sandboxes[sb.container_id] = sb
            self._held[sb.container_id] = held
            self._save_sandbox(sb)
            if socks is not None:
                await self._start_dns(sb, socks)
        for sb in keep:
            if sb.container_id not in self._sandboxes:
                self.db.execute("DELETE FROM sandboxes WHERE container_id=?", (sb.container_id,))
        self._started = True
        self._ready.set()
        log.info("networks ready: %d networks, %d running sandboxes restored", len(self._nets), len(restored))
        self._refill()

    def _kernel_start(self, keep: list[SandboxRecord], drop: list[SandboxRecord]
                      ) -> list[tuple[SandboxRecord, list[socket.socket], tuple[socket.socket, socket.socket] | None]]:
        if self.cfg.iptables:
            self.fw = Firewall(Nft(), table_name(self.cfg.bridge_name))
            BridgeDriver.enable_forwarding()
        if self._stale_bridge:
            self.driver.delete_bridge(self._stale_bridge)
        for n in self._bridges():
            try:
                self.driver.ensure_bridge(n.bridge, f"{n.gateway}/{n.prefix}", n.mtu)
            except Exception as e:
                log.error("network %s: bridge %s: %s", n.name, n.bridge, e)
        for sb in drop:
            self.driver.remove_sandbox(sb.path)
        known = {sb.path for sb in keep}
        for d in (self.netns_dir, self.spare_dir):  # pins of a crash mid-setup or mid-teardown, unused spares
            for name in os.listdir(d):
                if os.path.join(d, name) not in known:
                    log.info("removing orphaned network namespace %s", name)
                    self.driver.remove_sandbox(os.path.join(d, name))
        out = []
        for sb in keep:
            if not netns.is_pinned(sb.path):
                log.info("sandbox of %s is gone", sb.container_id[:12])
                continue
            for link in sb.links.values():
                n = self._nets.get(link.network_id)
                if n is None:
                    continue
                try:
                    if not self.driver.reattach(LinkSpec(link.veth, link.ifname, n.bridge, "", link.mac)):
                        log.warning("container %s: veth %s is gone", sb.container_id[:12], link.veth)
                except Exception as e:
                    log.warning("container %s: re-attaching %s: %s", sb.container_id[:12], link.veth, e)
            held: list[socket.socket] = []
            kept: list[PortMap] = []
            for p in sb.port_maps():
                try:
                    s, _ = portsmod.reserve(portsmod.Request(p.proto, p.port, p.host_ip, p.host_port, p.host_port),
                                            sb.name)
                    held.append(s)
                    kept.append(p)
                except Exception as e:
                    log.warning("container %s: port %s:%d: %s", sb.container_id[:12], p.host_ip, p.host_port, e)
            sb.ports = [portdict(p) for p in kept]
            socks = None
            if sb.dns:
                try:
                    socks = self.driver.open_dns(sb.path)
                except Exception as e:
                    log.warning("container %s: DNS: %s", sb.container_id[:12], e)
            out.append((sb, held, socks))
        if self.fw is not None:
            self.fw.rebuild([n.rules() for n in self._bridges()], [p for sb, _, _ in out for p in sb.port_maps()])
            if self.fw.forward_dropped_elsewhere():
                log.warning("iptables' FORWARD chain has policy DROP (dockerd sets it): containers' outbound and "
                            "published-port traffic is dropped there; `iptables -P FORWARD ACCEPT` lets it pass")
        return out

    async def stop(self) -> None:
        self._stopping = True  # no more refills
        await self.settle()
        spare, self._spare = self._spare, None
        if spare is not None:
            with contextlib.suppress(Exception):
                await self._run(self.driver.discard_spare, spare)
        for srv in self._dns.values():
            srv.close()
        self._dns.clear()
        for held in self._held.values():
            for s in held:
                s.close()
        self._held.clear()
        with contextlib.suppress(Exception):
            await self._run(self._kernel_stop, [n.bridge for n in self._bridges()])
        self._exec.shutdown(wait=True)

    def _kernel_stop(self, bridges: list[str]) -> None:
        if self.fw is not None:
            self.fw.destroy()
            self.fw.nft.close()
        for b in bridges:
            self.driver.delete_bridge(b)
        self.driver.close()
        self.fast.close()

    # ------------------------------------------------------------------ container hooks
    def _endpoint_configs(self, networking_config: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        eps = (networking_config or {}).get("EndpointsConfig") or {}
        if not isinstance(eps, dict):
            raise InvalidArgument("NetworkingConfig.EndpointsConfig must be an object")
        return {k: (v or {}) for k, v in eps.items()}

    def _plan(self, c: Container, networking_config: dict[str, Any] | None
              ) -> list[tuple[NetworkRecord, dict[str, Any]]]:
        """The networks a new container joins (primary first) with their endpoint configs, validated."""
        nm = c.host_config.get("NetworkMode") or DEFAULT_BRIDGE
        eps = self._endpoint_configs(networking_config)
        if _is_shared_mode(nm):
            for name, ep in eps.items():
                if ep.get("Aliases") or (ep.get("IPAMConfig") or {}).get("IPv4Address"):
                    raise InvalidArgument(f"network-scoped aliases and addresses are not supported with "
                                          f"network mode {nm}")
                if name not in (nm, nm.split(":", 1)[0]):
                    raise InvalidArgument(f"container cannot be connected to network {name}: it uses network "
                                          f"mode {nm}")
            return []
        primary = self.find(nm)
        if not primary.is_bridge:
            raise InvalidArgument(f"network {primary.name} ({primary.driver}) can only be used as network mode "
                                  f"{primary.name}")
        plan: list[tuple[NetworkRecord, dict[str, Any]]] = []
        seen: set[str] = set()
        pcfg = eps.get(nm) or eps.get(primary.name) or eps.get(primary.id) or \
            (eps.get("default") if primary.is_default else None) or {}
        for name, ep in [(primary.name, pcfg)] + sorted(eps.items()):
            net = self.find(name)
            if net.id in seen:
                continue
            if not net.is_bridge:
                raise InvalidArgument(f"container cannot be connected to network {net.name} ({net.driver}) "
                                      "together with others")
            seen.add(net.id)
            self._check_endpoint(net, ep)
            plan.append((net, ep))
        return plan

    def _check_endpoint(self, net: NetworkRecord, ep: dict[str, Any]) -> None:
        if ep.get("Aliases") and net.is_default:
            raise InvalidArgument("network-scoped aliases are only supported for user-defined networks")
        ipcfg = ep.get("IPAMConfig") or {}
        if ipcfg.get("IPv6Address"):
            raise InvalidArgument("IPv6 addresses are not supported")
        ip = ipcfg.get("IPv4Address")
        if ip:
            try:
                addr = ipaddress.IPv4Address(ip)
            except ValueError:
                raise InvalidArgument(f"invalid IPv4 address: {ip}") from None
            net.pool.check_static(addr)
            if self.ipam.owner(net.id, str(addr)) is not None:
                raise Conflict(f"Address already in use: {addr} is taken on network {net.name}")
        mac = ep.get("MacAddress")
        if mac and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac):
            raise InvalidArgument(f"invalid MAC address: {mac}")

    async def validate_create(self, c: Container, networking_config: dict[str, Any] | None) -> None:
        self._plan(c, networking_config)
        mac = c.config.get("MacAddress")
        if mac and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac):
            raise InvalidArgument(f"invalid MAC address: {mac}")

    def _new_endpoint(self, c: Container, net: NetworkRecord, ep: dict[str, Any], primary: bool) -> dict[str, Any]:
        static = (ep.get("IPAMConfig") or {}).get("IPv4Address") or None
        ip = str(self.ipam.allocate(net.id, net.pool, c.id, static))
        aliases = [a for a in (ep.get("Aliases") or []) if a]
        mac = ep.get("MacAddress") or (c.config.get("MacAddress") if primary else "") or mac_for(ip)
        out = empty_endpoint()
        out.update({
            "IPAMConfig": {"IPv4Address": static} if static else None,
            "Links": ep.get("Links") or None, "Aliases": aliases or None, "MacAddress": mac.lower(),
            "DriverOpts": ep.get("DriverOpts") or None, "NetworkID": net.id, "EndpointID": new_id(),
            "Gateway": net.gateway, "IPAddress": ip, "IPPrefixLen": net.prefix,
            "DNSNames": None if net.is_default else names.dns_names(c, aliases),
        })
        return out

    async def on_create(self, c: Container, networking_config: dict[str, Any] | None) -> None:
        nm = c.host_config.get("NetworkMode") or DEFAULT_BRIDGE
        if nm in SPECIAL_MODES:
            ep = empty_endpoint()
            ep["NetworkID"] = self.find(nm).id
            c.networks = {nm: ep}
            return
        if nm.startswith("container:"):
            c.networks = {}
            return
        plan = self._plan(c, networking_config)
        c.networks = {}
        try:
            for i, (net, ep) in enumerate(plan):
                c.networks[net.name] = self._new_endpoint(c, net, ep, primary=i == 0)
        except BaseException:
            self.ipam.release_owner(c.id)
            raise

    def _ordered(self, c: Container) -> list[tuple[str, dict[str, Any]]]:
        nm = c.host_config.get("NetworkMode") or DEFAULT_BRIDGE
        try:
            primary = self.find(nm).name
        except NotFound:
            primary = nm
        items = sorted(c.networks.items(), key=lambda kv: (kv[0] != primary, kv[0]))
        return items

    def _refresh_endpoint(self, c: Container, name: str, ep: dict[str, Any], primary: bool) -> NetworkRecord:
        """The endpoint's network and a valid allocation (the network may have been re-created meanwhile)."""
        net = self._nets.get(ep.get("NetworkID") or "")
        if net is None or net.name != name:
            try:
                net = self.find(name)
            except NotFound:
                raise NotFound(f"network {name} not found") from None
        ip = ep.get("IPAddress") or ""
        owner = self.ipam.owner(net.id, ip) if ip else None
        if ep.get("NetworkID") != net.id or owner != c.id:
            fresh = self._new_endpoint(c, net, {"IPAMConfig": ep.get("IPAMConfig"), "Aliases": ep.get("Aliases"),
                                                "MacAddress": "" if ip and ep.get("MacAddress") == mac_for(ip)
                                                else ep.get("MacAddress")}, primary)
            ep.update(fresh)
        ep["Gateway"] = net.gateway
        ep["IPPrefixLen"] = net.prefix
        return net

    async def plan(self, c: Container) -> SandboxPlan:
        """Everything of a start's network setup that needs no kernel work: endpoints and their addresses
        (fills c.networks), the sandbox record, port requests. The caller writes /etc/hosts from it, lets the
        container's init make its own network namespace and hands its pid to realize()."""
        if not self._ready.is_set():
            await self._ready.wait()
        t0 = time.perf_counter()
        if c.id in self._sandboxes:  # after start, memory and the sandboxes table agree
            await self.teardown(c)
        if not c.networks:
            raise NotFound("the container is not connected to any network")
        specs: list[LinkSpec] = []
        links: dict[str, Link] = {}
        want_dns = False
        for i, (name, ep) in enumerate(self._ordered(c)):
            net = self._refresh_endpoint(c, name, ep, i == 0)
            if not ep.get("EndpointID"):
                ep["EndpointID"] = new_id()
            ip = ep["IPAddress"]
            mac = ep.get("MacAddress") or mac_for(ip)
            spec = LinkSpec(veth_name(), f"eth{i}", net.bridge, f"{ip}/{net.prefix}", mac,
                            net.gateway if i == 0 and not net.internal else None, net.mtu)
            specs.append(spec)
            dnsn = [] if net.is_default else names.dns_names(c, ep.get("Aliases") or [])
            links[net.id] = Link(net.id, spec.veth, spec.ifname, ip, net.prefix, mac, ep["EndpointID"], dnsn)
            want_dns = want_dns or not net.is_default
        reqs = portsmod.requests(c.host_config.get("PortBindings"), bool(c.host_config.get("PublishAllPorts")),
                                 c.config.get("ExposedPorts"))
        if reqs and self.fw is None:
            raise Unsupported("publishing ports needs the daemon's firewall (\"iptables\": true in its config)")
        sid = new_id()
        path = os.path.join(self.netns_dir, sid[:12])
        spare = self._take_spare(c, specs[0]) if len(specs) == 1 and not want_dns else None
        if spare is not None:  # the init joins it by path (config.json), and realize() only configures it
            path = spare.path
            specs[0] = dataclasses.replace(specs[0], veth=spare.veth)
            for lk in links.values():
                lk.veth = spare.veth
        sb = SandboxRecord(c.id, c.name, path, sid, links, [], want_dns,
                           names.upstreams(c, self.cfg) if want_dns else [])
        return SandboxPlan(sb, specs, reqs, [lk.ip for lk in links.values()],
                           dnsmod.ADDRESS if want_dns else None, (time.perf_counter() - t0) * 1e3, spare)

    async def realize(self, c: Container, p: SandboxPlan, pid: int | None = None) -> str:
        """The kernel part: pin the namespace (new, or the one process ``pid`` made), create and configure
        the veths, publish the ports, record the sandbox, start its DNS server. Returns the namespace path."""
        sb = p.sb
        t1 = time.perf_counter()
        self._taken.pop(c.id, None)  # from here on, teardown() removes it as the container's sandbox
        socks, held, maps = self._kernel_setup(sb.path, p.specs, sb.dns, p.reqs, p.addresses[0], c.name, pid,
                                               p.spare)
        t2 = time.perf_counter()
        sb.ports = [portdict(m) for m in maps]
        self._sandboxes[c.id] = sb
        self._held[c.id] = held
        try:
            self._save_sandbox(sb)
            if socks is not None:
                await self._start_dns(sb, socks)
        except BaseException:
            await self.teardown(c)
            raise
        view: dict[str, Any] = {k: None for k in (c.config.get("ExposedPorts") or {})}
        for r, m in zip(p.reqs, maps, strict=True):
            cur = view.get(r.key)
            if cur is None:
                cur = view[r.key] = []
            cur.append({"HostIp": m.host_ip, "HostPort": str(m.host_port)})
        c.network_settings.update({"SandboxID": sb.sandbox_id, "SandboxKey": sb.path, "Ports": view})
        log.debug("network setup %s: plan %.2f ms, kernel %.2f, record + DNS %.2f", c.id[:12], p.plan_ms,
                  (t2 - t1) * 1e3, (time.perf_counter() - t2) * 1e3)
        return sb.path

    async def setup(self, c: Container) -> tuple[str, list[str], str | None]:
        """plan() and realize() in one go, in a namespace of our own."""
        p = await self.plan(c)
        return await self.realize(c, p), p.addresses, p.dns

    def _kernel_setup(self, path: str, specs: list[LinkSpec], want_dns: bool, reqs: list[portsmod.Request],
                      ip: str, owner: str, pid: int | None = None, spare: SpareSandbox | None = None
                      ) -> tuple[tuple[socket.socket, socket.socket] | None, list[socket.socket], list[PortMap]]:
        if spare is not None:
            self.fast.take_sandbox(spare, specs[0])
            socks = None
        else:
            socks = self.fast.create_sandbox(path, specs, want_dns, pid)
        held: list[socket.socket] = []
        maps: list[PortMap] = []
        try:
            for r in reqs:
                s, port = portsmod.reserve(r, owner)
                held.append(s)
                maps.append(PortMap(r.proto, r.host_ip, port, ip, r.port))
            if maps and self.fw is not None:
                self._add_ports(maps)
        except BaseException:
            for s in held:
                s.close()
            if socks is not None:
                for s in socks:
                    s.close()
            self.fast.remove_sandbox(path)
            raise
        return socks, held, maps

    async def _start_dns(self, sb: SandboxRecord, socks: tuple[socket.socket, socket.socket]) -> None:
        cid = sb.container_id
        srv = DNSServer(lambda name: names.resolve(self._sandboxes, self._nets, cid, name), lambda ip: names.reverse(self._sandboxes, self._nets, cid, ip),
                        lambda: list(self._sandboxes[cid].upstreams) if cid in self._sandboxes else [])
        try:
            await srv.start(*socks)
        except BaseException:
            srv.close()
            for s in socks:
                s.close()
            raise
        old = self._dns.pop(cid, None)
        if old is not None:
            old.close()
        self._dns[cid] = srv

    async def teardown(self, c: Container) -> None:
        spare = self._taken.pop(c.id, None)
        if spare is not None:  # planned with a spare, but the start failed before realize()
            self._discard(spare)
        sb = self._sandboxes.pop(c.id, None)
        if sb is None:
            row = self.db.one("SELECT record FROM sandboxes WHERE container_id=?", (c.id,))
            if row is None:
                return
            sb = SandboxRecord.loads(row["record"])
        srv = self._dns.pop(c.id, None)
        if srv is not None:
            srv.close()
        for s in self._held.pop(c.id, []):
            s.close()
        self.db.execute("DELETE FROM sandboxes WHERE container_id=?", (c.id,))
        if self._started and self.fw is not None and sb.ports:
            self.fw.remove_ports(sb.port_maps())  # inline, so a restart publishing the same port finds it free
        # unpinning the namespace is queued on the worker, off the exit path (the kernel destroys the namespace
        # and the container's veths asynchronously anyway); a crash leaves a pin that the next start sweeps
        fut = asyncio.get_running_loop().run_in_executor(self._exec, self.driver.remove_sandbox, sb.path)
        self._pending.add(fut)
        fut.add_done_callback(self._teardown_done)

    def _teardown_done(self, fut: asyncio.Future[None]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("network teardown: %s", fut.exception())

    # ------------------------------------------------------------------ spare sandboxes
    def _refill(self) -> None:
        """Make the next default-bridge container's sandbox on the worker thread, off every run's path: a run
        then only configures it (~1 ms inline instead of ~2.5-5 ms of namespace, pin and veth pair)."""
        if not self._started or self._stopping or self._refilling or self._spare is not None:
            return
        net = self._default_bridge()
        if net is None:
            return
        self._refilling = True
        path = os.path.join(self.spare_dir, new_id()[:12])
        fut = asyncio.get_running_loop().run_in_executor(self._exec, self.driver.premake_sandbox, path, "eth0",
                                                         net.mtu)
        self._pending.add(fut)
        fut.add_done_callback(self._refilled)

    def _refilled(self, fut: asyncio.Future[SpareSandbox]) -> None:
        self._pending.discard(fut)
        self._refilling = False
        if fut.cancelled():
            return
        if fut.exception() is not None:
            log.warning("making a spare sandbox: %s", fut.exception())
            return
        spare = fut.result()
        if self._stopping or self._spare is not None:
            self._discard(spare)
        else:
            self._spare = spare

    def _discard(self, spare: SpareSandbox) -> None:
        fut = asyncio.get_running_loop().run_in_executor(self._exec, self.driver.discard_spare, spare)
        self._pending.add(fut)
        fut.add_done_callback(self._teardown_done)

    def _default_bridge(self) -> NetworkRecord | None:
        return next((n for n in self._nets.values() if n.name == DEFAULT_BRIDGE and n.driver == "bridge"), None)

    def _take_spare(self, c: Container, spec: LinkSpec) -> SpareSandbox | None:
        spare, net = self._spare, self._default_bridge()
        if spare is None or net is None or spare.mtu != spec.mtu or net.bridge != spec.bridge \
                or spare.ifname != spec.ifname:
            return None
        self._spare = None
        self._taken[c.id] = spare
        asyncio.get_running_loop().call_later(SPARE_REFILL_DELAY, self._refill)
        return spare

    async def settle(self) -> None:
        """Wait for queued teardowns (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def on_remove(self, c: Container) -> None:
        try:
            await self.teardown(c)
        except Exception:
            log.exception("tearing down the network of %s", c.id[:12])
        finally:
            self.ipam.release_owner(c.id)

    # ------------------------------------------------------------------ DNS
    # ------------------------------------------------------------------ API: networks
    def _containers_of(self, n: NetworkRecord) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sb in self._sandboxes.values():
            lk = sb.links.get(n.id)
            if lk is not None:
                out[sb.container_id] = {"Name": sb.name, "EndpointID": lk.endpoint_id, "MacAddress": lk.mac,
                                        "IPv4Address": f"{lk.ip}/{lk.prefix}", "IPv6Address": ""}
        return out

    def inspect(self, ref: str) -> dict[str, Any]:
        n = self.find(ref)
        return n.to_docker(self._containers_of(n))

    def list(self, filters: str | None = None) -> list[dict[str, Any]]:
        f = flt.parse(filters, {"dangling", "driver", "id", "label", "name", "scope", "type"})
        out = []
        for n in sorted(self._nets.values(), key=lambda n: n.created):
            if not matches(n, f, lambda n=n: bool(self._containers_of(n)) or self._has_users(n)):
                continue
            out.append(n.to_docker(self._containers_of(n)))
        return out

    def _has_users(self, n: NetworkRecord) -> bool:
        if n.builtin:
            return True
        for r in self.db.all("SELECT record FROM containers"):
            with contextlib.suppress(Exception):
                if n.name in Container.loads(r["record"]).networks:
                    return True
        return False

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidArgument("invalid JSON body: expected an object")
        name = body.get("Name") or ""
        if not name:
            raise InvalidArgument("network name is required")
        if not NAME_RE.match(name):
            raise InvalidArgument(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        driver = body.get("Driver") or "bridge"
        if name in PREDEFINED:
            raise Forbidden(f"{name} is a pre-defined network and cannot be created")
        if driver in ("host", "null"):
            raise Forbidden(f'only one instance of "{driver}" network is allowed')
        if driver != "bridge":
            raise NotFound(f'plugin "{driver}" not found')
        if body.get("EnableIPv6"):
            raise InvalidArgument("IPv6 networks are not supported")
        ipam = body.get("IPAM") or {}
        if (ipam.get("Driver") or "default") != "default":
            raise NotFound(f'plugin "{ipam["Driver"]}" not found')
        cfgs = [c for c in (ipam.get("Config") or []) if c]
        if any(":" in (c.get("Subnet") or "") for c in cfgs):
            raise InvalidArgument("IPv6 subnets are not supported")
        if len(cfgs) > 1:
            raise InvalidArgument("only one IPv4 address pool per network is supported")
        cfg = dict(cfgs[0]) if cfgs else {}
        if (cfg.get("Gateway") or cfg.get("IPRange")) and not cfg.get("Subnet"):
            raise InvalidArgument("a gateway or ip-range needs a subnet (--subnet)")
        opts = {str(k): str(v) for k, v in (body.get("Options") or {}).items()}
        async with self._mutate:
            if any(n.name == name for n in self._nets.values()):
                raise Conflict(f"network with name {name} already exists")
            nid = new_id()
            others = [ipaddress.IPv4Network(n.subnet) for n in self._bridges()]
            if cfg.get("Subnet"):
                pool: Pool | None = Pool.parse(cfg["Subnet"], cfg.get("Gateway"), cfg.get("IPRange"))
                if any(pool.subnet.overlaps(o) for o in others):
                    raise Forbidden("invalid pool request: Pool overlaps with other one on this address space")
                subnet = pool.subnet
            else:
                host = await self._run(self.driver.host_networks)
                subnet = pick_subnet(list(self.cfg.default_address_pools), others + host)
                pool = None
            gateway = cfg.get("Gateway") or str(next(subnet.hosts()))
            if pool is None:
                pool = Pool.parse(str(subnet), gateway, None)
            bridge = opts.get(OPT_BRIDGE_NAME) or f"br-{nid[:12]}"
            if len(bridge) > 15 or not re.fullmatch(r"[A-Za-z0-9_.-]+", bridge):
                raise InvalidArgument(f"invalid bridge name {bridge!r}")
            if any(n.bridge == bridge for n in self._bridges()):
                raise Conflict(f"bridge name {bridge} is used by another network")
            shown: dict[str, str] = {"Subnet": str(subnet), "Gateway": gateway}
            if cfg.get("IPRange"):
                shown["IPRange"] = str(pool.ip_range)
            rec = NetworkRecord(id=nid, name=name, driver="bridge", created=rfc3339(), subnet=str(subnet),
                                gateway=gateway, ip_range=str(pool.ip_range) if pool.ip_range else "",
                                bridge=bridge, internal=bool(body.get("Internal")),
                                attachable=bool(body.get("Attachable")),
                                labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
                                options=opts, ipam_options=dict(ipam.get("Options") or {}), ipam_config=[shown],
                                user_subnet=bool(cfg.get("Subnet")))
            self._store(rec)
            try:
                await self._run(self.driver.ensure_bridge, rec.bridge, f"{rec.gateway}/{rec.prefix}", rec.mtu)
                self._rebuild_firewall()
            except BaseException:
                self.db.execute("DELETE FROM networks WHERE id=?", (nid,))
                self._nets.pop(nid, None)
                with contextlib.suppress(Exception):
                    self._rebuild_firewall()
                with contextlib.suppress(Exception):
                    await self._run(self.driver.delete_bridge, rec.bridge)
                raise
        self._publish("create", rec)
        return {"Id": nid, "Warning": ""}

    def _add_ports(self, maps: list[PortMap]) -> None:
        """Publish ``maps``; if that fails, the table was changed behind our back (deleted by another daemon of the
        same name, flushed by a firewall reload): build it again from the records, then publish them."""
        assert self.fw is not None
        try:
            self.fw.add_ports(maps)
        except SystemError_ as e:
            log.warning("%s: rebuilding nftables table %s from the daemon's records", e, self.fw.table)
            self._rebuild_firewall()
            self.fw.add_ports(maps)

    def _rebuild_firewall(self) -> None:
        """The whole table from the networks and the published ports now (inline: ~1 ms, and ordered with the
        run path's port map changes)."""
        if self.fw is not None:
            self.fw.rebuild([n.rules() for n in self._bridges()], self._all_ports())

    async def remove(self, ref: str) -> None:
        async with self._mutate:
            n = self.find(ref)
            await self._remove_locked(n)

    async def _remove_locked(self, n: NetworkRecord) -> None:
        if n.builtin:
            raise Forbidden(f"{n.name} is a pre-defined network and cannot be removed")
        if self._containers_of(n):
            raise Forbidden(f"error while removing network: network {n.name} id {n.id} has active endpoints")
        with self.db.tx() as tx:
            tx.execute("DELETE FROM networks WHERE id=?", (n.id,))
            tx.execute("DELETE FROM ip_allocations WHERE network_id=?", (n.id,))
        self._nets.pop(n.id, None)
        self._rebuild_firewall()
        await self._run(self.driver.delete_bridge, n.bridge)
        self._publish("destroy", n)

    async def prune(self, filters: str | None = None) -> dict[str, Any]:
        f = flt.parse(filters, {"until", "label", "label!"})
        until = None
        if f.get("until"):
            from matou.types.image import parse_time

            v = f["until"][-1]
            try:
                until = float(v)
            except ValueError:
                until = parse_time(v)
        deleted: list[str] = []
        async with self._mutate:
            for n in list(self._nets.values()):
                if n.builtin or self._containers_of(n):
                    continue
                if f.get("label") and not flt.labels_match(n.labels, f["label"]):
                    continue
                if f.get("label!") and not flt.labels_match(n.labels, f["label!"], negate=True):
                    continue
                if until is not None:
                    from matou.types.image import parse_time

                    if parse_time(n.created) > until:
                        continue
                try:
                    await self._remove_locked(n)
                    deleted.append(n.name)
                except Forbidden:
                    continue
        return {"NetworksDeleted": deleted or None}

    # ------------------------------------------------------------------ API: connect / disconnect
    async def connect(self, ref: str, body: dict[str, Any]) -> None:
        if not self._ready.is_set():
            await self._ready.wait()
        cref = (body or {}).get("Container") or ""
        ep_cfg = (body or {}).get("EndpointConfig") or {}
        c = self.svcs.containers.get(cref)
        net = self.find(ref)
        nm = c.host_config.get("NetworkMode") or DEFAULT_BRIDGE
        if nm == "host" or net.driver == "host":
            raise Forbidden("container cannot be disconnected from host network or connected to host network")
        if nm == "none" or net.driver == "null":
            raise Forbidden("container cannot be connected to multiple networks with one of the networks in "
                            "private (none) mode")
        if nm.startswith("container:"):
            raise Forbidden("container sharing network namespace with another container or host cannot be "
                            "connected to any other network")
        if net.name in c.networks:
            raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
        self._check_endpoint(net, ep_cfg)
        ep = self._new_endpoint(c, net, ep_cfg, primary=False)
        try:
            sb = self._sandboxes.get(c.id)
            if sb is not None:
                used = {lk.ifname for lk in sb.links.values()}
                ifname = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
                spec = LinkSpec(veth_name(), ifname, net.bridge, f"{ep['IPAddress']}/{net.prefix}",
                                ep["MacAddress"], None, net.mtu)
                await self._run(self.driver.add_link, sb.path, spec)
                if self._sandboxes.get(c.id) is not sb:  # the container stopped meanwhile: its namespace is gone
                    raise Conflict(f"container {c.name} stopped while being connected to {net.name}")
                dnsn = [] if net.is_default else names.dns_names(c, ep.get("Aliases") or [])
                sb.links[net.id] = Link(net.id, spec.veth, ifname, ep["IPAddress"], net.prefix, ep["MacAddress"],
                                        ep["EndpointID"], dnsn)
                self._save_sandbox(sb)
                if not net.is_default and c.id not in self._dns:
                    sb.dns = True
                    sb.upstreams = names.upstreams(c, self.cfg)
                    self._save_sandbox(sb)
                    socks = await self._run(self.driver.open_dns, sb.path)
                    await self._start_dns(sb, socks)
                    names.point_resolv_conf_at_dns(c)
            c = self.svcs.containers.get(c.id)
            c.networks[net.name] = ep
            self._save_container(c)
        except BaseException:
            self.ipam.release(net.id, ep["IPAddress"])
            raise
        self._publish("connect", net, c.id)

    async def disconnect(self, ref: str, body: dict[str, Any]) -> None:
        if not self._ready.is_set():
            await self._ready.wait()
        cref = (body or {}).get("Container") or ""
        force = bool((body or {}).get("Force"))
        c = self.svcs.containers.get(cref)
        try:
            net: NetworkRecord | None = self.find(ref)
        except NotFound:
            if not force or ref not in c.networks:
                raise
            net = None
        nm = c.host_config.get("NetworkMode") or DEFAULT_BRIDGE
        if nm == "host" or (net is not None and net.driver == "host"):
            raise Forbidden("container cannot be disconnected from host network or connected to host network")
        name = net.name if net is not None else ref
        if name not in c.networks:
            raise Forbidden(f"container {c.id} is not connected to network {name}")
        if net is not None:
            sb = self._sandboxes.get(c.id)
            if sb is not None and net.id in sb.links:
                lk = sb.links.pop(net.id)
                await self._run(self.driver.delete_veth, lk.veth)
                self._save_sandbox(sb)
            ip = c.networks[name].get("IPAddress")
            if ip and self.ipam.owner(net.id, ip) == c.id:
                self.ipam.release(net.id, ip)
        c = self.svcs.containers.get(c.id)
        c.networks.pop(name, None)
        self._save_container(c)
        if net is not None:
            self._publish("disconnect", net, c.id)


