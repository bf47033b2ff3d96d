"""COPY and ADD: which sources, what their content hash is (the cache key), and how they land in the image.

Planning needs no file I/O for the build context (the index has every file's digest), so a cached COPY costs a
dictionary walk. Sources: context paths (globs with ``*``, ``?``, ``[...]``, ``**``; symlinks followed inside the
context; nothing outside it), heredocs (``COPY <<EOF /path``), URLs and local archives (ADD), and paths in
another stage or image (``--from``, hashed by the image's layer chain).

Docker's destination rules: a directory source copies its contents; several sources need a destination ending
in ``/``; a file goes into the destination when it ends in ``/`` or is a directory in the image, else becomes
that path; a relative destination is relative to WORKDIR.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from matou.build import layer
from matou.build.context import BuildContext, Entry, has_glob, hash_entries
from matou.build.copy import Src, Writer, is_archive, parse_chmod, resolve_owner, src_of_path, tree_of_dir
from matou.build.fetch import Download, download, is_url
from matou.build.instructions import Copy
from matou.build.parser import Heredoc
from matou.build.state import StageState
from matou.errors import InvalidArgument, NotFound
from matou.util.dockerignore import Matcher, clean
from matou.util.fs import resolve_in_root

if TYPE_CHECKING:
    from matou.build.dispatch import Builder


@dataclass
class PlanItem:
    kind: str  # context | image | heredoc | url
    name: str  # the name it gets inside a destination directory
    is_dir: bool = False
    rel: str = ""  # context path, or path in the --from image
    entry: Entry | None = None
    data: bytes = b""
    download: Download | None = None
    archive: bool = False  # ADD: unpack this local archive
    keep_path: bool = False  # --parents: a directory lands at dest/<its path>, not in dest itself


@dataclass
class CopyPlan:
    items: list[PlanItem]
    hash: str = ""
    manifest: dict[str, str] | None = field(default=None)


def _outside(word: str) -> InvalidArgument:
    return InvalidArgument(f"forbidden path outside the build context: {word}")


def _not_found(word: str) -> NotFound:
    return NotFound(f"file not found in build context or excluded by .dockerignore: stat {word}: "
                    "file does not exist")


def _rel_of(word: str) -> str:
    p = clean(word)
    if p == ".." or p.startswith("../"):
        raise _outside(word)
    p = p.lstrip("/")
    return "" if p == "." else p


def plan_context(ctx: BuildContext, words: list[str], heredocs: dict[str, Heredoc | bytes], is_add: bool,
                 parents: bool, exclude: Matcher | None) -> CopyPlan:
    items: list[PlanItem] = []
    for w in words:
        if w in heredocs:
            doc = heredocs[w]
            data = doc if isinstance(doc, bytes) else doc.content.encode()
            items.append(PlanItem("heredoc", w, data=data))
            continue
        rel = _rel_of(w)
        if has_glob(rel):
            matches = [m for m in ctx.glob(rel) if not (exclude and exclude.excluded(m))]
            if not matches:
                raise NotFound(f"no source files were specified (nothing in the build context matches {w!r})")
        else:
            matches = [rel]
        for m in matches:
            target = ctx.resolve(m)
            ent = ctx.get(target)
            if ent is None:
                raise _not_found(w)
            name = m if parents else posixpath.basename(m)
            item = PlanItem("context", name, ent.kind == "dir", target, ent, keep_path=parents)
            if is_add and ent.kind == "file" and is_archive(ent.src):
                item.archive = True
            items.append(item)
    return _hashed(ctx, items, exclude)


def _hashed(ctx: BuildContext, items: list[PlanItem], exclude: Matcher | None) -> CopyPlan:
    hashes: list[str] = []
    manifest: dict[str, str] = {}
    for it in items:
        if it.kind == "heredoc":
            hashes.append("file:" + hashlib.sha256(b"heredoc\0" + it.name.encode() + b"\0" + it.data).hexdigest())
            manifest["<<" + it.name] = hashlib.sha256(it.data).hexdigest()[:16]
            continue
        ent = it.entry
        assert ent is not None
        if it.is_dir:
            rows = [("", ent)] + [(e.path[len(it.rel) + 1:] if it.rel else e.path, e)
                                  for e in ctx.walk(it.rel, exclude)]
            hashes.append("dir:" + hash_entries(rows))
            for _r, e in rows[1:]:
                if e.kind != "dir":
                    manifest[e.path] = f"{e.digest[:16]} {e.mode:o}"
        else:
            kind = "archive" if it.archive else "file"
            hashes.append("file:" + hash_entries([(it.name + ("\0" + kind if it.archive else ""), ent)]))
            manifest[ent.path] = f"{ent.digest[:16]} {ent.mode:o}"
    return CopyPlan(items, _combine(hashes), manifest)


def _combine(hashes: list[str]) -> str:
    if len(hashes) == 1:
        return hashes[0]
    return "multi:" + hashlib.sha256(",".join(hashes).encode()).hexdigest()


def plan_url(d: Download, dest_is_dir: bool) -> PlanItem:
    return PlanItem("url", d.name, download=d)


def url_hash(d: Download, name: str) -> str:
    return "file:" + hashlib.sha256(f"url\0{name}\0{d.digest}\0{d.mtime}".encode()).hexdigest()


def image_hash(chain: str | None, words: list[str]) -> str:
    return "image:" + hashlib.sha256(f"{chain or 'scratch'}\0{chr(0).join(words)}".encode()).hexdigest()


def plan_image(root: str, words: list[str], parents: bool, exclude: Matcher | None) -> list[PlanItem]:
    """Sources in a mounted image root (``COPY --from``); globs match below their fixed prefix."""
    from matou.util.dockerignore import compile_pattern

    items: list[PlanItem] = []
    for w in words:
        rel = clean("/" + w).lstrip("/")
        if has_glob(rel):
            rx = compile_pattern(rel)
            fixed = []
            for comp in rel.split("/"):
                if has_glob(comp):
                    break
                fixed.append(comp)
            base = "/".join(fixed)
            host_base = resolve_in_root(root, "/" + base)
            found = []
            for s in [src_of_path(host_base, "")] + tree_of_dir(host_base):
                p = posixpath.join(base, s.rel) if s.rel else base
                if p and rx.match(p) and not (exclude and exclude.excluded(p)):
                    if found and p.startswith(found[-1] + "/"):
                        continue
                    found.append(p)
            if not found:
                raise NotFound(f"no source files were specified (nothing matches {w!r} in the source image)")
            matches = found
        else:
            matches = [rel]
        for m in matches:
            host = resolve_in_root(root, "/" + m)
            try:
                s = src_of_path(host)
            except FileNotFoundError:
                raise NotFound(f"{w}: no such file or directory in the source image") from None
            items.append(PlanItem("image", m if parents else posixpath.basename(m) or "", s.kind == "dir", m,
                                  keep_path=parents))
    return items


def execute(plan: CopyPlan, w: Writer, dest: str, dest_is_dir: bool, ctx: BuildContext | None,
            image_root: str | None, exclude: Matcher | None) -> None:
    """Write the planned sources through ``w`` (a mounted snapshot)."""
    if len(plan.items) > 1 and not dest_is_dir:
        raise InvalidArgument("When using COPY with more than one source file, the destination must be a "
                              "directory and end with a /")
    now = int(time.time())
    for it in plan.items:
        if it.kind == "heredoc":
            target = posixpath.join(dest, it.name) if dest_is_dir or w.is_dir(dest) else dest
            w.put_bytes(it.data, target, 0o644, now)
            continue
        if it.kind == "url":
            d = it.download
            assert d is not None
            target = posixpath.join(dest, it.name) if dest_is_dir or w.is_dir(dest) else dest
            w.put(Src(d.path, "", "file", 0o600, 0, 0, d.mtime or now, d.size), target)
            continue
        if it.kind == "context":
            assert ctx is not None and it.entry is not None
            if it.is_dir:
                base = it.rel
                cut = len(base) + 1 if base else 0
                w.put_tree((_ctx_src(ctx, e, e.path[cut:]) for e in ctx.walk(base, exclude)),
                           posixpath.join(dest, it.name) if it.keep_path else dest)
                continue
            if it.archive:
                w.extract(it.entry.src, dest)
                continue
            target = posixpath.join(dest, it.name) if dest_is_dir or w.is_dir(dest) else dest
            w.put(_ctx_src(ctx, it.entry, ""), target)
            continue
        assert image_root is not None
        host = resolve_in_root(image_root, "/" + it.rel)
        if it.is_dir:
            items = tree_of_dir(host)
            if exclude:
                items = [s for s in items if not exclude.excluded(s.rel)]
            w.put_tree(items, posixpath.join(dest, it.name) if it.keep_path else dest)
        else:
            target = posixpath.join(dest, it.name) if dest_is_dir or w.is_dir(dest) else dest
            w.put(src_of_path(host), target)


def _ctx_src(ctx: BuildContext, e: Entry, rel: str) -> Src:
    return Src(e.src, rel, e.kind, e.mode, e.uid, e.gid, e.mtime, e.size,
               e.digest if e.kind == "symlink" else "")


def heredoc_word(w: str) -> str | None:
    m = re.match(r"^\d*<<-?(['\"]?)(.+?)\1$", w)
    return m.group(2) if m else None


class CopySteps:
    """COPY and ADD steps of the builder (a mixin of ``dispatch.Builder``)."""

    async def _copy(self: Builder, st: StageState, ins: Copy, env: dict[str, str]) -> None:
        x = self.lex.process_word
        kw = "ADD" if ins.is_add else "COPY"
        dest_raw = x(ins.dest, env)
        chown = x(ins.flag("chown") or "", env)
        chmod_s = x(ins.flag("chmod") or "", env)
        chmod = parse_chmod(chmod_s)
        frm = x(ins.flag("from") or "", env)
        excludes = [x(e, env) for e in ins.flags.get("exclude", [])]
        exclude = Matcher(excludes) if excludes else None
        parents = ins.bool_flag("parents")
        checksum = x(ins.flag("checksum") or "", env) or None
        heredocs: dict[str, Heredoc | bytes] = {}
        for doc in ins.heredocs:
            content = x(doc.content, env) if doc.expand else doc.content
            heredocs[doc.name] = content.encode()
        words: list[str] = []
        for w in ins.sources:
            hd = heredoc_word(w)
            if hd is not None and hd in heredocs:
                words.append(hd)
            else:
                words.append(x(w, env))
        workdir = st.config.get("WorkingDir") or "/"
        dest = dest_raw if dest_raw.startswith("/") else posixpath.join(workdir, dest_raw)
        dest_is_dir = dest_raw.endswith("/") or dest_raw in (".", "") or dest_raw.endswith("/.")
        dest = posixpath.normpath(dest) if dest not in ("/", "") else "/"
        flags_txt = "".join(f"--{k}={v} " for k, v in (("from", frm), ("chown", chown), ("chmod", chmod_s)) if v)
        if excludes:
            flags_txt += "".join(f"--exclude={e} " for e in sorted(excludes))
        if parents:
            flags_txt += "--parents "

        image_root_chain: list[str] | None = None
        downloads = []
        if frm:
            image_id = await self._from_image_id(st, ins, frm)
            if any(is_url(w) for w in words):
                raise InvalidArgument("COPY --from does not take URLs")
            chain = [] if image_id == "scratch" else (await self._load(image_id))[0].chain_ids
            image_root_chain = chain
            src_hash = image_hash(chain[-1] if chain else None, words)
            plan = CopyPlan([], src_hash, None)
        else:
            urls = [w for w in words if is_url(w) and w not in heredocs]
            if urls and not ins.is_add:
                raise InvalidArgument("source can't be a URL for COPY")
            local = [w for w in words if w not in urls]
            plan = await asyncio.to_thread(plan_context, self.ctx, local, heredocs, ins.is_add, parents,
                                           exclude)
            hashes = [plan.hash] if local else []
            for u in urls:
                d = await asyncio.to_thread(download, u, self.workdir, checksum)
                downloads.append(d.path)
                plan.items.append(plan_url(d, dest_is_dir))
                hashes.append(url_hash(d, d.name))
            if urls:
                plan.hash = hashes[0] if len(hashes) == 1 else "multi:" + hashlib.sha256(
                    ",".join(hashes).encode()).hexdigest()
            if len(plan.items) > 1 and not dest_is_dir:
                raise InvalidArgument(f"When using {kw} with more than one source file, the destination must be a "
                                      "directory and end with a /")
        created_by = st.nop(f"{kw} {flags_txt}{plan.hash} in {dest_raw} ", two_spaces=False)
        cfg = dict(st.config)

        def work(mnt: str) -> None:
            owner = resolve_owner(mnt, chown) if chown else (None if frm else (0, 0))
            w = Writer(mnt, owner, chmod)
            if image_root_chain is not None:
                with layer.read_only(self.images, image_root_chain, self.workdir) as root:
                    items = plan_image(root, words, parents, exclude)
                    if len(items) > 1 and not dest_is_dir:
                        raise InvalidArgument("When using COPY with more than one source file, the destination "
                                              "must be a directory and end with a /")
                    execute(CopyPlan(items), w, dest, dest_is_dir, None, root, exclude)
                return
            execute(plan, w, dest, dest_is_dir, self.ctx, None, exclude)

        try:
            await self._step_with_layer(st, created_by, cfg, work, sources=plan.manifest)
        finally:
            for p in downloads:
                with contextlib.suppress(OSError):
                    os.unlink(p)
