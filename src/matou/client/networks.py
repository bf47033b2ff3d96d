"""Engine API calls for networks (one function per endpoint), for the CLI."""

from __future__ import annotations

from typing import Any

from matou.client.http import Client


def networks(c: Client, filters: str | None = None) -> Any:
    return c.get_json("/networks", {"filters": filters})


def network_inspect(c: Client, ref: str) -> Any:
    return c.get_json(f"/networks/{ref}")


def network_create(c: Client, body: dict[str, Any]) -> Any:
    return c.post_json("/networks/create", None, body)


def network_remove(c: Client, ref: str) -> None:
    c.request("DELETE", f"/networks/{ref}").close()


def network_connect(c: Client, ref: str, container: str, endpoint: dict[str, Any] | None = None) -> None:
    c.request("POST", f"/networks/{ref}/connect", json_body={"Container": container,
                                                             "EndpointConfig": endpoint or {}}).close()


def network_disconnect(c: Client, ref: str, container: str, force: bool = False) -> None:
    c.request("POST", f"/networks/{ref}/disconnect", json_body={"Container": container, "Force": force}).close()


def networks_prune(c: Client, filters: str | None = None) -> Any:
    return c.post_json("/networks/prune", {"filters": filters})
