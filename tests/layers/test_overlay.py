"""Layers against a real overlay mount: applied layers as lowerdirs give the right merged view; changes made in
a container's upper dir go through write_diff -> apply_layer and give the same merged view again."""

from __future__ import annotations

import io
import os
import stat

import pytest

from matou.layers.apply import apply_layer
from matou.layers.diff import changes, write_diff
from tests.layers.helpers import archive, member, overlay, overlay_ro, snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")


def layer1() -> bytes:
    return archive(
        member(b"etc/", typeflag=b"5", mode=0o755),
        member(b"etc/passwd", b"root:x:0:0\n"),
        member(b"etc/hosts", b"127.0.0.1 localhost\n"),
        member(b"opt/", typeflag=b"5", mode=0o755),
        member(b"opt/app/", typeflag=b"5", mode=0o755),
        member(b"opt/app/a", b"a"),
        member(b"opt/app/b", b"b"),
        member(b"var/", typeflag=b"5", mode=0o755),
        member(b"var/cache/", typeflag=b"5", mode=0o755),
        member(b"var/cache/x", b"x"),
        member(b"var/cache/sub/", typeflag=b"5", mode=0o755),
        member(b"var/cache/sub/y", b"y"),
        member(b"keep/", typeflag=b"5", mode=0o755),
        member(b"keep/file", b"v1"),
        member(b"bin/", typeflag=b"5", mode=0o755),
        member(b"bin/sh", b"\x7fELF", mode=0o755),
    )


def layer2() -> bytes:
    return archive(
        member(b"etc/", typeflag=b"5", mode=0o755),
        member(b"etc/.wh.hosts"),
        member(b"etc/passwd", b"root:x:0:0\nuser:x:1000:1000\n"),
        member(b"opt/", typeflag=b"5", mode=0o755),
        member(b"opt/app/", typeflag=b"5", mode=0o750),
        member(b"opt/app/.wh..wh..opq"),
        member(b"opt/app/c", b"c"),
        member(b"new/", typeflag=b"5", mode=0o755),
        member(b"new/file", b"from layer 2"),
    )


def listing_of(root: str) -> set[str]:
    out = set()
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def comparable(snap: dict) -> dict:
    """An upper dir and its re-applied diff agree up to overlay's private bookkeeping: whiteouts may share one
    inode in upper, and overlay may add trusted.overlay.* xattrs other than opaque."""
    out = {}
    for k, v in snap.items():
        kind, perm, uid, gid, mtime, xattrs = v[:6]
        if kind[0] == "c" and kind[1:] == (0, 0):
            out[k] = ("whiteout", uid, gid)
            continue
        xattrs = tuple(x for x in xattrs
                       if not x[0].startswith("trusted.overlay.") or x[0] == "trusted.overlay.opaque")
        out[k] = (kind, perm, uid, gid, mtime, xattrs) + v[6:]
    return out


def test_layers_and_diff_through_real_overlay(tmp_path) -> None:
    l1, l2, l3 = (tmp_path / n for n in ("l1", "l2", "l3"))
    for d in (l1, l2, l3):
        d.mkdir()
    apply_layer(io.BytesIO(layer1()), str(l1))
    apply_layer(io.BytesIO(layer2()), str(l2))

    # what the layer dirs hold: overlay whiteouts
    st = os.lstat(l2 / "etc" / "hosts")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(l2 / "opt" / "app", "trusted.overlay.opaque") == b"y"
    assert not (l2 / "opt" / "app" / ".wh..wh..opq").exists()

    merged = tmp_path / "merged"
    merged.mkdir()
    with overlay_ro([str(l2), str(l1)], str(merged)):
        seen = listing_of(str(merged))
        assert "etc/hosts" not in seen
        assert {p for p in seen if p.startswith("opt/app/")} == {"opt/app/c"}
        assert (merged / "etc" / "passwd").read_text().endswith("user:x:1000:1000\n")
        assert (merged / "keep" / "file").read_text() == "v1"
        assert stat.S_IMODE(os.stat(merged / "opt" / "app").st_mode) == 0o750

    # a container's changes in an upper dir
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    with overlay([str(l2), str(l1)], str(upper), str(work), str(merged)):
        m = merged
        (m / "added").mkdir()
        (m / "added" / "f").write_text("new file")
        os.link(m / "added" / "f", m / "added" / "f-hardlink")
        os.symlink("../etc/passwd", m / "added" / "pw-link")
        os.mkfifo(m / "added" / "pipe")
        os.setxattr(m / "added" / "f", "user.note", b"hello")
        (m / "keep" / "file").write_text("v2")
        os.chown(m / "keep" / "file", 1000, 1000)
        os.remove(m / "bin" / "sh")
        os.remove(m / "new" / "file")
        for p in ("var/cache/sub/y", "var/cache/x"):
            os.remove(m / p)
        os.rmdir(m / "var" / "cache" / "sub")
        os.rmdir(m / "var" / "cache")
        (m / "var" / "cache").mkdir()
        (m / "var" / "cache" / "z").write_text("z")
        os.chmod(m / "etc" / "passwd", 0o600)
        expected_view = snapshot(str(m))
        names = listing_of(str(m))
        assert "bin/sh" not in names and "var/cache/x" not in names

    # docker diff
    got = dict((p, k) for k, p in changes(str(upper), lowers=[str(l2), str(l1)]))
    assert got["/added"] == "A" and got["/added/f"] == "A"
    assert got["/keep"] == "C" and got["/keep/file"] == "C"
    assert got["/bin/sh"] == "D" and got["/new/file"] == "D"
    assert got["/var/cache"] == "C" and got["/var/cache/z"] == "A"
    assert got["/etc/passwd"] == "C"
    assert "/opt/app/c" not in got, "untouched files stay in the lower layers"
    rough = changes(str(upper))
    assert rough == sorted(rough, key=lambda kv: kv[1])
    assert ("D", "/bin/sh") in rough and ("A", "/var/cache") in rough and ("C", "/keep") in rough

    # upper -> layer tar -> a fresh layer dir
    buf = io.BytesIO()
    result = write_diff(str(upper), buf)
    again = io.BytesIO()
    assert write_diff(str(upper), again) == result and again.getvalue() == buf.getvalue()
    import tarfile

    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r:gz") as tf:
        tnames = tf.getnames()
    assert "bin/.wh.sh" in tnames and "new/.wh.file" in tnames
    assert "var/cache/.wh..wh..opq" in tnames
    assert tnames.index("var/cache/.wh..wh..opq") == tnames.index("var/cache") + 1
    buf.seek(0)
    applied = apply_layer(buf, str(l3), expected_diff_id=result.diff_id)
    assert applied.compressed_digest == result.compressed_digest
    assert comparable(snapshot(str(l3))) == comparable(snapshot(str(upper)))

    # the new layer on top of the old ones shows what the container saw
    with overlay_ro([str(l3), str(l2), str(l1)], str(merged)):
        assert snapshot(str(merged)) == expected_view
    assert not os.path.ismount(merged)
