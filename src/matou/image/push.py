"""Push: send an image's layers, config and manifest to a registry, skipping what it already has.

Per layer (in parallel, ``max-concurrent-uploads`` slots daemon-wide):
1. every compressed blob known for the layer's diff id (the image manifest's, then ``layer_blobs``) is checked
   with HEAD; one that exists is "Layer already exists";
2. a local blob that came from another repository of the same registry (``blob_sources``) is mounted
   ("Mounted from alice/base"), which costs no upload;
3. otherwise the blob is uploaded (one PUT with sendfile, or PATCH chunks for very large blobs). A layer stored
   uncompressed (imported or loaded as plain tar) is gzip-compressed first with isal at a fixed level and
   chunking, so the same layer always compresses to the same digest; the result is remembered in ``layer_blobs``.
   A layer whose blob is not local (it "Already existed" when the image was pulled) is fetched from the
   repository it came from, as containerd does.

Then the config blob, then the manifest under the tag: the image's own manifest bytes when its layer blobs are
the ones pushed (the digest stays the same everywhere), else a new one of the same family (OCI or Docker).
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
from dataclasses import dataclass
from typing import Any

from matou.distribution.auth import Credentials
from matou.distribution.client import Repository
from matou.distribution.endpoints import endpoint_for, endpoints, registry_host
from matou.distribution.http import FileBody
from matou.distribution.progress import Reporter, aux, short_id
from matou.errors import InvalidArgument, MatouError, NotFound, Unavailable
from matou.image.model import Image, LayerSource
from matou.image.pull import KeyedLocks, Puller, Transfers, record_sources
from matou.image.service import ImageService
from matou.layers.compression import compressing_writer, detect
from matou.types import oci, reference
from matou.types.reference import Reference
from matou.util.ids import new_id

# blobs larger than this go up in PATCH chunks of this size (a failed chunk is retried, not the whole blob)
CHUNK_SIZE = 256 << 20
_COMPRESS_CHUNK = 1 << 20


@dataclass(frozen=True)
class Blob:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class PushResult:
    tag: str
    digest: str
    size: int


class _WriterFile:
    """The content store writer as the file object ``compressing_writer`` writes into."""

    def __init__(self, w: Any) -> None:
        self.w = w

    def write(self, b: Any) -> int:
        return self.w.write(b)

    def flush(self) -> None:
        pass


def compression_of(media_type: str) -> str:
    if "zstd" in media_type:
        return "zstd"
    if "gzip" in media_type:
        return "gzip"
    return "plain"


def family_media_type(kind: str, docker: bool) -> str:
    if docker and kind == "gzip":
        return oci.DOCKER_LAYER_GZIP
    return {"gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD}.get(kind, oci.OCI_LAYER)


class Pusher:
    def __init__(self, images: ImageService, transfers: Transfers, creds: Credentials, report: Reporter,
                 cancel: threading.Event | None = None, chunk_size: int = CHUNK_SIZE) -> None:
        self.images = images
        self.t = transfers
        self.creds = creds
        self.report = report
        self.cancel = cancel or threading.Event()
        self.chunk_size = chunk_size
        self._compress_locks = KeyedLocks()

    # ------------------------------------------------------------------ blobs
    def _kind(self, digest: str, declared: str) -> str:
        """The blob's real compression (magic bytes), not what a media type claims."""
        try:
            with self.images.content.open(digest) as f:
                return detect(f.read(4))
        except NotFound:
            return compression_of(declared)

    def candidates(self, lyr: LayerSource) -> list[Blob]:
        """Blobs known to hold this layer: the manifest's first, then others recorded for its diff id."""
        out = [Blob(lyr.digest, lyr.media_type, lyr.size)]
        for row in self.images.db.all("SELECT digest, media_type, size FROM layer_blobs WHERE diff_id=? "
                                      "ORDER BY size", (lyr.diff_id,)):
            if row["digest"] != lyr.digest:
                out.append(Blob(row["digest"], row["media_type"], row["size"]))
        return out

    def _sources(self, digest: str, domain: str) -> list[str]:
        return [r["repository"] for r in self.images.db.all(
            "SELECT repository FROM blob_sources WHERE digest=? AND registry=?", (digest, domain))]

    def compress(self, blob: Blob, diff_id: str) -> Blob:
        """Gzip a plain-tar layer blob into the content store (deterministic: fixed level and chunking)."""
        content = self.images.content
        with self._compress_locks.hold(blob.digest):
            for row in self.images.db.all("SELECT digest, media_type, size FROM layer_blobs WHERE diff_id=?",
                                          (diff_id,)):
                if compression_of(row["media_type"]) == "gzip" and content.exists(row["digest"]):
                    return Blob(row["digest"], row["media_type"], row["size"])
            w = content.writer(f"compress-{blob.digest}-{new_id()[:12]}")
            w.reset()
            try:
                with content.open(blob.digest) as src:
                    cw = compressing_writer(_WriterFile(w), "gzip", 1)  # type: ignore[arg-type]
                    while chunk := src.read(_COMPRESS_CHUNK):
                        cw.write(chunk)
                    cw.close()
                digest = w.commit()
            except BaseException:
                w.abort()
                raise
            size = content.info(digest).size
            self.images.db.execute("INSERT OR IGNORE INTO layer_blobs(diff_id, digest, media_type, size) "
                                   "VALUES(?,?,?,?)", (diff_id, digest, oci.OCI_LAYER_GZIP, size))
            return Blob(digest, oci.OCI_LAYER_GZIP, size)

    def fetch_from_source(self, blob: Blob, domain: str, target: Repository) -> bool:
        """Bring a blob we never downloaded (its layer already existed) from the repository it came from."""
        for row in self.images.db.all("SELECT registry, repository FROM blob_sources WHERE digest=?",
                                      (blob.digest,)):
            creds = self.creds if row["registry"] == domain else Credentials()
            for ep in endpoints(row["registry"], self.t.registries.settings, pull=True):
                repo = self.t.registries.repository(ep, row["repository"], creds)
                try:
                    Puller(self.images, self.t, creds, Reporter(None), self.cancel).download(
                        repo, LayerSource(blob.digest, blob.media_type, blob.size, ""))
                    return True
                except MatouError:
                    continue
        _ = target
        return False

    def upload(self, repo: Repository, blob: Blob, id_: str | None, location: str | None = None) -> None:
        content = self.images.content
        loc = location or repo.start_upload()
        assert loc is not None
        size = content.info(blob.digest).size

        def progress(n: int) -> None:
            if self.cancel.is_set():
                raise Unavailable("push cancelled")
            if id_:
                self.report.bytes(id_, "Pushing", n, size)

        with content.open(blob.digest) as f:
            repo.upload(loc, FileBody(f, 0, size), blob.digest, chunk_size=self.chunk_size, progress=progress)

    def push_layer(self, repo: Repository, ref: Reference, lyr: LayerSource) -> Blob:
        id_ = short_id(lyr.diff_id)
        content = self.images.content
        cands = self.candidates(lyr)
        for c in cands:
            if repo.blob_size(c.digest) is not None:
                self.report.layer(id_, "Layer already exists")
                return c
        self._wait_slot(id_)
        try:
            location: str | None = None
            chosen: Blob | None = None
            for c in cands:
                if not content.exists(c.digest) or self._kind(c.digest, c.media_type) == "plain":
                    continue
                for src in self._sources(c.digest, ref.domain):
                    if src == ref.path:
                        continue
                    loc = repo.start_upload(mount=c.digest, from_repo=src)
                    if loc is None:
                        self.report.layer(id_, f"Mounted from {src}")
                        return c
                    location, chosen = loc, c
                    break
                if chosen is not None:
                    break
            if chosen is None:
                chosen = next((c for c in cands if content.exists(c.digest)
                               and self._kind(c.digest, c.media_type) != "plain"), None)
            if chosen is None:
                plain = next((c for c in cands if content.exists(c.digest)), None)
                if plain is not None:
                    chosen = self.compress(plain, lyr.diff_id)
                    if repo.blob_size(chosen.digest) is not None:
                        self.report.layer(id_, "Layer already exists")
                        return chosen
            if chosen is None:
                for c in cands:
                    if self.fetch_from_source(c, ref.domain, repo):
                        chosen = c
                        break
            if chosen is None:
                raise NotFound(f"layer {lyr.diff_id} has no blob here or at the registry it came from; "
                               "pull the image again before pushing it")
            kind = self._kind(chosen.digest, chosen.media_type)
            if compression_of(chosen.media_type) != kind:
                chosen = Blob(chosen.digest, family_media_type(kind, False), chosen.size)
            self.upload(repo, chosen, id_, location)
            self.report.layer(id_, "Pushed")
            return chosen
        finally:
            self.t.uploads.release()

    def _wait_slot(self, id_: str) -> None:
        if self.t.uploads.acquire(blocking=False):
            return
        self.report.layer(id_, "Waiting")
        while not self.t.uploads.acquire(timeout=0.2):
            if self.cancel.is_set():
                raise Unavailable("push cancelled")

    # ------------------------------------------------------------------ manifests
    def manifest_for(self, img: Image, layers: list[Blob], config_size: int) -> tuple[bytes, str]:
        content = self.images.content
        original: oci.Manifest | None = None
        raw: bytes | None = None
        if img.manifest_digest and content.exists(img.manifest_digest):
            raw = content.read(img.manifest_digest)
            try:
                original = oci.Manifest.from_json(json.loads(raw), img.manifest_media_type)
            except (ValueError, MatouError):
                original = None
        if original is not None and raw is not None and original.config.digest == img.id and \
                [(d.digest, d.size) for d in original.layers] == [(b.digest, b.size) for b in layers] and \
                all(compression_of(d.media_type) == compression_of(b.media_type)
                    for d, b in zip(original.layers, layers, strict=True)):
            return raw, original.media_type
        kinds = [compression_of(b.media_type) for b in layers]
        docker = (original is not None and original.media_type == oci.DOCKER_MANIFEST
                  and all(k == "gzip" for k in kinds))
        m = oci.Manifest(
            media_type=oci.DOCKER_MANIFEST if docker else oci.OCI_MANIFEST,
            config=oci.Descriptor(oci.DOCKER_CONFIG if docker else oci.OCI_CONFIG, img.id, config_size),
            layers=tuple(oci.Descriptor(family_media_type(k, docker), b.digest, b.size)
                         for k, b in zip(kinds, layers, strict=True)),
        )
        return json.dumps(m.to_json(), indent=3).encode(), m.media_type

    # ------------------------------------------------------------------ push
    def push_tag(self, repo: Repository, ref: Reference, img: Image) -> PushResult:
        sources = self.images.layer_sources(img)
        seen: set[str] = set()
        for lyr in sources:
            id_ = short_id(lyr.diff_id)
            if id_ not in seen:
                seen.add(id_)
                self.report.layer(id_, "Preparing")
        blobs: list[Blob] = []
        with concurrent.futures.ThreadPoolExecutor(max(1, min(len(sources), 8)), thread_name_prefix="push") as ex:
            futs = [ex.submit(self.push_layer, repo, ref, lyr) for lyr in sources]
            try:
                for f in futs:
                    blobs.append(f.result())
            except BaseException:
                self.cancel.set()
                raise
        config_raw = self.images.content.read(img.id)
        if repo.blob_size(img.id) is None:
            self.upload(repo, Blob(img.id, oci.OCI_CONFIG, len(config_raw)), None)
        raw, media_type = self.manifest_for(img, blobs, len(config_raw))
        tag = ref.tag or "latest"
        digest = repo.put_manifest(tag, raw, media_type)
        if not self.images.content.exists(digest):
            self.images.content.put(raw)
        self.images.add_digest_ref(img.id, f"{ref.name}@{digest}")
        record_sources(self.images.db, [b.digest for b in blobs] + [img.id], ref.domain, ref.path)
        self.report.status(f"{tag}: digest: {digest} size: {len(raw)}")
        self.report.emit(aux({"Tag": tag, "Digest": digest, "Size": len(raw)}))
        return PushResult(tag, digest, len(raw))


def local_tags(images: ImageService, ref: Reference) -> list[Reference]:
    """The tags of ``ref``'s repository that exist here (all of them when ``ref`` has no tag)."""
    if ref.digest:
        raise InvalidArgument("cannot push a digest reference")
    if ref.tag:
        return [ref] if images.lookup(str(ref)) is not None else []
    pattern = ref.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"
    rows = images.db.all("SELECT ref FROM image_refs WHERE kind='tag' AND ref LIKE ? ESCAPE '\\' ORDER BY ref",
                         (pattern,))
    out = []
    for r in rows:
        p = reference.parse(r["ref"])
        if p.name == ref.name and p.tag:
            out.append(p)
    return out


def push(images: ImageService, transfers: Transfers, ref: Reference, creds: Credentials, report: Reporter, *,
         cancel: threading.Event | None = None, chunk_size: int = CHUNK_SIZE) -> list[PushResult]:
    """Push one tag, or every local tag of the repository when ``ref`` has none."""
    tags = local_tags(images, ref)
    if not tags:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar() if ref.tag else ref.familiar_name}")
    report.status(f"The push refers to repository [{ref.name}]")
    ep = endpoint_for(registry_host(ref.domain), transfers.registries.settings)
    repo = transfers.registries.repository(ep, ref.path, creds, push=True)
    pusher = Pusher(images, transfers, creds, report, cancel, chunk_size)
    out = []
    for t in tags:
        img = images.resolve(str(t))
        out.append(pusher.push_tag(repo, t, img))
    return out
