"""The image service: local images, their names, layers and lifecycle.

An image is its config blob (whose digest is the image ID), a manifest blob, layer blobs in the content
store, and one committed snapshot per layer, named by chain id. Names live in ``image_refs``, normalised
(``docker.io/library/busybox:latest``). Everything else (pull, build, load) ends in ``create_image``.

Unpacking: layers an image lacks are applied in parallel, each into its own fresh snapshot directory (overlay
layers are independent), then committed in order; a crash leaves only uncommitted ``extract-*`` snapshots,
which nothing references and ``gc`` removes.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from matou.errors import Conflict, InvalidArgument, NotFound
from matou.image.model import Image, LayerSource
from matou.layers.apply import apply_layer
from matou.store.content import ContentStore
from matou.store.metadata import Database
from matou.store.snapshots import OverlaySnapshotter
from matou.types import oci, reference
from matou.types.image import chain_ids, parse_time, rfc3339
from matou.util.ids import new_id

# (image_id) -> [(container_id, running)]
InUse = Callable[[str], list[tuple[str, bool]]]
ProgressFn = Callable[[str, str], None]


class ImageService:
    def __init__(self, content: ContentStore, db: Database, snapshots: OverlaySnapshotter,
                 in_use: InUse | None = None, unpack_workers: int | None = None) -> None:
        self.content = content
        self.db = db
        self.snapshots = snapshots
        self.in_use: InUse = in_use or (lambda _id: [])
        self.unpack_workers = unpack_workers or max(2, os.cpu_count() or 2)
        self._chain_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.on_event: Callable[[str, str, dict[str, str]], None] = lambda action, id_, attrs: None

    # ------------------------------------------------------------------ lookups
    def _row_to_image(self, row: Any) -> Image:
        config = json.loads(self.content.read(row["id"]))
        refs = [r["ref"] for r in self.db.all("SELECT ref FROM image_refs WHERE image_id=? ORDER BY ref", (row["id"],))]
        return Image(row["id"], config, row["manifest_digest"], row["manifest_media_type"], row["created"],
                     row["size"], row["parent"], row["added_at"], row["last_tag_time"], refs)

    def get(self, image_id: str) -> Image:
        row = self.db.one("SELECT * FROM images WHERE id=?", (image_id,))
        if row is None:
            raise NotFound(f"No such image: {image_id}")
        return self._row_to_image(row)

    def exists(self, image_id: str) -> bool:
        return self.db.one("SELECT 1 FROM images WHERE id=?", (image_id,)) is not None

    def lookup(self, name: str) -> Image | None:
        """Docker's resolution order: full ID, reference (tag or digest), unique ID prefix."""
        if not name:
            return None
        if name.startswith("sha256:") and len(name) == 71:
            return self.get(name) if self.exists(name) else None
        hexish = name.removeprefix("sha256:")
        try:
            ref = reference.parse(name)
        except InvalidArgument:
            ref = None
        if ref is not None:
            row = self.db.one("SELECT image_id FROM image_refs WHERE ref=?", (str(ref.with_default_tag()),))
            if row is not None:
                return self.get(row["image_id"])
            if ref.digest:
                # name@digest also matches an image whose manifest has that digest, or whose id is that digest
                row = self.db.one("SELECT id FROM images WHERE manifest_digest=? OR id=?", (ref.digest, ref.digest))
                if row is not None:
                    return self.get(row["id"])
        if all(c in "0123456789abcdef" for c in hexish) and 1 <= len(hexish) <= 64:
            rows = self.db.all("SELECT id FROM images WHERE id LIKE ?", (f"sha256:{hexish}%",))
            if len(rows) == 1:
                return self.get(rows[0]["id"])
            if len(rows) > 1:
                raise Conflict(f"ambiguous image ID prefix {name}: {len(rows)} images match")
        return None

    def resolve(self, name: str) -> Image:
        img = self.lookup(name)
        if img is None:
            raise NotFound(f"No such image: {name}")
        return img

    def list(self, all_: bool = False) -> list[Image]:
        rows = self.db.all("SELECT * FROM images ORDER BY created DESC")
        images = [self._row_to_image(r) for r in rows]
        if not all_:
            parents = {i.parent for i in images if i.parent}
            images = [i for i in images if i.refs or i.id not in parents]
        return images

    def children(self, image_id: str) -> list[str]:
        return [r["id"] for r in self.db.all("SELECT id FROM images WHERE parent=?", (image_id,))]

    # ------------------------------------------------------------------ creation
    def create_image(self, config_raw: bytes, layers: list[LayerSource], *, refs: Iterable[str] = (),
                     parent: str | None = None, manifest_raw: bytes | None = None,
                     manifest_media_type: str | None = None, progress: ProgressFn | None = None,
                     opener: Callable[[LayerSource], Any] | None = None) -> Image:
        """Register an image whose config and layer blobs are in the content store; unpacks missing layers.

        ``opener`` (see ``unpack``) lets a pull hand over each layer as soon as its download completes."""
        config = json.loads(config_raw)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layers):
            raise InvalidArgument(f"image config lists {len(diff_ids)} layers but {len(layers)} were given")
        for d, layer in zip(diff_ids, layers, strict=True):
            if layer.diff_id and layer.diff_id != d:
                raise InvalidArgument(f"layer {layer.digest} unpacks to {layer.diff_id}, config says {d}")
        layers = [LayerSource(lyr.digest, lyr.media_type, lyr.size, d) for lyr, d in zip(layers, diff_ids, strict=True)]
        self.unpack(layers, progress=progress, opener=opener)
        image_id = self.content.put(config_raw)
        if manifest_raw is None:
            manifest_media_type = oci.OCI_MANIFEST
            manifest_raw = oci.canonical_json(oci.Manifest(
                media_type=oci.OCI_MANIFEST,
                config=oci.Descriptor(oci.OCI_CONFIG, image_id, len(config_raw)),
                layers=tuple(oci.Descriptor(lyr.media_type, lyr.digest, lyr.size) for lyr in layers),
            ).to_json())
        manifest_digest = self.content.put(manifest_raw)
        size = sum(self._layer_size(c) for c in chain_ids(diff_ids))
        now = time.time()
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO images(id, manifest_digest, manifest_media_type, created, size, parent, added_at) "
                "VALUES(?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "manifest_digest=COALESCE(images.manifest_digest, excluded.manifest_digest), "
                "manifest_media_type=COALESCE(images.manifest_media_type, excluded.manifest_media_type), "
                "parent=COALESCE(images.parent, excluded.parent)",
                (image_id, manifest_digest, manifest_media_type, config.get("created") or rfc3339(0), size, parent, now),
            )
            for lyr in layers:
                c.execute("INSERT OR IGNORE INTO layer_blobs(diff_id, digest, media_type, size) VALUES(?,?,?,?)",
                          (lyr.diff_id, lyr.digest, lyr.media_type, lyr.size))
            for r in refs:
                self._set_ref(c, r, image_id)
        self.on_event("create", image_id, {})
        return self.get(image_id)

    def _layer_size(self, chain_id: str) -> int:
        v = self.db.scalar("SELECT size FROM layers WHERE chain_id=?", (chain_id,))
        return int(v or 0)

    def has_layer(self, chain_id: str) -> bool:
        return self.db.one("SELECT 1 FROM layers WHERE chain_id=?", (chain_id,)) is not None

    def _chain_lock(self, chain_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._chain_locks.setdefault(chain_id, threading.Lock())

    def unpack(self, layers: list[LayerSource], progress: ProgressFn | None = None,
               opener: Callable[[LayerSource], Any] | None = None) -> list[str]:
        """Make sure every layer's snapshot exists; returns the chain ids. Parallel apply, ordered commit."""
        chain = chain_ids([lyr.diff_id for lyr in layers])
        todo = [(i, lyr, chain[i]) for i, lyr in enumerate(layers) if not self.has_layer(chain[i])]
        if not todo:
            return chain
        locks = [self._chain_lock(c) for _i, _l, c in todo]
        for lk in locks:
            lk.acquire()
        try:
            todo = [(i, lyr, c) for i, lyr, c in todo if not self.has_layer(c)]
            if not todo:  # a concurrent unpack (another pull of the same image) did it while we waited
                return chain
            keys: dict[int, str] = {}

            def work(item: tuple[int, LayerSource, str]) -> tuple[int, int]:
                i, lyr, c = item
                key = f"extract-{new_id()[:16]}-{c}"
                keys[i] = key
                self.snapshots.prepare(key, None, labels={"matou/extract": c})
                dest = self.snapshots.dir(key)
                if progress:
                    progress(lyr.digest, "Extracting")
                src = opener(lyr) if opener else self.content.open(lyr.digest)
                with src:
                    # blobs come from the content store, which verified their digests at ingest
                    res = apply_layer(src, dest, expected_diff_id=lyr.diff_id, compressed_digest=False)
                if progress:
                    progress(lyr.digest, "Pull complete")
                return i, res.size

            sizes: dict[int, int] = {}
            try:
                if len(todo) == 1:
                    i, s = work(todo[0])
                    sizes[i] = s
                else:
                    with concurrent.futures.ThreadPoolExecutor(min(self.unpack_workers, len(todo))) as ex:
                        for i, s in ex.map(work, todo):
                            sizes[i] = s
                # ordered commit
                for i, lyr, c in todo:
                    parent = chain[i - 1] if i > 0 else None
                    with self.db.tx() as cx:
                        self.snapshots.commit(c, keys[i], parent=parent)
                        cx.execute("INSERT INTO layers(chain_id, diff_id, parent, snapshot, size, created) "
                                   "VALUES(?,?,?,?,?,?)", (c, lyr.diff_id, parent, c, sizes[i], time.time()))
            except BaseException:
                for key in keys.values():
                    if self.snapshots.exists(key):
                        self.snapshots.remove(key)
                raise
        finally:
            for lk in locks:
                lk.release()
        return chain

    # ------------------------------------------------------------------ names
    def _set_ref(self, c: Any, ref: str, image_id: str) -> None:
        r = reference.parse(ref)
        if not r.digest:
            r = r.with_default_tag()
        kind = "digest" if r.digest else "tag"
        c.execute("INSERT INTO image_refs(ref, image_id, kind) VALUES(?,?,?) "
                  "ON CONFLICT(ref) DO UPDATE SET image_id=excluded.image_id", (str(r), image_id, kind))
        if kind == "tag":
            c.execute("UPDATE images SET last_tag_time=? WHERE id=?", (rfc3339(), image_id))

    def tag(self, source: str, target: str) -> None:
        img = self.resolve(source)
        r = reference.parse(target)
        if r.digest:
            raise InvalidArgument("refusing to create a tag with a digest reference")
        with self.db.tx() as c:
            self._set_ref(c, str(r.with_default_tag()), img.id)
        self.on_event("tag", img.id, {"name": r.with_default_tag().familiar()})

    def add_digest_ref(self, image_id: str, ref: str) -> None:
        with self.db.tx() as c:
            self._set_ref(c, ref, image_id)

    def remove(self, name: str, force: bool = False, prune: bool = True) -> list[dict[str, str]]:
        """Docker's rmi: untag, and delete when the last reference goes (unless used)."""
        img = self.resolve(name)
        out: list[dict[str, str]] = []
        users = self.in_use(img.id)
        by_ref = self._is_reference(name, img)
        if by_ref:
            r = reference.parse(name)
            ref = str(r if r.digest else r.with_default_tag())
            others = [x for x in img.refs if x != ref]
            # docker: the last tag of a repository takes that repository's digest references along
            linked = [] if r.digest or any("@" not in x and x.rsplit(":", 1)[0] == r.name for x in others) else \
                [x for x in others if x.rsplit("@", 1)[0] == r.name]
            others = [x for x in others if x not in linked]
            if others:
                for x in [ref, *linked]:
                    self._untag(x, img, out)
                return out
            if users and not force:
                cid = users[0][0]
                raise Conflict(f'conflict: unable to remove repository reference "{name}" (must force) - '
                               f"container {cid[:12]} is using its referenced image {img.short_id}")
            for x in [ref, *linked]:
                self._untag(x, img, out)
            if users:
                return out
        else:
            running = [cid for cid, run in users if run]
            if running:
                raise Conflict(f"conflict: unable to delete {img.short_id} (cannot be forced) - "
                               f"image is being used by running container {running[0][:12]}")
            if users and not force:
                raise Conflict(f"conflict: unable to delete {img.short_id} (must be forced) - "
                               f"image is being used by stopped container {users[0][0][:12]}")
            tags = [r for r in img.refs if "@" not in r]
            if len(tags) > 1 and not force:
                raise Conflict(f"conflict: unable to delete {img.short_id} (must be forced) - "
                               f"image is referenced in multiple repositories")
            for ref in list(img.refs):
                self._untag(ref, img, out)
            if users:
                return out
        if self.children(img.id):
            if by_ref:
                return out
            raise Conflict(f"conflict: unable to delete {img.short_id} (cannot be forced) - image has dependent child images")
        self._delete(img, out, prune)
        return out

    def _is_reference(self, name: str, img: Image) -> bool:
        try:
            r = reference.parse(name)
        except InvalidArgument:
            return False
        ref = str(r if r.digest else r.with_default_tag())
        return ref in img.refs

    def _untag(self, ref: str, img: Image, out: list[dict[str, str]]) -> None:
        self.db.execute("DELETE FROM image_refs WHERE ref=?", (ref,))
        img.refs = [r for r in img.refs if r != ref]
        out.append({"Untagged": reference.parse(ref).familiar()})
        self.on_event("untag", img.id, {"name": reference.parse(ref).familiar()})

    def _delete(self, img: Image, out: list[dict[str, str]], prune: bool) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM image_refs WHERE image_id=?", (img.id,))
            c.execute("DELETE FROM images WHERE id=?", (img.id,))
        out.append({"Deleted": img.id})
        self.on_event("delete", img.id, {})
        if prune and img.parent and self.exists(img.parent):
            parent = self.get(img.parent)
            if not parent.refs and not self.children(parent.id) and not self.in_use(parent.id):
                self._delete(parent, out, prune)

    def prune(self, dangling: bool = True, until: float | None = None,
              labels: list[str] | None = None) -> dict[str, Any]:
        deleted: list[dict[str, str]] = []
        before = self._disk_usage()
        for img in self.list(all_=True):
            if not self.exists(img.id):
                continue
            if dangling and img.refs:
                continue
            if self.in_use(img.id) or self.children(img.id):
                continue
            if until is not None and parse_time(img.created) >= until:
                continue
            if labels and not _labels_match(img.container_config.get("Labels") or {}, labels):
                continue
            if not dangling:
                for ref in list(img.refs):
                    self._untag(ref, img, deleted)
            self._delete(img, deleted, prune=True)
        self.gc()
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": max(0, before - self._disk_usage())}

    def _disk_usage(self) -> int:
        return int(self.db.scalar("SELECT COALESCE(SUM(size), 0) FROM layers") or 0)

    # ------------------------------------------------------------------ garbage collection
    def gc(self, extra_snapshots: Iterable[str] = (), extra_blobs: Iterable[str] = ()) -> dict[str, int]:
        """Remove layers, snapshots and blobs no image, container, build or lease references."""
        from matou.store.gc import collect

        return collect(self.content, self.db, self.snapshots, extra_snapshots=set(extra_snapshots),
                       extra_blobs=set(extra_blobs))

    # ------------------------------------------------------------------ views
    def history(self, name: str) -> list[dict[str, Any]]:
        img = self.resolve(name)
        hist = img.config.get("history") or []
        chain = img.chain_ids
        layer_idx = 0
        rows = []
        for h in hist:
            size = 0
            if not h.get("empty_layer"):
                if layer_idx < len(chain):
                    size = self._layer_size(chain[layer_idx])
                layer_idx += 1
            rows.append({"Id": "<missing>", "Created": int(parse_time(h.get("created"))),
                         "CreatedBy": h.get("created_by", ""), "Tags": None, "Size": size,
                         "Comment": h.get("comment", "")})
        if not rows:
            rows = [{"Id": "<missing>", "Created": int(parse_time(img.created)), "CreatedBy": "", "Tags": None,
                     "Size": img.size, "Comment": ""}]
        rows.reverse()
        rows[0]["Id"] = img.id
        rows[0]["Tags"] = img.repo_tags or None
        # ancestors (builds record parents) get their ids, like docker
        parent = img.parent
        i = 1
        while parent and self.exists(parent) and i < len(rows):
            p = self.get(parent)
            n_hist = len(p.config.get("history") or [])
            j = len(rows) - n_hist
            if 0 < j < len(rows):
                rows[j]["Id"] = p.id
                rows[j]["Tags"] = p.repo_tags or None
            parent = p.parent
            i += 1
        return rows

    def summary(self, img: Image, containers: int = -1) -> dict[str, Any]:
        """One row of GET /images/json."""
        labels = img.container_config.get("Labels") or {}
        return {
            "Id": img.id,
            "ParentId": img.parent or "",
            "RepoTags": img.repo_tags or (["<none>:<none>"] if not img.repo_digests else []),
            "RepoDigests": img.repo_digests or ([] if img.repo_tags else ["<none>@<none>"]),
            "Created": int(parse_time(img.created)),
            "Size": img.size,
            "SharedSize": -1,
            "VirtualSize": img.size,
            "Labels": labels or {},
            "Containers": containers,
        }

    def inspect(self, name: str) -> dict[str, Any]:
        from matou.types.image import docker_container_config

        img = self.resolve(name)
        cfg = img.config
        lower = [self.snapshots.dir(c) for c in reversed(img.chain_ids) if self.snapshots.exists(c)]
        graph: dict[str, Any] = {"Name": "overlay2", "Data": {}}
        if lower:
            graph["Data"] = {"MergedDir": "", "UpperDir": lower[-1] if len(lower) else "",
                             "LowerDir": ":".join(reversed(lower[:-1])) if len(lower) > 1 else "",
                             "WorkDir": ""}
        return {
            "Id": img.id,
            "RepoTags": img.repo_tags,
            "RepoDigests": img.repo_digests,
            "Parent": img.parent or "",
            "Comment": next((h.get("comment", "") for h in reversed(cfg.get("history") or []) if h.get("comment")), ""),
            "Created": img.created,
            "Container": "",
            "ContainerConfig": docker_container_config({}),
            "DockerVersion": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Config": docker_container_config(cfg.get("config")),
            "Architecture": cfg.get("architecture", ""),
            "Variant": cfg.get("variant"),
            "Os": cfg.get("os", ""),
            "Size": img.size,
            "VirtualSize": img.size,
            "GraphDriver": graph,
            "RootFS": {"Type": "layers", "Layers": img.diff_ids},
            "Metadata": {"LastTagTime": img.last_tag_time or "0001-01-01T00:00:00Z"},
        }

    def layer_sources(self, img: Image) -> list[LayerSource]:
        """The layer blobs of an image, from its manifest (or the best known blob per diff id)."""
        if img.manifest_digest and self.content.exists(img.manifest_digest):
            m = oci.Manifest.from_json(json.loads(self.content.read(img.manifest_digest)))
            if len(m.layers) == len(img.diff_ids):
                return [LayerSource(d.digest, d.media_type, d.size, diff)
                        for d, diff in zip(m.layers, img.diff_ids, strict=True)]
        out = []
        for diff in img.diff_ids:
            row = self.db.one("SELECT * FROM layer_blobs WHERE diff_id=? ORDER BY size LIMIT 1", (diff,))
            if row is None:
                raise NotFound(f"no blob known for layer {diff}")
            out.append(LayerSource(row["digest"], row["media_type"], row["size"], diff))
        return out


def _labels_match(have: dict[str, str], wanted: list[str]) -> bool:
    for w in wanted:
        neg = w.startswith("!")
        w = w.lstrip("!")
        k, eq, v = w.partition("=")
        hit = k in have and (not eq or have[k] == v)
        if hit == neg:
            return False
    return True


def apply_blob_as_layer(svc: ImageService, digest: str, parent_chain: str | None) -> tuple[str, str, int]:
    """Unpack a layer blob whose diff id is not known yet (import, build COPY). Returns (diff_id, chain_id, size)."""
    key = f"extract-{new_id()[:16]}"
    svc.snapshots.prepare(key, None)
    try:
        with svc.content.open(digest) as f:
            res = apply_layer(f, svc.snapshots.dir(key), compressed_digest=False)  # a verified blob
        chain = _chain_of(parent_chain, res.diff_id)
        with svc._chain_lock(chain):
            if svc.has_layer(chain):
                svc.snapshots.remove(key)
                return res.diff_id, chain, res.size
            with svc.db.tx() as c:
                svc.snapshots.commit(chain, key, parent=parent_chain)
                c.execute("INSERT INTO layers(chain_id, diff_id, parent, snapshot, size, created) VALUES(?,?,?,?,?,?)",
                          (chain, res.diff_id, parent_chain, chain, res.size, time.time()))
        return res.diff_id, chain, res.size
    except BaseException:
        if svc.snapshots.exists(key):
            svc.snapshots.remove(key)
        raise


def commit_snapshot_as_layer(svc: ImageService, key: str, diff_id: str, parent_chain: str | None, size: int) -> str:
    """Turn an active snapshot whose upper dir already holds a layer (a build step) into the committed layer."""
    chain = _chain_of(parent_chain, diff_id)
    with svc._chain_lock(chain):
        if svc.has_layer(chain):
            svc.snapshots.remove(key)
            return chain
        with svc.db.tx() as c:
            svc.snapshots.commit(chain, key, parent=parent_chain)
            c.execute("INSERT INTO layers(chain_id, diff_id, parent, snapshot, size, created) VALUES(?,?,?,?,?,?)",
                      (chain, diff_id, parent_chain, chain, size, time.time()))
    return chain


def _chain_of(parent_chain: str | None, diff_id: str) -> str:
    if parent_chain is None:
        return diff_id
    import hashlib

    return "sha256:" + hashlib.sha256(f"{parent_chain} {diff_id}".encode()).hexdigest()
