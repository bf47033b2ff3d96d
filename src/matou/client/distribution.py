"""Engine API calls for registries: pull, push, login, search (one function per endpoint)."""

from __future__ import annotations

from typing import Any

from matou.client.http import Client, Response


def image_pull(c: Client, from_image: str, tag: str | None, platform: str | None, auth: str) -> Response:
    """POST /images/create?fromImage=&tag=; the response streams JSON progress messages."""
    return c.request("POST", "/images/create", {"fromImage": from_image, "tag": tag, "platform": platform},
                     headers={"X-Registry-Auth": auth})


def image_push(c: Client, name: str, tag: str | None, auth: str) -> Response:
    return c.request("POST", f"/images/{name}/push", {"tag": tag}, headers={"X-Registry-Auth": auth})


def login(c: Client, body: dict[str, str]) -> Any:
    return c.post_json("/auth", None, body)


def search(c: Client, term: str, limit: int | None, filters: str | None, auth: str | None) -> Any:
    r = c.request("GET", "/images/search", {"term": term, "limit": limit, "filters": filters},
                  headers={"X-Registry-Auth": auth} if auth else None)
    try:
        return r.json()
    finally:
        r.close()
