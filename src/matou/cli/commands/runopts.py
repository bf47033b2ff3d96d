"""`run`/`create` flags and their translation into a POST /containers/create body, as docker's CLI does it."""

from __future__ import annotations

from matou.cli.flags import Flag, UsageError, flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RUN_FLAGS: list[Flag] = [
    flag("-a", "--attach", kind="list", help="Attach to STDIN, STDOUT or STDERR"),
    flag("--add-host", kind="list", help="Add a custom host-to-IP mapping (host:ip)"),
    flag("--cap-add", kind="list", help="Add Linux capabilities"),
    flag("--cap-drop", kind="list", help="Drop Linux capabilities"),
    flag("--cgroup-parent", kind="str", help="Optional parent cgroup for the container"),
    flag("--cgroupns", kind="str", help="Cgroup namespace to use (host|private)"),
    flag("--cidfile", kind="str", help="Write the container ID to the file"),
    flag("-c", "--cpu-shares", kind="int", help="CPU shares (relative weight)"),
    flag("--cpu-period", kind="int", help="Limit CPU CFS (Completely Fair Scheduler) period"),
    flag("--cpu-quota", kind="int", help="Limit CPU CFS (Completely Fair Scheduler) quota"),
    flag("--cpus", kind="str", help="Number of CPUs"),
    flag("--cpuset-cpus", kind="str", help="CPUs in which to allow execution (0-3, 0,1)"),
    flag("--cpuset-mems", kind="str", help="MEMs in which to allow execution (0-3, 0,1)"),
    flag("-d", "--detach", help="Run container in background and print container ID"),
    flag("--detach-keys", kind="str", help="Override the key sequence for detaching a container"),
    flag("--device", kind="list", help="Add a host device to the container"),
    flag("--dns", kind="list", help="Set custom DNS servers"),
    flag("--dns-option", kind="list", help="Set DNS options"),
    flag("--dns-search", kind="list", help="Set custom DNS search domains"),
    flag("--domainname", kind="str", help="Container NIS domain name"),
    flag("--entrypoint", kind="str", help="Overwrite the default ENTRYPOINT of the image"),
    flag("-e", "--env", kind="list", help="Set environment variables"),
    flag("--env-file", kind="list", help="Read in a file of environment variables"),
    flag("--expose", kind="list", help="Expose a port or a range of ports"),
    flag("--group-add", kind="list", help="Add additional groups to join"),
    flag("--health-cmd", kind="str", help="Command to run to check health"),
    flag("--health-interval", kind="str", help="Time between running the check"),
    flag("--health-retries", kind="int", help="Consecutive failures needed to report unhealthy"),
    flag("--health-timeout", kind="str", help="Maximum time to allow one check to run"),
    flag("--no-healthcheck", help="Disable any container-specified HEALTHCHECK"),
    flag("-h", "--hostname", kind="str", help="Container host name"),
    flag("--init", help="Run an init inside the container that forwards signals and reaps processes"),
    flag("-i", "--interactive", help="Keep STDIN open even if not attached"),
    flag("--ip", kind="str", help="IPv4 address (e.g., 172.30.100.104)"),
    flag("--ipc", kind="str", help="IPC mode to use"),
    flag("-l", "--label", kind="list", help="Set meta data on a container"),
    flag("--label-file", kind="list", help="Read in a line delimited file of labels"),
    flag("--link", kind="list", help="Add link to another container"),
    flag("--log-driver", kind="str", help="Logging driver for the container"),
    flag("--log-opt", kind="list", help="Log driver options"),
    flag("--mac-address", kind="str", help="Container MAC address (e.g., 92:d0:c6:0a:29:33)"),
    flag("-m", "--memory", kind="str", help="Memory limit"),
    flag("--memory-reservation", kind="str", help="Memory soft limit"),
    flag("--memory-swap", kind="str", help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap"),
    flag("--mount", kind="list", help="Attach a filesystem mount to the container"),
    flag("--name", kind="str", help="Assign a name to the container"),
    flag("--network", "--net", kind="str", help="Connect a container to a network", dest="network"),
    flag("--network-alias", "--net-alias", kind="list", help="Add network-scoped alias for the container",
         dest="network_alias"),
    flag("--oom-score-adj", kind="int", help="Tune host's OOM preferences (-1000 to 1000)"),
    flag("--pid", kind="str", help="PID namespace to use"),
    flag("--pids-limit", kind="int", help="Tune container pids limit (set -1 for unlimited)"),
    flag("--platform", kind="str", help="Set platform if server is multi-platform capable"),
    flag("--privileged", help="Give extended privileges to this container"),
    flag("-p", "--publish", kind="list", help="Publish a container's port(s) to the host"),
    flag("-P", "--publish-all", help="Publish all exposed ports to random ports"),
    flag("--pull", kind="str", default="missing", help='Pull image before running ("always", "missing", "never")'),
    flag("-q", "--quiet", help="Suppress the pull output"),
    flag("--read-only", help="Mount the container's root filesystem as read only"),
    flag("--restart", kind="str", default="no", help="Restart policy to apply when a container exits"),
    flag("--rm", help="Automatically remove the container and its associated anonymous volumes when it exits"),
    flag("--runtime", kind="str", help="Runtime to use for this container (matou, runc, crun)"),
    flag("--security-opt", kind="list", help="Security Options"),
    flag("--shm-size", kind="str", help="Size of /dev/shm"),
    flag("--sig-proxy", kind="bool", default=True, help="Proxy received signals to the process"),
    flag("--stop-signal", kind="str", help="Signal to stop the container"),
    flag("--stop-timeout", kind="int", help="Timeout (in seconds) to stop a container"),
    flag("--sysctl", kind="list", help="Sysctl options"),
    flag("--tmpfs", kind="list", help="Mount a tmpfs directory"),
    flag("-t", "--tty", help="Allocate a pseudo-TTY"),
    flag("--trace", help="Print each step of the run with its duration (matou)"),
    flag("--ulimit", kind="list", help="Ulimit options"),
    flag("-u", "--user", kind="str", help="Username or UID (format: <name|uid>[:<group|gid>])"),
    flag("--userns", kind="str", help="User namespace to use"),
    flag("--uts", kind="str", help="UTS namespace to use"),
    flag("-v", "--volume", kind="list", help="Bind mount a volume"),
    flag("--volume-driver", kind="str", help="Optional volume driver for the container"),
    flag("--volumes-from", kind="list", help="Mount volumes from the specified container(s)"),
    flag("-w", "--workdir", kind="str", help="Working directory inside the container"),
]

def ram_in_bytes(v: str, what: str = "memory") -> int:
    """docker/go-units RAMInBytes: binary units, b/k/m/g/t suffixes."""
    import re

    if v == "-1":
        return -1
    m = re.match(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$", v.strip(), re.I)
    if not m:
        raise UsageError(f'invalid argument "{v}" for "{what}" flag: invalid size: \'{v}\'')
    n = float(m.group(1))
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}[m.group(2).lower()]
    return int(n * mult)


def _parse_duration(v: str | None) -> int:
    """Go durations (30s, 1m30s, 500ms) -> nanoseconds."""
    import re

    if not v:
        return 0
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", v):
        total += float(num) * {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}[unit]
    if total == 0 and v not in ("0", "0s"):
        raise UsageError(f'invalid duration "{v}"')
    return int(total)


def _read_kv_file(path: str, what: str) -> list[str]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"open {path}: {e.strerror.lower() if e.strerror else e}") from None
    out = []
    for ln in lines:
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        if "=" not in ln and what == "env":
            val = _host_env(ln)
            if val is not None:
                out.append(f"{ln}={val}")
            continue
        out.append(ln)
    return out


def _host_env(name: str) -> str | None:
    """os.environ without importing os (~2 ms of start-up): posix.environ holds the same bytes."""
    import posix

    val = posix.environ.get(name.encode())
    return None if val is None else val.decode(errors="surrogateescape")


def parse_env(opts: dict[str, Any]) -> list[str]:
    env: list[str] = []
    for f in opts["env_file"]:
        env += _read_kv_file(f, "env")
    for e in opts["env"]:
        if "=" not in e:
            if e == "":
                raise UsageError("invalid environment variable: ")
            val = _host_env(e)
            if val is not None:
                env.append(f"{e}={val}")
            continue
        if e.startswith("="):
            raise UsageError(f"invalid environment variable: {e}")
        env.append(e)
    return env


def parse_ports(specs: list[str]) -> tuple[dict[str, dict], dict[str, list[dict[str, str]]]]:
    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in specs:
        proto = "tcp"
        s = spec
        if "/" in s:
            s, proto = s.rsplit("/", 1)
        parts = s.rsplit(":", 2) if not s.startswith("[") else [s]
        if len(parts) == 1:
            ip, host, ctr = "", "", parts[0]
        elif len(parts) == 2:
            ip, host, ctr = "", parts[0], parts[1]
        else:
            ip, host, ctr = parts
        ip = ip.strip("[]")
        if not ctr:
            raise UsageError(f"No port specified: {spec}<empty>")
        c_lo, c_hi = _port_range(ctr, spec)
        if host:
            h_lo, h_hi = _port_range(host, spec)
            if h_hi - h_lo != c_hi - c_lo and h_hi != h_lo:
                raise UsageError(f"Invalid ranges specified for container and host Ports: {ctr} and {host}")
        for i, p in enumerate(range(c_lo, c_hi + 1)):
            key = f"{p}/{proto}"
            exposed[key] = {}
            hp = ""
            if host:
                hp = str(h_lo + i) if h_hi != h_lo else (host if c_hi == c_lo else f"{h_lo}-{h_hi}")
            bindings.setdefault(key, []).append({"HostIp": ip, "HostPort": hp})
    return exposed, bindings


def _port_range(v: str, spec: str) -> tuple[int, int]:
    lo, _, hi = v.partition("-")
    try:
        a = int(lo)
        b = int(hi) if hi else a
    except ValueError:
        raise UsageError(f"invalid containerPort: {v}" if v else f"invalid port spec {spec}") from None
    if not (0 <= a <= 65535 and 0 <= b <= 65535) or b < a:
        raise UsageError(f"invalid port range: {v}")
    return a, b


def parse_mount(spec: str) -> dict[str, Any]:
    m: dict[str, Any] = {"Type": "volume"}
    for item in spec.split(","):
        k, eq, v = item.partition("=")
        k = k.strip().lower()
        if k == "type":
            m["Type"] = v
        elif k in ("source", "src"):
            m["Source"] = v
        elif k in ("target", "destination", "dst"):
            m["Target"] = v
        elif k in ("readonly", "ro"):
            m["ReadOnly"] = (not eq) or v.lower() in ("1", "true")
        elif k == "bind-propagation":
            m.setdefault("BindOptions", {})["Propagation"] = v
        elif k == "volume-nocopy":
            m.setdefault("VolumeOptions", {})["NoCopy"] = (not eq) or v.lower() in ("1", "true")
        elif k == "tmpfs-size":
            m.setdefault("TmpfsOptions", {})["SizeBytes"] = ram_in_bytes(v, "tmpfs-size")
        elif k == "tmpfs-mode":
            m.setdefault("TmpfsOptions", {})["Mode"] = int(v, 8)
        elif k == "volume-label":
            lk, _, lv = v.partition("=")
            m.setdefault("VolumeOptions", {}).setdefault("Labels", {})[lk] = lv
        elif k == "consistency":
            continue
        else:
            raise UsageError(f"invalid argument \"{spec}\" for \"--mount\" flag: unexpected key '{k}' in '{item}'")
    if "Target" not in m:
        raise UsageError(f"invalid argument \"{spec}\" for \"--mount\" flag: target is required")
    return m


def parse_ulimit(v: str) -> dict[str, Any]:
    name, eq, vals = v.partition("=")
    if not eq:
        raise UsageError(f'invalid argument "{v}" for "--ulimit" flag: invalid ulimit argument: {v}')
    soft, _, hard = vals.partition(":")
    try:
        s = int(soft)
        h = int(hard) if hard else s
    except ValueError:
        raise UsageError(f'invalid argument "{v}" for "--ulimit" flag') from None
    if s > h:
        raise UsageError(f'invalid argument "{v}" for "--ulimit" flag: ulimit soft limit must be less than or equal to hard limit: {s} > {h}')
    return {"Name": name, "Soft": s, "Hard": h}


def parse_restart(v: str) -> dict[str, Any]:
    name, _, count = v.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped", ""):
        raise UsageError(f'invalid restart policy {name}')
    if count and name != "on-failure":
        raise UsageError(f"maximum retry count cannot be used with restart policy '{name}'")
    try:
        n = int(count) if count else 0
    except ValueError:
        raise UsageError("invalid restart policy format: maximum retry count must be an integer") from None
    return {"Name": name or "no", "MaximumRetryCount": n}


def build_create_body(opts: dict[str, Any], image: str, cmd: list[str]) -> tuple[dict[str, Any], str | None]:
    """The create body and the container name. Raises UsageError like docker's flag validation."""
    attach = [a.lower() for a in opts["attach"]]
    for a in attach:
        if a not in ("stdin", "stdout", "stderr"):
            raise UsageError(f"invalid argument \"{a}\" for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR")
    detach = opts["detach"]
    if detach and attach:
        raise UsageError("Conflicting options: -a and -d")
    stdin = opts["interactive"]
    if not detach:
        if not attach:
            attach = ["stdout", "stderr"] + (["stdin"] if stdin else [])
    labels: dict[str, str] = {}
    for f in opts["label_file"]:
        for ln in _read_kv_file(f, "label"):
            k, _, v = ln.partition("=")
            labels[k] = v
    for lb in opts["label"]:
        k, _, v = lb.partition("=")
        labels[k] = v
    exposed, bindings = parse_ports(opts["publish"])
    for e in opts["expose"]:
        proto = "tcp"
        if "/" in e:
            e, proto = e.split("/", 1)
        lo, hi = _port_range(e, e)
        for p in range(lo, hi + 1):
            exposed[f"{p}/{proto}"] = {}
    entrypoint = None
    if opts["entrypoint"] is not None:
        entrypoint = [opts["entrypoint"]] if opts["entrypoint"] else [""]
    healthcheck = None
    if opts["no_healthcheck"]:
        healthcheck = {"Test": ["NONE"]}
    elif opts["health_cmd"]:
        healthcheck = {"Test": ["CMD-SHELL", opts["health_cmd"]],
                       "Interval": _parse_duration(opts["health_interval"]),
                       "Timeout": _parse_duration(opts["health_timeout"]), "Retries": opts["health_retries"] or 0}
    memory = ram_in_bytes(opts["memory"], "--memory") if opts["memory"] else 0
    swap = ram_in_bytes(opts["memory_swap"], "--memory-swap") if opts["memory_swap"] else 0
    nano = 0
    if opts["cpus"]:
        try:
            nano = int(round(float(opts["cpus"]) * 1e9))
        except ValueError:
            raise UsageError(f'invalid argument "{opts["cpus"]}" for "--cpus" flag: failed to parse {opts["cpus"]} as a rational number') from None
    tmpfs = {}
    for t in opts["tmpfs"]:
        dst, _, o = t.partition(":")
        tmpfs[dst] = o
    sysctls = {}
    for sc in opts["sysctl"]:
        k, eq, v = sc.partition("=")
        if not eq:
            raise UsageError(f'invalid argument "{sc}" for "--sysctl" flag: sysctl \'{sc}\' is not allowed')
        sysctls[k] = v
    log_opts = {}
    for lo in opts["log_opt"]:
        k, _, v = lo.partition("=")
        log_opts[k] = v
    network = opts["network"] or "default"
    devices = []
    for d in opts["device"]:
        parts = d.split(":")
        devices.append({"PathOnHost": parts[0], "PathInContainer": parts[1] if len(parts) > 1 else parts[0],
                        "CgroupPermissions": parts[2] if len(parts) > 2 else "rwm"})
    host_config: dict[str, Any] = {
        "Binds": opts["volume"] or None,
        "ContainerIDFile": opts["cidfile"] or "",
        "LogConfig": {"Type": opts["log_driver"] or "", "Config": log_opts},
        "NetworkMode": network,
        "PortBindings": bindings,
        "RestartPolicy": parse_restart(opts["restart"]),
        "AutoRemove": opts["rm"],
        "VolumesFrom": opts["volumes_from"] or None,
        "CapAdd": opts["cap_add"] or None,
        "CapDrop": opts["cap_drop"] or None,
        "CgroupnsMode": opts["cgroupns"] or "",
        "Dns": opts["dns"],
        "DnsOptions": opts["dns_option"],
        "DnsSearch": opts["dns_search"],
        "ExtraHosts": opts["add_host"] or None,
        "GroupAdd": opts["group_add"] or None,
        "IpcMode": opts["ipc"] or "",
        "Links": opts["link"] or None,
        "OomScoreAdj": opts["oom_score_adj"] or 0,
        "PidMode": opts["pid"] or "",
        "Privileged": opts["privileged"],
        "PublishAllPorts": opts["publish_all"],
        "ReadonlyRootfs": opts["read_only"],
        "SecurityOpt": opts["security_opt"] or None,
        "UTSMode": opts["uts"] or "",
        "UsernsMode": opts["userns"] or "",
        "ShmSize": ram_in_bytes(opts["shm_size"], "--shm-size") if opts["shm_size"] else 0,
        "Sysctls": sysctls or None,
        "Runtime": opts["runtime"] or "",
        "CpuShares": opts["cpu_shares"] or 0,
        "Memory": memory,
        "NanoCpus": nano,
        "CgroupParent": opts["cgroup_parent"] or "",
        "CpuPeriod": opts["cpu_period"] or 0,
        "CpuQuota": opts["cpu_quota"] or 0,
        "CpusetCpus": opts["cpuset_cpus"] or "",
        "CpusetMems": opts["cpuset_mems"] or "",
        "Devices": devices,
        "MemoryReservation": ram_in_bytes(opts["memory_reservation"]) if opts["memory_reservation"] else 0,
        "MemorySwap": swap,
        "Init": True if opts["init"] else None,
        "PidsLimit": opts["pids_limit"],
        "Ulimits": [parse_ulimit(u) for u in opts["ulimit"]] or None,
        "Mounts": [parse_mount(m) for m in opts["mount"]] or None,
        "Tmpfs": tmpfs or None,
    }
    body: dict[str, Any] = {
        "Hostname": opts["hostname"] or "",
        "Domainname": opts["domainname"] or "",
        "User": opts["user"] or "",
        "AttachStdin": "stdin" in attach,
        "AttachStdout": "stdout" in attach,
        "AttachStderr": "stderr" in attach,
        "ExposedPorts": exposed or None,
        "Tty": opts["tty"],
        "OpenStdin": stdin,
        "StdinOnce": stdin and not detach and "stdin" in attach,
        "Env": parse_env(opts),
        "Cmd": cmd or None,
        "Healthcheck": healthcheck,
        "Image": image,
        "Volumes": None,
        "WorkingDir": opts["workdir"] or "",
        "Entrypoint": entrypoint,
        "MacAddress": opts["mac_address"] or "",
        "Labels": labels,
        "StopSignal": opts["stop_signal"] or None,
        "StopTimeout": opts["stop_timeout"],
        "HostConfig": host_config,
        "NetworkingConfig": None,
    }
    if network not in ("default", "bridge", "host", "none") and not network.startswith("container:"):
        ep: dict[str, Any] = {"Aliases": opts["network_alias"] or None}
        if opts["ip"]:
            ep["IPAMConfig"] = {"IPv4Address": opts["ip"]}
        body["NetworkingConfig"] = {"EndpointsConfig": {network: ep}}
    elif opts["ip"] or opts["network_alias"]:
        if opts["network_alias"] and network in ("default", "bridge"):
            raise UsageError("network-scoped aliases are only supported for user-defined networks")
        ep = {"IPAMConfig": {"IPv4Address": opts["ip"]}} if opts["ip"] else {}
        body["NetworkingConfig"] = {"EndpointsConfig": {"bridge" if network == "default" else network: ep}}
    return body, opts["name"]
