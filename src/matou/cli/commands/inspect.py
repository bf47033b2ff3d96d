"""inspect: containers, images, networks, volumes, in that order like docker."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from matou.cli.commands import parse_or_exit
from matou.cli.context import Ctx
from matou.cli.flags import flag
from matou.cli.output import TemplateError, render, unescape
from matou.client.http import APIError


def print_inspect(ctx: Ctx, getters: list[Callable[[], Any]], names: list[str], fmt: str | None,
                  missing: str) -> int:
    results = []
    rc = 0
    for name, get in zip(names, getters, strict=True):
        try:
            results.append(get())
        except APIError as e:
            if e.status == 404:
                sys.stderr.write(f"Error: {missing}: {name}\n")
            else:
                sys.stderr.write(f"Error response from daemon: {e.message}\n")
            rc = 1
    if fmt:
        f = unescape(fmt)
        for r in results:
            try:
                ctx.out.write((json.dumps(r) if f == "json" else render(f, r)) + "\n")
            except TemplateError as e:
                sys.stderr.write(f"{e}\n")
                return 1
    else:
        ctx.out.write(json.dumps(results, indent=4) + "\n")
    return rc


def inspect(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-f", "--format", kind="str", help="Format output using a custom template"),
        flag("-s", "--size", help="Display total file sizes if the type is container"),
        flag("--type", kind="str", help="Only inspect objects of the given type"),
    ], "matou inspect [OPTIONS] NAME|ID [NAME|ID...]", "Return low-level information on matou objects",
        min_args=1, cmd="inspect")
    c = ctx.client
    kinds = {"container": lambda n: c.get_json(f"/containers/{n}/json", {"size": opts["size"] or None}),
             "image": lambda n: c.get_json(f"/images/{n}/json"),
             "network": lambda n: c.get_json(f"/networks/{n}"),
             "volume": lambda n: c.get_json(f"/volumes/{n}")}
    order = [opts["type"]] if opts["type"] else ["container", "image", "network", "volume"]
    if opts["type"] and opts["type"] not in kinds:
        sys.stderr.write(f'"{opts["type"]}" is not a valid value for --type\n')
        return 1

    def getter(name: str) -> Callable[[], Any]:
        def get() -> Any:
            last: APIError | None = None
            for k in order:
                try:
                    return kinds[k](name)
                except APIError as e:
                    if e.status not in (404, 400):
                        raise
                    last = e
            raise last or APIError(404, "not found")
        return get

    return print_inspect(ctx, [getter(n) for n in pos], pos, opts["format"], "No such object")
