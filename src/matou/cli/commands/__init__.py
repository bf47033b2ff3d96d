"""One module per command family; each function is ``(ctx, argv) -> exit code``."""

from __future__ import annotations

import sys

from matou.cli.flags import Flag, UsageError, parse, usage_text


def parse_or_exit(argv: list[str], flags: list[Flag], usage: str, description: str, *, min_args: int = 0,
                  max_args: int | None = None, interspersed: bool = True,
                  cmd: str = "") -> tuple[dict, list[str]] | None:
    """Parse flags; print help or a usage error like docker (exit 125 on misuse). None means: return code in .code"""
    all_flags = flags + [Flag(("--help",), "help", "bool", False, "Print usage")]
    try:
        opts, pos = parse(argv, all_flags, interspersed)
    except UsageError as e:
        sys.stderr.write(f"{e}\nSee 'matou {cmd or usage.split()[1]} --help'.\n")
        raise SystemExit(125) from None
    if opts.pop("help"):
        sys.stdout.write(usage_text(usage, description, flags))
        raise SystemExit(0)
    if len(pos) < min_args or (max_args is not None and len(pos) > max_args):
        name = cmd or usage.split()[1]
        if min_args == max_args:
            need = f"exactly {min_args} argument" + ("s" if min_args != 1 else "")
        elif max_args is None:
            need = f"at least {min_args} argument" + ("s" if min_args != 1 else "")
        else:
            need = f"at most {max_args} argument" + ("s" if max_args != 1 else "")
        sys.stderr.write(f'"matou {name}" requires {need}.\nSee \'matou {name} --help\'.\n\n'
                         f"Usage:  {usage}\n\n{description}\n")
        raise SystemExit(1)
    return opts, pos


def filter_map(items: list[str]) -> dict[str, list[str]]:
    """Repeated ``--filter key=value`` flags -> Docker's filters map."""
    out: dict[str, list[str]] = {}
    for it in items:
        k, _, v = it.partition("=")
        out.setdefault(k, []).append(v)
    return out


def filters_json(items: list[str] | dict[str, list[str]]) -> str | None:
    """The ``filters`` query parameter (None when empty)."""
    from matou.util import fastjson

    f = items if isinstance(items, dict) else filter_map(items)
    return fastjson.dumps(f) if f else None


def key_values(items: list[str]) -> dict[str, str]:
    """Repeated ``--label k=v`` / ``--opt k=v`` flags -> a dict (the last one wins)."""
    out: dict[str, str] = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = v
    return out
