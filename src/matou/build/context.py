"""The build context: a tar received from the client, indexed and content-hashed while it streams.

Why hash while receiving: a fully cached rebuild still needs the content of every COPY source, and hashing the
bytes as they arrive (in the thread that reads them) costs no second read. The index keeps, per path, the kind,
mode, owner, size, sha256 of the content (the cache key of a COPY; never the mtime) and where the bytes are.

In the daemon the bytes go to the context file store (``filestore``) and are read from there, so a file that
did not change since an earlier build is neither sent nor written again; nothing is unpacked at all. Without a
store (tests, tools) the tree is unpacked below a directory, confined to it: names are cleaned (no absolute
paths, no ``..``), files are created with O_EXCL|O_NOFOLLOW, and an entry below a symlink of the archive is
refused. Devices and fifos are skipped (a context holds files).

``.dockerignore`` (Docker's patterns, ``matou.util.dockerignore``) is applied on lookup, so a tar sent on stdin
is filtered like a directory context; if it names the Dockerfile or ``.dockerignore`` they are read but not
visible to COPY, as in Docker.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import io
import lzma
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from matou.build.filestore import REF_XATTR, FileStore
from matou.errors import InvalidArgument, NotFound
from matou.layers import tarfmt as T
from matou.layers.compression import decompressing_reader
from matou.layers.extract import Refusal, clean_name
from matou.layers.tarread import entries
from matou.util.dockerignore import Matcher, compile_pattern, read_patterns

CHUNK = 1 << 20
TRAILING_LIMIT = 16 << 20
_GLOB = re.compile(r"[*?\[]")


@dataclass(slots=True)
class Entry:
    path: str  # relative to the context root, "a/b"
    kind: str  # "file" | "dir" | "symlink"
    mode: int  # permission bits (with setuid/setgid/sticky)
    uid: int
    gid: int
    size: int
    digest: str  # sha256 hex of the content (files), the target (symlinks), "" (dirs)
    mtime: int
    src: str = ""  # where a file's bytes are on the host (the context file store, or the unpacked context)

    def key(self, rel: str) -> str:
        """One line of a content hash: everything that ends up in a layer except the mtime."""
        return f"{rel}\0{self.kind}\0{self.mode:o}\0{self.uid}\0{self.gid}\0{self.digest}\n"


class _Reader:
    """The reader interface ``tarread.entries`` expects, over a plain stream in the calling thread."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.offset = 0

    def read(self, n: int) -> bytes:
        if n == 0:
            return b""
        data = self._f.read(n)
        if not data:
            return b""
        while len(data) < n:
            more = self._f.read(n - len(data))
            if not more:
                raise EOFError(n - len(data))
            data += more
        self.offset += n
        return data

    def take(self, n: int) -> bytes:
        data = self.read(n)
        if len(data) < n:
            raise EOFError(n - len(data))
        return data

    def skip(self, n: int) -> None:
        while n:
            data = self._f.read(min(n, CHUNK))
            if not data:
                raise EOFError(n)
            n -= len(data)
            self.offset += len(data)

    def drain(self, limit: int) -> int:
        left = 0
        while True:
            data = self._f.read(CHUNK)
            if not data:
                return left
            left += len(data)
            if left > limit:
                raise InvalidArgument("the build context has more than 16 MiB of data after its end marker")


def _open_decompressed(src: BinaryIO) -> BinaryIO:
    buf = src if hasattr(src, "peek") else io.BufferedReader(src, CHUNK)  # type: ignore[arg-type]
    head = buf.peek(6)[:6]  # type: ignore[attr-defined]
    if head[:3] == b"BZh":
        return bz2.BZ2File(buf)  # type: ignore[return-value]
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(buf)  # type: ignore[return-value]
    if head[:2] == b"\x1f\x8b" or head[:4] == b"\x28\xb5\x2f\xfd":
        return decompressing_reader(buf)  # type: ignore[arg-type]
    return buf  # type: ignore[return-value]


class BuildContext:
    """The unpacked context: files under ``root``, metadata in ``entries``."""

    def __init__(self, root: str, entries: dict[str, Entry]) -> None:
        self.root = root
        self.entries = entries
        self.ignore = Matcher([])
        self.hidden: set[str] = set()
        self._children: dict[str, list[str]] | None = None

    # ------------------------------------------------------------------ receive
    @classmethod
    def receive(cls, src: BinaryIO, root: str, store: FileStore | None = None) -> BuildContext:
        """Unpack a context tar (plain, gzip, bzip2, xz or zstd).

        Without a ``store`` the tree is written below ``root``. With one, nothing is written there: file contents
        go to the store (hashed on arrival; an entry with the ``user.matou.ref`` xattr names content the store
        already has and carries no data), and the index alone holds names, modes and links."""
        os.makedirs(root, 0o755, exist_ok=True)
        on_disk = store is None
        index: dict[str, Entry] = {}
        links: set[str] = set()
        reader = _Reader(_open_decompressed(src))
        for e in entries(reader, trailing_limit=TRAILING_LIMIT):  # type: ignore[arg-type]
            try:
                name = clean_name(e.name).decode("utf-8", "surrogateescape")
            except Refusal as r:
                raise InvalidArgument(f"build context entry {e.describe()!r}: {r}") from None
            tf = e.typeflag
            if not name:
                reader.skip(e.size)
                continue
            _check_below_links(name, links)
            parent = posixpath.dirname(name)
            if parent:
                _implicit_dirs(index, parent, root if on_disk else None)
            path = os.path.join(root, name)
            mode = e.mode & 0o7777
            mtime = e.mtime_ns // 1_000_000_000
            old = index.get(name)
            if old is not None and (old.kind == "dir") != (tf == T.DIRTYPE):
                raise InvalidArgument(f"build context: {name!r} is a directory and a file in the same archive")
            if tf == T.DIRTYPE:
                if on_disk:
                    os.makedirs(path, 0o755, exist_ok=True)
                index[name] = Entry(name, "dir", mode, e.uid, e.gid, 0, "", mtime)
                reader.skip(e.size)
            elif tf in (T.REGTYPE, T.AREGTYPE, T.CONTTYPE):
                if on_disk and old is not None:
                    os.unlink(path)
                ref = _ref(e.xattrs) if e.xattrs and store is not None else None
                size = e.size
                if store is None:
                    digest = _write_file(reader, path, e.size, mode, e.uid, e.gid)
                    where = path
                elif ref is not None:
                    digest, size = ref
                    where = store.check(digest, size)
                    reader.skip(e.size)
                else:
                    try:
                        digest = store.ingest(e.size, reader.take)
                    except EOFError:
                        raise InvalidArgument("the build context tar is truncated") from None
                    where = store.path(digest)
                index[name] = Entry(name, "file", mode, e.uid, e.gid, size, digest, mtime, where)
            elif tf == T.SYMTYPE:
                target = e.linkname.decode("utf-8", "surrogateescape")
                if on_disk:
                    if old is not None:
                        os.unlink(path)
                    os.symlink(target, path)
                links.add(name)
                index[name] = Entry(name, "symlink", 0o777, e.uid, e.gid, 0, target, mtime)
                reader.skip(e.size)
            elif tf == T.LNKTYPE:
                try:
                    target = clean_name(e.linkname, "link target").decode("utf-8", "surrogateescape")
                except Refusal as r:
                    raise InvalidArgument(f"build context entry {e.describe()!r}: {r}") from None
                src_entry = index.get(target)
                if src_entry is None or src_entry.kind != "file":
                    raise InvalidArgument(f"build context entry {name!r} links to {target!r}, which is not a file "
                                          "earlier in the archive")
                if on_disk:
                    if old is not None:
                        os.unlink(path)
                    os.link(src_entry.src, path, follow_symlinks=False)
                index[name] = Entry(name, "file", src_entry.mode, src_entry.uid, src_entry.gid, src_entry.size,
                                    src_entry.digest, src_entry.mtime, path if on_disk else src_entry.src)
                reader.skip(e.size)
            else:
                reader.skip(e.size)
        if on_disk:  # directory modes last: a 0555 directory must not stop its own files from being written
            for ent in index.values():
                if ent.kind == "dir":
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(root, ent.path), ent.mode)
                        os.chown(os.path.join(root, ent.path), ent.uid, ent.gid, follow_symlinks=False)
        return cls(root, index)

    # ------------------------------------------------------------------ dockerignore and the Dockerfile
    def load_dockerignore(self, dockerfile: str) -> None:
        ent = self.entries.get(".dockerignore")
        if ent is None or ent.kind != "file":
            return
        try:
            patterns = read_patterns(self.read(".dockerignore").decode("utf-8", "replace"))
            self.ignore = Matcher(patterns)
        except ValueError as e:
            raise InvalidArgument(f".dockerignore: {e}") from None
        for special in (dockerfile, ".dockerignore"):
            if self.ignore.excluded(special):
                self.hidden.add(special)

    def read(self, path: str, limit: int = 16 << 20) -> bytes:
        """A file's bytes, following symlinks inside the context (the Dockerfile may be a link)."""
        rel = self.resolve(path)
        ent = self.entries.get(rel)
        if ent is None or ent.kind != "file":
            raise NotFound(f"{path}: no such file in the build context")
        if ent.size > limit:
            raise InvalidArgument(f"{path} is larger than {limit} bytes")
        with open(ent.src, "rb") as f:
            return f.read()

    # ------------------------------------------------------------------ lookups
    def visible(self, rel: str) -> bool:
        return rel not in self.hidden and not (self.ignore and self.ignore.excluded(rel))

    def resolve(self, path: str, follow_last: bool = True, hops: int = 0) -> str:
        """A context path with symlinks resolved inside the context (absolute targets restart at its root)."""
        parts = [p for p in path.split("/") if p and p != "."]
        out: list[str] = []
        while parts:
            p = parts.pop(0)
            if p == "..":
                if out:
                    out.pop()
                continue
            cur = "/".join(out + [p])
            ent = self.entries.get(cur)
            if ent is not None and ent.kind == "symlink" and (parts or follow_last):
                hops += 1
                if hops > 40:
                    raise InvalidArgument(f"{path}: too many levels of symbolic links")
                target = ent.digest
                if target.startswith("/"):
                    out = []
                parts = [x for x in target.split("/") if x and x != "."] + parts
                continue
            out.append(p)
        return "/".join(out)

    def get(self, rel: str) -> Entry | None:
        if rel == "":
            return Entry("", "dir", 0o755, 0, 0, 0, "", 0)
        ent = self.entries.get(rel)
        if ent is None or not self.visible(rel):
            return None
        return ent

    @property
    def children(self) -> dict[str, list[str]]:
        if self._children is None:
            ch: dict[str, list[str]] = {}
            for p in sorted(self.entries):
                ch.setdefault(posixpath.dirname(p), []).append(p)
            self._children = ch
        return self._children

    def walk(self, rel: str, exclude: Matcher | None = None) -> Iterator[Entry]:
        """Everything visible below the directory ``rel``, depth first, names sorted, parents first."""
        stack = [iter(self.children.get(rel, []))]
        cut = len(rel) + 1 if rel else 0
        while stack:
            p = next(stack[-1], None)
            if p is None:
                stack.pop()
                continue
            ent = self.entries[p]
            hidden = not self.visible(p) or bool(exclude and exclude.excluded(p[cut:]))
            if hidden:
                if ent.kind == "dir" and (self.ignore.may_include_under(p) or
                                          (exclude is not None and exclude.may_include_under(p[cut:]))):
                    stack.append(iter(self.children.get(p, [])))
                continue
            yield ent
            if ent.kind == "dir":
                stack.append(iter(self.children.get(p, [])))

    def glob(self, pattern: str) -> list[str]:
        """Context paths matching a Go filepath.Match-style pattern (``*`` stops at ``/``; ``**`` is any depth)."""
        rx = compile_pattern(pattern)
        hits = sorted(p for p in self.entries if rx.match(p) and self.visible(p))
        out: list[str] = []
        for p in hits:
            if out and p.startswith(out[-1] + "/"):
                continue  # inside a matched directory
            out.append(p)
        return out

    def materialize(self, rel: str, dest: str) -> str:
        """A real copy of a context path with the metadata of the index (files on disk may be shared links with
        other modes), for RUN --mount=type=bind. Returns the path of the copy."""
        import shutil

        ent = self.get(rel)
        if ent is None:
            raise NotFound(f"{rel or '.'}: not in the build context")
        if ent.kind != "dir":
            if ent.kind == "symlink":
                os.symlink(ent.digest, dest)
            else:
                shutil.copyfile(ent.src, dest)
                os.chmod(dest, ent.mode)
                os.chown(dest, ent.uid, ent.gid)
            return dest
        os.makedirs(dest, 0o755)
        cut = len(rel) + 1 if rel else 0
        dirs: list[tuple[str, Entry]] = [(dest, ent)]
        for e in self.walk(rel):
            p = os.path.join(dest, e.path[cut:])
            if e.kind == "dir":
                os.makedirs(p, 0o755, exist_ok=True)
                dirs.append((p, e))
            elif e.kind == "symlink":
                os.symlink(e.digest, p)
                os.chown(p, e.uid, e.gid, follow_symlinks=False)
            else:
                shutil.copyfile(e.src, p)
                os.chmod(p, e.mode)
                os.chown(p, e.uid, e.gid)
        for p, e in reversed(dirs):
            os.chmod(p, e.mode)
            os.chown(p, e.uid, e.gid)
        return dest

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)


def _ref(xattrs: list[tuple[bytes, bytes]]) -> tuple[str, int] | None:
    for k, v in xattrs:
        if k == REF_XATTR:
            hexd, _, size = v.decode("ascii", "replace").partition(":")
            if not size.isdigit():
                raise InvalidArgument(f"invalid content reference {v!r} in the build context")
            return hexd, int(size)
    return None


def has_glob(s: str) -> bool:
    return _GLOB.search(s) is not None


def _check_below_links(name: str, links: set[str]) -> None:
    if not links:
        return
    parts = name.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            raise InvalidArgument(f"build context entry {name!r} is below a symlink of the same archive: refused")


def _implicit_dirs(index: dict[str, Entry], parent: str, root: str | None) -> None:
    if parent in index:
        if index[parent].kind != "dir":
            raise InvalidArgument(f"build context entry {parent!r} is used as a directory but is a "
                                  f"{index[parent].kind}")
        return
    if root is not None:
        os.makedirs(os.path.join(root, parent), 0o755, exist_ok=True)
    p = parent
    while p and p not in index:
        index[p] = Entry(p, "dir", 0o755, 0, 0, 0, "", 0)
        p = posixpath.dirname(p)




def _write_file(reader: _Reader, path: str, size: int, mode: int, uid: int, gid: int) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    h = hashlib.sha256()
    try:
        left = size
        while left:
            data = reader.take(min(left, CHUNK))
            h.update(data)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            left -= len(data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    except EOFError:
        raise InvalidArgument("the build context tar is truncated") from None
    finally:
        os.close(fd)
    return h.hexdigest()


def hash_entries(items: list[tuple[str, Entry]]) -> str:
    """One digest for a list of (relative name, entry)."""
    h = hashlib.sha256()
    for rel, ent in items:
        h.update(ent.key(rel).encode("utf-8", "surrogateescape"))
    return h.hexdigest()
