"""Named network namespaces: created by the calling thread, pinned by a bind mount, entered briefly to open sockets.

``setns``/``unshare`` change only the calling thread, and every function here switches back before it returns
(a thread that cannot is stopped loudly: it would configure the wrong namespace), so any thread may call them. A container joins the namespace through its path (the OCI spec's
``namespaces[].path``); removing the bind mount drops the daemon's reference, and the kernel destroys the
namespace, and with it the container's end of every veth pair, once the container's processes are gone too:
that deletion (20-30 ms in the kernel) happens off every critical path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

from matou.runtime.linux.syscalls import CLONE_NEWNET, setns, unshare
from matou.util.mount import MNT_DETACH, MS_BIND, mount, umount

T = TypeVar("T")
SELF = "/proc/thread-self/ns/net"


def create(path: str, inside: Callable[[], T]) -> T:
    """Create a network namespace pinned at ``path`` and run ``inside()`` in it (on this thread), then come back.

    ``inside`` typically opens sockets (netlink, DNS) that stay bound to the new namespace.
    """
    with open(path, "x"):
        pass
    host = os.open(SELF, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            unshare(CLONE_NEWNET)
        except OSError:
            os.unlink(path)
            raise
        try:
            mount(SELF, path, None, MS_BIND)
            return inside()
        except BaseException:
            with contextlib.suppress(OSError):
                umount(path, MNT_DETACH)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            _back(host)
    finally:
        os.close(host)


def adopt(path: str, pid: int, inside: Callable[[], T]) -> T:
    """Pin the network namespace process ``pid`` made for itself (a container's init, cloned with
    CLONE_NEWNET) at ``path`` and run ``inside()`` in it, as create() does for a namespace of our own.

    This lets the daemon configure the namespace while the init is still building its root filesystem: the
    namespace exists from the clone on, and the init does not exec before it is told to start."""
    with open(path, "x"):
        pass
    host = os.open(SELF, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            mount(f"/proc/{pid}/ns/net", path, None, MS_BIND)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
        except BaseException:
            remove(path)
            raise
        try:
            return inside()
        except BaseException:
            remove(path)
            raise
        finally:
            _back(host)
    finally:
        os.close(host)


@contextlib.contextmanager
def entered(path_or_fd: str | int) -> Iterator[None]:
    """Run the body in another network namespace (this thread only)."""
    host = os.open(SELF, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(path_or_fd, os.O_RDONLY | os.O_CLOEXEC) if isinstance(path_or_fd, str) else path_or_fd
        try:
            setns(fd, CLONE_NEWNET)
        finally:
            if isinstance(path_or_fd, str):
                os.close(fd)
        try:
            yield
        finally:
            _back(host)
    finally:
        os.close(host)


def _back(host_fd: int) -> None:
    try:
        setns(host_fd, CLONE_NEWNET)
    except OSError as e:  # pragma: no cover - the kernel does not refuse our own namespace back
        # a thread stuck in a container's namespace would configure the wrong one: better to stop loudly
        os.write(2, f"matou: cannot return to the host network namespace: {e}\n".encode())
        os._exit(70)


def remove(path: str) -> bool:
    """Drop the pin (lazily: the kernel finishes the destruction asynchronously). True if something was removed."""
    done = False
    try:
        umount(path, MNT_DETACH)
        done = True
    except OSError:
        pass
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        done = True
    return done


def is_pinned(path: str) -> bool:
    """True if ``path`` is a live network namespace (a bind mount of nsfs), without scanning mountinfo."""
    try:
        st = os.stat(path)
        parent = os.stat(os.path.dirname(path) or ".")
    except OSError:
        return False
    return st.st_dev != parent.st_dev
