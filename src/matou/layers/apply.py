"""Apply a layer tar (gzip, zstd or plain, sniffed from its magic bytes) into a directory.

``apply_layer`` unpacks one image layer into its own empty directory, with overlay whiteouts, and is the pull
path: decompression and both digests run in a worker thread (see ``stream``), entries are parsed by a lean reader
(``tarread``) and written with few syscalls each (``extract``, whose docstring lists supported entry types and
the escape rules). Hostile or malformed input raises InvalidArgument naming the entry; a wrong diff id raises
DataCorruption; either way the directory is left empty. ``apply_tar_into`` uses the same reader for a plain
archive onto an existing tree (``docker cp`` into a container, ADD of a local tar).

Decompression bombs: memory is bounded by the pipeline; regular files may not declare more bytes than the target
filesystem has free; extended headers are limited to 1 MiB and data after the end-of-archive marker to 16 MiB;
``max_size`` optionally caps the uncompressed stream.

Synchronous and thread-safe: every call owns its thread, fds and state; call it from worker threads or processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from typing import BinaryIO

from matou.errors import DataCorruption, InvalidArgument, NotFound, Unsupported
from matou.layers.extract import Applier
from matou.layers.stream import TarStream
from matou.types.digest import Digest


@dataclass(frozen=True)
class ApplyResult:
    diff_id: str  # "sha256:..." of the uncompressed tar
    size: int  # uncompressed tar bytes
    compressed_digest: str | None  # sha256 of the raw input as read (the blob digest); None if not asked for
    compressed_size: int


def _check_expected(expected: str | None) -> None:
    if expected is None:
        return
    d = Digest.parse(expected)
    if d.algorithm != "sha256":
        raise Unsupported(f"diff ids must be sha256 digests, not {d.algorithm}")


def _empty(dest: str) -> None:
    """Remove everything inside dest (never following links), keeping dest itself."""
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for name in os.listdir(fd):
                try:
                    if os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode & 0o170000 == 0o040000:
                        shutil.rmtree(name, dir_fd=fd)  # type: ignore[arg-type]
                    else:
                        os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
        finally:
            os.close(fd)


def _open_src(src: BinaryIO | str) -> tuple[BinaryIO, bool]:
    if isinstance(src, str):
        try:
            return open(src, "rb", buffering=0), True  # type: ignore[return-value]
        except FileNotFoundError:
            raise NotFound(f"layer file not found: {src}")
        except IsADirectoryError:
            raise InvalidArgument(f"layer file is a directory: {src}")
    return src, False


def _run(raw: BinaryIO, dest: str, *, follow_links: bool, whiteouts: str, track_created: bool,
         max_size: int | None, on_error_undo: bool, compressed_digest: bool = True,
         parallel: bool = False) -> ApplyResult:
    applier = Applier(dest, follow_links=follow_links, whiteouts=whiteouts, track_created=track_created,
                      parallel=parallel)
    stream: TarStream | None = None
    try:
        stream = TarStream(raw, max_size=max_size, hash_raw=compressed_digest)
        try:
            applier.run(stream)
        except BaseException:
            if on_error_undo:
                stream.close()
                applier.undo_created()
            raise
        return ApplyResult(stream.diff_id, stream.size, stream.raw_digest, stream.raw_size)
    finally:
        if stream is not None:
            stream.close()
        applier.close()


def apply_layer(src: BinaryIO | str, dest: str, *, expected_diff_id: str | None = None,
                max_size: int | None = None, compressed_digest: bool = True) -> ApplyResult:
    """Unpack a layer (a stream or a file path) into ``dest``, an existing empty directory.

    Whiteouts become overlay whiteouts (char device 0/0; opaque directories get ``trusted.overlay.opaque=y``), so
    ``dest`` can serve as an overlay lowerdir as it is. On any error ``dest`` is emptied again.
    ``compressed_digest=False`` skips hashing the raw input (~10% of the CPU of a pull) when the caller already
    verified the blob, e.g. one read from the content store; ``ApplyResult.compressed_digest`` is then None
    (for an uncompressed tar it is the diff id either way).
    """
    _check_expected(expected_diff_id)
    try:
        if os.listdir(dest):
            raise InvalidArgument(f"cannot apply a layer into {dest}: the directory is not empty")
    except FileNotFoundError:
        raise NotFound(f"layer target directory not found: {dest}")
    except NotADirectoryError:
        raise InvalidArgument(f"layer target is not a directory: {dest}")
    raw, owned = _open_src(src)
    try:
        result = _run(raw, dest, follow_links=False, whiteouts="overlay", track_created=False,
                      max_size=max_size, on_error_undo=False, compressed_digest=compressed_digest, parallel=True)
        if expected_diff_id is not None and result.diff_id != expected_diff_id:
            raise DataCorruption(
                f"layer content does not match its diff id: expected {expected_diff_id}, got {result.diff_id}")
        return result
    except BaseException:
        _empty(dest)
        raise
    finally:
        if owned:
            raw.close()


def apply_tar_into(src: BinaryIO, dest: str, *, whiteouts: str = "overlay",
                   max_size: int | None = None) -> ApplyResult:
    """Extract a plain archive onto the existing tree ``dest`` (``docker cp`` into a container, ADD of a tar).

    Symlinks already in ``dest`` (or made by the archive) are followed as if ``dest`` were ``/``, never out of it.
    ``whiteouts``: "overlay" (make overlay whiteouts), "delete" (delete the named paths) or "none" (plain files).
    Not transactional: on error, paths this call created are removed again, but files it replaced stay replaced.
    """
    if not os.path.isdir(dest):
        raise NotFound(f"target directory not found: {dest}")
    return _run(src, dest, follow_links=True, whiteouts=whiteouts, track_created=True, max_size=max_size,
                on_error_undo=True)
