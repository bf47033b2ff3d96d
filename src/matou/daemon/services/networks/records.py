"""Network and sandbox records (persisted as JSON) and the Docker shapes rendered from them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from matou.errors import InvalidArgument
from matou.network.firewall import BridgeRules, PortMap
from matou.network.ipam import Pool
from matou.util import filters as flt

DEFAULT_BRIDGE = "bridge"
PREDEFINED = ("bridge", "host", "none")
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
OPT_MTU = "com.docker.network.driver.mtu"


@dataclass
class NetworkRecord:
    id: str
    name: str
    driver: str  # bridge | host | null
    created: str
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    bridge: str = ""  # the kernel link
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    ipam_options: dict[str, str] = field(default_factory=dict)
    ipam_config: list[dict[str, str]] = field(default_factory=list)  # as the user gave it (inspect shows it)
    user_subnet: bool = False

    @property
    def builtin(self) -> bool:
        return self.name in PREDEFINED

    @property
    def is_bridge(self) -> bool:
        return self.driver == "bridge"

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_BRIDGE

    @property
    def pool(self) -> Pool:
        return Pool.parse(self.subnet, self.gateway or None, self.ip_range or None)

    @property
    def prefix(self) -> int:
        return int(self.subnet.partition("/")[2] or 32)

    @property
    def mtu(self) -> int:
        try:
            return int(self.options.get(OPT_MTU) or 0)
        except ValueError:
            return 0

    def rules(self) -> BridgeRules:
        masq = (self.options.get(OPT_MASQUERADE) or "true").lower() not in ("false", "0")
        return BridgeRules(self.bridge, self.subnet, internal=self.internal, masquerade=masq)

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str) -> NetworkRecord:
        d = json.loads(raw)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_docker(self, containers: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.is_bridge:
            cfg = [dict(c) for c in self.ipam_config] or [{"Subnet": self.subnet, "Gateway": self.gateway}]
            for c in cfg:
                c.setdefault("Gateway", self.gateway)
        else:
            cfg = []
        return {
            "Name": self.name, "Id": self.id, "Created": self.created, "Scope": "local", "Driver": self.driver,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": self.ipam_options or (None if self.builtin else {}),
                     "Config": cfg},
            "Internal": self.internal, "Attachable": self.attachable, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": containers if containers is not None else {},
            "Options": dict(self.options), "Labels": dict(self.labels),
        }


@dataclass
class Link:
    """One interface of a running container, on one network."""

    network_id: str
    veth: str
    ifname: str
    ip: str
    prefix: int
    mac: str
    endpoint_id: str
    names: list[str] = field(default_factory=list)  # what the embedded DNS answers for (user networks)


@dataclass
class SandboxRecord:
    """A running container's network namespace, its links and published ports (table ``sandboxes``)."""

    container_id: str
    name: str
    path: str
    sandbox_id: str
    links: dict[str, Link] = field(default_factory=dict)  # network id -> link
    ports: list[dict[str, Any]] = field(default_factory=list)  # PortMap fields
    dns: bool = False
    upstreams: list[str] = field(default_factory=list)

    def port_maps(self) -> list[PortMap]:
        return [PortMap(**p) for p in self.ports]

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str) -> SandboxRecord:
        d = json.loads(raw)
        d["links"] = {k: Link(**v) for k, v in (d.get("links") or {}).items()}
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def empty_endpoint() -> dict[str, Any]:
    return {"IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "", "DriverOpts": None,
            "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": None}


def portdict(m: PortMap) -> dict[str, Any]:
    return {"proto": m.proto, "host_ip": m.host_ip, "host_port": m.host_port, "ip": m.ip, "port": m.port}


def matches(n: NetworkRecord, f: dict[str, list[str]], used: Callable[[], bool]) -> bool:
    if f.get("driver") and n.driver not in f["driver"]:
        return False
    if f.get("id") and not any(n.id.startswith(v) for v in f["id"]):
        return False
    if f.get("name") and not any(v in n.name for v in f["name"]):
        return False
    if f.get("label") and not flt.labels_match(n.labels, f["label"]):
        return False
    if f.get("scope") and "local" not in f["scope"]:
        return False
    if f.get("type"):
        kinds = set(f["type"])
        if not kinds <= {"custom", "builtin"}:
            raise InvalidArgument(f"invalid filter: 'type'='{','.join(f['type'])}'")
        if ("builtin" if n.builtin else "custom") not in kinds:
            return False
    if f.get("dangling"):
        want = flt.bool_value(f["dangling"], "dangling")
        if want == (n.builtin or used()):
            return False
    return True
