"""From a POST /containers/create body to a container record: validation and Docker's merge with the image."""

from __future__ import annotations

import re
from typing import Any

from matou.daemon.services.containers.records import Container, now
from matou.errors import InvalidArgument
from matou.image.model import Image

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
RESTART_POLICIES = ("", "no", "always", "on-failure", "unless-stopped")

HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "bridge", "PortBindings": {}, "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None, "ConsoleSize": [0, 0], "CapAdd": None,
    "CapDrop": None, "CgroupnsMode": "private", "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None,
    "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
    "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None, "UTSMode": "",
    "UsernsMode": "", "ShmSize": 67108864, "Runtime": "matou", "Isolation": "", "CpuShares": 0, "Memory": 0,
    "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0, "BlkioWeightDevice": [], "BlkioDeviceReadBps": [],
    "BlkioDeviceWriteBps": [], "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0,
    "CpuQuota": 0, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
    "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None, "MemoryReservation": 0, "MemorySwap": 0,
    "MemorySwappiness": None, "OomKillDisable": None, "PidsLimit": None, "Ulimits": [], "CpuCount": 0,
    "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0, "Mounts": None, "Init": None, "Sysctls": None,
    "Tmpfs": None, "MaskedPaths": None, "ReadonlyPaths": None,
}

CONFIG_KEYS = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
               "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes",
               "WorkingDir", "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal",
               "StopTimeout", "Shell")


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.lstrip("/")


def _env_key(e: str) -> str:
    return e.split("=", 1)[0]


def merge_env(image_env: list[str] | None, user_env: list[str] | None) -> list[str]:
    out = list(image_env or [])
    for e in user_env or []:
        k = _env_key(e)
        if "=" not in e:
            # "-e FOO" without a value and no FOO in the client env: docker drops it
            continue
        out = [x for x in out if _env_key(x) != k]
        out.append(e)
    return out


def merge_config(user: dict[str, Any], image: Image) -> dict[str, Any]:
    """Docker's daemon.merge(): the image fills what the user left empty."""
    ic = image.container_config
    c = {k: user.get(k) for k in CONFIG_KEYS}
    c["Env"] = merge_env(ic.get("Env"), user.get("Env"))
    if not c.get("User"):
        c["User"] = ic.get("User", "")
    ports = dict(ic.get("ExposedPorts") or {})
    ports.update(user.get("ExposedPorts") or {})
    c["ExposedPorts"] = ports or None
    labels = dict(ic.get("Labels") or {})
    labels.update(user.get("Labels") or {})
    c["Labels"] = labels
    if user.get("Entrypoint") == [""]:
        c["Entrypoint"] = None  # --entrypoint "": explicitly none, and the image's is not inherited
    elif not user.get("Entrypoint"):
        if not user.get("Cmd"):
            c["Cmd"] = ic.get("Cmd")
        if user.get("Entrypoint") is None:
            c["Entrypoint"] = ic.get("Entrypoint")
        else:
            c["Entrypoint"] = None
    if not c.get("WorkingDir"):
        c["WorkingDir"] = ic.get("WorkingDir", "")
    vols = dict(ic.get("Volumes") or {})
    vols.update(user.get("Volumes") or {})
    c["Volumes"] = vols or None
    if not c.get("StopSignal"):
        c["StopSignal"] = ic.get("StopSignal")
    if c.get("Healthcheck") is None and ic.get("Healthcheck"):
        c["Healthcheck"] = ic.get("Healthcheck")
    if c.get("OnBuild") is None:
        c["OnBuild"] = None
    for k in ("AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce"):
        c[k] = bool(c.get(k))
    for k in ("Hostname", "Domainname", "WorkingDir", "User"):
        c[k] = c.get(k) or ""
    return c


def normalize_host_config(hc: dict[str, Any] | None, default_runtime: str) -> dict[str, Any]:
    hc = dict(hc or {})
    out = {k: (v.copy() if isinstance(v, (dict, list)) else v) for k, v in HOST_CONFIG_DEFAULTS.items()}
    for k, v in hc.items():
        if v is not None:
            out[k] = v
    if not out.get("NetworkMode") or out["NetworkMode"] == "default":
        out["NetworkMode"] = "bridge"
    rp = out.get("RestartPolicy") or {}
    name = rp.get("Name") or "no"
    if name not in RESTART_POLICIES:
        raise InvalidArgument(f"invalid restart policy '{name}'")
    if name != "on-failure" and rp.get("MaximumRetryCount"):
        raise InvalidArgument("invalid restart policy: maximum retry count can only be used with 'on-failure'")
    if (rp.get("MaximumRetryCount") or 0) < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    if out.get("AutoRemove") and name not in ("", "no"):
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    out["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(rp.get("MaximumRetryCount") or 0)}
    lc = out.get("LogConfig") or {}
    out["LogConfig"] = {"Type": lc.get("Type") or "json-file", "Config": lc.get("Config") or {}}
    if out["LogConfig"]["Type"] not in ("json-file", "none"):
        raise InvalidArgument(f"logging driver {out['LogConfig']['Type']!r} is not supported (json-file, none)")
    if not out.get("Runtime"):
        out["Runtime"] = default_runtime
    if out["Runtime"] not in ("matou", "runc", "crun"):
        raise InvalidArgument(f"unknown or invalid runtime name: {out['Runtime']}")
    mem = int(out.get("Memory") or 0)
    swap = int(out.get("MemorySwap") or 0)
    if mem and mem < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if swap > 0 and mem and swap < mem:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
    if swap > 0 and not mem:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap limit, see usage")
    if out.get("NanoCpus") and (out.get("CpuQuota") or out.get("CpuPeriod")):
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    ncpu = __import__("os").cpu_count() or 1
    if out.get("NanoCpus") and out["NanoCpus"] > ncpu * 1_000_000_000:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")
    if out.get("NanoCpus") and out["NanoCpus"] < 0:
        raise InvalidArgument("Range of CPUs is from 0.01")
    if out.get("ShmSize") is not None and int(out["ShmSize"]) < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    if not out.get("ShmSize"):
        out["ShmSize"] = 67108864
    nm = out["NetworkMode"]
    if nm.startswith("container:") and (out.get("PortBindings") or out.get("PublishAllPorts")):
        raise InvalidArgument("conflicting options: port publishing and the container type network mode")
    if nm == "host" and out.get("PortBindings"):
        out["PortBindings"] = {}
    for p in (out.get("PortBindings") or {}):
        _check_port_key(p)
    return out


def _check_port_key(key: str) -> None:
    port, _, proto = key.partition("/")
    if proto and proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    lo, _, hi = port.partition("-")
    try:
        a = int(lo)
        b = int(hi) if hi else a
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {port}") from None
    if not (0 < a <= 65535 and 0 < b <= 65535):
        raise InvalidArgument(f"invalid containerPort: {port}")


def build(cid: str, name: str, body: dict[str, Any], image: Image, image_ref: str, default_runtime: str) -> Container:
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: expected an object")
    hc = normalize_host_config(body.get("HostConfig"), default_runtime)
    cfg = merge_config(body, image)
    cfg["Image"] = image_ref
    if not cfg["Hostname"]:
        cfg["Hostname"] = cid[:12] if hc["NetworkMode"] != "host" else __import__("socket").gethostname()
    if cfg.get("Env") is not None:
        for e in cfg["Env"]:
            if not e or e.startswith("="):
                raise InvalidArgument(f"invalid environment variable: {e}")
    entry = list(cfg.get("Entrypoint") or [])
    cmd = list(cfg.get("Cmd") or [])
    argv = entry + cmd
    if not argv:
        raise InvalidArgument("No command specified")
    c = Container(id=cid, name=name, created=now(), image_id=image.id, config=cfg, host_config=hc,
                  path=argv[0], args=argv[1:], runtime=hc["Runtime"])
    return c
