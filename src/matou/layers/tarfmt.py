"""The tar format, byte by byte: header fields, numbers, checksums, PAX records (POSIX.1-2001, ustar, GNU).

Only what layers need: parsing of ustar/GNU/PAX headers (octal and base-256 numbers, GNU longname/longlink,
PAX path/linkpath/size/uid/gid/mtime/atime and SCHILY.xattr.*) and writing of ustar headers with PAX extensions
when a field does not fit. Names stay bytes end to end: no encoding round trips, any byte sequence survives.
"""

from __future__ import annotations

import struct
import zlib

from matou.errors import InvalidArgument

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)

REGTYPE = b"0"
AREGTYPE = b"\0"
LNKTYPE = b"1"
SYMTYPE = b"2"
CHRTYPE = b"3"
BLKTYPE = b"4"
DIRTYPE = b"5"
FIFOTYPE = b"6"
CONTTYPE = b"7"
XHDTYPE = b"x"  # PAX extended header for the next entry
XGLTYPE = b"g"  # PAX global header
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
GNU_SPARSE = b"S"
GNU_DUMPDIR = b"D"
GNU_VOLHDR = b"V"

USTAR_MAGIC = b"ustar\x0000"
GNU_MAGIC = b"ustar  \x00"

# name mode uid gid size mtime chksum type linkname magic+version uname gname devmajor devminor prefix
HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")

PAX_XATTR = b"SCHILY.xattr."
PAX_LIBARCHIVE_XATTR = b"LIBARCHIVE.xattr."


def parse_number(field: bytes, what: str) -> int:
    """An octal (NUL/space padded) or GNU base-256 number field."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field, "big")
        if field[0] & 0x40:  # 0xff prefix: two's complement negative over the whole field
            return value - (1 << (8 * len(field)))
        return value - (0x80 << (8 * (len(field) - 1)))
    s = field.split(b"\0", 1)[0].strip()
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise InvalidArgument(f"invalid {what} field {s[:20]!r} in tar header")


def checksum_ok(block: bytes) -> bool:
    """The header checksum: sum of all bytes with the checksum field read as spaces (unsigned, or signed for old tars)."""
    field = block[148:156]
    try:
        stored = int(field[:6], 8)
    except ValueError:
        try:
            stored = parse_number(field, "checksum")
        except InvalidArgument:
            return False
    view = memoryview(block)
    # adler32's low half is the byte sum mod 65521; each 256-byte half sums to at most 65280, so it is exact.
    total = (zlib.adler32(view[:256], 0) & 0xFFFF) + (zlib.adler32(view[256:], 0) & 0xFFFF)
    total += 256 - sum(field)
    if stored == total:
        return True
    signed = sum(b - 256 if b > 127 else b for b in block) - sum(b - 256 if b > 127 else b for b in field) + 256
    return stored == signed


def parse_pax(data: bytes, where: str) -> dict[bytes, bytes]:
    """PAX records ``"%d %s=%s\\n"``; values are kept as bytes (xattr values are binary)."""
    out: dict[bytes, bytes] = {}
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0:  # NUL padding after the last record
            break
        sp = data.find(b" ", pos)
        if sp < 0:
            raise InvalidArgument(f"malformed PAX header {where}: record without length")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise InvalidArgument(f"malformed PAX header {where}: bad record length")
        end = pos + length
        if length <= sp - pos + 1 or end > n or data[end - 1] != 0x0A:
            raise InvalidArgument(f"malformed PAX header {where}: record length does not match")
        eq = data.find(b"=", sp + 1, end)
        if eq < 0:
            raise InvalidArgument(f"malformed PAX header {where}: record without '='")
        out[data[sp + 1:eq]] = data[eq + 1:end - 1]
        pos = end
    return out


def parse_pax_time(value: bytes, what: str) -> int:
    """A PAX decimal time ("1700000000.123456789", maybe negative) in nanoseconds."""
    try:
        text = value.decode("ascii")
        neg = text.startswith("-")
        secs, _, frac = text.lstrip("-").partition(".")
        ns = int(secs or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument(f"invalid PAX {what} {value[:40]!r}")
    return -ns if neg else ns


def pax_int(value: bytes, what: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise InvalidArgument(f"invalid PAX {what} {value[:40]!r}")
    if v < 0:
        raise InvalidArgument(f"invalid PAX {what} {v}")
    return v


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _base256(value: int, width: int) -> bytes:
    if value < 0:
        value += 1 << (8 * width)
        return value.to_bytes(width, "big")
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


_MAX7 = 8 ** 7  # largest value + 1 of an 8-byte octal field
_MAX11 = 8 ** 11  # of a 12-byte one


def _block(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
           linkname: bytes, devmajor: int, devminor: int) -> bytes:
    """One ustar block; numbers that do not fit are written as 0 (the PAX header carries them) except device
    numbers, which go base-256 as GNU tar does."""
    block = bytearray(HEADER.pack(
        name[:100], b"%07o\0" % mode,
        b"%07o\0" % uid if 0 <= uid < _MAX7 else b"0000000\0",
        b"%07o\0" % gid if 0 <= gid < _MAX7 else b"0000000\0",
        b"%011o\0" % size if 0 <= size < _MAX11 else b"00000000000\0",
        b"%011o\0" % mtime if 0 <= mtime < _MAX11 else b"00000000000\0",
        b"        ", typeflag, linkname[:100], USTAR_MAGIC, b"", b"",
        b"%07o\0" % devmajor if 0 <= devmajor < _MAX7 else _base256(devmajor, 8),
        b"%07o\0" % devminor if 0 <= devminor < _MAX7 else _base256(devminor, 8), b""))
    view = memoryview(block)
    # the byte sum via adler32 (each 256-byte half sums to at most 65280 < 65521, so it is exact)
    total = (zlib.adler32(view[:256], 0) & 0xFFFF) + (zlib.adler32(view[256:], 0) & 0xFFFF)
    block[148:156] = b"%06o\0 " % total
    return bytes(block)


def build_header(name: bytes, *, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
                 linkname: bytes = b"", devmajor: int = 0, devminor: int = 0,
                 xattrs: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """One entry's header blocks: a PAX header first when a field does not fit ustar or there are xattrs.

    uname/gname stay empty and uid/gid numeric, so the bytes depend only on the tree.
    """
    main = _block(name, mode & 0o7777, uid, gid, size, mtime, typeflag, linkname, devmajor, devminor)
    if (len(name) <= 100 and len(linkname) <= 100 and not xattrs and 0 <= uid < _MAX7 and 0 <= gid < _MAX7
            and 0 <= size < _MAX11 and 0 <= mtime < _MAX11):
        return main
    records: list[bytes] = []
    if len(name) > 100:
        records.append(pax_record(b"path", name))
    if len(linkname) > 100:
        records.append(pax_record(b"linkpath", linkname))
    if not 0 <= uid < _MAX7:
        records.append(pax_record(b"uid", b"%d" % uid))
    if not 0 <= gid < _MAX7:
        records.append(pax_record(b"gid", b"%d" % gid))
    if not 0 <= size < _MAX11:
        records.append(pax_record(b"size", b"%d" % size))
    if not 0 <= mtime < _MAX11:
        records.append(pax_record(b"mtime", b"%d" % mtime))
    for key, value in xattrs or ():
        records.append(pax_record(PAX_XATTR + key, value))
    data = b"".join(records)
    pax = _block(b"././@PaxHeader", 0o644, 0, 0, len(data), 0, XHDTYPE, b"", 0, 0)
    return pax + data + bytes(-len(data) % BLOCK) + main
