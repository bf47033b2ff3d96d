"""Orchestration services. ``Services`` is the daemon's one registry of them (its only global state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matou.daemon.config import DaemonConfig
from matou.daemon.services.events import EventBus


@dataclass
class Services:
    config: DaemonConfig
    events: EventBus
    images: Any = None       # daemon.services.images.ImagesService
    containers: Any = None   # daemon.services.containers.ContainersService
    volumes: Any = None
    networks: Any = None
    builds: Any = None
    distribution: Any = None
    system: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
