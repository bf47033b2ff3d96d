"""Pull: resolve a reference at a registry and make the image local, downloading and unpacking in parallel.

The pipeline, per pull:
1. Resolve the manifest (mirrors first, then the registry); an index or manifest list picks the host's platform
   (or ``--platform``). A pull by digest verifies the manifest's digest.
2. Fetch the config (the image ID). Layers whose chain ID is already unpacked print "Already exists".
3. Download the missing layer blobs concurrently (``max-concurrent-downloads`` slots, daemon-wide), each straight
   into the content store, hashing while streaming; a partial download is kept under ``pull-<digest>`` and resumed
   with an HTTP Range request next time (also after a crash).
4. Meanwhile ``ImageService.create_image`` unpacks each layer into its own fresh snapshot directory as soon as its
   blob is complete (in parallel; overlay layers are independent) and commits them in order. A layer is used only
   after its commit, so a crash never leaves a half-unpacked layer in an image.

Blobs of a pull in flight are pinned against garbage collection by a lease (``leases`` table); a pull killed
mid-way leaves its lease to expire, so the next attempt still finds the blobs it completed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from matou.distribution.auth import Credentials
from matou.distribution.client import FetchedManifest, Registries, Repository
from matou.distribution.endpoints import endpoints
from matou.distribution.progress import Reporter, short_id
from matou.errors import (
    Forbidden,
    InvalidArgument,
    MatouError,
    NotFound,
    Unauthorized,
    Unavailable,
    Unsupported,
)
from matou.image.model import Image, LayerSource
from matou.image.service import ImageService
from matou.store.metadata import Database
from matou.types import oci
from matou.types.image import chain_ids
from matou.types.reference import Reference
from matou.util.ids import new_id

CONFIG_LIMIT = 64 << 20
LEASE_TTL = 24 * 3600.0
_BUF = 1 << 20
_REPORT_FROM = 1 << 16


class KeyedLocks:
    """One lock per key (a blob digest), so concurrent pulls never write the same ingest twice."""

    def __init__(self) -> None:
        self._locks: dict[str, list[Any]] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if not entry[1]:
                    self._locks.pop(key, None)


@dataclass
class Transfers:
    """Daemon-wide state shared by pulls and pushes."""

    registries: Registries
    max_downloads: int = 3
    max_uploads: int = 5
    locks: KeyedLocks = field(default_factory=KeyedLocks)

    def __post_init__(self) -> None:
        self.downloads = threading.BoundedSemaphore(max(1, self.max_downloads))
        self.uploads = threading.BoundedSemaphore(max(1, self.max_uploads))


class Lease:
    """Pins blobs against GC while a transfer runs (rows in ``leases``/``lease_resources``)."""

    def __init__(self, db: Database, ttl: float = LEASE_TTL) -> None:
        self.db = db
        self.id = f"pull-{new_id()[:16]}"
        now = time.time()
        db.execute("INSERT INTO leases(id, created, expires) VALUES(?,?,?)", (self.id, now, now + ttl))

    def add(self, digest: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO lease_resources(lease, kind, ref) VALUES(?,?,?)",
                        (self.id, "blob", digest))

    def release(self) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM lease_resources WHERE lease=?", (self.id,))
            c.execute("DELETE FROM leases WHERE id=?", (self.id,))


def drop_expired_leases(db: Database) -> int:
    now = time.time()
    rows = db.all("SELECT id FROM leases WHERE expires IS NOT NULL AND expires < ?", (now,))
    with db.tx() as c:
        for r in rows:
            c.execute("DELETE FROM lease_resources WHERE lease=?", (r["id"],))
            c.execute("DELETE FROM leases WHERE id=?", (r["id"],))
    return len(rows)


def record_sources(db: Database, digests: list[str], registry: str, repository: str) -> None:
    """Remember where blobs live, so a push to another repository of that registry can mount them."""
    with db.tx() as c:
        for d in dict.fromkeys(digests):
            c.execute("INSERT OR IGNORE INTO blob_sources(digest, registry, repository) VALUES(?,?,?)",
                      (d, registry, repository))


@dataclass(frozen=True)
class PullResult:
    image: Image
    digest: str  # the digest of the manifest (or index) the reference resolved to
    updated: bool
    ref: str  # what was pulled, as docker shows it (busybox:latest)


def denied_message(ref: Reference) -> str:
    return (f"pull access denied for {ref.familiar_name}, repository does not exist or may require "
            f"'matou login'")


class _Counting(io.RawIOBase):
    """A blob being unpacked, reporting "Extracting" progress as it is read."""

    def __init__(self, f: Any, on_read: Callable[[int], None]) -> None:
        super().__init__()
        self._f = f
        self._on_read = on_read
        self._done = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b)
        if n:
            self._done += n
            if self._done >= _REPORT_FROM:  # not the few bytes read to sniff the compression
                self._on_read(self._done)
        return n or 0

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


class Puller:
    """One pull of one reference. ``cancel`` (set when the client goes away) stops downloads between chunks."""

    def __init__(self, images: ImageService, transfers: Transfers, creds: Credentials, report: Reporter,
                 cancel: threading.Event | None = None) -> None:
        self.images = images
        self.t = transfers
        self.creds = creds
        self.report = report
        self.cancel = cancel or threading.Event()

    # ------------------------------------------------------------------ manifests
    def resolve(self, ref: Reference) -> tuple[Repository, FetchedManifest]:
        """The manifest (or index) the reference names, from the first endpoint that has it."""
        what = ref.digest or ref.tag or "latest"
        errors: list[MatouError] = []
        for ep in endpoints(ref.domain, self.t.registries.settings, pull=True):
            repo = self.t.registries.repository(ep, ref.path, self.creds)
            try:
                return repo, repo.get_manifest(what)
            except (Unauthorized, Forbidden) as e:
                errors.append(e)
            except NotFound as e:
                errors.append(e)
            except Unavailable as e:
                errors.append(e)
        last = errors[-1] if errors else Unavailable("no registry endpoint")
        if isinstance(last, NotFound) and "manifest unknown" in str(last).lower():
            shown = f"{ref.familiar_name}@{ref.digest}" if ref.digest else f"{ref.familiar_name}:{what}"
            raise NotFound(f"manifest for {shown} not found: manifest unknown: manifest unknown")
        if isinstance(last, (NotFound, Unauthorized, Forbidden)):
            detail = str(last).split(": ", 1)[-1]
            raise type(last)(f"{denied_message(ref)}: {detail}")
        raise last

    def platform_manifest(self, repo: Repository, top: FetchedManifest,
                          platform: oci.Platform | None) -> FetchedManifest:
        if top.media_type == oci.DOCKER_MANIFEST_V1_SIGNED:
            raise Unsupported("image manifest schema 1 is not supported; push the image again with a current client")
        if top.media_type not in oci.INDEX_TYPES:
            return top
        idx = oci.Index.from_json(json.loads(top.raw), top.media_type)
        want = platform or oci.Platform.host()
        desc = idx.select(want)
        if desc is None:
            raise NotFound(f"no matching manifest for {want} in the manifest list entries")
        m = repo.get_manifest(desc.digest)
        if m.media_type in oci.INDEX_TYPES:
            raise Unsupported("nested image indexes are not supported")
        return m

    # ------------------------------------------------------------------ blobs
    def _wait_slot(self, id_: str) -> None:
        if self.t.downloads.acquire(blocking=False):
            return
        self.report.layer(id_, "Waiting")
        while not self.t.downloads.acquire(timeout=0.2):
            self._check_cancel()

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Unavailable("pull cancelled")

    def download(self, repo: Repository, lyr: LayerSource) -> None:
        """Fetch one blob into the content store (resuming a partial one), verifying size and digest."""
        digest, id_ = lyr.digest, short_id(lyr.digest)
        content = self.images.content
        with self.t.locks.hold(digest):
            if content.exists(digest):
                self.report.layer(id_, "Download complete")
                return
            self._wait_slot(id_)
            try:
                w = content.writer(f"pull-{digest}", digest, lyr.size)
                try:
                    resp, start = repo.open_blob(digest, w.offset)
                    if start != w.offset:
                        w.reset()
                    with resp:
                        while True:
                            self._check_cancel()
                            data = resp.read1(_BUF)
                            if not data:
                                break
                            w.write(data)
                            self.report.bytes(id_, "Downloading", w.offset, lyr.size)
                    if w.offset != lyr.size:
                        raise Unavailable(f"download of {digest} ended after {w.offset} of {lyr.size} bytes")
                    self.report.layer(id_, "Verifying Checksum")
                    w.commit()
                finally:
                    w.close()
            finally:
                self.t.downloads.release()
        self.report.layer(id_, "Download complete")

    # ------------------------------------------------------------------ the pull
    def pull(self, ref: Reference, platform: oci.Platform | None = None, tag_ref: bool = True) -> PullResult:
        what = ref.digest or ref.tag or "latest"
        if not ref.digest and not ref.tag:
            ref = ref.with_default_tag()
        repo, top = self.resolve(ref)
        self.report.status(f"Pulling from {ref.path}", what)
        m_fetched = self.platform_manifest(repo, top, platform)
        manifest = oci.Manifest.from_json(json.loads(m_fetched.raw), m_fetched.media_type)
        db = self.images.db
        lease = Lease(db)
        try:
            result = self._pull_image(ref, repo, top, m_fetched, manifest, platform, lease, tag_ref)
        except BaseException:
            self.cancel.set()
            raise
        lease.release()
        return result

    def _config(self, repo: Repository, desc: oci.Descriptor) -> bytes:
        content = self.images.content
        if content.exists(desc.digest):
            return content.read(desc.digest)
        return repo.read_blob(desc.digest, CONFIG_LIMIT)

    def _pull_image(self, ref: Reference, repo: Repository, top: FetchedManifest, m_fetched: FetchedManifest,
                    manifest: oci.Manifest, platform: oci.Platform | None, lease: Lease,
                    tag_ref: bool) -> PullResult:
        content = self.images.content
        for d in [top.digest, m_fetched.digest, manifest.config.digest] + [x.digest for x in manifest.layers]:
            lease.add(d)
        for d in manifest.layers:
            if d.media_type not in oci.LAYER_TYPES and d.media_type:
                raise Unsupported(f"unsupported layer media type {d.media_type}")
            if d.urls and d.media_type in (oci.DOCKER_LAYER_FOREIGN,):
                raise Unsupported("foreign layers (with urls) are not supported")
        futures: dict[str, concurrent.futures.Future[None]] = {}
        pool = concurrent.futures.ThreadPoolExecutor(max(1, min(len(manifest.layers) + 1, 9)),
                                                     thread_name_prefix="pull")
        try:
            # Blobs never seen here cannot belong to a layer we have: download them while the config comes.
            # (Known blobs wait for the config, which tells whether their layer is already unpacked.)
            db = self.images.db
            known = {d.digest for d in manifest.layers
                     if db.one("SELECT 1 FROM layer_blobs WHERE digest=?", (d.digest,)) is not None}
            config_fut = pool.submit(self._config, repo, manifest.config)
            for d in manifest.layers:
                if d.digest not in known and d.digest not in futures and not content.exists(d.digest):
                    self.report.layer(short_id(d.digest), "Pulling fs layer")
                    futures[d.digest] = pool.submit(self.download, repo, LayerSource(d.digest, d.media_type,
                                                                                     d.size, ""))
            config_raw = config_fut.result()
            layers = self._layers(ref, manifest, config_raw, platform, top)
            chain = chain_ids([lyr.diff_id for lyr in layers])
            previous = self.images.lookup(str(ref)) if tag_ref and not ref.digest else None
            if ref.digest:
                previous = self.images.lookup(f"{ref.name}@{ref.digest}")
            for lyr, c in zip(layers, chain, strict=True):
                if lyr.digest in futures:
                    continue
                if self.images.has_layer(c):
                    self.report.layer(short_id(lyr.digest), "Already exists")
                else:
                    self.report.layer(short_id(lyr.digest), "Pulling fs layer")
                    futures[lyr.digest] = pool.submit(self.download, repo, lyr)

            def opener(lyr: LayerSource) -> Any:
                fut = futures.get(lyr.digest)
                if fut is None:  # unpacked when we looked, gone since: fetch it now
                    fut = futures.setdefault(lyr.digest, pool.submit(self.download, repo, lyr))
                fut.result()
                self._check_cancel()
                id_ = short_id(lyr.digest)
                total = lyr.size
                return _Counting(content.open(lyr.digest),
                                 lambda n: self.report.bytes(id_, "Extracting", n, total))

            def unpacked(digest: str, state: str) -> None:
                if state == "Pull complete":
                    self.report.layer(short_id(digest), "Pull complete")

            refs = [str(ref)] if tag_ref and ref.tag and not ref.digest else []
            img = self.images.create_image(config_raw, layers, refs=refs, manifest_raw=m_fetched.raw,
                                           manifest_media_type=m_fetched.media_type, progress=unpacked,
                                           opener=opener)
            for fut in futures.values():
                fut.result()  # surface a download error even if its layer was not needed in the end
        except BaseException:
            self.cancel.set()
            raise
        finally:
            pool.shutdown(wait=True)
        if top.digest != m_fetched.digest:
            content.put(top.raw)
        self.images.add_digest_ref(img.id, f"{ref.name}@{top.digest}")
        record_sources(self.images.db, [x.digest for x in manifest.layers] + [manifest.config.digest],
                       ref.domain, ref.path)
        self.report.status(f"Digest: {top.digest}")
        updated = previous is None or previous.id != img.id
        return PullResult(self.images.get(img.id), top.digest, updated, ref.familiar())

    @staticmethod
    def _layers(ref: Reference, manifest: oci.Manifest, config_raw: bytes, platform: oci.Platform | None,
                top: FetchedManifest) -> list[LayerSource]:
        """The manifest's layers with their diff ids from the config, after checking the two agree."""
        try:
            config = json.loads(config_raw)
        except ValueError:
            raise InvalidArgument(f"image config {manifest.config.digest} is not valid JSON") from None
        if not isinstance(config, dict):
            raise InvalidArgument(f"image config {manifest.config.digest} is not a JSON object")
        if platform is not None and top.media_type not in oci.INDEX_TYPES:
            have = oci.Platform(str(config.get("os", "")), str(config.get("architecture", "")), config.get("variant"))
            if not platform.matches(have):
                raise NotFound(f"image with reference {ref.familiar()} was found but does not match the specified "
                               f"platform: wanted {platform}, actual: {have}")
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(manifest.layers):
            raise InvalidArgument(f"the manifest lists {len(manifest.layers)} layers but the image config "
                                  f"{len(diff_ids)}")
        return [LayerSource(d.digest, d.media_type, d.size, diff)
                for d, diff in zip(manifest.layers, diff_ids, strict=True)]

def pull(images: ImageService, transfers: Transfers, ref: Reference, creds: Credentials, report: Reporter, *,
         platform: oci.Platform | None = None, all_tags: bool = False,
         cancel: threading.Event | None = None) -> list[PullResult]:
    """Pull one reference, or every tag of its repository (``all_tags``); reports docker's status lines."""
    if all_tags:
        if ref.tag or ref.digest:
            raise InvalidArgument("tag can't be used with --all-tags/-a")
        eps = endpoints(ref.domain, transfers.registries.settings, pull=True)
        repo = transfers.registries.repository(eps[-1], ref.path, creds)
        try:
            tags = repo.tags()
        except (NotFound, Unauthorized, Forbidden) as e:
            raise type(e)(f"{denied_message(ref)}: {str(e).split(': ', 1)[-1]}") from None
        results = []
        for tag in tags:
            p = Puller(images, transfers, creds, report, cancel)
            results.append(p.pull(ref.with_tag(tag), platform))
        shown = ref.familiar_name
        updated = any(r.updated for r in results)
        report.status(f"Status: Downloaded newer image for {shown}" if updated
                      else f"Status: Image is up to date for {shown}")
        return results
    p = Puller(images, transfers, creds, report, cancel)
    res = p.pull(ref, platform)
    shown = ref.familiar() if (ref.tag or ref.digest) else ref.with_default_tag().familiar()
    report.status(f"Status: Downloaded newer image for {shown}" if res.updated
                  else f"Status: Image is up to date for {shown}")
    return [res]
