"""OCI image spec v1.1 and Docker image manifest v2 schema 2 records.

JSON is the wire format; these dataclasses keep the fields code reads, while ``raw`` keeps the exact bytes
so digests stay stable (a manifest is never re-serialised once it has a digest).
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass
from typing import Any

from matou.errors import InvalidArgument

# media types
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
LAYER_TYPES = (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_LAYER_NONDIST_GZIP,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_FOREIGN,
)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True, slots=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def host(cls) -> Platform:
        m = _platform.machine()
        arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
                "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)
        variant = "v8" if arch == "arm64" else ("v7" if arch == "arm" else None)
        return cls("linux", arch, variant)

    @classmethod
    def parse(cls, value: str) -> Platform:
        parts = value.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidArgument(f"invalid platform {value!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Platform | None:
        if not d:
            return None
        return cls(d.get("os", ""), d.get("architecture", ""), d.get("variant"))

    def matches(self, other: Platform | None) -> bool:
        if other is None:
            return False
        if self.os != other.os or self.architecture != other.architecture:
            return False
        if self.variant and other.variant and self.variant != other.variant:
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    urls: tuple[str, ...] | None = None
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Descriptor:
        try:
            return cls(
                media_type=d.get("mediaType", ""),
                digest=d["digest"],
                size=int(d["size"]),
                annotations=d.get("annotations"),
                platform=Platform.from_json(d.get("platform")),
                urls=tuple(d["urls"]) if d.get("urls") else None,
                artifact_type=d.get("artifactType"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgument(f"invalid descriptor: {e}") from None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform:
            d["platform"] = self.platform.to_json()
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        return d


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2; same shape)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any], media_type: str | None = None) -> Manifest:
        if not isinstance(d, dict) or "config" not in d:
            raise InvalidArgument("invalid manifest: no config")
        return cls(
            media_type=d.get("mediaType") or media_type or OCI_MANIFEST,
            config=Descriptor.from_json(d["config"]),
            layers=tuple(Descriptor.from_json(x) for x in d.get("layers") or []),
            annotations=d.get("annotations"),
            subject=Descriptor.from_json(d["subject"]) if d.get("subject") else None,
            artifact_type=d.get("artifactType"),
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type, "config": self.config.to_json(),
                             "layers": [x.to_json() for x in self.layers]}
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        if self.subject:
            d["subject"] = self.subject.to_json()
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass(frozen=True, slots=True)
class Index:
    """An OCI image index or a Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any], media_type: str | None = None) -> Index:
        if not isinstance(d, dict) or not isinstance(d.get("manifests"), list):
            raise InvalidArgument("invalid index: no manifests")
        return cls(
            media_type=d.get("mediaType") or media_type or OCI_INDEX,
            manifests=tuple(Descriptor.from_json(x) for x in d["manifests"]),
            annotations=d.get("annotations"),
            subject=Descriptor.from_json(d["subject"]) if d.get("subject") else None,
            artifact_type=d.get("artifactType"),
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                             "manifests": [x.to_json() for x in self.manifests]}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def select(self, want: Platform) -> Descriptor | None:
        for m in self.manifests:
            if want.matches(m.platform):
                return m
        return None


def detect_media_type(raw: bytes, declared: str | None = None) -> str:
    """The media type of a manifest document: the declared header if any, else its mediaType field."""
    try:
        d = json.loads(raw)
    except ValueError:
        raise InvalidArgument("manifest is not valid JSON") from None
    if not isinstance(d, dict):
        raise InvalidArgument("manifest is not a JSON object")
    mt = d.get("mediaType")
    if mt:
        return mt
    if declared:
        return declared
    if "manifests" in d:
        return OCI_INDEX
    if "config" in d:
        return OCI_MANIFEST
    if d.get("schemaVersion") == 1:
        return DOCKER_MANIFEST_V1_SIGNED
    raise InvalidArgument("cannot tell the manifest's media type")


def canonical_json(obj: Any) -> bytes:
    """Compact, key-sorted JSON: what docker writes for image configs and manifests it creates."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
