"""config.json -> the plan objects the cloned child executes. All validation happens here, in the parent."""

from __future__ import annotations

import json
import os
import resource

from matou.errors import InvalidArgument, NotFound, Unsupported
from matou.runtime.linux import rootfs
from matou.runtime.linux import syscalls as sc
from matou.runtime.linux.caps import CapSets
from matou.runtime.linux.init import ProcessPlan

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import Any

_RLIMITS: dict[str, int] = {
    name: getattr(resource, name) for name in (
        "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS", "RLIMIT_NPROC",
        "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE",
        "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
    ) if hasattr(resource, name)
}
_U64_MAX = 2**64 - 1


def load_config(bundle: str) -> dict[str, Any]:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            cfg = json.loads(f.read())
    except FileNotFoundError:
        raise NotFound(f"bundle {bundle!r} has no config.json")
    except ValueError as e:
        raise InvalidArgument(f"{path}: invalid JSON: {e}")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("process"), dict):
        raise InvalidArgument(f"{path}: a process section is required")
    return cfg


def rootfs_path(bundle: str, cfg: dict[str, Any]) -> str:
    root = (cfg.get("root") or {}).get("path") or "rootfs"
    path = os.path.realpath(os.path.join(bundle, root))
    if not os.path.isdir(path):
        raise NotFound(f"rootfs {path!r} does not exist")
    return path


def _rlim(v: Any) -> int:
    v = int(v)
    return resource.RLIM_INFINITY if v < 0 or v >= _U64_MAX else v


def process_plan(proc: dict[str, Any], seccomp: sc.SeccompProgram | None, available_caps: int,
                 last_cap: int) -> ProcessPlan:
    args = proc.get("args") or []
    if not args or not all(isinstance(a, str) for a in args):
        raise InvalidArgument("process.args must be a non-empty list of strings")
    env = [e for e in (proc.get("env") or []) if isinstance(e, str)]
    cwd = proc.get("cwd") or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"process.cwd must be an absolute path, not {cwd!r}")
    user = proc.get("user") or {}
    if "username" in user and "uid" not in user:
        raise Unsupported("process.user.username is Windows-only; give uid and gid")
    rlimits: list[tuple[int, int, int]] = []
    for r in proc.get("rlimits") or []:
        kind = _RLIMITS.get(r.get("type", ""))
        if kind is None:
            raise InvalidArgument(f"unknown rlimit {r.get('type')!r}")
        rlimits.append((kind, _rlim(r.get("soft", 0)), _rlim(r.get("hard", 0))))
    caps_spec = proc.get("capabilities")
    return ProcessPlan(
        args=list(args),
        env=env,
        cwd=cwd,
        uid=int(user.get("uid", 0)),
        gid=int(user.get("gid", 0)),
        additional_gids=[int(g) for g in user.get("additionalGids") or []],
        umask=int(user["umask"]) if user.get("umask") is not None else None,
        caps=CapSets(caps_spec, available_caps, last_cap) if caps_spec is not None else None,
        no_new_privs=bool(proc.get("noNewPrivileges")),
        rlimits=rlimits,
        oom_score_adj=int(proc["oomScoreAdj"]) if proc.get("oomScoreAdj") is not None else None,
        seccomp=seccomp,
    )


def mounts(cfg: dict[str, Any]) -> list[rootfs.Mount]:
    return [rootfs.parse_mount(m) for m in cfg.get("mounts") or []]


def devices(linux: dict[str, Any]) -> list[rootfs.Device]:
    """The OCI default devices, overridden by config entries for the same path."""
    extra = [rootfs.parse_device(d) for d in linux.get("devices") or []]
    given = {d.path for d in extra}
    return [d for d in rootfs.default_devices() if d.path not in given] + extra


def sysctls(linux: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (linux.get("sysctl") or {}).items():
        if not k or "/" in k or ".." in k:
            raise InvalidArgument(f"invalid sysctl name {k!r}")
        out[k] = str(v)
    return out


def root_propagation(linux: dict[str, Any]) -> int:
    name = linux.get("rootfsPropagation") or ""
    if not name:
        return 0
    flags = rootfs.PROPAGATION.get(name)
    if flags is None:
        raise InvalidArgument(f"invalid rootfsPropagation {name!r}")
    return flags
