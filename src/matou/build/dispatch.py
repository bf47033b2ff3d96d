"""Executing a parsed Dockerfile (step three): stages, steps, the cache, and the output Docker's CLI expects.

Like Docker's legacy builder, every step commits an image whose parent is the previous step's (``images -a``
shows them), and a step is looked up in the cache by (parent image, the step) before it runs. Output is the
same stream: ``Step N/M : INSTR``, `` ---> Using cache``, `` ---> Running in <id>``, the RUN output as it comes,
`` ---> <id>``, ``Successfully built``/``tagged``, ``aux`` messages with the image ID.

Stages run in Dockerfile order; only those the target needs (through FROM and ``--from``) run at all.
Images and pulls the build needs are resolved before the first step, so a bad reference fails early. If a step
fails, the images this build created are removed again (their cache entries stay pinned, so a rerun is cached
up to the failing step) and no tag changes: tags are applied only after the last step.

Blocking work (copies, layer blobs, image commits, the database) runs in worker threads; the event loop only
orchestrates and streams. The instructions themselves live in ``configsteps`` (config-only), ``runstep`` (RUN)
and ``copystep`` (COPY, ADD); this module is the frame: stages, arguments, the cache and commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import signal as _signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from matou.build import configsteps, layer, runstep
from matou.build import instructions as I
from matou.build.backend import BuildBackend, Emit
from matou.build.cache import BuildCache, make_key
from matou.build.context import BuildContext
from matou.build.copy import Writer
from matou.build.copystep import CopySteps
from matou.build.options import BuildOptions
from matou.build.parser import DockerfileError, parse
from matou.build.runstep import RunSteps, StepFailed
from matou.build.shell import ExpansionError, Lexer
from matou.build.state import PROXY_ARGS, StageState, automatic_args, begin, config_digest, image_config, reload
from matou.errors import InvalidArgument, MatouError, NotFound
from matou.image.model import Image, LayerSource
from matou.image.service import ImageService
from matou.types import reference

SIGNALS = {s.name for s in _signal.Signals}
log = logging.getLogger("matoud.build")


def short(image_id: str | None) -> str:
    return (image_id or "").removeprefix("sha256:")[:12]


class Builder(RunSteps, CopySteps):
    def __init__(self, *, images: ImageService, backend: BuildBackend, cache: BuildCache, context: BuildContext,
                 options: BuildOptions, emit: Emit, workdir: str, cache_mounts: str) -> None:
        self.images = images
        self.backend = backend
        self.cache = cache
        self.ctx = context
        self.opts = options
        self._emit = emit
        self.workdir = workdir
        self.cache_mounts = cache_mounts
        self.df: I.Dockerfile | None = None
        self.lex = Lexer("\\")
        self.meta: dict[str, str | None] = {}
        self.consumed: set[str] = set()
        self.results: dict[int, StageState] = {}
        self.created: list[str] = []  # images this build committed, in order (rolled back on failure)
        self.new_images: set[str] = set()
        self.external: dict[str, str] = {}  # image reference -> image ID, resolved before the first step
        self.step_no = 0
        self.total = 0
        self._quiet_buf: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ output
    async def emit(self, msg: dict[str, Any]) -> None:
        if self.opts.quiet and "stream" in msg:
            self._quiet_buf.append(msg)
            return
        await self._emit(msg)

    async def say(self, text: str) -> None:
        await self.emit({"stream": text})

    async def flush_quiet(self) -> None:
        for m in self._quiet_buf:
            await self._emit(m)
        self._quiet_buf.clear()

    async def step(self, ins: I.Instruction | I.Stage) -> None:
        self.step_no += 1
        text = str(ins.base) if isinstance(ins, I.Stage) else str(ins)
        await self.say(f"Step {self.step_no}/{self.total} : {text}\n")

    def _at(self, ins: I.Instruction, e: Exception) -> MatouError:
        """The error of a step, located: ``Dockerfile:LINE: message``."""
        fn = self.df.filename if self.df else "Dockerfile"
        where = f"{fn}:{ins.line}"
        if isinstance(e, DockerfileError):
            return e
        msg = e.message if isinstance(e, MatouError) else str(e)
        if msg.startswith(where):
            return e if isinstance(e, MatouError) else InvalidArgument(msg)
        cls = type(e) if isinstance(e, MatouError) else InvalidArgument
        out = StepFailed(f"{where}: {msg}", e.code) if isinstance(e, StepFailed) else cls(f"{where}: {msg}")
        return out

    # ------------------------------------------------------------------ entry point
    async def build(self, text: bytes) -> str:
        fn = os.path.basename(self.opts.dockerfile) or "Dockerfile"
        df = I.parse_dockerfile(parse(text, fn))
        self.df = df
        self.lex = Lexer(df.escape)
        if self.opts.platform:
            from matou.types.oci import Platform

            want, host = Platform.parse(self.opts.platform), Platform.host()
            if not host.matches(want):
                raise InvalidArgument(f"cannot build for {self.opts.platform} on this {host.os}/{host.architecture} "
                                      "host: matou does not emulate other architectures")
        self.meta = automatic_args(self.opts.platform)
        for w in df.warnings:
            await self.say(w + "\n")
        try:
            return await self._build(df)
        except BaseException:
            if self.opts.quiet:  # as dockerd does: what was held back helps to understand the failure
                with contextlib.suppress(Exception):
                    await self.flush_quiet()
            await self._rollback()
            raise

    async def _build(self, df: I.Dockerfile) -> str:
        for ins in df.meta_args:
            self._meta_arg(ins)
        target = len(df.stages) - 1
        if self.opts.target:
            idx = df.stage_index(self.opts.target)
            if idx is None:
                raise InvalidArgument(f"failed to reach build target {self.opts.target} in Dockerfile")
            target = idx
        needed = self._needed(df, target)
        label_steps = self._label_steps(df)
        self.total = len(df.meta_args) + sum(1 + len(df.stages[i].instructions) for i in needed) + len(label_steps)
        await self._preflight(df, needed)
        for ins in df.meta_args:
            await self.step(ins)
        for i in needed:
            extra = label_steps if i == target else []
            self.results[i] = await self._stage(df.stages[i], extra)
        final = self.results[target]
        if final.image_id is None:
            raise InvalidArgument("No image was generated. Is your Dockerfile empty?")
        unused = sorted(k for k in self.opts.build_args if k not in self.consumed and k not in PROXY_ARGS)
        if unused:
            await self.say(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
        await self.say(f"Successfully built {short(final.image_id)}\n")
        for t in self.opts.tags:
            await asyncio.to_thread(self.images.tag, final.image_id, t)
            await self.say(f"Successfully tagged {reference.parse(t).with_default_tag().familiar()}\n")
        if self.opts.quiet:
            self._quiet_buf.clear()
            await self._emit({"stream": final.image_id + "\n"})
        return final.image_id

    async def _rollback(self) -> None:
        def run() -> None:
            for image_id in reversed(self.created):
                with contextlib.suppress(MatouError):
                    if self.images.exists(image_id):
                        self.images.remove(image_id, prune=False)

        if self.created:
            await asyncio.to_thread(run)

    # ------------------------------------------------------------------ args and stages
    def _meta_arg(self, ins: I.Arg) -> None:
        env = {k: v for k, v in self.meta.items() if v is not None}
        for name, default in ins.args:
            name = self._expand(ins, name, env)
            value = self._expand(ins, default, env) if default is not None else None
            if name in self.opts.build_args and self.opts.build_args[name] is not None:
                value = self.opts.build_args[name]
            self.meta[name] = value
            self.consumed.add(name)
            if value is not None:
                env[name] = value

    def _expand(self, ins: I.Instruction, word: str, env: dict[str, str]) -> str:
        try:
            return self.lex.process_word(word, env)
        except ExpansionError as e:
            raise self._at(ins, InvalidArgument(str(e))) from None

    def _stage_ref(self, name: str, before: int) -> int | None:
        assert self.df is not None
        idx = self.df.stage_index(name)
        if idx is not None and idx < before:
            return idx
        return None

    def _meta_env(self) -> dict[str, str]:
        return {k: v for k, v in self.meta.items() if v is not None}

    def _needed(self, df: I.Dockerfile, target: int) -> list[int]:
        deps: dict[int, set[int]] = {}
        env = self._meta_env()
        for st in df.stages:
            d: set[int] = set()
            base = self._expand(st.base, st.base.image, env).lower()
            ref = self._stage_ref(base, st.index)
            if ref is not None and df.stages[ref].name == base:
                d.add(ref)
            for ins in st.instructions:
                for frm in self._from_refs(ins, env):
                    r = self._stage_ref(frm, st.index)
                    if r is not None:
                        d.add(r)
            deps[st.index] = d
        need: set[int] = set()
        todo = [target]
        while todo:
            i = todo.pop()
            if i in need:
                continue
            need.add(i)
            todo.extend(deps[i])
        return sorted(need)

    def _from_refs(self, ins: I.Instruction, env: dict[str, str]) -> list[str]:
        out = []
        if isinstance(ins, I.Copy) and ins.flag("from"):
            out.append(self._expand(ins, ins.flag("from") or "", env))
        if isinstance(ins, I.Run):
            for spec in ins.flags.get("mount", []):
                try:
                    m = runstep.parse_mount(self._expand(ins, spec, env))
                except MatouError as e:
                    raise self._at(ins, e) from None
                if m.from_:
                    out.append(m.from_)
        return out

    def _label_steps(self, df: I.Dockerfile) -> list[I.Instruction]:
        out: list[I.Instruction] = []
        for k in sorted(self.opts.labels):
            text = f"LABEL {json.dumps(k)}={json.dumps(self.opts.labels[k])}"
            node = parse(text, df.filename).nodes[0]
            out.append(I.parse_instruction(node, "\\", df.filename))
        return out

    async def _preflight(self, df: I.Dockerfile, needed: list[int]) -> None:
        """Resolve (and pull) every external image the needed stages use, before any step runs."""
        env = self._meta_env()
        for i in needed:
            st = df.stages[i]
            base = self._expand(st.base, st.base.image, env)
            if base.lower() != "scratch" and self._stage_ref(base.lower(), i) is None:
                await self._resolve_external(st.base, base, self.opts.pull)
            for ins in st.instructions:
                for frm in self._from_refs(ins, env):
                    if self._stage_ref(frm.lower(), i) is None and not frm.isdigit():
                        await self._resolve_external(ins, frm, False)
                    elif frm.isdigit() and self._stage_ref(frm, i) is None:
                        raise self._at(ins, InvalidArgument(f"invalid from flag value {frm}: refers to a stage that "
                                                            "is not defined before this one"))
        self._cache_from = []
        for ref in self.opts.cache_from:
            img = await asyncio.to_thread(self.images.lookup, ref)
            if img is not None:
                self._cache_from.append(img)

    async def _resolve_external(self, ins: I.Instruction, ref: str, pull: bool) -> str:
        if ref in self.external:
            return self.external[ref]
        img = None
        if not pull:
            try:
                img = await asyncio.to_thread(self.images.lookup, ref)
            except MatouError as e:
                raise self._at(ins, e) from None
        if img is None or pull:
            try:
                pulled = await self.backend.pull(ref, self.opts.auth, self.emit)
            except MatouError as e:
                if img is None:
                    if pull:
                        local = await asyncio.to_thread(self.images.lookup, ref)
                        if local is not None:
                            await self.say(f"[Warning] could not pull {ref} ({e}); using the local image\n")
                            self.external[ref] = local.id
                            return local.id
                    what = "invalid from flag value" if isinstance(ins, I.Copy) else "unable to pull"
                    raise self._at(ins, type(e)(f"{what} {ref}: no such stage or local image, and pulling it "
                                                f"failed: {e.message}")) from None
                pulled = None
            if pulled is None and pull:
                img = await asyncio.to_thread(self.images.lookup, ref)
            elif pulled is not None:
                self.external[ref] = pulled
                return pulled
        if img is None:
            what = "invalid from flag value" if isinstance(ins, I.Copy) else "unable to find image"
            raise self._at(ins, NotFound(f"{what} {ref!r}: no such stage or image (not found locally, and "
                                         "it could not be pulled)"))
        self.external[ref] = img.id
        return img.id

    # ------------------------------------------------------------------ stages
    async def _load(self, image_id: str) -> tuple[Image, list[LayerSource]]:
        def run() -> tuple[Image, list[LayerSource]]:
            img = self.images.get(image_id)
            return img, self.images.layer_sources(img)

        return await asyncio.to_thread(run)

    async def _stage(self, stage: I.Stage, extra: list[I.Instruction]) -> StageState:
        await self.step(stage)
        env = self._meta_env()
        name = self._expand(stage.base, stage.base.image, env)
        ref = self._stage_ref(name.lower(), stage.index)
        if ref is not None and self.df is not None and self.df.stages[ref].name == name.lower():
            prev = self.results[ref]
            if prev.image_id is None:
                st = begin(stage, None, [])
            else:
                img, layers = await self._load(prev.image_id)
                st = begin(stage, img, layers)
        elif name.lower() == "scratch":
            st = begin(stage, None, [])
        else:
            image_id = self.external.get(name) or await self._resolve_external(stage.base, name, False)
            img, layers = await self._load(image_id)
            st = begin(stage, img, layers)
        triggers = list(st.config.get("OnBuild") or [])
        if triggers:
            st.config["OnBuild"] = None
            await self.say(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n")
            for t in triggers:
                try:
                    node = parse(t, "ONBUILD").nodes[0]
                    ins = I.parse_instruction(node, "\\", "ONBUILD trigger")
                except DockerfileError as e:
                    raise self._at(stage.base, InvalidArgument(f"invalid ONBUILD trigger {t!r}: {e.reason}")) from None
                ins.node.line = stage.base.line
                await self._dispatch(st, ins)
        await self.say(f" ---> {short(st.image_id)}\n")
        for ins in stage.instructions + extra:
            await self.step(ins)
            await self._dispatch(st, ins)
            await self.say(f" ---> {short(st.image_id)}\n")
        if st.image_id:
            await self.emit({"aux": {"ID": st.image_id}})
        return st

    # ------------------------------------------------------------------ expansion environment
    def _allowed_args(self, st: StageState) -> dict[str, str]:
        """Build args in scope with a value (declared ARGs, plus the predefined proxy args when given)."""
        out: dict[str, str] = {}
        for k, v in st.args.items():
            if v is not None:
                out[k] = v
        for k in PROXY_ARGS:
            v = self.opts.build_args.get(k)
            if v is not None and k not in out:
                out[k] = v
        return out

    def _env(self, st: StageState) -> dict[str, str]:
        env = dict(self._allowed_args(st))
        env.update(st.env)
        return env

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self, st: StageState, ins: I.Instruction) -> None:
        t0 = time.perf_counter()
        try:
            await self._dispatch_one(st, ins)
            log.debug("step %s took %.1f ms", str(ins)[:60], (time.perf_counter() - t0) * 1000)
        except DockerfileError:
            raise
        except (MatouError, OSError, ValueError) as e:
            raise self._at(ins, e) from None

    async def _dispatch_one(self, st: StageState, ins: I.Instruction) -> None:
        env = self._env(st)
        x = self.lex.process_word
        change = configsteps.config_change(st, ins, env, self.lex)
        if change is not None:
            await self._commit_config(st, *change)
        elif isinstance(ins, I.Arg):
            parts = []
            for name, default in ins.args:
                name = x(name, env)
                dval = x(default, env) if default is not None else None
                value = dval
                if name in self.opts.build_args and self.opts.build_args[name] is not None:
                    value = self.opts.build_args[name]
                elif value is None and self.meta.get(name) is not None:
                    value = self.meta[name]
                st.args[name] = value
                self.consumed.add(name)
                env = self._env(st)
                parts.append(name if dval is None else f"{name}={dval}")
            await self._commit_config(st, st.nop("ARG " + " ".join(parts)), dict(st.config))
        elif isinstance(ins, I.Workdir):
            path = x(ins.value, env)
            if not path.startswith("/"):
                path = posixpath.join(st.config.get("WorkingDir") or "/", path)
            path = posixpath.normpath(path)
            cfg = dict(st.config)
            cfg["WorkingDir"] = path
            await self._step_with_layer(st, st.nop("WORKDIR " + path, two_spaces=False), cfg,
                                        lambda mnt: Writer(mnt, None, None).mkdirs(path))
        elif isinstance(ins, I.Run):
            await self._run(st, ins)
        elif isinstance(ins, I.Copy):
            await self._copy(st, ins, env)
        else:  # FROM inside a stage cannot happen (stages split on it)
            raise InvalidArgument(f"unexpected instruction {ins.keyword}")

    # ------------------------------------------------------------------ commits and the cache
    async def _try_cache(self, st: StageState, key: str, created_by: str, config: dict[str, Any]) -> bool:
        if self.opts.no_cache:
            return False
        entry = await asyncio.to_thread(self.cache.lookup, key)
        if entry is not None:
            img = await asyncio.to_thread(self._materialize, entry.image_id, entry.parent)
            if img is not None:
                _img, layers = await self._load(img)
                reload(st, _img, layers)
                await self.say(" ---> Using cache\n")
                return True
            await asyncio.to_thread(self.cache.forget, [key])
        for src in getattr(self, "_cache_from", []):
            hit = await asyncio.to_thread(self._from_cache_source, st, src, created_by, config)
            if hit is not None:
                img, layers = await self._load(hit)
                reload(st, img, layers)
                await self.say(" ---> Using cache\n")
                return True
        return False

    def _materialize(self, image_id: str, parent: str | None) -> str | None:
        """The cached step's image; re-registered from its pinned blobs when its row was removed."""
        if self.images.exists(image_id):
            return image_id
        try:
            raw = self.images.content.read(image_id)
            cfg = json.loads(raw)
            layers = []
            for d in (cfg.get("rootfs") or {}).get("diff_ids") or []:
                row = self.images.db.one("SELECT * FROM layer_blobs WHERE diff_id=? ORDER BY size LIMIT 1", (d,))
                if row is None or not self.images.content.exists(row["digest"]):
                    return None
                layers.append(LayerSource(row["digest"], row["media_type"], row["size"], d))
            img = self.images.create_image(raw, layers, parent=parent if parent and self.images.exists(parent)
                                           else None)
        except (MatouError, OSError, ValueError):
            return None
        self.created.append(img.id)
        return img.id

    def _from_cache_source(self, st: StageState, src: Image, created_by: str, config: dict[str, Any]) -> str | None:
        """``--cache-from``: a source image whose history continues this stage's with the same step."""
        hist = src.config.get("history") or []
        n = len(st.history)
        if len(hist) <= n:
            return None
        mine = [(h.get("created_by"), bool(h.get("empty_layer"))) for h in st.history]
        theirs = [(h.get("created_by"), bool(h.get("empty_layer"))) for h in hist[:n]]
        if mine != theirs or src.diff_ids[:len(st.diff_ids)] != st.diff_ids:
            return None
        if hist[n].get("created_by") != created_by:
            return None
        n_layers = len(st.diff_ids) + (0 if hist[n].get("empty_layer") else 1)
        src_layers = self.images.layer_sources(src)[:n_layers]
        if len(src_layers) != n_layers:
            return None
        entry = hist[n]
        cfg = dict(src.config)
        cfg["config"] = json.loads(config_digest(config))
        cfg["history"] = hist[:n + 1]
        cfg["rootfs"] = {"type": "layers", "diff_ids": [lyr.diff_id for lyr in src_layers]}
        cfg["created"] = entry.get("created") or cfg.get("created")
        img = self.images.create_image(json.dumps(cfg, separators=(",", ":")).encode(), src_layers,
                                       parent=st.image_id)
        if img.id not in self.created and img.id != src.id:
            self.created.append(img.id)
        return img.id

    async def _explain(self, st: StageState, created_by: str, sources: dict[str, str] | None) -> None:
        if not self.opts.explain_cache:
            return
        if self.opts.no_cache:
            why = "the cache is disabled (--no-cache)"
        else:
            why = await asyncio.to_thread(self.cache.explain, st.image_id, created_by, sources,
                                          st.missed or (st.image_id in self.new_images))
        await self.say(f" ---> Cache miss: {why}\n")

    async def _commit_config(self, st: StageState, created_by: str, config: dict[str, Any]) -> None:
        await self._step_with_layer(st, created_by, config, None)

    async def _step_with_layer(self, st: StageState, created_by: str, config: dict[str, Any],
                               work: Callable[[str], object] | None, *, extra: str = "",
                               sources: dict[str, str] | None = None,
                               runner: Callable[[], Awaitable[LayerSource | None]] | None = None) -> None:
        """One step: cache lookup, else ``work`` (a function of the mounted snapshot) or ``runner`` (RUN),
        then the commit of the step's image."""
        key = make_key(st.image_id, created_by, extra + "\n" + config_digest(config))
        if await self._try_cache(st, key, created_by, config):
            return
        await self._explain(st, created_by, sources)
        st.missed = True
        new_layer: LayerSource | None = None
        if runner is not None:
            new_layer = await runner()
        elif work is not None:
            parent_chain = self._top_chain(st)
            new_layer = await asyncio.to_thread(self._with_snapshot, parent_chain, work)
        await self._commit(st, created_by, config, new_layer, key, sources)

    def _top_chain(self, st: StageState) -> str | None:
        from matou.types.image import chain_ids

        c = chain_ids(st.diff_ids)
        return c[-1] if c else None

    def _with_snapshot(self, parent_chain: str | None, work: Callable[[str], object]) -> LayerSource | None:
        with layer.writable(self.images, parent_chain, self.workdir) as (key, mnt):
            work(mnt)
        return layer.finish(self.images, key, parent_chain)

    async def _commit(self, st: StageState, created_by: str, config: dict[str, Any], new_layer: LayerSource | None,
                      key: str, sources: dict[str, str] | None) -> None:
        layers = st.layers + ([new_layer] if new_layer is not None else [])
        raw = image_config(st, config, created_by, layers, empty_layer=new_layer is None)
        parent = st.image_id

        def run() -> Image:
            img = self.images.create_image(raw, layers, parent=parent)
            pins = [("blob", img.id)] + [("blob", lyr.digest) for lyr in layers]
            top = img.top_layer
            if top:
                pins.append(("snapshot", top))
            self.cache.record(key, img.id, parent, created_by, sources, pins,
                              new_layer.size if new_layer is not None else 0)
            return img

        img = await asyncio.to_thread(run)
        if img.id not in self.created:
            self.created.append(img.id)
        self.new_images.add(img.id)
        st.image_id = img.id
        st.config = dict(config)
        st.history = list(img.config.get("history") or [])
        st.layers = layers

    async def _from_image_id(self, st: StageState, ins: I.Instruction, ref: str) -> str:
        idx = self._stage_ref(ref.lower(), st.stage.index)
        if idx is not None:
            res = self.results.get(idx)
            if res is None:
                raise InvalidArgument(f"stage {ref!r} was not built")
            return res.image_id or "scratch"
        return self.external.get(ref) or await self._resolve_external(ins, ref, False)

    def _chain(self, st: StageState) -> list[str]:
        from matou.types.image import chain_ids

        return chain_ids(st.diff_ids)
