"""A container's OCI bundle: config.json from its record, mounts (binds, volumes, tmpfs), /etc files.

Everything here is plain file work, done right before the monitor is asked to create the container.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from typing import Any

from matou.daemon.services.containers.records import Container
from matou.daemon.services.volumes import VolumesService
from matou.errors import InvalidArgument
from matou.runtime.spec import Bind, Resources, SpecOptions, default_spec
from matou.runtime.users import resolve_user
from matou.util.fs import atomic_write, resolve_in_root

TINI_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/tini", "/sbin/tini")
INIT_PATH = "/sbin/docker-init"
ULIMIT_NAMES = {"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
                "rtprio", "rttime", "sigpending", "stack", "as"}


@dataclass
class MountPlan:
    """One mount of a container, both as Docker shows it and as the runtime needs it."""

    type: str  # bind | volume | tmpfs
    source: str
    destination: str
    rw: bool
    name: str = ""
    mode: str = ""
    propagation: str = "rprivate"
    tmpfs_options: str = ""
    anonymous: bool = False

    def to_docker(self) -> dict[str, Any]:
        d: dict[str, Any] = {"Type": self.type, "Source": self.source, "Destination": self.destination,
                             "Mode": self.mode, "RW": self.rw, "Propagation": self.propagation}
        if self.type == "volume":
            d["Name"] = self.name
            d["Driver"] = "local"
            d["Propagation"] = ""
        if self.type == "tmpfs":
            d["Source"] = ""
            d["Propagation"] = ""
        return d


def parse_mounts(c: Container) -> list[MountPlan]:
    """-v (Binds), --mount (Mounts), --tmpfs (Tmpfs) and the image's VOLUMEs (anonymous volumes)."""
    hc = c.host_config
    plans: list[MountPlan] = []
    for b in hc.get("Binds") or []:
        parts = b.split(":")
        if len(parts) == 1:
            src, dst, opts = "", parts[0], ""
        elif len(parts) == 2:
            src, dst, opts = parts[0], parts[1], ""
            if not dst.startswith("/"):  # "/dst:ro"
                src, dst, opts = "", parts[0], parts[1]
        elif len(parts) == 3:
            src, dst, opts = parts
        else:
            raise InvalidArgument(f"invalid volume specification: '{b}'")
        if not dst.startswith("/"):
            raise InvalidArgument(f"invalid volume specification: '{b}': invalid mount config for type \"bind\": "
                                  f"invalid mount path: '{dst}' mount path must be absolute")
        if dst == "/":
            raise InvalidArgument(f"invalid volume specification: '{b}': invalid mount config for type \"bind\": "
                                  "invalid specification: destination can't be '/'")
        optset = [o for o in opts.split(",") if o]
        for o in optset:
            if o not in ("ro", "rw", "z", "Z", "nocopy", "shared", "rshared", "slave", "rslave", "private",
                         "rprivate", "consistent", "cached", "delegated"):
                raise InvalidArgument(f"invalid mode: {o}")
        rw = "ro" not in optset
        prop = next((o for o in optset if o.endswith(("shared", "slave", "private"))), "rprivate")
        if src.startswith("/"):
            plans.append(MountPlan("bind", os.path.normpath(src), os.path.normpath(dst), rw, mode=opts,
                                   propagation=prop))
        else:
            plans.append(MountPlan("volume", src, os.path.normpath(dst), rw, name=src, mode=opts or "z",
                                   anonymous=not src))
    for m in hc.get("Mounts") or []:
        t = (m.get("Type") or "volume").lower()
        dst = m.get("Target") or m.get("Destination") or ""
        if not dst.startswith("/"):
            raise InvalidArgument(f"invalid mount config for type \"{t}\": invalid mount path: '{dst}' mount path must be absolute")
        ro = bool(m.get("ReadOnly"))
        if t == "bind":
            src = m.get("Source") or ""
            if not src.startswith("/"):
                raise InvalidArgument(f"invalid mount config for type \"bind\": invalid mount path: '{src}' mount path must be absolute")
            if not os.path.exists(src) and not (m.get("BindOptions") or {}).get("CreateMountpoint"):
                raise InvalidArgument(f"invalid mount config for type \"bind\": bind source path does not exist: {src}")
            prop = (m.get("BindOptions") or {}).get("Propagation") or "rprivate"
            plans.append(MountPlan("bind", src, os.path.normpath(dst), not ro, propagation=prop))
        elif t == "volume":
            src = m.get("Source") or ""
            plans.append(MountPlan("volume", src, os.path.normpath(dst), not ro, name=src, mode="z",
                                   anonymous=not src))
        elif t == "tmpfs":
            to = m.get("TmpfsOptions") or {}
            opts = []
            if to.get("SizeBytes"):
                opts.append(f"size={int(to['SizeBytes'])}")
            if to.get("Mode"):
                opts.append(f"mode={int(to['Mode']):o}")
            plans.append(MountPlan("tmpfs", "tmpfs", os.path.normpath(dst), not ro, tmpfs_options=",".join(opts)))
        else:
            raise InvalidArgument(f"mount type {t!r} is not supported (bind, volume, tmpfs)")
    for dst, opts in (hc.get("Tmpfs") or {}).items():
        plans.append(MountPlan("tmpfs", "tmpfs", os.path.normpath(dst), "ro" not in opts.split(","),
                               tmpfs_options=opts))
    taken = {p.destination for p in plans}
    for dst in (c.config.get("Volumes") or {}):
        d = os.path.normpath(dst)
        if d not in taken:
            plans.append(MountPlan("volume", "", d, True, mode="", anonymous=True))
            taken.add(d)
    dsts = [p.destination for p in plans]
    dup = next((d for d in dsts if dsts.count(d) > 1), None)
    if dup:
        raise InvalidArgument(f"Duplicate mount point: {dup}")
    return plans


def resolve_volumes(plans: list[MountPlan], volumes: VolumesService) -> None:
    """Create named/anonymous volumes and fill in their sources (at create time, like Docker)."""
    for p in plans:
        if p.type != "volume":
            continue
        rec = volumes.create(p.name or None, anonymous=p.anonymous)
        p.name = rec["Name"]
        p.source = rec["Mountpoint"]


def seed_volumes(plans: list[MountPlan], rootfs: str, volumes: VolumesService) -> None:
    """Docker copies the image's content at the mount point into an empty volume on first use."""
    for p in plans:
        if p.type != "volume" or "nocopy" in p.mode.split(","):
            continue
        if not volumes.mark_seeded(p.name):
            continue
        src = resolve_in_root(rootfs, p.destination)
        if not os.path.isdir(src) or os.listdir(p.source):
            continue
        _copy_tree(src, p.source)


def _copy_tree(src: str, dst: str) -> None:
    st = os.lstat(src)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.lchown(dst, st.st_uid, st.st_gid)
    for entry in os.scandir(src):
        s, d = entry.path, os.path.join(dst, entry.name)
        est = entry.stat(follow_symlinks=False)
        if entry.is_symlink():
            os.symlink(os.readlink(s), d)
        elif entry.is_dir(follow_symlinks=False):
            os.mkdir(d)
            _copy_tree(s, d)
            continue
        elif entry.is_file(follow_symlinks=False):
            shutil.copyfile(s, d, follow_symlinks=False)
            os.chmod(d, stat.S_IMODE(est.st_mode))
        else:
            continue
        os.lchown(d, est.st_uid, est.st_gid)


def _parse_security_opts(opts: list[str]) -> tuple[bool, str | dict[str, Any] | None]:
    no_new_privs = False
    seccomp: str | dict[str, Any] | None = "default"
    for o in opts:
        k, sep, v = o.partition("=") if "=" in o else o.partition(":")
        if k == "no-new-privileges":
            no_new_privs = v.lower() in ("", "true", "1")
        elif k == "seccomp":
            if v == "unconfined":
                seccomp = "unconfined"
            else:
                try:
                    with open(v) as f:
                        seccomp = _docker_seccomp_to_oci(json.load(f))
                except (OSError, ValueError) as e:
                    raise InvalidArgument(f"opening seccomp profile ({v}) failed: {e}") from None
        elif k in ("label", "apparmor"):
            continue
        else:
            raise InvalidArgument(f"invalid --security-opt: {o!r}")
    return no_new_privs, seccomp


def _docker_seccomp_to_oci(p: dict[str, Any]) -> dict[str, Any]:
    """Docker profile JSON (names lists, archMap) -> OCI linux.seccomp section (subset)."""
    if "syscalls" in p and p.get("defaultAction", "").startswith("SCMP_ACT_") and "archMap" not in p:
        return p
    out: dict[str, Any] = {"defaultAction": p.get("defaultAction", "SCMP_ACT_ERRNO"),
                           "architectures": [], "syscalls": []}
    if "defaultErrnoRet" in p:
        out["defaultErrnoRet"] = p["defaultErrnoRet"]
    for am in p.get("archMap") or []:
        out["architectures"] += [am["architecture"]] + list(am.get("subArchitectures") or [])
    for sc in p.get("syscalls") or []:
        names = sc.get("names") or ([sc["name"]] if sc.get("name") else [])
        entry = {"names": names, "action": sc.get("action", "SCMP_ACT_ALLOW")}
        if sc.get("args"):
            entry["args"] = sc["args"]
        if "errnoRet" in sc:
            entry["errnoRet"] = sc["errnoRet"]
        out["syscalls"].append(entry)
    if not out["architectures"]:
        del out["architectures"]
    return out


def hosts_file(c: Container, addresses: list[str], extra: list[str]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet",
             "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"]
    for e in extra:
        host, _, ip = e.partition(":") if e.count(":") == 1 else e.rpartition(":")
        if not host or not ip:
            raise InvalidArgument(f"invalid argument \"{e}\" for \"--add-host\" flag: bad format for add-host")
        if ip == "host-gateway":  # the gateway of the container's network: the host, as the container sees it
            ip = next((ep["Gateway"] for ep in c.networks.values() if ep.get("Gateway")), "") or "172.17.0.1"
        lines.append(f"{ip}\t{host}")
    hn = c.config.get("Hostname") or c.id[:12]
    for a in addresses:
        lines.append(f"{a}\t{hn}")
    return "\n".join(lines) + "\n"


def resolv_conf(dns: list[str], search: list[str], options: list[str], embedded: str | None = None) -> str:
    if embedded:
        ns = [embedded]
    elif dns:
        ns = list(dns)
    else:
        ns = []
        host_search: list[str] = []
        host_opts: list[str] = []
        with contextlib.suppress(OSError):
            with open("/etc/resolv.conf") as f:
                for line in f:
                    w = line.split()
                    if not w:
                        continue
                    if w[0] == "nameserver" and len(w) > 1 and not re.match(r"^(127\.|::1$)", w[1]):
                        ns.append(w[1])
                    elif w[0] == "search":
                        host_search = w[1:]
                    elif w[0] == "options":
                        host_opts = w[1:]
        if not ns:
            ns = ["8.8.8.8", "8.8.4.4"]
        search = search or host_search
        options = options or host_opts
    out = [f"nameserver {n}" for n in ns]
    if search:
        out.append("search " + " ".join(search))
    if options:
        out.append("options " + " ".join(options))
    return "\n".join(out) + "\n"


def parse_cpus(hc: dict[str, Any]) -> tuple[int | None, int | None]:
    if hc.get("NanoCpus"):
        period = 100000
        return int(hc["NanoCpus"]) * period // 1_000_000_000, period
    return (int(hc["CpuQuota"]) if hc.get("CpuQuota") else None,
            int(hc["CpuPeriod"]) if hc.get("CpuPeriod") else None)


def write_bundle(c: Container, bundle: str, rootfs: str, plans: list[MountPlan], state_dir: str,
                 netns: str | None, ipc_path: str | None = None, pid_path: str | None = None,
                 uts_host: bool = False) -> dict[str, Any]:
    """Write config.json for the container; ``rootfs`` is mounted already. Returns the spec."""
    hc = c.host_config
    cfg = c.config
    user = resolve_user(rootfs, cfg.get("User") or "")
    extra_gids = list(user.additional_gids)
    for g in hc.get("GroupAdd") or []:
        if str(g).isdigit():
            extra_gids.append(int(g))
        else:
            from matou.runtime.users import resolve_user as _r

            extra_gids.append(_r(rootfs, f"0:{g}").gid)
    env = list(cfg.get("Env") or [])
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home or '/'}")
    if not any(e.startswith("HOSTNAME=") for e in env):
        env.insert(0, f"HOSTNAME={cfg.get('Hostname')}")
    args = [c.path] + list(c.args)
    extra_mounts: list[dict[str, Any]] = []
    if hc.get("Init"):
        tini = next((p for p in TINI_CANDIDATES if os.path.exists(p)), None)
        if tini is None:
            raise InvalidArgument("--init needs tini: apt-get install tini")
        extra_mounts.append({"destination": INIT_PATH, "type": "bind", "source": tini,
                             "options": ["rbind", "ro", "rprivate"]})
        args = [INIT_PATH, "--"] + args
    binds = []
    tmpfs = {}
    for p in plans:
        if p.type == "tmpfs":
            tmpfs[p.destination] = p.tmpfs_options or "rw,nosuid,nodev,noexec"
        else:
            if p.type == "bind" and not os.path.exists(p.source):
                os.makedirs(p.source, exist_ok=True)
            binds.append(Bind(p.source, p.destination, readonly=not p.rw,
                              propagation=p.propagation if p.type == "bind" else "rprivate"))
    for name, path in (("/etc/resolv.conf", c.resolv_conf_path), ("/etc/hostname", c.hostname_path),
                       ("/etc/hosts", c.hosts_path)):
        if path and not any(p.destination == name for p in plans):
            extra_mounts.append({"destination": name, "type": "bind", "source": path,
                                 "options": ["rbind", "rprivate"] + (["ro"] if hc.get("ReadonlyRootfs") else [])})
    nnp, seccomp = _parse_security_opts(hc.get("SecurityOpt") or [])
    quota, period = parse_cpus(hc)
    res = Resources(
        memory=int(hc["Memory"]) if hc.get("Memory") else None,
        memory_swap=int(hc["MemorySwap"]) if hc.get("MemorySwap") else None,
        memory_reservation=int(hc["MemoryReservation"]) if hc.get("MemoryReservation") else None,
        cpu_shares=int(hc["CpuShares"]) if hc.get("CpuShares") else None,
        cpu_quota=quota, cpu_period=period,
        cpuset_cpus=hc.get("CpusetCpus") or None, cpuset_mems=hc.get("CpusetMems") or None,
        pids_limit=int(hc["PidsLimit"]) if hc.get("PidsLimit") and int(hc["PidsLimit"]) > 0 else None,
    )
    ulimits = []
    for u in hc.get("Ulimits") or []:
        if u.get("Name") not in ULIMIT_NAMES:
            raise InvalidArgument(f"invalid ulimit type: {u.get('Name')}")
        ulimits.append((u["Name"], int(u.get("Soft", 0)), int(u.get("Hard", 0))))
    ns_paths: dict[str, str] = {}
    host_ns: list[str] = []
    if netns == "host":
        host_ns.append("network")
    elif netns:
        ns_paths["network"] = netns
    if ipc_path == "host":
        host_ns.append("ipc")
    elif ipc_path:
        ns_paths["ipc"] = ipc_path
    if pid_path == "host":
        host_ns.append("pid")
    elif pid_path:
        ns_paths["pid"] = pid_path
    if uts_host:
        host_ns.append("uts")
    opts = SpecOptions(
        args=args, env=env, cwd=cfg.get("WorkingDir") or "/", rootfs=rootfs,
        readonly_rootfs=bool(hc.get("ReadonlyRootfs")), hostname=None if uts_host else cfg.get("Hostname"),
        domainname=cfg.get("Domainname") or None, terminal=bool(cfg.get("Tty")),
        uid=user.uid, gid=user.gid, additional_gids=extra_gids, privileged=bool(hc.get("Privileged")),
        cap_add=list(hc.get("CapAdd") or []), cap_drop=list(hc.get("CapDrop") or []), no_new_privileges=nnp,
        seccomp=seccomp, sysctls=dict(hc.get("Sysctls") or {}), tmpfs=tmpfs, binds=binds,
        extra_mounts=extra_mounts, shm_size=int(hc.get("ShmSize") or 67108864), namespace_paths=ns_paths,
        host_namespaces=host_ns, oom_score_adj=int(hc["OomScoreAdj"]) if hc.get("OomScoreAdj") else None,
        resources=res, ulimits=ulimits, cgroups_path=f"{hc.get('CgroupParent') or '/matou'}/{c.id}",
        masked_paths=hc.get("MaskedPaths"), readonly_paths=hc.get("ReadonlyPaths"),
        annotations={"org.matou.container.id": c.id},
    )
    spec = default_spec(opts)
    atomic_write(os.path.join(bundle, "config.json"), json.dumps(spec).encode(), sync=False)
    return spec
