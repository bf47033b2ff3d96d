"""Client side of hijacked attach/exec streams: demultiplexing, raw terminals, resize on SIGWINCH."""

from __future__ import annotations

import posix  # os.py re-exports these; importing it costs ~2 ms of CLI start-up
import sys

from matou.client.http import Response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def demux(buf: bytearray, out: Any, err: Any, control: list[dict[str, Any]] | None = None) -> None:
    """Write complete frames from buf to out/err, leaving partial ones in buf. With ``control``, frames of
    stream 3 are JSON control messages (matou's /containers/run) and are appended there instead."""
    while len(buf) >= 8:
        stream = buf[0]
        size = int.from_bytes(buf[4:8], "big")
        if len(buf) < 8 + size:
            return
        payload = bytes(buf[8:8 + size])
        del buf[:8 + size]
        if stream == 3 and control is not None:
            from matou.util import fastjson  # not json: its decoder imports re (~8 ms of CLI CPU)

            control.append(fastjson.loads(payload))
            continue
        target = err if stream == 2 else out
        target.write(payload)
        target.flush()


def _take_over(resp: Response, out: Any, err: Any) -> tuple[Any, Any, Any, bytearray]:
    """The hijacked socket in blocking mode, the output files, and what was read past the response head."""
    out = out or open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)
    err = err or open(sys.stderr.fileno(), "wb", buffering=0, closefd=False)
    sock = resp.sock
    sock.setblocking(True)
    buf = bytearray(resp._buf)  # noqa: SLF001 - bytes read past the response head
    resp._buf = b""  # noqa: SLF001
    return out, err, sock, buf


def pump_run(resp: Response, out: Any = None, err: Any = None) -> list[dict[str, Any]]:
    """Copy the frames of a /containers/run stream to stdout/stderr until the exit status (the last control
    message, stream 3) or the server closes it; returns the control messages, in order. Not waiting for the
    close after the status takes ~1 ms off every `run`."""
    out, err, sock, buf = _take_over(resp, out, err)
    control: list[dict[str, Any]] = []
    while True:
        demux(buf, out, err, control)
        if control and "StatusCode" in control[-1]:
            return control
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            return control
        buf += data


class RawTerminal:
    """Puts a tty into raw mode for the duration of an interactive session."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: Any = None

    def __enter__(self) -> RawTerminal:
        import termios
        import tty

        try:
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)
        except termios.error:
            self.saved = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def terminal_size(fd: int = 1) -> tuple[int, int] | None:
    try:
        sz = posix.get_terminal_size(fd)
        return sz.lines, sz.columns
    except OSError:
        return None


def pump(resp: Response, *, tty: bool, stdin: bool, on_resize: Callable[[], None] | None = None,
         out: Any = None, err: Any = None, detach_keys: bytes | None = None) -> bool:
    """Copy the hijacked stream to stdout/stderr and stdin to the stream, until the server closes it.
    Returns True when the user typed the detach keys (the container keeps running), as docker's CLI does."""
    import select

    out, err, sock, buf = _take_over(resp, out, err)
    if buf:
        if tty:
            out.write(bytes(buf))
            buf.clear()
        else:
            demux(buf, out, err)
    rfd, wfd = -1, -1
    if on_resize is not None:
        import signal

        rfd, wfd = posix.pipe()
        posix.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        signal.signal(signal.SIGWINCH, lambda *_: None)
    in_fd = sys.stdin.fileno() if stdin else -1
    stdin_open = stdin
    matched = 0
    try:
        while True:
            fds = [sock.fileno()]
            if stdin_open:
                fds.append(in_fd)
            if rfd >= 0:
                fds.append(rfd)
            r, _, _ = select.select(fds, [], [])
            if rfd in r:
                posix.read(rfd, 512)
                if on_resize:
                    on_resize()
            if stdin_open and in_fd in r:
                data = posix.read(in_fd, 65536)
                if data and detach_keys:
                    for b in data:
                        matched = matched + 1 if b == detach_keys[matched] else (1 if b == detach_keys[0] else 0)
                        if matched == len(detach_keys):
                            try:
                                sock.sendall(data)  # the daemon sees the keys too and ends the stream
                            except OSError:
                                pass
                            return True
                if not data:
                    stdin_open = False
                    try:
                        sock.shutdown(1)  # SHUT_WR: stdin EOF, keep reading output
                    except OSError:
                        pass
                else:
                    try:
                        sock.sendall(data)
                    except OSError:
                        stdin_open = False
            if sock.fileno() in r:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                if tty:
                    out.write(data)
                else:
                    buf += data
                    demux(buf, out, err)
    finally:
        if rfd >= 0:
            import signal

            signal.set_wakeup_fd(-1)
            posix.close(rfd)
            posix.close(wfd)
        resp.close()
    return False
