"""Dockerfile text -> logical instruction lines (step one of three: parse, then ``instructions``, then ``dispatch``).

Follows BuildKit's parser (the reference for the syntax): parser directives at the very top (``# syntax=``
accepted and ignored, ``# escape=`` sets the escape character, ``# check=`` ignored; a blank line, a comment or
an instruction ends them), comment lines anywhere (also inside continuations, where they are dropped), line
continuations with the escape character (empty continuation lines are skipped with a warning), leading
whitespace ignored, case-insensitive keywords, builder flags (``--name=value``) split off, and heredocs
(``<<EOF``, ``<<-EOF`` strips leading tabs, a quoted delimiter disables expansion) for RUN, COPY and ADD.

Arguments are not split or expanded here: that depends on the instruction and on the build state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from matou.build.shell import ExpansionError, Lexer
from matou.errors import InvalidArgument

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_WS = re.compile(r"[\t\v\f\r ]+")
VALID_DIRECTIVES = ("syntax", "escape", "check")
HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")


class DockerfileError(InvalidArgument):
    """A Dockerfile problem, located: ``file:line:col``. The message says "line N" as Docker's does."""

    def __init__(self, message: str, filename: str = "Dockerfile", line: int = 0, col: int = 0) -> None:
        self.filename = filename
        self.line = line
        self.col = col
        self.reason = message
        where = f"{filename}:{line}:{col}" if col else f"{filename}:{line}"
        super().__init__(f"dockerfile parse error on line {line} ({where}): {message}" if line
                         else f"{filename}: {message}")


@dataclass
class Heredoc:
    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int = 0


@dataclass
class Node:
    """One logical instruction line."""

    keyword: str  # upper case
    args: str  # the text after the keyword and its flags, trimmed
    flags: list[str]  # "--name=value" or "--name", quotes removed
    original: str  # the logical line, continuations joined
    line: int  # first physical line (1-based)
    end_line: int
    col: int  # column of the keyword (1-based)
    heredocs: list[Heredoc] = field(default_factory=list)
    sub: Node | None = None  # ONBUILD's trigger


@dataclass
class ParseResult:
    nodes: list[Node]
    escape: str
    warnings: list[str]
    filename: str
    directives: dict[str, str]


def _trim_newline(s: str) -> str:
    return s.rstrip("\r\n")


def _is_comment(s: str) -> bool:
    return s.lstrip().startswith("#")


def _continuation(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(r"([^" + e + r"])" + e + r"[ \t]*$|^" + e + r"[ \t]*$")


def _split_lines(text: str) -> list[str]:
    """Physical lines with their endings (only \\n ends a line, as Go's scanner)."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def parse(text: str | bytes, filename: str = "Dockerfile") -> ParseResult:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.removeprefix("\ufeff")
    lines = _split_lines(text)
    escape = "\\"
    cont = _continuation(escape)
    directives: dict[str, str] = {}
    directives_done = False
    warnings: list[str] = []
    nodes: list[Node] = []
    i = 0
    current = 0

    def directive(token: str) -> None:
        nonlocal directives_done, escape, cont
        if directives_done:
            return
        m = _DIRECTIVE.match(token)
        if not m or m.group(1).lower() not in VALID_DIRECTIVES:
            directives_done = True
            return
        k = m.group(1).lower()
        if k in directives:
            raise DockerfileError(f"only one {k} parser directive can be used", filename, current + 1, 1)
        directives[k] = m.group(2)
        if k == "escape":
            if m.group(2) not in ("`", "\\"):
                raise DockerfileError(f"invalid escape token '{m.group(2)}' does not match ` or \\", filename,
                                      current + 1, 1)
            escape = m.group(2)
            cont = _continuation(escape)

    while i < len(lines):
        raw = lines[i]
        i += 1
        token = _trim_newline(raw).lstrip()
        directive(token)
        current += 1
        if _is_comment(token):
            continue
        start = current
        col = len(_trim_newline(raw)) - len(token) + 1
        m = cont.search(token)
        eol = m is None
        if m is not None:
            token = cont.sub(r"\1", token)
        if eol and not token:
            continue
        buf = [token]
        empty_cont = False
        while not eol and i < len(lines):
            raw = lines[i]
            i += 1
            current += 1
            piece = _trim_newline(raw)
            if _is_comment(piece):
                continue
            if not piece.strip():
                empty_cont = True
                continue
            m = cont.search(piece)
            eol = m is None
            if m is not None:
                piece = cont.sub(r"\1", piece)
            buf.append(piece)
        line = "".join(buf)
        if empty_cont:
            warnings.append(f"[WARNING]: Empty continuation line found in: {line}")
        node = _node_from_line(line, escape, start, current, col, filename)
        target = node.sub if node.keyword == "ONBUILD" and node.sub is not None else node
        if target.keyword in HEREDOC_INSTRUCTIONS and "<<" in line and not _is_json(target.args):
            for doc in _heredocs_from_line(target.args, filename, start, col):
                terminated = False
                content: list[str] = []
                while i < len(lines):
                    raw = lines[i]
                    i += 1
                    current += 1
                    candidate = _trim_newline(raw)
                    if doc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == doc.name:
                        terminated = True
                        break
                    content.append(raw)
                if not terminated:
                    raise DockerfileError(f"unterminated heredoc {doc.name!r} (started on line {start})", filename,
                                          start, col)
                doc.content = "".join(content)
                if doc.chomp:
                    doc.content = re.sub(r"(?m)^\t+", "", doc.content)
                target.heredocs.append(doc)
            node.end_line = current
            if target is not node:
                target.end_line = current
        nodes.append(node)
    if warnings:
        warnings.append("[WARNING]: Empty continuation lines will become errors in a future release.")
    if not nodes:
        raise DockerfileError("file with no instructions", filename, max(current, 1), 0)
    return ParseResult(nodes, escape, warnings, filename, directives)


def _node_from_line(line: str, escape: str, start: int, end: int, col: int, filename: str) -> Node:
    parts = _WS.split(line.strip(), maxsplit=1)
    keyword = parts[0]
    rest = parts[1] if len(parts) > 1 else ""
    args, flags = _extract_flags(rest, escape)
    node = Node(keyword.upper(), args.strip(), flags, line, start, end, col)
    if node.keyword == "ONBUILD" and node.args:
        node.sub = _node_from_line(node.args, escape, start, end, col + len(keyword) + 1, filename)
    return node


def _extract_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """Leading ``--flag[=value]`` words; returns (the rest of the line, flags). ``--`` ends the flags."""
    flags: list[str] = []
    pos = 0
    n = len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos >= n:
            return "", flags
        if not line.startswith("--", pos):
            return line[pos:], flags
        word: list[str] = []
        quote = ""
        start = pos
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == escape and quote == '"' and pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
                else:
                    word.append(ch)
                pos += 1
                continue
            if ch.isspace():
                break
            if ch in ("'", '"'):
                quote = ch
            elif ch == escape and pos + 1 < n:
                pos += 1
                word.append(line[pos])
            else:
                word.append(ch)
            pos += 1
        w = "".join(word)
        if w == "--":
            return line[pos:], flags
        if quote:
            return line[start:], flags
        flags.append(w)


def _is_json(args: str) -> bool:
    import json

    s = args.lstrip()
    if not s.startswith("["):
        return False
    try:
        v = json.loads(s)
    except ValueError:
        return False
    return isinstance(v, list)


def _heredocs_from_line(args: str, filename: str, line: int, col: int) -> list[Heredoc]:
    lex = Lexer("\\", raw_quotes=True, raw_escapes=True, skip_unset=True)
    try:
        words = lex.process_words(args, {})
    except ExpansionError:
        return []
    out = []
    for w in words:
        m = _HEREDOC.match(w)
        if not m or not m.group(3):
            continue
        rest = m.group(3)
        try:
            plain = Lexer("\\", skip_unset=True).process_words(rest, {})
            raw = Lexer("\\", raw_quotes=True, skip_unset=True).process_words(rest, {})
        except ExpansionError as e:
            raise DockerfileError(str(e), filename, line, col) from None
        if len(plain) != 1 or len(raw) != 1:
            continue
        quotes = plain[0].count("'") + plain[0].count('"')
        raw_quotes = raw[0].count("'") + raw[0].count('"')
        out.append(Heredoc(plain[0], "", expand=quotes == raw_quotes, chomp=m.group(2) == "-",
                           fd=int(m.group(1) or 0)))
    return out
