"""Docker-style output: tab-aligned tables, ``--format`` Go templates (a subset), human sizes and times."""

from __future__ import annotations

import sys
import time

from matou.util.units import bytes_size, human_duration, human_size  # noqa: F401 (re-exported)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

def _sub_tokens(tpl: str, fn: Callable[[str], str]) -> str:
    """Replace each ``{{ expr }}`` by fn(expr); a hand-written scan because ``re`` costs ~8 ms of start-up."""
    out: list[str] = []
    i = 0
    while True:
        j = tpl.find("{{", i)
        if j < 0:
            out.append(tpl[i:])
            return "".join(out)
        k = tpl.find("}}", j + 2)
        if k < 0:
            out.append(tpl[i:])
            return "".join(out)
        out.append(tpl[i:j])
        expr = tpl[j + 2:k].strip()
        if expr.startswith("-"):
            expr = expr[1:].strip()
        if expr.endswith("-"):
            expr = expr[:-1].strip()
        out.append(fn(expr))
        i = k + 2


def ago(ts: float) -> str:
    return human_duration(time.time() - ts) + " ago"


def tabwrite(rows: Sequence[Sequence[str]], out: Any = None, padding: int = 3, minwidth: int = 10) -> None:
    """text/tabwriter as docker configures it (minwidth 10, padding 3; last column unpadded)."""
    out = out or sys.stdout
    if not rows:
        return
    ncol = max(len(r) for r in rows)
    widths = [0] * ncol
    for r in rows:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(c) + padding, minwidth)
    lines = []
    for r in rows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("".join(cells).rstrip() if len(r) > 0 else "")
    out.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- templates

class TemplateError(Exception):
    pass


def _lookup(obj: Any, path: str) -> Any:
    cur = obj
    for part in [p for p in path.split(".") if p]:
        if isinstance(cur, dict):
            if part in cur:
                cur = cur[part]
            else:
                low = {k.lower(): k for k in cur}
                if part.lower() in low:
                    cur = cur[low[part.lower()]]
                else:
                    raise TemplateError(f'template: :1: executing "" at <.{path}>: map has no entry for key "{part}"')
        else:
            cur = getattr(cur, part, None)
    return cur


def _split_args(expr: str) -> list[str]:
    out, cur, q = [], "", False
    for ch in expr:
        if ch == '"':
            q = not q
            cur += ch
        elif ch == " " and not q:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def _eval(expr: str, obj: Any) -> Any:
    if "|" in expr:
        parts = [p.strip() for p in expr.split("|")]
        val = _eval(parts[0], obj)
        for p in parts[1:]:
            val = _call(_split_args(p), obj, extra=val)
        return val
    args = _split_args(expr)
    if not args:
        return ""
    if len(args) == 1:
        return _atom(args[0], obj)
    return _call(args, obj)


def _atom(a: str, obj: Any) -> Any:
    if a == ".":
        return obj
    if a.startswith("."):
        return _lookup(obj, a[1:])
    if a.startswith('"') and a.endswith('"'):
        return a[1:-1].encode().decode("unicode_escape")
    if a.lstrip("-").isdigit():
        return int(a)
    if a in ("true", "false"):
        return a == "true"
    raise TemplateError(f'template: :1: function "{a}" not defined')


def _call(args: list[str], obj: Any, extra: Any = ...) -> Any:
    import json

    fn = args[0]
    vals = [_atom(a, obj) for a in args[1:]]
    if extra is not ...:
        vals.append(extra)
    if fn == "json":
        return json.dumps(vals[0] if vals else obj, separators=(",", ":"))
    if fn == "upper":
        return _str(vals[0]).upper()
    if fn == "lower":
        return _str(vals[0]).lower()
    if fn == "title":
        return _str(vals[0]).title()
    if fn == "len":
        return len(vals[0] or [])
    if fn == "index":
        cur = vals[0]
        for k in vals[1:]:
            cur = cur.get(k) if isinstance(cur, dict) else (cur[k] if cur is not None else None)
        return cur
    if fn == "join":
        return vals[1].join(_str(x) for x in (vals[0] or []))
    if fn == "split":
        return _str(vals[0]).split(vals[1])
    if fn == "truncate":
        return _str(vals[0])[: int(vals[1])]
    if fn == "println":
        return " ".join(_str(v) for v in vals) + "\n"
    if fn == "print":
        return "".join(_str(v) for v in vals)
    if fn == "pad":
        return " " * int(vals[1]) + _str(vals[0]) + " " * int(vals[2])
    raise TemplateError(f'template: :1: function "{fn}" not defined')


def _str(v: Any) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_str(x)}" for k, x in sorted(v.items())) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_str(x) for x in v) + "]"
    return str(v)


def _process_range(tpl: str, obj: Any) -> str:
    # {{range .X}}...{{end}} (no nesting) and {{if .X}}...{{end}}
    import re

    m = re.search(r"{{\s*(range|if)\s+(.*?)\s*}}(.*?){{\s*end\s*}}", tpl, re.S)
    while m:
        kind, expr, body = m.group(1), m.group(2), m.group(3)
        val = _eval(expr, obj)
        if kind == "range":
            items = list(val.values()) if isinstance(val, dict) else list(val or [])
            rendered = "".join(render(body, it) for it in items)
        else:
            rendered = render(body, obj) if val else ""
        tpl = tpl[: m.start()] + rendered + tpl[m.end():]
        m = re.search(r"{{\s*(range|if)\s+(.*?)\s*}}(.*?){{\s*end\s*}}", tpl, re.S)
    return tpl


def render(tpl: str, obj: Any) -> str:
    if "{{" not in tpl:
        return tpl
    if "range " in tpl or "if " in tpl:
        tpl = _process_range(tpl, obj)
    return _sub_tokens(tpl, lambda e: _str(_eval(e, obj)))


def unescape(fmt: str) -> str:
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def format_rows(fmt: str | None, items: list[dict[str, Any]], default_table: str,
                headers: dict[str, str], quiet_key: str | None = None, quiet: bool = False,
                out: Any = None) -> None:
    """Docker's formatter: ``table ...`` templates get a header and tab alignment; others one line each."""
    out = out or sys.stdout
    if quiet and quiet_key:
        out.write("".join(f"{it[quiet_key]}\n" for it in items))
        return
    fmt = unescape(fmt) if fmt else default_table
    if fmt == "json":
        from matou.util import fastjson

        out.write("".join(fastjson.dumps(it) + "\n" for it in items))
        return
    if fmt.startswith("table"):
        body = fmt[5:].lstrip()
        if not body:
            body = default_table[5:].lstrip()
        head = _sub_tokens(body, lambda e: headers.get(e.lstrip("."), e.lstrip(".").upper()))
        rows = [head.split("\t")]
        for it in items:
            rows.append(render(body, it).split("\t"))
        tabwrite(rows, out)
        return
    for it in items:
        out.write(render(fmt, it) + "\n")


def fail(msg: str, code: int = 1) -> int:
    sys.stderr.write(msg.rstrip("\n") + "\n")
    return code


