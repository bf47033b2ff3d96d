"""Layer compression: detect by magic bytes, decompress and compress as streams.

gzip goes through isal (python-isal: ``isal_zlib``), which inflates about 2.5x faster than zlib here and releases
the GIL, so decompression can run in a worker thread beside the tar writer. zstd goes through ``zstandard``.

Decompressors never hand out more than one chunk of output per step, whatever the input, so a decompression bomb
costs at most a chunk of memory; the caller decides how much output it accepts. Truncated or corrupt streams raise
:class:`matou.errors.InvalidArgument` with a message that says which format failed and why.

Compressed output is deterministic for the same input bytes: gzip headers carry no name and mtime 0, zstd runs
single-threaded. Gzip levels are isal's 0-3 (levels above 3 are clamped to 3); the default is 1, which compresses
at ~340 MiB/s here where zlib level 6 manages ~33 MiB/s.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from gzip import BadGzipFile
from typing import Any, BinaryIO

import zstandard
from isal import isal_zlib

from matou.errors import InvalidArgument

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1 << 20


def detect(head: bytes) -> str:
    """Name the compression of a stream from its first bytes: "gzip", "zstd" or "plain"."""
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head[:4] == ZSTD_MAGIC or (len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"):
        return "zstd"  # a zstd frame, or a skippable frame (zstd:chunked layers carry their index in those)
    return "plain"


class SourceReader(io.RawIOBase):
    """Reads a raw stream, handing every chunk read to ``sink`` (hashing) and counting; starts with the bytes
    already read by :meth:`head` (the sniff)."""

    def __init__(self, raw: BinaryIO, sink: Callable[[bytes], object] | None = None) -> None:
        super().__init__()
        self._raw = raw
        self._prefix = memoryview(b"")
        self._sink = sink
        self.size = 0

    def readable(self) -> bool:
        return True

    def _read(self, n: int) -> bytes:
        data = self._raw.read(n)
        if data:
            if self._sink is not None:
                self._sink(data)
            self.size += len(data)
        return data

    def head(self, n: int) -> bytes:
        """Read up to n bytes ahead (fewer only at end of stream) and keep them to be read again."""
        have = bytes(self._prefix)
        while len(have) < n:
            more = self._read(n - len(have))
            if not more:
                break
            have += more
        self._prefix = memoryview(have)
        return have

    def read_chunk(self, n: int) -> bytes:
        """Up to n bytes as a new object (b"" at the end)."""
        if self._prefix:
            data = bytes(self._prefix[:n])
            self._prefix = self._prefix[n:]
            return data
        return self._read(n)

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        if not self._prefix:  # straight into the caller's buffer; the sink (a hasher) gets its own copy
            n = self._raw.readinto(out) if hasattr(self._raw, "readinto") else None
            if n is not None:
                if n and self._sink is not None:
                    self._sink(bytes(out[:n]))
                self.size += n
                return n
        data = self.read_chunk(len(out))
        n = len(data)
        out[:n] = data
        return n

    def drain(self) -> None:
        """Read whatever is left, so the digest covers the whole stream."""
        while self.read_chunk(CHUNK):
            pass


def iter_chunks(src: SourceReader, kind: str, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield the decompressed stream in pieces of at most ``chunk`` bytes."""
    if kind == "gzip":
        return _gzip_chunks(src, chunk)
    if kind == "zstd":
        return _zstd_chunks(src, chunk)
    return _plain_chunks(src, chunk)


def reader_into(src: SourceReader, kind: str) -> Callable[[memoryview], int]:
    """A ``readinto(buffer) -> n`` of the decompressed stream (0 at its end) that fills caller-owned buffers,
    so a pipeline can recycle them instead of allocating (and page-faulting) a new chunk per step."""
    if kind == "gzip":
        gz_reader = getattr(isal_zlib, "_GzipReader", None)
        if gz_reader is not None:
            reader: Any = gz_reader(src, CHUNK)  # 64 KiB..1 MiB reads measured the same
        else:  # older python-isal: same C inflate, behind a BufferedReader
            from isal import igzip

            reader = igzip.IGzipFile(fileobj=src, mode="rb")

        def gzip_into(buf: memoryview) -> int:
            try:
                return reader.readinto(buf)
            except EOFError:
                raise InvalidArgument("layer data is truncated: the gzip stream ends before its end marker")
            except (BadGzipFile, isal_zlib.error) as e:  # not plain OSError: the source's own I/O errors pass
                raise InvalidArgument(f"layer data is not a valid gzip stream: {e}")

        return gzip_into
    if kind == "zstd":
        check = ZstdFrameCheck()
        zreader = zstandard.ZstdDecompressor().stream_reader(
            _TappedSource(src, check), read_size=CHUNK, read_across_frames=True, closefd=False)

        def zstd_into(buf: memoryview) -> int:
            try:
                n = zreader.readinto(buf)
            except zstandard.ZstdError as e:
                raise InvalidArgument(f"layer data is not a valid zstd stream: {e}")
            if not n:
                check.finish()
            return n

        return zstd_into
    return src.readinto


def _plain_chunks(src: SourceReader, chunk: int) -> Iterator[bytes]:
    while True:
        data = src.read_chunk(chunk)
        if not data:
            return
        yield data


def _gzip_chunks(src: SourceReader, chunk: int) -> Iterator[bytes]:
    gz_reader = getattr(isal_zlib, "_GzipReader", None)
    if gz_reader is not None:
        reader: Any = gz_reader(src, CHUNK)
    else:  # older python-isal: same C inflate, behind a BufferedReader
        from isal import igzip

        reader = igzip.IGzipFile(fileobj=src, mode="rb")
    while True:
        try:
            data = reader.read(chunk)
        except EOFError:
            raise InvalidArgument("layer data is truncated: the gzip stream ends before its end marker")
        except (BadGzipFile, isal_zlib.error) as e:  # not plain OSError: the source's own I/O errors pass
            raise InvalidArgument(f"layer data is not a valid gzip stream: {e}")
        if not data:
            return
        yield data


class ZstdFrameCheck:
    """Walks the zstd frame structure of the raw bytes (headers and block sizes only, no decompression) to tell a
    complete stream from a truncated one, which python-zstandard's bounded stream reader does not report."""

    _MAGIC = 0xFD2FB528

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self._buf = b""
        self._skip = 0
        self._checksum = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            k = min(self._need - len(self._buf), n - i)
            self._buf += bytes(view[i:i + k])
            i += k
            if len(self._buf) == self._need:
                head, self._buf = self._buf, b""
                self._advance(head)

    def _advance(self, b: bytes) -> None:
        st = self._state
        if st == "magic":
            magic = int.from_bytes(b, "little")
            if magic == self._MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
                self._state, self._need = "skippable", 4
            else:
                raise InvalidArgument("layer data is not a valid zstd stream: unknown frame magic")
        elif st == "skippable":
            self._skip = int.from_bytes(b, "little")
            self._state, self._need = "magic", 4
        elif st == "descriptor":
            d = b[0]
            if d & 0x08:
                raise InvalidArgument("layer data is not a valid zstd stream: reserved frame header bit set")
            single = (d >> 5) & 1
            self._checksum = bool(d & 0x04)
            rest = (0 if single else 1) + (0, 1, 2, 4)[d & 3] + ((1 if single else 0), 2, 4, 8)[d >> 6]
            if rest:
                self._state, self._need = "header", rest
            else:
                self._state, self._need = "block", 3
        elif st == "header":
            self._state, self._need = "block", 3
        elif st == "block":
            h = int.from_bytes(b, "little")
            kind = (h >> 1) & 3
            if kind == 3:
                raise InvalidArgument("layer data is not a valid zstd stream: reserved block type")
            self._skip = 1 if kind == 1 else h >> 3
            if h & 1:  # last block of the frame
                if self._checksum:
                    self._state, self._need = "checksum", 4
                else:
                    self._state, self._need = "magic", 4
        elif st == "checksum":
            self._state, self._need = "magic", 4

    def finish(self) -> None:
        if self._state != "magic" or self._buf or self._skip:
            raise InvalidArgument("layer data is truncated: the zstd stream ends inside a frame")


class _TappedSource:
    """What zstandard's stream reader reads from: the source, with every chunk shown to the frame check."""

    def __init__(self, src: SourceReader, check: ZstdFrameCheck) -> None:
        self._src = src
        self._check = check

    def read(self, n: int) -> bytes:
        data = self._src.read_chunk(n)
        self._check.feed(data)
        return data


def _zstd_chunks(src: SourceReader, chunk: int) -> Iterator[bytes]:
    # The stream reader bounds each read's output (a zstd bomb expands ~32768:1) and inflates in big steps with
    # the GIL released; the frame check catches truncation, which the reader would report as a clean end.
    check = ZstdFrameCheck()
    reader = zstandard.ZstdDecompressor().stream_reader(
        _TappedSource(src, check), read_size=CHUNK, read_across_frames=True, closefd=False)
    while True:
        try:
            data = reader.read(chunk)
        except zstandard.ZstdError as e:
            raise InvalidArgument(f"layer data is not a valid zstd stream: {e}")
        if not data:
            break
        yield data
    check.finish()


class _ChunkRaw(io.RawIOBase):
    """A readable raw stream over an iterator of chunks (errors arrive as InvalidArgument)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._cur = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._cur:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._cur = memoryview(nxt)
        out = memoryview(b).cast("B")
        n = min(len(out), len(self._cur))
        out[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        return n


def decompressing_reader(raw: BinaryIO) -> BinaryIO:
    """Sniff the magic bytes of ``raw`` and return a readable stream of the uncompressed data.

    Closing the returned stream does not close ``raw``. Corrupt or truncated input raises InvalidArgument on read.
    """
    src = SourceReader(raw)
    kind = detect(src.head(4))
    return io.BufferedReader(_ChunkRaw(iter_chunks(src, kind)), CHUNK)  # type: ignore[return-value]


class _GzipWriter(io.RawIOBase):
    def __init__(self, out: BinaryIO, level: int) -> None:
        super().__init__()
        self._out = out
        self._c = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)  # wbits 31: gzip header, mtime 0, no name

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = self._c.compress(b)
        if data:
            self._out.write(data)
        return len(memoryview(b))

    def close(self) -> None:
        if not self.closed:
            self._out.write(self._c.flush())
            self._out.flush()
        super().close()


class _PlainWriter(io.RawIOBase):
    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._out.write(b)
        return len(memoryview(b))

    def close(self) -> None:
        if not self.closed:
            self._out.flush()
        super().close()


def compressing_writer(out: BinaryIO, kind: str = "gzip", level: int | None = None) -> BinaryIO:
    """A writable stream that compresses into ``out``; ``close()`` finishes the stream but leaves ``out`` open.

    ``kind`` is "gzip", "zstd" or "plain". ``flush()`` does not emit a sync point, so output stays deterministic.
    """
    if kind == "gzip":
        lvl = 1 if level is None else max(0, min(3, level))
        return _GzipWriter(out, lvl)  # type: ignore[return-value]
    if kind == "zstd":
        cctx = zstandard.ZstdCompressor(level=3 if level is None else level)
        return cctx.stream_writer(out, closefd=False)  # type: ignore[return-value]
    if kind == "plain":
        return _PlainWriter(out)  # type: ignore[return-value]
    raise InvalidArgument(f"unknown compression {kind!r}: expected gzip, zstd or plain")
