"""A build's options: Docker's ``POST /build`` query parameters (and matou's few extras), parsed and checked."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matou.errors import InvalidArgument


@dataclass
class BuildOptions:
    tags: list[str] = field(default_factory=list)
    dockerfile: str = "Dockerfile"
    quiet: bool = False
    no_cache: bool = False
    cache_from: list[str] = field(default_factory=list)
    pull: bool = False
    rm: bool = True
    force_rm: bool = False
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    network_mode: str = "default"
    platform: str = ""
    extra_hosts: list[str] = field(default_factory=list)
    host_config: dict[str, Any] = field(default_factory=dict)  # resource limits for RUN containers
    explain_cache: bool = False  # matou: say why each step missed the cache
    secrets: dict[str, bytes] = field(default_factory=dict)  # matou: RUN --mount=type=secret sources
    auth: dict[str, Any] | None = None  # X-Registry-Config


def _json(value: str | None, what: str, default: Any) -> Any:
    if value is None or value == "":
        return default
    try:
        return json.loads(value)
    except ValueError:
        raise InvalidArgument(f"invalid {what} JSON: {value[:200]!r}") from None


def _int(value: str | None, what: str) -> int:
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(f"invalid value for {what}: {value!r}") from None


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.lower() not in ("0", "false", "no")


def from_query(q: Mapping[str, str], getall: Any = None, headers: Mapping[str, str] | None = None) -> BuildOptions:
    """Docker's query parameters (``t`` repeatable, JSON maps for buildargs/labels, JSON list for cachefrom)."""
    tags: Sequence[str] = getall("t", []) if getall else ([q["t"]] if q.get("t") else [])
    o = BuildOptions()
    o.tags = [t for t in tags if t]
    from matou.types import reference

    for t in o.tags:
        r = reference.parse(t)
        if r.digest:
            raise InvalidArgument(f"invalid tag {t!r}: a tag cannot contain a digest")
    o.dockerfile = q.get("dockerfile") or "Dockerfile"
    o.quiet = _bool(q.get("q"))
    o.no_cache = _bool(q.get("nocache"))
    cf = _json(q.get("cachefrom"), "cachefrom", [])
    if not isinstance(cf, list):
        raise InvalidArgument("cachefrom must be a JSON list")
    o.cache_from = [str(x) for x in cf]
    o.pull = _bool(q.get("pull"))
    o.rm = _bool(q.get("rm"), True)
    o.force_rm = _bool(q.get("forcerm"))
    args = _json(q.get("buildargs"), "buildargs", {})
    if not isinstance(args, dict):
        raise InvalidArgument("buildargs must be a JSON object")
    o.build_args = {str(k): (None if v is None else str(v)) for k, v in args.items()}
    labels = _json(q.get("labels"), "labels", {})
    if not isinstance(labels, dict):
        raise InvalidArgument("labels must be a JSON object")
    o.labels = {str(k): str(v) for k, v in labels.items()}
    o.target = q.get("target") or ""
    o.network_mode = q.get("networkmode") or "default"
    o.platform = q.get("platform") or ""
    hosts = q.get("extrahosts")
    o.extra_hosts = [h for h in (hosts.split(",") if hosts else []) if h]
    hc: dict[str, Any] = {}
    for key, name in (("memory", "Memory"), ("memswap", "MemorySwap"), ("cpushares", "CpuShares"),
                      ("cpuperiod", "CpuPeriod"), ("cpuquota", "CpuQuota"), ("shmsize", "ShmSize")):
        v = _int(q.get(key), key)
        if v:
            hc[name] = v
    for key, name in (("cpusetcpus", "CpusetCpus"), ("cpusetmems", "CpusetMems"), ("cgroupparent", "CgroupParent")):
        if q.get(key):
            hc[name] = q[key]
    ul = _json(q.get("ulimits"), "ulimits", None)
    if isinstance(ul, list) and ul:
        hc["Ulimits"] = ul
    o.host_config = hc
    o.explain_cache = _bool(q.get("explaincache"))
    if headers is not None:
        o.auth = _registry_config(headers.get("X-Registry-Config"))
        o.secrets = _secrets(headers.get("X-Matou-Build-Secrets"))
    if _bool(q.get("squash")):
        raise InvalidArgument("--squash is not supported by this builder")
    return o


def _b64json(value: str | None, what: str) -> Any:
    if not value:
        return None
    import base64

    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return json.loads(raw)
    except (ValueError, TypeError):
        raise InvalidArgument(f"invalid {what} header") from None


def _registry_config(value: str | None) -> dict[str, Any] | None:
    v = _b64json(value, "X-Registry-Config")
    return v if isinstance(v, dict) else None


def _secrets(value: str | None) -> dict[str, bytes]:
    import base64

    v = _b64json(value, "X-Matou-Build-Secrets")
    if not isinstance(v, dict):
        return {}
    out = {}
    for k, data in v.items():
        try:
            out[str(k)] = base64.b64decode(str(data))
        except ValueError:
            raise InvalidArgument(f"secret {k!r}: invalid base64") from None
    return out
