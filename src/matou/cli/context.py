"""What every command gets: the daemon client (connected lazily), output streams, global options."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from matou.client.http import Client


@dataclass
class Ctx:
    host: str | None = None
    debug: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            from matou.cli.connect import client_for

            self._client = client_for(self.host)
        return self._client

    def api(self) -> Any:
        from matou.client.api import API

        return API(self.client)
