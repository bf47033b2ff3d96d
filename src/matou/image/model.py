"""Records of the image service."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from matou.types import reference
from matou.types.image import chain_ids


@dataclass(frozen=True, slots=True)
class LayerSource:
    """A layer blob in the content store and what it unpacks to."""

    digest: str
    media_type: str
    size: int
    diff_id: str


@dataclass(slots=True)
class Image:
    id: str
    config: dict[str, Any]
    manifest_digest: str | None
    manifest_media_type: str | None
    created: str
    size: int
    parent: str | None
    added_at: float
    last_tag_time: str | None
    refs: list[str] = field(default_factory=list)

    @property
    def diff_ids(self) -> list[str]:
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)

    @property
    def top_layer(self) -> str | None:
        c = self.chain_ids
        return c[-1] if c else None

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def repo_tags(self) -> list[str]:
        return sorted(reference.parse(r).familiar() for r in self.refs if "@" not in r)

    @property
    def repo_digests(self) -> list[str]:
        return sorted(reference.parse(r).familiar() for r in self.refs if "@" in r)

    @property
    def container_config(self) -> dict[str, Any]:
        return dict(self.config.get("config") or {})

    @staticmethod
    def config_from_bytes(raw: bytes) -> dict[str, Any]:
        return json.loads(raw)
