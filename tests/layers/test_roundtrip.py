"""Tree -> tar -> apply -> the same tree, for every entry type and piece of metadata, in every compression."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading

import pytest

from matou.errors import DataCorruption, InvalidArgument, NotFound
from matou.layers import extract
from matou.layers.apply import apply_layer, apply_tar_into
from matou.layers.compression import detect
from matou.layers.diff import write_tree
from tests.layers.helpers import build_sample_tree, snapshot, whole_second_mtimes


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("sample") / "tree")
    build_sample_tree(root)
    return root


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_round_trip_identical_tree(sample: str, tmp_path, compression: str | None) -> None:
    buf = io.BytesIO()
    written = write_tree(sample, buf, compression=compression)
    data = buf.getvalue()
    assert detect(data[:4]) == (compression or "plain")
    dest = tmp_path / "out"
    dest.mkdir()
    applied = apply_layer(io.BytesIO(data), str(dest))
    assert snapshot(str(dest)) == snapshot(sample)
    # both sides agree on both digests
    assert applied.diff_id == written.diff_id
    assert applied.size == written.size
    assert applied.compressed_digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert applied.compressed_size == len(data)
    if compression:
        assert written.compressed_digest == applied.compressed_digest
    else:
        assert written.compressed_digest is None
        assert applied.diff_id == applied.compressed_digest


def test_output_is_deterministic(sample: str, tmp_path) -> None:
    """The same tree made again (other inodes, other creation order and time) gives the same bytes."""
    a, b = io.BytesIO(), io.BytesIO()
    write_tree(sample, a, compression="gzip")
    dest = tmp_path / "applied"
    dest.mkdir()
    a.seek(0)
    apply_layer(a, str(dest))
    write_tree(str(dest), b, compression="gzip")
    assert a.getvalue() == b.getvalue()
    c = io.BytesIO()
    write_tree(sample, c, compression="gzip")
    assert c.getvalue() == a.getvalue()


def test_tar_is_readable_by_python_tarfile_and_gnu_tar(sample: str, tmp_path) -> None:
    buf = io.BytesIO()
    write_tree(sample, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        names = tf.getnames()
        assert "etc/hostname" in names and "usr/bin/tool-again" in names
        assert tf.getmember("usr/bin/tool-again").islnk()
        assert tf.getmember("etc/hostname").pax_headers["SCHILY.xattr.user.comment"]
        assert tf.getmember("etc/big-ids").uid == 3_000_000
        assert tf.getmember("etc").uname == "" and tf.getmember("etc").gname == ""
        assert all(m.name[0] not in "./" for m in tf.getmembers())
        # directories come before their contents, names sorted within a directory
        idx = {n: i for i, n in enumerate(names)}
        assert idx["etc"] < idx["etc/hostname"] < idx["etc/private"]
    path = tmp_path / "t.tar"
    path.write_bytes(buf.getvalue())
    out = tmp_path / "gnu"
    out.mkdir()
    import subprocess

    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(path), "-C", str(out)], check=True)
    assert snapshot(str(out)) == snapshot(sample)


def test_expected_diff_id(sample: str, tmp_path) -> None:
    buf = io.BytesIO()
    r = write_tree(sample, buf, compression="gzip")
    ok = tmp_path / "ok"
    ok.mkdir()
    buf.seek(0)
    assert apply_layer(buf, str(ok), expected_diff_id=r.diff_id).diff_id == r.diff_id
    bad = tmp_path / "bad"
    bad.mkdir()
    buf.seek(0)
    with pytest.raises(DataCorruption, match="does not match its diff id"):
        apply_layer(buf, str(bad), expected_diff_id="sha256:" + "0" * 64)
    assert os.listdir(bad) == []
    with pytest.raises(InvalidArgument):
        apply_layer(io.BytesIO(b""), str(bad), expected_diff_id="sha256:xyz")


def test_apply_from_path_and_dest_checks(sample: str, tmp_path) -> None:
    path = tmp_path / "layer.tar.zst"
    with open(path, "wb") as f:
        write_tree(sample, f, compression="zstd")
    dest = tmp_path / "d"
    dest.mkdir()
    apply_layer(str(path), str(dest))
    assert snapshot(str(dest)) == snapshot(sample)
    with pytest.raises(InvalidArgument, match="not empty"):
        apply_layer(str(path), str(dest))
    with pytest.raises(NotFound):
        apply_layer(str(path), str(tmp_path / "missing"))
    with pytest.raises(NotFound):
        (tmp_path / "e").mkdir()
        apply_layer(str(tmp_path / "missing.tar"), str(tmp_path / "e"))


@pytest.mark.parametrize("worker", [False, True])
def test_small_files_here_or_in_the_worker(sample: str, tmp_path, monkeypatch: pytest.MonkeyPatch,
                                          worker: bool) -> None:
    """The same tree whether small files are created by the applier or handed to the worker process."""
    buf = io.BytesIO()
    write_tree(sample, buf)
    monkeypatch.setattr(extract, "SPAWN_AFTER", 1 if worker else 10**9)
    monkeypatch.setattr(extract, "WAIT_FOR_WORKER", worker)
    dest = tmp_path / "out"
    dest.mkdir()
    buf.seek(0)
    apply_layer(buf, str(dest))
    assert snapshot(str(dest)) == snapshot(sample)


@pytest.mark.parametrize("compression", ["gzip", None])
def test_compressed_digest_can_be_skipped(sample: str, tmp_path, compression: str | None) -> None:
    """Callers that verified the blob (the content store did) skip its digest; the diff id stays."""
    buf = io.BytesIO()
    written = write_tree(sample, buf, compression=compression)
    dest = tmp_path / "out"
    dest.mkdir()
    buf.seek(0)
    applied = apply_layer(buf, str(dest), compressed_digest=False, expected_diff_id=written.diff_id)
    assert applied.diff_id == written.diff_id and applied.size == written.size
    assert applied.compressed_size == len(buf.getvalue())
    # a plain tar's blob digest is its diff id, known either way
    assert applied.compressed_digest == (None if compression else written.diff_id)
    assert snapshot(str(dest)) == snapshot(sample)


def test_concurrent_applies(sample: str, tmp_path) -> None:
    buf = io.BytesIO()
    write_tree(sample, buf, compression="gzip")
    data = buf.getvalue()
    errors: list[BaseException] = []
    dests = [tmp_path / f"c{i}" for i in range(4)]

    def run(d) -> None:
        try:
            d.mkdir()
            apply_layer(io.BytesIO(data), str(d))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(d,)) for d in dests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    want = snapshot(sample)
    for d in dests:
        assert snapshot(str(d)) == want


def test_write_tree_paths_rebase_and_links(tmp_path) -> None:
    root = tmp_path / "root"
    (root / "var" / "log").mkdir(parents=True)
    (root / "var" / "log" / "a.log").write_text("a")
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    os.symlink("/etc/hosts", root / "hosts-link")
    os.symlink("var/log", root / "logs")  # a relative link to a directory
    os.symlink("../../../../etc", root / "var" / "escape")  # climbs above root: stays in it
    whole_second_mtimes(str(root))

    def names(**kw) -> list[str]:
        buf = io.BytesIO()
        write_tree(str(root), buf, **kw)
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tf:
            return [m.name + ("/" if m.isdir() else "") for m in tf.getmembers()]

    assert names(paths=["var/log"]) == ["var/log/", "var/log/a.log"]
    assert names(paths=["/var/log"], rebase="log") == ["log/", "log/a.log"]
    assert names(paths=["var/log/."], rebase=".") == ["a.log"]
    assert names(paths=["etc/hosts"], rebase="hosts") == ["hosts"]
    assert names(paths=["hosts-link"]) == ["hosts-link"]
    assert names(paths=["hosts-link"], rebase="h", follow_top_symlink=True) == ["h"]
    assert names(paths=["logs"], rebase="logs", follow_top_symlink=True) == ["logs/", "logs/a.log"]
    # parents are resolved inside root, even through a link that climbs above it
    assert names(paths=["var/escape/hosts"], rebase="x") == ["x"]
    assert names(paths=["logs/a.log"]) == ["logs/a.log"]
    with pytest.raises(NotFound):
        names(paths=["nope"])
    with pytest.raises(InvalidArgument):
        names(paths=["etc", "var"], rebase="x")
    # contents of the followed link are the target's
    buf = io.BytesIO()
    write_tree(str(root), buf, paths=["hosts-link"], rebase="h", follow_top_symlink=True)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        assert tf.extractfile("h").read() == b"127.0.0.1 localhost\n"


def test_apply_tar_into_existing_tree(tmp_path) -> None:
    """docker cp / ADD: merged-usr links in the target are followed, inside the target only."""
    dest = tmp_path / "rootfs"
    (dest / "usr" / "lib").mkdir(parents=True)
    os.symlink("usr/lib", dest / "lib")
    (dest / "etc").mkdir()
    (dest / "etc" / "old").write_text("old")
    (dest / "etc" / "keep").write_text("keep")
    (dest / "gone").mkdir()
    (dest / "gone" / "x").write_text("x")
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "libfoo.so").write_text("foo")
    (src / "etc").mkdir()
    (src / "etc" / "old").write_text("new")
    (src / "etc" / ".wh.keep").write_text("")
    (src / ".wh.gone").write_text("")
    buf = io.BytesIO()
    write_tree(str(src), buf)

    buf.seek(0)
    r = apply_tar_into(buf, str(dest), whiteouts="delete")
    assert r.size == len(buf.getvalue())
    assert os.path.islink(dest / "lib")
    assert (dest / "usr" / "lib" / "libfoo.so").read_text() == "foo"
    assert (dest / "etc" / "old").read_text() == "new"
    assert not (dest / "etc" / "keep").exists()
    assert not (dest / "gone").exists()

    plain = tmp_path / "plain"
    plain.mkdir()
    buf.seek(0)
    apply_tar_into(buf, str(plain), whiteouts="none")
    assert (plain / ".wh.gone").is_file() and (plain / "etc" / ".wh.keep").is_file()

    ov = tmp_path / "ov"
    ov.mkdir()
    buf.seek(0)
    apply_tar_into(buf, str(ov))  # overlay whiteouts by default
    st = os.lstat(ov / "gone")
    assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0 and (st.st_mode & 0o170000) == 0o020000


def test_apply_tar_into_opaque_delete_keeps_what_the_archive_wrote(tmp_path) -> None:
    from tests.layers.helpers import archive, member

    dest = tmp_path / "t"
    (dest / "d" / "sub").mkdir(parents=True)
    (dest / "d" / "old").write_text("old")
    (dest / "d" / "sub" / "older").write_text("older")
    data = archive(
        member(b"d/", typeflag=b"5", mode=0o755),
        member(b"d/new", b"new"),
        member(b"d/.wh..wh..opq"),
        member(b"d/later", b"later"),
    )
    apply_tar_into(io.BytesIO(data), str(dest), whiteouts="delete")
    assert sorted(os.listdir(dest / "d")) == ["later", "new"]


def test_apply_tar_into_failure_removes_what_it_created(tmp_path) -> None:
    from tests.layers.helpers import archive, member

    dest = tmp_path / "t"
    dest.mkdir()
    (dest / "existing").write_text("stays")
    data = archive(member(b"newdir/", typeflag=b"5"), member(b"newdir/f", b"f"), member(b"x", b"x"),
                   member(b"../escape", b"bad"))
    with pytest.raises(InvalidArgument, match=r"\.\./escape"):
        apply_tar_into(io.BytesIO(data), str(dest))
    assert sorted(os.listdir(dest)) == ["existing"]
    assert not (tmp_path / "escape").exists()
