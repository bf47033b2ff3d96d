"""What the file worker process runs (see ``worker`` for why it exists), and the protocol both sides share.

Run as ``python -I -S filework.py SOCK_FD SHM_FD``: it imports only ``_socket``, ``mmap``, ``os``, ``struct``,
``array`` and ``sys`` (start-up ~10 ms), never the project or site-packages.

The worker creates each file with O_CREAT|O_EXCL|O_NOFOLLOW as one path component relative to a directory fd
the parent opened and checked, writes its data from the shared memory, sets owner/mode only when asked, sets the
times through the fd and closes it. When the name is taken (an earlier entry of the same archive made a file,
link or node there) it unlinks that name first, as a later entry replaces an earlier one; unlinkat never follows
a link and fails on a directory (the parent never hands over a name it made a directory). It never sees a path.

Protocol (native byte order) over a ``SOCK_SEQPACKET`` socketpair, one message per batch, parent -> worker:
``HEAD`` (batch number, file count, new directories, closed directories), the new directory ids (their fds ride
along as SCM_RIGHTS, in order), the ids of directories to close after this batch's files, one ``REC`` per file,
then the names back to back. The file data is not in the message: it sits in slot ``batch % SLOTS`` of the
shared memfd, back to back. A batch with nothing in it asks the worker to exit. Worker -> parent: one ``ACK``
per batch (batch number, index of the first failed file or -1, errno) plus an optional UTF-8 message; after a
failure the worker creates nothing more. A first ``ACK`` with batch number ``READY`` says the worker is up.
The parent keeps at most ``IN_FLIGHT`` batches unacknowledged: below the kernel's per-socket datagram queue
(``net.unix.max_dgram_qlen``, 10 by default), so neither side can block the other for good, and a slot is never
refilled before the worker is done with it.
"""

from __future__ import annotations

import _socket
import array
import mmap
import os
import struct
import sys

HEAD = struct.Struct("=IIII")  # batch number, files, new dirs, closed dirs
REC = struct.Struct("=IIIIIIqq")  # dir id, name length, size, flags|mode, uid, gid, atime_ns, mtime_ns
ACK = struct.Struct("=Iii")  # batch number, failed index (-1: none), errno
ID = struct.Struct("=I")
F_CHOWN = 1 << 16
F_CHMOD = 1 << 17
READY = 0xFFFFFFFF
MAX_FILE = 64 << 10  # bigger files are written by the applier itself (one write is most of their cost)
MAX_NAME = 255
BATCH_FILES = 64
BATCH_BYTES = 256 << 10
IN_FLIGHT = 4
SLOTS = IN_FLIGHT + 1  # the one being filled plus those the worker may still read
SLOT = BATCH_BYTES + MAX_FILE
MAX_DIRS = 256  # directory fds the worker keeps open
MAX_MSG = HEAD.size + (2 * MAX_DIRS + 2 * BATCH_FILES) * ID.size + BATCH_FILES * (REC.size + MAX_NAME)
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
EMFILE = 24


def serve(sock: _socket.socket, shm: mmap.mmap) -> None:
    """Create files batch by batch until the parent says stop (an empty batch) or goes away."""
    open_, write, close, utime, fchown, fchmod = os.open, os.write, os.close, os.utime, os.fchown, os.fchmod
    unlink = os.unlink
    rec_size, id_size = REC.size, ID.size
    iter_recs, unpack_id = REC.iter_unpack, ID.unpack_from
    data = memoryview(shm)
    buf = bytearray(MAX_MSG)
    view = memoryview(buf)
    anc_size = _socket.CMSG_SPACE(BATCH_FILES * 4)
    trunc = _socket.MSG_CTRUNC | _socket.MSG_TRUNC
    dirs: dict[int, int] = {}
    failed = False
    sock.send(ACK.pack(READY, -1, 0))
    while True:
        n, anc, flags, _addr = sock.recvmsg_into([buf], anc_size)
        fds = array.array("i")
        for level, kind, cdata in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
        if n < HEAD.size:
            return
        batch, count, n_new, n_closed = HEAD.unpack_from(buf)
        if count == 0 and n_new == 0 and n_closed == 0:
            return
        index, err, text = -1, 0, ""
        if len(fds) != n_new or flags & trunc:
            for fd in fds:
                close(fd)
            fds = array.array("i")
            if not failed:
                index, err, text = 0, EMFILE, "the file worker did not receive a directory (too many open files?)"
                failed = True
        pos = HEAD.size
        for i in range(n_new):
            if i < len(fds):
                dirs[unpack_id(buf, pos)[0]] = fds[i]
            pos += id_size
        closed_at = pos  # closed directories are dropped after this batch's files
        pos += n_closed * id_size
        npos = pos + count * rec_size
        names = bytes(view[npos:n])
        npos = 0
        off = (batch % SLOTS) * SLOT
        i = -1
        for did, nlen, size, fm, uid, gid, atime, mtime in iter_recs(view[pos:pos + count * rec_size]):
            i += 1
            name = names[npos:npos + nlen]
            npos += nlen
            if failed:
                continue
            fd = -1
            try:
                if b"/" in name:
                    raise OSError(22, "not a single path component")  # the parent never sends one
                dfd = dirs[did]
                try:
                    fd = open_(name, O_NEW, fm & 0o777, dir_fd=dfd)
                except FileExistsError:  # an earlier entry's file, link or node: a later entry replaces it
                    unlink(name, dir_fd=dfd)  # never follows; a directory fails (the parent keeps those)
                    fd = open_(name, O_NEW, fm & 0o777, dir_fd=dfd)
                if size:
                    w = write(fd, data[off:off + size])
                    while w < size:
                        w += write(fd, data[off + w:off + size])
                if fm & F_CHOWN:
                    fchown(fd, uid, gid)
                if fm & F_CHMOD:
                    fchmod(fd, fm & 0o7777)
                utime(fd, ns=(atime, mtime))
            except OSError as e:
                failed = True
                index, err, text = i, e.errno or 0, e.strerror or str(e)
            except BaseException as e:  # reported to the parent, which names the entry
                failed = True
                index, err, text = i, 0, f"{type(e).__name__}: {e}"
            finally:
                if fd >= 0:
                    close(fd)
                off += size
        for j in range(n_closed):
            fd = dirs.pop(unpack_id(buf, closed_at + j * id_size)[0], -1)
            if fd >= 0:
                close(fd)
        sock.send(ACK.pack(batch, index, err) + text.encode("utf-8", "replace"))


def main(argv: list[str]) -> int:
    sock = _socket.socket(fileno=int(argv[1]))
    mfd = int(argv[2])
    shm = mmap.mmap(mfd, SLOTS * SLOT, prot=mmap.PROT_READ)
    os.close(mfd)
    try:
        serve(sock, shm)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
