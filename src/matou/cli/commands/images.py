"""images, image ..., tag, rmi, save, load, import, history."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from matou.cli.commands import filters_json as _filters
from matou.cli.commands import parse_or_exit
from matou.cli.context import Ctx
from matou.cli.flags import flag
from matou.cli.output import ago, fail, format_rows, human_size
from matou.client.http import APIError


def _short(id_: str, trunc: bool) -> str:
    return id_[7:19] if trunc else id_


def images(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-a", "--all", help="Show all images (default hides intermediate images)"),
        flag("--digests", help="Show digests"),
        flag("-f", "--filter", kind="list", help="Filter output based on conditions provided"),
        flag("--format", kind="str", help="Format output using a custom template"),
        flag("--no-trunc", help="Don't truncate output"),
        flag("-q", "--quiet", help="Only show image IDs"),
    ], "matou images [OPTIONS] [REPOSITORY[:TAG]]", "List images", max_args=1, cmd="images")
    filters = list(opts["filter"])
    if pos:
        filters.append(f"reference={pos[0]}")
    data = ctx.api().images(opts["all"], _filters(filters), opts["digests"])
    rows: list[dict[str, Any]] = []
    trunc = not opts["no_trunc"]
    for img in data:
        tags = [t for t in img.get("RepoTags") or [] if t != "<none>:<none>"]
        digests = [d for d in img.get("RepoDigests") or [] if d != "<none>@<none>"]
        pairs: list[tuple[str, str, str]] = []
        for t in tags:
            repo, _, tag = t.rpartition(":")
            dig = next((d.split("@", 1)[1] for d in digests if d.split("@", 1)[0] == repo), "<none>")
            pairs.append((repo, tag, dig))
        if not tags:
            if digests:
                for d in digests:
                    repo, _, dig = d.partition("@")
                    pairs.append((repo, "<none>", dig))
            else:
                pairs.append(("<none>", "<none>", "<none>"))
        for repo, tag, dig in pairs:
            if pos and repo == "<none>":
                continue
            rows.append({
                "Repository": repo, "Tag": tag, "Digest": dig, "ID": _short(img["Id"], trunc),
                "CreatedSince": ago(img["Created"]),
                "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(img["Created"])),
                "Size": human_size(img["Size"]), "VirtualSize": human_size(img.get("VirtualSize", img["Size"])),
                "SharedSize": "N/A", "UniqueSize": "N/A", "Containers": "N/A" if img.get("Containers", -1) < 0
                else str(img["Containers"]),
            })
    if opts["quiet"]:
        seen: list[str] = []
        for r in rows:
            if r["ID"] not in seen:
                seen.append(r["ID"])
        ctx.out.write("".join(f"{x}\n" for x in seen))
        return 0
    default = ("table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
               if opts["digests"] else "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}")
    format_rows(opts["format"], rows, default,
                {"Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
                 "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
                 "VirtualSize": "VIRTUAL SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE"},
                out=ctx.out)
    return 0


def tag(ctx: Ctx, argv: list[str]) -> int:
    _opts, pos = parse_or_exit(argv, [], "matou tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
                               "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", min_args=2, max_args=2,
                               cmd="tag")
    target = pos[1]
    repo, tagname = target, None
    slash = target.rfind("/")
    colon = target.rfind(":")
    if "@" in target:
        return fail(f'Error parsing reference: "{target}" is not a valid repository/tag: invalid reference format')
    if colon > slash:
        repo, tagname = target[:colon], target[colon + 1:]
    try:
        ctx.api().image_tag(pos[0], repo, tagname)
    except APIError as e:
        return fail(f"Error response from daemon: {e.message}")
    return 0


def rmi(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-f", "--force", help="Force removal of the image"),
        flag("--no-prune", help="Do not delete untagged parents"),
    ], "matou rmi [OPTIONS] IMAGE [IMAGE...]", "Remove one or more images", min_args=1, cmd="rmi")
    rc = 0
    api = ctx.api()
    for name in pos:
        try:
            for item in api.image_remove(name, opts["force"], opts["no_prune"]) or []:
                for k, v in item.items():
                    ctx.out.write(f"{k}: {v}\n")
        except APIError as e:
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            rc = 1
    return rc


def history(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("--format", kind="str", help="Format output using a custom template"),
        flag("-H", "--human", kind="bool", default=True, help="Print sizes and dates in human readable format"),
        flag("--no-trunc", help="Don't truncate output"),
        flag("-q", "--quiet", help="Only show image IDs"),
    ], "matou history [OPTIONS] IMAGE", "Show the history of an image", min_args=1, max_args=1, cmd="history")
    rows = []
    trunc = not opts["no_trunc"]
    for h in ctx.api().image_history(pos[0]):
        created_by = h.get("CreatedBy", "")
        if trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append({
            "ID": h["Id"] if h["Id"] == "<missing>" else _short(h["Id"], trunc),
            "CreatedSince": ago(h["Created"]) if opts["human"] else str(h["Created"]),
            "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(h["Created"])),
            "CreatedBy": created_by, "Size": human_size(h["Size"]) if opts["human"] else str(h["Size"]),
            "Comment": h.get("Comment", ""),
        })
    format_rows(opts["format"], rows,
                "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
                {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
                 "Size": "SIZE", "Comment": "COMMENT"}, quiet_key="ID", quiet=opts["quiet"], out=ctx.out)
    return 0


def save(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-o", "--output", kind="str", help="Write to a file, instead of STDOUT"),
        flag("--format", kind="str", default="docker", help="Archive format: docker (docker-archive) or oci"),
    ], "matou save [OPTIONS] IMAGE [IMAGE...]", "Save one or more images to a tar archive (streamed to STDOUT by default)",
        min_args=1, cmd="save")
    if not opts["output"] and sys.stdout.isatty():
        return fail("Cowardly refusing to save to a terminal. Use the -o flag or redirect")
    r = ctx.api().images_get(pos, opts["format"])
    tmp = None
    try:
        if opts["output"]:
            tmp = opts["output"] + ".tmp"
            out = open(tmp, "wb")
        else:
            out = os.fdopen(sys.stdout.fileno(), "wb", closefd=False)
        with out:
            for chunk in r.iter_raw():
                out.write(chunk)
        if tmp:
            os.replace(tmp, opts["output"])
            tmp = None
    finally:
        r.close()
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return 0


def _read_input(path: str | None) -> Iterator[bytes]:
    f = open(path, "rb") if path and path != "-" else os.fdopen(sys.stdin.fileno(), "rb", closefd=False)
    with f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return
            yield b


def load(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("-i", "--input", kind="str", help="Read from tar archive file, instead of STDIN"),
        flag("-q", "--quiet", help="Suppress the load output"),
    ], "matou load [OPTIONS]", "Load an image from a tar archive or STDIN", max_args=0, cmd="load")
    if not opts["input"] and sys.stdin.isatty():
        return fail("requested load from stdin, but stdin is empty")
    if opts["input"] and not os.path.exists(opts["input"]):
        return fail(f"open {opts['input']}: no such file or directory")
    r = ctx.api().images_load(_read_input(opts["input"]), opts["quiet"])
    rc = 0
    try:
        for msg in r.iter_json():
            if "error" in msg:
                sys.stderr.write(f"Error: {msg['error']}\n" if not msg["error"].startswith("Error") else msg["error"] + "\n")
                rc = 1
            elif "stream" in msg and not opts["quiet"]:
                ctx.out.write(msg["stream"])
    finally:
        r.close()
    return rc


def import_(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [
        flag("-c", "--change", kind="list", help="Apply Dockerfile instruction to the created image"),
        flag("-m", "--message", kind="str", default="", help="Set commit message for imported image"),
        flag("--platform", kind="str", help="Set platform if server is multi-platform capable"),
    ], "matou import [OPTIONS] file|URL|- [REPOSITORY[:TAG]]",
        "Import the contents from a tarball to create a filesystem image", min_args=1, max_args=2, cmd="import")
    src = pos[0]
    if src != "-" and not os.path.exists(src):
        return fail(f"open {src}: no such file or directory")
    repo = tagname = None
    if len(pos) > 1:
        repo = pos[1]
        colon, slash = repo.rfind(":"), repo.rfind("/")
        if colon > slash:
            repo, tagname = repo[:colon], repo[colon + 1:]
    r = ctx.api().images_import(_read_input(src), {"fromSrc": "-", "repo": repo, "tag": tagname,
                                                   "changes": opts["change"] or None, "message": opts["message"] or None,
                                                   "platform": opts["platform"]})
    rc = 0
    try:
        for msg in r.iter_json():
            if "error" in msg:
                sys.stderr.write(f"Error response from daemon: {msg['error']}\n")
                rc = 1
            elif "status" in msg:
                ctx.out.write(msg["status"] + "\n")
    finally:
        r.close()
    return rc


def inspect_images(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [flag("-f", "--format", kind="str", help="Format output using a custom template")],
                              "matou image inspect [OPTIONS] IMAGE [IMAGE...]",
                              "Display detailed information on one or more images", min_args=1, cmd="image inspect")
    from matou.cli.commands.inspect import print_inspect

    return print_inspect(ctx, [lambda n=n: ctx.api().image_inspect(n) for n in pos], pos, opts["format"],
                         "No such image")


def prune(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("-a", "--all", help="Remove all unused images, not just dangling ones"),
        flag("--filter", kind="list", help="Provide filter values (e.g. 'until=<timestamp>')"),
        flag("-f", "--force", help="Do not prompt for confirmation"),
    ], "matou image prune [OPTIONS]", "Remove unused images", max_args=0, cmd="image prune")
    if not opts["force"] and sys.stdin.isatty():
        ctx.out.write("WARNING! This will remove all " + ("images without at least one container associated to them."
                                                         if opts["all"] else "dangling images.") +
                      "\nAre you sure you want to continue? [y/N] ")
        ctx.out.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    filters = list(opts["filter"]) + [f"dangling={'false' if opts['all'] else 'true'}"]
    r = ctx.api().images_prune(_filters(filters))
    deleted = (r or {}).get("ImagesDeleted") or []
    if deleted:
        ctx.out.write("Deleted Images:\n" + "".join(f"{k.lower()}: {v}\n" for d in deleted for k, v in d.items()) + "\n")
    ctx.out.write(f"Total reclaimed space: {human_size((r or {}).get('SpaceReclaimed', 0))}\n")
    return 0


def bootstrap(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, [flag("-t", "--tag", kind="str", help="Name the image (default busybox:latest "
                                                                             "or debian:bookworm)")],
                              "matou image bootstrap [OPTIONS] busybox|debian",
                              "Make a base image without a registry: busybox from Debian's busybox-static, "
                              "or Debian with debootstrap (slow, needs a Debian mirror)",
                              min_args=1, max_args=1, cmd="image bootstrap")
    r = ctx.api().images_bootstrap(pos[0], opts["tag"])
    ctx.out.write(f"{(r.get('RepoTags') or [''])[0]} {r['Id']}\n")
    return 0


def image(ctx: Ctx, argv: list[str]) -> int:
    sub = argv[0] if argv else ""
    rest = argv[1:]
    table = {"ls": images, "list": images, "rm": rmi, "remove": rmi, "tag": tag, "history": history, "save": save,
             "load": load, "import": import_, "inspect": inspect_images, "prune": prune, "bootstrap": bootstrap}
    fn = table.get(sub)
    if fn is None and sub in ("pull", "push", "build"):
        import importlib

        from matou.cli.main import COMMANDS

        mod, func = COMMANDS[sub]
        return int(getattr(importlib.import_module(mod), func)(ctx, rest) or 0)
    if fn is None:
        ctx.out.write("\nUsage:  matou image COMMAND\n\nManage images\n\nCommands:\n"
                      "  bootstrap   Make a base image (busybox, debian) without a registry\n"
                      "  build       Build an image from a Dockerfile\n  history     Show the history of an image\n"
                      "  import      Import the contents from a tarball to create a filesystem image\n"
                      "  inspect     Display detailed information on one or more images\n"
                      "  load        Load an image from a tar archive or STDIN\n  ls          List images\n"
                      "  prune       Remove unused images\n  pull        Download an image from a registry\n"
                      "  push        Upload an image to a registry\n  rm          Remove one or more images\n"
                      "  save        Save one or more images to a tar archive (streamed to STDOUT by default)\n"
                      "  tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE\n")
        return 0 if not sub else 1
    return fn(ctx, rest)

