"""A small docker-style flag parser (pflag semantics), because argparse costs ~20 ms of import per command.

Supports ``-a``, ``-abc`` (combined booleans, last may take a value: ``-itp 80``), ``-p80``, ``-p 80``,
``--name v``, ``--name=v``, ``--flag=false``, repeated list flags, ``--`` and non-interspersed parsing
(``run IMAGE CMD -x``: everything after the first positional belongs to the command).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class UsageError(Exception):
    pass


class Flag:
    """One flag. A plain class: dataclasses would add ~10 ms to every command's start-up."""

    __slots__ = ("names", "dest", "kind", "default", "help", "metavar")

    def __init__(self, names: tuple[str, ...], dest: str, kind: str = "bool", default: Any = None, help: str = "",
                 metavar: str = "") -> None:
        self.names = names
        self.dest = dest
        self.kind = kind  # bool | str | int | list | float
        self.default = default
        self.help = help
        self.metavar = metavar


def flag(*names: str, kind: str = "bool", default: Any = None, help: str = "", dest: str | None = None,
         metavar: str = "") -> Flag:
    long = next((n for n in names if n.startswith("--")), names[0])
    d = dest or long.lstrip("-").replace("-", "_")
    if default is None:
        default = {"bool": False, "list": None}.get(kind)
    return Flag(tuple(names), d, kind, default, help, metavar)


def parse(argv: list[str], flags: list[Flag], interspersed: bool = True) -> tuple[dict[str, Any], list[str]]:
    by_name: dict[str, Flag] = {}
    for f in flags:
        for n in f.names:
            by_name[n] = f
    opts: dict[str, Any] = {f.dest: (list(f.default) if isinstance(f.default, list) else f.default) for f in flags}
    for f in flags:
        if f.kind == "list" and opts[f.dest] is None:
            opts[f.dest] = []
    pos: list[str] = []
    i = 0
    n = len(argv)

    def setv(f: Flag, v: str | None, name: str) -> None:
        if f.kind == "bool":
            if v is None:
                opts[f.dest] = True
            elif v.lower() in ("true", "1"):
                opts[f.dest] = True
            elif v.lower() in ("false", "0"):
                opts[f.dest] = False
            else:
                raise UsageError(f'invalid argument "{v}" for "{name}" flag: strconv.ParseBool: parsing "{v}": invalid syntax')
            return
        assert v is not None
        if f.kind == "int":
            try:
                opts[f.dest] = int(v)
            except ValueError:
                raise UsageError(f'invalid argument "{v}" for "{name}" flag: strconv.ParseInt: parsing "{v}": invalid syntax') from None
        elif f.kind == "float":
            try:
                opts[f.dest] = float(v)
            except ValueError:
                raise UsageError(f'invalid argument "{v}" for "{name}" flag') from None
        elif f.kind == "list":
            opts[f.dest].append(v)
        else:
            opts[f.dest] = v

    while i < n:
        a = argv[i]
        if a == "--":
            pos.extend(argv[i + 1:])
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, val = a.partition("=")
            f = by_name.get(name)
            if f is None:
                raise UsageError(f"unknown flag: {name}")
            if f.kind == "bool":
                setv(f, val if eq else None, name)
            elif eq:
                setv(f, val, name)
            else:
                if i + 1 >= n:
                    raise UsageError(f"flag needs an argument: {name}")
                i += 1
                setv(f, argv[i], name)
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                name = "-" + a[j]
                f = by_name.get(name)
                if f is None:
                    raise UsageError(f"unknown shorthand flag: '{a[j]}' in {a}")
                if f.kind == "bool":
                    if j + 1 < len(a) and a[j + 1] == "=":
                        setv(f, a[j + 2:], name)
                        break
                    setv(f, None, name)
                    j += 1
                    continue
                rest = a[j + 1:]
                if rest.startswith("="):
                    rest = rest[1:]
                if rest:
                    setv(f, rest, name)
                else:
                    if i + 1 >= n:
                        raise UsageError(f"flag needs an argument: '{a[j]}' in {a}")
                    i += 1
                    setv(f, argv[i], name)
                break
        else:
            pos.append(a)
            if not interspersed:
                pos.extend(argv[i + 1:])
                break
        i += 1
    return opts, pos


def usage_text(usage: str, description: str, flags: list[Flag]) -> str:
    lines = [f"\nUsage:  {usage}\n", description, ""]
    if flags:
        lines.append("Options:")
        rows = []
        for f in flags:
            shorts = [x for x in f.names if not x.startswith("--")]
            longs = [x for x in f.names if x.startswith("--")]
            name = (shorts[0] + ", " if shorts else "    ") + (longs[0] if longs else "")
            if f.kind != "bool":
                name += " " + (f.metavar or f.kind)
            rows.append((name, f.help))
        w = max(len(r[0]) for r in rows)
        lines += [f"  {a.ljust(w)}   {b}" for a, b in rows]
    return "\n".join(lines) + "\n"
