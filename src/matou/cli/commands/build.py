"""build and builder: Docker's legacy ``docker build`` (a tar context over ``POST /build``) and the build cache.

The context tar is made here, streamed while the directory is walked, honouring ``.dockerignore`` (the Dockerfile
and ``.dockerignore`` are always sent, as Docker does; the daemon hides them again if they are ignored). Entries
are written like Docker's CLI writes them: sorted, owner 0:0, no user or group names. ``-`` reads a context tar
(or a lone Dockerfile) from stdin; ``-f -`` reads the Dockerfile from stdin and sends it under a random name.
Standard library only, like the rest of the CLI.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from typing import Any

from matou.cli.commands import parse_or_exit
from matou.cli.context import Ctx
from matou.cli.flags import flag
from matou.cli.output import fail, human_size
from matou.util import fastjson as json

CHUNK = 1 << 20
BLOCK = 512

FLAGS = [
    flag("-t", "--tag", kind="list", help="Name and optionally a tag in the 'name:tag' format"),
    flag("-f", "--file", kind="str", help="Name of the Dockerfile (default: 'PATH/Dockerfile')"),
    flag("--build-arg", kind="list", help="Set build-time variables"),
    flag("--label", kind="list", help="Set metadata for an image"),
    flag("--no-cache", help="Do not use cache when building the image"),
    flag("--cache-from", kind="list", help="Images to consider as cache sources"),
    flag("--pull", help="Always attempt to pull a newer version of the image"),
    flag("-q", "--quiet", help="Suppress the build output and print image ID on success"),
    flag("--rm", kind="bool", default=True, help="Remove intermediate containers after a successful build"),
    flag("--force-rm", help="Always remove intermediate containers"),
    flag("--target", kind="str", help="Set the target build stage to build"),
    flag("--network", kind="str", help="Set the networking mode for the RUN instructions during build"),
    flag("--platform", kind="str", help="Set platform if server is multi-platform capable"),
    flag("--iidfile", kind="str", help="Write the image ID to the file"),
    flag("--add-host", kind="list", help="Add a custom host-to-IP mapping (host:ip)"),
    flag("--shm-size", kind="str", help="Size of /dev/shm"),
    flag("-m", "--memory", kind="str", help="Memory limit"),
    flag("--memory-swap", kind="str", help="Swap limit equal to memory plus swap: -1 to enable unlimited swap"),
    flag("-c", "--cpu-shares", kind="int", default=0, help="CPU shares (relative weight)"),
    flag("--cpu-period", kind="int", default=0, help="Limit the CPU CFS (Completely Fair Scheduler) period"),
    flag("--cpu-quota", kind="int", default=0, help="Limit the CPU CFS (Completely Fair Scheduler) quota"),
    flag("--cpuset-cpus", kind="str", help="CPUs in which to allow execution (0-3, 0,1)"),
    flag("--cpuset-mems", kind="str", help="MEMs in which to allow execution (0-3, 0,1)"),
    flag("--cgroup-parent", kind="str", help="Set the parent cgroup for the RUN instructions during build"),
    flag("--ulimit", kind="list", help="Ulimit options"),
    flag("--secret", kind="list", help="Secret to expose to RUN --mount=type=secret (id=NAME,src=FILE|env=VAR)"),
    flag("--explain-cache", help="Print why each step missed the build cache (matou)"),
    flag("--progress", kind="str", help="Accepted for compatibility (output is always plain)"),
    flag("--compress", help="Compress the build context using gzip"),
    flag("--isolation", kind="str", help="Container isolation technology (accepted, ignored)"),
    flag("--security-opt", kind="list", help="Security options (accepted, ignored)"),
]


# ---------------------------------------------------------------------------------------------------- tar writer
def _octal(v: int, width: int) -> bytes:
    return (b"%0*o" % (width - 1, v)) + b"\0"


def _block(name: bytes, mode: int, size: int, mtime: int, typeflag: bytes, linkname: bytes, prefix: bytes) -> bytes:
    h = bytearray(BLOCK)
    h[0:len(name)] = name
    h[100:108] = _octal(mode & 0o7777, 8)
    h[108:116] = _octal(0, 8)
    h[116:124] = _octal(0, 8)
    h[124:136] = _octal(size, 12)
    h[136:148] = _octal(max(0, min(mtime, 8**11 - 1)), 12)
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157:157 + len(linkname)] = linkname
    h[257:265] = b"ustar\x0000"
    h[329:337] = _octal(0, 8)
    h[337:345] = _octal(0, 8)
    h[345:345 + len(prefix)] = prefix
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def tar_header(name: bytes, mode: int, size: int, mtime: int, typeflag: bytes = b"0", linkname: bytes = b"") -> bytes:
    """One ustar header (PAX records when a name, link target or size does not fit); owner 0:0."""
    pax = b""
    prefix = b""
    if len(name) > 100:
        cut = name.rfind(b"/", 0, 156)
        if 0 < cut and len(name) - cut - 1 <= 100 and cut <= 155:
            prefix, name = name[:cut], name[cut + 1:]
        else:
            pax += _pax_record(b"path", name)
            name = name[:100]
    if len(linkname) > 100:
        pax += _pax_record(b"linkpath", linkname)
        linkname = linkname[:100]
    if size >= 8**11:
        pax += _pax_record(b"size", str(size).encode())
    out = b""
    if pax:
        out += _block(b"PaxHeaders/" + name[-80:], 0o644, len(pax), mtime, b"x", b"", b"")
        out += pax + bytes(-len(pax) % BLOCK)
    return out + _block(name, mode, 0 if size >= 8**11 else size, mtime, typeflag, linkname, prefix)


class _Out:
    """Collects small writes into ~1 MiB chunks for the chunked request body."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.total = 0

    def add(self, b: bytes) -> bytes | None:
        self.buf += b
        self.total += len(b)
        if len(self.buf) >= CHUNK:
            out = bytes(self.buf)
            self.buf.clear()
            return out
        return None

    def flush(self) -> bytes | None:
        if not self.buf:
            return None
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _file_entries(path: str, arcname: bytes, st: os.stat_result, out: _Out) -> Iterator[bytes]:
    size = st.st_size
    chunk = out.add(tar_header(arcname, st.st_mode, size, int(st.st_mtime)))
    if chunk:
        yield chunk
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        left = size
        while left:
            data = os.read(fd, min(left, CHUNK))
            if not data:  # shrank while we read: keep the header's promise
                data = bytes(min(left, CHUNK))
            left -= len(data)
            if len(data) >= CHUNK // 2:
                pending = out.flush()
                if pending:
                    yield pending
                out.total += len(data)
                yield data
            else:
                c = out.add(data)
                if c:
                    yield c
    finally:
        os.close(fd)
    pad = -size % BLOCK
    if pad:
        c = out.add(bytes(pad))
        if c:
            yield c


def walk_context(root: str, keep: list[str]) -> list[tuple[str, str, os.stat_result]]:
    """(host path, relative path, lstat) of everything the context sends, sorted, .dockerignore applied."""
    from matou.util.dockerignore import Matcher, load

    m = load(root)
    if m:
        always = ["!" + k for k in keep if m.excluded(k)]
        if always:
            m = Matcher(m.raw + always)
    out: list[tuple[str, str, os.stat_result]] = []
    stack: list[tuple[str, str]] = [(root, "")]
    while stack:
        d, rel = stack.pop()
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            raise SystemExit(fail(f"error checking context: can't stat '{d}': {e.strerror}"))
        subdirs: list[tuple[str, str]] = []
        for n in names:
            p = os.path.join(d, n)
            r = f"{rel}/{n}" if rel else n
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            excluded = bool(m) and m.excluded(r)
            if excluded and not (stat.S_ISDIR(st.st_mode) and m.may_include_under(r)):
                continue
            if stat.S_ISDIR(st.st_mode):
                if not excluded:
                    out.append((p, r, st))
                subdirs.append((p, r))
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                if stat.S_ISREG(st.st_mode) and not os.access(p, os.R_OK):
                    raise SystemExit(fail(f"error checking context: can't open '{p}': permission denied"))
                out.append((p, r, st))
            # sockets, fifos and devices are not part of a context (docker skips them too)
        stack.extend(reversed(subdirs))
    return out


class HashCache:
    """sha256 of context files, keyed by what changes when a file does (size, mtime, ctime, inode): like git's
    index, so an unchanged file is not read again. Files modified in the last seconds are not remembered (their
    timestamps could still hide a second change)."""

    def __init__(self, root: str) -> None:
        import hashlib

        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        key = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:24]
        self.path = os.path.join(base, "matou", "build-context", key + ".json")
        self.old: dict[str, list[Any]] = {}
        self.new: dict[str, list[Any]] = {}
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
            if isinstance(data, dict):
                self.old = data
        except (OSError, ValueError):
            pass

    def digest(self, path: str, rel: str, st: os.stat_result) -> str:
        import hashlib
        import time

        sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        hit = self.old.get(rel)
        if hit and hit[:5] == sig:
            self.new[rel] = hit
            return str(hit[5])
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while True:
                b = f.read(CHUNK)
                if not b:
                    break
                h.update(b)
        hexd = h.hexdigest()
        if time.time() - max(st.st_mtime, st.st_ctime) > 2:
            self.new[rel] = sig + [hexd]
        return hexd

    def save(self) -> None:
        if self.new == self.old:
            return
        try:
            os.makedirs(os.path.dirname(self.path), 0o700, exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(json.dumps(self.new))
            os.replace(tmp, self.path)
        except OSError:
            pass


def _ref_header(arc: bytes, st: os.stat_result, hexd: str) -> bytes:
    rec = _pax_record(b"SCHILY.xattr.user.matou.ref", f"{hexd}:{st.st_size}".encode())
    return (_block(b"PaxHeaders/" + arc[-80:], 0o644, len(rec), int(st.st_mtime), b"x", b"", b"")
            + rec + bytes(-len(rec) % BLOCK) + tar_header(arc, st.st_mode, 0, int(st.st_mtime)))


def context_tar(entries: list[tuple[str, str, os.stat_result]], extra: dict[bytes, bytes],
                refs: dict[str, str], out: _Out) -> Iterator[bytes]:
    """The build context as a tar stream: ``extra`` files (name -> content) first, then ``entries``; files in
    ``refs`` (relative path -> sha256 the daemon already has) travel as references without their data."""
    for name, data in extra.items():
        c = out.add(tar_header(name, 0o600, len(data), 0) + data + bytes(-len(data) % BLOCK))
        if c:
            yield c
    for p, r, st in entries:
        arc = os.fsencode(r)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            c = out.add(tar_header(arc + b"/", mode, 0, int(st.st_mtime), b"5"))
        elif stat.S_ISLNK(mode):
            c = out.add(tar_header(arc, 0o777, 0, int(st.st_mtime), b"2", os.fsencode(os.readlink(p))))
        elif r in refs:
            c = out.add(_ref_header(arc, st, refs[r]))
        else:
            yield from _file_entries(p, arc, st, out)
            continue
        if c:
            yield c
    tail = out.add(bytes(2 * BLOCK))
    if tail:
        yield tail
    rest = out.flush()
    if rest:
        yield rest


def _known_contents(ctx: Ctx, entries: list[tuple[str, str, os.stat_result]], root: str) -> dict[str, str]:
    """Files whose content the daemon already has (matou's ``POST /build/check``); {} against other daemons."""
    from matou.client.http import APIError

    files = [(p, r, st) for p, r, st in entries if stat.S_ISREG(st.st_mode)]
    if not files:
        return {}
    cache = HashCache(root)
    digests = {r: cache.digest(p, r, st) for p, r, st in files}
    sizes = {r: st.st_size for _p, r, st in files}
    try:
        res = ctx.client.post_json("/build/check", None,
                                   {"files": sorted({(d, sizes[r]) for r, d in digests.items()})})
    except APIError:
        return {}
    cache.save()
    missing = set((res or {}).get("missing") or [])
    return {r: d for r, d in digests.items() if d not in missing}


def _stdin_chunks(first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    fd = sys.stdin.fileno()
    while True:
        b = os.read(fd, CHUNK)
        if not b:
            return
        yield b


def _looks_like_archive(head: bytes) -> bool:
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or head[:4] == b"\x28\xb5\x2f\xfd":
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def _read_all_stdin() -> bytes:
    chunks = []
    while True:
        b = os.read(sys.stdin.fileno(), CHUNK)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _size(v: str | None, what: str) -> int | None:
    if not v:
        return None
    from matou.cli.commands.runopts import ram_in_bytes

    return ram_in_bytes(v, what)


def _secrets(specs: list[str]) -> str | None:
    import base64

    out: dict[str, str] = {}
    for spec in specs:
        kv = dict(p.partition("=")[::2] for p in spec.split(","))
        sid = kv.get("id") or ""
        src = kv.get("src") or kv.get("source") or ""
        env = kv.get("env") or ""
        if not sid:
            raise SystemExit(fail(f"invalid --secret {spec!r}: id= is required"))
        if env:
            if env not in os.environ:
                raise SystemExit(fail(f"secret {sid}: environment variable {env} is not set"))
            data = os.environ[env].encode()
        else:
            try:
                with open(src or sid, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise SystemExit(fail(f"secret {sid}: {e.strerror}: {src or sid}"))
        out[sid] = base64.b64encode(data).decode()
    if not out:
        return None
    return base64.urlsafe_b64encode(json.dumps(out).encode()).decode().rstrip("=")


# ---------------------------------------------------------------------------------------------------- build
def build(ctx: Ctx, argv: list[str]) -> int:
    opts, pos = parse_or_exit(argv, FLAGS, "matou build [OPTIONS] PATH | -", "Build an image from a Dockerfile",
                              min_args=1, max_args=1, cmd="build")
    src = pos[0]
    dockerfile = opts["file"] or ""
    query: list[tuple[str, Any]] = [("t", t) for t in opts["tag"]]
    build_args: dict[str, str | None] = {}
    for a in opts["build_arg"]:
        k, eq, v = a.partition("=")
        build_args[k] = v if eq else os.environ.get(k)
    labels = {}
    for lbl in opts["label"]:
        k, _, v = lbl.partition("=")
        labels[k] = v
    if src.startswith(("http://", "https://", "git://", "git@", "github.com/")):
        return fail("matou build: remote contexts (URLs, git) are not supported: clone or download it first")
    extra: dict[bytes, bytes] = {}
    keep = [".dockerignore"]
    body: Iterator[bytes]
    out = _Out()
    if src == "-":
        if dockerfile == "-":
            return fail("invalid argument: can't use stdin for both build context and dockerfile")
        head = os.read(sys.stdin.fileno(), CHUNK)
        if _looks_like_archive(head):
            body = _stdin_chunks(head)
        else:  # a Dockerfile alone on stdin: a context holding just it
            data = head + _read_all_stdin()
            body = iter([tar_header(b"Dockerfile", 0o600, len(data), 0) + data + bytes(-len(data) % BLOCK)
                         + bytes(2 * BLOCK)])
            dockerfile = "Dockerfile"
    else:
        root = os.path.abspath(src)
        if not os.path.isdir(root):
            return fail(f'unable to prepare context: path "{src}" not found')
        if dockerfile == "-":
            import secrets

            name = f".dockerfile.{secrets.token_hex(10)}"
            extra[name.encode()] = _read_all_stdin()
            dockerfile = name
        else:
            path = os.path.abspath(dockerfile) if dockerfile else os.path.join(root, "Dockerfile")
            if not dockerfile and not os.path.exists(path) and os.path.exists(os.path.join(root, "dockerfile")):
                path = os.path.join(root, "dockerfile")
            if not os.path.exists(path):
                return fail(f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat "
                            f"{path}: no such file or directory")
            rel = os.path.relpath(path, root)
            if rel.startswith(".."):
                import secrets

                name = f".dockerfile.{secrets.token_hex(10)}"
                with open(path, "rb") as f:
                    extra[name.encode()] = f.read()
                dockerfile = name
            else:
                dockerfile = rel
                keep.append(rel)
        entries = walk_context(root, keep)
        refs = _known_contents(ctx, entries, root)
        body = context_tar(entries, extra, refs, out)
        if opts["compress"]:
            body = _gzip(body)
    if dockerfile:
        query.append(("dockerfile", dockerfile))
    query += [("q", "1" if opts["quiet"] else None), ("nocache", "1" if opts["no_cache"] else None),
              ("pull", "1" if opts["pull"] else None), ("rm", "1" if opts["rm"] else "0"),
              ("forcerm", "1" if opts["force_rm"] else None), ("target", opts["target"] or None),
              ("networkmode", opts["network"] or None), ("platform", opts["platform"] or None),
              ("buildargs", json.dumps(build_args) if build_args else None),
              ("labels", json.dumps(labels) if labels else None),
              ("cachefrom", json.dumps(opts["cache_from"]) if opts["cache_from"] else None),
              ("extrahosts", ",".join(opts["add_host"]) or None),
              ("explaincache", "1" if opts["explain_cache"] else None),
              ("shmsize", _size(opts["shm_size"], "shm-size")), ("memory", _size(opts["memory"], "memory")),
              ("memswap", -1 if opts["memory_swap"] == "-1" else _size(opts["memory_swap"], "memory-swap")),
              ("cpushares", opts["cpu_shares"] or None), ("cpuperiod", opts["cpu_period"] or None),
              ("cpuquota", opts["cpu_quota"] or None), ("cpusetcpus", opts["cpuset_cpus"] or None),
              ("cpusetmems", opts["cpuset_mems"] or None), ("cgroupparent", opts["cgroup_parent"] or None)]
    if opts["ulimit"]:
        from matou.cli.commands.runopts import parse_ulimit

        query.append(("ulimits", json.dumps([parse_ulimit(u) for u in opts["ulimit"]])))
    headers = {"Content-Type": "application/x-tar"}
    sec = _secrets(opts["secret"])
    if sec:
        headers["X-Matou-Build-Secrets"] = sec
    r = ctx.client.request("POST", "/build", query, body=body, headers=headers)
    if not opts["quiet"] and src != "-":
        ctx.out.write(f"Sending build context to Docker daemon  {human_size(out.total)}\n")
    return _show(ctx, r, opts)


def _gzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    import zlib

    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    for c in chunks:
        d = z.compress(c)
        if d:
            yield d
    yield z.flush()


def _show(ctx: Ctx, r: Any, opts: dict[str, Any]) -> int:
    image_id = ""
    rc = 0
    quiet = opts["quiet"]
    try:
        for msg in r.iter_json():
            err = msg.get("errorDetail") or ({"message": msg["error"]} if msg.get("error") else None)
            if err:
                sys.stderr.write(str(err.get("message", "")).rstrip("\n") + "\n")
                rc = int(err.get("code") or 1)
                break
            if "aux" in msg and isinstance(msg["aux"], dict) and msg["aux"].get("ID"):
                image_id = msg["aux"]["ID"]
            elif "stream" in msg:
                if not quiet:
                    ctx.out.write(msg["stream"])
                    ctx.out.flush()
            elif "status" in msg and not quiet:
                if msg.get("progressDetail") and msg.get("progress"):
                    continue
                ctx.out.write((f"{msg['id']}: " if msg.get("id") else "") + msg["status"] + "\n")
                ctx.out.flush()
    finally:
        r.close()
    if rc:
        return rc
    if quiet and image_id:
        ctx.out.write(image_id + "\n")
    if opts["iidfile"] and image_id:
        with open(opts["iidfile"], "w") as f:
            f.write(image_id)
    return 0


# ---------------------------------------------------------------------------------------------------- builder
def builder(ctx: Ctx, argv: list[str]) -> int:
    sub = argv[0] if argv else ""
    rest = argv[1:]
    if sub == "prune":
        return _prune(ctx, rest)
    if sub in ("du", "ls"):
        return _du(ctx, rest)
    if sub == "build":
        return build(ctx, rest)
    ctx.out.write("\nUsage:  matou builder COMMAND\n\nManage builds\n\nCommands:\n"
                  "  build       Build an image from a Dockerfile\n"
                  "  du          Show the build cache entries and their sizes\n"
                  "  prune       Remove build cache\n")
    return 0 if not sub else 1


def _prune(ctx: Ctx, argv: list[str]) -> int:
    opts, _ = parse_or_exit(argv, [
        flag("-a", "--all", help="Remove all unused build cache, not just dangling ones"),
        flag("--filter", kind="list", help="Provide filter values (e.g. 'until=24h')"),
        flag("-f", "--force", help="Do not prompt for confirmation"),
        flag("--keep-storage", kind="str", help="Amount of disk space to keep for cache (accepted, ignored)"),
    ], "matou builder prune", "Remove build cache", max_args=0, cmd="builder prune")
    if not opts["force"] and sys.stdin.isatty():
        ctx.out.write("WARNING! This will remove all dangling build cache. Are you sure you want to continue? [y/N] ")
        ctx.out.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    from matou.cli.commands import filters_json

    res = ctx.client.post_json("/build/prune", {"all": "1" if opts["all"] else None,
                                                "filters": filters_json(opts["filter"])})
    deleted = (res or {}).get("CachesDeleted") or []
    if deleted:
        ctx.out.write("Deleted build cache objects:\n" + "".join(f"{d}\n" for d in deleted) + "\n")
    ctx.out.write(f"Total reclaimed space: {human_size((res or {}).get('SpaceReclaimed', 0))}\n")
    return 0


def _du(ctx: Ctx, argv: list[str]) -> int:
    parse_or_exit(argv, [], "matou builder du", "Show the build cache", max_args=0, cmd="builder du")
    rows = (ctx.api().df() or {}).get("BuildCache") or []
    from matou.cli.output import tabwrite

    table = [["ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED"]]
    total = 0
    for c in rows:
        total += c.get("Size", 0)
        table.append([c["ID"][:25], "false" if c.get("Shared") else "true", human_size(c.get("Size", 0)),
                      c.get("LastUsedAt", "")[:19]])
    tabwrite(table, out=ctx.out)
    ctx.out.write(f"Total:\t{human_size(total)}\n")
    return 0
