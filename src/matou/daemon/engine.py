"""Composition root: builds the stores and services from a config. The only place that wires parts together."""

from __future__ import annotations

import logging
import os
import uuid

from matou.daemon.config import DaemonConfig, state_dirs
from matou.daemon.services import Services
from matou.daemon.services.events import EventBus
from matou.daemon.services.images import ImagesService
from matou.daemon.services.system import SystemService
from matou.image.service import ImageService
from matou.store.content import ContentStore
from matou.store.metadata import Database
from matou.store.snapshots import OverlaySnapshotter
from matou.util.fs import makedirs

log = logging.getLogger("matoud")


def build_services(cfg: DaemonConfig) -> Services:
    dirs = state_dirs(cfg)
    makedirs(cfg.data_root, 0o711)
    makedirs(cfg.exec_root, 0o711)
    for d in dirs.values():
        makedirs(d, 0o711)
    db = Database(os.path.join(cfg.data_root, "metadata.db"))
    content = ContentStore(dirs["content"])
    snapshots = OverlaySnapshotter(dirs["snapshots"], db)
    events = EventBus()
    svcs = Services(config=cfg, events=events)
    image_svc = ImageService(content, db, snapshots)
    svcs.images = ImagesService(image_svc, events)
    daemon_id = db.get_kv("daemon_id")
    if daemon_id is None:
        daemon_id = str(uuid.uuid4()).upper()
        db.set_kv("daemon_id", daemon_id)
    svcs.system = SystemService(svcs, daemon_id)
    svcs.extra["db"] = db
    _optional_services(svcs)
    # a crash may have left uncommitted unpacks and half-removed containers: nothing references them
    try:
        from matou.daemon.services.containers.service import ContainersService

        ContainersService.cleanup_orphans(dirs["run_containers"], db)
    except Exception:
        log.exception("cleaning up removed containers failed")
    try:
        image_svc.gc()
    except Exception:
        log.exception("garbage collection at start failed")
    return svcs


# Each service package exposes attach(svcs); order matters (containers use volumes and networks).
_SERVICE_MODULES = (
    "matou.daemon.services.volumes_attach",
    "matou.daemon.services.networks",
    "matou.daemon.services.containers",
    "matou.daemon.services.builds",
    "matou.daemon.services.distribution",
)


def _optional_services(svcs: Services) -> None:
    import importlib

    for name in _SERVICE_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        attach = getattr(mod, "attach", None)
        if attach is None:
            log.warning("%s has no attach(svcs); skipped", name)
            continue
        attach(svcs)


async def start_services(svcs: Services) -> None:
    for s in (svcs.containers, svcs.networks, svcs.volumes, svcs.builds, svcs.distribution):
        if s is not None and hasattr(s, "start"):
            await s.start()


async def stop_services(svcs: Services) -> None:
    for s in (svcs.distribution, svcs.builds, svcs.volumes, svcs.containers, svcs.networks):
        if s is not None and hasattr(s, "stop"):
            try:
                await s.stop()
            except Exception:
                log.exception("stopping %s failed", type(s).__name__)
