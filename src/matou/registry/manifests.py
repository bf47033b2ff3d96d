"""What the registry must know about a pushed manifest: its media type, the blobs and manifests it references,
its subject and artifact type. The bytes themselves are stored untouched (their digest is their identity)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from matou.errors import InvalidArgument, Unsupported
from matou.types import oci
from matou.types.digest import Digest

ACCEPTED = (oci.OCI_MANIFEST, oci.OCI_INDEX, oci.DOCKER_MANIFEST, oci.DOCKER_MANIFEST_LIST)
_GENERIC = ("", "application/json", "application/octet-stream")


@dataclass(frozen=True, slots=True)
class Analysis:
    media_type: str
    refs: list[tuple[str, str, int | None]]  # (digest, 'blob'|'manifest', size)
    subject: str | None
    artifact_type: str | None
    annotations: dict[str, str] | None


def _descriptor(d: Any, what: str) -> tuple[str, int]:
    if not isinstance(d, dict):
        raise InvalidArgument(f"{what}: descriptor is not an object")
    digest = d.get("digest")
    size = d.get("size")
    if not isinstance(digest, str):
        raise InvalidArgument(f"{what}: descriptor has no digest")
    Digest.parse(digest)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{what}: descriptor size must be a non-negative integer")
    return digest, size


def analyse(raw: bytes, content_type: str | None) -> Analysis:
    """Parses and checks a manifest; raises InvalidArgument (MANIFEST_INVALID) or Unsupported."""
    declared = (content_type or "").split(";")[0].strip().lower()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("manifest is not a JSON object")
    body_type = doc.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise InvalidArgument("manifest mediaType must be a string")
    if doc.get("schemaVersion") == 1 or declared.startswith("application/vnd.docker.distribution.manifest.v1"):
        raise Unsupported("Docker schema 1 manifests are not supported")
    if declared in _GENERIC:
        media_type = body_type or ("" if "manifests" not in doc and "config" not in doc else
                                   oci.OCI_INDEX if "manifests" in doc else oci.OCI_MANIFEST)
    else:
        media_type = declared
        if body_type and body_type != declared:
            raise InvalidArgument(f"mediaType {body_type} does not match Content-Type {declared}")
    if media_type not in ACCEPTED:
        raise InvalidArgument(f"unsupported manifest media type {media_type or '(none)'}")
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument("manifest schemaVersion must be 2")
    refs: list[tuple[str, str, int | None]] = []
    subject = None
    if isinstance(doc.get("subject"), dict):
        subject = _descriptor(doc["subject"], "subject")[0]
    artifact_type = doc.get("artifactType") if isinstance(doc.get("artifactType"), str) else None
    annotations = doc.get("annotations") if isinstance(doc.get("annotations"), dict) else None
    if media_type in (oci.OCI_MANIFEST, oci.DOCKER_MANIFEST):
        config = doc.get("config")
        digest, size = _descriptor(config, "config")
        refs.append((digest, "blob", size))
        if artifact_type is None and media_type == oci.OCI_MANIFEST:
            artifact_type = config.get("mediaType") if isinstance(config.get("mediaType"), str) else None
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise InvalidArgument("manifest layers must be a list")
        for i, layer in enumerate(layers):
            digest, size = _descriptor(layer, f"layer {i}")
            if layer.get("urls"):
                continue  # foreign / non-distributable layers live elsewhere
            refs.append((digest, "blob", size))
    else:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise InvalidArgument("index manifests must be a list")
        for i, child in enumerate(children):
            digest, size = _descriptor(child, f"manifest {i}")
            refs.append((digest, "manifest", size))
    seen: set[str] = set()
    unique = [r for r in refs if not (r[0] in seen or seen.add(r[0]))]  # type: ignore[func-returns-value]
    return Analysis(media_type, unique, subject, artifact_type, annotations)
