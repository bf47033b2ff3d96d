"""Logical lines -> typed instructions and build stages (step two: after ``parser``, before ``dispatch``).

Each instruction keeps its arguments unexpanded (expansion needs the build state) and its node, for the
``Step N/M : ...`` line and for errors that name the line. Validation that needs no state happens here, so a
malformed Dockerfile fails before any step runs: unknown instructions and flags, wrong argument counts, bad JSON
forms, instructions before the first FROM, forbidden ONBUILD triggers, duplicate stage names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from matou.build.parser import DockerfileError, Heredoc, Node, ParseResult

_WS = re.compile(r"[\t\v\f\r ]+")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")

# instruction -> {flag: repeatable}
FLAGS: dict[str, dict[str, bool]] = {
    "FROM": {"platform": False},
    "RUN": {"mount": True, "network": False, "security": False},
    "COPY": {"from": False, "chown": False, "chmod": False, "link": False, "exclude": True, "parents": False},
    "ADD": {"chown": False, "chmod": False, "link": False, "exclude": True, "checksum": False,
            "keep-git-dir": False},
    "HEALTHCHECK": {"interval": False, "timeout": False, "start-period": False, "start-interval": False,
                    "retries": False},
}
BOOL_FLAGS = {"link", "parents", "keep-git-dir"}
KNOWN = ("FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
         "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL")


@dataclass
class Instruction:
    node: Node
    flags: dict[str, list[str]]

    @property
    def keyword(self) -> str:
        return self.node.keyword

    @property
    def line(self) -> int:
        return self.node.line

    def flag(self, name: str) -> str | None:
        v = self.flags.get(name)
        return v[-1] if v else None

    def bool_flag(self, name: str) -> bool:
        v = self.flag(name)
        return v is not None and v.lower() in ("", "true", "1")

    def __str__(self) -> str:
        return self.node.original.strip()


@dataclass
class From(Instruction):
    image: str = ""
    stage_name: str | None = None


@dataclass
class CommandForm(Instruction):
    """RUN, CMD, ENTRYPOINT, SHELL: exec form (a list) or shell form (a string)."""

    exec_form: list[str] | None = None
    shell_form: str = ""
    heredocs: list[Heredoc] = field(default_factory=list)

    @property
    def is_json(self) -> bool:
        return self.exec_form is not None


@dataclass
class Run(CommandForm):
    pass


@dataclass
class Cmd(CommandForm):
    pass


@dataclass
class Entrypoint(CommandForm):
    pass


@dataclass
class Shell(CommandForm):
    pass


@dataclass
class Copy(Instruction):
    sources: list[str] = field(default_factory=list)
    dest: str = ""
    is_add: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)


@dataclass
class KeyValues(Instruction):
    """ENV and LABEL: (key, value) words, quotes still in place (removed when expanded)."""

    pairs: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Env(KeyValues):
    pass


@dataclass
class Label(KeyValues):
    pass


@dataclass
class Arg(Instruction):
    args: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class Words(Instruction):
    """EXPOSE, VOLUME: a list of words (VOLUME may be JSON)."""

    words: list[str] = field(default_factory=list)


@dataclass
class Expose(Words):
    pass


@dataclass
class Volume(Words):
    pass


@dataclass
class Single(Instruction):
    """WORKDIR, USER, STOPSIGNAL, MAINTAINER: one string."""

    value: str = ""


@dataclass
class Workdir(Single):
    pass


@dataclass
class User(Single):
    pass


@dataclass
class StopSignal(Single):
    pass


@dataclass
class Maintainer(Single):
    pass


@dataclass
class Healthcheck(Instruction):
    kind: str = "CMD"  # CMD | NONE
    command: CommandForm | None = None


@dataclass
class Onbuild(Instruction):
    expression: str = ""
    trigger: Instruction | None = None


@dataclass
class Stage:
    index: int
    base: From
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def line(self) -> int:
        return self.base.line


@dataclass
class Dockerfile:
    meta_args: list[Arg]
    stages: list[Stage]
    escape: str
    warnings: list[str]
    filename: str

    def stage_index(self, name: str) -> int | None:
        """A stage by name (case-insensitive) or by number."""
        low = name.lower()
        for s in self.stages:
            if s.name == low:
                return s.index
        if name.isdigit() and int(name) < len(self.stages):
            return int(name)
        return None


# ----------------------------------------------------------------------------------------------------- parsing
def _err(node: Node, msg: str, filename: str) -> DockerfileError:
    return DockerfileError(msg, filename, node.line, node.col)


def _parse_flags(node: Node, filename: str) -> dict[str, list[str]]:
    allowed = FLAGS.get(node.keyword, {})
    out: dict[str, list[str]] = {}
    for f in node.flags:
        name, eq, value = f[2:].partition("=")
        if name not in allowed:
            raise _err(node, f"unknown flag: --{name} (valid for {node.keyword}: "
                             f"{', '.join('--' + x for x in allowed) or 'none'})", filename)
        if not eq and name not in BOOL_FLAGS:
            raise _err(node, f"missing a value on flag: --{name}", filename)
        if name in BOOL_FLAGS and eq and value.lower() not in ("true", "false", "1", "0"):
            raise _err(node, f"expecting boolean value for flag {name}, not: {value}", filename)
        if name in out and not allowed[name]:
            raise _err(node, f"duplicate flag specified: --{name}", filename)
        out.setdefault(name, []).append(value if eq else "")
    return out


def _json_or_shell(node: Node, filename: str) -> tuple[list[str] | None, str]:
    s = node.args.lstrip()
    if s.startswith("["):
        try:
            v = json.loads(s)
        except ValueError as e:
            if re.match(r"\[\s*['\"]", s):
                raise _err(node, f"invalid JSON form for {node.keyword}: {e.args[0] if e.args else e} "
                                 "(use double quotes, or drop the brackets for the shell form)", filename) from None
            return None, node.args
        if isinstance(v, list):
            if not all(isinstance(x, str) for x in v):
                raise _err(node, "when using JSON array syntax, arrays must be comprised of strings only", filename)
            return v, ""
    return None, node.args


def _words(args: str, escape: str) -> list[str]:
    """BuildKit's parseWords: whitespace-separated, quotes kept (and respected), escapes kept."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    blank_ok = False
    i = 0
    n = len(args)
    in_word = False
    while i < n:
        ch = args[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 >= n:
                    i += 1
                    continue
                word.append(ch)
                i += 1
                ch = args[i]
            word.append(ch)
            i += 1
            continue
        if ch.isspace():
            if blank_ok or word:
                words.append("".join(word))
            word = []
            blank_ok = False
            in_word = False
            i += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            blank_ok = True
        if ch == escape:
            if i + 1 >= n:
                i += 1
                continue
            word.append(ch)
            i += 1
            ch = args[i]
        word.append(ch)
        i += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def _name_vals(node: Node, escape: str, filename: str) -> list[tuple[str, str]]:
    words = _words(node.args, escape)
    if not words:
        raise _err(node, f"{node.keyword} requires at least one argument", filename)
    if "=" not in words[0]:
        parts = _WS.split(node.args, maxsplit=1)
        if len(parts) < 2 or not parts[1].strip():
            raise _err(node, f"{node.keyword} must have two arguments", filename)
        return [(parts[0], parts[1])]
    out = []
    for w in words:
        if "=" not in w:
            raise _err(node, f"Syntax error - can't find = in {w!r}. Must be of the form: name=value", filename)
        k, _, v = w.partition("=")
        if not k:
            raise _err(node, f"{node.keyword} names can not be blank", filename)
        out.append((k, v))
    return out


def parse_instruction(node: Node, escape: str, filename: str = "Dockerfile") -> Instruction:
    kw = node.keyword
    if kw not in KNOWN:
        raise _err(node, f"unknown instruction: {node.original.split()[0]}", filename)
    flags = _parse_flags(node, filename)
    args = node.args
    if kw == "FROM":
        words = _WS.split(args) if args else []
        if len(words) == 3 and words[1].lower() == "as":
            name = words[2].lower()
            if not _STAGE_NAME.match(name):
                raise _err(node, f"invalid name for build stage: {words[2]!r}, name can't start with a number or "
                                 "contain symbols", filename)
            return From(node, flags, image=words[0], stage_name=name)
        if len(words) != 1:
            raise _err(node, "FROM requires either one or three arguments", filename)
        return From(node, flags, image=words[0])
    if kw in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        cls = {"RUN": Run, "CMD": Cmd, "ENTRYPOINT": Entrypoint, "SHELL": Shell}[kw]
        exec_form, shell_form = _json_or_shell(node, filename)
        if kw == "RUN" and exec_form is None and not shell_form.strip():
            raise _err(node, "RUN requires at least one argument", filename)
        if kw == "SHELL":
            if exec_form is None:
                raise _err(node, "SHELL requires the arguments to be in JSON form", filename)
            if not exec_form:
                raise _err(node, "SHELL requires at least one argument", filename)
        return cls(node, flags, exec_form=exec_form, shell_form=shell_form, heredocs=list(node.heredocs))
    if kw in ("COPY", "ADD"):
        s = args.lstrip()
        words: list[str] | None = None
        if s.startswith("["):
            try:
                v = json.loads(s)
            except ValueError as e:
                if re.match(r"\[\s*['\"]", s):
                    raise _err(node, f"invalid JSON form for {kw}: {e}", filename) from None
                v = None
            if isinstance(v, list):
                if not all(isinstance(x, str) for x in v):
                    raise _err(node, "when using JSON array syntax, arrays must be comprised of strings only",
                               filename)
                words = v
        if words is None:
            words = _WS.split(args.strip()) if args.strip() else []
        if len(words) < 2:
            raise _err(node, f"{kw} requires at least two arguments, but only {len(words)} "
                             f"{'was' if len(words) == 1 else 'were'} provided. Destination could not be determined.",
                       filename)
        if "from" in flags and kw == "ADD":
            raise _err(node, "ADD does not support --from: use COPY --from", filename)
        return Copy(node, flags, sources=words[:-1], dest=words[-1], is_add=kw == "ADD",
                    heredocs=list(node.heredocs))
    if kw == "ENV":
        return Env(node, flags, pairs=_name_vals(node, escape, filename))
    if kw == "LABEL":
        return Label(node, flags, pairs=_name_vals(node, escape, filename))
    if kw == "ARG":
        words = _words(args, escape)
        if not words:
            raise _err(node, "ARG requires at least one argument", filename)
        out: list[tuple[str, str | None]] = []
        for w in words:
            k, eq, v = w.partition("=")
            if not k or not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", k.strip("'\"")):
                raise _err(node, f"invalid ARG name: {k!r}", filename)
            out.append((k, v if eq else None))
        return Arg(node, flags, args=out)
    if kw == "EXPOSE":
        words = _WS.split(args) if args else []
        if not words:
            raise _err(node, "EXPOSE requires at least one argument", filename)
        return Expose(node, flags, words=words)
    if kw == "VOLUME":
        exec_form, _ = _json_or_shell(node, filename)
        words = exec_form if exec_form is not None else (_WS.split(args) if args else [])
        if not words:
            raise _err(node, "VOLUME requires at least one argument", filename)
        if any(not w.strip() for w in words):
            raise _err(node, "VOLUME specified can not be an empty string", filename)
        return Volume(node, flags, words=words)
    if kw in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        if not args:
            raise _err(node, f"{kw} requires exactly one argument", filename)
        if kw == "STOPSIGNAL" and len(_WS.split(args)) != 1:
            raise _err(node, "STOPSIGNAL requires exactly one argument", filename)
        cls2 = {"WORKDIR": Workdir, "USER": User, "STOPSIGNAL": StopSignal, "MAINTAINER": Maintainer}[kw]
        return cls2(node, flags, value=args)
    if kw == "HEALTHCHECK":
        parts = _WS.split(args, maxsplit=1) if args else []
        if not parts:
            raise _err(node, "HEALTHCHECK requires at least one argument", filename)
        kind = parts[0].upper()
        if kind == "NONE":
            if len(parts) > 1 or flags:
                raise _err(node, "HEALTHCHECK NONE takes no arguments", filename)
            return Healthcheck(node, flags, kind="NONE")
        if kind != "CMD":
            raise _err(node, f"Unknown type {parts[0]!r} in HEALTHCHECK (try CMD)", filename)
        if len(parts) < 2 or not parts[1].strip():
            raise _err(node, "Missing command after HEALTHCHECK CMD", filename)
        sub = Node("CMD", parts[1], [], node.original, node.line, node.end_line, node.col)
        exec_form, shell_form = _json_or_shell(sub, filename)
        if exec_form is not None and not exec_form:
            raise _err(node, "Missing command after HEALTHCHECK CMD", filename)
        _healthcheck_flags(node, flags, filename)
        return Healthcheck(node, flags, kind="CMD",
                           command=Cmd(sub, {}, exec_form=exec_form, shell_form=shell_form))
    # ONBUILD
    if node.sub is None:
        raise _err(node, "ONBUILD requires at least one argument", filename)
    trig = node.sub.keyword
    if trig == "ONBUILD":
        raise _err(node, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", filename)
    if trig in ("MAINTAINER", "FROM"):
        raise _err(node, f"{trig} isn't allowed as an ONBUILD trigger", filename)
    trigger = parse_instruction(node.sub, escape, filename)
    expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original)
    return Onbuild(node, flags, expression=expression, trigger=trigger)


def _healthcheck_flags(node: Node, flags: dict[str, list[str]], filename: str) -> None:
    for k in ("interval", "timeout", "start-period", "start-interval"):
        v = flags.get(k)
        if v and v[-1]:
            try:
                d = parse_duration(v[-1])
            except ValueError as e:
                raise _err(node, str(e), filename) from None
            if d < 1_000_000:
                raise _err(node, f"Interval {k!r} cannot be less than 1ms", filename)
    r = flags.get("retries")
    if r and r[-1]:
        try:
            n = int(r[-1])
        except ValueError:
            raise _err(node, f'strconv.ParseInt: parsing "{r[-1]}": invalid syntax', filename) from None
        if n < 0:
            raise _err(node, f"--retries cannot be negative ({n})", filename)


_DUR = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
          "h": 3_600_000_000_000}


def parse_duration(s: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    if s in ("0", ""):
        return 0
    pos = 0
    total = 0.0
    for m in _DUR.finditer(s):
        if m.start() != pos:
            raise ValueError(f'time: invalid duration "{s}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f'time: invalid duration "{s}"')
    return int(total)


def parse_dockerfile(result: ParseResult) -> Dockerfile:
    """Group instructions into stages; ARGs before the first FROM are the meta args."""
    fn = result.filename
    meta: list[Arg] = []
    stages: list[Stage] = []
    names: set[str] = set()
    for node in result.nodes:
        ins = parse_instruction(node, result.escape, fn)
        if isinstance(ins, From):
            if ins.stage_name:
                if ins.stage_name in names:
                    raise _err(node, f"duplicate stage name {ins.stage_name!r}", fn)
                names.add(ins.stage_name)
            stages.append(Stage(len(stages), ins, ins.stage_name))
            continue
        if not stages:
            if isinstance(ins, Arg):
                meta.append(ins)
                continue
            raise _err(node, f"no build stage in current context: {ins.keyword} before the first FROM "
                             "(a Dockerfile must start with FROM, after optional ARGs)", fn)
        stages[-1].instructions.append(ins)
    if not stages:
        last = result.nodes[-1]
        raise DockerfileError("no FROM instruction: a Dockerfile must have at least one FROM", fn, last.line,
                              last.col)
    return Dockerfile(meta, stages, result.escape, list(result.warnings), fn)


def parse_text(text: str | bytes, filename: str = "Dockerfile") -> Dockerfile:
    from matou.build.parser import parse

    return parse_dockerfile(parse(text, filename))
