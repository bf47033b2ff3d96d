"""Docker's --user semantics against an image's /etc/passwd and /etc/group (runc's libcontainer/user).

"name", "uid", "name:group", "uid:gid", "name:gid", "uid:group". Numeric ids work without any passwd entry; a
name that isn't there is an error. Supplementary groups are the groups that list the user by name, unless a
group was given explicitly (then, as in Docker, only that group and nothing else).
The files are read through the rootfs without following symlinks out of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from matou.errors import InvalidArgument
from matou.util.fs import resolve_in_root

_MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str

    def __iter__(self):  # so callers can unpack: uid, gid, groups, home = resolve_user(...)
        return iter((self.uid, self.gid, list(self.additional_gids), self.home))


def _read(rootfs: str, path: str) -> list[list[str]]:
    try:
        with open(resolve_in_root(rootfs, path), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(line.split(":"))
    return out


def _numeric(s: str) -> int | None:
    if s.isdigit():
        v = int(s)
        if v > _MAX_ID:
            raise InvalidArgument(f"user or group id {s} is out of range")
        return v
    return None


def resolve_user(rootfs: str, spec: str) -> User:
    """Resolve ``--user`` for a container whose root filesystem is ``rootfs``; "" means root."""
    spec = (spec or "").strip()
    user_part, sep, group_part = spec.partition(":")
    if sep and not group_part:
        raise InvalidArgument(f"invalid user {spec!r}: empty group")
    user_part = user_part or "0"
    passwd = [p for p in _read(rootfs, "/etc/passwd") if len(p) >= 7]
    uid_n = _numeric(user_part)
    entry = None
    for p in passwd:
        if (uid_n is None and p[0] == user_part) or (uid_n is not None and p[2] == user_part):
            entry = p
            break
    if entry is None and uid_n is None:
        raise InvalidArgument(f"unable to find user {user_part}: no matching entries in passwd file")
    uid = uid_n if uid_n is not None else int(entry[2])  # type: ignore[index]
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    home = entry[5] if entry is not None and entry[5] else "/"
    name = entry[0] if entry is not None else None
    groups = [g for g in _read(rootfs, "/etc/group") if len(g) >= 3]
    if group_part:
        gid_n = _numeric(group_part)
        if gid_n is not None:
            gid = gid_n
        else:
            match = next((g for g in groups if g[0] == group_part), None)
            if match is None or not match[2].isdigit():
                raise InvalidArgument(f"unable to find group {group_part}: no matching entries in group file")
            gid = int(match[2])
        return User(uid, gid, (), home)
    extra: list[int] = []
    if name is not None:
        for g in groups:
            members = g[3].split(",") if len(g) >= 4 and g[3] else []
            if name in members and g[2].isdigit():
                n = int(g[2])
                if n != gid and n not in extra:
                    extra.append(n)
    return User(uid, gid, tuple(extra), home)
