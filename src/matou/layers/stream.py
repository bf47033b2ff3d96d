"""Decompress in a worker thread, consume in order: the tar bytes of a layer as a pipeline.

A decompress thread reads the raw stream, sniffs and decompresses it, and hands ~1 MiB chunks through a bounded
queue to the consumer; two hash threads compute the blob digest (raw bytes) and the diff id (decompressed bytes)
from the same chunks. isal, zstandard, hashlib and file reads all release the GIL, so on two cores this work
overlaps the consumer's file writes (measured: hashing off the decompress thread shortens the phase where a
big file is written and the consumer waits for data). The queues bound memory to a few dozen chunks whatever the compression ratio.

Everything belongs to one :class:`TarStream`; nothing is shared between calls, so any number can run at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from typing import Any, BinaryIO

from matou.errors import InvalidArgument
from matou.layers import compression

_EOF = None


class _Stop(Exception):
    """Raised inside the worker when the consumer gave up."""


class TarStream:
    """Producer thread + in-order reader of the uncompressed tar.

    Consumer API: :meth:`read`, :meth:`copy_to`, :meth:`skip`, :meth:`drain`; ``offset`` is the position in the
    uncompressed stream. After the stream is drained, ``diff_id``/``size``/``raw_digest``/``raw_size`` are set.
    """

    def __init__(self, raw: BinaryIO, *, max_size: int | None = None, chunk: int = compression.CHUNK,
                 depth: int = 16) -> None:
        self._raw = raw
        self._max_size = max_size
        self._chunk = chunk
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._hq_raw: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._hq_tar: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._raw_hash = hashlib.sha256()
        self._tar_hash = hashlib.sha256()
        self._stop = threading.Event()
        self._buf: bytes = b""
        self._pos = 0
        self._base = 0  # stream offset of self._buf[0]
        self._eof = False
        self.kind = ""
        self.diff_id = ""
        self.size = 0
        self.raw_digest = ""
        self.raw_size = 0
        self._hashers = [threading.Thread(target=self._hash_work, args=(q, h), name="matou-layer-hash", daemon=True)
                         for q, h in ((self._hq_raw, self._raw_hash), (self._hq_tar, self._tar_hash))]
        for t in self._hashers:
            t.start()
        self._thread = threading.Thread(target=self._work, name="matou-layer-decompress", daemon=True)
        self._thread.start()

    # -- producers ------------------------------------------------------------------------------------------
    def _hash_work(self, hq: queue.Queue[Any], hasher: Any) -> None:
        """One thread per digest: hashlib releases the GIL, so both overlap inflating and writing."""
        while True:
            item = hq.get()
            if item is None:
                return
            hasher.update(item)

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Stop()
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        try:
            hq_raw, hq_tar = self._hq_raw, self._hq_tar
            src = compression.SourceReader(self._raw, sink=lambda data: self._put(hq_raw, data))
            self.kind = compression.detect(src.head(4))
            plain = self.kind == "plain"
            total = 0
            limit = self._max_size
            for chunk in compression.iter_chunks(src, self.kind, self._chunk):
                total += len(chunk)
                if limit is not None and total > limit:
                    raise InvalidArgument(
                        f"layer expands to more than {limit} bytes: refusing it as a possible decompression bomb")
                if not plain:
                    self._put(hq_tar, chunk)
                self._put(self._q, chunk)
            src.drain()  # bytes after the compressed stream's end still belong to the blob
            self._stop_hashers()
            self.raw_size = src.size
            self.raw_digest = "sha256:" + self._raw_hash.hexdigest()
            self.size = total
            self.diff_id = self.raw_digest if plain else "sha256:" + self._tar_hash.hexdigest()
            self._put(self._q, _EOF)
        except _Stop:
            return
        except BaseException as e:  # handed to the consumer, which re-raises it in its own thread
            try:
                self._put(self._q, e)
            except _Stop:
                return
        finally:
            self._stop_hashers()

    def _stop_hashers(self) -> None:
        for q, t in zip((self._hq_raw, self._hq_tar), self._hashers, strict=True):
            if t.is_alive():
                with contextlib.suppress(queue.Full):
                    q.put(None, timeout=5)
                t.join()

    # -- consumer -------------------------------------------------------------------------------------------
    @property
    def offset(self) -> int:
        return self._base + self._pos

    def _next(self) -> bool:
        if self._eof:
            return False
        item = self._q.get()
        if item is _EOF:
            self._eof = True
            self._base += len(self._buf)
            self._buf = b""
            self._pos = 0
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        self._base += len(self._buf)
        self._buf = item
        self._pos = 0
        return True

    def read(self, n: int) -> bytes:
        """Exactly n bytes, or b"" at a clean end of stream; raises on a short read."""
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return self._buf[pos:end]
        parts = [self._buf[pos:]]
        got = len(parts[0])
        self._pos = len(self._buf)
        while got < n:
            if not self._next():
                if got == 0:
                    return b""
                raise EOFError(n - got)
            take = min(n - got, len(self._buf))
            parts.append(self._buf[:take])
            self._pos = take
            got += take
        return b"".join(parts)

    def take(self, n: int) -> bytes | memoryview:
        """The next n bytes as one buffer: a view into the current chunk when they lie in it (no copy)."""
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return memoryview(self._buf)[pos:end]
        data = self.read(n)
        if len(data) < n:
            raise EOFError(n - len(data))
        return data

    def copy_to(self, fd: int, n: int) -> None:
        """Write the next n bytes of the stream to ``fd``; raises EOFError when the stream ends first."""
        while n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._next():
                    raise EOFError(n)
                continue
            take = n if n < avail else avail
            view = memoryview(self._buf)[self._pos:self._pos + take]
            while view:
                w = os.write(fd, view)
                view = view[w:]
            self._pos += take
            n -= take

    def skip(self, n: int) -> None:
        while n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._next():
                    raise EOFError(n)
                continue
            take = n if n < avail else avail
            self._pos += take
            n -= take

    def drain(self, limit: int) -> int:
        """Consume the rest of the stream (so both digests are complete); returns how many bytes were left.

        More than ``limit`` bytes left over is refused: nothing legitimate pads a tar by that much.
        """
        left = len(self._buf) - self._pos
        self._pos = len(self._buf)
        while self._next():
            left += len(self._buf)
            self._pos = len(self._buf)
            if left > limit:
                raise InvalidArgument(
                    f"more than {limit} bytes follow the end of the tar archive: refusing it as a possible "
                    "decompression bomb")
        return left

    def close(self) -> None:
        """Stop the worker (if still running) and wait for it; safe to call twice."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)
        for t in self._hashers:
            t.join()
