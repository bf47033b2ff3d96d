"""Engine API calls, one method per endpoint, for the CLI. Returns decoded JSON or streaming responses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from matou.client.http import Client, Response


class API:
    def __init__(self, client: Client) -> None:
        self.c = client

    # system
    def version(self) -> Any:
        return self.c.get_json("/version")

    def info(self) -> Any:
        return self.c.get_json("/info")

    def df(self) -> Any:
        return self.c.get_json("/system/df")

    def events(self, query: dict[str, Any]) -> Response:
        return self.c.request("GET", "/events", query)

    # images
    def images(self, all_: bool = False, filters: str | None = None, digests: bool = False) -> Any:
        return self.c.get_json("/images/json", {"all": all_ or None, "filters": filters, "digests": digests or None})

    def image_inspect(self, name: str) -> Any:
        return self.c.get_json(f"/images/{name}/json")

    def image_history(self, name: str) -> Any:
        return self.c.get_json(f"/images/{name}/history")

    def image_tag(self, name: str, repo: str, tag: str | None) -> None:
        self.c.request("POST", f"/images/{name}/tag", {"repo": repo, "tag": tag}).close()

    def image_remove(self, name: str, force: bool, noprune: bool) -> Any:
        r = self.c.request("DELETE", f"/images/{name}", {"force": force or None, "noprune": noprune or None})
        try:
            return r.json()
        finally:
            r.close()

    def images_prune(self, filters: str | None) -> Any:
        return self.c.post_json("/images/prune", {"filters": filters})

    def images_get(self, names: list[str], fmt: str | None = None) -> Response:
        return self.c.request("GET", "/images/get", {"names": names, "format": fmt})

    def images_load(self, body: Iterator[bytes], quiet: bool) -> Response:
        return self.c.request("POST", "/images/load", {"quiet": quiet or None}, body=body,
                              headers={"Content-Type": "application/x-tar"})

    def images_import(self, body: Iterator[bytes], query: dict[str, Any]) -> Response:
        return self.c.request("POST", "/images/create", query, body=body,
                              headers={"Content-Type": "application/x-tar"})

    def images_bootstrap(self, base: str, tag: str | None) -> Any:
        return self.c.post_json("/images/bootstrap", {"base": base, "tag": tag})
