"""Odd but legal archives: duplicates, replacements, many directories (fd cache eviction), link chains in an
existing tree, root entries, GNU and PAX extensions written by hand."""

from __future__ import annotations

import io
import os
import stat

import pytest

from matou.errors import InvalidArgument
from matou.layers import extract
from matou.layers.apply import apply_layer, apply_tar_into
from tests.layers.helpers import archive, member, pax_member, raw_header


def apply(data: bytes, dest) -> None:
    dest.mkdir(exist_ok=True)
    apply_layer(io.BytesIO(data), str(dest))


def test_later_entries_replace_earlier_ones(tmp_path) -> None:
    data = archive(
        member(b"x/", typeflag=b"5"), member(b"x/inner", b"1"),
        member(b"x", b"now a file"),  # a directory replaced by a file
        member(b"f", b"file"), member(b"f/", typeflag=b"5", mode=0o700),  # and the other way round
        member(b"f/child", b"c"),
        member(b"s", typeflag=b"2", linkname=b"f"), member(b"s", b"plain again"),
        member(b"dup", b"first"), member(b"dup", b"second"),
        member(b"w", b"w"), member(b".wh.w"),  # a whiteout after the file in the same layer
    )
    dest = tmp_path / "d"
    apply(data, dest)
    assert (dest / "x").read_text() == "now a file"
    assert (dest / "f" / "child").read_text() == "c"
    assert stat.S_IMODE(os.stat(dest / "f").st_mode) == 0o700
    assert not os.path.islink(dest / "s") and (dest / "s").read_text() == "plain again"
    assert (dest / "dup").read_text() == "second"
    assert stat.S_ISCHR(os.lstat(dest / "w").st_mode)


def test_dir_replaced_by_symlink_cannot_be_written_through(tmp_path) -> None:
    data = archive(member(b"d/", typeflag=b"5"), member(b"d/a", b"a"),
                   member(b"d", typeflag=b"2", linkname=b"/etc"), member(b"d/passwd", b"x"))
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(InvalidArgument, match="'d/passwd'.*symbolic link"):
        apply_layer(io.BytesIO(data), str(dest))
    assert os.listdir(dest) == []


@pytest.mark.parametrize("cache", [1, 2, 64])
def test_many_directories_with_a_small_fd_cache(tmp_path, monkeypatch: pytest.MonkeyPatch, cache: int) -> None:
    monkeypatch.setattr(extract, "FD_CACHE", cache)
    members = []
    for i in range(40):
        members.append(member(b"d%02d/" % i, typeflag=b"5", mode=0o751, mtime=1_600_000_000 + i))
    for rnd in range(3):  # round robin over the directories: every lookup misses a tiny cache
        for i in range(40):
            members.append(member(b"d%02d/sub/f%d" % (i, rnd), b"%d-%d" % (i, rnd)))
    for i in range(1, 40):  # hardlinks whose target lives in another directory
        members.append(member(b"d%02d/link" % i, typeflag=b"1", linkname=b"d%02d/sub/f0" % (i - 1)))
    dest = tmp_path / "d"
    apply(archive(*members), dest)
    for i in range(40):
        st = os.stat(dest / f"d{i:02d}")
        assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_mtime == 1_600_000_000 + i
        for rnd in range(3):
            assert (dest / f"d{i:02d}" / "sub" / f"f{rnd}").read_text() == f"{i}-{rnd}"
    for i in range(1, 40):
        assert os.path.samefile(dest / f"d{i:02d}" / "link", dest / f"d{i - 1:02d}" / "sub" / "f0")
    assert os.listdir(tmp_path) == ["d"]


def test_root_entry_and_dot_slash_names(tmp_path) -> None:
    data = archive(member(b"./", typeflag=b"5", mode=0o711, mtime=1_500_000_000),
                   member(b"./a//b/./c", b"normalised"), member(b".//x/", typeflag=b"5"))
    dest = tmp_path / "d"
    apply(data, dest)
    assert (dest / "a" / "b" / "c").read_text() == "normalised"
    st = os.stat(dest)
    assert stat.S_IMODE(st.st_mode) == 0o711 and st.st_mtime == 1_500_000_000
    with pytest.raises(InvalidArgument, match="only a directory"):
        apply(archive(member(b"./", b"file as root")), tmp_path / "e")


def test_gnu_and_pax_extensions_by_hand(tmp_path) -> None:
    long_name = b"dir/" + b"n" * 250 + b"/" + b"m" * 200
    long_link = b"t" * 400
    gnu = b"ustar  \x00"
    data = archive(
        member(b"././@LongLink", long_name + b"\0", typeflag=b"L", magic=gnu),
        member(b"truncated-name", b"gnu long name", magic=gnu),
        member(b"././@LongLink", long_link + b"\0", typeflag=b"K", magic=gnu),
        member(b"sym", typeflag=b"2", linkname=b"truncated", magic=gnu),
        pax_member({b"path": b"pax/\xc3\xa9t\xc3\xa9", b"mtime": b"1234567890.5", b"uid": b"5000000",
                    b"SCHILY.xattr.user.k": b"v\x00w", b"LIBARCHIVE.xattr.user.b64": b"aGVsbG8"}),
        member(b"ignored", b"pax"),
        raw_header(b"g", typeflag=b"g", size=0),  # an empty global header
        member(b"prefixed-name", b"ustar prefix", prefix=b"some/prefix"),
        member(b"old-style-dir/", typeflag=b"\0"),  # pre-POSIX directory: trailing slash, type NUL
        member(b"contiguous", b"type 7", typeflag=b"7"),
        member(b"V", typeflag=b"V", magic=gnu),  # a volume label: skipped
    )
    dest = tmp_path / "d"
    apply(data, dest)
    assert (dest / os.fsdecode(long_name)).read_text() == "gnu long name"
    assert os.readlink(dest / "sym") == os.fsdecode(long_link)
    p = dest / "pax" / "été"
    assert p.read_text() == "pax"
    st = os.stat(p)
    assert st.st_uid == 5_000_000 and st.st_mtime_ns == 1_234_567_890_500_000_000
    assert os.getxattr(p, "user.k") == b"v\x00w" and os.getxattr(p, "user.b64") == b"hello"
    assert (dest / "some" / "prefix" / "prefixed-name").read_text() == "ustar prefix"
    assert (dest / "old-style-dir").is_dir()
    assert (dest / "contiguous").read_text() == "type 7"
    assert not (dest / "V").exists()


def test_base256_numbers(tmp_path) -> None:
    block = bytearray(raw_header(b"big-ids", size=3))
    block[108:116] = b"\x80" + (9_000_000).to_bytes(7, "big")  # uid in GNU base-256
    block[136:148] = b"\xff" * 11 + b"\xfe"  # mtime -2 in two's complement
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    dest = tmp_path / "d"
    apply(archive(bytes(block) + b"abc" + bytes(509)), dest)
    st = os.lstat(dest / "big-ids")
    assert st.st_uid == 9_000_000 and st.st_mtime == -2


def test_tree_mode_follows_links_by_their_real_location(tmp_path) -> None:
    """A relative link inside a directory reached through another link resolves from where it really is."""
    dest = tmp_path / "t"
    (dest / "x" / "y").mkdir(parents=True)
    (dest / "x" / "z").mkdir()
    os.symlink("x/y", dest / "a")
    os.symlink("../z", dest / "x" / "y" / "b")
    apply_tar_into(io.BytesIO(archive(member(b"a/b/file", b"via two links"), member(b"a/b/", typeflag=b"5",
                                                                                     mode=0o700))), str(dest))
    assert (dest / "x" / "z" / "file").read_text() == "via two links"
    assert os.path.islink(dest / "x" / "y" / "b")  # a directory entry keeps a link to a directory
    assert stat.S_IMODE(os.stat(dest / "x" / "z").st_mode) == 0o700


def test_tree_mode_link_loops_are_refused(tmp_path) -> None:
    dest = tmp_path / "t"
    dest.mkdir()
    os.symlink("loop", dest / "loop")
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        apply_tar_into(io.BytesIO(archive(member(b"loop/f", b"x"))), str(dest))


def test_unknown_whiteout_mode(tmp_path) -> None:
    with pytest.raises(InvalidArgument, match="whiteout mode"):
        apply_tar_into(io.BytesIO(archive()), str(tmp_path), whiteouts="aufs")


def test_aufs_metadata_is_ignored(tmp_path) -> None:
    dest = tmp_path / "d"
    apply(archive(member(b".wh..wh.plnk/", typeflag=b"5"), member(b".wh..wh.aufs", b""), member(b"f", b"f")),
          dest)
    assert os.listdir(dest) == ["f"]


def test_errors_in_the_file_thread_surface_and_clean_up(tmp_path) -> None:
    """A small file is finished by the second thread; its failure still names the entry and empties dest."""
    data = archive(*(member(b"ok%d" % i, b"fine") for i in range(100)),
                   pax_member({b"SCHILY.xattr.security.capability": b"not a capability"}),
                   member(b"bad-cap", b"x"),
                   *(member(b"later%d" % i, b"more") for i in range(100)))
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(InvalidArgument, match="'bad-cap'"):
        apply_layer(io.BytesIO(data), str(dest))
    assert os.listdir(dest) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_out_of_inodes_is_reported_and_cleaned(tmp_path) -> None:
    import subprocess

    from matou.errors import SystemError_

    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=40", "small", str(mnt)], check=True)
    try:
        dest = mnt / "layer"
        dest.mkdir()
        data = archive(*(member(b"f%03d" % i, b"x") for i in range(100)))
        with pytest.raises(SystemError_, match="no space left on device while writing tar entry 'f0"):
            apply_layer(io.BytesIO(data), str(dest))
        assert os.listdir(dest) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_no_thread_or_fd_outlives_a_call(tmp_path) -> None:
    import threading

    before_threads = threading.active_count()
    before_fds = len(os.listdir("/proc/self/fd"))
    good = archive(*(member(b"d%d/f%d" % (i % 7, i), b"x" * i) for i in range(300)))
    bad = archive(member(b"a", b"a"), member(b"../b", b"b"))
    for i, data in enumerate([good, bad, good[:5000]]):
        dest = tmp_path / f"d{i}"
        dest.mkdir()
        try:
            apply_layer(io.BytesIO(data), str(dest))
        except InvalidArgument:
            pass
        apply_tar_into(io.BytesIO(good), str(dest))
    assert threading.active_count() == before_threads
    assert len(os.listdir("/proc/self/fd")) == before_fds
