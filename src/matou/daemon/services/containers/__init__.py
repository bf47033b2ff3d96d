"""Containers: records, lifecycle, monitors. ``attach`` registers the service in the daemon."""

from __future__ import annotations

from matou.daemon.services import Services


def attach(svcs: Services) -> None:
    from matou.daemon.services.containers.service import ContainersService

    db = svcs.extra["db"]
    image_svc = svcs.images.svc
    svc = ContainersService(svcs, db, image_svc, image_svc.snapshots)
    svcs.containers = svc
    image_svc.in_use = svc.users_of_image
    svcs.images.container_count = lambda image_id: len(svc.users_of_image(image_id))
    if svcs.volumes is not None:
        svcs.volumes.users = svc.users_of_volume
