"""RUN: the command line (shell or exec form, heredocs) and its ``--mount`` / ``--network`` / ``--security`` flags.

Heredocs follow BuildKit: a RUN made of one heredoc runs its body with the shell, or as a script when the body
starts with ``#!`` (mounted read-only at ``/dev/pipes/NAME``); any other heredoc is handed to the shell as
written (``cat <<EOF > f``). Mounts never reach the layer: secrets and caches are bind mounts from the host,
tmpfs is tmpfs, and the mount points the runtime creates for them are removed before the commit.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass

from matou.build.instructions import Run
from matou.errors import InvalidArgument, Unsupported

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
