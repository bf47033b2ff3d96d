"""Named volumes (the `local` driver): a directory per volume, seeded from the image on first use."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from typing import Any

from matou.daemon.services.events import EventBus
from matou.errors import Conflict, InvalidArgument, NotFound
from matou.store.metadata import Database
from matou.types.image import rfc3339
from matou.util import filters as flt
from matou.util.fs import dir_size
from matou.util.ids import new_id

NAME_RE = __import__("re").compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class VolumesService:
    def __init__(self, root: str, db: Database, events: EventBus) -> None:
        self.root = root
        self.db = db
        self.events = events
        os.makedirs(root, exist_ok=True)
        self.users: Callable[[str], list[str]] = lambda name: []  # wired by the containers service

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name, "_data")

    def _record(self, row: Any) -> dict[str, Any]:
        rec = json.loads(row["record"])
        return rec

    def create(self, name: str | None = None, driver: str = "local", labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None, anonymous: bool = False) -> dict[str, Any]:
        if driver not in ("local", ""):
            raise InvalidArgument(f"volume driver {driver!r} is not supported (local)")
        if options:
            bad = set(options) - {"type", "device", "o"}
            if bad:
                raise InvalidArgument(f"invalid option key: {sorted(bad)[0]!r}")
        name = name or new_id()
        if not NAME_RE.match(name):
            raise InvalidArgument(f'create {name}: "{name}" includes invalid characters for a local volume name, '
                                  "only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host "
                                  "directory, use absolute path")
        row = self.db.one("SELECT record FROM volumes WHERE name=?", (name,))
        if row is not None:
            return self._record(row)
        path = self._path(name)
        os.makedirs(path, exist_ok=True)
        lab = dict(labels or {})
        if anonymous:
            lab.setdefault("com.docker.volume.anonymous", "")
        rec = {"CreatedAt": rfc3339(), "Driver": "local", "Labels": lab, "Mountpoint": path, "Name": name,
               "Options": options or None, "Scope": "local", "Seeded": False}
        self.db.execute("INSERT INTO volumes(name, driver, created, record) VALUES(?,?,?,?)",
                        (name, "local", rec["CreatedAt"], json.dumps(rec)))
        self.events.publish("volume", "create", name, {"driver": "local"})
        return rec

    def get(self, name: str) -> dict[str, Any]:
        row = self.db.one("SELECT record FROM volumes WHERE name=?", (name,))
        if row is None:
            raise NotFound(f"get {name}: no such volume")
        return self._record(row)

    def exists(self, name: str) -> bool:
        return self.db.one("SELECT 1 FROM volumes WHERE name=?", (name,)) is not None

    def inspect(self, name: str) -> dict[str, Any]:
        rec = dict(self.get(name))
        rec.pop("Seeded", None)
        return rec

    def list(self, filters: str | None = None) -> dict[str, Any]:
        f = flt.parse(filters, {"dangling", "driver", "label", "name"})
        out = []
        for row in self.db.all("SELECT record FROM volumes ORDER BY name"):
            rec = self._record(row)
            if "name" in f and not any(n in rec["Name"] for n in f["name"]):
                continue
            if "driver" in f and rec["Driver"] not in f["driver"]:
                continue
            if "label" in f and not flt.labels_match(rec.get("Labels"), f["label"]):
                continue
            if "dangling" in f:
                dangling = not self.users(rec["Name"])
                if dangling != flt.bool_value(f["dangling"], "dangling"):
                    continue
            rec.pop("Seeded", None)
            out.append(rec)
        return {"Volumes": out, "Warnings": []}

    def remove(self, name: str, force: bool = False) -> None:
        if not self.exists(name):
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        users = self.users(name)
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        self.db.execute("DELETE FROM volumes WHERE name=?", (name,))
        shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
        self.events.publish("volume", "destroy", name, {"driver": "local"})

    def prune(self, filters: str | None = None) -> dict[str, Any]:
        f = flt.parse(filters, {"label", "label!", "all"})
        all_ = "all" in f and flt.bool_value(f["all"], "all")
        deleted, freed = [], 0
        for row in self.db.all("SELECT record FROM volumes"):
            rec = self._record(row)
            labels = rec.get("Labels") or {}
            if not all_ and "com.docker.volume.anonymous" not in labels:
                continue
            if "label" in f and not flt.labels_match(labels, f["label"]):
                continue
            if "label!" in f and not flt.labels_match(labels, f["label!"], negate=True):
                continue
            if self.users(rec["Name"]):
                continue
            size = dir_size(rec["Mountpoint"])
            with contextlib.suppress(Conflict, NotFound):
                self.remove(rec["Name"])
                deleted.append(rec["Name"])
                freed += size
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": freed}

    def mark_seeded(self, name: str) -> bool:
        """True the first time: the caller then copies image content into the empty volume."""
        rec = self.get(name)
        if rec.get("Seeded"):
            return False
        rec["Seeded"] = True
        self.db.execute("UPDATE volumes SET record=? WHERE name=?", (json.dumps(rec), name))
        return True

    def df(self) -> list[dict[str, Any]]:
        out = []
        for row in self.db.all("SELECT record FROM volumes"):
            rec = self._record(row)
            rec.pop("Seeded", None)
            rec["UsageData"] = {"Size": dir_size(rec["Mountpoint"]), "RefCount": len(self.users(rec["Name"]))}
            out.append(rec)
        return out
