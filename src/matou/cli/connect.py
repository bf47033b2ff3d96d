"""Finding the daemon: MATOU_HOST or -H, else the default socket; start matoud when it is not running."""

from __future__ import annotations

import sys

from matou.client.http import APIError, Client, ConnectError

# os is imported only where the daemon has to be started: importing it costs ~2 ms of every command's start-up,
# and posix (built in, already loaded) has what the common path needs

DEFAULT_HOST = "unix:///run/matou/matou.sock"
DAEMON_LOG = "/var/log/matou/matoud.log"


def host_from_env(explicit: str | None) -> str:
    if explicit:
        return explicit
    import posix

    env = posix.environ.get(b"MATOU_HOST")
    return env.decode() if env else DEFAULT_HOST


def ping(client: Client) -> bool:
    try:
        r = client.request("GET", "/_ping")
        r.read()
        r.close()
        return r.status == 200
    except (ConnectError, APIError):
        return False


def _matoud_command() -> list[str]:
    import os

    here = os.path.dirname(os.path.abspath(sys.argv[0] or ""))
    cand = os.path.join(here, "matoud")
    if os.access(cand, os.X_OK):
        return [cand]
    for d in os.environ.get("PATH", "").split(":"):
        p = os.path.join(d, "matoud")
        if d and os.access(p, os.X_OK):
            return [p]
    return [sys.executable, "-m", "matou.daemon"]


def start_daemon(host: str, timeout: float = 60.0) -> None:
    import os
    import subprocess
    import time

    os.makedirs(os.path.dirname(DAEMON_LOG), exist_ok=True)
    sys.stderr.write(f"matou: matoud is not running; starting it in the background (log: {DAEMON_LOG})\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    with open(DAEMON_LOG, "ab") as log:
        subprocess.Popen(_matoud_command() + ["--host", host], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True, close_fds=True, env=env)
    client = Client(host)
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        if ping(client):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise ConnectError(f"matoud did not come up within {timeout:.0f}s; see {DAEMON_LOG}")


class AutoStartClient(Client):
    """Connects on first use; when the default local daemon is not running, starts it and retries once."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self._started = False

    def connect(self) -> object:
        try:
            return super().connect()
        except ConnectError:
            import posix

            if self._started or self.host != DEFAULT_HOST or posix.geteuid() != 0:
                raise ConnectError(f"Cannot connect to the matou daemon at {self.host}. Is matoud running?") from None
        self._started = True
        start_daemon(self.host)
        return super().connect()


def client_for(host: str | None) -> Client:
    return AutoStartClient(host_from_env(host))
