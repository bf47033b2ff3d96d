"""Word expansion for Dockerfile arguments: quotes, escapes and ``$VAR`` substitution, as BuildKit's shell lexer.

Supported: ``$V``, ``${V}``, ``${V:-word}``, ``${V-word}``, ``${V:+word}``, ``${V+word}``, ``${V:?msg}``,
``${V?msg}``, ``${V#pat}``, ``${V##pat}``, ``${V%pat}``, ``${V%%pat}``, ``${V/pat/repl}``, ``${V//pat/repl}``.
Single quotes are literal; in double quotes the escape character escapes only ``"``, ``$`` and itself; outside
quotes it escapes any character. ``process_word`` returns one string (quotes removed); ``process_words`` also
splits on unquoted whitespace after substitution, so ``EXPOSE $PORTS`` can yield several words.

No command substitution, no arithmetic: this is for instruction arguments, not for RUN (the container's shell
does that).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

EOF = ""
_SPECIAL_PARAMS = set("@*#?-$!0")


class ExpansionError(ValueError):
    """A malformed ``${...}`` or an unterminated quote; the caller adds the file position."""


@dataclass
class _Words:
    words: list[str] = field(default_factory=list)
    word: str = ""
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, s: str) -> None:
        self.word += s
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class Lexer:
    """One lexer per escape character; options mirror BuildKit's (raw quotes/escapes are for heredoc parsing)."""

    def __init__(self, escape: str = "\\", *, raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset: bool = False) -> None:
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        return _Scan(self, word, env).run()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        return _Scan(self, word, env).run()[1]

    def process_word_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str]]:
        """The expansion and the names it used (for build args that were consumed)."""
        s = _Scan(self, word, env)
        out = s.run()[0]
        return out, s.matched


class _Scan:
    def __init__(self, lex: Lexer, src: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.src = src
        self.pos = 0
        self.env = env
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()

    # ---- scanner
    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else EOF

    def next(self) -> str:
        if self.pos >= len(self.src):
            return EOF
        ch = self.src[self.pos]
        self.pos += 1
        return ch

    def run(self) -> tuple[str, list[str]]:
        try:
            return self.stop_on(EOF, self.raw_escapes)
        except ExpansionError as e:
            raise ExpansionError(f"failed to process {self.src!r}: {e}") from None

    def stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        esc = self.lex.escape
        while self.peek() != EOF:
            ch = self.peek()
            if stop != EOF and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_string(tmp)
            elif ch == "'":
                tmp = self.single_quote()
                result.append(tmp)
                words.add_raw(tmp)
            elif ch == '"':
                tmp = self.double_quote()
                result.append(tmp)
                words.add_raw(tmp)
            else:
                ch = self.next()
                if ch == esc:
                    if self.raw_escapes:
                        words.add_raw(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch == EOF:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop != EOF:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        out: list[str] = []
        ch = self.next()
        if self.lex.raw_quotes:
            out.append(ch)
        while True:
            ch = self.next()
            if ch == EOF:
                raise ExpansionError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        out: list[str] = []
        ch = self.next()
        if self.lex.raw_quotes:
            out.append(ch)
        esc = self.lex.escape
        while True:
            p = self.peek()
            if p == EOF:
                raise ExpansionError("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                ch = self.next()
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if p == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == esc:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if nxt == EOF:
                    continue
                if nxt in ('"', "$", esc):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while self.peek() != EOF:
            ch = self.peek()
            if not out and ch.isdigit():
                while self.peek() != EOF and self.peek().isdigit():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalnum() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def get(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        return "", False

    def dollar(self) -> str:
        self.next()  # '$'
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.get(name)
            if not found and self.lex.skip_unset:
                return "$" + name
            return value
        self.next()  # '{'
        p = self.peek()
        if p == EOF:
            raise ExpansionError("syntax error: missing '}'")
        if p in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        chs = ch
        if ch == "}":
            value, found = self.get(name)
            if not found and self.lex.skip_unset:
                return "${" + name + "}"
            return value
        if ch == EOF:
            raise ExpansionError("syntax error: missing '}'")
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            chs += ch
        if ch in ("+", "-", "?", "#", "%"):
            try:
                word, _ = self.stop_on("}", ch in "#%")
            except ExpansionError:
                if self.peek() == EOF:
                    raise ExpansionError("syntax error: missing '}'") from None
                raise
            value, found = self.get(name)
            if self.lex.skip_unset and not found:
                return "${" + name + chs + word + "}"
            unset = not found or (null_is_unset and value == "")
            if ch == "-":
                return word if unset else value
            if ch == "+":
                return "" if unset else word
            if ch == "?":
                if not found:
                    raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            greedy = bool(word) and word[0] == ch
            if greedy:
                word = word[1:]
            return _trim_suffix(word, value, greedy) if ch == "%" else _trim_prefix(word, value, greedy)
        if ch == "/" and not null_is_unset:
            replace_all = self.peek() == "/"
            if replace_all:
                self.next()
            try:
                pattern, _ = self.stop_on("/", True)
            except ExpansionError:
                raise ExpansionError("syntax error: missing '/' in ${}") from None
            try:
                repl, _ = self.stop_on("}", True)
            except ExpansionError:
                raise ExpansionError("syntax error: missing '}'") from None
            value, found = self.get(name)
            if self.lex.skip_unset and not found:
                return "${" + name + "/" + pattern + "/" + repl + "}"
            rx = _pattern_regex(pattern, greedy=True, anchored=False)
            if replace_all:
                return rx.sub(lambda _m: repl, value)
            m = rx.search(value)
            return value if m is None else value[:m.start()] + repl + value[m.end():]
        raise ExpansionError(f"unsupported modifier ({chs}) in substitution")


def _pattern_regex(pattern: str, greedy: bool, anchored: bool, suffix: bool = False) -> re.Pattern[str]:
    out = ["^" if anchored else ""]
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            if i < len(pattern) and pattern[i] in "}/":
                continue
            nxt = pattern[i] if i < len(pattern) else ""
            i += 1
            if nxt not in ("*", "?", "\\"):
                raise ExpansionError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'")
            out.append(re.escape(nxt))
        else:
            out.append(re.escape(ch))
    if suffix:
        out.append("$")
    return re.compile("".join(out), re.S)


def _trim_prefix(word: str, value: str, greedy: bool) -> str:
    m = _pattern_regex(word, greedy, anchored=True).match(value)
    return value[m.end():] if m else value


def _trim_suffix(word: str, value: str, greedy: bool) -> str:
    # shortest suffix: try the longest start first is greedy; scan positions explicitly (no reversed regexes)
    rx = _pattern_regex(word, greedy=True, anchored=True, suffix=True)
    positions = range(len(value) + 1) if greedy else range(len(value), -1, -1)
    for i in positions:
        if rx.match(value[i:]):
            return value[:i]
    return value


def env_map(env: list[str] | None) -> dict[str, str]:
    """``["K=V", ...]`` to a dict (later entries win)."""
    out: dict[str, str] = {}
    for e in env or []:
        k, _, v = e.partition("=")
        out[k] = v
    return out
