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
# zstd can expand ~32768:1 (RLE blocks); feeding 4 KiB at a time bounds one step's output to ~128 MiB.
_ZSTD_PIECE = 4096


def detect(head: bytes) -> str:
    """Name the compression of a stream from its first bytes: "gzip", "zstd" or "plain"."""
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head[:4] == ZSTD_MAGIC:
        return "zstd"
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


def _zstd_chunks(src: SourceReader, chunk: int) -> Iterator[bytes]:
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj(write_size=CHUNK)
    fed = False  # the current frame object has been given input
    pending: list[bytes] = []
    npending = 0
    inbuf = bytearray(CHUNK)
    while True:
        n = src.readinto(inbuf)
        if not n:
            break
        view = memoryview(inbuf)[:n]
        for i in range(0, n, _ZSTD_PIECE):
            piece = view[i:i + _ZSTD_PIECE]
            while piece:
                try:
                    out = dobj.decompress(piece)
                except zstandard.ZstdError as e:
                    raise InvalidArgument(f"layer data is not a valid zstd stream: {e}")
                fed = True
                piece = memoryview(b"")
                if dobj.eof:  # frame done: what follows is the next frame (or nothing)
                    rest = dobj.unused_data
                    dobj = dctx.decompressobj(write_size=CHUNK)
                    fed = False
                    piece = memoryview(rest) if rest else piece
                if out:
                    pending.append(out)
                    npending += len(out)
                    if npending >= chunk:
                        data = b"".join(pending)
                        pending.clear()
                        npending = 0
                        for j in range(0, len(data), chunk):
                            yield data[j:j + chunk]
    if fed:
        raise InvalidArgument("layer data is truncated: the zstd stream ends inside a frame")
    if pending:
        yield b"".join(pending)


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
