"""A container's record under the runtime root: <root>/<id>/state.json plus exec.fifo while it is "created".

The status is never stored, it is observed: no init (or a zombie, or a recycled pid whose start time differs)
means "stopped"; the fifo still present means "created"; a frozen cgroup means "paused"; otherwise "running".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field

from matou.errors import InvalidArgument, NotFound
from matou.runtime.linux.cgroups import Cgroup
from matou.util.fs import atomic_write

TYPE_CHECKING = False  # typing costs the spawner (and every fork of it) ~0.5 MB: annotations only
if TYPE_CHECKING:
    from typing import Any

_ID_RE = re.compile(r"^[\w+\-.]+$")
STATE_FILE = "state.json"
FIFO = "exec.fifo"


def check_id(container_id: str) -> None:
    if not container_id or len(container_id) > 1024 or not _ID_RE.match(container_id) or \
            container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id {container_id!r}")


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a live pid, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[19])


@dataclass
class ContainerState:
    id: str
    pid: int
    start_time: int
    bundle: str
    rootfs: str
    created: str
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup: dict[str, Any] | None = None
    seccomp_key: str | None = None
    config_hash: str = ""

    def save(self, state_dir: str) -> None:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}  # asdict() deep-copies: 10x slower
        atomic_write(os.path.join(state_dir, STATE_FILE), json.dumps(data).encode(), mode=0o600, sync=False)

    @classmethod
    def load(cls, root: str, container_id: str) -> ContainerState:
        check_id(container_id)
        path = os.path.join(root, container_id, STATE_FILE)
        try:
            with open(path, "rb") as f:
                d = json.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"container {container_id!r} does not exist")
        except ValueError:
            raise NotFound(f"container {container_id!r}: state file is unreadable")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def cg(self) -> Cgroup | None:
        return Cgroup.load(self.cgroup) if self.cgroup else None

    def alive(self) -> bool:
        st = proc_stat(self.pid)
        return st is not None and st[1] == self.start_time and st[0] not in ("Z", "X")

    def status(self, state_dir: str) -> str:
        if not self.alive():
            return "stopped"
        if os.path.exists(os.path.join(state_dir, FIFO)):
            return "created"
        cg = self.cg()
        if cg is not None and cg.frozen():
            return "paused"
        return "running"

    def oci(self, state_dir: str) -> dict[str, Any]:
        status = self.status(state_dir)
        return {
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": status,
            "pid": self.pid if status != "stopped" else 0,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "annotations": self.annotations,
            "owner": "",
        }


def list_ids(root: str) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(e for e in os.listdir(root) if os.path.isfile(os.path.join(root, e, STATE_FILE)))
    return []
