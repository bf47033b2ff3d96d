"""Networks: bridge networks, IPAM, published ports, embedded DNS. ``attach`` registers the service."""

from __future__ import annotations

from matou.daemon.services import Services


def attach(svcs: Services) -> None:
    from matou.daemon.services.networks.service import NetworksService

    svcs.networks = NetworksService(svcs, svcs.extra["db"])
