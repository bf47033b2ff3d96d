"""Dockerfile-style config changes for ``import --change`` and ``commit --change``.

Docker accepts CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME and WORKDIR here.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from matou.errors import InvalidArgument

ALLOWED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")


def _json_or_shell(rest: str) -> list[str]:
    s = rest.strip()
    if s.startswith("["):
        try:
            v = json.loads(s)
        except ValueError:
            v = None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
    return ["/bin/sh", "-c", s]


def _pairs(rest: str) -> dict[str, str]:
    s = rest.strip()
    words = shlex.split(s)
    if words and "=" not in words[0]:
        # legacy "ENV key value with spaces"
        key, _, value = s.partition(" ")
        return {key: value.strip()}
    out = {}
    for w in words:
        k, eq, v = w.partition("=")
        if not eq:
            raise InvalidArgument(f"invalid change: {w!r} is not key=value")
        out[k] = v
    return out


def apply_change(config: dict[str, Any], line: str) -> None:
    """Apply one instruction to an image's ``config`` section (mutates it)."""
    line = line.strip()
    if not line:
        return
    instr, _, rest = line.partition(" ")
    op = instr.upper()
    if op not in ALLOWED:
        raise InvalidArgument(f"{instr} is not a valid change command")
    if op == "CMD":
        config["Cmd"] = _json_or_shell(rest)
    elif op == "ENTRYPOINT":
        config["Entrypoint"] = _json_or_shell(rest)
    elif op == "ENV":
        env = list(config.get("Env") or [])
        for k, v in _pairs(rest).items():
            env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
        config["Env"] = env
    elif op == "LABEL":
        labels = dict(config.get("Labels") or {})
        labels.update(_pairs(rest))
        config["Labels"] = labels
    elif op == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        for p in rest.split():
            ports[p if "/" in p else p + "/tcp"] = {}
        config["ExposedPorts"] = ports
    elif op == "VOLUME":
        vols = dict(config.get("Volumes") or {})
        s = rest.strip()
        items = json.loads(s) if s.startswith("[") else s.split()
        for v in items:
            vols[v] = {}
        config["Volumes"] = vols
    elif op == "ONBUILD":
        config["OnBuild"] = list(config.get("OnBuild") or []) + [rest.strip()]
    elif op == "STOPSIGNAL":
        config["StopSignal"] = rest.strip()
    elif op == "USER":
        config["User"] = rest.strip()
    elif op == "WORKDIR":
        config["WorkingDir"] = rest.strip()


def apply_changes(config: dict[str, Any], lines: list[str]) -> dict[str, Any]:
    for line in lines:
        apply_change(config, line)
    return config
