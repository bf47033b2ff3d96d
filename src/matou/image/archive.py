"""Image archives: ``docker save``'s docker-archive format and the OCI image layout, both directions.

Save writes the classic docker-archive (``manifest.json``, ``repositories``, ``<config>.json``,
``<id>/layer.tar`` with uncompressed layer tars) because every loader reads it (docker, podman, skopeo);
``--format oci`` writes an OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/*``) with the blobs
as stored. Load reads both, plus docker 25+'s hybrid (an OCI layout that also carries ``manifest.json``).

Load streams the archive once: each file is ingested into the content store while hashing (so nothing is
visible until verified), small JSON documents are kept in memory, and images are registered only after
the whole archive was read. A kill at any point leaves verified blobs and nothing registered.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from matou.errors import InvalidArgument, MatouError
from matou.image.model import Image, LayerSource
from matou.image.service import ImageService
from matou.layers.compression import decompressing_reader, detect
from matou.types import oci, reference
from matou.types.digest import Digest

_SMALL = 4 << 20  # JSON documents we keep in memory


@dataclass
class _Entry:
    digest: str
    size: int
    data: bytes | None  # kept for small JSON-ish files


def save(images: ImageService, names: list[str], out: BinaryIO, fmt: str = "docker") -> None:
    if fmt not in ("docker", "docker-archive", "oci", "oci-archive"):
        raise InvalidArgument(f"unsupported save format {fmt!r}: use docker or oci")
    resolved: list[tuple[Image, list[str]]] = []
    for name in names:
        img = images.resolve(name)
        tags: list[str] = []
        try:
            r = reference.parse(name)
            if not r.digest and str(r.with_default_tag()) in img.refs:
                tags = [str(r.with_default_tag())]
        except InvalidArgument:
            r = None
        if not tags and not (r and r.digest):
            if name.removeprefix("sha256:") not in img.id:
                tags = [x for x in img.refs if "@" not in x]
        resolved.append((img, tags))
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if fmt.startswith("oci"):
            _save_oci(images, resolved, tar)
        else:
            _save_docker(images, resolved, tar)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float = 0) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    ti.mtime = int(mtime)
    tar.addfile(ti, io.BytesIO(data))


def _add_dir(tar: tarfile.TarInfo | tarfile.TarFile, name: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    tar.addfile(ti)  # type: ignore[union-attr]


def _save_docker(images: ImageService, resolved: list[tuple[Image, list[str]]], tar: tarfile.TarFile) -> None:
    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for img, tags in resolved:
        cfg_name = img.id.split(":", 1)[1] + ".json"
        if cfg_name not in written:
            _add_bytes(tar, cfg_name, images.content.read(img.id))
            written.add(cfg_name)
        layer_paths = []
        sources = images.layer_sources(img)
        for chain, src in zip(img.chain_ids, sources, strict=True):
            d = chain.split(":", 1)[1]
            path = f"{d}/layer.tar"
            if path not in written:
                _add_dir(tar, d + "/")
                _add_bytes(tar, f"{d}/VERSION", b"1.0")
                _add_bytes(tar, f"{d}/json", json.dumps({"id": d}).encode())
                _add_layer_tar(images, tar, path, src)
                written.add(path)
            layer_paths.append(path)
        repo_tags = [reference.parse(t).familiar() for t in tags]
        manifest.append({"Config": cfg_name, "RepoTags": repo_tags or None, "Layers": layer_paths})
        if layer_paths:
            for t in tags:
                r = reference.parse(t)
                repositories.setdefault(r.familiar_name, {})[r.tag or "latest"] = layer_paths[-1].split("/")[0]
    _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    if repositories:
        _add_bytes(tar, "repositories", json.dumps(repositories).encode())


def _add_layer_tar(images: ImageService, tar: tarfile.TarFile, path: str, src: LayerSource) -> None:
    """Write the layer's uncompressed tar; its sha256 is the diff id, so it must be the exact bytes."""
    size = int(images.db.scalar("SELECT size FROM layers WHERE diff_id=? LIMIT 1", (src.diff_id,)) or -1)
    with images.content.open(src.digest) as raw:
        head = raw.read(8)
        raw.seek(0)
        if detect(head) == "plain":
            size = os.fstat(raw.fileno()).st_size
            stream: IO[bytes] = raw
        else:
            stream = decompressing_reader(raw)
        if size < 0:
            # unknown uncompressed size: measure once
            n = 0
            while chunk := stream.read(1 << 20):
                n += len(chunk)
            size = n
            raw.seek(0)
            stream = decompressing_reader(raw)
        ti = tarfile.TarInfo(path)
        ti.size = size
        ti.mode = 0o644
        tar.addfile(ti, stream)


def _save_oci(images: ImageService, resolved: list[tuple[Image, list[str]]], tar: tarfile.TarFile) -> None:
    _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    written: set[str] = set()
    descs: list[dict[str, Any]] = []
    _add_dir(tar, "blobs/")
    _add_dir(tar, "blobs/sha256/")

    def blob(digest: str) -> None:
        if digest in written:
            return
        written.add(digest)
        p = images.content.path(digest)
        ti = tarfile.TarInfo("blobs/" + digest.replace(":", "/"))
        ti.size = os.path.getsize(p)
        ti.mode = 0o644
        with open(p, "rb") as f:
            tar.addfile(ti, f)

    for img, tags in resolved:
        sources = images.layer_sources(img)
        cfg_raw = images.content.read(img.id)
        if img.manifest_digest and images.content.exists(img.manifest_digest):
            mraw = images.content.read(img.manifest_digest)
            mdigest = img.manifest_digest
            mtype = oci.detect_media_type(mraw, img.manifest_media_type)
        else:
            mtype = oci.OCI_MANIFEST
            mraw = oci.canonical_json(oci.Manifest(
                oci.OCI_MANIFEST, oci.Descriptor(oci.OCI_CONFIG, img.id, len(cfg_raw)),
                tuple(oci.Descriptor(s.media_type, s.digest, s.size) for s in sources)).to_json())
            mdigest = str(Digest.of(mraw))
            images.content.put(mraw)
        blob(img.id)
        for s in sources:
            blob(s.digest)
        blob(mdigest)
        if tags:
            for t in tags:
                r = reference.parse(t)
                descs.append({"mediaType": mtype, "digest": mdigest, "size": len(mraw),
                              "annotations": {"io.containerd.image.name": str(r),
                                              oci.ANNOTATION_REF_NAME: r.tag or "latest"}})
        else:
            descs.append({"mediaType": mtype, "digest": mdigest, "size": len(mraw)})
    _add_bytes(tar, "index.json", json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
                                              "manifests": descs}).encode())


# ---------------------------------------------------------------------------------------------- load

def load(images: ImageService, src: BinaryIO, progress: Callable[[str], None] | None = None) -> list[str]:
    """Load a docker-archive or OCI layout tar (optionally compressed). Returns what it loaded, as docker
    prints it: ``Loaded image: busybox:latest`` / ``Loaded image ID: sha256:...``."""
    entries: dict[str, _Entry] = {}
    stream = decompressing_reader(src)
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as e:
        raise InvalidArgument(f"invalid archive: {e}") from None
    try:
        for ti in tar:
            name = os.path.normpath(ti.name).lstrip("/")
            if name.startswith(".."):
                raise InvalidArgument(f"invalid archive: entry {ti.name!r} leaves the archive")
            if ti.issym() or ti.islnk():
                target = os.path.normpath(os.path.join(os.path.dirname(name), ti.linkname)).lstrip("/")
                if target in entries:
                    entries[name] = entries[target]
                continue
            if not ti.isfile():
                continue
            f = tar.extractfile(ti)
            assert f is not None
            if ti.size <= _SMALL and (name.endswith(".json") or "/" not in name or name == "repositories"):
                data = f.read()
                digest = images.content.put(data)
                entries[name] = _Entry(digest, len(data), data)
                continue
            w = images.content.writer(f"load-{os.getpid()}-{time.monotonic_ns()}", None, ti.size)
            try:
                w.reset()
                w.copy_from(f)
                digest = w.commit()
            except BaseException:
                w.abort()
                raise
            entry = _Entry(digest, ti.size, None)
            if ti.size <= _SMALL:
                entry.data = images.content.read(digest)
            entries[name] = entry
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InvalidArgument(f"invalid archive: {e}") from None
    finally:
        tar.close()

    if "manifest.json" in entries:
        return _load_docker(images, entries, progress)
    if "index.json" in entries:
        return _load_oci(images, entries, progress)
    raise InvalidArgument("invalid archive: neither manifest.json (docker-archive) nor index.json (OCI layout) found")


def _json(entries: dict[str, _Entry], name: str) -> Any:
    e = entries.get(name)
    if e is None or e.data is None:
        raise InvalidArgument(f"invalid archive: {name} missing")
    try:
        return json.loads(e.data)
    except ValueError:
        raise InvalidArgument(f"invalid archive: {name} is not valid JSON") from None


def _load_docker(images: ImageService, entries: dict[str, _Entry], progress: Callable[[str], None] | None) -> list[str]:
    manifest = _json(entries, "manifest.json")
    if not isinstance(manifest, list):
        raise InvalidArgument("invalid archive: manifest.json is not a list")
    out: list[str] = []
    for m in manifest:
        cfg_entry = entries.get(os.path.normpath(m.get("Config", "")))
        if cfg_entry is None or cfg_entry.data is None:
            raise InvalidArgument(f"invalid archive: config {m.get('Config')} missing")
        config = json.loads(cfg_entry.data)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        paths = m.get("Layers") or []
        if len(paths) != len(diff_ids):
            raise InvalidArgument("invalid archive: layer count does not match the config")
        layers = []
        for p, diff in zip(paths, diff_ids, strict=True):
            e = entries.get(os.path.normpath(p))
            if e is None:
                raise InvalidArgument(f"invalid archive: layer {p} missing")
            media = oci.OCI_LAYER if e.digest == diff else oci.OCI_LAYER_GZIP
            layers.append(LayerSource(e.digest, media, e.size, diff))
        refs = []
        for t in m.get("RepoTags") or []:
            refs.append(str(reference.parse(t).with_default_tag()))
        img = images.create_image(cfg_entry.data, layers, refs=refs)
        if refs:
            out += [f"Loaded image: {reference.parse(r).familiar()}" for r in refs]
        else:
            out.append(f"Loaded image ID: {img.id}")
        if progress:
            progress(out[-1])
    return out


def _load_oci(images: ImageService, entries: dict[str, _Entry], progress: Callable[[str], None] | None) -> list[str]:
    def blob_entry(digest: str) -> _Entry:
        e = entries.get("blobs/" + digest.replace(":", "/"))
        if e is None:
            raise InvalidArgument(f"invalid archive: blob {digest} missing")
        if e.digest != digest:
            raise MatouError(f"invalid archive: blob {digest} has content {e.digest}")
        return e

    index = oci.Index.from_json(_json(entries, "index.json"))
    out: list[str] = []
    plat = oci.Platform.host()
    for desc in index.manifests:
        mdesc = desc
        if desc.media_type in oci.INDEX_TYPES:
            sub = oci.Index.from_json(json.loads(blob_entry(desc.digest).data or b"{}"))
            pick = sub.select(plat)
            if pick is None:
                continue
            mdesc = pick
        mentry = blob_entry(mdesc.digest)
        mraw = mentry.data or images.content.read(mentry.digest)
        manifest = oci.Manifest.from_json(json.loads(mraw))
        cfg = blob_entry(manifest.config.digest)
        cfg_raw = cfg.data or images.content.read(cfg.digest)
        config = json.loads(cfg_raw)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layers = []
        for lyr, diff in zip(manifest.layers, diff_ids, strict=False):
            blob_entry(lyr.digest)
            layers.append(LayerSource(lyr.digest, lyr.media_type, lyr.size, diff))
        refs = []
        ann = desc.annotations or {}
        name = ann.get("io.containerd.image.name")
        tag = ann.get(oci.ANNOTATION_REF_NAME)
        if name:
            refs.append(str(reference.parse(name).with_default_tag()))
        elif tag:
            try:
                refs.append(str(reference.parse(tag).with_default_tag()))
            except InvalidArgument:
                pass
        img = images.create_image(cfg_raw, layers, refs=refs, manifest_raw=mraw,
                                  manifest_media_type=manifest.media_type)
        out += [f"Loaded image: {reference.parse(r).familiar()}" for r in refs] or [f"Loaded image ID: {img.id}"]
        if progress:
            progress(out[-1])
    return out
