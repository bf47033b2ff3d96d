"""Typed error categories shared by every layer.

Lower layers raise these; exactly one place per front end (the daemon API, the registry API, the CLI)
maps a category to a status code or an exit code. Nothing here knows about HTTP.
"""

from __future__ import annotations


class MatouError(Exception):
    """Base of all expected errors: the message is meant for the user, as is."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(MatouError):
    """The request itself is wrong (bad flag, malformed reference, hostile archive)."""


class NotFound(MatouError):
    """The named object does not exist (or, for private registry repositories, must look so)."""


class Conflict(MatouError):
    """The request clashes with the current state (name in use, image used by a container)."""


class NotModified(MatouError):
    """Nothing to do (starting a started container)."""


class Unauthorized(MatouError):
    """Credentials are missing or wrong."""


class Forbidden(MatouError):
    """Credentials are fine but do not allow this."""


class Unavailable(MatouError):
    """A dependency is not reachable right now (registry down, daemon starting)."""


class Unsupported(MatouError):
    """Valid request for something this build does not implement."""


class DataCorruption(MatouError):
    """Stored or received data does not match its digest or size."""


class SystemError_(MatouError):
    """The kernel or the host refused something we needed (mount, clone, netlink)."""
