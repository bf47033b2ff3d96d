"""``docker import``: a root filesystem tarball becomes a one-layer image."""

from __future__ import annotations

import json
import os
import time
from typing import BinaryIO

from matou.image.changes import apply_changes
from matou.image.model import Image, LayerSource
from matou.image.service import ImageService, apply_blob_as_layer
from matou.layers.compression import detect
from matou.types import oci, reference
from matou.types.image import rfc3339


def import_rootfs(svc: ImageService, src: BinaryIO, *, changes: list[str] | None = None, message: str = "",
                  ref: str | None = None, platform: oci.Platform | None = None,
                  source_name: str = "-") -> Image:
    w = svc.content.writer(f"import-{os.getpid()}-{time.monotonic_ns()}")
    try:
        w.reset()
        w.copy_from(src)
        digest = w.commit()
    except BaseException:
        w.abort()
        raise
    size = svc.content.info(digest).size
    with svc.content.open(digest) as f:
        kind = detect(f.read(8))
    diff_id, _chain, _size = apply_blob_as_layer(svc, digest, None)
    media = {"gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD}.get(kind, oci.OCI_LAYER)
    plat = platform or oci.Platform.host()
    now = rfc3339()
    cfg: dict = apply_changes({}, changes or [])
    config = {
        "architecture": plat.architecture,
        "os": plat.os,
        "created": now,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": now, "created_by": "", "comment": message or f"Imported from {source_name}"}],
    }
    if plat.variant:
        config["variant"] = plat.variant
    refs = [str(reference.parse(ref).with_default_tag())] if ref else []
    return svc.create_image(oci.canonical_json(config), [LayerSource(digest, media, size, diff_id)], refs=refs)


def config_json(config: dict) -> bytes:
    return json.dumps(config).encode()
