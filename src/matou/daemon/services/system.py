"""/version, /info and /system/df in Docker's shapes."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

import matou
from matou.daemon.config import API_VERSION, MIN_API_VERSION
from matou.daemon.services import Services
from matou.types.oci import Platform


class SystemService:
    def __init__(self, services: Services, daemon_id: str) -> None:
        self.s = services
        self.daemon_id = daemon_id

    def version(self) -> dict[str, Any]:
        plat = Platform.host()
        v = {
            "Version": matou.__version__,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "matou",
            "GoVersion": f"python{platform.python_version()}",
            "Os": "linux",
            "Arch": plat.architecture,
            "KernelVersion": platform.release(),
            "BuildTime": "",
            "Experimental": False,
        }
        v["Platform"] = {"Name": "matou Engine"}
        v["Components"] = [{"Name": "Engine", "Version": matou.__version__, "Details": {
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "matou",
            "GoVersion": v["GoVersion"], "Os": "linux", "Arch": plat.architecture,
            "KernelVersion": platform.release(), "Experimental": "false", "BuildTime": ""}}]
        return v

    def info(self) -> dict[str, Any]:
        cfg = self.s.config
        counts = {"Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0}
        if self.s.containers is not None:
            counts = self.s.containers.counts()
        images = len(self.s.images.svc.list(all_=True)) if self.s.images else 0
        mem = 0
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        mem = int(line.split()[1]) * 1024
        except OSError:
            pass
        cg_version = "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"
        runtimes = {"matou": {"path": "matou-runtime"}, "runc": {"path": "runc"}, "crun": {"path": "crun"}}
        runtimes.update({k: dict(v) for k, v in cfg.runtimes.items()})
        return {
            "ID": self.daemon_id,
            **counts,
            "Images": images,
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"],
                             ["Using metacopy", "false"], ["Native Overlay Diff", "true"]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                        "Authorization": None, "Log": ["json-file"]},
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "IPv4Forwarding": _ip_forward(),
            "BridgeNfIptables": False,
            "BridgeNfIp6tables": False,
            "Debug": cfg.debug,
            "NFd": len(os.listdir("/proc/self/fd")),
            "OomKillDisable": False,
            "NGoroutines": 0,
            "SystemTime": _now(),
            "LoggingDriver": cfg.log_driver,
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cg_version,
            "NEventsListener": 0,
            "KernelVersion": platform.release(),
            "OperatingSystem": _os_name(),
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": platform.machine(),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {
                "AllowNondistributableArtifactsCIDRs": [],
                "AllowNondistributableArtifactsHostnames": [],
                "InsecureRegistryCIDRs": ["127.0.0.0/8"] + [r for r in cfg.insecure_registries if "/" in r],
                "IndexConfigs": {},
                "Mirrors": list(cfg.registry_mirrors),
            },
            "NCPU": os.cpu_count() or 1,
            "MemTotal": mem,
            "GenericResources": None,
            "DockerRootDir": cfg.data_root,
            "HttpProxy": os.environ.get("HTTP_PROXY", ""),
            "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
            "NoProxy": os.environ.get("NO_PROXY", ""),
            "Name": socket.gethostname(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": matou.__version__,
            "Runtimes": runtimes,
            "DefaultRuntime": cfg.default_runtime,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                      "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": cfg.live_restore,
            "Isolation": "",
            "InitBinary": "matou-init",
            "ContainerdCommit": {"ID": "", "Expected": ""},
            "RuncCommit": {"ID": "", "Expected": ""},
            "InitCommit": {"ID": "", "Expected": ""},
            "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"] if cg_version == "2"
            else ["name=seccomp,profile=builtin"],
            "Warnings": [],
        }

    def df(self) -> dict[str, Any]:
        images = []
        layers_size = 0
        if self.s.images:
            svc = self.s.images.svc
            layers_size = int(svc.db.scalar("SELECT COALESCE(SUM(size),0) FROM layers") or 0)
            for img in svc.list(all_=True):
                row = svc.summary(img, self.s.images.container_count(img.id))
                row["SharedSize"] = 0
                images.append(row)
        containers = self.s.containers.df() if self.s.containers is not None else []
        volumes = self.s.volumes.df() if self.s.volumes is not None else []
        cache = self.s.builds.df() if self.s.builds is not None else []
        return {"LayersSize": layers_size, "Images": images, "Containers": containers, "Volumes": volumes,
                "BuildCache": cache}


def _now() -> str:
    from matou.types.image import rfc3339

    return rfc3339()


def _ip_forward() -> bool:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"
