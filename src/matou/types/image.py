"""Image config helpers: chain ids, Docker's config shapes, timestamps."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI ChainID for each prefix of the layer list."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def rfc3339(ts: float | None = None) -> str:
    """Docker's time format: RFC 3339 with nanoseconds, UTC, 'Z'."""
    if ts is None:
        ts = time.time()
    dt = datetime.fromtimestamp(ts, tz=UTC)
    frac = f"{int((ts % 1) * 1e9):09d}"
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"


def parse_time(value: str | None) -> float:
    """RFC 3339 (any precision) -> unix seconds; 0 for empty or Go's zero time."""
    if not value or value.startswith("0001-01-01"):
        return 0.0
    v = value.strip()
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    # trim fractional seconds to microseconds for fromisoformat
    if "." in v:
        head, rest = v.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, tz = rest[:i], rest[i:]
        v = f"{head}.{(frac + '000000')[:6]}{tz}"
    try:
        return datetime.fromisoformat(v).timestamp()
    except ValueError:
        return 0.0


ZERO_TIME = "0001-01-01T00:00:00Z"

# Keys of the OCI/Docker image config "config" section, in Docker's spelling.
CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal",
               "ArgsEscaped", "Healthcheck", "OnBuild", "Shell", "Memory", "MemorySwap", "CpuShares")


def docker_container_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """An image's config section in the shape Docker's API shows (all keys present, nulls where unset)."""
    cfg = cfg or {}
    return {
        "Hostname": "",
        "Domainname": "",
        "User": cfg.get("User", ""),
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "ExposedPorts": cfg.get("ExposedPorts"),
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": cfg.get("Env"),
        "Cmd": cfg.get("Cmd"),
        "Healthcheck": cfg.get("Healthcheck"),
        "ArgsEscaped": cfg.get("ArgsEscaped"),
        "Image": "",
        "Volumes": cfg.get("Volumes"),
        "WorkingDir": cfg.get("WorkingDir", ""),
        "Entrypoint": cfg.get("Entrypoint"),
        "OnBuild": cfg.get("OnBuild"),
        "Labels": cfg.get("Labels"),
        "StopSignal": cfg.get("StopSignal"),
        "Shell": cfg.get("Shell"),
    }
