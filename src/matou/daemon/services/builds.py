"""Builds: the daemon's side of ``POST /build``, the build cache rows of ``/system/df`` and ``builder prune``.

A build gets its own directory under ``<data-root>/builds/tmp/<id>`` (the unpacked context, RUN scratch files,
mount points of COPY snapshots), removed when it ends; ``--mount=type=cache`` directories persist under
``<data-root>/builds/cache-mounts``. The builder (``matou.build``) reaches containers and registries only
through ``ContainerBackend``, this module's implementation of ``matou.build.backend.BuildBackend``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from typing import Any, BinaryIO

from matou.build.backend import CreatedFn, Emit, OutputFn, RunResult, RunSpec
from matou.build.cache import BuildCache
from matou.build.context import BuildContext
from matou.build.dispatch import Builder
from matou.build.filestore import FileStore
from matou.build.options import BuildOptions
from matou.daemon.services import Services
from matou.errors import InvalidArgument, MatouError, NotFound
from matou.types import reference
from matou.types.image import rfc3339
from matou.util.ids import new_id
from matou.util.mount import MNT_DETACH, mounts_under, umount

log = logging.getLogger("matoud.builds")
CONTEXT_FILES_MAX_AGE = 7 * 24 * 3600


class ContainerBackend:
    """RUN steps as containers of the containers service; base images through the distribution service."""

    def __init__(self, svcs: Services) -> None:
        self.svcs = svcs

    async def run(self, spec: RunSpec, on_output: OutputFn, on_created: CreatedFn | None = None) -> RunResult:
        containers = self.svcs.containers
        if containers is None:
            raise InvalidArgument("RUN needs the containers service, which this daemon does not have")
        name = f"matou-build-{new_id()[:16]}"
        hc: dict[str, Any] = dict(spec.host_config)
        hc.update({
            "NetworkMode": "bridge" if spec.network in ("default", "") else spec.network,
            "LogConfig": {"Type": "none", "Config": {}},
            "Mounts": [{"Type": "bind", "Source": b.source, "Target": b.target, "ReadOnly": b.readonly}
                       for b in spec.binds] or None,
            "Tmpfs": {k: v for k, v in spec.tmpfs.items()} or None,
            "Privileged": spec.privileged,
        })
        body = {"Image": spec.image_id, "Cmd": spec.argv, "Entrypoint": [], "Env": spec.env,
                "WorkingDir": spec.workdir, "User": spec.user, "Labels": {}, "AttachStdout": True,
                "AttachStderr": True, "Healthcheck": {"Test": ["NONE"]}, "HostConfig": hc}
        try:
            cid, code = await containers.run_attached(body, on_output, name=name, remove=False,
                                                      on_created=on_created)
        except MatouError as e:
            code = getattr(e, "exit_code", None) or getattr(e, "code", None)
            if isinstance(code, int) and code in (126, 127):
                r = on_output(2, (e.message + "\n").encode())
                if asyncio.iscoroutine(r):
                    await r
                return RunResult("", code, "")
            raise
        return RunResult(cid, int(code if code is not None else 255), f"container-{cid}")

    async def remove(self, container_id: str) -> None:
        if not container_id or self.svcs.containers is None:
            return
        with contextlib.suppress(NotFound):
            await self.svcs.containers.remove(container_id, force=True, volumes=True)

    async def pull(self, ref: str, auth: dict[str, Any] | None, emit: Emit) -> str | None:
        dist = self.svcs.distribution
        if dist is None:
            return None
        from matou.distribution.auth import Credentials
        from matou.distribution.endpoints import normalize_server

        r = reference.parse(ref)
        creds = Credentials()
        for server, cfg in (auth or {}).items():
            if isinstance(cfg, dict) and normalize_server(server) == r.domain:
                creds = Credentials.from_json(cfg)
        loop = asyncio.get_running_loop()

        def sink(msg: dict[str, Any]) -> None:
            asyncio.run_coroutine_threadsafe(emit(msg), loop).result()

        results = await asyncio.to_thread(dist.pull, ref, None, None, creds, sink)
        return results[0].image.id if results else None


class BuildsService:
    def __init__(self, svcs: Services) -> None:
        self.svcs = svcs
        self.images = svcs.images.svc
        self.cache = BuildCache(svcs.extra["db"])
        self.root = os.path.join(svcs.config.data_root, "builds")
        self.tmp = os.path.join(self.root, "tmp")
        self.cache_mounts = os.path.join(self.root, "cache-mounts")
        for d in (self.root, self.tmp, self.cache_mounts):
            os.makedirs(d, 0o700, exist_ok=True)
        self.files = FileStore(os.path.join(self.root, "files"))
        self.backend = ContainerBackend(svcs)
        self._running = 0

    async def start(self) -> None:
        """Leftovers of builds that died with the daemon: mounts, directories, uncommitted snapshots."""
        def clean() -> None:
            for mp in sorted(mounts_under(self.tmp), key=len, reverse=True):
                with contextlib.suppress(OSError):
                    umount(mp, MNT_DETACH)
            for name in os.listdir(self.tmp):
                shutil.rmtree(os.path.join(self.tmp, name), ignore_errors=True)
            for s in self.images.snapshots.walk():
                if s.key.startswith("build-") and s.kind == "active":
                    with contextlib.suppress(MatouError):
                        self.images.snapshots.remove(s.key)
            self.files.expire(CONTEXT_FILES_MAX_AGE)

        await asyncio.to_thread(clean)

    # ------------------------------------------------------------------ build
    async def build(self, opts: BuildOptions, body: BinaryIO, emit: Emit) -> str:
        workdir = os.path.join(self.tmp, new_id()[:16])
        os.makedirs(workdir, 0o700)
        self._running += 1
        ctx: BuildContext | None = None
        try:
            t0 = time.perf_counter()
            ctx = await asyncio.to_thread(BuildContext.receive, body, os.path.join(workdir, "context"), self.files)
            log.debug("build context received in %.1f ms (%d entries)", (time.perf_counter() - t0) * 1000,
                      len(ctx.entries))
            ctx.load_dockerignore(opts.dockerfile)
            text = await asyncio.to_thread(_dockerfile, ctx, opts.dockerfile)
            builder = Builder(images=self.images, backend=self.backend, cache=self.cache, context=ctx, options=opts,
                              emit=emit, workdir=workdir, cache_mounts=self.cache_mounts)
            return await builder.build(text)
        finally:
            self._running -= 1
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, _remove_tree, workdir)

    def missing(self, items: list[tuple[str, int]]) -> list[str]:
        """Which context file contents (sha256 hex, size) the daemon lacks (matou's CLI sends only those)."""
        return self.files.missing(items)

    # ------------------------------------------------------------------ cache
    def df(self) -> list[dict[str, Any]]:
        out = []
        for e in self.cache.entries():
            shared = self.images.exists(e.image_id)
            out.append({
                "ID": e.key.removeprefix("sha256:")[:25], "Parent": (e.parent or "").removeprefix("sha256:")[:25],
                "Parents": [e.parent] if e.parent else [], "Type": "regular", "Description": e.created_by,
                "InUse": False, "Shared": shared, "Size": e.size, "CreatedAt": rfc3339(e.created),
                "LastUsedAt": rfc3339(e.last_used), "UsageCount": e.usage_count,
            })
        return out

    def _used_images(self) -> set[str]:
        """Images a tag or a container depends on (and their ancestors): their cache entries are in use."""
        svc = self.images
        roots = {r["image_id"] for r in svc.db.all("SELECT DISTINCT image_id FROM image_refs")}
        roots |= {r["image_id"] for r in svc.db.all("SELECT DISTINCT image_id FROM containers") if r["image_id"]}
        used: set[str] = set()
        for rid in roots:
            cur: str | None = rid
            while cur and cur not in used:
                used.add(cur)
                row = svc.db.one("SELECT parent FROM images WHERE id=?", (cur,))
                cur = row["parent"] if row is not None else None
        return used

    def prune(self, all_: bool = False, until: float | None = None) -> dict[str, Any]:
        """Drop cache entries (unused ones; all with ``all_``), the untagged step images only they kept, then
        collect garbage. Returns Docker's shape with the bytes freed."""
        if self._running:
            raise InvalidArgument("a build is running; prune the build cache when it is done")
        import time

        svc = self.images
        before = int(svc.db.scalar("SELECT COALESCE(SUM(size),0) FROM layers") or 0)
        forgotten: list[str] = []
        while True:  # removing step images can leave more entries unused: repeat until nothing changes
            used = self._used_images()
            doomed = [e for e in self.cache.entries() if (all_ or e.image_id not in used)
                      and (until is None or e.last_used < time.time() - until)]
            if not doomed:
                break
            self.cache.forget([e.key for e in doomed])
            forgotten += [e.key for e in doomed]
            candidates = {e.image_id for e in doomed if e.image_id not in used}
            progress = True
            while progress:
                progress = False
                for image_id in list(candidates):
                    if not svc.exists(image_id):
                        candidates.discard(image_id)
                        continue
                    img = svc.get(image_id)
                    if img.refs or svc.children(image_id) or svc.in_use(image_id):
                        continue
                    with contextlib.suppress(MatouError):
                        svc.remove(image_id, prune=False)
                        candidates.discard(image_id)
                        progress = True
        res = svc.gc()
        after = int(svc.db.scalar("SELECT COALESCE(SUM(size),0) FROM layers") or 0)
        freed = max(0, before - after) + int(res.get("bytes", 0)) + self.files.prune()
        return {"CachesDeleted": [k.removeprefix("sha256:")[:25] for k in forgotten] or None,
                "SpaceReclaimed": freed}


def _dockerfile(ctx: BuildContext, name: str) -> bytes:
    try:
        return ctx.read(name)
    except NotFound:
        if name == "Dockerfile":
            with contextlib.suppress(NotFound):
                return ctx.read("dockerfile")
        raise NotFound(f"Cannot locate specified Dockerfile: {name}") from None


def _remove_tree(path: str) -> None:
    for mp in sorted(mounts_under(path), key=len, reverse=True):
        with contextlib.suppress(OSError):
            umount(mp, MNT_DETACH)
    shutil.rmtree(path, ignore_errors=True)


def attach(svcs: Services) -> None:
    svcs.builds = BuildsService(svcs)
