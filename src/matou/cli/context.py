"""What every command gets: the daemon client (connected lazily), output streams, global options."""

from __future__ import annotations

import sys

from matou.client.http import Client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Ctx:
    """A plain class, not a dataclass: importing dataclasses costs ~10 ms of CLI start-up."""

    def __init__(self, host: str | None = None, debug: bool = False) -> None:
        self.host = host
        self.debug = debug
        self.out = sys.stdout
        self.err = sys.stderr
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            from matou.cli.connect import client_for

            self._client = client_for(self.host)
        return self._client

    def api(self) -> Any:
        from matou.client.api import API

        return API(self.client)
