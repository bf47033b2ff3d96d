"""Registry credentials on the client side: docker's ``config.json`` format and credential helpers.

Where: ``$MATOU_CONFIG/config.json`` (default ``~/.matou/config.json``) is read and written; docker's own
``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``) is read as a fallback, so ``docker login``
credentials work with matou unchanged.

The format (docker/cli ``configfile``)::

    {"auths": {"127.0.0.1:5000": {"auth": "base64(user:password)"},
               "https://index.docker.io/v1/": {"auth": "base64(user:)", "identitytoken": "<refresh token>"}},
     "credsStore": "pass", "credHelpers": {"registry.example.com": "ecr-login"}}

A credential helper is the program ``docker-credential-<name>`` on PATH, speaking docker's protocol on stdin and
stdout: ``get`` (server URL in, ``{"ServerURL","Username","Secret"}`` out), ``store`` (that JSON in), ``erase``
(server URL in). A user name of ``<token>`` means the secret is an identity token.

Keys are compared as docker does: by host name, with scheme and path removed (``http://h:5000/v2/`` is ``h:5000``).
Docker Hub's key is ``https://index.docker.io/v1/``.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

HUB_SERVER = "https://index.docker.io/v1/"
_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
TOKEN_USER = "<token>"


class CredentialError(Exception):
    """A config file or credential helper problem, with a message for the user."""


@dataclass(frozen=True, slots=True)
class AuthEntry:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    server: str = ""

    def to_api(self) -> dict[str, str]:
        """The AuthConfig JSON the Engine API takes (X-Registry-Auth, POST /auth)."""
        d = {"username": self.username, "password": self.password, "serveraddress": self.server}
        if self.identity_token:
            d["identitytoken"] = self.identity_token
        return {k: v for k, v in d.items() if v}


def hostname(server: str) -> str:
    """docker's ConvertToHostname: drop the scheme and any path."""
    s = server.strip()
    if "://" in s:
        s = s.split("://", 1)[1]
    return s.split("/", 1)[0].lower()


def server_key(server: str | None) -> str:
    """What credentials are stored under: Docker Hub's legacy URL, or the registry's host[:port]."""
    if not server:
        return HUB_SERVER
    h = hostname(server)
    return HUB_SERVER if h in _HUB_NAMES else h


def registry_of(image: str) -> str:
    """The registry a reference names (docker.io unless the first component looks like a host)."""
    first, sep, _rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first.lower()
    return "docker.io"


def config_dir() -> str:
    return os.environ.get("MATOU_CONFIG") or os.path.join(os.path.expanduser("~"), ".matou")


def docker_config_dir() -> str:
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


class ConfigFile:
    """One config.json: load, look up, change, save (atomically, mode 0600, other keys kept)."""

    def __init__(self, path: str, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = data if data is not None else {}

    @classmethod
    def load(cls, path: str) -> ConfigFile:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return cls(path)
        except OSError as e:
            raise CredentialError(f"cannot read {path}: {e.strerror}") from None
        if not raw.strip():
            return cls(path)
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise CredentialError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise CredentialError(f"{path}: the top level must be a JSON object")
        return cls(path, data)

    def save(self) -> None:
        d = os.path.dirname(self.path)
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = f"{self.path}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent="\t")
                f.write("\n")
            os.rename(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @property
    def auths(self) -> dict[str, Any]:
        a = self.data.get("auths")
        if not isinstance(a, dict):
            a = {}
            self.data["auths"] = a
        return a

    def helper_for(self, key: str) -> str | None:
        helpers = self.data.get("credHelpers")
        if isinstance(helpers, dict):
            h = helpers.get(hostname(key)) or helpers.get(key)
            if h:
                return str(h)
        store = self.data.get("credsStore")
        return str(store) if store else None

    def _find_key(self, key: str) -> str | None:
        if key in self.auths:
            return key
        want = hostname(key)
        for k in self.auths:
            if hostname(k) == want or (key == HUB_SERVER and hostname(k) in _HUB_NAMES):
                return k
        return None

    def get(self, key: str) -> AuthEntry | None:
        helper = self.helper_for(key)
        if helper:
            return helper_get(helper, key)
        k = self._find_key(key)
        if k is None:
            return None
        e = self.auths.get(k)
        if not isinstance(e, dict):
            return None
        user, pw = str(e.get("username") or ""), str(e.get("password") or "")
        if e.get("auth"):
            try:
                user, _, pw = base64.b64decode(str(e["auth"])).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise CredentialError(f"invalid auth entry for {k} in {self.path}") from None
        tok = str(e.get("identitytoken") or "")
        if not (pw or tok):
            return None
        return AuthEntry(user, pw, tok, key)

    def store(self, entry: AuthEntry) -> bool:
        """Save credentials; True when they went to a file in plain text (docker warns about that)."""
        helper = self.helper_for(entry.server)
        if helper:
            helper_store(helper, entry)
            self.auths.setdefault(entry.server, {})
            self.save()
            return False
        old = self._find_key(entry.server)
        if old is not None and old != entry.server:
            del self.auths[old]
        item: dict[str, str] = {"auth": base64.b64encode(f"{entry.username}:{entry.password}".encode()).decode()}
        if entry.identity_token:
            item["identitytoken"] = entry.identity_token
        self.auths[entry.server] = item
        self.save()
        return not entry.identity_token

    def erase(self, key: str) -> bool:
        found = False
        helper = self.helper_for(key)
        if helper:
            found = helper_erase(helper, key)
        k = self._find_key(key)
        if k is not None:
            del self.auths[k]
            found = True
        if found:
            self.save()
        return found


def _helper(name: str, action: str, data: str) -> tuple[int, str, str]:
    import subprocess

    prog = f"docker-credential-{name}"
    try:
        p = subprocess.run([prog, action], input=data, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise CredentialError(f"credential helper {prog} not found in PATH") from None
    except subprocess.TimeoutExpired:
        raise CredentialError(f"credential helper {prog} {action} timed out") from None
    return p.returncode, p.stdout, p.stderr


def helper_get(name: str, key: str) -> AuthEntry | None:
    rc, out, err = _helper(name, "get", key)
    if rc != 0:
        if "credentials not found" in (out + err).lower():
            return None
        raise CredentialError(f"docker-credential-{name} get: {(err or out).strip()}")
    try:
        d = json.loads(out)
    except ValueError:
        raise CredentialError(f"docker-credential-{name} get: invalid JSON") from None
    user, secret = str(d.get("Username") or ""), str(d.get("Secret") or "")
    if not secret:
        return None
    if user == TOKEN_USER:
        return AuthEntry("", "", secret, key)
    return AuthEntry(user, secret, "", key)


def helper_store(name: str, entry: AuthEntry) -> None:
    user, secret = entry.username, entry.password
    if entry.identity_token:
        user, secret = TOKEN_USER, entry.identity_token
    rc, out, err = _helper(name, "store", json.dumps({"ServerURL": entry.server, "Username": user,
                                                      "Secret": secret}))
    if rc != 0:
        raise CredentialError(f"docker-credential-{name} store: {(err or out).strip()}")


def helper_erase(name: str, key: str) -> bool:
    rc, out, err = _helper(name, "erase", key)
    if rc != 0:
        if "credentials not found" in (out + err).lower():
            return False
        raise CredentialError(f"docker-credential-{name} erase: {(err or out).strip()}")
    return True


def matou_config() -> ConfigFile:
    return ConfigFile.load(os.path.join(config_dir(), "config.json"))


def lookup(server: str | None) -> AuthEntry | None:
    """Stored credentials for a registry: matou's config first, then docker's."""
    key = server_key(server)
    for path in (os.path.join(config_dir(), "config.json"), os.path.join(docker_config_dir(), "config.json")):
        if not os.path.exists(path):
            continue
        entry = ConfigFile.load(path).get(key)
        if entry is not None:
            return entry
    return None


def encode_header(entry: AuthEntry | None) -> str:
    """X-Registry-Auth: base64url of the AuthConfig JSON (docker sends ``e30=``, i.e. ``{}``, when anonymous)."""
    data = json.dumps(entry.to_api() if entry else {}).encode()
    return base64.urlsafe_b64encode(data).decode()

