"""Engine API calls, one method per endpoint, for the CLI. Returns decoded JSON or streaming responses."""

from __future__ import annotations

from matou.client.http import Client, Response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


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

    # containers
    def containers(self, query: dict[str, Any]) -> Any:
        return self.c.get_json("/containers/json", query)

    def container_create(self, body: dict[str, Any], name: str | None, platform: str | None = None) -> Any:
        return self.c.post_json("/containers/create", {"name": name, "platform": platform}, body)

    def container_run(self, body: dict[str, Any], name: str | None, platform: str | None, remove: bool,
                      trace: bool = False) -> Response:
        """matou's one-request run (see the daemon's /containers/run); the open, hijacked response."""
        return self.c.request("POST", "/containers/run", {"name": name, "platform": platform,
                                                          "remove": 1 if remove else None},
                              json_body=body, headers={"X-Matou-Trace": "1"} if trace else None, upgrade=True)

    def container_inspect(self, ref: str, size: bool = False) -> Any:
        return self.c.get_json(f"/containers/{ref}/json", {"size": size or None})

    def container_start(self, ref: str, trace: bool = False) -> dict[str, str]:
        r = self.c.request("POST", f"/containers/{ref}/start", headers={"X-Matou-Trace": "1"} if trace else None)
        r.read()
        r.close()
        return r.headers

    def container_stop(self, ref: str, t: int | None, signal: str | None) -> None:
        self.c.request("POST", f"/containers/{ref}/stop", {"t": t, "signal": signal}).close()

    def container_restart(self, ref: str, t: int | None, signal: str | None) -> None:
        self.c.request("POST", f"/containers/{ref}/restart", {"t": t, "signal": signal}).close()

    def container_kill(self, ref: str, signal: str | None) -> None:
        self.c.request("POST", f"/containers/{ref}/kill", {"signal": signal}).close()

    def container_remove(self, ref: str, force: bool, volumes: bool) -> None:
        self.c.request("DELETE", f"/containers/{ref}", {"force": force or None, "v": volumes or None}).close()

    def container_pause(self, ref: str) -> None:
        self.c.request("POST", f"/containers/{ref}/pause").close()

    def container_unpause(self, ref: str) -> None:
        self.c.request("POST", f"/containers/{ref}/unpause").close()

    def container_rename(self, ref: str, name: str) -> None:
        self.c.request("POST", f"/containers/{ref}/rename", {"name": name}).close()

    def container_update(self, ref: str, body: dict[str, Any]) -> Any:
        return self.c.post_json(f"/containers/{ref}/update", None, body)

    def container_resize(self, ref: str, h: int, w: int) -> None:
        self.c.request("POST", f"/containers/{ref}/resize", {"h": h, "w": w}, check=False).close()

    def container_wait(self, ref: str, condition: str | None = None) -> Response:
        """Returns the open response; read it later with .json() (docker waits before starting)."""
        return self.c.request("POST", f"/containers/{ref}/wait", {"condition": condition})

    def container_attach(self, ref: str, query: dict[str, Any]) -> Response:
        return self.c.request("POST", f"/containers/{ref}/attach", query, upgrade=True)

    def container_logs(self, ref: str, query: dict[str, Any]) -> Response:
        return self.c.request("GET", f"/containers/{ref}/logs", query)

    def container_top(self, ref: str, ps_args: str | None) -> Any:
        return self.c.get_json(f"/containers/{ref}/top", {"ps_args": ps_args})

    def container_changes(self, ref: str) -> Any:
        return self.c.get_json(f"/containers/{ref}/changes")

    def container_stats(self, ref: str, stream: bool) -> Response:
        return self.c.request("GET", f"/containers/{ref}/stats", {"stream": stream})

    def container_export(self, ref: str) -> Response:
        return self.c.request("GET", f"/containers/{ref}/export")

    def container_archive_get(self, ref: str, path: str) -> Response:
        return self.c.request("GET", f"/containers/{ref}/archive", {"path": path})

    def container_archive_head(self, ref: str, path: str) -> Response:
        return self.c.request("HEAD", f"/containers/{ref}/archive", {"path": path})

    def container_archive_put(self, ref: str, path: str, body: Iterator[bytes]) -> None:
        self.c.request("PUT", f"/containers/{ref}/archive", {"path": path}, body=body,
                       headers={"Content-Type": "application/x-tar"}).close()

    def containers_prune(self, filters: str | None) -> Any:
        return self.c.post_json("/containers/prune", {"filters": filters})

    def commit(self, query: dict[str, Any], body: dict[str, Any] | None = None) -> Any:
        return self.c.post_json("/commit", query, body or {})

    # exec
    def exec_create(self, ref: str, body: dict[str, Any]) -> Any:
        return self.c.post_json(f"/containers/{ref}/exec", None, body)

    def exec_start(self, eid: str, body: dict[str, Any], hijack: bool) -> Response:
        return self.c.request("POST", f"/exec/{eid}/start", json_body=body, upgrade=hijack)

    def exec_inspect(self, eid: str) -> Any:
        return self.c.get_json(f"/exec/{eid}/json")

    def exec_resize(self, eid: str, h: int, w: int) -> None:
        self.c.request("POST", f"/exec/{eid}/resize", {"h": h, "w": w}, check=False).close()

    # volumes
    def volumes(self, filters: str | None) -> Any:
        return self.c.get_json("/volumes", {"filters": filters})

    def volume_create(self, body: dict[str, Any]) -> Any:
        return self.c.post_json("/volumes/create", None, body)

    def volume_inspect(self, name: str) -> Any:
        return self.c.get_json(f"/volumes/{name}")

    def volume_remove(self, name: str, force: bool) -> None:
        self.c.request("DELETE", f"/volumes/{name}", {"force": force or None}).close()

    def volumes_prune(self, filters: str | None) -> Any:
        return self.c.post_json("/volumes/prune", {"filters": filters})
