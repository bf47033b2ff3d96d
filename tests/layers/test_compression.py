"""Magic-byte detection, streaming decompression (multi-member gzip, multi-frame zstd, truncation) and
deterministic compression that leaves the output stream open."""

from __future__ import annotations

import gzip
import io
import os
import threading

import pytest
import zstandard

from matou.errors import InvalidArgument
from matou.layers.compression import compressing_writer, decompressing_reader, detect

DATA = os.urandom(300_000) + b"text " * 200_000


def test_detect() -> None:
    assert detect(gzip.compress(b"x")[:4]) == "gzip"
    assert detect(zstandard.ZstdCompressor().compress(b"x")[:4]) == "zstd"
    assert detect(b"ustar") == "plain"
    assert detect(b"") == "plain"
    assert detect(b"\x28\xb5") == "plain"


@pytest.mark.parametrize("kind", ["gzip", "zstd", "plain"])
def test_round_trip_and_out_stays_open(kind: str, tmp_path) -> None:
    path = tmp_path / "out"
    with open(path, "wb") as f:
        w = compressing_writer(f, kind)
        for i in range(0, len(DATA), 70_000):
            w.write(DATA[i:i + 70_000])
        w.close()
        assert not f.closed
        f.write(b"")  # still usable
    raw = path.read_bytes()
    assert detect(raw[:4]) == kind
    src = io.BytesIO(raw)
    r = decompressing_reader(src)
    assert r.read() == DATA
    r.close()
    assert not src.closed


def test_gzip_output_is_deterministic_and_standard(tmp_path) -> None:
    outs = []
    for n in ("a", "b"):
        with open(tmp_path / n, "wb") as f:  # a named file must not leak its name into the header
            w = compressing_writer(f, "gzip")
            w.write(DATA)
            w.close()
        outs.append((tmp_path / n).read_bytes())
    assert outs[0] == outs[1]
    assert outs[0][4:8] == b"\0\0\0\0"  # mtime 0
    assert not outs[0][3] & 0x08  # no FNAME
    assert gzip.decompress(outs[0]) == DATA
    z1, z2 = io.BytesIO(), io.BytesIO()
    for z in (z1, z2):
        w = compressing_writer(z, "zstd", level=3)
        w.write(DATA)
        w.close()
    assert z1.getvalue() == z2.getvalue()
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(z1.getvalue())).read() == DATA


def test_levels_and_unknown_kind() -> None:
    for level in (0, 3, 9):
        out = io.BytesIO()
        w = compressing_writer(out, "gzip", level=level)
        w.write(DATA)
        w.close()
        assert gzip.decompress(out.getvalue()) == DATA
    with pytest.raises(InvalidArgument, match="unknown compression"):
        compressing_writer(io.BytesIO(), "bzip2")


def test_multi_member_gzip_and_multi_frame_zstd() -> None:
    g = gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])
    assert decompressing_reader(io.BytesIO(g)).read() == DATA
    c = zstandard.ZstdCompressor()
    z = c.compress(DATA[:5000]) + c.compress(DATA[5000:])
    assert decompressing_reader(io.BytesIO(z)).read() == DATA


def test_truncation_is_an_error() -> None:
    g = gzip.compress(DATA)
    with pytest.raises(InvalidArgument, match="truncated"):
        decompressing_reader(io.BytesIO(g[:-4])).read()
    z = zstandard.ZstdCompressor().compress(DATA)
    with pytest.raises(InvalidArgument, match="truncated"):
        decompressing_reader(io.BytesIO(z[: len(z) // 3])).read()


def test_reads_from_a_pipe() -> None:
    rfd, wfd = os.pipe()
    payload = gzip.compress(DATA)

    def feed() -> None:
        with os.fdopen(wfd, "wb") as w:
            for i in range(0, len(payload), 4096):
                w.write(payload[i:i + 4096])

    t = threading.Thread(target=feed)
    t.start()
    with os.fdopen(rfd, "rb", buffering=0) as r:
        assert decompressing_reader(r).read() == DATA
    t.join()


def test_zstd_skippable_frames_and_bomb() -> None:
    """Skippable frames (zstd:chunked puts its index there) are part of the stream; a bomb is read in bounded
    pieces."""
    c = zstandard.ZstdCompressor()
    z = c.compress(DATA)
    skip = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"index"
    assert detect(skip[:4]) == "zstd"
    assert decompressing_reader(io.BytesIO(skip + z + skip + z)).read() == DATA * 2
    with pytest.raises(InvalidArgument, match="truncated"):
        decompressing_reader(io.BytesIO(z + skip[:7])).read()
    with pytest.raises(InvalidArgument, match="not a valid zstd"):
        decompressing_reader(io.BytesIO(z + b"\x00" * 8)).read()
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(256 << 20))
    assert len(bomb) < 64 << 10
    r = decompressing_reader(io.BytesIO(bomb))
    assert len(r.read(1 << 20)) == 1 << 20
