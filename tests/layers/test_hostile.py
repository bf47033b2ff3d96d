"""A corpus of hostile and broken layer tars, generated here: each is refused with a clear error, leaves the
target empty, and puts nothing outside it."""

from __future__ import annotations

import io
import os
import zlib

import pytest
import zstandard
from isal import isal_zlib

from matou.errors import InvalidArgument
from matou.layers.apply import apply_layer, apply_tar_into
from tests.layers.helpers import archive, listing, member, pax_member, raw_header


def gz(data: bytes, level: int = 1) -> bytes:
    c = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


@pytest.fixture
def place(tmp_path):
    """(dest, outside): an empty target and a neighbour directory that must stay untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")
    dest = tmp_path / "layer"
    dest.mkdir()
    return dest, outside


def refused(data: bytes, dest, outside, match: str, **kw) -> InvalidArgument:
    before = listing(str(outside.parent))
    with pytest.raises(InvalidArgument, match=match) as info:
        apply_layer(io.BytesIO(data), str(dest), **kw)
    assert os.listdir(dest) == [], "the target must be left empty"
    after = listing(str(outside.parent))
    assert after == before, "nothing may appear outside the target"
    assert (outside / "secret").read_text() == "host file"
    return info.value


def abs_outside(outside) -> bytes:
    return os.fsencode(str(outside))


CASES = {
    "dotdot": (lambda o: archive(member(b"ok", b"fine"), member(b"../evil", b"x")), r"'\.\./evil'.*'\.\.'"),
    "dotdot-deep": (lambda o: archive(member(b"a/b/../../../evil", b"x")), r"a/b/\.\./\.\./\.\./evil"),
    "absolute": (lambda o: archive(member(abs_outside(o) + b"/evil", b"x")), r"absolute"),
    "absolute-symlink-then-write": (
        lambda o: archive(member(b"link", typeflag=b"2", linkname=abs_outside(o)), member(b"link/evil", b"x")),
        r"'link/evil'.*'link' is a symbolic link"),
    "relative-symlink-escape": (
        lambda o: archive(member(b"up", typeflag=b"2", linkname=b"../outside"), member(b"up/secret", b"pwned")),
        r"'up/secret'.*symbolic link"),
    "symlink-dir-chain": (
        lambda o: archive(member(b"d/", typeflag=b"5"), member(b"d/l", typeflag=b"2", linkname=b"/"),
                          member(b"d/l/etc/passwd", b"x")), r"'d/l' is a symbolic link"),
    "hardlink-absolute-host-file": (
        lambda o: archive(member(b"pw", typeflag=b"1", linkname=abs_outside(o) + b"/secret")), r"absolute"),
    "hardlink-dotdot-host-file": (
        lambda o: archive(member(b"pw", typeflag=b"1", linkname=b"../outside/secret")), r"'pw'.*'\.\.'"),
    "hardlink-through-symlink": (
        lambda o: archive(member(b"l", typeflag=b"2", linkname=abs_outside(o)),
                          member(b"pw", typeflag=b"1", linkname=b"l/secret")), r"'pw'.*hardlink target.*symbolic"),
    "hardlink-missing-target": (
        lambda o: archive(member(b"pw", typeflag=b"1", linkname=b"nothere")), r"'pw'.*not in the target"),
    "whiteout-dotdot": (lambda o: archive(member(b".wh..."), ), r"whiteout of '\.\.'"),
    "whiteout-dotdot-nested": (lambda o: archive(member(b"a/", typeflag=b"5"), member(b"a/.wh...")),
                               r"'a/\.wh\.\.\.'"),
    "whiteout-path-dotdot": (lambda o: archive(member(b"../.wh.secret")), r"'\.\./\.wh\.secret'"),
    "whiteout-empty": (lambda o: archive(member(b".wh.")), r"whiteout of ''"),
    "nul-in-pax-path": (lambda o: archive(pax_member({b"path": b"a\x00b"}), member(b"x", b"x")), r"NUL"),
    "sparse-gnu": (lambda o: archive(member(b"sparse", typeflag=b"S", magic=b"ustar  \x00")), r"sparse"),
    "sparse-pax": (lambda o: archive(pax_member({b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0"}),
                                     member(b"sparse", b"")), r"sparse"),
    "unknown-type": (lambda o: archive(member(b"weird", typeflag=b"Z")), r"unsupported entry type 'Z'"),
    "bad-checksum": (lambda o: archive(member(b"ok", b"x"), raw_header(b"bad", checksum_delta=1)),
                     r"checksum does not match"),
    "size-smaller-than-data": (
        lambda o: raw_header(b"liar", size=10) + b"A" * 1024 + archive(member(b"next", b"n")),
        r"after entry 'liar'.*checksum"),
    "size-larger-than-data": (lambda o: raw_header(b"liar", size=1 << 20) + b"B" * 700, r"truncated.*'liar'"),
    "garbage-size-field": (lambda o: archive(raw_header(b"x", size_field=b"12abc\x00     ")), r"invalid size"),
    "negative-size": (lambda o: archive(raw_header(b"neg", size_field=b"\xff" * 12)), r"negative size"),
    "huge-pax-header": (lambda o: raw_header(b"PaxHeader", typeflag=b"x", size=100 << 20) + bytes(4096),
                        r"extended tar header of 104857600 bytes"),
    "huge-longname": (lambda o: raw_header(b"././@LongLink", typeflag=b"L", size=8 << 20, magic=b"ustar  \x00"),
                      r"too large"),
    "pax-without-entry": (lambda o: archive(pax_member({b"path": b"a"})), r"extended header that no entry follows"),
    "file-then-child": (lambda o: archive(member(b"f", b"x"), member(b"f/child", b"y")), r"'f' is not a directory"),
    "not-a-tar": (lambda o: os.urandom(4096), r"invalid tar header"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_plain(case: str, place) -> None:
    dest, outside = place
    make, match = CASES[case]
    refused(make(outside), dest, outside, match)


@pytest.mark.parametrize("case", ["dotdot", "absolute-symlink-then-write", "hardlink-dotdot-host-file",
                                  "whiteout-dotdot", "size-larger-than-data"])
def test_hostile_compressed(case: str, place) -> None:
    dest, outside = place
    make, match = CASES[case]
    data = make(outside)
    refused(gz(data), dest, outside, match)
    refused(zstandard.ZstdCompressor().compress(data), dest, outside, match)


def test_write_through_hardlink_does_not_touch_the_target(place) -> None:
    dest, outside = place
    data = archive(member(b"a", b"original"), member(b"x", typeflag=b"1", linkname=b"a"), member(b"x", b"new"))
    apply_layer(io.BytesIO(data), str(dest))
    assert (dest / "a").read_text() == "original"
    assert (dest / "x").read_text() == "new"


def test_gzip_bomb_declared_size_beyond_free_space(place) -> None:
    dest, outside = place
    bomb = archive(pax_member({b"size": str(1 << 50).encode()}), raw_header(b"bomb", size=0)) + bytes(1 << 20)
    refused(gz(bomb), dest, outside, r"'bomb'.*more space than is free")


def test_gzip_bomb_of_zeros_with_a_size_cap(place) -> None:
    dest, outside = place
    # 1 GiB of zeros in one file, as 64 gzip members of 16 MiB each: ~1 MiB compressed
    zeros = gz(bytes(16 << 20), level=3)
    data = gz(raw_header(b"zeros", size=1 << 30)) + zeros * 64 + gz(bytes(1024))
    assert len(data) < 4 << 20
    refused(data, dest, outside, r"more than 67108864 bytes.*decompression bomb", max_size=64 << 20)


def test_gzip_bomb_after_end_of_archive(place) -> None:
    dest, outside = place
    data = gz(archive(member(b"small", b"x"))) + gz(bytes(16 << 20), level=3) * 16
    refused(data, dest, outside, r"follow the end of the tar archive")


def test_truncated_and_corrupt_gzip(place) -> None:
    dest, outside = place
    data = gz(archive(member(b"f", os.urandom(200_000)), member(b"g", b"g" * 50_000)))
    refused(data[: len(data) // 2], dest, outside, r"truncated: the gzip stream ends")
    refused(data[:-3], dest, outside, r"truncated")
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0xFF
    refused(bytes(broken), dest, outside, r"gzip|truncated|checksum")
    bad_crc = bytearray(data)
    bad_crc[-6] ^= 0xFF  # CRC32 in the trailer
    refused(bytes(bad_crc), dest, outside, r"not a valid gzip stream")
    refused(b"\x1f\x8b" + os.urandom(100), dest, outside, r"gzip")


def test_truncated_and_corrupt_zstd(place) -> None:
    dest, outside = place
    data = zstandard.ZstdCompressor().compress(archive(member(b"f", os.urandom(300_000))))
    refused(data[: len(data) // 2], dest, outside, r"truncated: the zstd stream ends inside a frame")
    refused(data[:-2], dest, outside, r"truncated")
    refused(data + b"garbage!", dest, outside, r"not a valid zstd stream")


def test_truncated_plain_tar(place) -> None:
    dest, outside = place
    data = archive(member(b"f", b"x" * 5000))
    refused(data[:700], dest, outside, r"truncated.*'f'")
    refused(data[:300], dest, outside, r"truncated.*header")


def test_concatenated_gzip_members_are_one_stream(tmp_path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    data = archive(member(b"a", b"a" * 3000), member(b"b", b"b"))
    r = apply_layer(io.BytesIO(gz(data[:1024]) + gz(data[1024:])), str(dest))
    assert (dest / "a").read_bytes() == b"a" * 3000 and (dest / "b").read_bytes() == b"b"
    import hashlib

    assert r.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert zlib.decompress(gz(data), 31) == data


def test_tree_mode_contains_links_inside_the_target(place) -> None:
    """apply_tar_into follows links as if the target were '/': a hostile link cannot leave it."""
    dest, outside = place
    data = archive(member(b"link", typeflag=b"2", linkname=abs_outside(outside)),
                   member(b"link/secret", b"pwned"),
                   member(b"up", typeflag=b"2", linkname=b"../../../.."),
                   member(b"up/etc/passwd", b"pwned"),
                   member(b"hl", typeflag=b"1", linkname=b"link/secret"))
    before = listing(str(outside.parent / "outside"))
    apply_tar_into(io.BytesIO(data), str(dest))
    assert (outside / "secret").read_text() == "host file"
    assert listing(str(outside)) == before
    inner = dest / os.path.relpath(str(outside), "/")
    assert (inner / "secret").read_text() == "pwned"
    assert (dest / "etc" / "passwd").read_text() == "pwned"
    assert os.path.samefile(dest / "hl", inner / "secret")
    with pytest.raises(InvalidArgument, match=r"'\.\./x'"):
        apply_tar_into(io.BytesIO(archive(member(b"../x", b"x"))), str(dest))
    assert not (outside.parent / "x").exists()


def test_zstd_bomb_with_a_size_cap(place) -> None:
    dest, outside = place
    c = zstandard.ZstdCompressor(level=3)
    data = c.compress(raw_header(b"zeros", size=1 << 30)) + c.compress(bytes(16 << 20)) * 64
    assert len(data) < 1 << 20
    refused(data, dest, outside, r"more than 67108864 bytes", max_size=64 << 20)
