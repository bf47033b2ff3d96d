"""Registers the volumes service."""

from __future__ import annotations

from matou.daemon.config import state_dirs
from matou.daemon.services import Services
from matou.daemon.services.volumes import VolumesService


def attach(svcs: Services) -> None:
    svcs.volumes = VolumesService(state_dirs(svcs.config)["volumes"], svcs.extra["db"], svcs.events)
