"""RUN: the command line (shell or exec form, heredocs) and its ``--mount`` / ``--network`` / ``--security`` flags.

Heredocs follow BuildKit: a RUN made of one heredoc runs its body with the shell, or as a script when the body
starts with ``#!`` (mounted read-only at ``/dev/pipes/NAME``); any other heredoc is handed to the shell as
written (``cat <<EOF > f``). Mounts never reach the layer: secrets and caches are bind mounts from the host,
tmpfs is tmpfs, and the mount points the runtime creates for them are removed before the commit.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matou.build import copystep, layer
from matou.build.backend import Bind, RunSpec
from matou.build.instructions import Run
from matou.build.state import PROXY_ARGS, StageState, image_config
from matou.errors import InvalidArgument, MatouError, NotFound, Unsupported
from matou.image.model import LayerSource
from matou.util.ids import new_id

if TYPE_CHECKING:
    from matou.build.dispatch import Builder

class StepFailed(MatouError):
    """A RUN exited non-zero; ``code`` is its exit code (the CLI exits with it, as docker does)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


_ONLY_HEREDOC = re.compile(r"^\s*\d*<<-?\s*(['\"]?)([^'\"\s<]+)\1\s*$")


@dataclass
class RunMount:
    type: str = "bind"
    target: str = ""
    source: str = ""
    from_: str = ""
    id: str = ""
    readonly: bool = True
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    size: str = ""
    env: str = ""
    sharing: str = "shared"

    def cache_text(self) -> str:
        """What of the mount goes into the step's cache key (not secret contents, not cache contents)."""
        return (f"{self.type},{self.target},{self.source},{self.from_},{self.id},{int(self.readonly)},"
                f"{self.mode},{self.uid},{self.gid},{self.size},{self.env}")


def _boolval(v: str, key: str) -> bool:
    if v.lower() in ("", "true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise InvalidArgument(f"invalid value for {key}: {v!r}")


def parse_mount(spec: str) -> RunMount:
    """``--mount=type=cache,target=/root/.cache,id=pip`` (CSV fields, ``key=value`` or a bare flag)."""
    try:
        fields = next(csv.reader([spec]))
    except (csv.Error, StopIteration):
        raise InvalidArgument(f"invalid --mount value {spec!r}") from None
    m = RunMount()
    explicit_ro: bool | None = None
    for f in fields:
        k, eq, v = f.strip().partition("=")
        k = k.lower()
        if k == "type":
            if v not in ("bind", "cache", "tmpfs", "secret", "ssh"):
                raise InvalidArgument(f"unsupported mount type {v!r}")
            m.type = v
        elif k in ("target", "dst", "destination"):
            m.target = v
        elif k in ("source", "src"):
            m.source = v
        elif k == "from":
            m.from_ = v
        elif k == "id":
            m.id = v
        elif k in ("ro", "readonly"):
            explicit_ro = _boolval(v if eq else "", k)
        elif k in ("rw", "readwrite"):
            explicit_ro = not _boolval(v if eq else "", k)
        elif k == "mode":
            try:
                m.mode = int(v, 8)
            except ValueError:
                raise InvalidArgument(f"invalid mount mode {v!r}") from None
        elif k in ("uid", "gid"):
            if not v.isdigit():
                raise InvalidArgument(f"invalid mount {k} {v!r}")
            setattr(m, k, int(v))
        elif k == "required":
            m.required = _boolval(v if eq else "", k)
        elif k == "size":
            m.size = v
        elif k == "env":
            m.env = v
        elif k == "sharing":
            if v not in ("shared", "private", "locked"):
                raise InvalidArgument(f"invalid cache sharing {v!r}: shared, private or locked")
            m.sharing = v
        else:
            raise InvalidArgument(f"unexpected key {k!r} in --mount {spec!r}")
    if m.type == "ssh":
        raise Unsupported("RUN --mount=type=ssh is not supported by this builder")
    if m.type == "secret":
        if not m.id and m.target:
            m.id = m.target.rstrip("/").rsplit("/", 1)[-1]
        if not m.id:
            raise InvalidArgument("secret mount needs an id (or a target)")
        if not m.target and not m.env:
            m.target = "/run/secrets/" + m.id
    elif not m.target:
        raise InvalidArgument(f"--mount {spec!r} has no target")
    if m.type == "cache":
        m.readonly = bool(explicit_ro)
        if not m.id:
            m.id = m.target
    elif explicit_ro is not None:
        m.readonly = explicit_ro
    if m.target and not m.target.startswith("/"):
        raise InvalidArgument(f"mount target {m.target!r} must be an absolute path")
    return m


@dataclass
class Command:
    argv: list[str]
    script: tuple[str, str] | None = None  # (name, body): a heredoc run as a file at /dev/pipes/name


def command(ins: Run, shell: list[str]) -> Command:
    """The argv of a RUN, from its form and heredocs."""
    if ins.exec_form is not None:
        if not ins.exec_form:
            raise InvalidArgument("RUN requires at least one argument")
        return Command(list(ins.exec_form))
    text = ins.shell_form
    if ins.heredocs:
        m = _ONLY_HEREDOC.match(text)
        if m and len(ins.heredocs) == 1 and ins.heredocs[0].name == m.group(2):
            doc = ins.heredocs[0]
            if doc.content.startswith("#!"):
                return Command(["/dev/pipes/" + doc.name], (doc.name, doc.content))
            return Command(shell + [doc.content])
        full = text
        for doc in ins.heredocs:
            full += "\n" + doc.content + doc.name
        return Command(shell + [full])
    return Command(shell + [text])


class RunSteps:
    """RUN steps of the builder (a mixin of ``dispatch.Builder``): the container, its mounts, its layer."""

    def _build_env(self: Builder, st: StageState) -> tuple[list[str], list[str]]:
        """(the args a RUN gets as environment, those recorded in its created_by as ``|N k=v``)."""
        env_keys = set(st.env)
        allowed = self._allowed_args(st)
        run_env = [f"{k}={v}" for k, v in allowed.items() if k not in env_keys]
        recorded = sorted(f"{k}={v}" for k, v in allowed.items()
                          if k not in env_keys and not (k in PROXY_ARGS and k not in st.args))
        return run_env, recorded

    async def _run(self: Builder, st: StageState, ins: Run) -> None:
        env = self._env(st)
        cmd = command(ins, st.shell)
        run_env, recorded = self._build_env(st)
        saved = ([f"|{len(recorded)}"] + recorded + cmd.argv) if recorded else list(cmd.argv)
        created_by = " ".join(saved)
        mounts = [parse_mount(self.lex.process_word(m, env)) for m in ins.flags.get("mount", [])]
        network = self.lex.process_word(ins.flag("network") or "default", env)
        if network not in ("default", "none", "host"):
            raise InvalidArgument(f"unsupported RUN --network={network}: default, none or host")
        security = ins.flag("security") or "sandbox"
        if security not in ("sandbox", "insecure"):
            raise InvalidArgument(f"unsupported RUN --security={security}: sandbox or insecure")
        mount_keys = []
        for m in mounts:
            frm = ""
            if m.from_:
                frm = await self._from_image_id(st, ins, m.from_)
            mount_keys.append(m.cache_text() + "," + frm)
        extra = json.dumps({"mounts": mount_keys, "network": network, "security": security})
        cfg = dict(st.config)

        async def runner() -> LayerSource | None:
            return await self._execute_run(st, ins, cmd, run_env, mounts, network, security == "insecure")

        await self._step_with_layer(st, created_by, cfg, None, extra=extra, runner=runner)

    async def _ensure_image(self: Builder, st: StageState) -> str:
        """RUN needs an image to start from: commit the empty scratch state if there is none yet."""
        if st.image_id is not None:
            return st.image_id
        raw = image_config(st, st.config, "", [], empty_layer=True)
        doc = json.loads(raw)
        doc["history"] = []
        img = await asyncio.to_thread(self.images.create_image, json.dumps(doc, separators=(",", ":")).encode(), [])
        if img.id not in self.created:
            self.created.append(img.id)
        st.image_id = img.id
        return img.id

    async def _execute_run(self: Builder, st: StageState, ins: Run, cmd: Command, run_env: list[str],
                           mounts: list[RunMount], network: str, privileged: bool) -> LayerSource | None:
        image_id = await self._ensure_image(st)
        stack = contextlib.ExitStack()
        binds: list[Bind] = []
        tmpfs: dict[str, str] = {}
        extra_env: list[str] = []
        targets = list(layer.RUNTIME_TARGETS)
        scratch = os.path.join(self.workdir, "run-" + new_id()[:12])
        os.makedirs(scratch, 0o700)
        stack.callback(shutil.rmtree, scratch, True)
        try:
            if cmd.script is not None:
                name, body = cmd.script
                path = os.path.join(scratch, "pipes", name)
                os.makedirs(os.path.dirname(path), 0o755)
                with open(path, "w") as f:
                    f.write(body)
                os.chmod(path, 0o755)
                binds.append(Bind(path, "/dev/pipes/" + name, True))
            for m in mounts:
                await self._mount(st, ins, m, binds, tmpfs, extra_env, scratch, stack)
            targets += [b.target for b in binds] + list(tmpfs)
            spec = RunSpec(image_id=image_id, argv=cmd.argv, env=list(st.config.get("Env") or []) + run_env
                           + extra_env, workdir=st.config.get("WorkingDir") or "", user=st.config.get("User") or "",
                           network=self.opts.network_mode if network == "default" else network, binds=binds,
                           tmpfs=tmpfs, privileged=privileged, host_config=dict(self.opts.host_config))
            if self.opts.extra_hosts:
                spec.host_config["ExtraHosts"] = list(self.opts.extra_hosts)
            decoders = {1: codecs.getincrementaldecoder("utf-8")("replace"),
                        2: codecs.getincrementaldecoder("utf-8")("replace")}

            async def on_output(stream: int, data: bytes) -> None:
                text = decoders.get(stream, decoders[1]).decode(data)
                if text:
                    await self.say(text)

            async def on_created(cid: str) -> None:
                await self.say(f" ---> Running in {cid[:12]}\n")

            result = await self.backend.run(spec, on_output, on_created)
        finally:
            stack.close()
        keep = not self.opts.rm
        try:
            if result.exit_code != 0:
                keep = keep and not self.opts.force_rm
                raise StepFailed(f"The command '{' '.join(cmd.argv)}' returned a non-zero code: "
                                 f"{result.exit_code}", result.exit_code)
            parent_chain = self._top_chain(st)
            chain = self._chain(st)

            def finish() -> LayerSource | None:
                lowers = layer.layer_dirs(self.images, chain)
                layer.clean_stubs(self.images.snapshots.dir(result.snapshot), lowers, targets)
                if keep:
                    return self._copy_layer(result.snapshot, parent_chain)
                return layer.finish(self.images, result.snapshot, parent_chain)

            new_layer = await asyncio.to_thread(finish)
        finally:
            if not keep:
                await self.say(f"Removing intermediate container {result.container_id[:12]}\n")
                await self.backend.remove(result.container_id)
        return new_layer

    def _copy_layer(self: Builder, snapshot: str, parent_chain: str | None) -> LayerSource | None:
        """``--rm=false``: the container keeps its snapshot; its changes become a layer by copy."""
        from matou.image.service import apply_blob_as_layer
        from matou.layers.diff import write_diff
        from matou.types import oci

        upper = self.images.snapshots.dir(snapshot)
        if not os.listdir(upper):
            return None
        w = self.images.content.writer(f"build-copy-{new_id()[:12]}")
        w.reset()
        write_diff(upper, w, compression=None)  # type: ignore[arg-type]
        digest = w.commit()
        diff_id, _chain, size = apply_blob_as_layer(self.images, digest, parent_chain)
        with self.images.db.tx() as c:
            c.execute("INSERT OR IGNORE INTO layer_blobs(diff_id, digest, media_type, size) VALUES(?,?,?,?)",
                      (diff_id, digest, oci.OCI_LAYER, size))
        return LayerSource(digest, oci.OCI_LAYER, size, diff_id)

    async def _mount(self: Builder, st: StageState, ins: Run, m: RunMount, binds: list[Bind],
                     tmpfs: dict[str, str], extra_env: list[str], scratch: str, stack: contextlib.ExitStack) -> None:
        if m.type == "tmpfs":
            tmpfs[m.target] = f"size={m.size}" if m.size else ""
            return
        if m.type == "secret":
            data = self.opts.secrets.get(m.id)
            if data is None:
                if m.required:
                    raise InvalidArgument(f"secret {m.id} not found: pass it with --secret id={m.id},src=FILE")
                return
            if m.env:
                extra_env.append(f"{m.env}={data.decode('utf-8', 'replace')}")
            if m.target:
                path = os.path.join(scratch, "secrets", hashlib.sha256(m.id.encode()).hexdigest()[:16])
                os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
                try:
                    os.write(fd, data)
                    os.fchown(fd, m.uid or 0, m.gid or 0)
                    os.fchmod(fd, m.mode if m.mode is not None else 0o400)
                finally:
                    os.close(fd)
                binds.append(Bind(path, m.target, True))
            return
        if m.type == "cache":
            key = hashlib.sha256(f"{m.id}".encode()).hexdigest()[:32]
            path = os.path.join(self.cache_mounts, key)
            if not os.path.isdir(path):
                os.makedirs(path, 0o755, exist_ok=True)
                os.chown(path, m.uid or 0, m.gid or 0)
                os.chmod(path, m.mode if m.mode is not None else 0o755)
            binds.append(Bind(path, m.target, m.readonly))
            return
        # bind: from the context, or from a stage/image
        src_rel = copystep._rel_of(m.source or "/")
        if m.from_:
            image_id = await self._from_image_id(st, ins, m.from_)
            chain = [] if image_id == "scratch" else (await self._load(image_id))[0].chain_ids
            root = stack.enter_context(layer.read_only(self.images, chain, self.workdir))
            from matou.util.fs import resolve_in_root

            src = resolve_in_root(root, "/" + src_rel)
        else:
            src = await asyncio.to_thread(self.ctx.materialize, self.ctx.resolve(src_rel) if src_rel else "",
                                          os.path.join(scratch, "bind-" + new_id()[:8]))
        if not os.path.exists(src):
            raise NotFound(f"bind mount source {m.source!r} does not exist")
        if not m.readonly and m.from_:
            copy_dir = os.path.join(scratch, "rw-" + new_id()[:8])
            if os.path.isdir(src):
                shutil.copytree(src, copy_dir, symlinks=True)
            else:
                shutil.copy2(src, copy_dir)
            src = copy_dir
        binds.append(Bind(src, m.target, m.readonly))
