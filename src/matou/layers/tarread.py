"""A lean streaming tar reader: one header parse per entry, no per-entry objects beyond a small record.

Reads ustar, GNU (longname ``L``/longlink ``K``, base-256 numbers, ``D`` dumpdirs as directories, ``V`` volume
labels skipped) and POSIX.1-2001 PAX (``x`` and global ``g``: path, linkpath, size, uid, gid, mtime, atime,
``SCHILY.xattr.*`` and libarchive's ``LIBARCHIVE.xattr.*``). Sparse files (GNU ``S`` or ``GNU.sparse.*``),
multi-volume parts and unknown entry types are refused with a message naming the entry.

Python's tarfile spends ~120 us per entry; this reader parses a header with one struct.unpack and an adler32-based
checksum, which is what makes 20,000 small files cheap.
"""

from __future__ import annotations

import base64
import struct
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from matou.errors import InvalidArgument
from matou.layers import tarfmt as T


class TarSource(Protocol):
    """What :func:`entries` reads from: :class:`matou.layers.stream.TarStream`, or a caller's own reader."""

    @property
    def offset(self) -> int:
        """Bytes consumed so far (for messages)."""
        ...

    def read(self, n: int) -> bytes:
        """Exactly n bytes; b"" at a clean end of stream; EOFError when it ends in between."""
        ...

    def skip(self, n: int) -> None:
        """Consume n bytes; EOFError when the stream ends first."""
        ...

    def drain(self, limit: int) -> int:
        """Consume the rest (at most ``limit`` bytes, else InvalidArgument); returns how many there were."""
        ...

class Window:
    """A TarSource that also exposes its current in-memory buffer: ``buf`` and the read position ``pos`` in it.

    Readers may consume bytes inside ``buf`` by moving ``pos`` forward (never past ``len(buf)``), which lets
    :func:`entries` parse headers and hand out small files without copying. :class:`matou.layers.stream.TarStream`
    is one.
    """

    buf: bytes
    pos: int


MAX_META = 1 << 20  # PAX / GNU long-name payloads: a name is never a megabyte; refusing bounds memory
MAX_META_CHAIN = 64
TRAILING_LIMIT = 16 << 20  # bytes allowed after the end-of-archive marker (GNU tar pads to records of 10 KiB)


@dataclass(slots=True)
class Entry:
    """One archive member after its extended headers were applied. Names are raw bytes."""

    name: bytes
    typeflag: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: list[tuple[bytes, bytes]] | None
    offset: int

    def describe(self) -> str:
        return self.name.decode("utf-8", "backslashreplace")


def _nul(field: bytes) -> bytes:
    i = field.find(b"\0")
    return field if i < 0 else field[:i]


def _truncated(what: str) -> InvalidArgument:
    return InvalidArgument(f"the tar archive is truncated: it ends inside {what}")


def _after(last: bytes | None) -> str:
    if last is None:
        return "the start of the archive"
    return f"entry {last.decode('utf-8', 'backslashreplace')!r}"


FastFile = Callable[[bytes, int, int, int, int, int, memoryview], bool]
"""``fast(name, mode, uid, gid, size, mtime_ns, data) -> handled``: see :func:`entries`."""

# the fields the common header needs (linkname, uname, gname and device numbers are skipped)
_FAST = struct.Struct("100s24s12s12s8sc100x8s80x155s12x")  # mode, uid and gid as one 24-byte field
_CACHE_MAX = 1024  # distinct mode/uid/gid/mtime fields remembered (a layer has few)


def entries(stream: TarSource, *, trailing_limit: int = TRAILING_LIMIT, fast: FastFile | None = None,
            fast_max: int = 0) -> Iterator[Entry]:
    """Yield entries in archive order. The consumer must read or skip exactly ``entry.size`` bytes of data
    before asking for the next entry; padding is skipped here.

    ``fast``: when the stream is a :class:`Window` and a plain regular file (no extended headers, octal numbers,
    at most ``fast_max`` bytes) lies entirely in its current buffer, the reader first offers it to
    ``fast(name, mode, uid, gid, size, mtime_ns, data)`` with ``data`` a view into the buffer (valid during the
    call only). If that returns True the file counts as handled and is not yielded; otherwise it is yielded as
    usual. This is the per-entry hot path of a pull: keep it free of calls that the common header does not need.
    """
    gpax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] | None = None
    longname: bytes | None = None
    longlink: bytes | None = None
    chain = 0
    last: bytes | None = None
    unpack = _FAST.unpack_from
    adler32 = zlib.adler32
    read = stream.read
    skip = stream.skip
    zero = T.ZERO_BLOCK
    regtype = T.REGTYPE
    window = isinstance(stream, Window)
    if not window:
        fast = None
    cids: dict[bytes, tuple[int, int, int]] = {}  # mode+uid+gid field -> values
    cmtime: dict[bytes, int] = {}
    src: bytes = b""
    mv = memoryview(src)
    while True:
        if window and stream.pos + 512 <= len(stream.buf):  # type: ignore[attr-defined]
            off = stream.pos  # type: ignore[attr-defined]
            if stream.buf is not src:  # type: ignore[attr-defined]
                src = stream.buf  # type: ignore[attr-defined]
                mv = memoryview(src)
            stream.pos = off + 512  # type: ignore[attr-defined]
            if src[off] == 0 and src[off:off + 512] == zero:
                block: bytes | None = zero
            else:
                block = None
        else:
            try:
                block = read(512)
            except EOFError:
                raise _truncated(f"the header after {_after(last)}")
            if block and block != zero:
                src, mv, off = block, memoryview(block), 0
                block = None
        if block is not None:  # the end: a zero block or the end of the stream
            if pax is not None or longname is not None or longlink is not None:
                raise InvalidArgument(
                    f"the tar archive ends with an extended header that no entry follows (after {_after(last)})")
            if block:
                try:
                    read(512)  # the second zero block; a lone one is tolerated, as GNU tar does
                except EOFError:
                    pass
            stream.drain(trailing_limit)
            return
        (name, ids_f, size_f, mtime_f, chk, typeflag, magic, prefix) = unpack(src, off)
        # adler32's low half is the byte sum mod 65521; each 256-byte half sums to at most 65280: exact
        total = ((adler32(mv[off:off + 256], 0) & 0xFFFF) + (adler32(mv[off + 256:off + 512], 0) & 0xFFFF)
                 + 256 - (adler32(chk, 0) & 0xFFFF))
        try:
            ok = int(chk[:6], 8) == total
        except ValueError:
            ok = False
        if not ok and not T.checksum_ok(bytes(mv[off:off + 512])):
            raise InvalidArgument(
                f"invalid tar header at offset {stream.offset - 512} after {_after(last)}: the checksum does "
                "not match (the archive is corrupt or a header lies about its size)")
        try:  # the common case: zero-padded octal with a NUL or space terminator
            size = int(size_f[:11], 8)
        except ValueError:
            try:
                size = T.parse_number(size_f, "size")
            except InvalidArgument as err:
                raise InvalidArgument(f"{err} at offset {stream.offset - 512} after {_after(last)}")
            if size < 0:
                raise InvalidArgument(f"invalid tar header at offset {stream.offset - 512}: negative size")

        if typeflag in (T.XHDTYPE, T.XGLTYPE, T.GNU_LONGNAME, T.GNU_LONGLINK):
            where_off = stream.offset - 512
            chain += 1
            if size > MAX_META or chain > MAX_META_CHAIN:
                raise InvalidArgument(
                    f"refusing an extended tar header of {size} bytes at offset {where_off}: too large")
            try:
                data = read(size)
                skip(-size % 512)
            except EOFError:
                raise _truncated(f"an extended header after {_after(last)}")
            if len(data) < size:
                raise _truncated(f"an extended header after {_after(last)}")
            where = f"at offset {where_off}"
            if typeflag == T.XHDTYPE:
                pax = T.parse_pax(data, where) if pax is None else {**pax, **T.parse_pax(data, where)}
            elif typeflag == T.XGLTYPE:
                gpax.update(T.parse_pax(data, where))
            elif typeflag == T.GNU_LONGNAME:
                longname = data.rstrip(b"\0")
            else:
                longlink = data.rstrip(b"\0")
            continue
        chain = 0

        i = name.find(b"\0")
        path = name if i < 0 else name[:i]
        if prefix[0] and magic[:6] == b"ustar\0":
            path = _nul(prefix) + b"/" + path
        ids = cids.get(ids_f)
        mtime_ns = cmtime.get(mtime_f)
        try:
            if ids is None:
                ids = (int(ids_f[:7], 8), int(ids_f[8:15], 8), int(ids_f[16:23], 8))
                if len(cids) < _CACHE_MAX:
                    cids[ids_f] = ids
            if mtime_ns is None:
                mtime_ns = int(mtime_f[:11], 8) * 1_000_000_000
                if len(cmtime) < _CACHE_MAX:
                    cmtime[mtime_f] = mtime_ns
            mode, uid, gid = ids
        except ValueError:  # base-256 or odd padding (never the fast path: values may be out of any range)
            mtime_ns = T.parse_number(mtime_f, "mtime") * 1_000_000_000
            mode = T.parse_number(ids_f[:8], "mode")
            uid = T.parse_number(ids_f[8:16], "uid")
            gid = T.parse_number(ids_f[16:], "gid")
            usual = False
        else:
            usual = True
        if typeflag == regtype and usual and fast is not None and size <= fast_max and not (
                pax or gpax or longname is not None or longlink is not None):
            end = off + 512 + size
            if end + (-size % 512) <= len(src):
                if fast(path, mode, uid, gid, size, mtime_ns, mv[off + 512:end]):
                    stream.pos = end + (-size % 512)  # type: ignore[attr-defined]
                    last = path
                    continue
        e = Entry(path, typeflag, mode, uid, gid, size, mtime_ns, mtime_ns, b"", 0, 0, None, stream.offset - 512)
        if typeflag != regtype:
            full = T.HEADER.unpack_from(src, off)
            linkname, dmaj, dmin = full[8], full[12], full[13]
            if linkname[0]:
                e.linkname = _nul(linkname)
            if typeflag in (T.CHRTYPE, T.BLKTYPE):
                e.devmajor = T.parse_number(dmaj, "devmajor")
                e.devminor = T.parse_number(dmin, "devminor")
            elif typeflag in (T.AREGTYPE, T.CONTTYPE):
                # pre-POSIX tars mark directories by the trailing slash only
                e.typeflag = T.DIRTYPE if typeflag == T.AREGTYPE and path.endswith(b"/") else regtype
            elif typeflag == T.GNU_DUMPDIR:
                e.typeflag = T.DIRTYPE
            elif typeflag == T.GNU_VOLHDR:
                _skip(stream, e.size, _after(last))
                pax = longname = longlink = None
                continue
            elif typeflag not in (T.LNKTYPE, T.SYMTYPE, T.DIRTYPE, T.FIFOTYPE):
                if longname is not None:
                    e.name = longname
                what = "sparse files are not supported" if typeflag == T.GNU_SPARSE else (
                    f"unsupported entry type {typeflag.decode('latin-1')!r}")
                raise InvalidArgument(f"refusing tar entry {e.describe()!r}: {what}")
        if gpax or pax:
            _apply_pax(e, {**gpax, **pax} if pax and gpax else (pax or gpax))  # type: ignore[dict-item]
            pax = None
        if longname is not None:
            e.name = longname
            longname = None
        if longlink is not None:
            e.linkname = longlink
            longlink = None
        if e.uid < 0 or e.gid < 0:
            raise InvalidArgument(f"refusing tar entry {e.describe()!r}: negative owner id")

        last = e.name
        yield e
        if e.size & 511:
            try:
                skip(512 - (e.size & 511))
            except EOFError:
                raise _truncated(f"the data of {_after(last)}")


def _skip(stream: TarSource, size: int, last: str) -> None:
    try:
        stream.skip(size + (-size % T.BLOCK))
    except EOFError:
        raise _truncated(f"the data after {last}")


def _apply_pax(e: Entry, pax: dict[bytes, bytes]) -> None:
    xattrs: dict[bytes, bytes] = {}
    for key, value in pax.items():
        if key == b"path":
            e.name = value
        elif key == b"linkpath":
            e.linkname = value
        elif key == b"size":
            e.size = T.pax_int(value, "size")
        elif key == b"uid":
            e.uid = T.pax_int(value, "uid")
        elif key == b"gid":
            e.gid = T.pax_int(value, "gid")
        elif key == b"mtime":
            e.mtime_ns = T.parse_pax_time(value, "mtime")
        elif key == b"atime":
            e.atime_ns = T.parse_pax_time(value, "atime")
        elif key.startswith(T.PAX_XATTR):
            xattrs[key[len(T.PAX_XATTR):]] = value
        elif key.startswith(T.PAX_LIBARCHIVE_XATTR):
            name = urllib.parse.unquote_to_bytes(key[len(T.PAX_LIBARCHIVE_XATTR):])
            try:
                xattrs.setdefault(name, base64.b64decode(value + b"=" * (-len(value) % 4)))
            except ValueError:
                raise InvalidArgument(f"invalid LIBARCHIVE.xattr value in tar entry {e.describe()!r}")
        elif key.startswith(b"GNU.sparse."):
            raise InvalidArgument(f"refusing tar entry {e.describe()!r}: sparse files are not supported")
    if b"atime" not in pax:
        e.atime_ns = e.mtime_ns
    if xattrs:
        e.xattrs = sorted(xattrs.items())
