""".dockerignore semantics, the context receiver (hashing, globs, confinement) and the context file store."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from matou.build.context import BuildContext
from matou.build.copystep import plan_context
from matou.build.filestore import FileStore
from matou.errors import InvalidArgument, NotFound
from matou.util.dockerignore import Matcher, read_patterns


@pytest.mark.parametrize("patterns,path,excluded", [
    (["*.md"], "a.md", True),
    (["*.md"], "dir/a.md", False),
    (["**/*.md"], "dir/sub/a.md", True),
    (["**/*.md"], "a.md", True),
    (["dir"], "dir/sub/file", True),
    (["dir", "!dir/keep"], "dir/keep", False),
    (["dir", "!dir/keep"], "dir/other", True),
    (["*", "!src"], "src/a/b", False),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[a-c]x"], "bx", True),
    (["dir/**"], "dir/x/y", True),
    (["/abs"], "abs", True),
    (["./dot/../x"], "x", True),
    (["\\*star"], "*star", True),
    (["\\*star"], "xstar", False),
])
def test_dockerignore_semantics(patterns: list[str], path: str, excluded: bool) -> None:
    assert Matcher(patterns).excluded(path) is excluded


def test_dockerignore_file_and_exceptions() -> None:
    pats = read_patterns("\ufeff# comment\n  \n node_modules \n!node_modules/keep\n/build/\n")
    assert pats == ["node_modules", "!node_modules/keep", "build"]
    m = Matcher(pats)
    assert m.may_include_under("node_modules") and not m.may_include_under("build")
    with pytest.raises(ValueError):
        Matcher(["!"])


def _tar(entries: list[tuple[str, str, bytes | str]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o750
            elif kind == "sym":
                ti.type = tarfile.SYMTYPE
                ti.linkname = str(data)
            elif kind == "hard":
                ti.type = tarfile.LNKTYPE
                ti.linkname = str(data)
            else:
                assert isinstance(data, bytes)
                ti.size = len(data)
                ti.mode = 0o640
                ti.mtime = 1_000_000
                t.addfile(ti, io.BytesIO(data))
                continue
            t.addfile(ti)
    buf.seek(0)
    return buf


def test_receive_hashes_and_resolves(tmp_path: str) -> None:
    src = _tar([("a.txt", "file", b"hello"), ("dir", "dir", b""), ("dir/b.py", "file", b"b"),
                ("dir/sub/c.py", "file", b"c"), ("link", "sym", "dir/b.py"), ("abs", "sym", "/dir"),
                ("hard", "hard", "a.txt"), (".dockerignore", "file", b"*.txt\n!a.txt\ndir/sub\n")])
    ctx = BuildContext.receive(src, os.path.join(str(tmp_path), "ctx"))
    a = ctx.entries["a.txt"]
    assert a.digest == hashlib.sha256(b"hello").hexdigest() and a.mode == 0o640 and a.mtime == 1_000_000
    assert ctx.entries["dir"].mode == 0o750 and ctx.entries["dir/sub"].kind == "dir"  # implicit directory
    assert ctx.entries["hard"].digest == a.digest
    assert ctx.resolve("link") == "dir/b.py" and ctx.resolve("abs/b.py") == "dir/b.py"
    assert ctx.resolve("../../a.txt") == "a.txt"
    ctx.load_dockerignore("Dockerfile")
    assert ctx.get("a.txt") is not None and ctx.get("dir/sub/c.py") is None
    assert [e.path for e in ctx.walk("dir")] == ["dir/b.py"]
    assert ctx.glob("dir/*.py") == ["dir/b.py"] and ctx.glob("**/*.py") == ["dir/b.py"]


def test_receive_refuses_escapes(tmp_path: str) -> None:
    for bad in ([("../x", "file", b"x")], [("/etc/x", "file", b"x")],
                [("l", "sym", "/etc"), ("l/passwd", "file", b"pwned")],
                [("h", "hard", "nowhere")]):
        root = os.path.join(str(tmp_path), f"c{len(os.listdir(str(tmp_path)))}")
        with pytest.raises(InvalidArgument):
            BuildContext.receive(_tar(bad), root)
    assert not os.path.exists("/etc/passwd.pwned")


def test_plan_context_hash_ignores_mtime_and_sees_content(tmp_path: str) -> None:
    def plan(data: bytes, mtime: int, mode: int = 0o640) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            ti = tarfile.TarInfo("d/f")
            ti.size, ti.mtime, ti.mode = len(data), mtime, mode
            t.addfile(ti, io.BytesIO(data))
        buf.seek(0)
        ctx = BuildContext.receive(buf, os.path.join(str(tmp_path), f"p{len(os.listdir(str(tmp_path)))}"))
        return plan_context(ctx, ["d"], {}, False, False, None).hash

    base = plan(b"x", 1)
    assert base.startswith("dir:")
    assert plan(b"x", 2) == base
    assert plan(b"y", 1) != base
    assert plan(b"x", 1, 0o600) != base


def test_plan_context_errors(tmp_path: str) -> None:
    ctx = BuildContext.receive(_tar([("a", "file", b"a")]), os.path.join(str(tmp_path), "c"))
    with pytest.raises(InvalidArgument, match="outside the build context"):
        plan_context(ctx, ["../etc/passwd"], {}, False, False, None)
    with pytest.raises(NotFound, match="file not found in build context"):
        plan_context(ctx, ["missing"], {}, False, False, None)
    with pytest.raises(NotFound, match="no source files"):
        plan_context(ctx, ["*.nothing"], {}, False, False, None)


def test_file_store_refs(tmp_path: str) -> None:
    store = FileStore(os.path.join(str(tmp_path), "files"))
    first = BuildContext.receive(_tar([("big", "file", b"content")]), os.path.join(str(tmp_path), "one"), store)
    digest = first.entries["big"].digest
    assert store.missing([(digest, 7), ("0" * 64, 1)]) == ["0" * 64]
    # a second context refers to the stored content instead of carrying it
    def ref_tar() -> io.BytesIO:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            ti = tarfile.TarInfo("again")
            ti.pax_headers = {"SCHILY.xattr.user.matou.ref": f"{digest}:7"}
            t.addfile(ti)
        buf.seek(0)
        return buf

    second = BuildContext.receive(ref_tar(), os.path.join(str(tmp_path), "two"), store)
    assert second.entries["again"].digest == digest and second.entries["again"].size == 7
    assert second.read("again") == b"content"
    store.prune()
    with pytest.raises(InvalidArgument, match="does not have"):
        BuildContext.receive(ref_tar(), os.path.join(str(tmp_path), "three"), store)
