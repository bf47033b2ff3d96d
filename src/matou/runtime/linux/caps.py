"""Capability names, bit masks, and applying the five sets in runc's order (bounding, user switch, capset, ambient)."""

from __future__ import annotations

from collections.abc import Iterable

from matou.errors import InvalidArgument
from matou.runtime.linux import syscalls as sc

CAP_NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBERS: dict[str, int] = {n: i for i, n in enumerate(CAP_NAMES)}


def last_cap() -> int:
    """The highest capability this kernel knows (caps above it cannot be named in capset)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAP_NAMES) - 1


def normalize(name: str) -> str:
    n = name.strip().upper()
    return n if n.startswith("CAP_") else "CAP_" + n


def mask(names: Iterable[str] | None, *, strict: bool = False) -> int:
    """Bit mask of capability names; unknown names are an error only when strict (runc ignores them)."""
    m = 0
    for name in names or ():
        num = CAP_NUMBERS.get(normalize(name))
        if num is None:
            if strict:
                raise InvalidArgument(f"unknown capability {name!r}")
            continue
        m |= 1 << num
    return m


def names(m: int) -> list[str]:
    return [n for i, n in enumerate(CAP_NAMES) if m >> i & 1]


def current_bounding() -> int:
    """The caller's own bounding set: nothing outside it can be granted to a container."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << (last_cap() + 1)) - 1


class CapSets:
    """The five sets of an OCI process, as bit masks clipped to what the caller holds."""

    __slots__ = ("bounding", "effective", "permitted", "inheritable", "ambient", "last")

    def __init__(self, spec: dict | None, available: int, last: int) -> None:
        spec = spec or {}
        self.bounding = mask(spec.get("bounding")) & available
        self.effective = mask(spec.get("effective")) & available
        self.permitted = mask(spec.get("permitted")) & available
        self.inheritable = mask(spec.get("inheritable")) & available
        self.ambient = mask(spec.get("ambient")) & available
        self.last = last

    def drop_bounding(self) -> None:
        """Before the user switch: PR_CAPBSET_DROP needs CAP_SETPCAP, which a non-root user no longer has."""
        for cap in range(self.last + 1):
            if not self.bounding >> cap & 1:
                try:
                    sc.prctl(sc.PR_CAPBSET_DROP, cap)
                except OSError as e:
                    if e.errno != 22:  # EINVAL: the kernel doesn't know this cap
                        raise

    def apply(self) -> None:
        """After the user switch: set effective/permitted/inheritable, then raise the ambient ones."""
        sc.capset(self.effective, self.permitted, self.inheritable)
        if self.ambient:
            for cap in range(self.last + 1):
                if self.ambient >> cap & 1:
                    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
