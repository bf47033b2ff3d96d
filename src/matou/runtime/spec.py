"""Docker's default OCI config.json (moby's oci/defaults.go and daemon/oci_linux.go), as a plain dict.

The engine fills ``SpecOptions`` from a container's HostConfig and writes ``default_spec(opts)`` to the bundle.
Everything Docker turns on by default is here: the namespaces, the 14 capabilities, the mounts of /proc, /dev,
/dev/pts, /dev/shm, /dev/mqueue, /sys and /sys/fs/cgroup, the masked and read-only paths, the device cgroup rules,
the seccomp profile (seccomp_default.json, resolved against the process's capabilities and this machine), and the
``privileged`` variant. Resource limits are never set above the caller's own hard limits (nofile here: 20000),
because the kernel would refuse them.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import stat
from dataclasses import dataclass, field

from matou.errors import InvalidArgument
from matou.runtime.linux.caps import CAP_NAMES, current_bounding, names, normalize

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAMESPACES: tuple[str, ...] = ("mount", "network", "uts", "pid", "ipc", "cgroup")

# (type, major, minor, access): Docker's allow-list after "deny all"
DEVICE_RULES: tuple[tuple[str, int | None, int | None, str], ...] = (
    ("c", None, None, "m"), ("b", None, None, "m"),
    ("c", 1, 3, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 7, "rwm"), ("c", 5, 0, "rwm"), ("c", 1, 5, "rwm"),
    ("c", 1, 9, "rwm"), ("c", 136, None, "rwm"), ("c", 5, 2, "rwm"), ("c", 10, 200, "rwm"), ("c", 5, 1, "rwm"),
)
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "s390x": "s390x", "riscv64": "riscv64", "ppc64le": "ppc64le",
            "i686": "x86", "armv7l": "arm"}
_HOST_DEV_SKIP = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


@dataclass
class Bind:
    """A bind mount (-v /src:/dst:ro, --mount type=bind); propagation as Docker names it (rprivate default)."""

    source: str
    destination: str
    readonly: bool = False
    propagation: str = "rprivate"
    options: list[str] = field(default_factory=list)


@dataclass
class Resources:
    memory: int | None = None  # bytes
    memory_swap: int | None = None  # memory + swap, bytes; -1 unlimited (Docker's --memory-swap)
    memory_reservation: int | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None  # microseconds per period
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        mem: dict[str, Any] = {}
        if self.memory:
            mem["limit"] = self.memory
            # Docker: --memory alone means swap may equal memory again (memory-swap = 2 x memory)
            mem["swap"] = self.memory_swap if self.memory_swap else self.memory * 2
        elif self.memory_swap:
            mem["swap"] = self.memory_swap
        if self.memory_reservation:
            mem["reservation"] = self.memory_reservation
        if mem:
            out["memory"] = mem
        cpu: dict[str, Any] = {}
        if self.cpu_shares:
            cpu["shares"] = self.cpu_shares
        if self.cpu_quota:
            cpu["quota"] = self.cpu_quota
        if self.cpu_period:
            cpu["period"] = self.cpu_period
        if self.cpuset_cpus:
            cpu["cpus"] = self.cpuset_cpus
        if self.cpuset_mems:
            cpu["mems"] = self.cpuset_mems
        if cpu:
            out["cpu"] = cpu
        if self.pids_limit is not None and self.pids_limit != 0:
            out["pids"] = {"limit": self.pids_limit}
        return out


@dataclass
class SpecOptions:
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    rootfs: str = "rootfs"
    readonly_rootfs: bool = False
    hostname: str | None = None
    domainname: str | None = None
    terminal: bool = False
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    umask: int | None = None
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    no_new_privileges: bool = False
    seccomp: str | dict[str, Any] | None = "default"  # "default", "unconfined", or an OCI seccomp section
    sysctls: dict[str, str] = field(default_factory=dict)
    tmpfs: dict[str, str] = field(default_factory=dict)  # destination -> mount options ("size=64m,mode=1777")
    binds: list[Bind] = field(default_factory=list)
    extra_mounts: list[dict[str, Any]] = field(default_factory=list)  # OCI mounts as they are (/etc/hosts ...)
    shm_size: int = 64 * 1024 * 1024
    namespace_paths: dict[str, str] = field(default_factory=dict)  # e.g. {"network": "/run/netns/x"}
    host_namespaces: list[str] = field(default_factory=list)  # e.g. ["network"] for --network host
    oom_score_adj: int | None = None
    resources: Resources = field(default_factory=Resources)
    ulimits: list[tuple[str, int, int]] = field(default_factory=list)  # (name as "nofile", soft, hard)
    devices: list[dict[str, Any]] = field(default_factory=list)  # OCI linux.devices entries (--device)
    device_cgroup_rules: list[dict[str, Any]] = field(default_factory=list)
    cgroups_path: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    masked_paths: list[str] | None = None  # None: Docker's
    readonly_paths: list[str] | None = None


def default_spec(opts: SpecOptions | None = None, /, **kwargs: Any) -> dict[str, Any]:
    """An OCI runtime config with Docker's defaults; pass SpecOptions or its fields as keywords."""
    o = opts or SpecOptions(**kwargs)
    if not o.args:
        raise InvalidArgument("no command specified")
    caps = _capabilities(o)
    env = list(o.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_ENV_PATH)
    if o.terminal and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    process: dict[str, Any] = {
        "terminal": o.terminal,
        "user": {"uid": o.uid, "gid": o.gid, **({"additionalGids": list(o.additional_gids)}
                                                 if o.additional_gids else {}),
                 **({"umask": o.umask} if o.umask is not None else {})},
        "args": list(o.args),
        "env": env,
        "cwd": o.cwd or "/",
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "rlimits": _rlimits(o.ulimits),
        "noNewPrivileges": o.no_new_privileges,
    }
    if o.oom_score_adj is not None:
        process["oomScoreAdj"] = o.oom_score_adj
    linux: dict[str, Any] = {
        "namespaces": _namespaces(o),
        "resources": {"devices": _device_rules(o), **o.resources.to_oci()},
        "cgroupsPath": o.cgroups_path or "",
        "sysctl": dict(o.sysctls),
        "devices": _host_devices() if o.privileged else [],
    }
    linux["devices"] += [dict(d) for d in o.devices]
    if not o.cgroups_path:
        del linux["cgroupsPath"]
    if not o.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS if o.masked_paths is None else o.masked_paths)
        linux["readonlyPaths"] = list(READONLY_PATHS if o.readonly_paths is None else o.readonly_paths)
        seccomp = _seccomp(o.seccomp, caps)
        if seccomp is not None:
            linux["seccomp"] = seccomp
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": o.rootfs, "readonly": o.readonly_rootfs},
        "hostname": o.hostname or "",
        "mounts": _mounts(o),
        "linux": linux,
    }
    if o.domainname:
        spec["domainname"] = o.domainname
    if o.annotations:
        spec["annotations"] = dict(o.annotations)
    return spec


def launch_hint(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``spec`` a runtime's launch_hinted() clones with, so the caller (the monitor) need not read
    config.json: the init reads it, and fails if it disagrees with these."""
    linux = spec.get("linux") or {}
    return {"root": spec.get("root"), "namespaces": linux.get("namespaces"), "cgroupsPath": linux.get("cgroupsPath"),
            "resources": linux.get("resources"), "annotations": spec.get("annotations")}


def _capabilities(o: SpecOptions) -> list[str]:
    if o.privileged:
        avail = current_bounding()
        return names(avail)
    want = list(DEFAULT_CAPS)
    add = [normalize(c) for c in o.cap_add]
    drop = [normalize(c) for c in o.cap_drop]
    for c in add + drop:
        if c != "CAP_ALL" and c not in CAP_NAMES:
            raise InvalidArgument(f"unknown capability: {c!r}")
    if "CAP_ALL" in add:
        want = list(CAP_NAMES)
    if "CAP_ALL" in drop:
        want = []
    for c in add:
        if c != "CAP_ALL" and c not in want:
            want.append(c)
    return [c for c in want if c not in drop]


def _namespaces(o: SpecOptions) -> list[dict[str, str]]:
    out = []
    for kind in NAMESPACES:
        if kind in o.host_namespaces:
            continue
        entry = {"type": kind}
        if o.namespace_paths.get(kind):
            entry["path"] = o.namespace_paths[kind]
        out.append(entry)
    return out


def _rlimits(ulimits: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """Docker's nofile default (1048576) clipped to our own hard limit; explicit ulimits as given."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = 1048576 if hard == resource.RLIM_INFINITY else min(hard, 1048576)
    out: dict[str, dict[str, Any]] = {"RLIMIT_NOFILE": {"type": "RLIMIT_NOFILE", "hard": cap, "soft": cap}}
    for name, soft, hard_ in ulimits:
        key = "RLIMIT_" + name.upper()
        if not hasattr(resource, key):
            raise InvalidArgument(f"invalid ulimit type: {name}")
        out[key] = {"type": key, "hard": int(hard_), "soft": int(soft)}
    return list(out.values())


def _mounts(o: SpecOptions) -> list[dict[str, Any]]:
    sys_opts = ["nosuid", "noexec", "nodev"] + ([] if o.privileged else ["ro"])
    cg_opts = ([] if o.privileged else ["ro"]) + ["nosuid", "noexec", "nodev"]
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": cg_opts},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={o.shm_size}"]},
    ]
    if "ipc" in o.host_namespaces:
        mounts = [m for m in mounts if m["destination"] not in ("/dev/mqueue", "/dev/shm")]
    taken = {b.destination for b in o.binds} | set(o.tmpfs) | {m.get("destination") for m in o.extra_mounts}
    mounts = [m for m in mounts if m["destination"] not in taken]
    for dest, options in o.tmpfs.items():
        opts = [x for x in options.split(",") if x] if options else []
        base = ["nosuid", "nodev", "noexec"]
        mounts.append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                       "options": base + [x for x in opts if x not in base]})
    for m in o.extra_mounts:
        mounts.append(dict(m))
    for b in o.binds:
        if not b.source.startswith("/") or not b.destination.startswith("/"):
            raise InvalidArgument(f"bind mount paths must be absolute: {b.source}:{b.destination}")
        opts = ["rbind", b.propagation or "rprivate", "ro" if b.readonly else "rw"] + list(b.options)
        mounts.append({"destination": b.destination, "type": "bind", "source": b.source, "options": opts})
    return mounts


def _device_rules(o: SpecOptions) -> list[dict[str, Any]]:
    if o.privileged:
        return [{"allow": True, "access": "rwm"}]
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for kind, major, minor, access in DEVICE_RULES:
        r: dict[str, Any] = {"allow": True, "type": kind, "access": access}
        if major is not None:
            r["major"] = major
        if minor is not None:
            r["minor"] = minor
        rules.append(r)
    for d in o.devices:
        rules.append({"allow": True, "type": d.get("type", "c"), "major": d.get("major"), "minor": d.get("minor"),
                      "access": "rwm"})
    rules += [dict(r) for r in o.device_cgroup_rules]
    return rules


def _host_devices() -> list[dict[str, Any]]:
    """Every character and block device of the host, for privileged containers (runc's HostDevices)."""
    out: list[dict[str, Any]] = []
    for dirpath, dirs, files in os.walk("/dev"):
        dirs[:] = [d for d in dirs if d not in _HOST_DEV_SKIP]
        for f in files:
            if dirpath == "/dev" and f == "console":
                continue
            path = os.path.join(dirpath, f)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode):
                kind = "c"
            elif stat.S_ISBLK(st.st_mode):
                kind = "b"
            else:
                continue
            out.append({"path": path, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                        "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return out


@functools.lru_cache(maxsize=1)
def _profile() -> dict[str, Any]:
    with open(os.path.join(os.path.dirname(__file__), "seccomp_default.json"), "rb") as f:
        return json.loads(f.read())


def _kernel_at_least(want: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        out = []
        for p in v.split("-")[0].split(".")[:2]:
            digits = "".join(ch for ch in p if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    return parts(os.uname().release) >= parts(want)


def default_seccomp(caps: list[str]) -> dict[str, Any]:
    """Docker's default profile as an OCI seccomp section for a process whose bounding set is ``caps``."""
    prof = _profile()
    machine = os.uname().machine  # platform.machine(), without importing platform (the spawner loads this)
    arch = _GO_ARCH.get(machine, machine)
    have = set(caps)
    syscalls: list[dict[str, Any]] = []
    for rule in prof["syscalls"]:
        when = rule.get("when") or {}
        if any(c not in have for c in when.get("caps", ())):
            continue
        if any(c in have for c in when.get("notCaps", ())):
            continue
        if when.get("arches") and arch not in when["arches"]:
            continue
        if arch in when.get("notArches", ()):
            continue
        if when.get("minKernel") and not _kernel_at_least(when["minKernel"]):
            continue
        entry: dict[str, Any] = {"names": list(rule["names"]), "action": rule["action"]}
        if rule.get("args"):
            entry["args"] = [dict(a) for a in rule["args"]]
        if "errnoRet" in rule:
            entry["errnoRet"] = rule["errnoRet"]
        syscalls.append(entry)
    return {
        "defaultAction": prof["defaultAction"],
        "defaultErrnoRet": prof["defaultErrnoRet"],
        "architectures": list(prof["archMap"].get(arch, [])),
        "syscalls": syscalls,
    }


def _seccomp(choice: str | dict[str, Any] | None, caps: list[str]) -> dict[str, Any] | None:
    if choice is None or choice == "unconfined":
        return None
    if choice == "default":
        return default_seccomp(caps)
    if isinstance(choice, dict):
        return choice
    raise InvalidArgument(f"invalid seccomp profile {choice!r}")
