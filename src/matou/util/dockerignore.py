""".dockerignore patterns with Docker's semantics (moby/patternmatcher), shared by the CLI and the builder.

Why here: the CLI filters the build context while it tars it (so ignored trees are never sent) and the daemon
applies the same rules to a tar given on stdin; neither may import the other, so the matcher lives in ``util``.

Rules: one pattern a line; lines starting with ``#`` are comments; whitespace is trimmed; ``!`` makes an
exception; patterns are cleaned like Go's ``filepath.Clean`` and a leading ``/`` is dropped. ``*`` and ``?`` never
match ``/``; ``**`` matches any number of directories (``**/`` zero or more); ``[...]`` classes and ``\\`` escapes
work as in ``filepath.Match``. A path is excluded when the last pattern that matches it, or one of its parent
directories, is not an exception.
"""

from __future__ import annotations

import posixpath
import re

_SPECIAL = set(".+()|{}$^")


def clean(path: str) -> str:
    """Go's filepath.Clean for slash paths: '' -> '.', no '//' or '.', '..' resolved lexically."""
    if not path:
        return "."
    p = posixpath.normpath(path)
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    return p


def read_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file, cleaned, exceptions keeping their '!'."""
    out: list[str] = []
    for i, raw in enumerate(text.splitlines()):
        if i == 0:
            raw = raw.lstrip("\ufeff")
        if raw.startswith("#"):
            continue
        p = raw.strip()
        if not p:
            continue
        invert = p.startswith("!")
        if invert:
            p = p[1:].strip()
        if p:
            p = clean(p)
            if len(p) > 1 and p.startswith("/"):
                p = p[1:]
        out.append("!" + p if invert else p)
    return out


def compile_pattern(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in _SPECIAL:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append("\\\\")
        elif ch == "[":
            j = pattern.find("]", i + 1 if i < n and pattern[i] in "!^" else i)
            if j < 0:
                out.append("\\[")
                continue
            body = pattern[i:j]
            i = j + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
        else:
            out.append(re.escape(ch))
    out.append("$")
    return re.compile("".join(out), re.S)


class Matcher:
    """Compiled patterns; ``excluded(path)`` for slash-separated paths relative to the context root."""

    def __init__(self, patterns: list[str]) -> None:
        self.raw = list(patterns)
        self.patterns: list[tuple[bool, str, re.Pattern[str]]] = []
        for p in patterns:
            exc = p.startswith("!")
            body = p[1:] if exc else p
            if exc and not body:
                raise ValueError('illegal exclusion pattern: "!"')
            body = clean(body)
            if len(body) > 1 and body.startswith("/"):
                body = body[1:]
            self.patterns.append((exc, body, compile_pattern(body)))
        self.has_exceptions = any(e for e, _b, _r in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str) -> bool:
        path = clean(path).lstrip("/")
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for exc, _body, rx in self.patterns:
            if exc != matched:
                continue
            hit = rx.match(path) is not None
            if not hit and parents:
                for i in range(1, len(parents) + 1):
                    if rx.match("/".join(parents[:i])):
                        hit = True
                        break
            if hit:
                matched = not exc
        return matched

    def may_include_under(self, directory: str) -> bool:
        """Whether an exception could re-include something below an excluded directory (walk into it)."""
        if not self.has_exceptions:
            return False
        prefix = clean(directory).lstrip("/") + "/"
        for exc, body, _rx in self.patterns:
            if not exc:
                continue
            if (body + "/").startswith(prefix) or any(c in body for c in "*?["):
                return True
        return False


def load(context_dir: str) -> Matcher:
    """The matcher of ``<context_dir>/.dockerignore`` (empty when there is none)."""
    try:
        with open(posixpath.join(context_dir, ".dockerignore"), encoding="utf-8", errors="replace") as f:
            return Matcher(read_patterns(f.read()))
    except FileNotFoundError:
        return Matcher([])
